"""The learning rate of every optimizer update of a run, rebuilt from its config with numpy (no jax).

This is a second, independent code path for scaling/train/optim.py `schedule` (optax): tests/test_curves.py
compares the two on every schedule, shape and edge case. The rules (optim.py's docstring):

  warmup   linear from 0 to lr over w = min(warmup_steps, steps - 1) counts; none when w = 0;
  cosine   after warmup, lr * (r + (1 - r) (1 + cos(pi c / R)) / 2), c = count - w capped at R = steps - w;
  wsd      lr until the decay, then lr -> lr * r over D counts (D = decay_steps when > 0, else
           round(decay_fraction * R); 1 <= D <= R): linear, cosine (half period) or 1-sqrt
           (final + (lr - final) (1 - sqrt(c / D)));
  constant lr after warmup.

Indexing: the update with optimizer count c (0-based) is update k = c + 1; `Schedule.eta[k - 1]` is its lr. The
loss a run logs as `train/loss` at step s is of the parameters after s - 1 updates (the forward pass of step s);
an eval at step s sees s updates (scaling/train/loop.py). A cooldown branch (train.init_from) trained its first
`fork` updates in its parent, at the parent's lr, and counts on from the fork with its own schedule.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

SCHEDULES = ('cosine', 'wsd', 'constant')        # as scaling/base/names.py SCHEDULES
DECAY_SHAPES = ('linear', 'cosine', '1-sqrt')    # as scaling/base/names.py DECAY_SHAPES


class CurveError(ValueError):
  """A run, a schedule or a fit cannot give what was asked; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The lr of updates 1..N (eta[k - 1] is update k's) and the number of warmup updates (the laws start after)."""
  eta: np.ndarray
  warmup: int
  label: str = ''

  @property
  def total(self) -> int:
    return int(len(self.eta))

  @property
  def peak(self) -> float:
    return float(np.max(self.eta)) if len(self.eta) else 0.0


def _get(train: Mapping, key: str, default=None):
  try:
    v = train[key]
  except (KeyError, AttributeError):
    return default
  return default if v is None else v


def warmup_counts(train: Mapping, total_steps: int) -> int:
  """w = min(train.warmup_steps, total_steps - 1), at least 0 (optim.schedule's clip)."""
  return min(int(_get(train, 'warmup_steps', 0)), max(int(total_steps) - 1, 0))


def wsd_decay_counts(train: Mapping, rest: int) -> int:
  """The WSD decay's length: train.decay_steps when > 0, else round(decay_fraction * rest); within [1, rest]."""
  d = int(_get(train, 'decay_steps', 0) or 0)
  decay = d if d > 0 else int(round(rest * float(_get(train, 'decay_fraction', 0.2))))
  return min(max(decay, 1), rest)


def _decay(shape: str, peak: float, final: float, steps: int, c: np.ndarray) -> np.ndarray:
  """peak -> final over `steps` counts c (clipped to [0, steps]), then final."""
  frac = np.clip(c / steps, 0.0, 1.0)
  if shape == 'linear':
    return peak + (final - peak) * frac
  if shape == 'cosine':
    r = final / peak if peak else 0.0
    return peak * (r + (1.0 - r) * 0.5 * (1.0 + np.cos(np.pi * frac)))
  if shape == '1-sqrt':
    return final + (peak - final) * (1.0 - np.sqrt(frac))
  raise CurveError(f'unknown decay shape {shape!r}; choose one of {", ".join(DECAY_SHAPES)}')


def lr_at(train: Mapping, total_steps: int, counts) -> np.ndarray:
  """The lr at optimizer counts `counts` (0-based) of a run of `total_steps` with this train section."""
  name = str(_get(train, 'schedule', 'cosine'))
  if name not in SCHEDULES:
    raise CurveError(f'unknown train.schedule {name!r}; choose one of {", ".join(SCHEDULES)}')
  peak = float(_get(train, 'lr'))
  ratio = float(_get(train, 'min_lr_ratio', 0.0))
  c = np.asarray(counts, dtype=np.float64)
  warm = warmup_counts(train, total_steps)
  rest = max(int(total_steps) - warm, 1)
  m = c - warm                                   # the count of the schedule after warmup
  if name == 'cosine':
    frac = np.minimum(m, rest) / rest
    main = peak * (ratio + (1.0 - ratio) * 0.5 * (1.0 + np.cos(np.pi * frac)))
  elif name == 'wsd':
    decay = wsd_decay_counts(train, rest)
    shape = str(_get(train, 'decay_shape', 'linear'))
    main = np.where(m < rest - decay, peak, _decay(shape, peak, peak * ratio, decay, m - (rest - decay)))
  else:
    main = np.full_like(c, peak)
  if warm == 0:
    return main
  return np.where(c < warm, peak * np.clip(c, 0, warm) / warm, main)


def schedule_of(train: Mapping, total_steps: int, label: str = '') -> Schedule:
  """The Schedule of a run trained from scratch for total_steps with this train section."""
  total_steps = int(total_steps)
  if total_steps < 1:
    raise CurveError(f'a schedule needs at least 1 step, got {total_steps}')
  eta = lr_at(train, total_steps, np.arange(total_steps))
  return Schedule(eta=eta, warmup=warmup_counts(train, total_steps), label=label or describe(train, total_steps))


def branch_schedule(parent_train: Mapping, parent_total: int, fork: int, own_train: Mapping, own_total: int,
                    label: str = '') -> Schedule:
  """A cooldown branch: updates 1..fork at the parent's lr (its schedule of parent_total steps), then updates
  fork+1..own_total at the branch's own schedule (own_total steps, counting from the fork)."""
  fork, own_total = int(fork), int(own_total)
  if not 0 < fork < own_total:
    raise CurveError(f'a branch forked at step {fork} must train past it: train.steps is {own_total}')
  eta = np.concatenate([lr_at(parent_train, parent_total, np.arange(fork)),
                        lr_at(own_train, own_total, np.arange(fork, own_total))])
  return Schedule(eta=eta, warmup=warmup_counts(parent_train, parent_total),
                  label=label or f'{describe(own_train, own_total)} from step {fork}')


def describe(train: Mapping, total_steps: int) -> str:
  """'wsd 1024 steps, decay 205 1-sqrt to 0.1x, warmup 100' and the like."""
  name = str(_get(train, 'schedule', 'cosine'))
  warm = warmup_counts(train, total_steps)
  ratio = float(_get(train, 'min_lr_ratio', 0.0))
  if name == 'wsd':
    d = wsd_decay_counts(train, max(total_steps - warm, 1))
    body = f'wsd {total_steps} steps, decay {d} {_get(train, "decay_shape", "linear")} to {ratio:g}x'
  elif name == 'cosine':
    body = f'cosine {total_steps} steps to {ratio:g}x'
  else:
    body = f'constant {total_steps} steps'
  return f'{body}, warmup {warm}, lr {float(_get(train, "lr")):.4g}'


def post_warmup_drops(s: Schedule) -> np.ndarray:
  """[N] the lr decrease of each update after warmup: d[k - 1] = eta_{k-1} - eta_k for k > w + 1, with
  eta_w+1's predecessor taken as itself (the laws' eta_0 is the lr where the post-warmup phase starts), and 0
  in the warmup. Negative where the lr rises again."""
  d = np.zeros(s.total)
  start = min(s.warmup + 1, s.total)             # index of update w + 2 (0-based: k - 1)
  d[start:] = s.eta[start - 1:-1] - s.eta[start:] if start < s.total else 0.0
  return d


def anneals(s: Schedule, upto: int | None = None, tol: float = 0.1) -> bool:
  """Whether the lr falls after warmup (up to update `upto`) by more than `tol` of its peak in all."""
  d = post_warmup_drops(s)[:upto]
  peak = s.peak
  return bool(peak > 0 and np.clip(d, 0, None).sum() > tol * peak)


def first_drop(s: Schedule) -> int | None:
  """The update k (1-based) of the first lr decrease after warmup, or None."""
  idx = np.flatnonzero(post_warmup_drops(s) > 1e-12 * max(s.peak, 1e-30))
  return int(idx[0]) + 1 if idx.size else None


def is_finite_positive(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
