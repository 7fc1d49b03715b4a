"""Multi-process runs: `jax.distributed` initialization, an agreed stop on signals, and a local launcher.

One process per host (or per GPU) runs the same `scaling train`; JAX's
multi-controller runtime makes the devices of all processes one mesh.

* explicit: `--coordinator HOST:PORT --num_processes N --process_id I`;
* automatic: under SLURM (`srun`, SLURM_NTASKS > 1), on Cloud TPU VMs and on GKE,
  `jax.distributed.initialize()` finds the cluster itself;
* `--local_processes N`: this module starts N processes on this host, each
  with its share of the CPU devices, to test the multi-host path without a
  cluster. If one of them dies, the others are killed and the exit status
  names the process that failed, instead of a hang in a collective.

Failure handling, in layers:

* a process that dies (crash, OOM kill, kill -9) stops sending heartbeats to
  the coordination service; after SCALING_HEARTBEAT_TIMEOUT_S seconds (default
  60) every other process aborts with "the JAX distributed service detected
  fatal errors" instead of waiting in a collective forever. If the coordinator
  (process 0) dies, the others abort at once. This holds without any launcher.
* `launch_local` watches its children and kills the rest within about a second
  of the first failure, printing which process failed and how.
* SIGTERM (what SLURM, GKE and TPU maintenance send before a preemption) and
  SIGINT must stop all processes after the *same* step: a process that stopped
  alone would leave the others blocked in the next collective while it waits in
  the checkpoint barrier. JAX's preemption service catches SIGTERM in every
  process and agrees on a step (`StopSync`); the training loop saves there and
  exits with status 75.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax

_INITIALIZED = False
from scaling.base.names import EXIT_INTERRUPTED, EXIT_PREEMPTED  # noqa: E402  (one place for exit codes)

STOPPED = (EXIT_PREEMPTED, EXIT_INTERRUPTED)
HEARTBEAT_ENV = 'SCALING_HEARTBEAT_TIMEOUT_S'
SHUTDOWN_ENV = 'SCALING_SHUTDOWN_TIMEOUT_S'
END_ENV = 'SCALING_END_TIMEOUT_S'


def _env_seconds(name: str, default: int) -> int:
  raw = os.environ.get(name, '')
  if not raw:
    return default
  try:
    value = int(raw)
  except ValueError:
    raise ValueError(f'{name}={raw!r} must be a whole number of seconds') from None
  if value < 1:
    raise ValueError(f'{name}={raw!r} must be at least 1 second')
  return value


def timeouts() -> dict:
  """The jax.distributed timeouts: a dead peer is detected after heartbeat_timeout_seconds. The shutdown
  barrier (at exit, after end_of_run has synced the processes) waits JAX's default 300 s: at 60 s a
  process starved of CPU on a loaded host (seen: niced test processes beside a study) missed it and the
  run, finished and saved, exited with SIGABRT."""
  return dict(heartbeat_timeout_seconds=_env_seconds(HEARTBEAT_ENV, 60),
              shutdown_timeout_seconds=_env_seconds(SHUTDOWN_ENV, 300))


def _auto_cluster() -> bool:
  env = os.environ
  if int(env.get('SLURM_NTASKS', '1') or 1) > 1 and 'SLURM_JOB_ID' in env:
    return True
  if env.get('TPU_WORKER_HOSTNAMES') or env.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return True
  if env.get('JOBSET_NAME') or env.get('JAX_COORDINATOR_ADDRESS'):
    return True
  return False


def _check_coordinator(address: str) -> None:
  host, sep, port = address.rpartition(':')
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f'--coordinator {address!r} must look like HOST:PORT (e.g. node001:12345), '
                     f'the address of process 0')


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the process group: explicit (flags or SCALING_* env of launch_local), auto-detected, or none."""
  global _INITIALIZED
  if _INITIALIZED:
    return
  env = os.environ
  coordinator = coordinator or env.get('SCALING_COORDINATOR')
  if num_processes is None and env.get('SCALING_NUM_PROCESSES'):
    num_processes = int(env['SCALING_NUM_PROCESSES'])
  if process_id is None and env.get('SCALING_PROCESS_ID'):
    process_id = int(env['SCALING_PROCESS_ID'])
  if coordinator:
    _die_with_launcher()
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator needs --num_processes and --process_id too')
    _check_coordinator(coordinator)
    if num_processes < 1:
      raise ValueError(f'--num_processes {num_processes} must be at least 1')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id {process_id} is outside [0, {num_processes})')
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=120, **timeouts())
    _INITIALIZED = True
  elif num_processes is not None or process_id is not None:
    raise ValueError('--num_processes/--process_id need --coordinator HOST:PORT (the address of process 0)')
  elif _auto_cluster():
    jax.distributed.initialize(**timeouts())
    _INITIALIZED = True


