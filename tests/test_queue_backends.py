"""The slurm, gke and tpu-vm state machines end to end, against stub squeue/sacct/sbatch, xpk and gcloud
executables on PATH (tests/fake_queue.py) that succeed, fail, hang, report preemption and report success.

What is checked is what the stubs saw (every call is logged in calls.jsonl) and what run.json says: no
run is submitted (sbatch, xpk workload create, ssh) more often than its history allows, a failed or hung
query never makes a job "gone", and a job whose state stays unknown ends in an error, not a resubmission.
The tests use only names the launcher had before queries could be "unknown", so they can be run against
older versions of launch/ as well.
"""

import json
import os
import pathlib
import sys
import textwrap

import fake_queue
import pytest

from scaling.launch import rundir as rd_lib
from scaling.launch import sweep as sweep_lib
from scaling.launch.gke import GkeBackend
from scaling.launch.slurm import SlurmBackend
from scaling.launch.tpu_vm import TpuVmBackend

REPO = pathlib.Path(__file__).resolve().parent.parent
FAKE_TRAIN = REPO / 'tests' / 'fake_train.py'
RUNNING, PENDING = {'state': 'RUNNING'}, {'state': 'PENDING'}
DONE = fake_queue.DONE

SWEEP = """
def get_config(arg=None):
  import importlib.util
  spec = importlib.util.spec_from_file_location('_l', {ladder!r})
  m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
  c = m.get_config('nano')
  c.train.steps = 20
  return c

def get_sweep(arg=None):
  return [{{'train.seed': s}} for s in {seeds}]
"""


