"""Multi-process training with real `jax.distributed` (gloo on CPU): 2 processes x 4 fake devices.

References are independent of the code under test:
* the loss trajectory of a 1-process 8-device run of the same config (run in this
  pytest process) for the 2-process run, per logged step, within 1e-5 relative;
* the windows each process really read (every process appends its batches to a file
  through a `sitecustomize` hook in the children) against the token stream cut by hand
  and against the 1-process run's windows: per step disjoint, together the same batch;
* an uninterrupted 1-process run for checkpoints written by 2 processes and restored
  by 1, and the reverse (elastic restarts). A run "stopped at step N" is made by
  removing the later checkpoint (and the metrics rows after N) from a finished run:
  the files a run killed right after step N's checkpoint would have left.

The 2-process run ends with the end-of-run samples on, process 0's made slower than jax's
shutdown timeout, under a busy loop (issue 15): it must still exit 0 (one run serves both).

The corpus, the prepared data and the 1-process reference run are made once per test run and
shared by this module and test_faults.py, across pytest-xdist workers too (a file lock).

The launcher itself is tested with cheap stand-in children (no JAX): the first
failure kills the rest at once, a preempted group (status 75) is given time.

The mesh is data 1 x fsdp 4 x tensor 2: parameters and Adam moments are sharded
across the two processes, so checkpoints hold shards written by both.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import locked, run_root, xla_flags

from scaling.config import load as config_lib
from scaling.data import loader as loader_lib
from scaling.data.prepare import prepare
from scaling.data.shards import open_split
from scaling.train import distributed
from scaling.train import loop as train_lib

pytestmark = pytest.mark.slow   # real jax.distributed processes (not in -m 'not slow')

REPO = pathlib.Path(__file__).resolve().parent.parent
SEQ = 64
STEPS = 12
HALF = STEPS // 2
RTOL = 1e-5
WORDS = ('the king and queen of a small town went to sea with their old dog , '
         'but no one knew why it rained on every road near the hill .').split()
DUMP_ENV = 'SCALING_TEST_DUMP_WINDOWS'
SLOW_ENV = 'TEST_SAMPLE_DELAY_S'   # seconds process 0 sleeps before each end-of-run sample

# Imported by every child through PYTHONPATH: appends each train batch (rows of inputs + last
# target = the T+1 tokens of a window) to DUMP/p<process_index>.jsonl; with $TEST_SAMPLE_DELAY_S,
# process 0 sleeps that long before each end-of-run sample. Test instrumentation only.
SITECUSTOMIZE = f'''
import json, os
_dump = os.environ.get({DUMP_ENV!r})
if _dump:
  from scaling.data import loader as _loader
  _orig = _loader.TrainLoader.__next__

  def _next(self):
    batch = _orig(self)
    rows = [[int(x) for x in r] + [int(t[-1])] for r, t in zip(batch['inputs'], batch['targets'])]
    with open(os.path.join(_dump, 'p%d.jsonl' % self.process_index), 'a') as f:
      f.write(json.dumps(rows) + '\\n')
    return batch
  _loader.TrainLoader.__next__ = _next
if os.environ.get({SLOW_ENV!r}) and os.environ.get('SCALING_PROCESS_ID') == '0':
  import time
  import scaling.inference.generate as _g
  _orig_generate = _g.generate

  def _slow(*a, **k):
    time.sleep(float(os.environ[{SLOW_ENV!r}]))   # main-only work longer than the shutdown timeout
    return _orig_generate(*a, **k)
  _g.generate = _slow
'''


# ----------------------------------------------------------------------------- helpers (also used by test_faults)
def write_corpus(root: pathlib.Path, num_docs: int = 6, sentences: int = 90) -> str:
  """Deterministic English-like text files (~24 KB: ~360 windows of 64 bytes, more than one run reads)."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(7)
  for i in range(num_docs):
    lines = []
    for _ in range(sentences):
      words = [WORDS[j] for j in rng.integers(0, len(WORDS), int(rng.integers(4, 12)))]
      lines.append(' '.join(words).capitalize() + '.')
    (root / f'doc{i}.txt').write_text('\n'.join(lines) + '\n')
  return str(root / '*.txt')