def is_main() -> bool:
  return jax.process_index() == 0


def end_of_run(timeout_s: int | None = None) -> None:
  """Every process waits here until all reached it, before JAX's shutdown barrier.

  Work only the main process does after training (samples, exports, final writes) can outlast
  jax.distributed's shutdown timeout (60 s), after which the coordination service aborts every
  process (SIGABRT) although the run succeeded. Here the others wait for it instead, for up to
  SCALING_END_TIMEOUT_S seconds (default 3600); a dead peer is still noticed by the heartbeat.
  """
  if jax.process_count() == 1:
    return
  # the coordination client: a barrier with a timeout
  from jax._src import distributed as jax_distributed
  client = jax_distributed.global_state.client
  timeout_s = timeout_s or _env_seconds(END_ENV, 3600)
  if client is None:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('scaling.end_of_run')
    return
  client.wait_at_barrier('scaling.end_of_run', timeout_in_ms=timeout_s * 1000)


# ----------------------------------------------------------------------------- agreed stop
def _preemption_service() -> bool:
  from jax._src import distributed as jax_distributed  # the only handle on whether the service runs
  return getattr(jax_distributed.global_state, 'preemption_sync_manager', None) is not None


class StopSync:
  """Decides, identically in every process, after which step a signalled run stops.

  One process: the step after the signal. Several processes: JAX's preemption
  service (started by jax.distributed.initialize) catches SIGTERM in C++, tells
  the coordinator, and `reached_preemption_sync_point(step)` turns true at the
  same step everywhere (one past the largest step any process reported). The
  Python SIGTERM handler must then stay uninstalled, or it would replace JAX's;
  a SIGINT is handed on as a SIGTERM to this process. Without the service the
  flags are all-gathered at every step (a tiny collective; correct but slower).
  """

  def __init__(self):
    self.multi = jax.process_count() > 1
    self.service = self.multi and _preemption_service()

  def handles_sigterm(self) -> bool:
    """Whether the Python handler should leave SIGTERM alone (JAX's notifier owns it)."""
    return self.service

  def notify(self, signum: int) -> None:
    """Called from the Python handler: forward SIGINT to JAX's notifier as SIGTERM."""
    if self.service and signum != signal.SIGTERM:
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int, local_flag: bool) -> bool:
    """Call after every step, in every process (the multi-process protocols count on it)."""
    if not self.multi:
      return local_flag
    from jax.experimental import multihost_utils
    if self.service:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    import numpy as np
    flags = multihost_utils.process_allgather(np.asarray(int(local_flag), np.int32))
    return bool(np.max(flags))


# ----------------------------------------------------------------------------- local launcher
def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _strip_flag(argv: list[str], flag: str) -> list[str]:
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
      continue
    if a == flag:
      skip = True
      continue
    if a.startswith(flag + '='):
      continue
    out.append(a)
  return out


