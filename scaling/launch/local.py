"""The `local` backend: runs as subprocesses of the launcher, a bounded number at a time.

Each run executes `scaling train --config SPEC --workdir RUN_DIR --no_sample --config.k=v ...`
(or $SCALING_TRAIN_CMD) with its output appended to RUN_DIR/train.log, unless it trains packed
with others (below). Before starting a run the launcher takes the run's flock without waiting; a
run locked by another launcher is skipped ("busy"), so two launchers on one root never run the
same run twice. The training process inherits the lock's file descriptor:
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

Packing (scaling/launch/packing.py; `--no-pack` turns it off). Runs whose configs differ only in
packable scalars (lr, Adam's scalars, weight decay, init seed) are grouped, and a group starts as ONE
process, `scaling train-packed --members ROOT/packs/<id>.json`, whose output goes to ROOT/packs/<id>.log
(each member's train.log gets a line pointing there). Before it starts, the launcher takes every
member's lock as for a single run (the process inherits them all) and drops the members that are
finished, out of retries or busy elsewhere, and those that would resume from another checkpoint step
than the first member (they start on their own, next); one member left is a normal run. Each member's
run.json gets an attempt of its own (with the group's pid and id), and its outcome from its own
summary.json (done; diverged: failed, exit 3), else from the group's exit code (75: preempted, so
they resume together). A failed member is retried alone, unpacked. Cooldown branches that fork at the
same step pack too, each from its own parent: such a group waits in the queue until every member's
parent checkpoint of the fork step exists (a member whose parent ended without it is dropped from the
group as 'blocked'); `--dry-run` names the parents of each group of branches.

Subclasses (tpu_vm) change `command()`, the prepare/finish hooks, `_before_start` (a slot's
machine must be ready), `_outcome` (what an exit code means there) and `packs` (tpu_vm: off).
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

from scaling.base.files import atomic_write_text
from scaling.base.layout import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED, TRAIN_LOG
from scaling.launch import packing
from scaling.launch import rundir as rd_lib
from scaling.launch.backend import Backend, QueueQueryError
from scaling.launch.packing import Pack
from scaling.launch.record import outcome_of_exit
from scaling.launch.rundir import RunDir


@dataclasses.dataclass
class _Member:
  """A run of a packed group being executed: the lock the group's process holds for it."""
  run: object
  rd: RunDir
  fd: int


@dataclasses.dataclass
class _Active:
  """A run (or a packed group of runs) being executed: its process, the lock(s) it holds and its log."""
  run: object                 # the Run, or the Pack of the runs in `members`
  rd: RunDir | None           # the run's directory (None for a pack)
  proc: subprocess.Popen
  fd: int                     # the run's lock (-1 for a pack: each member's is in `members`)
  log: IO[bytes]
  slot: int
  t0: float
  members: list = dataclasses.field(default_factory=list)   # a pack: one _Member per run
  since: float = 0.0          # wall-clock start (a member's summary.json written since is this attempt's)

  def run_dirs(self) -> list[tuple[object, RunDir]]:
    return [(m.run, m.rd) for m in self.members] if self.members else [(self.run, self.rd)]


def _hashes(unit) -> list[str]:
  return unit.hashes if isinstance(unit, Pack) else [unit.hash]


