"""A batch ramp against the fixed batch (issue #37, arm (c) of configs/sweeps/batch.py): the gradient steps, tokens
and training wall each run needs to reach the fixed-batch run's final loss.

The loss compared is the **smoothed train loss** against tokens seen: the study's runs evaluate only at their end
(configs/sweeps/_common.py CPU_RUN: train.eval_every = 100000), so eval rows cannot locate where a curve crosses a
level; the train loss is logged every train.log_every steps and both runs read the corpus in the same order (the
data position counts sequences), so at equal tokens their train losses average the same text. Each curve is
smoothed by a local linear fit in tokens over +-`window` x the fixed run's tokens, widened to hold at least
MIN_ROWS of its logged rows before its end (at an end the window is one-sided and the line carries the trend to
it, where a moving mean would lag a falling curve). The target is the fixed run's smoothed loss at its last row,
which the fixed run reaches at its last step by definition; the ramp's step to the target is its first logged row
at or below it, interpolated linearly in steps against the previous row (tokens and wall at that step likewise).
The final eval losses (`eval/loss`, the last row of each) are reported beside: the goal asks for an equal or
better loss.

Training wall at a row: the sum of throughput/step_s x the steps since the previous row (evals, compile and
checkpoint waits are not in it; a packed run's step_s is its group's step: compare walls only between runs trained
alike, which the report flags from ROOT/packs).

Interval: a local block bootstrap of each run's residuals about its smoothed curve (blocks of `block` rows drawn
within each phase of constant batch, whose noise differs, from near the block's own place, so that the
smoothing's bias where the curve bends early does not land at the end; residuals divided by sqrt(1 - leverage),
a fitted point's weight in itself, large where the window is one-sided), re-smoothed, the target and the ramp's
crossing redone; a draw in which the ramp never reaches its target counts as -inf % fewer steps (an open end),
never dropped. The goal (>= 25% fewer gradient steps) is **met** when the interval's lower end is >= 25%, **not
met** when its upper end is below 25%, else **not decided**. Synthetic checks (tests/test_batch_optimum.py) put
the 90% interval's coverage near, somewhat under, nominal; seed repeats of both runs would be the stronger interval.

jax-free (numpy).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np

DEFAULT_WINDOW = 0.05      # +- this share of the fixed run's tokens
DEFAULT_BLOCK = 5          # rows per bootstrap block
MIN_ROWS = 10              # the smoothing window holds at least this many rows before the fixed run's end
DEFAULT_DRAWS = 400
GOAL = 0.25                # >= 25% fewer gradient steps
LEVEL = 0.9


class RampError(ValueError):
  """Curves that cannot be compared; the message says why."""


@dataclasses.dataclass
class Curve:
  name: str
  steps: np.ndarray
  tokens: np.ndarray
  loss: np.ndarray        # train loss of each logged row
  wall: np.ndarray        # training wall at each row (s)
  batch: np.ndarray       # the batch of each row (sequences)
  eval_loss: float | None = None
  packed: int = 1         # members of its pack (1: trained alone)


def curve_from_rows(rows: list[dict], name: str = '', batch_size: int = 0) -> Curve:
  """A run's metrics rows (by step) as a Curve: rows with a finite train/loss and tokens_seen."""
  rows = sorted((r for r in rows if isinstance(r.get('train/loss'), (int, float)) and math.isfinite(r['train/loss'])
                 and 'tokens_seen' in r), key=lambda r: r['step'])
  if len(rows) < 3:
    raise RampError(f'{name}: {len(rows)} logged train losses (need >= 3)')
  steps = np.array([r['step'] for r in rows], float)
  dt = np.array([r.get('throughput/step_s', np.nan) for r in rows], float)
  dt = np.where(np.isfinite(dt), dt, np.nanmedian(dt) if np.isfinite(dt).any() else 0.0)
  wall = np.cumsum(dt * np.diff(steps, prepend=0.0))
  batch = np.array([r.get('train/batch_size', batch_size) for r in rows], float)
  ev = [r['eval/loss'] for r in rows if isinstance(r.get('eval/loss'), (int, float))]
  return Curve(name, steps, np.array([r['tokens_seen'] for r in rows], float),
               np.array([r['train/loss'] for r in rows], float), wall, batch, ev[-1] if ev else None)


