"""What the phases of one training run share: the stop flag (signals), the periodic hooks, the Run record
that the loop's phases pass around instead of closures, the step timer, and the one divergence check."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import signal
import time
from typing import Any, Callable

from scaling.train import checkpoint, distributed
from scaling.train.step import Setup


class TrainError(RuntimeError):
  pass


# ----------------------------------------------------------------------------- signals
class StopFlag:
  """SIGTERM / SIGINT: finish the current step, save, exit (75, or 130 for SIGINT). A second SIGINT
  exits at once without saving (130; an async save in flight is never listed as a checkpoint).

  With several processes every process must stop after the same step (see
  distributed.StopSync): JAX's preemption service then owns SIGTERM.
  """

  def __init__(self):
    self.signum = None
    self._old = {}
    self._sync = None

  def __enter__(self):
    self._sync = distributed.StopSync()
    for s in (signal.SIGTERM, signal.SIGINT):
      if s == signal.SIGTERM and self._sync.handles_sigterm():
        continue
      self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    self._sync.notify(signum)

  def should_stop(self, step: int) -> bool:
    """Whether to save and exit after `step`; called after every step in every process."""
    if self._sync.should_stop(step, self.signum is not None):
      self.signum = self.signum or signal.SIGTERM
      return True
    return False

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


# ----------------------------------------------------------------------------- periodic actions
@dataclasses.dataclass
class Hook:
  """An action of the loop that runs after every `every`-th step (and after the last one if at_last).

  `fn(run)` may return a dict of metrics for this step's row. `reads_state`: the action uses the
  state the step produced, so that step is checked for divergence before it runs.
  """
  name: str
  fn: Callable[['Run'], Any]
  every: int
  at_last: bool = True
  reads_state: bool = True
  steps: frozenset = frozenset()   # steps it also runs after (train.ckpt_steps)

  def due(self, step: int, last: int) -> bool:
    return ((self.every > 0 and step % self.every == 0) or (self.at_last and step == last)
            or step in self.steps)


class Hooks:
  """The loop's periodic actions, registered in one place (`_periodic_actions`), run in the order added.

  Every step is checked for divergence one step late, so the host does not wait for the device
  between steps; a step whose actions read its state (log, eval, checkpoint) is checked first.
  """

  def __init__(self):
    self.hooks: list[Hook] = []

  def add(self, name: str, fn: Callable[['Run'], Any], *, every: int, at_last: bool = True,
          reads_state: bool = True, steps=()) -> None:
    self.hooks.append(Hook(name, fn, int(every), at_last, reads_state, frozenset(int(x) for x in steps)))

  def due(self, step: int, last: int) -> list[Hook]:
    return [h for h in self.hooks if h.due(step, last)]


# ----------------------------------------------------------------------------- the run's state
@dataclasses.dataclass
class Data:
  data_dir: str
  tokenizer: Any
  train_loader: Any
  bytes_per_token: float
  local_batch: int


@dataclasses.dataclass
class Run:
  """What the phases and periodic actions of one run share (one object instead of closures)."""
  cfg: Any
  setup: Setup
  workdir: pathlib.Path
  stop: Any
  log: Callable
  is_main: bool
  debug: bool = False
  quiet: bool = False
  data: Data | None = None
  state: Any = None
  start_step: int = 0
  step: int = 0
  mgr: Any = None
  writer: Any = None
  progress: Any = None
  loss: float = float('nan')    # the last train loss checked finite
  metrics: Any = None           # the last step's metrics (device arrays)
  unchecked: list = dataclasses.field(default_factory=list)   # (step, metrics) not yet checked finite
  stopped: bool = False         # a stop signal: saved, the loop ends
  eval_loss: float | None = None
  eval_bpb: float | None = None
  eval_sets: list = dataclasses.field(default_factory=list)   # tagged eval sets (scaling/train/evalsets.py)
  eval_row: dict = dataclasses.field(default_factory=dict)    # their last metrics, eval/<tag>/bpb ...
  eval_step: Any = None
  t_start: float = 0.0              # when train() started (summary.json's wall_s)
  eval_skipped: str | None = None   # why the training corpus's evals are skipped (data.val_fraction=0)
  end_error: str | None = None      # the end-of-run work that failed (the run itself is finished and saved)
  saved_step: int | None = None
  t_compile: float | None = None
  timer: Any = None
  shown: dict = dataclasses.field(default_factory=dict)   # the progress bar's last throughput figures
  allow_change: frozenset = frozenset()   # the changes of the math this resume may make (run_history.allowed)
  segments: list | None = None            # the run's earlier segments (run_history.begin; None: not read)
  tps_seen: list = dataclasses.field(default_factory=list)   # this segment's logged tokens/s

  @property
  def tokens_per_step(self) -> int:
    return self.cfg.train.batch_size * self.cfg.model.seq_len


class StepTimer:
  """Seconds per step over the steps since the last mark; the compile step and evals are not counted."""

  def __init__(self):
    self.t = self.step = None

  def mark(self, step: int) -> None:
    self.t, self.step = time.time(), step

  def seconds_per_step(self, step: int) -> float | None:
    """None when no whole step ran since the mark (e.g. the compile step alone)."""
    if self.t is None or step <= self.step:
      return None
    dt = (time.time() - self.t) / (step - self.step)
    self.mark(step)
    return dt


def check_finite(run: Run, before: int | None = None) -> None:
  """The one divergence check, of every dispatched step (before `before`, if given) not yet checked.

  Sets run.loss; raises TrainError naming the first step whose loss or gradient norm is not finite.
  The gradient norm too: a NaN gradient with a still-finite loss already wrote NaN params into this
  step's state, which must not be checkpointed as the "last good" one.
  """
  while run.unchecked and (before is None or run.unchecked[0][0] < before):
    step, metrics = run.unchecked.pop(0)
    loss, grad_norm = float(metrics['loss']), float(metrics['grad_norm'])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      what = f'loss is {loss}' if not math.isfinite(loss) else f'gradient norm is {grad_norm} (loss {loss:.4g})'
      raise TrainError(f'{what} at step {step}: training diverged. The last good checkpoint is kept in '
                       f'{run.workdir / checkpoint.CKPT_DIR}; lower train.lr or raise warmup, then re-run to resume.')
    run.loss = loss