class LocalBackend(Backend):
  name = 'local'
  tools: tuple[str, ...] = ()
  packs = True    # groups packable runs into one `scaling train-packed` process (subclasses may not)

  def __init__(self, root, resources: dict | None = None, *, max_parallel: int = 1, max_retries: int = 2,
               local_processes: int = 1, progress_every: float = 10.0, poll_s: float = 0.1, log=print,
               placeholders: bool = False, pack: bool = True):
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
    self.pack = pack
    packing.max_members(self.resources)   # a bad pack_max_members is an error before anything is written
    self.host_bytes = packing.host_memory_bytes()

  def check_tools(self) -> None:
    """The training command's program must exist (checked before anything is written)."""
    import shutil
    prefix, _ = packing.packed_prefix()
    for prog in [rd_lib.train_prefix()[0]] + ([prefix[0]] if prefix and not self.pack_off() else []):
      if shutil.which(prog) is None and not os.path.exists(prog):
        from scaling.launch.sweep import LaunchError
        raise LaunchError(f'training command {prog!r} not found (from $SCALING_TRAIN_CMD, $SCALING_TRAIN_PACKED_CMD '
                          f'or sys.executable)')

  # ---- packing -----------------------------------------------------------------------------------
  def pack_off(self) -> str | None:
    """Why this launcher trains every run alone (None: it packs)."""
    if not self.packs:
      return f'the {self.name} backend trains each run alone'
    if not self.pack:
      return '--no-pack'
    if self.local_processes > 1:
      return '--local_processes > 1 (a packed run is one process)'
    return packing.packed_prefix()[1] or None

  def units(self, sweep) -> list:
    """What to start, in sweep order: runs, and packs of runs that train together."""
    if self.pack_off():
      return list(sweep.runs)
    return packing.group_runs(sweep.runs, self.resources, self.host_bytes)

  def pack_command(self, pack: Pack) -> list[str]:
    return packing.packed_prefix()[0] + ['--members', str(self.root / packing.PACKS_DIR / f'{pack.id}.json')]

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
    units = self.units(sweep)
    packs = [u for u in units if isinstance(u, Pack)]
    if self.packs:
      lines.append(f'# packing off: {self.pack_off()}' if self.pack_off() else
                   f'# packing: {len(packs)} group(s), {sum(len(p.runs) for p in packs)} of {len(sweep.runs)} runs, '
                   f'train together (one `scaling train-packed` process per group); --no-pack trains each run alone')
    for unit in units:
      if isinstance(unit, Pack):
        lines.append(f'# pack {unit.id}: K={len(unit.runs)} runs train together (limit {unit.limit}: {unit.why})')
        if unit.fork_step is not None:
          lines.append(f'#   cooldown branches forked at step {unit.fork_step}, each from its own parent '
                       f'({", ".join(dict.fromkeys(r.parent for r in unit.runs))}); the group starts once every '
                       f'parent has its checkpoint of step {unit.fork_step}')
        lines += [f'#   run {r.hash} ({r.label}) -> {RunDir(self.root, r.hash).path}: '
                  f'{shlex.join(["--config", r.spec] + r.flag_list())}' for r in unit.runs]
        lines.append(shlex.join(self.pack_command(unit)))
        continue
      rd = RunDir(self.root, unit.hash)
      lines.append(f'# run {unit.hash} ({unit.label}) -> {rd.path}')
      lines.append(shlex.join(self.command(unit, rd, unit.index % self.max_parallel)))
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
    queue = collections.deque(self.units(sweep))   # runs, and packs of runs (one process each)
    active: dict[int, _Active] = {}   # slot -> the run (or pack) executing there
    counts = collections.Counter()    # per run
    total = len(sweep.runs)
    last_progress = time.monotonic()
    stopping = False
    while queue or active:
      stopping = self._signal_all(active, stopping)
      if stopping:
        queue.clear()
      while queue and len(active) < self.max_parallel and not stopping:
        unit = self._pop_ready(queue, active, counts)
        if unit is None:
          break
        slot = min(set(range(self.max_parallel)) - set(active))
        a = self._start_pack(unit, slot, counts, queue) if isinstance(unit, Pack) else self._start(unit, slot, counts)
        if a is not None:
          active[slot] = a
      for slot, a in list(active.items()):
        rc = a.proc.poll()
        if rc is None:
          continue
        del active[slot]
        self._ended(a, rc, counts, queue, stopping)
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
    """The first queued run (or pack) that can start; a cooldown branch waits until its parent's checkpoint at
    the fork step exists (while the parent is queued, running here or locked by another launcher), a pack of
    branches until every member's does. A branch whose parent ended without that checkpoint is dropped
    ('blocked'; from its pack, which goes on with the others). None: nothing can start now."""
    running = {h for a in active.values() for h in _hashes(a.run)} | {h for u in queue for h in _hashes(u)}
    for unit in list(queue):
      runs = unit.runs if isinstance(unit, Pack) else [unit]
      waiting, blocked = [], []
      for run in runs:
        if rd_lib.fork_ready(self.root, run):
          continue
        if run.parent in running or _locked_elsewhere(RunDir(self.root, run.parent)):
          waiting.append(run)
          continue
        blocked.append(run)
        counts['blocked'] += 1
        self.log(f'[sweep] run {run.hash} ({run.label}) not started: its parent {run.parent} ended without a '
                 f'checkpoint of step {run.fork_step} (see {RunDir(self.root, run.parent).path}); re-run the sweep '
                 f'once the parent has it')
      rest = [r for r in runs if all(r is not b for b in blocked)]
      i = next(j for j, u in enumerate(queue) if u is unit)
      if blocked:
        unit = Pack(rest, unit.limit, unit.why) if len(rest) > 1 else (rest[0] if rest else None)
        queue[i] = unit
      if waiting:
        continue
      del queue[i]
      if unit is not None:
        return unit
    return None

  def _ended(self, a: _Active, rc: int, counts, queue: collections.deque, stopping: bool) -> None:
    """Records the outcome of every run of an ended process and requeues those that resume or retry: the
    preempted members of a pack together, a failed one alone."""
    if not a.members:
      outcome = self._end(a, rc)
      counts[outcome] += 1
      if not stopping and self._requeue(a.run, a.rd, outcome, rc, a.rd.path / TRAIN_LOG):
        counts[outcome] -= 1
        queue.append(a.run)
      return
    resume = []
    for m, outcome, code in self._end_pack(a, rc):
      counts[outcome] += 1
      log = self.root / packing.PACKS_DIR / f'{a.run.id}.log'
      if stopping or not self._requeue(m.run, m.rd, outcome, code, log):
        continue
      counts[outcome] -= 1
      if outcome == 'preempted':
        resume.append(m.run)
      else:
        queue.append(m.run)
    if resume:
      queue.append(Pack(resume, a.run.limit, a.run.why) if len(resume) > 1 else resume[0])

  def _requeue(self, run, rd: RunDir, outcome: str, rc: int | None, log) -> bool:
    """Whether an ended run goes to the back of the queue: preempted ones resume, failed ones retry."""
    if outcome == 'preempted':
      return True
    if outcome != 'failed':
      return False
    n = rd.load().failures
    if n <= self.max_retries:
      self.log(f'[sweep] run {run.hash} ({run.label}) failed (exit {rc}); retrying '
               f'({n}/{self.max_retries} retries), log: {log}')
      return True
    self.log(f'[sweep] run {run.hash} ({run.label}) failed (exit {rc}); no retries left, log: {log}')
    return False

  def _claim(self, run, counts) -> tuple | None:
    """Takes the run's lock; (its RunDir, the lock's fd, its record), or None when it is busy elsewhere,
    done or out of retries (counted)."""
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
    return rd, fd, rec

  def _slot_ready(self, slot: int, what: str, claims: list, counts) -> bool:
    """_before_start; on failure the claimed locks are released (and nothing is recorded)."""
    try:
      self._before_start(slot)
      return True
    except QueueQueryError as e:   # its machine's state is unknown: not started (and not recorded)
      counts['unknown'] += len(claims)
      self.log(f'[sweep] {what} not started: {e}')
    except BaseException:
      _unlock_all(claims)
      raise
    _unlock_all(claims)
    return False

  def _start(self, run, slot: int, counts) -> _Active | None:
    claim = self._claim(run, counts)
    if claim is None or not self._slot_ready(slot, f'run {run.hash} ({run.label})', [claim], counts):
      return None
    return self._launch(run, *claim, slot, counts)

  def _launch(self, run, rd: RunDir, fd: int, rec, slot: int, counts) -> _Active | None:
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
    self.log(f'[sweep] run {a.run.hash} ({a.run.label}) {outcome} (exit {rc}) after '
             f'{time.monotonic() - a.t0:.1f} s{_losses(rd)}')
    return outcome

  # ---- packs -------------------------------------------------------------------------------------
  def _start_pack(self, pack: Pack, slot: int, counts, queue: collections.deque) -> _Active | None:
    """Claims the members (those finished, out of retries or busy elsewhere are dropped) and starts them as one
    process; members that would resume from another checkpoint step than the first go back to the queue's
    front, to start on their own. One member left: a normal run."""
    held = [(run, *c) for run in pack.runs if (c := self._claim(run, counts)) is not None]
    step = held[0][1].latest_checkpoint() if held else None
    later = [h for h in held if h[1].latest_checkpoint() != step]
    if later:
      _unlock_all([h[1:] for h in later])
      held = [h for h in held if all(h is not x for x in later)]
      rest = [h[0] for h in later]
      self.log(f'[sweep] {len(rest)} run(s) of {pack.id} resume from another step than run {held[0][0].hash} '
               f'(checkpoint {step}): they start apart from it')
      queue.appendleft(Pack(rest, pack.limit, pack.why) if len(rest) > 1 else rest[0])
    if not held:
      return None
    what = f'run {held[0][0].hash}' if len(held) == 1 else f'{len(held)} packed runs'
    if not self._slot_ready(slot, what, [h[1:] for h in held], counts):
      return None
    if len(held) == 1:
      return self._launch(*held[0], slot, counts)
    return self._launch_pack(Pack([h[0] for h in held], pack.limit, pack.why), held, slot, counts)

  def _launch_pack(self, pack: Pack, held: list, slot: int, counts) -> _Active | None:
    """Writes ROOT/packs/<id>.json and starts `scaling train-packed` on it, holding every member's lock."""
    pdir = self.root / packing.PACKS_DIR
    pdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(pdir / f'{pack.id}.json', packing.members_text(pack, self.root))
    cmd, log_path = self.pack_command(pack), pdir / f'{pack.id}.log'
    when = f'on {socket.gethostname()} at {time.ctime()}'
    log_f = open(log_path, 'ab')
    log_f.write(f'\n==== {pack.id}, {len(held)} runs, {when}: {shlex.join(cmd)}\n'.encode())
    log_f.flush()
    for run, rd, _, rec in held:
      with open(rd.path / TRAIN_LOG, 'ab') as f:
        f.write(f'\n==== attempt {len(rec.attempts) + 1} {when}: packed with {len(held) - 1} other run(s) in '
                f'{pack.id}; its output: {log_path}\n'.encode())
    try:
      proc = subprocess.Popen(cmd, stdout=log_f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              pass_fds=tuple(h[2] for h in held), start_new_session=True)
    except OSError as e:
      log_f.close()
      for _, rd, fd, rec in held:
        rec.start_failed(self.name, str(e))
        rd.write(rec)
        rd.unlock(fd)
      counts['failed'] += len(held)
      self.log(f'[sweep] {pack.id}: could not start {cmd[0]!r}: {e}')
      return None
    for _, rd, _, rec in held:
      rec.start_local(self.name, pid=proc.pid, slot=slot, cmd=cmd, pack=pack.id)
      rd.write(rec)
    self.log(f'[sweep] start {pack.id}, pid {proc.pid}: {pack.label} train together (log {log_path})')
    return _Active(run=pack, rd=None, proc=proc, fd=-1, log=log_f, slot=slot, t0=time.monotonic(),
                   members=[_Member(run, rd, fd) for run, rd, fd, _ in held], since=time.time())

  def _end_pack(self, a: _Active, rc: int) -> list[tuple[_Member, str, int | None]]:
    """Each member's outcome (packing.member_outcome), recorded in its run.json; its lock released."""
    a.log.close()
    out = []
    for m in a.members:
      outcome, code = packing.member_outcome(m.rd, rc, a.since)
      rec = m.rd.load()
      rec.end(rec.last, outcome, code)
      m.rd.write(rec)
      m.rd.unlock(m.fd)
      out.append((m, outcome, code))
      self.log(f'[sweep] run {m.run.hash} ({m.run.label}) {outcome} (exit {code}; {a.run.id} exit {rc}) after '
               f'{time.monotonic() - a.t0:.1f} s{_losses(m.rd)}')
    return out

  def _progress_line(self, counts, total, active, detail=False):
    running = [rd_ for a in active.values() for rd_ in a.run_dirs()]
    head = (f'[sweep] {counts["done"]}/{total} done, {len(running)} running, {counts["failed"] + counts["gave_up"]} '
            f'failed, {counts["busy"]} busy elsewhere')
    if detail:
      parts = []
      for run, rd in running:
        m = rd.last_metrics()
        loss = m.get('train/loss')
        parts.append(f'{run.hash}: step {m.get("step", "-")}' +
                     (f' train_loss {loss:.4g}' if isinstance(loss, (int, float)) else ''))
      head += ' | ' + '; '.join(parts)
    self.log(head)


def _losses(rd: RunDir) -> str:
  """', train_loss X, eval_loss Y' from a finished run's summary.json ('' when there is none)."""
  summ = rd.summary() or {}
  return ''.join(f', {k.replace("/", "_")} {summ[k]:.4g}' for k in ('train/loss', 'eval/loss')
                 if isinstance(summ.get(k), (int, float)))


def _unlock_all(claims: list) -> None:
  """Releases the locks of (rd, fd, ...) claims."""
  for rd, fd, *_ in claims:
    rd.unlock(fd)


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
