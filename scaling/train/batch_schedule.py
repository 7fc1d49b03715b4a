"""A run's batch schedule (train.batch_schedule, scaling/config/batch.py) in the engine: the loader that changes the
global batch at the scheduled steps, the lr rule, the checks of the mesh and of a checkpoint's data position, and
the accounting (tokens_seen, throughput) across a change.

    ScheduledLoader: at step s the schedule's batch B_s, read from global window position windows_before(s) of the
    corpus order (scaling/data/loader.py TrainLoader.at_position): no window repeated or skipped at a change. Its
    state is the inner TrainLoader's, whose 'start' and 'position' record where it is; a checkpoint's state gives
    back the step (the one step whose position it is) and the batch of that step.
    lr_multiplier: the factor of train.batch_lr_rule by step (optim.schedule multiplies the lr schedule by it).
    check_mesh: every scheduled batch splits over the microbatches, the data-parallel devices and the processes
    (else a MeshError naming the step), before any compile.
    check_data_position: a checkpoint (resume, or a branch's parent) must sit at the window position this config's
    schedule gives its step, else a CheckpointError naming both.

The jitted step (scaling/train/step.py) is shape-polymorphic in the batch: jax.jit keeps one executable per
distinct batch shape, so each batch size of the schedule compiles once, on its first step (after_change times it
and leaves it out of the throughput).
"""

from __future__ import annotations

import time

from scaling.config import batch as batch_lib
from scaling.data.loader import state_position
from scaling.data.tokenizer import DataError


def is_scheduled(cfg) -> bool:
  return batch_lib.is_scheduled(cfg.train)


def schedule_of(cfg) -> batch_lib.BatchSchedule:
  return batch_lib.of(cfg.train)


