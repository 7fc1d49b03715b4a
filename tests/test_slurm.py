"""The slurm backend: its batch script's signal handling (with stub srun/scancel/scontrol, runs
anywhere), and a real one-node SLURM cluster (marker `slurm`).

The real-cluster tests are skipped only when $CI is unset and there is no SLURM
(`sbatch` not on PATH, or no cluster answering `sinfo`); under CI a missing
SLURM is a failure. A cluster from ci/local-slurm/start.sh is found even when
$SLURM_CONF is not set. Bring one up with

  sudo bash ci/local-slurm/start.sh && source ${SLURM_LOCAL_DIR:-/tmp/local-slurm}/env.sh
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from scaling.launch import rundir as rd_lib
from scaling.launch import sweep as sweep_lib
from scaling.launch.slurm import SlurmBackend

pytestmark = pytest.mark.slow   # the batch script under stub and real SLURM (not in -m 'not slow')

REPO = pathlib.Path(__file__).resolve().parent.parent
FAKE = REPO / 'tests' / 'fake_train.py'
SMOKE = REPO / 'configs' / 'sweeps' / 'smoke.py'

ONE_RUN = """
def get_config(arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location('_l', {ladder!r})
  m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
  c = m.get_config('nano')
  c.train.steps = {steps}
  return c

def get_sweep(arg=None):
  return [{{'train.seed': s}} for s in {seeds}]
"""


def one_run_sweep(tmp_path, steps, seeds=(0,)):
  p = tmp_path / 'one.py'
  p.write_text(textwrap.dedent(ONE_RUN.format(ladder=str(REPO / 'scaling' / 'model' / 'ladder.py'), steps=steps,
                                              seeds=list(seeds))))
  return p


def wait_for(pred, timeout=60.0, what='condition'):
  t0 = time.monotonic()
  while not pred():
    assert time.monotonic() - t0 < timeout, f'timed out waiting for {what}'
    time.sleep(0.05)


def starts(rd):
  p = rd.path / 'starts.jsonl'
  return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


# ---- the batch script, with stubs for the SLURM commands ---------------------------------------------

STUB_SRUN = """#!/bin/bash
# stub srun: drop options, run the command, remember its pid for the scancel stub
while [[ "$1" == --* ]]; do shift; done
"$@" &
echo $! > "$STUB_DIR/task.pid"
wait $!
"""
STUB_SCANCEL = """#!/bin/bash
echo "$@" >> "$STUB_DIR/scancel.log"
kill -TERM "$(cat "$STUB_DIR/task.pid")"
"""
STUB_SCONTROL = """#!/bin/bash
echo "$@" >> "$STUB_DIR/scontrol.log"
"""


def test_batch_script_forwards_sigterm_to_training_and_requeues_on_exit_75(tmp_path, monkeypatch):
  monkeypatch.setenv('SCALING_TRAIN_CMD', f'{sys.executable} {FAKE}')
  stubs = tmp_path / 'stubs'
  stubs.mkdir()
  for name, text in (('srun', STUB_SRUN), ('scancel', STUB_SCANCEL), ('scontrol', STUB_SCONTROL)):
    (stubs / name).write_text(text)
    (stubs / name).chmod(0o755)
  sw = sweep_lib.load_sweep(str(one_run_sweep(tmp_path, steps=60, seeds=(0, 5))))
  be = SlurmBackend(tmp_path / 'root', {})
  env = dict(os.environ, PATH=f'{stubs}:{os.environ["PATH"]}', STUB_DIR=str(stubs), SLURM_JOB_ID='4242',
             FAKE_TRAIN_STEP_S='0.05', FAKE_TRAIN_FAIL_SEEDS='5', PYTHONPATH=str(REPO))
  rds = []
  for run in sw.runs:
    rd = rd_lib.RunDir(be.root, run.hash)
    rd.path.mkdir(parents=True)
    (rd.path / 'job.sbatch').write_text(be.batch_script(run, rd, sw))
    rds.append(rd)
  rd = rds[0]

  # 1. SIGTERM to the batch shell (as --signal=B:TERM or a preemption would send): the trap signals the
  #    training tasks via scancel, training exits 75, the script records 75 and requeues its job.
  p = subprocess.Popen(['bash', str(rd.path / 'job.sbatch')], env=env, cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
  wait_for(lambda: rd.last_metrics().get('step', 0) >= 3, what='3 steps')
  p.send_signal(signal.SIGTERM)
  out, _ = p.communicate(timeout=30)
  assert p.returncode == 75, out
  assert (rd.path / 'slurm-4242.rc').read_text().strip() == '75'
  assert (stubs / 'scancel.log').read_text().split() == ['--signal=TERM', '4242']
  assert (stubs / 'scontrol.log').read_text().split() == ['requeue', '4242']
  stopped_at = rd.last_metrics()['step']

  # 2. The requeued job runs the same script again: it resumes and finishes; no second requeue.
  p = subprocess.run(['bash', str(rd.path / 'job.sbatch')], env=env, cwd=REPO, capture_output=True, text=True)
  assert p.returncode == 0, p.stdout + p.stderr
  assert rd.summary() is not None
  assert [s['resumed_from'] for s in starts(rd)] == [0, stopped_at]
  assert (rd.path / 'slurm-4242.rc').read_text().strip() == '0'
  assert (stubs / 'scontrol.log').read_text().split() == ['requeue', '4242']

  # 3. A real failure (exit 3) is passed on and not requeued.
  p = subprocess.run(['bash', str(rds[1].path / 'job.sbatch')], env=env, cwd=REPO, capture_output=True, text=True)
  assert p.returncode == 3
  assert (rds[1].path / 'slurm-4242.rc').read_text().strip() == '3'
  assert (stubs / 'scontrol.log').read_text().split() == ['requeue', '4242']


# ---- a real SLURM cluster -------------------------------------------------------------------------------

def _local_cluster_conf() -> str | None:
  """slurm.conf of a cluster started by ci/local-slurm/start.sh, when $SLURM_CONF is not set."""
  d = os.environ.get('SLURM_LOCAL_DIR') or os.path.join(os.environ.get('TMPDIR', '/tmp'), 'local-slurm')
  conf = os.path.join(d, 'etc', 'slurm.conf')
  return conf if os.path.exists(conf) else None


def require_slurm(monkeypatch):
  """Skips without SLURM (sbatch not on PATH, or no reachable cluster) unless $CI is set: then it fails."""
  hint = ('run `bash ci/local-slurm/start.sh` and `source $SLURM_LOCAL_DIR/env.sh` before pytest')
  if shutil.which('sbatch') is None:
    if os.environ.get('CI'):
      pytest.fail(f'CI is set but `sbatch` is not on PATH: {hint}')
    pytest.skip(f'no SLURM here (`sbatch` not on PATH); {hint}')
  if not os.environ.get('SLURM_CONF') and _local_cluster_conf():
    monkeypatch.setenv('SLURM_CONF', _local_cluster_conf())
  p = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True)
  if p.returncode != 0 or not p.stdout.strip():
    msg = f'`sbatch` is on PATH but no cluster answers (sinfo: {p.stderr.strip()[-300:]}); {hint}'
    if os.environ.get('CI'):
      pytest.fail(msg)
    pytest.skip(msg)


def job_env(**kw):
  """The environment for launchers (sbatch exports it to the jobs): no fake devices from conftest."""
  env = dict(os.environ, PYTHONPATH=str(REPO), **kw)
  flags = [f for f in env.get('XLA_FLAGS', '').split() if 'xla_force_host_platform_device_count' not in f]
  env['XLA_FLAGS'] = ' '.join(flags)
  return env


def sweep_cmd(*args):
  return [sys.executable, '-m', 'scaling', 'sweep', *args]


def sacct_jobs(since: str, prefix: str) -> dict[str, str]:
  p = subprocess.run(['sacct', '-n', '-P', '-X', '-S', since, '-o', 'JobIDRaw,JobName,State'],
                     capture_output=True, text=True, check=True)
  out = {}
  for line in p.stdout.splitlines():
    jid, name, state = line.split('|')[:3]
    if name.startswith(prefix):
      out[jid] = state
  return out


@pytest.mark.slurm
def test_slurm_smoke_sweep_runs_each_run_once_and_resubmits_nothing(tmp_path, monkeypatch):
  require_slurm(monkeypatch)
  env = job_env()
  env.pop('SCALING_TRAIN_CMD', None)   # the real `scaling train` on the nano rung
  since = time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(time.time() - 1))
  # Tokenize the corpus once up front, so four jobs do not race to prepare it.
  subprocess.run([sys.executable, '-m', 'scaling', 'prepare', '--config', 'scaling/model/ladder.py:nano'], cwd=REPO,
                 env=env, check=True, capture_output=True)
  root = tmp_path / 'root'
  sw = sweep_lib.load_sweep(str(SMOKE))
  assert len(sw.runs) == 4

  # Two launchers at once submit each run exactly once; a third waits for the jobs.
  ps = [subprocess.Popen(sweep_cmd('--config', str(SMOKE), '--backend', 'slurm', '--root', str(root)), cwd=REPO,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=120)[0] for p in ps]
  assert [p.returncode for p in ps] == [0, 0], outs
  assert sum(o.count('[sweep] submitted run') for o in outs) == 4, outs
  w = subprocess.run(sweep_cmd('--config', str(SMOKE), '--backend', 'slurm', '--root', str(root), '--wait'),
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert w.returncode == 0, w.stdout + w.stderr
  assert 'submitted run' not in w.stdout

  rds = [rd_lib.RunDir(root, r.hash) for r in sw.runs]
  job_ids = set()
  for rd in rds:
    rec = rd.read()
    assert rd.summary() is not None, (rd.path / f'slurm-{rec["attempts"][0]["job_id"]}.out').read_text()
    assert rec['state'] == 'done' and len(rec['attempts']) == 1 and rec['attempts'][0]['outcome'] == 'done'
    job_ids.add(rec['attempts'][0]['job_id'])
  assert len(job_ids) == 4
  jobs = sacct_jobs(since, 'scaling-smoke-')
  assert set(jobs) == job_ids and set(jobs.values()) == {'COMPLETED'}

  c = subprocess.run(sweep_cmd('collect', '--root', str(root)), cwd=REPO, env=env, capture_output=True, text=True)
  assert c.returncode == 0, c.stderr
  rows = [json.loads(x) for x in (root / 'results.jsonl').read_text().splitlines()]
  assert len(rows) == 4 and {r['state'] for r in rows} == {'done'}
  assert sorted(r['tokens'] for r in rows) == [8 * 256, 8 * 256, 16 * 256, 16 * 256]   # steps x 4 x 64
  for row in rows:
    assert row['eval/loss'] > 0 and row['params'] > row['non_embedding_params'] > 0

  # Re-submitting finds every run done: no new jobs, run.json untouched.
  mtimes = [(rd.path / 'run.json').stat().st_mtime_ns for rd in rds]
  again = subprocess.run(sweep_cmd('--config', str(SMOKE), '--backend', 'slurm', '--root', str(root), '--wait'),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert again.returncode == 0, again.stdout + again.stderr
  assert again.stdout.count('already done: skipped') == 4
  assert sacct_jobs(since, 'scaling-smoke-').keys() == job_ids
  assert [(rd.path / 'run.json').stat().st_mtime_ns for rd in rds] == mtimes
  s = subprocess.run(sweep_cmd('status', '--root', str(root)), cwd=REPO, env=env, capture_output=True, text=True)
  assert s.stdout.strip().splitlines()[-1] == '4 runs: 4 done'


@pytest.mark.slurm
def test_slurm_sigterm_requeues_and_the_run_resumes(tmp_path, monkeypatch):
  require_slurm(monkeypatch)
  env = job_env(SCALING_TRAIN_CMD=f'{sys.executable} {FAKE}', FAKE_TRAIN_STEP_S='0.05')
  sweep = one_run_sweep(tmp_path, steps=100)
  root = tmp_path / 'root'
  p = subprocess.run(sweep_cmd('--config', str(sweep), '--backend', 'slurm', '--root', str(root)), cwd=REPO,
                     env=env, capture_output=True, text=True, timeout=60)
  assert p.returncode == 0, p.stdout + p.stderr
  rd = rd_lib.RunDir(root, sweep_lib.load_sweep(str(sweep)).runs[0].hash)
  job = rd.read()['attempts'][0]['job_id']
  wait_for(lambda: rd.last_metrics().get('step', 0) >= 3, what='3 steps under SLURM')
  subprocess.run(['scancel', '--signal=TERM', job], check=True)   # what --signal=TERM@120 sends at the time limit

  def requeued():
    q = subprocess.run(['squeue', '-h', '-j', job, '-o', '%T %r'], capture_output=True, text=True).stdout.split()
    return q[:2] == ['PENDING', 'BeginTime'] or rd.summary() is not None
  wait_for(requeued, what='the job to be requeued')
  # Shorten the requeue delay (BeginTime, normally ~2 min) but not to zero: slurmd refuses to launch a job in the
  # same second its previous instance was killed in ("Job credential revoked"; credentials have 1 s resolution).
  subprocess.run(['scontrol', 'update', f'JobId={job}', 'StartTime=now+3'], check=False)
  w = subprocess.run(sweep_cmd('--config', str(sweep), '--backend', 'slurm', '--root', str(root), '--wait'),
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert w.returncode == 0, w.stdout + w.stderr
  rec = rd.read()
  assert 'submitted run' not in w.stdout, (w.stdout, rec)   # the requeued job was alive: not submitted again
  assert rd.summary() is not None and len(rec['attempts']) == 1 and rec['attempts'][0]['job_id'] == job
  st = starts(rd)
  assert len(st) == 2 and st[0]['resumed_from'] == 0 and st[1]['resumed_from'] >= 3
  assert (rd.path / f'slurm-{job}.rc').read_text().strip() == '0'
  assert 'requeueing job' in (rd.path / f'slurm-{job}.out').read_text()


BRANCH_SWEEP = """
from scaling.launch.sweep import branches

def get_config(arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location('_l', {ladder!r})
  m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
  return m.get_config('nano')

def get_sweep(arg=None):
  return branches([{{'train.seed': 0}}], [10, 20, 40], decay_fraction=0.2)
"""


@pytest.mark.slurm
def test_slurm_branches_run_after_their_parent_and_resubmit_runs_nothing(tmp_path, monkeypatch):
  """One parent (32 steps, the fork checkpoints 8/16/32 kept) and branches of 10/20/40 steps forked at 8/16/32, with
  tests/fake_train.py (which exits 1 if a branch starts before its fork checkpoint exists): the branches are
  submitted at once behind the parent's job (afterok), each runs once after the parent ended, from its fork
  step; re-submitting submits no job."""
  require_slurm(monkeypatch)
  env = job_env(SCALING_TRAIN_CMD=f'{sys.executable} {FAKE}', FAKE_TRAIN_STEP_S='0.2')
  sweep = tmp_path / 'branch_sweep.py'
  sweep.write_text(textwrap.dedent(BRANCH_SWEEP.format(ladder=str(REPO / 'scaling' / 'model' / 'ladder.py'))))
  root = tmp_path / 'root'
  sw = sweep_lib.load_sweep(str(sweep))
  parent, kids = sw.runs[0], sw.runs[1:]
  since = time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(time.time() - 1))
  p = subprocess.run(sweep_cmd('--config', str(sweep), '--backend', 'slurm', '--root', str(root)), cwd=REPO,
                     env=env, capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stdout + p.stderr
  assert p.stdout.count('[sweep] submitted run') == 4, p.stdout
  prd = rd_lib.RunDir(root, parent.hash)
  pjob = prd.read()['attempts'][0]['job_id']
  if subprocess.run(['squeue', '-h', '-j', pjob, '-o', '%T'], capture_output=True, text=True).stdout.strip():
    for k in kids:   # the parent is still queued or running: every branch waits on its job
      job = rd_lib.RunDir(root, k.hash).read()['attempts'][0]['job_id']
      dep = subprocess.run(['squeue', '-h', '-j', job, '-o', '%E'], capture_output=True, text=True).stdout
      assert f'afterok:{pjob}' in dep, (k.label, dep)

  w = subprocess.run(sweep_cmd('--config', str(sweep), '--backend', 'slurm', '--root', str(root), '--wait'),
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert w.returncode == 0, w.stdout + w.stderr
  assert 'submitted run' not in w.stdout
  parent_end = (prd.path / 'summary.json').stat().st_mtime
  job_ids = {pjob}
  for k in kids:
    rd = rd_lib.RunDir(root, k.hash)
    rec = rd.read()
    assert rd.summary() is not None and rec['state'] == 'done' and len(rec['attempts']) == 1, rec
    st = starts(rd)
    assert len(st) == 1 and st[0]['branched_from'] == k.fork_step, st
    assert st[0]['time'] >= parent_end - 1.0     # afterok: started once the parent's job had ended
    job_ids.add(rec['attempts'][0]['job_id'])
  assert sorted(int(x.name) for x in (prd.path / 'checkpoints').iterdir()) == [8, 16, 32]
  jobs = sacct_jobs(since, 'scaling-branch_sweep-')
  assert set(jobs) == job_ids and set(jobs.values()) == {'COMPLETED'}

  again = subprocess.run(sweep_cmd('--config', str(sweep), '--backend', 'slurm', '--root', str(root), '--wait'),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert again.returncode == 0, again.stdout + again.stderr
  assert again.stdout.count('already done: skipped') == 4 and 'submitted run' not in again.stdout
  assert sacct_jobs(since, 'scaling-branch_sweep-').keys() == job_ids
