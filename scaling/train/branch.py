"""Cooldown branches: a run that starts from another run's checkpoint (`train.init_from`).

`train.init_from = 'WORKDIR[:STEP]'` names a parent run's workdir and one of its
checkpoint steps (default: its latest). A fresh branch restores the parent's
params, optimizer state (Adam moments and step count) and data iterator position
from that step, then trains on with its own schedule and its own workdir. With a
WSD schedule whose stable phase ends at the fork step (train.steps = STEP +
train.decay_steps), a branch is step for step the run a from-scratch WSD of
train.steps would have been, if the parent ran the same stable lr, seed and data
order (tests/test_branch.py): that is what makes one stable run per model size
serve several token budgets (scaling/launch/sweep.py `branches`).

A relative WORKDIR is taken from the branch's own workdir, as a symlink's target
is: a sweep writes '../<parent hash>:STEP', which names the sibling run under
ROOT/runs/ wherever the sweep root is mounted.

Everything here runs before any compile: a missing workdir or step, a damaged
step, another model or other data settings are a CheckpointError naming the
problem and the fix. Once the branch's own workdir has a checkpoint it resumes
from that (an idempotent restart) and the parent is not read again. The parent's
workdir is only read, never changed.
"""

from __future__ import annotations

import dataclasses
import pathlib

from scaling.config.load import parse_init_from  # the syntax is config's
from scaling.train import checkpoint
from scaling.train.checkpoint import CheckpointError


class BranchError(CheckpointError):
  """train.init_from names something a branch cannot start from; the message says what and the fix."""


@dataclasses.dataclass(frozen=True)
class Source:
  """The checkpoint a branch starts from."""
  workdir: pathlib.Path
  step: int


def resolve_workdir(path: str, own_workdir) -> pathlib.Path:
  """A relative WORKDIR is taken from the branch's own workdir (as a symlink target is)."""
  p = pathlib.Path(path).expanduser()
  return p if p.is_absolute() else (pathlib.Path(own_workdir).absolute() / p).resolve()


def parent_of(cfg) -> tuple[str, int | None] | None:
  """(parent WORKDIR as written, STEP) of a branch config, or None when train.init_from is unset."""
  spec = cfg.train.get('init_from', '') if 'train' in cfg else ''
  return parse_init_from(spec) if spec else None


def _steps(workdir: pathlib.Path) -> list[int]:
  return sorted(checkpoint._committed_steps(workdir / checkpoint.CKPT_DIR))   # noqa: SLF001 -- same package


def _incomplete(step_dir: pathlib.Path) -> str | None:
  """Why a committed step cannot be a branch's source (a missing item or commit marker, a file that is not as
  saved), or None.

  Every process checks the same files, so gets the same answer. A step with a manifest has every file checked
  against it (checkpoint.verify_sums: flipped bytes, a truncated or lost file); one saved before checksums
  existed gets the cheap check it always had (a damaged array then fails the restore).
  """
  for d in (step_dir, *(step_dir / item for item in checkpoint.ITEMS)):
    if not (d / checkpoint.COMMIT_MARKER).is_file():
      return f'no {checkpoint.COMMIT_MARKER} in {d}'
  bad = checkpoint.verify_sums(step_dir)
  return f'{step_dir}/{bad[1]}' if bad else None


def _newest_complete(parent: pathlib.Path, steps: list[int], what: str, log) -> int:
  """The newest of `steps` that _incomplete passes (an init_from that names no step); a newer damaged one is
  skipped with one line, naming it and why."""
  tried = []
  for s in sorted(steps, reverse=True):
    bad = _incomplete(parent / checkpoint.CKPT_DIR / str(s))
    if bad is None:
      if tried:
        (log or _main_print)(f'branch: {what} names no step; the parent\'s newest intact checkpoint is step {s} '
                             f'(newer damaged, skipped: {"; ".join(tried)})')
      return s
    tried.append(f'step {s}: {bad}')
  raise BranchError(f'{what}: no intact checkpoint in {parent / checkpoint.CKPT_DIR} ({"; ".join(tried)}). Re-run '
                    f'the parent, or restore its files.')


def _main_print(line: str) -> None:
  import jax
  if jax.process_index() == 0:
    print(line, flush=True)