def overrides(corpus: str, data_dir: str, **kw) -> dict:
  """Config overrides (strings, as on the command line) of a tiny model on the synthetic corpus.

  A constant schedule (after warmup) keeps train.steps out of the compiled step, so runs of
  different lengths (here and in test_faults.py) share compiled programs through the cache.
  """
  ov = {
      'model.vocab_size': 259, 'model.seq_len': SEQ, 'model.num_layers': 2, 'model.d_model': 32,
      'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64, 'model.dtype': 'float32',
      'data.corpus': corpus, 'data.tokenizer': 'byte', 'data.data_dir': data_dir,
      'train.batch_size': 8, 'train.steps': STEPS, 'train.warmup_steps': 2, 'train.schedule': 'constant',
      'train.lr': 3e-3, 'train.log_every': 1,
      'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': HALF, 'train.keep_checkpoints': 2,
      'train.peak_flops': 1e12, 'mesh.data': 1, 'mesh.fsdp': 4, 'mesh.tensor': 2,
  }
  ov.update({k.replace('__', '.'): v for k, v in kw.items()})
  return {k: str(v) for k, v in ov.items()}


def train_inprocess(ov: dict, workdir) -> dict:
  """One process, the 8 fake devices of conftest.py."""
  return train_lib.train(config_lib.load_config('default.py', ov), str(workdir), quiet=True)


def child_env(tmp: pathlib.Path, **extra) -> dict:
  env = dict(os.environ)
  env['XLA_FLAGS'] = xla_flags(8)   # the launcher gives each child its share
  env['PYTHONPATH'] = os.pathsep.join([str(tmp / 'site'), str(REPO)])
  env['JAX_PLATFORMS'] = 'cpu'
  env.pop(DUMP_ENV, None)
  env.pop(SLOW_ENV, None)
  env.update({k: str(v) for k, v in extra.items()})
  return env


def install_site(tmp: pathlib.Path) -> None:
  (tmp / 'site').mkdir(parents=True, exist_ok=True)
  (tmp / 'site' / 'sitecustomize.py').write_text(SITECUSTOMIZE)


def train_argv(ov: dict, workdir, sample: bool = False) -> list[str]:
  return ['train', '--config', 'scaling/config/default.py', '--workdir', str(workdir),
          *([] if sample else ['--no_sample']), *[f'--config.{k}={v}' for k, v in ov.items()]]


def start(argv: list[str], env: dict, log: pathlib.Path) -> subprocess.Popen:
  with open(log, 'ab') as f:
    return subprocess.Popen([sys.executable, '-m', 'scaling', *argv], cwd=REPO, env=env, stdout=f,
                            stderr=subprocess.STDOUT)


def run_launcher(ov: dict, workdir, tmp: pathlib.Path, n: int = 2, timeout: float = 400, sample: bool = False,
                 **env) -> tuple[int, str]:
  """`scaling train --local_processes n` to completion (tmp: where the children's sitecustomize is; the log goes
  beside the workdir); returns (status, output)."""
  log = pathlib.Path(workdir).parent / f'{pathlib.Path(workdir).name}.log'
  p = start([*train_argv(ov, workdir, sample), '--local_processes', str(n)], child_env(tmp, **env), log)
  try:
    rc = p.wait(timeout=timeout)
  finally:
    kill_tree(p)
  return rc, log.read_text(errors='replace')


def children(pid: int) -> list[int]:
  try:
    with open(f'/proc/{pid}/task/{pid}/children') as f:
      return [int(x) for x in f.read().split()]
  except FileNotFoundError:
    return []


def process_ids(launcher_pid: int) -> dict[int, int]:
  """{SCALING_PROCESS_ID: pid} of a launcher's children."""
  out = {}
  for pid in children(launcher_pid):
    try:
      env = open(f'/proc/{pid}/environ', 'rb').read().split(b'\0')
    except FileNotFoundError:
      continue
    for kv in env:
      if kv.startswith(b'SCALING_PROCESS_ID='):
        out[int(kv.split(b'=', 1)[1])] = pid
  return out


def kill_tree(p: subprocess.Popen) -> None:
  """Kills a process this test started and its children (the launcher's processes), if still alive."""
  for pid in children(p.pid):
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  if p.poll() is None:
    p.kill()
    p.wait()


