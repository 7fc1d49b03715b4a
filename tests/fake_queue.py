"""Stand-ins for squeue/sacct/sbatch/scancel (SLURM), xpk (GKE) and gcloud (TPU VMs), for launcher tests.

`install(bin_dir, state_path)` writes one executable per tool into bin_dir; each calls
`main(tool, argv)` here, which reads and updates a JSON state file ($FAKE_QUEUE_STATE,
under an flock) and appends every call to calls.jsonl next to it. The state says:

  faults: {tool: [mode, ...]}   modes for the tool's next calls, consumed one per call:
                                'ok', 'error' (a failure the tool reports), 'hang' (sleeps
                                HANG_S, then fails: the launcher must time out first)
  plans:  {run_hash: [plan, plan, ...]}   the timeline of the n-th job submitted for a run
                                (default DEFAULT_PLANS[tool]); each step is a dict
                                {'state': S, 'rc': exit code file to write, 'summary': True}
  vms:    {name: {'plan': [state, ...], 'pos': i}}   existing TPU VMs (gcloud)
  ssh:    [mode, ...]           what the next `gcloud ... ssh` does: 'run' (run the command),
                                'preempt' (run it, kill it after 2 steps, the VM becomes PREEMPTED)

A job (or VM) shows its current step to a query and then moves one step on, so every
query sees time pass. Ended SLURM jobs are gone from squeue and stay in sacct; a
workload or VM that does not exist is reported the way the real tool reports it.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

HANG_S = 20.0
TOOLS = ('squeue', 'sacct', 'sbatch', 'scancel', 'xpk', 'gcloud')
SLURM_LIVE = {'PENDING', 'RUNNING', 'REQUEUED', 'COMPLETING'}
DONE = {'state': 'COMPLETED', 'rc': 0, 'summary': True}
DEFAULT_PLANS = {
    'sbatch': [{'state': 'PENDING'}, {'state': 'RUNNING'}, DONE],
    'xpk': [{'state': 'RUNNING'}, {'state': 'SUCCEEDED', 'summary': True}],
}


def install(bin_dir: pathlib.Path, state_path: pathlib.Path, state: dict) -> None:
  bin_dir.mkdir(parents=True, exist_ok=True)
  here = pathlib.Path(__file__).resolve().parent
  for tool in TOOLS:
    p = bin_dir / tool
    p.write_text(f'#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(here)!r})\nimport fake_queue\n'
                 f'sys.exit(fake_queue.main({tool!r}, sys.argv[1:]))\n')
    p.chmod(0o755)
  state.setdefault('faults', {})
  state.setdefault('plans', {})
  state.setdefault('vms', {})
  state.setdefault('jobs', {})
  state.setdefault('next_id', 1000)
  state_path.write_text(json.dumps(state))


def calls(state_path: pathlib.Path) -> list[dict]:
  p = state_path.with_name('calls.jsonl')
  return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


@contextlib.contextmanager
def _state():
  path = pathlib.Path(os.environ['FAKE_QUEUE_STATE'])
  with open(path.with_suffix('.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = json.loads(path.read_text())
    yield state
    path.write_text(json.dumps(state))


def _log(tool: str, argv: list[str], mode: str) -> None:
  path = pathlib.Path(os.environ['FAKE_QUEUE_STATE']).with_name('calls.jsonl')
  with open(path, 'a') as f:
    f.write(json.dumps({'tool': tool, 'argv': argv, 'mode': mode, 't': time.time()}) + '\n')


def main(tool: str, argv: list[str]) -> int:
  with _state() as st:
    queue = st['faults'].get(tool) or []
    mode = queue.pop(0) if queue else 'ok'
  _log(tool, argv, mode)
  if mode == 'hang':
    time.sleep(HANG_S)
    mode = 'error'
  if mode == 'error':
    print(ERRORS[tool], file=sys.stderr if tool != 'xpk' else sys.stdout)
    return 1
  return HANDLERS[tool](argv)


ERRORS = {
    'squeue': 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)',
    'sacct': 'sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection',
    'sbatch': 'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)',
    'scancel': 'scancel: error: Unable to contact slurm controller',
    'xpk': '[XPK] List Job request returned ERROR 1',
    'gcloud': 'ERROR: (gcloud.compute.tpus.tpu-vm) There was a problem refreshing your current auth tokens',
}


# ---- jobs (SLURM jobs and xpk workloads) ---------------------------------------------------------------

def _enter(job: dict) -> None:
  """Effects of the job's current step: the exit code file, the summary."""
  step = job['plan'][job['pos']]
  rd = pathlib.Path(job['run_dir'])
  if 'rc' in step and job['kind'] == 'slurm':
    (rd / f'slurm-{job["id"]}.rc').write_text(f'{step["rc"]}\n')
  if step.get('summary'):
    (rd / 'summary.json').write_text(json.dumps({'state': 'done', 'step': 1}))


def _submit(st: dict, kind: str, job_id: str, run_dir: str) -> None:
  run_hash = pathlib.Path(run_dir).name
  plans = st['plans'].get(run_hash) or []
  n = sum(j['run_dir'] == run_dir for j in st['jobs'].values())
  plan = plans[n] if n < len(plans) else DEFAULT_PLANS['sbatch' if kind == 'slurm' else 'xpk']
  job = {'id': job_id, 'kind': kind, 'run_dir': run_dir, 'plan': plan, 'pos': 0}
  st['jobs'][job_id] = job
  _enter(job)