# ----------------------------------------------------------------------------- smoothing and crossings
def local_linear(x: np.ndarray, y: np.ndarray, h: float, leverage: bool = False):
  """At each x_i, the least-squares line through the points with |x - x_i| <= h, evaluated at x_i (uniform
  weights; O(n) from cumulative sums). A window of one point returns the point. leverage: also each point's
  weight in its own fitted value, h_ii = 1/n + (x_i - mean)^2 / Sxx over its window."""
  x = np.asarray(x, float)
  y = np.asarray(y, float)
  lo = np.searchsorted(x, x - h, side='left')
  hi = np.searchsorted(x, x + h, side='right')
  x0 = x - x.mean()           # centred: the sums stay well conditioned

  def win(v):
    c = np.concatenate([[0.0], np.cumsum(v)])
    return c[hi] - c[lo]
  n, sx, sy, sxx, sxy = win(np.ones_like(x)), win(x0), win(y), win(x0 * x0), win(x0 * y)
  den = n * sxx - sx * sx
  with np.errstate(divide='ignore', invalid='ignore'):
    slope = np.where(den > 1e-12 * np.maximum(n * sxx, 1e-300), (n * sxy - sx * sy) / den, 0.0)
  fitted = (sy - slope * sx) / n + slope * x0
  if not leverage:
    return fitted
  sxx_c = sxx - sx * sx / n
  with np.errstate(divide='ignore', invalid='ignore'):
    lev = 1 / n + np.where(sxx_c > 0, (x0 - sx / n) ** 2 / sxx_c, 0.0)
  return fitted, np.clip(lev, 0, 0.95)


def first_crossing(steps: np.ndarray, values: np.ndarray, target: float) -> float:
  """The first step at which values reach `target` (<=), linear between the row before and that row; inf when
  never, the first row's step when already there."""
  hit = np.nonzero(values <= target)[0]
  if not hit.size:
    return math.inf
  i = int(hit[0])
  if i == 0:
    return float(steps[0])
  s0, s1, v0, v1 = steps[i - 1], steps[i], values[i - 1], values[i]
  return float(s0 + (s1 - s0) * (v0 - target) / (v0 - v1))


def at_step(c: Curve, step: float, field: str) -> float:
  """A curve's tokens or wall at a (fractional) step, linear between rows (from (0, 0))."""
  if not math.isfinite(step):
    return math.inf
  return float(np.interp(step, np.concatenate([[0.0], c.steps]), np.concatenate([[0.0], getattr(c, field)])))


def _reach(fixed_s: np.ndarray, ramp_s: np.ndarray, fixed: Curve, ramp: Curve) -> tuple[float, float, float]:
  target = float(fixed_s[-1])
  return target, float(fixed.steps[-1]), first_crossing(ramp.steps, ramp_s, target)


# ----------------------------------------------------------------------------- the bootstrap
def _phases(c: Curve) -> list[np.ndarray]:
  cut = np.nonzero(np.diff(c.batch) != 0)[0] + 1
  return np.split(np.arange(len(c.steps)), cut)


def block_resample(resid: np.ndarray, phases: list[np.ndarray], block: int, rng, reach: float = 0.1) -> np.ndarray:
  """Residuals redrawn by local moving blocks of `block` rows within each phase: the block at position p starts
  within +-max(2 block, reach x the phase's rows) of p, so the noise of one part of the run (and the smoothing's
  bias where the curve bends, early) stays in that part."""
  out = np.empty_like(resid)
  for idx in phases:
    r, n = resid[idx], len(idx)
    b = max(1, min(block, n))
    m = max(2 * b, int(round(reach * n)))
    pos = np.arange(0, n, b)
    lo, hi = np.clip(pos - m, 0, n - b), np.clip(pos + m, 0, n - b)
    starts = lo + (rng.random(len(pos)) * (hi - lo + 1)).astype(int)
    out[idx] = np.concatenate([r[s:s + b] for s in starts])[:n]
  return out


def smoothing_halfwidth(fixed: Curve, window: float, min_rows: int = MIN_ROWS) -> float:
  """+- window x the fixed run's tokens, widened to hold at least min_rows logged rows before its end (the target
  is a one-sided fit there)."""
  k = min(min_rows, len(fixed.tokens) - 1)
  return max(window * float(fixed.tokens[-1]), float(fixed.tokens[-1] - fixed.tokens[-1 - k]))