def loss_rows(workdir) -> list[tuple[int, float]]:
  """(step, train/loss) of every row of metrics.jsonl, in order (a resumed run appends)."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      r = json.loads(line)
    except json.JSONDecodeError:   # a line cut by a kill -9
      continue
    if 'train/loss' in r:
      rows.append((r['step'], r['train/loss']))
  return rows


def last_losses(workdir) -> dict[int, float]:
  return dict(loss_rows(workdir))


def assert_same_losses(got: dict, ref: dict, steps) -> None:
  for s in steps:
    assert s in got, f'step {s} missing from metrics ({sorted(got)})'
    assert abs(got[s] - ref[s]) <= RTOL * abs(ref[s]), f'step {s}: loss {got[s]!r} vs reference {ref[s]!r}'


def stop_at(workdir, step: int) -> None:
  """Leaves a finished workdir as a run stopped right after step's checkpoint would have."""
  ckpts = pathlib.Path(workdir) / 'checkpoints'
  for d in ckpts.iterdir():
    if d.name.split('.')[0].isdigit() and int(d.name.split('.')[0]) > step:
      shutil.rmtree(d)
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  keep = [line for line in path.read_text().splitlines() if json.loads(line)['step'] <= step]
  path.write_text(''.join(line + '\n' for line in keep))
  (pathlib.Path(workdir) / 'summary.json').unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the runs
REF_STEPS = 30   # the reference is long enough for test_faults.py too (one run per test run)


def shared_setup(tmp_path_factory) -> dict:
  """Corpus, prepared data dir and the children's sitecustomize, made once per test run and shared by this
  module and test_faults.py (in whichever workers they run); `out`: this worker's folder for the runs."""
  tmp = run_root(tmp_path_factory) / 'multihost_shared'
  sh = dict(tmp=tmp, corpus=str(tmp / 'corpus' / '*.txt'), data_dir=str(tmp / 'data'))
  with locked(run_root(tmp_path_factory) / 'multihost_shared.lock'):
    if not (tmp / 'ready').exists():
      write_corpus(tmp / 'corpus')
      install_site(tmp)
      # prepared here, once: the runs (several processes at once, in several workers) then only read it
      prepare(config_lib.load_config('default.py', config_overrides(sh)).data, verbose=False)
      (tmp / 'ready').touch()
  out = tmp_path_factory.getbasetemp() / 'multihost_runs'
  out.mkdir(exist_ok=True)
  return dict(sh, out=out)


def config_overrides(sh: dict, **kw) -> dict:
  return overrides(sh['corpus'], sh['data_dir'], **kw)


def reference_run(tmp_path_factory) -> dict:
  """The uninterrupted 1-process 8-device run (REF_STEPS steps, checkpoints every HALF, all kept),
  in the pytest process that asks first, once per test run (the other workers wait for it and read its
  files); also the windows it read at each step."""
  sh = shared_setup(tmp_path_factory)
  workdir = sh['tmp'] / 'reference'
  record = sh['tmp'] / 'reference_windows.json'   # written last: the run is complete
  with locked(sh['tmp'] / 'reference.lock'):
    if not record.exists():
      shutil.rmtree(workdir, ignore_errors=True)   # what a failed attempt left: start over
      _reference(sh, workdir, record)
  windows = [[tuple(r) for r in step] for step in json.loads(record.read_text())]
  return dict(workdir=workdir, losses=last_losses(workdir), windows=windows)


def _reference(sh: dict, workdir: pathlib.Path, record: pathlib.Path) -> None:
  read = []
  orig = loader_lib.TrainLoader.__next__

  def spy(self):
    batch = orig(self)
    read.append([[int(x) for x in r] + [int(t[-1])] for r, t in zip(batch['inputs'], batch['targets'])])
    return batch
  ov = config_overrides(sh, train__steps=REF_STEPS, train__keep_checkpoints=REF_STEPS)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(loader_lib.TrainLoader, '__next__', spy)
    summary = train_inprocess(ov, workdir)
  assert summary['state'] == 'done'
  record.write_text(json.dumps(read))


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  sh = shared_setup(tmp_path_factory)
  return dict(sh, ov=config_overrides(sh))