def _look(st: dict, job_id: str) -> dict | None:
  """The job's current step (then the job moves on one step); None if there is no such job."""
  job = st['jobs'].get(job_id)
  if job is None:
    return None
  step = job['plan'][job['pos']]
  if job['pos'] + 1 < len(job['plan']):
    job['pos'] += 1
    _enter(job)
  return step


def _sbatch(argv: list[str]) -> int:
  script = pathlib.Path(argv[-1])
  with _state() as st:
    job_id = str(st['next_id'])
    st['next_id'] += 1
    _submit(st, 'slurm', job_id, str(script.parent))
  print(job_id)
  return 0


def _squeue(argv: list[str]) -> int:
  job_id = argv[argv.index('-j') + 1]
  with _state() as st:
    step = _look(st, job_id)
  if step is None:
    print('slurm_load_jobs error: Invalid job id specified', file=sys.stderr)
    return 1
  if step['state'] in SLURM_LIVE:
    print(step['state'])
  return 0


def _sacct(argv: list[str]) -> int:
  ids = argv[argv.index('-j') + 1].split(',')
  with _state() as st:
    for i in ids:
      job = st['jobs'].get(i)
      if job is not None:
        step = job['plan'][job['pos']]
        print(f'{i}|{step["state"]}|{step.get("rc", 0)}:0')
  return 0


def _scancel(argv: list[str]) -> int:
  del argv
  return 0


def _xpk(argv: list[str]) -> int:
  opts = dict(a[2:].split('=', 1) for a in argv if a.startswith('--') and '=' in a)
  if argv[:2] == ['workload', 'create']:
    cmd = shlex.split(opts['command'].split(' && ')[-1])
    with _state() as st:
      _submit(st, 'xpk', opts['workload'], cmd[cmd.index('--workdir') + 1])
    print(f'[XPK] Workload {opts["workload"]} created')
    return 0
  if argv[:2] == ['workload', 'list']:
    name = opts['wait-for-job-completion']
    with _state() as st:
      step = _look(st, name)
    if step is None or step['state'] == 'NOT_LISTED':
      print(f'[XPK] Workload named {name} does not exist.')
      return 1
    return {'RUNNING': 124, 'RESTARTING': 124, 'SUCCEEDED': 0, 'FAILED': 125}[step['state']]
  print(f'fake xpk: unsupported {argv}', file=sys.stderr)
  return 2


# ---- TPU VMs ---------------------------------------------------------------------------------------------

def _gcloud(argv: list[str]) -> int:
  if argv[:3] != ['compute', 'tpus', 'tpu-vm']:
    print(f'fake gcloud: unsupported {argv}', file=sys.stderr)
    return 2
  verb, name = argv[3], argv[4]
  with _state() as st:
    vm = st['vms'].get(name)
    if verb == 'ssh':
      modes = st.setdefault('ssh', [])
      mode = modes.pop(0) if modes else 'run'
      ready = vm is not None and vm['plan'][vm['pos']] == 'READY'
    elif verb == 'describe' and vm is not None:
      state = vm['plan'][vm['pos']]
      vm['pos'] = min(vm['pos'] + 1, len(vm['plan']) - 1)
    elif verb == 'create' and vm is None:
      st['vms'][name] = {'plan': ['CREATING', 'READY'], 'pos': 0}
    elif verb == 'delete' and vm is not None:
      del st['vms'][name]
  if verb in ('describe', 'delete') and vm is None:
    print(f"ERROR: (gcloud.compute.tpus.tpu-vm.{verb}) NOT_FOUND: Resource 'projects/p/locations/z/nodes/{name}' "
          f"was not found", file=sys.stderr)
    return 1
  if verb == 'create' and vm is not None:
    print(f'ERROR: (gcloud.compute.tpus.tpu-vm.create) ALREADY_EXISTS: node {name} already exists', file=sys.stderr)
    return 1
  if verb == 'describe':
    print(state)
  if verb == 'ssh':
    return _ssh(name, argv, mode, ready)
  return 0


def _ssh(name: str, argv: list[str], mode: str, ready: bool) -> int:
  if not ready:
    print(f'ssh: connect to host {name} port 22: Connection refused', file=sys.stderr)
    return 255
  cmd = next(a for a in argv if a.startswith('--command=')).removeprefix('--command=')
  train = shlex.split(cmd.split(' && ')[-1])
  metrics = pathlib.Path(train[train.index('--workdir') + 1]) / 'metrics.jsonl'
  before = _lines(metrics)
  proc = subprocess.Popen(['bash', '-c', cmd])
  if mode != 'preempt':
    return proc.wait()
  t0 = time.monotonic()
  while proc.poll() is None and _lines(metrics) < before + 2 and time.monotonic() - t0 < 60:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)   # the VM is gone, and the training with it
  proc.wait()
  with _state() as st:
    st['vms'][name] = {'plan': ['PREEMPTED'], 'pos': 0}
  print(f'Connection to {name} closed by remote host.', file=sys.stderr)
  return 255


def _lines(p: pathlib.Path) -> int:
  return len(p.read_text().splitlines()) if p.exists() else 0


HANDLERS = {'squeue': _squeue, 'sacct': _sacct, 'sbatch': _sbatch, 'scancel': _scancel, 'xpk': _xpk,
            'gcloud': _gcloud}
