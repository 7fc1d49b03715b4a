"""Reliability of a training run (issue 15, train side): one trainer per workdir, honest metrics on
resume, nothing written before the restore succeeds, SIGINT -> status 130. (The clean end of a
multi-process run with end-of-run samples under load: tests/test_multihost.py, whose 2-process run it shares.)

References are independent of the code under test: step numbers counted by hand, file snapshots
(mtime + sha256) taken before, a TensorBoard reader written here (tfrecord framing + the purge rule
TensorBoard applies: a SessionLog START at step p drops the events read before it with step >= p),
and real processes (a lock holder killed with SIGKILL).
"""

import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from test_eval_path import overrides, write_corpus

from scaling.base import workdir_lock
from scaling.cli import main as cli
from scaling.config import load as config_lib
from scaling.train import checkpoint
from scaling.train import loop as train_lib
from scaling.train.metrics import read_metrics

pytestmark = pytest.mark.slow   # whole training runs under faults and second processes (not in -m 'not slow')

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('reliability')
  return dict(corpus=write_corpus(root / 'corpus'), data_dir=str(root / 'prepared'))


def cfg_of(data, **kw):
  return config_lib.load_config('default.py', overrides(data, **kw))


@pytest.fixture(scope='module')
def three_steps(data, tmp_path_factory):
  """A finished 3-step run (its checkpoint at step 3), trained once: the tests that start from it copy it."""
  wd = tmp_path_factory.mktemp('three_steps') / 'run'
  assert train_lib.train(cfg_of(data, train__steps=3, train__ckpt_every=3), wd, quiet=True)['state'] == 'done'
  return wd


def copy_of(run: pathlib.Path, tmp_path) -> pathlib.Path:
  """A copy of a finished run (files, mtimes kept) for a test to change."""
  wd = tmp_path / 'run'
  shutil.copytree(run, wd)
  return wd


def flags(data, **kw) -> list[str]:
  return [f'--config.{k}={v}' for k, v in overrides(data, **kw).items()]