class FakeQueue:
  def __init__(self, tmp_path, monkeypatch):
    self.dir = tmp_path / 'fq'
    self.state = self.dir / 'state.json'
    self.dir.mkdir()
    monkeypatch.setenv('PATH', f'{self.dir / "bin"}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('FAKE_QUEUE_STATE', str(self.state))

  def setup(self, **state):
    fake_queue.install(self.dir / 'bin', self.state, state)

  def update(self, **kw):
    st = json.loads(self.state.read_text())
    st.update(kw)
    self.state.write_text(json.dumps(st))

  def calls(self, tool, *prefix):
    return [c for c in fake_queue.calls(self.state) if c['tool'] == tool and c['argv'][:len(prefix)] == list(prefix)]


@pytest.fixture
def fq(tmp_path, monkeypatch):
  return FakeQueue(tmp_path, monkeypatch)


def make_sweep(tmp_path, seeds=(0, 1)):
  p = tmp_path / 'sw.py'
  p.write_text(textwrap.dedent(SWEEP.format(ladder=str(REPO / 'scaling' / 'model' / 'ladder.py'), seeds=list(seeds))))
  return sweep_lib.load_sweep(str(p))


def quick(be, **kw):
  """Short waits for tests (poll, tool timeouts, patience); attributes an older launcher simply ignores."""
  for k, v in {**dict(poll_s=0.05, query_timeout_s=2.0, submit_timeout_s=2.0, unknown_patience_s=30.0,
                      lock_timeout_s=5.0, vm_poll_s=0.05), **kw}.items():
    setattr(be, k, v)
  return be


def attempts(root, run):
  return rd_lib.RunDir(root, run.hash).read()['attempts']


def sbatch_per_run(fq, sw):
  runs = [pathlib.Path(c['argv'][-1]).parent.name for c in fq.calls('sbatch')]
  return [runs.count(r.hash) for r in sw.runs]


# ---- slurm ----------------------------------------------------------------------------------------------

def test_slurm_failed_and_hung_queries_are_unknown_and_no_run_is_submitted_twice(fq, tmp_path):
  sw = make_sweep(tmp_path)
  a, b = sw.runs
  # Run b is preempted: its batch script writes exit code 75 and requeues the job (same id, PENDING again).
  # Poll 1 answers; in polls 2 and 3 squeue and sacct fail, then hang; from poll 4 they answer again.
  fq.setup(plans={b.hash: [[RUNNING, {'state': 'PENDING', 'rc': 75}, RUNNING, DONE]]},
           faults={'sacct': ['ok', 'error', 'hang'], 'squeue': ['ok', 'ok', 'error', 'error', 'error', 'hang']})
  logs = []
  be = quick(SlurmBackend(tmp_path / 'root', {}, max_retries=2, log=logs.append))
  assert be.submit(sw, wait=True) == 0, logs
  assert sbatch_per_run(fq, sw) == [1, 1]
  for run in sw.runs:
    (att,) = attempts(be.root, run)
    assert att['outcome'] == 'done'
  assert (rd_lib.RunDir(be.root, b.hash).path / f'slurm-{attempts(be.root, b)[0]["job_id"]}.rc').exists()
  assert len(fq.calls('squeue')) > 6          # it kept asking after the failures
  assert any('unknown' in line for line in logs), logs


def test_slurm_job_unknown_past_the_patience_is_an_error_not_a_resubmission(fq, tmp_path, monkeypatch, capsys):
  sw = make_sweep(tmp_path, seeds=(0,))
  fq.setup()
  root = tmp_path / 'root'
  assert quick(SlurmBackend(root, {}, log=lambda *_: None)).submit(sw, wait=False) == 0
  assert sbatch_per_run(fq, sw) == [1]
  fq.update(faults={'squeue': ['error'] * 500, 'sacct': ['error'] * 500})   # the controller is down

  be = quick(SlurmBackend(root, {}, log=lambda *_: None), unknown_patience_s=0.5)
  with pytest.raises(Exception, match='Nothing was resubmitted'):
    be.submit(sw, wait=False)
  # the same through the command line: exit 1 with the error, nothing submitted
  from scaling.launch import cli
  monkeypatch.setattr(SlurmBackend, 'unknown_patience_s', 0.5, raising=False)
  monkeypatch.setattr(SlurmBackend, 'poll_s', 0.05)
  monkeypatch.setattr(SlurmBackend, 'query_timeout_s', 2.0, raising=False)
  assert cli.run_sweep_cli(['--config', str(sw.path), '--backend', 'slurm', '--root', str(root)]) == 1
  assert 'did not say what became of 1 job' in capsys.readouterr().err
  assert sbatch_per_run(fq, sw) == [1]
  (att,) = attempts(root, sw.runs[0])
  assert 'outcome' not in att and rd_lib.RunDir(root, sw.runs[0].hash).read()['state'] == 'submitted'

  # The controller is back: the same job is found and waited for; still one submission.
  fq.update(faults={})
  assert quick(SlurmBackend(root, {}, log=lambda *_: None)).submit(sw, wait=True) == 0
  assert sbatch_per_run(fq, sw) == [1]
  assert [x['outcome'] for x in attempts(root, sw.runs[0])] == ['done']


def test_slurm_job_the_queue_has_forgotten_is_interrupted_and_resubmitted_once(fq, tmp_path):
  sw = make_sweep(tmp_path, seeds=(0,))
  fq.setup()
  root = tmp_path / 'root'
  quick(SlurmBackend(root, {}, log=lambda *_: None)).submit(sw, wait=False)
  fq.update(jobs={})   # purged without accounting: squeue says "Invalid job id", sacct has no row
  quick(SlurmBackend(root, {}, log=lambda *_: None)).submit(sw, wait=False)
  assert [x.get('outcome') for x in attempts(root, sw.runs[0])] == ['interrupted', None]
  quick(SlurmBackend(root, {}, log=lambda *_: None)).submit(sw, wait=False)   # alive now: skipped
  assert sbatch_per_run(fq, sw) == [2]


def test_slurm_failed_job_is_retried_and_a_failed_or_hung_sbatch_records_nothing(fq, tmp_path):
  sw = make_sweep(tmp_path, seeds=(0,))
  run = sw.runs[0]
  fq.setup(plans={run.hash: [[RUNNING, {'state': 'FAILED', 'rc': 3}], [RUNNING, DONE]]},
           faults={'sbatch': ['error', 'hang']})
  root = tmp_path / 'root'
  be = quick(SlurmBackend(root, {}, max_retries=1, log=lambda *_: None))
  with pytest.raises(Exception, match='Unable to contact slurm controller'):
    be.submit(sw, wait=True)
  assert attempts(root, run) == []
  with pytest.raises(Exception, match='may or may not have been submitted'):
    be.submit(sw, wait=True)
  assert attempts(root, run) == []
  assert be.submit(sw, wait=True) == 0
  assert [(x['outcome'], x['exit_code']) for x in attempts(root, run)] == [('failed', 3), ('done', 0)]
  assert sbatch_per_run(fq, sw) == [1 + 1 + 2]   # the failed call, the hung one, then the two real jobs


# ---- gke ------------------------------------------------------------------------------------------------

def gke(root, **kw):
  res = {'cluster': 'c1', 'tpu_type': 'v5litepod-8', 'docker_image': 'img', 'remote_root': str(root)}
  return quick(GkeBackend(root, res, max_retries=1, log=kw.pop('log', lambda *_: None)), **kw)


def creates_per_run(fq, sw):
  names = [next(a for a in c['argv'] if a.startswith('--workload=')) for c in fq.calls('xpk', 'workload', 'create')]
  return [sum(f'scaling-{r.hash[:12]}-' in n for n in names) for r in sw.runs]


def test_gke_job_states_with_a_new_workload_a_restart_and_a_failed_and_hung_xpk(fq, tmp_path):
  sw = make_sweep(tmp_path)
  a, b = sw.runs
  listed = {'state': 'SUCCEEDED', 'summary': True}
  # a: not listed yet right after creation; b: preempted and restarted by xpk (--max-restarts).
  # Poll 3 of `xpk workload list`: a fails, b hangs.
  fq.setup(plans={a.hash: [[{'state': 'NOT_LISTED'}, RUNNING, RUNNING, listed]],
                  b.hash: [[RUNNING, {'state': 'RESTARTING'}, RUNNING, listed]]},
           faults={'xpk': ['ok'] * 6 + ['error', 'hang']})
  root = tmp_path / 'root'
  logs = []
  assert gke(root, log=logs.append).submit(sw, wait=True) == 0, logs
  assert creates_per_run(fq, sw) == [1, 1]
  for run in sw.runs:
    assert [x['outcome'] for x in attempts(root, run)] == ['done']
  assert gke(root).submit(sw, wait=False) == 0     # everything done: nothing created
  assert creates_per_run(fq, sw) == [1, 1]


def test_gke_failed_workload_is_retried_and_a_forgotten_one_is_interrupted(fq, tmp_path):
  sw = make_sweep(tmp_path)
  a, b = sw.runs
  fq.setup(plans={a.hash: [[RUNNING, {'state': 'FAILED'}], [RUNNING, {'state': 'SUCCEEDED', 'summary': True}]],
                  b.hash: [[RUNNING, {'state': 'NOT_LISTED'}]]})
  root = tmp_path / 'root'
  # b's workload vanishes (the queue answers that it does not exist): interrupted, and resubmitted in the
  # round that retries a's failure.
  assert gke(root, gone_grace_s=0.0).submit(sw, wait=True) == 0
  assert [x['outcome'] for x in attempts(root, a)] == ['failed', 'done']
  assert [x['outcome'] for x in attempts(root, b)] == ['interrupted', 'done']
  assert [x['job_id'][-3:] for x in attempts(root, b)] == ['-a1', '-a2']
  assert creates_per_run(fq, sw) == [2, 2]


# ---- tpu-vm ---------------------------------------------------------------------------------------------

def test_tpu_vm_prepare_with_failing_describe_then_a_preempted_vm_is_recreated_and_the_run_resumes(
    fq, tmp_path, monkeypatch):
  monkeypatch.setenv('FAKE_TRAIN_STEP_S', '0.02')
  sw = make_sweep(tmp_path, seeds=(0,))
  (a,) = sw.runs
  root = tmp_path / 'root'
  # The VM exists (READY) from an earlier sweep; the first describe fails and the second hangs. The VM is
  # preempted under the run after 2 steps.
  fq.setup(vms={'vm-0': {'plan': ['READY'], 'pos': 0}}, faults={'gcloud': ['error', 'hang']}, ssh=['preempt'])
  res = {'tpu_type': 'v5litepod-8', 'zone': 'z1', 'tpu_name': 'vm', 'remote_repo': str(REPO),
         'remote_root': str(root), 'train_cmd': f'{sys.executable} {FAKE_TRAIN}'}
  logs = []
  be = quick(TpuVmBackend(root, res, max_parallel=1, max_retries=0, poll_s=0.02, log=logs.append))
  assert be.submit(sw) == 0, logs

  ssh = [c for c in fq.calls('gcloud') if c['argv'][3] == 'ssh']
  assert len(ssh) == 2 and all(f'/runs/{a.hash} ' in c['argv'][-1] for c in ssh)   # once more after preemption
  verbs = [c['argv'][3] for c in fq.calls('gcloud') if c['mode'] == 'ok']
  assert verbs.count('create') == 1 and verbs.index('create') > verbs.index('delete')   # only the recreate
  assert verbs[-1] == 'delete'                   # and the VM goes at the end
  assert [x['outcome'] for x in attempts(root, a)] == ['preempted', 'done']
  starts = [json.loads(x) for x in (rd_lib.RunDir(root, a.hash).path / 'starts.jsonl').read_text().splitlines()]
  assert len(starts) == 2 and starts[1]['resumed_from'] >= 2
  assert rd_lib.RunDir(root, a.hash).summary() is not None


def test_tpu_vm_describe_failing_past_the_patience_creates_nothing(fq, tmp_path):
  sw = make_sweep(tmp_path, seeds=(0,))
  root = tmp_path / 'root'
  fq.setup(faults={'gcloud': ['error'] * 500})
  res = {'tpu_type': 'v5litepod-8', 'zone': 'z1', 'tpu_name': 'vm'}
  be = quick(TpuVmBackend(root, res, max_parallel=1, log=lambda *_: None), unknown_patience_s=0.5)
  with pytest.raises(Exception, match='could not learn the state of TPU VM vm-0'):
    be.submit(sw)
  verbs = [c['argv'][3] for c in fq.calls('gcloud')]
  assert set(verbs) <= {'describe', 'delete'} and 'create' not in verbs and 'ssh' not in verbs