@pytest.fixture(scope='module')
def one_proc(tmp_path_factory, compile_cache):
  return reference_run(tmp_path_factory)


def _read_dump(path: pathlib.Path) -> list[list[tuple]]:
  return [[tuple(r) for r in json.loads(line)] for line in path.read_text().splitlines()]


@pytest.fixture(scope='module')
def two_procs(setup, one_proc):
  """The same config as 2 processes x 4 devices through `--local_processes 2`, dumping the windows read.

  It ends as test_two_processes_with_samples_end_cleanly_under_load needs (one run serves both: a second
  2-process run costs ~50 CPU-s): the end-of-run samples on, process 0's taking longer (6 s before each, so either
  sample alone outlasts it) than jax's shutdown timeout (5 s here), while a busy loop loads the CPU.
  """
  workdir = setup['out'] / 'two'
  dump = setup['out'] / 'dump_two'
  dump.mkdir()
  # the load: a busy loop at nice 19, so it takes a core only while one is idle and yields to every other
  # process (in CI the other test worker loads the machine anyway), from the last step's row on: through the
  # final eval, checkpoint, samples and shutdown, the part of the run the scenario is about (a busy loop over the
  # whole run costs ~a core's worth of idle time for minutes, shared with the other test worker's core on a
  # hyperthreaded CI machine). The sample delay is what outlasts the shutdown timeout.
  stop, busy = threading.Event(), []

  def load_the_end():
    while not stop.wait(0.05):
      if len(loss_rows(workdir)) >= STEPS:
        busy.append(subprocess.Popen(['nice', '-n', '19', sys.executable, '-c', 'while True: pass']))
        return
  loader = threading.Thread(target=load_the_end, daemon=True)
  loader.start()
  try:
    rc, out = run_launcher(setup['ov'], workdir, setup['tmp'], timeout=600, sample=True,
                           **{DUMP_ENV: dump, SLOW_ENV: 6, distributed.SHUTDOWN_ENV: 5})
  finally:
    stop.set()
    loader.join()
    loaded_to_the_end = bool(busy) and busy[0].poll() is None
    for b in busy:
      b.kill()
      b.wait()
  assert rc == 0, out[-3000:]
  assert loaded_to_the_end, 'the busy loop did not run through the end of the run'
  return dict(workdir=workdir, losses=last_losses(workdir), out=out, rc=rc,
              windows=[_read_dump(dump / f'p{p}.jsonl') for p in range(2)])


# ----------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_two_processes_follow_the_one_process_trajectory(two_procs, one_proc):
  assert 'mesh {\'data\': 1, \'fsdp\': 4, \'tensor\': 2}' in two_procs['out']
  assert sorted(one_proc['losses']) == list(range(1, REF_STEPS + 1))
  assert [s for s, _ in loss_rows(two_procs['workdir'])] == list(range(1, STEPS + 1))   # process 0 alone writes
  assert_same_losses(two_procs['losses'], one_proc['losses'], range(1, STEPS + 1))
  # not trivially equal: training moved the loss
  assert one_proc['losses'][STEPS] < one_proc['losses'][1] - 0.1


@pytest.mark.slow
def test_each_process_reads_its_own_slice_of_the_data(two_procs, one_proc, setup):
  # window index of every T+1-token window of the train stream, cut independently of the loader
  tokens = np.asarray(open_split(setup['data_dir'], 'train').tokens)
  n = (len(tokens) - 1) // SEQ
  table = {tuple(int(x) for x in tokens[w * SEQ:w * SEQ + SEQ + 1]): w for w in range(n)}
  assert len(table) == n   # windows are distinguishable
  p0, p1 = two_procs['windows']
  assert len(p0) == len(p1) == STEPS and len(one_proc['windows']) == REF_STEPS
  seen = [set(), set()]
  for s in range(STEPS):
    w0 = [table[r] for r in p0[s]]
    w1 = [table[r] for r in p1[s]]
    ref = [table[r] for r in one_proc['windows'][s]]
    assert len(w0) == len(w1) == 4 and len(ref) == 8
    assert not set(w0) & set(w1), f'step {s + 1}: both processes read windows {set(w0) & set(w1)}'
    assert sorted(w0 + w1) == sorted(ref), f'step {s + 1}: the two halves are not the 1-process batch'
    seen[0] |= set(w0)
    seen[1] |= set(w1)
  assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 4 * STEPS   # within one epoch: no repeats