def snapshot(workdir: pathlib.Path) -> dict:
  return {str(p.relative_to(workdir)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
          for p in sorted(workdir.rglob('*')) if p.is_file()}


def logged_steps(workdir) -> list[int]:
  return [r['step'] for r in read_metrics(workdir) if 'train/loss' in r]


# ----------------------------------------------------------------------------- one trainer per workdir
HOLDER = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from scaling.base.workdir_lock import WorkdirLock
    WorkdirLock(sys.argv[1], log=lambda *a: None).acquire()
    print('locked', flush=True)
    time.sleep(600)
''')


def hold_lock(workdir) -> subprocess.Popen:
  """Another process holding the workdir's lock (what a running trainer does), once it says so."""
  p = subprocess.Popen([sys.executable, '-c', HOLDER, str(workdir), str(REPO)], stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == 'locked'
  return p


def test_second_trainer_exits_at_once_naming_the_holder(data, tmp_path, monkeypatch, capsys):
  """While another process holds the workdir, `scaling train` on it exits 2 before any data work,
  naming the holder's host and pid, and leaves the workdir as it was."""
  import scaling.data.prepare
  wd = tmp_path / 'busy'
  holder = hold_lock(wd)
  try:
    before = snapshot(wd)
    monkeypatch.setattr(scaling.data.prepare, 'prepare', lambda *a, **k: pytest.fail('the second trainer prepared data'))
    code = cli.main(['train', '--workdir', str(wd), '--no_sample', *flags(data)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
    assert f'host {socket.gethostname()}, pid {holder.pid}' in err and 'another --workdir' in err
    assert snapshot(wd) == before
  finally:
    holder.kill()
    holder.wait()


def test_lock_of_a_killed_trainer_is_taken_over(tmp_path):
  """A holder killed with SIGKILL leaves its record; the kernel released its flock: the next run
  takes over, says whose lock it was, and removes the file (and the workdir it created) when done."""
  wd = tmp_path / 'stale'
  holder = hold_lock(wd)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert (wd / workdir_lock.LOCK_FILE).exists()
  said = []
  with workdir_lock.WorkdirLock(wd, log=said.append):
    rec = json.loads((wd / workdir_lock.LOCK_FILE).read_text())
    assert rec['pid'] == os.getpid() and rec['host'] == socket.gethostname()
  assert len(said) == 1 and 'took over' in said[0] and f'pid {holder.pid}' in said[0], said
  assert not (wd / workdir_lock.LOCK_FILE).exists()


def _write_record(path: pathlib.Path, host: str, pid: int) -> int:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(dict(host=host, pid=pid, started=time.time())))
  return os.open(path, os.O_RDWR)


def test_lock_of_another_host(tmp_path):
  """Another host's record: its pid cannot be checked here, so the flock decides: held -> busy
  (naming that host and pid), released -> taken over with a message."""
  import fcntl
  wd = tmp_path / 'shared'
  path = wd / workdir_lock.LOCK_FILE
  fd = _write_record(path, 'node-elsewhere', 4242)
  fcntl.flock(fd, fcntl.LOCK_EX)   # held (a separate open file: conflicts like another process)
  with pytest.raises(workdir_lock.WorkdirBusy, match=r'host node-elsewhere, pid 4242'):
    workdir_lock.WorkdirLock(wd, log=print).acquire()
  os.close(fd)   # its holder is gone: the lock is free, the record stays
  said = []
  with workdir_lock.WorkdirLock(wd, log=said.append):
    pass
  assert len(said) == 1 and 'node-elsewhere' in said[0] and 'took over' in said[0]


def test_held_lock_of_a_dead_process_on_this_host_is_stale(tmp_path):
  """The flock is held but the record names a process of this host that no longer exists (e.g. a
  descriptor inherited by an orphan): stale, taken over on a fresh lock file."""
  import fcntl
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  wd = tmp_path / 'orphan'
  fd = _write_record(wd / workdir_lock.LOCK_FILE, socket.gethostname(), dead.pid)
  fcntl.flock(fd, fcntl.LOCK_EX)
  said = []
  try:
    with workdir_lock.WorkdirLock(wd, log=said.append):
      assert json.loads((wd / workdir_lock.LOCK_FILE).read_text())['pid'] == os.getpid()
  finally:
    os.close(fd)
  assert said and 'stale' in said[0] and f'pid {dead.pid}' in said[0], said


# ----------------------------------------------------------------------------- resume
def read_tb_scalars(tb_dir: pathlib.Path, tag: str) -> list[int]:
  """The steps of `tag` TensorBoard shows: event files in name order, SessionLog START purges."""
  from scaling.train.metrics import tensorboard_writer_class
  tensorboard_writer_class()   # loads tensorboardX without torch (seconds of CPU in this process otherwise)
  from tensorboardX.proto import event_pb2
  shown = []
  for f in sorted(tb_dir.glob('events.out.tfevents.*')):
    raw = f.read_bytes()
    i = 0
    while i < len(raw):
      (n,) = struct.unpack('<Q', raw[i:i + 8])
      ev = event_pb2.Event.FromString(raw[i + 12:i + 12 + n])
      i += 12 + n + 4
      if ev.HasField('session_log') and ev.session_log.status == event_pb2.SessionLog.START:
        shown = [s for s in shown if s < ev.step]
      for v in ev.summary.value:
        if v.tag == tag:
          shown.append(ev.step)
  return shown


TB_WRITER = textwrap.dedent('''
    import importlib.util, sys
    sys.path.insert(0, sys.argv[2])
    from scaling.train.metrics import MetricsWriter
    w = MetricsWriter(sys.argv[1], start_step=0)
    for step in (1, 2, 3):
      w.write(step, {'train/loss': 1.0 / step, 'train/lr': 0.5})
    w.close()
    # False also where torch is installed, and no entry left behind that would block a later `import torch`
    print('torch in sys.modules:', 'torch' in sys.modules, importlib.util.find_spec('torch') is not None)
''')


def test_tensorboard_events_are_written_without_importing_torch(tmp_path):
  """tensorboardX imports torch where it is installed (seconds of CPU in every training process, for tensors
  the scalars here never are): a fresh process writes TensorBoard scalars through MetricsWriter without torch
  in sys.modules (not even the None entry that blocks its import while tensorboardX loads), and the event file
  holds every step."""
  p = subprocess.run([sys.executable, '-c', TB_WRITER, str(tmp_path), str(REPO)], capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert 'torch in sys.modules: False' in p.stdout, p.stdout
  assert read_tb_scalars(tmp_path / 'tb', 'train/loss') == [1, 2, 3]
  assert read_tb_scalars(tmp_path / 'tb', 'train/lr') == [1, 2, 3]


def test_resume_from_an_older_checkpoint_truncates_metrics_and_tensorboard(data, tmp_path):
  """6 steps with checkpoints at 3 and 6; step 6's checkpoint goes (as after a fallback from a
  damaged one): the resumed run relogs 4..6 and both logs show steps 1..6 once each, in order."""
  wd = tmp_path / 'run'
  cfg = cfg_of(data, train__ckpt_every=3, train__keep_checkpoints=3)
  assert train_lib.train(cfg, wd, quiet=True)['state'] == 'done'
  assert logged_steps(wd) == [1, 2, 3, 4, 5, 6]
  shutil.rmtree(wd / checkpoint.CKPT_DIR / '6')
  time.sleep(1.1)   # TensorBoard event file names carry the second they were created
  result = train_lib.train(cfg, wd, quiet=True)
  assert result['state'] == 'done' and result['step'] == 6
  assert logged_steps(wd) == [1, 2, 3, 4, 5, 6]
  assert len(list((wd / 'tb').glob('events.out.tfevents.*'))) == 2
  assert read_tb_scalars(wd / 'tb', 'train/loss') == [1, 2, 3, 4, 5, 6]


def test_failed_restore_writes_nothing(data, three_steps, tmp_path, monkeypatch):
  """A restore that fails (here: an error from orbax) leaves every file of the workdir as it was,
  config.json included, although the new config differs (another lr, forced: no history line either)."""
  wd = copy_of(three_steps, tmp_path)
  before = snapshot(wd)

  def broken(*a, **k):
    raise checkpoint.CheckpointError('simulated: the params of step 3 could not be read')
  monkeypatch.setattr(checkpoint, 'restore', broken)
  with pytest.raises(checkpoint.CheckpointError, match='simulated'):
    train_lib.train(cfg_of(data, train__steps=6, train__ckpt_every=3, train__lr=2e-2), wd, quiet=True,
                    force_change=True)
  assert snapshot(wd) == before


def test_no_intact_checkpoint_is_one_line_exit_2_and_nothing_changed(data, three_steps, tmp_path, capsys):
  """Every checkpoint damaged (a params file truncated in each): `scaling train` exits 2 with one
  line naming the steps tried; the workdir is unchanged (no rename, no config.json rewrite)."""
  wd = copy_of(three_steps, tmp_path)
  step_dir = wd / checkpoint.CKPT_DIR / '3' / 'params'
  biggest = max((p for p in step_dir.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
  with open(biggest, 'r+b') as f:
    f.truncate(biggest.stat().st_size // 2)
  before = snapshot(wd)
  code = cli.main(['train', '--workdir', str(wd), '--no_sample', *flags(data, train__steps=3, train__ckpt_every=3),
                   '--extend', '6'])
  err = capsys.readouterr().err
  assert code == 2
  assert len(err.strip().splitlines()) == 1 and err.startswith('error: ') and 'step 3' in err, err
  assert snapshot(wd) == before


# ----------------------------------------------------------------------------- SIGINT
def signal_at_step(monkeypatch, at: int, times: int = 1):
  """jit_train_step whose call number `at` is followed by `times` SIGINTs to this process."""
  orig = train_lib.jit_train_step
  calls = []

  def jit(setup, keys):
    step = orig(setup, keys)

    def wrapped(state, batch):
      out = step(state, batch)
      calls.append(1)
      if len(calls) == at:
        for _ in range(times):
          os.kill(os.getpid(), signal.SIGINT)
      return out
    return wrapped
  monkeypatch.setattr(train_lib, 'jit_train_step', jit)


def test_sigint_in_training_saves_and_exits_130(data, tmp_path, monkeypatch, capsys):
  """Ctrl-C at step 2: the step is saved (complete), one line says so, status 130; re-running
  finishes the run from there."""
  wd = tmp_path / 'run'
  cfg = cfg_of(data)
  signal_at_step(monkeypatch, 2)
  result = train_lib.train(cfg, wd)
  assert result == dict(state='interrupted', step=2, exit_code=130)
  out = capsys.readouterr().out
  assert [line for line in out.splitlines() if 'SIGINT' in line] == [
      f'SIGINT received: saved checkpoint at step 2 in {wd / checkpoint.CKPT_DIR}; re-run the same command to resume']
  assert checkpoint.select_resume_step(wd, log=pytest.fail) == 2
  monkeypatch.undo()
  assert train_lib.train(cfg, wd, quiet=True)['state'] == 'done'
  assert logged_steps(wd) == [1, 2, 3, 4, 5, 6]


def test_second_sigint_stops_at_once_without_a_half_checkpoint(data, tmp_path, monkeypatch, capsys):
  """Two Ctrl-C at step 3 with a checkpoint saved every step: status 130 at once, one line on stderr;
  every checkpoint orbax lists is complete (an in-flight save is finished or not listed)."""
  wd = tmp_path / 'run'
  signal_at_step(monkeypatch, 3, times=2)
  result = train_lib.train(cfg_of(data, train__ckpt_every=1, train__keep_checkpoints=10), wd, quiet=True)
  assert result['state'] == 'interrupted' and result['exit_code'] == 130
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and 'interrupted (SIGINT): stopped at once after step 2' in err, err
  time.sleep(2)   # an orbax save thread still running finishes or leaves only its tmp dir
  steps = checkpoint.manager(wd, async_save=False).all_steps()
  assert steps and max(steps) <= 3
  skipped = []
  assert checkpoint.select_resume_step(wd, log=skipped.append) == max(steps)
  assert not [s for s in skipped if 'skipped' in s], skipped


def test_sigint_during_restore_exits_130(data, three_steps, tmp_path, monkeypatch, capsys):
  wd = copy_of(three_steps, tmp_path)
  real = checkpoint.restore

  def interrupted(*a, **k):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*a, **k)
  monkeypatch.setattr(checkpoint, 'restore', interrupted)
  result = train_lib.train(cfg_of(data, train__steps=6, train__ckpt_every=3), wd, extend=6)
  assert result == dict(state='interrupted', step=3, exit_code=130)
  assert 'SIGINT received during state initialisation and restore' in capsys.readouterr().out
  assert checkpoint.select_resume_step(wd, log=pytest.fail) == 3


def test_sigint_during_the_end_of_run_samples_exits_130_with_one_line(data, tmp_path, monkeypatch, capsys):
  import scaling.inference.generate
  wd = tmp_path / 'run'
  args = ['train', '--workdir', str(wd), *flags(data, train__steps=3)]
  assert cli.main([*args, '--no_sample']) == 0
  capsys.readouterr()

  def interrupted(*a, **k):
    os.kill(os.getpid(), signal.SIGINT)   # Python's default handler: KeyboardInterrupt
    time.sleep(5)
    pytest.fail('SIGINT did not interrupt the samples')
  monkeypatch.setattr(scaling.inference.generate, 'generate', interrupted)
  # Python's handler, whatever the runner started us with: a shell without job control starts background
  # jobs (e.g. `.ci/run &`) with SIGINT ignored, which Python then leaves ignored
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    assert cli.main(args) == 130
  finally:
    signal.signal(signal.SIGINT, previous)
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and 'SIGINT' in err and 'samples' in err, err
