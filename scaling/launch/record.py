"""A run's record (run.json) as types: the run, its attempts, and the transitions between states.

    pending --start_local--> running --end(outcome)--> done | failed | preempted | interrupted
    pending --submitted----> submitted --end(outcome)--> ...
    (any ended state) --start_local / submitted--> a new attempt

Every change of a record goes through a method here (`start_local`, `start_failed`,
`submitted`, `end`, `close_dangling`, `mark_done`), so what a state means is
written once. The JSON on disk is the one earlier launchers wrote (keys of an
attempt: n, backend, start, host, pid, slot, cmd, job_id, pack; once ended also end,
exit_code, outcome, and queue_state or error when known); keys this version does
not know are kept as read and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Any

from scaling.base.layout import EXIT_PREEMPTED

OUTCOMES = ('done', 'failed', 'preempted', 'interrupted')
STATES = ('pending', 'running', 'submitted') + OUTCOMES


def now() -> float:
  return round(time.time(), 3)


def outcome_of_exit(code: int | None, done: bool) -> str:
  """Maps a training exit code to an attempt outcome: done, preempted (exit 75, resumable) or failed."""
  if done:
    return 'done'
  if code == EXIT_PREEMPTED:
    return 'preempted'
  return 'failed'


# Attempt keys written only when set, in this order of fields; the end keys are written once ended.
_OPTIONAL = ('host', 'pid', 'slot', 'cmd', 'job_id', 'pack', 'queue_state', 'error')
_END = ('end', 'exit_code', 'outcome')


@dataclasses.dataclass
class Attempt:
  """One execution (local process) or submission (queue job) of a run."""
  n: int
  backend: str
  start: float
  host: str | None = None        # local / tpu-vm: where the launcher ran it
  pid: int | None = None
  slot: int | None = None
  cmd: list[str] | None = None
  job_id: str | None = None      # slurm job id or gke workload name
  pack: str | None = None        # the id of the packed group it trained in (ROOT/packs/<id>.json), if any
  end: float | None = None
  exit_code: int | None = None
  outcome: str | None = None     # None while it runs or waits in a queue
  queue_state: str | None = None  # the queue's last word on the job when it ended
  error: str | None = None       # why it could not start
  extra: dict = dataclasses.field(default_factory=dict)   # keys from other versions, kept

  @property
  def open(self) -> bool:
    """Not ended yet (running, queued, or its launcher died before recording the end)."""
    return self.outcome is None

  @classmethod
  def from_json(cls, d: dict) -> Attempt:
    known = {f.name for f in dataclasses.fields(cls)} - {'extra'}
    a = cls(**{k: v for k, v in d.items() if k in known})
    a.extra = {k: v for k, v in d.items() if k not in known}
    return a

  def to_json(self) -> dict:
    d = {'n': self.n, 'backend': self.backend, 'start': self.start}
    for k in _OPTIONAL:
      if getattr(self, k) is not None:
        d[k] = getattr(self, k)
    if self.outcome is not None:
      d.update({k: getattr(self, k) for k in _END})
    d.update(self.extra)
    return d


@dataclasses.dataclass
class RunRecord:
  """run.json: what the run is (written once) and what happened to it (its attempts and state)."""
  hash: str
  sweep: str = ''
  index: int = 0
  label: str = ''
  overrides: dict = dataclasses.field(default_factory=dict)
  spec: str = ''
  flags: dict = dataclasses.field(default_factory=dict)
  config: dict = dataclasses.field(default_factory=dict)
  state: str = 'pending'
  attempts: list[Attempt] = dataclasses.field(default_factory=list)
  created: float = 0.0
  extra: dict = dataclasses.field(default_factory=dict)

  # ---- JSON ----------------------------------------------------------------------------------------
  @classmethod
  def new(cls, run, sweep) -> RunRecord:
    from scaling.config.load import to_dict
    return cls(hash=run.hash, sweep=str(sweep.path) + (f':{sweep.arg}' if sweep.arg else ''), index=run.index,
               label=run.label, overrides=run.overrides, spec=run.spec, flags=run.flags, config=to_dict(run.config),
               created=now())

  @classmethod
  def from_json(cls, d: dict) -> RunRecord:
    known = {f.name for f in dataclasses.fields(cls)} - {'extra', 'attempts'}
    rec = cls(**{k: v for k, v in d.items() if k in known})
    rec.attempts = [Attempt.from_json(a) for a in d.get('attempts', [])]
    rec.extra = {k: v for k, v in d.items() if k not in known and k != 'attempts'}
    return rec

  def to_json(self) -> dict:
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ('extra', 'attempts')}
    d['attempts'] = [a.to_json() for a in self.attempts]
    d.update(self.extra)
    return d

  # ---- reading -------------------------------------------------------------------------------------
  @property
  def last(self) -> Attempt | None:
    return self.attempts[-1] if self.attempts else None

  @property
  def failures(self) -> int:
    """Attempts that count against --max-retries (only 'failed': preempted and interrupted ones do not)."""
    return sum(a.outcome == 'failed' for a in self.attempts)

  def open_job(self) -> Attempt | None:
    """The last attempt when it is a queue job that has not ended (its job id is to be tracked)."""
    a = self.last
    return a if a is not None and a.job_id and a.open else None

  # ---- transitions ---------------------------------------------------------------------------------
  def _new_attempt(self, backend: str, **kw) -> Attempt:
    a = Attempt(n=len(self.attempts) + 1, backend=backend, start=now(), **kw)
    self.attempts.append(a)
    return a

  def start_local(self, backend: str, *, pid: int, slot: int, cmd: list[str], pack: str | None = None) -> Attempt:
    """A local process (or an ssh to a TPU VM) started: state 'running'. `pack`: the id of the packed
    group the run trains in, one process for all its members (scaling/launch/packing.py)."""
    self.state = 'running'
    return self._new_attempt(backend, host=socket.gethostname(), pid=pid, slot=slot, cmd=list(cmd), pack=pack)

  def start_failed(self, backend: str, error: str) -> Attempt:
    """The command could not even start (e.g. not found): a failed attempt."""
    a = self._new_attempt(backend, error=error)
    self.end(a, 'failed', None, at=a.start)
    return a

  def submitted(self, backend: str, job_id: str) -> Attempt:
    """A queue accepted the job: state 'submitted' until its outcome is known."""
    self.state = 'submitted'
    return self._new_attempt(backend, job_id=str(job_id))

  def end(self, a: Attempt, outcome: str, exit_code: int | None, *, queue_state: str | None = None,
          at: float | None = None) -> None:
    """Attempt `a` ended with `outcome` (one of OUTCOMES); it becomes the run's state."""
    if outcome not in OUTCOMES:
      raise ValueError(f'unknown outcome {outcome!r}; one of {OUTCOMES}')
    a.end, a.exit_code, a.outcome = (now() if at is None else at), exit_code, outcome
    if queue_state is not None:
      a.queue_state = queue_state
    self.state = outcome

  def close_dangling(self, done: bool = False) -> bool:
    """Ends a local attempt that never recorded its end: its launcher died ('interrupted', or 'done').

    Only called while holding the run's lock: a live local run holds that lock
    through its training process, so an open local attempt seen here is dead.
    Queue jobs (with a job id) are left to the queue's answer.
    """
    a = self.last
    if a is not None and a.open and not a.job_id:
      self.end(a, 'done' if done else 'interrupted', None)
      return True
    return False

  def mark_done(self) -> bool:
    """summary.json says the run finished: state 'done'. Returns True when that changed the record."""
    if self.state == 'done':
      return False
    self.state = 'done'
    return True


def as_record(rec: Any) -> RunRecord | None:
  """A RunRecord from a RunRecord, a run.json dict, or None."""
  if rec is None or isinstance(rec, RunRecord):
    return rec
  return RunRecord.from_json(rec)