@pytest.mark.slow
def test_checkpoint_of_two_processes_restores_in_one(two_procs, one_proc, setup, tmp_path):
  workdir = tmp_path / 'two_then_one'
  shutil.copytree(two_procs['workdir'], workdir)
  stop_at(workdir, HALF)
  summary = train_inprocess(setup['ov'], workdir)
  assert summary['state'] == 'done' and summary['step'] == STEPS
  steps = [s for s, _ in loss_rows(workdir)]
  assert steps == list(range(1, STEPS + 1))   # resumed at HALF + 1: no step ran twice
  assert_same_losses(last_losses(workdir), one_proc['losses'], range(HALF + 1, STEPS + 1))


@pytest.mark.slow
def test_checkpoint_of_one_process_restores_in_two(one_proc, setup):
  workdir = setup['out'] / 'one_then_two'
  shutil.copytree(one_proc['workdir'], workdir)
  stop_at(workdir, HALF)   # as if the 1-process run had stopped after its checkpoint at HALF
  # ... and as if it had been a STEPS-step run (the constant schedule gives every step the same lr): a resume
  # may not change the run's length without --extend (scaling/train/run_history.py)
  saved = json.loads((workdir / 'config.json').read_text())
  saved['train']['steps'] = STEPS
  (workdir / 'config.json').write_text(json.dumps(saved))
  rc, out = run_launcher(setup['ov'], workdir, setup['tmp'])
  assert rc == 0, out[-3000:]
  assert f'(step {HALF})' in out   # "resumed from .../checkpoints/6 (step 6)"
  assert [s for s, _ in loss_rows(workdir)] == list(range(1, STEPS + 1))
  assert_same_losses(last_losses(workdir), one_proc['losses'], range(HALF + 1, STEPS + 1))


@pytest.mark.slow
def test_two_processes_with_samples_end_cleanly_under_load(two_procs):
  """`scaling train --local_processes 2` (two_procs) with the end-of-run samples on, while a busy loop loads the
  CPU and process 0's samples take longer than jax's shutdown timeout (5 s here): status 0, samples printed, no
  SIGABRT (before: process 1 waited at the shutdown barrier and both were aborted)."""
  out = two_procs['out']
  assert two_procs['rc'] == 0, out[-3000:]
  assert '=== samples (greedy) ===' in out and 'SIGABRT' not in out, out[-3000:]
  assert json.loads((two_procs['workdir'] / 'summary.json').read_text())['state'] == 'done'


# ----------------------------------------------------------------------------- the launcher, with stand-ins
CHILD = textwrap.dedent('''
  import os, signal, sys, time
  i = int(os.environ['SCALING_PROCESS_ID'])
  mode = sys.argv[2]
  if mode == 'preempt':
    signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5 * i), sys.exit(75)))
  if mode == 'orphan':   # what a real child does in distributed.initialize()
    sys.path.insert(0, sys.argv[3])
    from scaling.train import distributed
    distributed._die_with_launcher()
    open(os.path.join(sys.argv[1], 'pid%d' % i), 'w').write(str(os.getpid()))
  open(os.path.join(sys.argv[1], 'started%d' % i), 'w').write(os.environ['XLA_FLAGS'])
  if mode == 'crash' and i == 1:
    time.sleep(0.3)
    sys.exit(3)
  if mode == 'ok':
    sys.exit(0)
  time.sleep(60)   # "waits in a collective"
  open(os.path.join(sys.argv[1], 'finished%d' % i), 'w').close()   # only a process nobody stopped gets here
''')


def _launch_standins(tmp_path, mode, n=2, **kw):
  script = tmp_path / 'child.py'
  script.write_text(CHILD)
  env_old = os.environ.get('XLA_FLAGS')
  os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
  try:
    return distributed.launch_local(n, [str(tmp_path), mode, '--local_processes', str(n)],
                                    command=[sys.executable, str(script)], **kw)
  finally:
    os.environ['XLA_FLAGS'] = env_old


