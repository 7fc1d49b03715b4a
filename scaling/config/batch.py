"""Batch schedules (`train.batch_schedule`, `train.batch_lr_rule`): the global batch as a function of the step.

    train.batch_size = 8, train.batch_schedule = '100:16,300:32'
        steps 1..100 (0-based step indices 0..99) take 8 sequences, steps 101..300 take 16, the rest 32

A change 'S:B' means: once S steps are done, every later step takes B sequences (the batch of step index S
onward). The data position counts windows (sequences of seq_len + 1 tokens, scaling/data/loader.py), not
steps: before step index s the run has consumed `windows_before(s)` sequences of the corpus order, so a
change neither repeats nor skips one, and tokens_seen = windows_before(step) x seq_len exactly.

`train.batch_lr_rule` scales the learning rate of a step by its batch r = B_step / train.batch_size:
unchanged (x 1), linear (x r; Goyal et al. 2017, SGD) or sqrt (x sqrt(r); the square-root rule for Adam,
Malladi et al. 2022). A step at train.batch_size keeps the schedule's lr.

A cooldown-style branch with another batch (`scaling cbs`, scaling/analysis/cbs.py) is a branch whose schedule
changes at the fork: batch_size = the parent's B, batch_schedule = 'FORK:kB'. Before the fork the schedule is
the parent's, so the data position at the fork matches the parent's checkpoint exactly.

Pure Python (no jax, no numpy): the config loader, the launcher's sweep files and the accounting use it.
"""

from __future__ import annotations

import bisect
import dataclasses
import math

from scaling.base.names import BATCH_LR_RULES


class BatchScheduleError(ValueError):
  """A train.batch_schedule that cannot work; the message names the field, the step and the fix."""


@dataclasses.dataclass(frozen=True)
class BatchSchedule:
  """The global batch of every step: `base` from step 0, then each (step, batch) of `changes` from that step."""
  base: int
  changes: tuple = ()

  # --------------------------------------------------------------------------- the batch of a step
  @property
  def starts(self) -> list[int]:
    return [0] + [s for s, _ in self.changes]

  @property
  def batches(self) -> list[int]:
    return [self.base] + [b for _, b in self.changes]

  @property
  def trivial(self) -> bool:
    return not self.changes

  def batch_at(self, step: int) -> int:
    """The global batch of step index `step` (0-based: the (step+1)-th optimizer step)."""
    return self.batches[bisect.bisect_right(self.starts, int(step)) - 1]

  def phases(self, total: int | None = None) -> list[tuple[int, int, int]]:
    """(first step index, end step index (exclusive; None: open), batch) of each phase."""
    starts, batches = self.starts, self.batches
    ends = starts[1:] + [total]
    return [(a, b, B) for a, b, B in zip(starts, ends, batches)]

  # --------------------------------------------------------------------------- data position and tokens
  def windows_before(self, step: int) -> int:
    """Sequences consumed by the first `step` steps (the data position, in windows, before step index `step`)."""
    step, n = int(step), 0
    for a, b, B in self.phases():
      if step <= a:
        break
      n += (min(step, b) - a if b is not None else step - a) * B
    return n

  def tokens_seen(self, step: int, seq_len: int) -> int:
    """Training tokens (positions predicted) of the first `step` steps."""
    return self.windows_before(step) * int(seq_len)

  def step_at_windows(self, windows: int) -> int | None:
    """The step s with windows_before(s) == windows, or None when that position falls inside a step."""
    s = self.steps_within_windows(windows)
    return s if self.windows_before(s) == windows else None

  def steps_within_windows(self, windows: int) -> int:
    """The most steps whose sequences fit in `windows` (windows_before(s) <= windows)."""
    windows, done = int(windows), 0
    for a, b, B in self.phases():
      if b is None or self.windows_before(b) > windows:
        return a + (windows - self.windows_before(a)) // B
      done = b
    return done

  # --------------------------------------------------------------------------- the lr rule
  def lr_factor(self, step: int, rule: str) -> float:
    return lr_factor(self.batch_at(step) / self.base, rule)

  def describe(self, seq_len: int | None = None) -> str:
    """'8 -> 16 at step 100 -> 32 at step 300' (and the tokens of each change with seq_len)."""
    out = str(self.base)
    for s, b in self.changes:
      at = f' ({self.tokens_seen(s, seq_len):,} tokens)' if seq_len else ''
      out += f' -> {b} at step {s}{at}'
    return out


