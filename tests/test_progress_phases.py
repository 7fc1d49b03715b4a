"""Long phases say how far along they are: `scaling eval`'s batches (done / total, rate, ETA) and `scaling
compile`'s heartbeat; and compile-only use silences libtpu's start-up error lines at their cause."""

from __future__ import annotations

import io
import os
import re
import threading

import pytest

from scaling.inference import evaluate as inference_eval
from scaling.train import aot, aot_cli


class Clock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_eval_progress_lines_when_not_on_a_terminal():
  """10 batches of 3 s after a 20 s first batch (the compile): a line every >= 10 s and one at the end."""
  clock, out = Clock(), io.StringIO()
  seen = []
  clock.t = 100.0
  for b in inference_eval.with_progress(iter(range(10)), 10, 'eval seq_len=256', stream=out, every=10, clock=clock):
    seen.append(b)
    clock.t += 20.0 if b == 0 else 3.0   # the caller's scoring of batch b
  assert seen == list(range(10))
  lines = out.getvalue().splitlines()
  # timing starts after batch 1 (clock 120); each later batch adds 3 s: n=5 at 132 s is the first >= 10 s
  # later, n=9 at 144 s the next, n=10 (147 s) the end; the last field is the time since the start (100)
  parsed = [re.fullmatch(r'eval seq_len=256: (\d+)/10 batches, ([\d.]+) batch/s, eta (\d+) s \((\d+) s\)', x)
            for x in lines]
  assert all(parsed), lines
  got = [(int(m[1]), float(m[2]), int(m[3]), int(m[4])) for m in parsed]
  # rate: (n - 1) batches in (n - 1) * 3 s after the first = 1/3 batch/s; eta: (10 - n) * 3 s
  assert got == [(5, 0.33, 15, 32), (9, 0.33, 3, 44), (10, 0.33, 0, 47)]


def test_eval_progress_is_a_bar_on_a_terminal():
  class Tty(io.StringIO):
    def isatty(self):
      return True
  out = Tty()
  assert list(inference_eval.with_progress(iter(range(4)), 4, 'eval prose', stream=out)) == [0, 1, 2, 3]
  assert '4/4' in out.getvalue() and 'eval prose' in out.getvalue()


def test_compile_heartbeat_beats_while_running_and_says_when_done():
  out, release = io.StringIO(), threading.Event()
  clock = Clock()
  with aot_cli.heartbeat('compiling the train step for v5p-8', every=0.01, stream=out, clock=clock):
    # wait for three beats at 15 s apart on the fake clock
    for k in range(1, 4):
      clock.t = 100.0 + 15 * k
      for _ in range(2000):
        if out.getvalue().count(f'... {15 * k} s') >= 1:
          break
        release.wait(0.005)
    clock.t = 100.0 + 47.3
  lines = out.getvalue().splitlines()
  assert lines[0] == 'compiling the train step for v5p-8 ...'
  for k in (15, 30, 45):
    assert f'compiling the train step for v5p-8 ... {k} s' in lines
  assert lines[-1] == 'compiling the train step for v5p-8: done in 47.3 s'
  assert not any(t.name == 'compile-heartbeat' for t in threading.enumerate())


def test_compile_heartbeat_on_failure_says_stopped():
  out = io.StringIO()
  with pytest.raises(aot.AotError):
    with aot_cli.heartbeat('compiling x', every=60, stream=out):
      raise aot.AotError('no')
  assert out.getvalue().splitlines()[-1].startswith('compiling x: stopped after ')


def test_quiet_libtpu_only_without_a_tpu_and_never_overrides(monkeypatch):
  for k in ('TPU_WORKER_HOSTNAMES', 'TPU_ACCELERATOR_TYPE'):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setattr(aot_cli, '_tpu_attached', lambda: True)
  aot_cli.quiet_libtpu(aot.parse_target('v5p-8'))
  assert 'TPU_WORKER_HOSTNAMES' not in os.environ    # a TPU VM: its own metadata decides
  monkeypatch.setattr(aot_cli, '_tpu_attached', lambda: False)
  aot_cli.quiet_libtpu(aot.parse_target('h100-8'))
  assert 'TPU_WORKER_HOSTNAMES' not in os.environ    # a GPU target: no libtpu
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v4-8')
  aot_cli.quiet_libtpu(aot.parse_target('v5p-8'))
  assert os.environ['TPU_WORKER_HOSTNAMES'] == 'localhost' and os.environ['TPU_ACCELERATOR_TYPE'] == 'v4-8'



def test_the_quieted_environment_ends_with_the_compile(monkeypatch):
  """Left set, TPU_WORKER_HOSTNAMES makes a later `scaling train` in the same process auto-detect a TPU pod and
  call jax.distributed.initialize (scaling/train/distributed.py _auto_cluster): seen when an in-process compile
  test ran before an in-process train test on one worker."""
  from scaling.train import distributed
  for k in ('TPU_WORKER_HOSTNAMES', 'TPU_ACCELERATOR_TYPE'):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setattr(aot_cli, '_tpu_attached', lambda: False)
  with aot_cli.libtpu_quieted(aot.parse_target('v5p-8')):
    assert os.environ['TPU_WORKER_HOSTNAMES'] == 'localhost' and os.environ['TPU_ACCELERATOR_TYPE'] == 'v5p-8'
  assert 'TPU_WORKER_HOSTNAMES' not in os.environ and 'TPU_ACCELERATOR_TYPE' not in os.environ
  assert not distributed._auto_cluster()
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v4-8')   # a value the user set stays, after as before
  with aot_cli.libtpu_quieted(aot.parse_target('v5p-8')):
    pass
  assert os.environ['TPU_ACCELERATOR_TYPE'] == 'v4-8' and 'TPU_WORKER_HOSTNAMES' not in os.environ

@pytest.mark.skipif(not aot.libtpu_available(), reason='needs libtpu (pip install -e ".[tpu-aot]")')
def test_libtpu_start_up_lines_are_gone_and_devices_unchanged(tmp_path):
  """In fresh interpreters: the compile-only devices of v5p-8 x 2 with and without quiet_libtpu; stderr before
  had libtpu's error lines, after has none, and the devices (coords, core, slice) are the same."""
  import subprocess
  import sys
  code = ('import sys, jax; jax.config.update("jax_platforms", "cpu")\n'
          'from scaling.train import aot, aot_cli\n'
          't = aot.parse_target("v5p-8", 2)\n'
          'if sys.argv[1] == "quiet": aot_cli.quiet_libtpu(t)\n'
          'print([(tuple(d.coords), d.core_on_chip, getattr(d, "slice_index", 0)) for d in aot.target_devices(t)])\n')
  env = {k: v for k, v in os.environ.items() if not k.startswith('TPU_')} | {'JAX_PLATFORMS': 'cpu'}
  runs = {mode: subprocess.run([sys.executable, '-c', code, mode], capture_output=True, text=True, env=env,
                               timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
          for mode in ('loud', 'quiet')}
  for r in runs.values():
    assert r.returncode == 0, r.stderr
  assert runs['loud'].stdout == runs['quiet'].stdout
  assert 'unexpected worker hostname' in runs['loud'].stderr       # the noise this removes (if libtpu changes: stale)
  assert 'worker hostname' not in runs['quiet'].stderr and 'accelerator type' not in runs['quiet'].stderr