def test_launcher_gives_each_process_its_share_of_devices(tmp_path):
  assert _launch_standins(tmp_path, 'ok', n=4) == 0
  for i in range(4):
    assert (tmp_path / f'started{i}').read_text().strip() == '--xla_force_host_platform_device_count=2'


def test_launcher_kills_the_others_when_one_fails(tmp_path, capfd):
  t0 = time.monotonic()
  rc = _launch_standins(tmp_path, 'crash')
  took = time.monotonic() - t0
  assert rc == 3
  assert not (tmp_path / 'finished0').exists(), (
      f'the survivor slept its 60 s out (the launcher took {took:.0f}s): it was not killed when process 1 failed')
  err = capfd.readouterr().err
  assert 'local process 1 of 2 exited with status 3' in err and 'killed the other 1' in err


def test_launcher_waits_for_a_preempted_group(tmp_path):
  import threading

  def preempt():   # once both stand-ins handle SIGTERM, signal the launcher: it forwards to both
    deadline = time.monotonic() + 120   # a wait for the stand-ins to start, not a limit
    while time.monotonic() < deadline and not all((tmp_path / f'started{i}').exists() for i in range(2)):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
  threading.Thread(target=preempt, daemon=True).start()
  rc = _launch_standins(tmp_path, 'preempt')
  assert rc == 75   # process 1 took 0.5 s longer to "save": not killed in between
  # both ended through their SIGTERM handler (forwarded by the launcher), neither by sleeping its 60 s out
  assert not [p.name for p in tmp_path.iterdir() if p.name.startswith('finished')]


def test_launcher_and_initialize_reject_bad_settings(tmp_path, monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=6')
  with pytest.raises(ValueError, match='do not split over 4'):
    distributed.launch_local(4, ['train'])
  assert not list(tmp_path.iterdir())
  with pytest.raises(ValueError, match='HOST:PORT'):
    distributed.initialize('localhost', 2, 0)
  with pytest.raises(ValueError, match='needs --num_processes'):
    distributed.initialize('localhost:1234', None, 0)
  with pytest.raises(ValueError, match=r'outside \[0, 2\)'):
    distributed.initialize('localhost:1234', 2, 2)
  with pytest.raises(ValueError, match='need --coordinator'):
    distributed.initialize(None, 2, 0)
  monkeypatch.setenv(distributed.HEARTBEAT_ENV, 'soon')
  with pytest.raises(ValueError, match='whole number of seconds'):
    distributed.timeouts()
  monkeypatch.setenv(distributed.HEARTBEAT_ENV, '7')
  assert distributed.timeouts()['heartbeat_timeout_seconds'] == 7


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/status') as f:
      return 'State:\tZ' not in f.read()   # a zombie waiting for its reaper is dead
  except FileNotFoundError:
    return False


def test_children_die_with_the_launcher(tmp_path):
  """kill -9 of the launcher itself: its children get SIGKILL (PR_SET_PDEATHSIG), none is left running."""
  script = tmp_path / 'child.py'
  script.write_text(CHILD)
  code = ('import sys; sys.path.insert(0, sys.argv[1]); from scaling.train import distributed; '
          'sys.exit(distributed.launch_local(2, [sys.argv[2], "orphan", sys.argv[1]], '
          'command=[sys.executable, sys.argv[3]]))')
  env = dict(os.environ, XLA_FLAGS=xla_flags(2))
  launcher = subprocess.Popen([sys.executable, '-c', code, str(REPO), str(tmp_path), str(script)], env=env)
  try:
    deadline = time.monotonic() + 120
    while not all((tmp_path / f'pid{i}').exists() for i in range(2)):
      assert time.monotonic() < deadline and launcher.poll() is None, 'the stand-ins did not start'
      time.sleep(0.05)
    time.sleep(0.1)
    pids = [int((tmp_path / f'pid{i}').read_text()) for i in range(2)]
    assert all(_alive(pid) for pid in pids)
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 60   # SIGKILL from the kernel: milliseconds; 60 s only catches "never"
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), 'a child outlived its launcher'
  finally:
    kill_tree(launcher)
