"""Cooldown branches on the queue backends, against stub sbatch/squeue/sacct and xpk (tests/fake_queue.py).

slurm: a branch whose parent's fork checkpoint does not exist yet is submitted behind the parent's job
(--dependency=afterok:<parent job id> --kill-on-invalid-dep=yes, as the sbatch call the stub saw); once
the checkpoint exists it is submitted without one; re-submitting a finished sweep submits nothing.
gke (no job dependencies): a branch is not submitted until the checkpoint exists, then it is.
The real-cluster version is in tests/test_slurm.py (marker slurm).
"""

import json
import os
import pathlib
import textwrap

import fake_queue
import pytest

from scaling.launch import rundir as rd_lib
from scaling.launch import sweep as sweep_lib
from scaling.launch.gke import GkeBackend
from scaling.launch.slurm import SlurmBackend

REPO = pathlib.Path(__file__).resolve().parent.parent

SWEEP = """
from scaling.launch.sweep import branches

def get_config(arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location('_l', {ladder!r})
  m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
  return m.get_config('nano')

def get_sweep(arg=None):
  return branches([{{'train.seed': 0}}], [10, 20], decay_fraction=0.2)
"""


@pytest.fixture
def fq(tmp_path, monkeypatch):
  d = tmp_path / 'fq'
  d.mkdir()
  monkeypatch.setenv('PATH', f'{d / "bin"}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setenv('FAKE_QUEUE_STATE', str(d / 'state.json'))
  fake_queue.install(d / 'bin', d / 'state.json', {})
  return d / 'state.json'


def make_sweep(tmp_path):
  p = tmp_path / 'sw.py'
  p.write_text(textwrap.dedent(SWEEP.format(ladder=str(REPO / 'scaling' / 'model' / 'ladder.py'))))
  return sweep_lib.load_sweep(str(p))


def quick(be):
  for k, v in dict(poll_s=0.05, query_timeout_s=5.0, submit_timeout_s=5.0, unknown_patience_s=30.0,
                   lock_timeout_s=5.0).items():
    setattr(be, k, v)
  return be


def sbatch_calls(state) -> list[list[str]]:
  return [c['argv'] for c in fake_queue.calls(state) if c['tool'] == 'sbatch']


def job_of(root, run) -> str:
  return rd_lib.RunDir(root, run.hash).read()['attempts'][-1]['job_id']


def test_slurm_branches_depend_on_their_parents_job_and_resubmit_submits_nothing(fq, tmp_path):
  sw = make_sweep(tmp_path)
  parent, b10, b20 = sw.runs
  assert (b10.fork_step, b20.fork_step) == (8, 16)
  root = tmp_path / 'root'
  logs = []
  quick(SlurmBackend(root, {}, log=logs.append)).submit(sw, wait=False)
  calls = sbatch_calls(fq)
  assert len(calls) == 3, logs
  by_run = {pathlib.Path(c[-1]).parent.name: c[:-1] for c in calls}
  pjob = job_of(root, parent)
  assert by_run[parent.hash] == ['--parsable']
  for b in (b10, b20):
    assert by_run[b.hash] == ['--parsable', f'--dependency=afterok:{pjob}', '--kill-on-invalid-dep=yes']

  assert quick(SlurmBackend(root, {}, log=logs.append)).submit(sw, wait=True) == 0, logs
  assert len(sbatch_calls(fq)) == 3
  mtimes = [(rd_lib.RunDir(root, r.hash).path / 'run.json').stat().st_mtime_ns for r in sw.runs]
  out = []
  assert quick(SlurmBackend(root, {}, log=out.append)).submit(sw, wait=True) == 0
  assert len(sbatch_calls(fq)) == 3 and sum('already done: skipped' in x for x in out) == 3, out
  assert [(rd_lib.RunDir(root, r.hash).path / 'run.json').stat().st_mtime_ns for r in sw.runs] == mtimes


def test_slurm_branch_whose_fork_checkpoint_exists_has_no_dependency(fq, tmp_path):
  sw = make_sweep(tmp_path)
  parent, b10, b20 = sw.runs
  root = tmp_path / 'root'
  (root / 'runs' / parent.hash / 'checkpoints' / '8').mkdir(parents=True)   # the parent got past step 8
  quick(SlurmBackend(root, {}, log=lambda *_: None)).submit(sw, wait=False)
  by_run = {pathlib.Path(c[-1]).parent.name: c[:-1] for c in sbatch_calls(fq)}
  assert by_run[b10.hash] == ['--parsable']
  assert by_run[b20.hash][1] == f'--dependency=afterok:{job_of(root, parent)}'


def test_slurm_dry_run_names_the_dependency():
  sw = sweep_lib.load_sweep(str(REPO / 'configs' / 'sweeps' / 'cooldown.py') + ':quick')
  text = SlurmBackend('/nonexistent-root', {}, log=lambda *_: None).dry_run(sw)
  parent = sw.runs[0].hash
  assert text.count(f"'--dependency=afterok:<job of run {parent}>' --kill-on-invalid-dep=yes") == 4, text


def test_gke_branch_waits_for_the_fork_checkpoint(fq, tmp_path):
  sw = make_sweep(tmp_path)
  parent, b10, b20 = sw.runs
  root = tmp_path / 'root'
  res = {'cluster': 'c1', 'tpu_type': 'v5litepod-8', 'docker_image': 'img', 'remote_root': str(root)}
  logs = []
  quick(GkeBackend(root, res, log=logs.append)).submit(sw, wait=False)

  def created():
    names = [a for c in fake_queue.calls(fq) if c['tool'] == 'xpk' and c['argv'][:2] == ['workload', 'create']
             for a in c['argv'] if a.startswith('--workload=')]
    return [sum(f'scaling-{r.hash[:12]}-' in n for n in names) for r in sw.runs]
  assert created() == [1, 0, 0]
  assert sum('waits for its parent' in x for x in logs) == 2, logs
  for step in (8, 16):   # the parent's checkpoints (the stub xpk runs nothing)
    (root / 'runs' / parent.hash / 'checkpoints' / str(step)).mkdir(parents=True)
  assert quick(GkeBackend(root, res, log=logs.append)).submit(sw, wait=True) == 0, logs
  assert created() == [1, 1, 1]
  assert quick(GkeBackend(root, res, log=logs.append)).submit(sw, wait=True) == 0
  assert created() == [1, 1, 1]
  assert all(json.loads((rd_lib.RunDir(root, r.hash).path / 'run.json').read_text())['state'] == 'done'
             for r in sw.runs)