# ----------------------------------------------------------------------------- the loader
class ScheduledLoader:
  """Train batches at the schedule's global batch of each step (see the module docstring); `changed` is
  (step index, old global batch, new global batch) after a next() that changed the batch, else None."""

  def __init__(self, loader, sched: batch_lib.BatchSchedule, process_count: int):
    if not hasattr(loader, 'at_position'):
      raise DataError(f'train.batch_schedule needs the plain train loader (this one is {type(loader).__name__}: a '
                      f'data mixture?); train without the schedule or without the mixture')
    self.sched, self.nproc = sched, int(process_count)
    self.loader, self.step, self.changed = loader, 0, None
    if loader.batch_size * self.nproc != sched.batch_at(0) or loader.start != 0:
      raise DataError(f'the first train loader takes {loader.batch_size * self.nproc} sequences from window '
                      f'{loader.start}; the schedule starts with {sched.batch_at(0)} from 0')

  def __iter__(self):
    return self

  def _global(self) -> int:
    return self.loader.batch_size * self.nproc

  def __next__(self):
    want = self.sched.batch_at(self.step)
    self.changed = None
    if want != self._global():
      at = self.sched.windows_before(self.step)
      if self.loader.position != at:   # the batches so far were the schedule's: cannot happen unless it is broken
        raise DataError(f'batch schedule: the loader is at window {self.loader.position} before step {self.step}, '
                        f'the schedule at {at}')
      self.changed = (self.step, self._global(), want)
      self.loader = self.loader.at_position(at, want // self.nproc)
    out = next(self.loader)
    self.step += 1
    return out

  def get_state(self) -> dict:
    return self.loader.get_state()

  def set_state(self, state: dict) -> None:
    """A checkpoint's state (this run's, or a branch's parent's): the step is the one whose window position the
    state holds (check_data_position checked it before any compile); the loader continues there at its batch."""
    pos = state_position(state)
    step = self.sched.step_at_windows(pos)
    if step is None:
      raise DataError(f'the checkpoint\'s data position (window {pos}) falls inside a step of the batch schedule '
                      f'{self.sched.describe()}: it was trained with another schedule')
    saved = int(state['batch_size']) * int(state.get('process_count', 1))
    if saved % self.nproc:
      raise DataError(f'the checkpoint\'s global batch {saved} does not split over {self.nproc} processes')
    probe = self.loader.at_position(int(state.get('start', 0)), saved // self.nproc)
    probe.set_state(state)   # the settings (seq_len, seed, split, masking) must be the checkpoint's
    want = self.sched.batch_at(step)
    self.loader = probe if want == saved else probe.at_position(pos, want // self.nproc)
    self.step = step


def wrap(cfg, loader, process_count: int, log=print):
  """The run's train loader: `loader` itself without a schedule, else a ScheduledLoader around it."""
  if not is_scheduled(cfg):
    return loader
  sched = schedule_of(cfg)
  log(f'batch schedule: global batch {sched.describe(cfg.model.seq_len)}; lr x '
      f'{ {"sqrt": "sqrt(B / batch_size)", "linear": "B / batch_size", "unchanged": "1"}[rule_of(cfg)]} '
      f'(train.batch_lr_rule={rule_of(cfg)})')
  return ScheduledLoader(loader, sched, process_count)


def rule_of(cfg) -> str:
  return cfg.train.get('batch_lr_rule', 'sqrt')


# ----------------------------------------------------------------------------- the lr rule
def lr_multiplier(train_cfg):
  """count -> the lr factor of step index `count` under train.batch_lr_rule (an optax-style schedule), or None
  when every step keeps the schedule's lr (no schedule, or the rule 'unchanged')."""
  if not batch_lib.is_scheduled(train_cfg):
    return None
  rule = train_cfg.get('batch_lr_rule', 'sqrt')
  sched = batch_lib.of(train_cfg)
  factors = [sched.lr_factor(s, rule) for s in sched.starts]
  if all(f == 1.0 for f in factors):
    return None
  import jax.numpy as jnp
  starts = jnp.asarray(sched.starts[1:], jnp.int32)
  table = jnp.asarray(factors, jnp.float32)

  def fn(count):
    return table[jnp.searchsorted(starts, jnp.asarray(count, jnp.int32), side='right')]
  return fn


def with_lr_rule(base, train_cfg):
  """The lr schedule `base` times the batch rule's factor of each step (base itself when there is none)."""
  mult = lr_multiplier(train_cfg)
  if mult is None:
    return base
  return lambda count: base(count) * mult(count)


# ----------------------------------------------------------------------------- checks before any compile
def check_mesh(cfg, mesh, process_count: int | None = None) -> None:
  """Every batch of the schedule splits over train.microbatches, the data-parallel devices and the processes;
  a MeshError naming the step and the batch otherwise."""
  if not is_scheduled(cfg):
    return
  from scaling.train import sharding
  for step, b in schedule_of(cfg).changes:
    try:
      sharding.check_batch(b, cfg.train.microbatches, mesh)
      if process_count is not None and b % process_count:
        raise sharding.MeshError(f'{b} sequences do not split over {process_count} processes')
    except sharding.MeshError as e:
      raise sharding.MeshError(f'train.batch_schedule: the batch {b} of step {step}: {e}') from None


def expected_batch(cfg, step: int) -> int:
  """The global batch a checkpoint of `step` was saved with under this config: that of its last step."""
  return schedule_of(cfg).batch_at(max(int(step) - 1, 0)) if is_scheduled(cfg) else cfg.train.batch_size


def check_data_position(data_state: dict | None, cfg, step: int, where) -> None:
  """The checkpoint's data position must be the one this config's schedule gives `step` (windows_before(step));
  a CheckpointError naming both (and the schedule a branch with another batch needs) otherwise."""
  from scaling.train.checkpoint import CheckpointError
  if not data_state or 'grain' not in data_state or 'batch_size' not in data_state:
    return
  if not is_scheduled(cfg) and not int(data_state.get('start', 0)):   # one batch on both sides: check_data_state's
    return
  pos = state_position(data_state)
  want = schedule_of(cfg).windows_before(step)
  if pos == want:
    return
  b = cfg.train.batch_size
  raise CheckpointError(
      f'{where}: the checkpoint of step {step} is at window {pos:,} of the data order, but this config\'s batch '
      f'schedule ({schedule_of(cfg).describe()}) puts step {step} at window {want:,}: the steps before it were '
      f'trained with other batches. Give this run the batch schedule of the checkpoint up to step {step} (a branch '
      f'with another batch k x B from step {step} on: train.batch_size=B, train.batch_schedule=\'{step}:kB\'); '
      f'now train.batch_size={b}, train.batch_schedule={cfg.train.get("batch_schedule", "")!r}')


# ----------------------------------------------------------------------------- accounting in the loop
def tokens_seen(run, step: int) -> int:
  """Training tokens of the first `step` steps of the run (its schedule's batches)."""
  if not is_scheduled(run.cfg):
    return step * run.tokens_per_step
  return schedule_of(run.cfg).tokens_seen(step, run.cfg.model.seq_len)


def tokens_per_step_between(run, a: int, b: int) -> float:
  """Mean tokens per step over steps a..b-1 (the throughput's numerator over a timed interval)."""
  if not is_scheduled(run.cfg) or b <= a:
    return run.tokens_per_step
  return (tokens_seen(run, b) - tokens_seen(run, a)) / (b - a)


def log_fields(run) -> dict:
  """The accounting of a metrics row: tokens_seen, and under a schedule the batch of the step just taken."""
  row = {'tokens_seen': tokens_seen(run, run.step)}
  if is_scheduled(run.cfg):
    row['train/batch_size'] = schedule_of(run.cfg).batch_at(run.step - 1)
  return row


def after_change(run, t0: float) -> None:
  """The first step at a new batch (its compile, once per batch size): timed, said, and left out of the
  throughput (the timer starts again after it)."""
  import jax
  step, old, new = run.data.train_loader.changed
  jax.block_until_ready(run.metrics)
  dt = time.time() - t0
  run.t_compile = (run.t_compile or 0.0) + dt
  say = run.progress.write if run.progress is not None else run.log
  say(f'step {step + 1}: global batch {old} -> {new} (train.batch_schedule); its first step (compile) {dt:.1f}s')
  run.timer.mark(run.step + 1)