def find_source(cfg, own_workdir, log=None) -> Source:
  """The parent's workdir and step, checked to exist and restore completely (nothing is changed there). With no
  STEP in init_from: the parent's newest intact step (a newer damaged one is skipped, one line on `log`); a
  named STEP that is damaged is refused (another step would be another experiment)."""
  path, step = parse_init_from(cfg.train.init_from)
  parent = resolve_workdir(path, own_workdir)
  what = f'train.init_from={cfg.train.init_from!r}'
  if not parent.is_dir():
    raise BranchError(f'{what}: the parent workdir {parent} does not exist. Train the parent first (a sweep '
                      f'runs it before its branches), or fix the path (a relative one is taken from {own_workdir}).')
  steps = _steps(parent)
  if not steps:
    raise BranchError(f'{what}: {parent / checkpoint.CKPT_DIR} holds no checkpoint. Train the parent past the '
                      f'fork step first.')
  if step is None:
    step = _newest_complete(parent, steps, what, log)
  elif step not in steps:
    raise BranchError(f'{what}: the parent has no checkpoint of step {step} (it has {steps}). Fork at one of '
                      f'those, or re-run the parent with {step} in train.ckpt_steps (saved and kept; '
                      f'scaling/launch/sweep.py branches() sets it).')
  elif (bad := _incomplete(parent / checkpoint.CKPT_DIR / str(step))) is not None:
    state = 'incomplete' if bad.startswith('no ') else 'damaged'
    raise BranchError(f'{what}: the parent checkpoint of step {step} is {state} ({bad}). Re-run the parent '
                      f'(it resumes from its newest intact step and saves step {step} again), or fork elsewhere.')
  from scaling.config.load import train_steps
  if train_steps(cfg) <= step:
    raise BranchError(f'{what}: the branch trains {train_steps(cfg)} steps in all, not more than the fork step '
                      f'{step}: nothing to train. Set train.steps = {step} + the decay length.')
  return Source(parent, step)


def check_source(src: Source, cfg, dims_dict: dict) -> None:
  """The parent's checkpoint must be of this model and these data settings (else other params or batches)."""
  mgr = _reader(src.workdir)
  try:
    meta = checkpoint.read_meta(mgr, src.step)
    data_state = checkpoint.read_meta(mgr, src.step, 'data')
  finally:
    mgr.close()
  where = f'{src.workdir} (train.init_from)'
  checkpoint.check_compatible(meta, dims_dict, where)
  if data_state and 'batch_size' in data_state:   # the state counts global batches
    data_state = dict(data_state, global_batch_size=data_state['batch_size'] * data_state.get('process_count', 1))
  # a branch with another batch: train.batch_schedule='FORK:kB' (scaling/config/batch.py)
  from scaling.train import batch_schedule
  checkpoint.check_data_state(
      data_state or {}, dict(seq_len=cfg.model.seq_len, global_batch_size=batch_schedule.expected_batch(cfg, src.step),
                             seed=cfg.train.seed, document_masking=cfg.data.document_masking), where)
  batch_schedule.check_data_position(data_state, cfg, src.step, where)


def _reader(workdir: pathlib.Path):
  """A CheckpointManager that only reads (no retention options: it never deletes a step of the parent)."""
  import orbax.checkpoint as ocp
  return ocp.CheckpointManager((workdir / checkpoint.CKPT_DIR).absolute(), item_names=checkpoint.ITEMS)


def prepare(cfg, own_workdir, dims_dict: dict, log=print) -> Source | None:
  """Before compiling a fresh run: its checked branch source, or None when train.init_from is unset."""
  if not cfg.train.get('init_from', ''):
    return None
  src = find_source(cfg, own_workdir, log)
  check_source(src, cfg, dims_dict)
  log(f'branch: starting from {src.workdir / checkpoint.CKPT_DIR / str(src.step)} (train.init_from)')
  note = schedule_note(src, cfg)
  if note:
    log(note)
  return src


def schedule_note(src: Source, cfg) -> str | None:
  """A note when the parent's lr before the fork is not this run's (then the branch is no from-scratch run
  of its schedule, which may be meant: a branch with another lr); None when they agree or are unknown."""
  import numpy as np

  from scaling.config.load import from_json, train_steps
  from scaling.train.optim import schedule
  path = src.workdir / 'config.json'
  if not path.is_file():
    return None
  parent = from_json(path)
  steps = np.arange(src.step)
  mine = np.asarray(schedule(cfg.train, train_steps(cfg))(steps))
  theirs = np.asarray(schedule(parent.train, train_steps(parent))(steps))
  bad = np.flatnonzero(~np.isclose(mine, theirs, rtol=1e-6, atol=0))
  if not bad.size:
    return None
  k = int(bad[0])
  return (f'note: the parent trained step {k + 1} at lr {float(theirs[k]):.4g}, this run\'s schedule gives '
          f'{float(mine[k]):.4g}: before the fork ({src.step}) the schedules differ, so this branch is not the '
          f'from-scratch run of its own schedule')


def restore(src: Source, state: dict) -> dict:
  """Params, optimizer state and data state of the parent's step, onto the shardings of `state`."""
  mgr = _reader(src.workdir)
  try:
    return checkpoint.restore(mgr, src.step, params_target=state['params'], opt_target=state['opt_state'])
  finally:
    mgr.close()


def start(state: dict, src: Source, *, mesh, train_loader, total_steps: int, log=print) -> dict:
  """The train state of a fresh branch (scaling/train/loop.py `_restore_or_init`): the parent's step restored
  onto `state`'s shardings and the data iterator moved to the parent's position. The caller's run starts
  counting at src.step (the fork)."""
  import jax
  import jax.numpy as jnp

  from scaling.train import sharding
  restored = restore(src, state)
  state = dict(params=restored['params'], opt_state=restored['opt_state'],
               step=jax.device_put(jnp.asarray(src.step, jnp.int32), sharding.replicated(mesh)))
  if restored['data']:
    train_loader.set_state(restored['data'])
  log(f'branch: restored step {src.step} of {src.workdir}; training steps {src.step + 1}..'
      f'{total_steps} with this run\'s schedule')
  return state
