"""The local backend end to end, with tests/fake_train.py standing in for `scaling train`.

Failure, kill -9 mid-run, retries, resumption, SIGTERM to the launcher, two
launchers on one root, status and collect. The fake trainer records every start
in RUN_DIR/starts.jsonl: an independent count of how often each run executed.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from scaling.launch import rundir as rd_lib
from scaling.launch import sweep as sweep_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
FAKE = REPO / 'tests' / 'fake_train.py'
STEPS = 40

SWEEP = """
from scaling.launch.sweep import product

def get_config(arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location('_l', {ladder!r})
  m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
  c = m.get_config('nano')
  c.train.steps = {steps}
  return c

def get_sweep(arg=None):
  return product(train__seed=[0, 1, 2, 3])
"""


@pytest.fixture
def sweep_file(tmp_path):
  p = tmp_path / 'fake_sweep.py'
  p.write_text(textwrap.dedent(SWEEP.format(ladder=str(REPO / 'scaling' / 'model' / 'ladder.py'), steps=STEPS)))
  return p


def env(**kw):
  e = dict(os.environ, SCALING_TRAIN_CMD=f'{sys.executable} {FAKE}', PYTHONPATH=str(REPO), FAKE_TRAIN_STEP_S='0.05')
  e.pop('FAKE_TRAIN_FAIL_SEEDS', None)
  e.update(kw)
  return e


def launch(sweep_file, root, *extra, **env_kw):
  cmd = [sys.executable, '-m', 'scaling.launch.cli', '--config', str(sweep_file), '--root', str(root), *extra]
  return subprocess.Popen(cmd, cwd=REPO, env=env(**env_kw), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def by_seed(sweep_file, root):
  sw = sweep_lib.load_sweep(str(sweep_file))
  return {r.config.train.seed: rd_lib.RunDir(root, r.hash) for r in sw.runs}


def starts(rd):
  p = rd.path / 'starts.jsonl'
  return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def wait_for(pred, timeout=30.0):
  t0 = time.monotonic()
  while not pred():
    assert time.monotonic() - t0 < timeout, 'timed out'
    time.sleep(0.02)


def snapshot(rd):
  return {f: (rd.path / f).stat().st_mtime_ns for f in ('run.json', 'summary.json', 'metrics.jsonl', 'starts.jsonl')}


def test_failure_and_kill_then_resubmit_finishes_both_and_leaves_finished_runs_alone(sweep_file, tmp_path, capsys):
  root = tmp_path / 'root'
  runs = by_seed(sweep_file, root)
  # Seed 1 fails after 2 steps; seed 2 is killed with SIGKILL once it has logged 5 steps.
  p = launch(sweep_file, root, '--max-parallel', '4', '--max-retries', '0', FAKE_TRAIN_FAIL_SEEDS='1')
  victim = runs[2]

  wait_for(lambda: victim.last_metrics().get('step', 0) >= 5)
  pid = victim.read()['attempts'][-1]['pid']
  os.kill(pid, signal.SIGKILL)
  out, _ = p.communicate(timeout=60)
  assert p.returncode == 1, out

  recs = {s: rd.read() for s, rd in runs.items()}
  assert recs[0]['state'] == recs[3]['state'] == 'done'
  assert recs[1]['state'] == 'failed' and recs[1]['attempts'][-1]['exit_code'] == 3
  assert recs[2]['state'] == 'failed' and recs[2]['attempts'][-1]['exit_code'] == -signal.SIGKILL
  killed_at = victim.last_metrics()['step']
  assert 5 <= killed_at < STEPS
  finished = {s: snapshot(runs[s]) for s in (0, 3)}

  # --max-retries 0: both failures are used up, so nothing runs and nothing changes.
  p = launch(sweep_file, root, '--max-parallel', '4', '--max-retries', '0')
  out, _ = p.communicate(timeout=60)
  assert p.returncode == 1 and out.count('raise --max-retries') == 2, out
  assert [len(starts(runs[s])) for s in range(4)] == [1, 1, 1, 1]

  # One retry allowed, no injected failure: both finish; the killed run resumes from its checkpoint.
  p = launch(sweep_file, root, '--max-parallel', '4', '--max-retries', '1')
  out, _ = p.communicate(timeout=60)
  assert p.returncode == 0, out
  assert out.count('already done: skipped') == 2
  for s in range(4):
    assert runs[s].summary() is not None
    steps = [json.loads(x)['step'] for x in (runs[s].path / 'metrics.jsonl').read_text().splitlines()]
    assert sorted(set(steps)) == list(range(1, STEPS + 1))   # every step exactly once (up to a step redone after kill)
  assert [len(starts(runs[s])) for s in range(4)] == [1, 2, 2, 1]
  assert starts(victim)[1]['resumed_from'] in (killed_at - 1, killed_at)
  assert starts(runs[1])[1]['resumed_from'] == 2
  for s in (0, 3):
    assert snapshot(runs[s]) == finished[s]
    assert len(runs[s].read()['attempts']) == 1
  assert [len(runs[s].read()['attempts']) for s in (1, 2)] == [2, 2]

  # collect: one row per run with the summary's numbers
  from scaling.launch.cli import run_sweep_cli
  assert run_sweep_cli(['collect', '--root', str(root)]) == 0
  rows = [json.loads(x) for x in (root / 'results.jsonl').read_text().splitlines()]
  assert len(rows) == 4
  for row in rows:
    summ = json.loads((root / 'runs' / row['run'] / 'summary.json').read_text())
    assert row['state'] == 'done'
    for k in rd_lib.RESULT_KEYS:
      assert row[k] == summ[k]
    assert set(row) == {'run', 'overrides', 'state', 'name', 'changes', *rd_lib.RESULT_KEYS, *rd_lib.LINEAGE_KEYS}
    assert row['changes'] == []   # resumed with the flags of the first attempt: nothing changed
    assert row['role'] is None and row['own_flops'] == row['flops']   # no branches in this sweep

  # status: train and eval loss under their own names (the sweep's lines say which is which too)
  assert 'train_loss ' in out and 'eval_loss ' in out and ' loss ' not in out
  capsys.readouterr()
  assert run_sweep_cli(['status', '--root', str(root)]) == 0
  table = capsys.readouterr().out.splitlines()
  assert table[0].split() == ['run', 'overrides', 'state', 'step', 'train_loss', 'eval_loss', 'attempts', 'job']
  summ = runs[0].summary()
  row = next(x for x in table if x.startswith(runs[0].hash)).split()
  assert row[-4:-2] == [f'{summ["train/loss"]:.4g}', f'{summ["eval/loss"]:.4g}']


def test_two_launchers_on_one_root_run_each_run_once(sweep_file, tmp_path):
  root = tmp_path / 'root'
  ps = [launch(sweep_file, root, '--max-parallel', '2', '--local_processes', '2') for _ in range(2)]
  outs = [p.communicate(timeout=60)[0] for p in ps]
  assert [p.returncode for p in ps] == [0, 0], outs
  runs = by_seed(sweep_file, root)
  for rd in runs.values():
    assert rd.summary() is not None
    assert len(starts(rd)) == 1 and starts(rd)[0]['local_processes'] == 2
    assert len(rd.read()['attempts']) == 1
  skipped = sum(o.count('being run by another launcher') + o.count('already done') for o in outs)
  started = sum(o.count('[sweep] start run') for o in outs)
  assert started == 4 and skipped == 4


def test_sigterm_to_launcher_preempts_runs_which_resume(sweep_file, tmp_path):
  root = tmp_path / 'root'
  runs = by_seed(sweep_file, root)
  p = launch(sweep_file, root, '--max-parallel', '2')
  wait_for(lambda: all(rd.last_metrics().get('step', 0) >= 3 for rd in (runs[0], runs[1])))
  p.send_signal(signal.SIGTERM)
  out, _ = p.communicate(timeout=30)
  assert p.returncode == 75, out
  for s in (0, 1):
    rec = runs[s].read()
    assert rec['state'] == 'preempted' and rec['attempts'][-1]['exit_code'] == 75
  assert runs[2].read()['attempts'] == [] and runs[2].read()['state'] == 'pending'

  # status (a table from run.json and metrics.jsonl), then resume everything
  st = subprocess.run([sys.executable, '-m', 'scaling.launch.cli', 'status', '--root', str(root), '--json'], cwd=REPO,
                      env=env(), capture_output=True, text=True)
  rows = {r['run']: r for r in map(json.loads, st.stdout.splitlines())}
  assert rows[runs[0].hash]['state'] == 'preempted' and rows[runs[2].hash]['state'] == 'pending'
  assert rows[runs[0].hash]['step'] == runs[0].last_metrics()['step']

  p = launch(sweep_file, root, '--max-parallel', '4', '--max-retries', '0')
  out, _ = p.communicate(timeout=60)
  assert p.returncode == 0, out
  for s in (0, 1):
    assert starts(runs[s])[1]['resumed_from'] >= 3
  assert all(rd.summary() is not None for rd in runs.values())


def test_killed_launcher_leaves_runs_locked_until_training_ends(sweep_file, tmp_path):
  root = tmp_path / 'root'
  runs = by_seed(sweep_file, root)
  hold = tmp_path / 'hold'   # keeps the trainers alive (between steps) for as long as it exists
  p = launch(sweep_file, root, '--max-parallel', '4', FAKE_TRAIN_HOLD=str(hold))
  wait_for(lambda: all(rd.last_metrics().get('step', 0) >= 2 for rd in runs.values()))
  hold.touch()
  p.kill()   # SIGKILL: the launcher cannot clean up; its training processes live on
  p.communicate()
  # The orphaned trainers still hold their runs' locks (inherited descriptor): a new launcher skips them all.
  q = launch(sweep_file, root, '--max-parallel', '4')
  out, _ = q.communicate(timeout=60)
  assert q.returncode == 0 and out.count('being run by another launcher') == 4, out
  assert [len(starts(rd)) for rd in runs.values()] == [1, 1, 1, 1]
  # The machine "crashes": the trainers die too. The next launcher resumes every run; the lost
  # attempts count as interrupted, not failed, so --max-retries 0 does not stop them.
  for rd in runs.values():
    try:
      os.kill(rd.read()['attempts'][-1]['pid'], signal.SIGKILL)
    except ProcessLookupError:
      pass
  def lock_free(rd):
    with rd.locked() as fd:
      return fd is not None
  hold.unlink()
  wait_for(lambda: all(lock_free(rd) for rd in runs.values()), timeout=10)
  r = launch(sweep_file, root, '--max-parallel', '4', '--max-retries', '0')
  out, _ = r.communicate(timeout=60)
  assert r.returncode == 0, out
  for rd in runs.values():
    rec = rd.read()
    assert rd.summary() is not None and [a['outcome'] for a in rec['attempts']] == ['interrupted', 'done']
    assert len(starts(rd)) == 2 and starts(rd)[1]['resumed_from'] >= 2


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


def test_branches_wait_for_their_parent_and_resubmit_runs_nothing(tmp_path, capsys):
  """A parent (constant lr, 32 steps, checkpoints at 8/16/24/32 all kept) and branches of 10/20/40 steps forked
  at 8/16/32: with 4 slots every branch still starts only once its fork checkpoint exists (the fake trainer
  exits 1 otherwise), each exactly once, from its fork step; re-submitting starts nothing."""
  sweep_file = tmp_path / 'branch_sweep.py'
  sweep_file.write_text(textwrap.dedent(BRANCH_SWEEP.format(ladder=str(REPO / 'scaling' / 'model' / 'ladder.py'))))
  root = tmp_path / 'root'
  sw = sweep_lib.load_sweep(str(sweep_file))
  parent, kids = sw.runs[0], sw.runs[1:]
  assert [(k.parent, k.fork_step) for k in kids] == [(parent.hash, 8), (parent.hash, 16), (parent.hash, 32)]
  p = launch(sweep_file, root, '--max-parallel', '4', '--max-retries', '0', FAKE_TRAIN_STEP_S='0.03')
  out, _ = p.communicate(timeout=120)
  assert p.returncode == 0, out
  prd = rd_lib.RunDir(root, parent.hash)
  assert sorted(int(x.name) for x in (prd.path / 'checkpoints').iterdir()) == [8, 16, 32]   # the forks, kept
  for k in kids:
    rd = rd_lib.RunDir(root, k.hash)
    st = starts(rd)
    assert len(st) == 1 and st[0]['branched_from'] == k.fork_step, (k.label, st)
    assert (prd.path / 'checkpoints' / str(k.fork_step)).stat().st_mtime <= st[0]['time']
    steps = [json.loads(x)['step'] for x in (rd.path / 'metrics.jsonl').read_text().splitlines()]
    assert steps == list(range(k.fork_step + 1, k.config.train.steps + 1))   # only its decay
    assert len(rd.read()['attempts']) == 1 and rd.read()['state'] == 'done'

  before = {r.hash: len(starts(rd_lib.RunDir(root, r.hash))) for r in sw.runs}
  p = launch(sweep_file, root, '--max-parallel', '4')
  out, _ = p.communicate(timeout=60)
  assert p.returncode == 0 and out.count('already done: skipped') == 4, out
  assert {r.hash: len(starts(rd_lib.RunDir(root, r.hash))) for r in sw.runs} == before

  # collect: per branch its whole D and C (the fit's), its own share, and the lineage
  from scaling.launch.cli import run_sweep_cli
  assert run_sweep_cli(['collect', '--root', str(root)]) == 0
  rows = {r['run']: r for r in map(json.loads, (root / 'results.jsonl').read_text().splitlines())}
  tps = parent.config.train.batch_size * parent.config.model.seq_len
  per_step = 6.0 * 1000 * parent.config.model.d_model * tps     # fake_train's flops per step
  assert rows[parent.hash]['role'] == 'parent' and rows[parent.hash]['state'] == 'parent'
  assert rows[parent.hash]['own_flops'] == pytest.approx(32 * per_step)
  for k, (total, fork) in zip(kids, [(10, 8), (20, 16), (40, 32)]):
    r = rows[k.hash]
    assert (r['role'], r['parent'], r['fork_step'], r['state']) == ('branch', parent.hash, fork, 'done')
    assert r['tokens'] == total * tps and r['flops'] == pytest.approx(total * per_step)
    assert r['own_tokens'] == (total - fork) * tps and r['own_flops'] == pytest.approx((total - fork) * per_step)
  saved = rd_lib.branch_compute(list(rows.values()))
  assert saved['sweep_flops'] == pytest.approx((32 + 2 + 4 + 8) * per_step)
  assert saved['separate_flops'] == pytest.approx((10 + 20 + 40) * per_step)
  assert saved['fraction'] == pytest.approx(46 / 70)


def test_branch_of_a_failed_parent_is_not_started(tmp_path):
  """The parent fails (seed 0 fails after 2 steps, before any checkpoint): its branches are not started."""
  sweep_file = tmp_path / 'branch_sweep.py'
  sweep_file.write_text(textwrap.dedent(BRANCH_SWEEP.format(ladder=str(REPO / 'scaling' / 'model' / 'ladder.py'))))
  root = tmp_path / 'root'
  sw = sweep_lib.load_sweep(str(sweep_file))
  p = launch(sweep_file, root, '--max-parallel', '2', '--max-retries', '0', FAKE_TRAIN_FAIL_SEEDS='0')
  out, _ = p.communicate(timeout=60)
  assert p.returncode == 1, out
  assert out.count('ended without a checkpoint of step') == 3, out
  assert [len(starts(rd_lib.RunDir(root, r.hash))) for r in sw.runs] == [1, 0, 0, 0]
