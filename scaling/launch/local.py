"""The `local` backend: runs as subprocesses of the launcher, a bounded number at a time.

Each run executes `scaling train --config SPEC --workdir RUN_DIR --no_sample --config.k=v ...`
(or $SCALING_TRAIN_CMD) with its output appended to RUN_DIR/train.log. Before
starting a run the launcher takes the run's flock without waiting; a run locked
by another launcher is skipped ("busy"), so two launchers on one root never run
the same run twice. The training process inherits the lock's file descriptor:
if the launcher dies, the lock stays held until training ends.

A cooldown branch (scaling/launch/sweep.py branches) starts only once its parent's
checkpoint at the fork step exists: the queue is taken in order, skipping the
branches still waiting for their parent (`_pop_ready`), so with --max-parallel 1
the parent runs first and with more slots a branch starts while its parent trains on.

Failed runs (non-zero exit other than 75) are retried at the back of the queue
while their failure count is <= --max-retries; preempted runs (exit 75) are
restarted and resume from their checkpoint. SIGINT/SIGTERM to the launcher is
forwarded to every training process (which checkpoints and exits 75); the
launcher then records them as preempted and exits 75; a second signal SIGKILLs them.
An attempt whose launcher died without recording its end is closed as
'interrupted' by the next launcher (not counted as a failure) and resumed.

Subclasses (tpu_vm) change `command()`, the prepare/finish hooks, `_before_start` (a slot's
machine must be ready) and `_outcome` (what an exit code means there).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from typing import IO

from scaling.base.layout import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED, TRAIN_LOG
from scaling.launch import rundir as rd_lib
from scaling.launch.backend import Backend, QueueQueryError
from scaling.launch.record import outcome_of_exit
from scaling.launch.rundir import RunDir


@dataclasses.dataclass
class _Active:
  """A run being executed: its process, the lock it holds and its log."""
  run: object
  rd: RunDir
  proc: subprocess.Popen
  fd: int
  log: IO[bytes]
  slot: int
  t0: float


class LocalBackend(Backend):
  name = 'local'
  tools: tuple[str, ...] = ()

  def __init__(self, root, resources: dict | None = None, *, max_parallel: int = 1, max_retries: int = 2,
               local_processes: int = 1, progress_every: float = 10.0, poll_s: float = 0.1, log=print,
               placeholders: bool = False):
    if max_parallel < 1:
      raise ValueError(f'--max-parallel must be >= 1, got {max_parallel}')
    if local_processes < 1:
      raise ValueError(f'--local_processes must be >= 1, got {local_processes}')
    super().__init__(root, resources, max_retries=max_retries, log=log, placeholders=placeholders)
    self.max_parallel = max_parallel
    self.local_processes = local_processes
    self.progress_every = progress_every
    self.poll_s = poll_s
    self._stop = threading.Event()
    self._kill = False

  def check_tools(self) -> None:
    """The training command's program must exist (checked before anything is written)."""
    import shutil
    prog = rd_lib.train_prefix()[0]
    if shutil.which(prog) is None and not os.path.exists(prog):
      from scaling.launch.sweep import LaunchError
      raise LaunchError(f'training command {prog!r} not found (from $SCALING_TRAIN_CMD or sys.executable)')

  # ---- what to run -------------------------------------------------------------------------------
  def command(self, run, rd: RunDir, slot: int) -> list[str]:
    del slot
    cmd = rd_lib.train_argv(rd_lib.train_prefix(), run.spec, rd.path, run.flag_list())
    if self.local_processes > 1:
      cmd += ['--local_processes', str(self.local_processes)]
    return cmd

  def prepare_commands(self, sweep) -> list[list[str]]:
    """Commands run once before the runs (none locally)."""
    del sweep
    return []

  def finish_commands(self, sweep) -> list[list[str]]:
    del sweep
    return []

  def dry_run(self, sweep) -> str:
    lines = [shlex.join(c) for c in self.prepare_commands(sweep)]
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      lines.append(f'# run {run.hash} ({run.label}) -> {rd.path}')
      lines.append(shlex.join(self.command(run, rd, run.index % self.max_parallel)))
    lines += [shlex.join(c) for c in self.finish_commands(sweep)]
    return '\n'.join(lines)

  # ---- hooks -------------------------------------------------------------------------------------
  def _prepare(self, sweep) -> None:
    for cmd in self.prepare_commands(sweep):
      self.log(f'[sweep] {shlex.join(cmd)}')
      subprocess.run(cmd, check=True)

  def _finish(self, sweep) -> None:
    for cmd in self.finish_commands(sweep):
      self.log(f'[sweep] {shlex.join(cmd)}')
      subprocess.run(cmd, check=False)

  def _before_start(self, slot: int) -> None:
    """Called before a run starts on `slot` (tpu-vm: the slot's VM must be READY)."""
    del slot

  def _outcome(self, a: _Active, rc: int) -> str:
    """The attempt's outcome from its exit status (tpu-vm also asks whether its VM survived)."""
    return outcome_of_exit(rc, a.rd.summary() is not None and rc == 0)

  # ---- execution ---------------------------------------------------------------------------------
  def request_stop(self, *_):
    """First SIGINT/SIGTERM: runs checkpoint and stop (exit 75). Second: SIGKILL them."""
    if self._stop.is_set():
      self._kill = True
    self._stop.set()

  def submit(self, sweep, wait: bool = True) -> int:
    """Runs every run of the sweep that is not done; returns 0 when all are done, 75 if stopped, else 1."""
    del wait  # local runs always block
    self.ensure_run_dirs(sweep)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
      for s in (signal.SIGINT, signal.SIGTERM):
        handlers[s] = signal.signal(s, self.request_stop)
    try:
      self._prepare(sweep)
      try:
        return self._loop(sweep)
      finally:
        self._finish(sweep)
    finally:
      for s, h in handlers.items():
        signal.signal(s, h)

  def _signal_all(self, active: dict, stopping: bool) -> bool:
    """Forwards a stop request (SIGTERM) or a second one (SIGKILL) to the running runs; returns `stopping`."""
    if self._stop.is_set() and not stopping:
      stopping = True
      self.log(f'[sweep] stopping: SIGTERM to {len(active)} running run(s); they checkpoint and exit 75')
      for a in active.values():
        _signal_group(a.proc, signal.SIGTERM)
    if self._kill:
      self._kill = False
      self.log('[sweep] second signal: SIGKILL to the running runs')
      for a in active.values():
        _signal_group(a.proc, signal.SIGKILL)
    return stopping

  def _loop(self, sweep) -> int:
    queue = collections.deque(sweep.runs)
    active: dict[int, _Active] = {}   # slot -> the run executing there
    counts = collections.Counter()
    total = len(sweep.runs)
    last_progress = time.monotonic()
    stopping = False
    while queue or active:
      stopping = self._signal_all(active, stopping)
      if stopping:
        queue.clear()
      while queue and len(active) < self.max_parallel and not stopping:
        run = self._pop_ready(queue, active, counts)
        if run is None:
          break
        slot = min(set(range(self.max_parallel)) - set(active))
        a = self._start(run, slot, counts)
        if a is not None:
          active[slot] = a
      for slot, a in list(active.items()):
        rc = a.proc.poll()
        if rc is None:
          continue
        del active[slot]
        outcome = self._end(a, rc)
        counts[outcome] += 1
        if not stopping and self._requeue(a, outcome, rc):
          counts[outcome] -= 1
          queue.append(a.run)
        self._progress_line(counts, total, active)
      if active and time.monotonic() - last_progress > self.progress_every:
        last_progress = time.monotonic()
        self._progress_line(counts, total, active, detail=True)
      time.sleep(self.poll_s)
    self.log(f'[sweep] finished: {dict(counts)} of {total} runs (root {self.root})')
    if stopping:
      return EXIT_PREEMPTED
    return (EXIT_OK if counts['failed'] == counts['gave_up'] == counts['unknown'] == counts['blocked'] == 0
            else EXIT_FAILED)

  def _pop_ready(self, queue: collections.deque, active: dict, counts) -> object | None:
    """The first queued run that can start; a cooldown branch waits until its parent's checkpoint at the
    fork step exists (while the parent is queued, running here or locked by another launcher). A branch
    whose parent ended without that checkpoint is dropped ('blocked'). None: nothing can start now."""
    running = {a.run.hash for a in active.values()} | {r.hash for r in queue}
    for run in list(queue):
      if rd_lib.fork_ready(self.root, run):
        queue.remove(run)
        return run
      if run.parent in running or _locked_elsewhere(RunDir(self.root, run.parent)):
        continue
      queue.remove(run)
      counts['blocked'] += 1
      self.log(f'[sweep] run {run.hash} ({run.label}) not started: its parent {run.parent} ended without a '
               f'checkpoint of step {run.fork_step} (see {RunDir(self.root, run.parent).path}); re-run the sweep '
               f'once the parent has it')
    return None

  def _requeue(self, a: _Active, outcome: str, rc: int) -> bool:
    """Whether an ended run goes to the back of the queue: preempted ones resume, failed ones retry."""
    run, log = a.run, a.rd.path / TRAIN_LOG
    if outcome == 'preempted':
      return True
    if outcome != 'failed':
      return False
    n = a.rd.load().failures
    if n <= self.max_retries:
      self.log(f'[sweep] run {run.hash} ({run.label}) failed (exit {rc}); retrying '
               f'({n}/{self.max_retries} retries), log: {log}')
      return True
    self.log(f'[sweep] run {run.hash} ({run.label}) failed (exit {rc}); no retries left, log: {log}')
    return False

  def _start(self, run, slot: int, counts) -> _Active | None:
    rd = RunDir(self.root, run.hash)
    fd = rd.try_lock()
    if fd is None:
      self.log(f'[sweep] run {run.hash} ({run.label}) is being run by another launcher: skipped')
      counts['busy'] += 1
      return None
    rec = rd.load()
    if rec.close_dangling(done=rd.summary() is not None):
      rd.write(rec)
    skip = self.skip_finished(run, rd, rec)
    if skip:
      rd.unlock(fd)
      counts[skip] += 1
      return None
    try:
      self._before_start(slot)
    except QueueQueryError as e:   # its machine's state is unknown: not started (and not recorded)
      rd.unlock(fd)
      counts['unknown'] += 1
      self.log(f'[sweep] run {run.hash} ({run.label}) not started: {e}')
      return None
    except BaseException:
      rd.unlock(fd)
      raise
    cmd = self.command(run, rd, slot)
    n = len(rec.attempts) + 1
    log_f = open(rd.path / TRAIN_LOG, 'ab')
    log_f.write(f'\n==== attempt {n} on {socket.gethostname()} at {time.ctime()}: {shlex.join(cmd)}\n'.encode())
    log_f.flush()
    try:
      proc = subprocess.Popen(cmd, stdout=log_f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              pass_fds=(fd,), start_new_session=True)
    except OSError as e:
      log_f.close()
      rec.start_failed(self.name, str(e))
      rd.write(rec)
      rd.unlock(fd)
      counts['failed'] += 1
      self.log(f'[sweep] run {run.hash}: could not start {cmd[0]!r}: {e}')
      return None
    rec.start_local(self.name, pid=proc.pid, slot=slot, cmd=cmd)
    rd.write(rec)
    resumed = ' (resuming)' if n > 1 else ''
    self.log(f'[sweep] start run {run.hash} ({run.label}) attempt {n}{resumed}, pid {proc.pid}')
    return _Active(run=run, rd=rd, proc=proc, fd=fd, log=log_f, slot=slot, t0=time.monotonic())

  def _end(self, a: _Active, rc: int) -> str:
    rd = a.rd
    a.log.close()
    outcome = self._outcome(a, rc)
    rec = rd.load()
    rec.end(rec.last, outcome, rc)
    rd.write(rec)
    rd.unlock(a.fd)
    dt = time.monotonic() - a.t0
    summ = rd.summary() or {}
    extra = ''.join(f', {k.replace("/", "_")} {summ[k]:.4g}' for k in ('train/loss', 'eval/loss')
                    if isinstance(summ.get(k), (int, float)))
    self.log(f'[sweep] run {a.run.hash} ({a.run.label}) {outcome} (exit {rc}) after {dt:.1f} s{extra}')
    return outcome

  def _progress_line(self, counts, total, active, detail=False):
    head = (f'[sweep] {counts["done"]}/{total} done, {len(active)} running, {counts["failed"] + counts["gave_up"]} '
            f'failed, {counts["busy"]} busy elsewhere')
    if detail:
      parts = []
      for a in active.values():
        m = a.rd.last_metrics()
        loss = m.get('train/loss')
        parts.append(f'{a.run.hash}: step {m.get("step", "-")}' +
                     (f' train_loss {loss:.4g}' if isinstance(loss, (int, float)) else ''))
      head += ' | ' + '; '.join(parts)
    self.log(head)


def _locked_elsewhere(rd: RunDir) -> bool:
  """Another launcher holds the run's lock (it runs that run now)."""
  fd = rd.try_lock()
  if fd is None:
    return True
  rd.unlock(fd)
  return False


def _signal_group(proc: subprocess.Popen, sig) -> None:
  try:
    os.killpg(proc.pid, sig)
  except (ProcessLookupError, PermissionError):
    pass