def compare(fixed: Curve, ramp: Curve, window: float = DEFAULT_WINDOW, block: int = DEFAULT_BLOCK,
            draws: int = DEFAULT_DRAWS, seed: int = 0, goal: float = GOAL) -> dict:
  """Steps, tokens and wall each run needs to reach the fixed run's final smoothed train loss; % fewer steps with a
  block-bootstrap interval; the goal verdict."""
  h = smoothing_halfwidth(fixed, window)
  (fs, fl), (rs, rl) = local_linear(fixed.tokens, fixed.loss, h, True), local_linear(ramp.tokens, ramp.loss, h, True)
  target, s_fix, s_ramp = _reach(fs, rs, fixed, ramp)
  fewer = 1 - s_ramp / s_fix if math.isfinite(s_ramp) else -math.inf
  rng = np.random.default_rng(seed)
  fr, rr = (fixed.loss - fs) / np.sqrt(1 - fl), (ramp.loss - rs) / np.sqrt(1 - rl)   # leverage-adjusted
  fp, rp = _phases(fixed), _phases(ramp)
  got = np.empty(draws)
  for i in range(draws):
    f2 = local_linear(fixed.tokens, fs + block_resample(fr, fp, block, rng), h)
    r2 = local_linear(ramp.tokens, rs + block_resample(rr, rp, block, rng), h)
    _, a, b = _reach(f2, r2, fixed, ramp)
    got[i] = 1 - b / a if math.isfinite(b) else -math.inf
  a = (1 - LEVEL) / 2
  lo, hi = float(np.quantile(got, a, method='lower')), float(np.quantile(got, 1 - a, method='higher'))
  run = {n: {'steps': s, 'tokens': at_step(c, s, 'tokens'), 'wall_s': at_step(c, s, 'wall'),
             'total_steps': float(c.steps[-1]), 'final_smoothed': float(sm[-1]), 'eval_loss': c.eval_loss,
             'packed': c.packed, 'name': c.name}
         for n, c, s, sm in (('fixed', fixed, s_fix, fs), ('ramp', ramp, s_ramp, rs))}
  ratio = lambda k: run['ramp'][k] / run['fixed'][k] if run['fixed'][k] else math.nan   # noqa: E731
  ev = (fixed.eval_loss, ramp.eval_loss)
  return {'metric': 'train/loss, local linear in tokens', 'window': window, 'block': block, 'draws': draws,
          'target': target, 'fixed': run['fixed'], 'ramp': run['ramp'], 'fewer_steps': fewer,
          'interval': [lo, hi], 'reached_share': float(np.mean(np.isfinite(got))),
          'ratios': {k: ratio(k) for k in ('steps', 'tokens', 'wall_s')}, 'goal': goal, 'verdict': verdict(lo, hi, goal),
          'eval_equal_or_better': None if None in ev else bool(ev[1] <= ev[0]),
          'walls_comparable': fixed.packed == ramp.packed,
          'smoothed': {'fixed': fs, 'ramp': rs}}


def verdict(lo: float, hi: float, goal: float = GOAL) -> str:
  """The goal (>= goal fewer steps) from the interval of the saving."""
  return 'met' if lo >= goal else 'not met' if hi < goal else 'not decided'


# ----------------------------------------------------------------------------- reading runs
def read_curve(workdir) -> Curve:
  """A run's curve from its workdir; a branch (train.init_from 'PARENT:STEP') is stitched onto its parent's rows up
  to the fork (a cooldown branch logs only its own steps)."""
  from scaling.analysis.run_plot import read_metrics
  from scaling.analysis.runs_table import config_of
  from scaling.config.load import parse_init_from
  path = pathlib.Path(workdir)
  cfg = config_of(path) or {}
  t = cfg.get('train') or {}
  rows = read_metrics(path)
  if t.get('init_from'):
    parent, fork = parse_init_from(t['init_from'])
    p = pathlib.Path(parent).expanduser()
    p = p if p.is_absolute() else (path.absolute() / p).resolve()
    rows = [r for r in read_metrics(p) if r.get('step', 0) <= (fork or 0)] + \
        [r for r in rows if r.get('step', 0) > (fork or 0)]
  return curve_from_rows(rows, path.name, int(t.get('batch_size', 0)))


def pack_size(root, workdir) -> int:
  """Members of the pack that trained this run (ROOT/packs/*.json), 1 when it trained alone."""
  import json
  name = pathlib.Path(workdir).name
  for f in sorted((pathlib.Path(root) / 'packs').glob('*.json')):
    try:
      members = json.loads(f.read_text())
    except (OSError, ValueError):
      continue
    if any(pathlib.Path(str(m.get('workdir', ''))).name == name for m in members if isinstance(m, dict)):
      return len(members)
  return 1