def child_env(base: dict, n: int, i: int, port: int) -> dict:
  """The environment of local process i of n: its own share of the fake CPU devices."""
  env = dict(base)
  flags = env.get('XLA_FLAGS', '')
  m = re.search(r'--xla_force_host_platform_device_count=(\d+)', flags)
  total = int(m.group(1)) if m else n
  if total % n:
    raise ValueError(f'{total} CPU devices (XLA_FLAGS --xla_force_host_platform_device_count) do not split over '
                     f'{n} local processes; use a device count that is a multiple of {n}')
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', flags).strip()
  env['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={total // n}'.strip()
  env['SCALING_COORDINATOR'] = f'127.0.0.1:{port}'
  env['SCALING_NUM_PROCESSES'] = str(n)
  env['SCALING_PROCESS_ID'] = str(i)
  env['SCALING_LAUNCHER_PID'] = str(os.getpid())
  env.setdefault('JAX_PLATFORMS', 'cpu')
  return env


def _die_with_launcher() -> None:
  """In a child of launch_local: get SIGKILL when the launcher dies (Linux), so nothing is left orphaned.

  Set here, after exec, rather than in a preexec_fn (unsafe in a multithreaded parent).
  """
  launcher = os.environ.get('SCALING_LAUNCHER_PID', '')
  if not launcher.isdigit() or os.getppid() != int(launcher) or not sys.platform.startswith('linux'):
    return   # not started by launch_local (or it is already gone: the heartbeat timeout ends this process)
  try:
    import ctypes
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def describe_status(code: int) -> str:
  if code < 0:
    try:
      return f'was killed by {signal.Signals(-code).name}'
    except ValueError:
      return f'was killed by signal {-code}'
  if code == EXIT_PREEMPTED:
    return f'stopped on a signal after saving (status {code})'
  if code == EXIT_INTERRUPTED:
    return f'stopped on SIGINT after saving (status {code})'
  return f'exited with status {code}'


def launch_local(n: int, argv: list[str], *, command: list[str] | None = None, poll_s: float = 0.1,
                 grace_s: float = 60.0) -> int:
  """Runs `python -m scaling <argv>` as n processes on this host; returns 0, 75/130 (stopped) or the failure's status.

  `command` replaces `python -m scaling` (tests start cheap stand-ins).

  The first process to fail (non-zero status other than 75 and 130, or death by a signal)
  gets the others killed at once: they would otherwise block in their next
  collective. Status 75/130 (saved after SIGTERM/SIGINT), status 0, or a signal
  forwarded by this launcher gives the others `grace_s` seconds to save (or
  finish) and exit on their own; after that they are killed.
  """
  if n < 1:
    raise ValueError(f'--local_processes {n} must be at least 1')
  argv = _strip_flag(argv, '--local_processes')
  port = free_port()
  envs = [child_env(os.environ, n, i, port) for i in range(n)]   # raises before anything starts
  command = list(command or [sys.executable, '-m', 'scaling'])
  procs = [subprocess.Popen([*command, *argv], env=envs[i], start_new_session=True)
           for i in range(n)]
  signalled = {'at': None}

  def forward(signum, frame):
    signalled['at'] = signalled['at'] or time.monotonic()
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
  old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}

  def kill_all():
    for p in procs:
      if p.poll() is None:
        try:
          os.killpg(p.pid, signal.SIGKILL)   # the child and anything it started (its own session)
        except ProcessLookupError:
          pass
    for p in procs:
      p.wait()

  try:
    first_stop = None
    while True:
      codes = [p.poll() for p in procs]
      if all(c == 0 for c in codes):
        return 0
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0, *STOPPED)]
      if failed:
        i, c = failed[0]
        kill_all()
        print(f'error: local process {i} of {n} {describe_status(c)}; killed the other {n - 1} process(es) '
              f'(they would block in their next collective). Re-run the same command to resume from the '
              f'last complete checkpoint.', file=sys.stderr, flush=True)
        return 128 - c if c < 0 else c
      # a saved stop (75, 130), a forwarded signal, or a finished process (0): the rest should follow soon
      stopping = any(c in (0, *STOPPED) for c in codes) or signalled['at'] is not None
      if stopping:
        first_stop = first_stop or time.monotonic()
        if all(c is not None for c in codes):   # every process saved (75, 130) or finished (0)
          return next((s for s in (EXIT_INTERRUPTED, EXIT_PREEMPTED) if s in codes), 0)
        if time.monotonic() - first_stop > grace_s:
          late = [i for i, c in enumerate(codes) if c is None]
          kill_all()
          print(f'error: local processes {late} of {n} were still running {grace_s:.0f}s after the others had '
                f'stopped or finished; killed them', file=sys.stderr, flush=True)
          return 1
      time.sleep(poll_s)
  finally:
    for s, h in old.items():
      signal.signal(s, h)
    if any(p.poll() is None for p in procs):   # an exception in the launcher itself: leave nothing behind
      kill_all()