def lr_factor(ratio: float, rule: str) -> float:
  """The lr multiplier of a batch `ratio` times train.batch_size under `rule` (unchanged, linear, sqrt)."""
  if rule == 'unchanged':
    return 1.0
  if rule == 'linear':
    return float(ratio)
  if rule == 'sqrt':
    return math.sqrt(ratio)
  raise BatchScheduleError(f'train.batch_lr_rule={rule!r} is unknown; choose one of {", ".join(BATCH_LR_RULES)}')


# ----------------------------------------------------------------------------- parsing
def parse(spec: str, base: int) -> BatchSchedule:
  """'STEP:BATCH,STEP:BATCH,...' (steps increasing, each >= 1) after train.batch_size = `base`; '' = no change."""
  if not isinstance(spec, str):
    raise BatchScheduleError(f"train.batch_schedule must be a string 'STEP:BATCH,...' (e.g. '100:16,300:32'), "
                             f'got {spec!r}')
  changes, last_step, last_batch = [], 0, int(base)
  for part in (p.strip() for p in spec.split(',')):
    if not part:
      continue
    step, sep, batch = part.partition(':')
    if not sep or not step.strip().isdigit() or not batch.strip().isdigit():
      raise BatchScheduleError(f"train.batch_schedule={spec!r}: {part!r} is not 'STEP:BATCH' (two positive "
                               f"integers, e.g. '100:16': from step 100 on, 16 sequences per step)")
    step, batch = int(step), int(batch)
    if step < 1 or batch < 1:
      raise BatchScheduleError(f'train.batch_schedule={spec!r}: {part!r}: the step must be >= 1 (the batch of '
                               f'step 0 is train.batch_size) and the batch >= 1')
    if step <= last_step:
      raise BatchScheduleError(f'train.batch_schedule={spec!r}: the steps must increase ({step} after {last_step})')
    if batch == last_batch:
      raise BatchScheduleError(f'train.batch_schedule={spec!r}: step {step} keeps the batch at {batch}; '
                               f'list only the steps where it changes')
    changes.append((step, batch))
    last_step, last_batch = step, batch
  return BatchSchedule(int(base), tuple(changes))


def of(train_cfg) -> BatchSchedule:
  """The schedule of a train section (ConfigDict or dict); a config without the field has none."""
  get = train_cfg.get
  return parse(get('batch_schedule', '') or '', int(get('batch_size')))


def is_scheduled(train_cfg) -> bool:
  return bool((train_cfg.get('batch_schedule', '') or '').strip())


def format_spec(changes) -> str:
  """[(step, batch), ...] -> 'STEP:BATCH,...'."""
  return ','.join(f'{int(s)}:{int(b)}' for s, b in changes)


def spec_from_tokens(base: int, seq_len: int, at_tokens) -> str:
  """A schedule whose batch becomes B once T tokens are seen, for each (T, B) of `at_tokens` (increasing T): the
  change step is the first step boundary at or after T tokens under the schedule so far (a ramp set from a
  measured critical batch against tokens)."""
  changes, sched = [], BatchSchedule(int(base))
  for tokens, batch in sorted(at_tokens):
    if batch == sched.batches[-1]:
      continue
    windows = -(-int(tokens) // int(seq_len))
    step = sched.steps_within_windows(windows)
    step += sched.windows_before(step) < windows
    step = max(step, (changes[-1][0] + 1) if changes else 1)
    changes.append((step, int(batch)))
    sched = BatchSchedule(int(base), tuple(changes))
  return format_spec(changes)


# ----------------------------------------------------------------------------- the run's length
def steps_for_tokens(sched: BatchSchedule, tokens: int, seq_len: int) -> int:
  """train.tokens > 0 under a schedule: the most steps whose tokens fit in the budget (at least 1)."""
  return max(1, sched.steps_within_windows(int(tokens) // int(seq_len)))


def validate(train_cfg, total_steps: int, microbatches: int) -> BatchSchedule:
  """Syntax, the lr rule, every change before the last step and every batch divisible by train.microbatches
  (the mesh and the process count are checked where they are known: scaling/train/batch_schedule.py)."""
  rule = train_cfg.get('batch_lr_rule', 'sqrt')
  if rule not in BATCH_LR_RULES:
    raise BatchScheduleError(f'train.batch_lr_rule={rule!r} is unknown; choose one of {", ".join(BATCH_LR_RULES)}')
  sched = of(train_cfg)
  for s, b in sched.changes:
    if s >= total_steps:
      raise BatchScheduleError(f'train.batch_schedule={train_cfg.batch_schedule!r}: the change at step {s} is at '
                               f'or after the last step ({total_steps}); drop it or train longer')
    if b % microbatches:
      raise BatchScheduleError(f'train.batch_schedule: the batch {b} of step {s} does not divide into '
                               f'train.microbatches={microbatches}; make every batch a multiple of it')
  return sched
