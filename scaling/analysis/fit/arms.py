"""Learning-rate arms: runs of one (size, budget) point that differ only in the peak learning rate.

A sweep that tunes the rate at every point (configs/sweeps/isoflop_v2.py: three arms per size, each a constant-LR
parent with a cooldown branch per budget) gives the IsoFLOP fit several rows per point. The fit needs one loss per
point, so `reduce_arms` groups the rows into points (equal overrides once `train.lr` is removed, its copy in a
branch's parent included; equal N, D and C; a seed is part of a point, so seed replicates stay replicates) and
keeps, per point, the arm with the lowest loss (the mean of rows equal in every override). The reduced row carries every arm's loss (`arm_L`), so that the seed-noise resampling
(scaling/analysis/fit/schemes.py) redraws every arm and picks the best arm again in each draw: the selection's
own noise is in the interval.

Per point it also records whether the best arm is an end of the arms tried (`edge`: 'low' / 'high'), and, where it
is interior, the optimum of the parabola in log10 lr through the best arm and its two neighbours (`lr_opt`, with the
parabola's minimum loss `L_lr_parabola`). `lr_law` fits log lr_opt = c + alpha log N + beta log D over the interior
points, with a seed-noise interval in which every draw re-derives every point's optimum (an optimum that leaves
its arms in a draw is clamped to the end arm and counted).
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

from scaling.analysis.fit.intervals import honest_interval, with_state
from scaling.analysis.fit.load import FitError

ARM_KEY = 'train.lr'


def _strip(obj):
  """obj without train.lr at any depth (a branch row holds its parent's overrides)."""
  if isinstance(obj, dict):
    return {k: _strip(v) for k, v in obj.items() if not (str(k) == ARM_KEY or str(k).endswith('.' + ARM_KEY))}
  if isinstance(obj, list):
    return [_strip(v) for v in obj]
  return obj


def _lr(row: dict) -> float | None:
  ov = (row.get('raw') or {}).get('overrides')
  v = ov.get(ARM_KEY) if isinstance(ov, dict) else None
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def _point_key(row: dict) -> str:
  ov = (row.get('raw') or {}).get('overrides') or {}
  return json.dumps([_strip(ov), row['N'], row['D'], row['C']], sort_keys=True, default=str)


def group_points(rows: Sequence[dict]) -> list[dict]:
  """[{idx: row indices, arms: sorted distinct lrs, by_arm: {lr: [row indices]}}] in the rows' order; rows
  without a learning-rate override are points of one arm."""
  points: dict[str, dict] = {}
  for i, r in enumerate(rows):
    lr = _lr(r)
    key = _point_key(r) if lr is not None else f'row{i}'
    p = points.setdefault(key, {'idx': [], 'by_arm': {}})
    p['idx'].append(i)
    p['by_arm'].setdefault(lr, []).append(i)
  for p in points.values():
    p['arms'] = sorted(p['by_arm'], key=lambda v: (v is None, v))
  return list(points.values())


def has_arms(rows: Sequence[dict]) -> bool:
  return any(len(p['arms']) > 1 for p in group_points(rows))


def _vertex(log_lr: np.ndarray, L: np.ndarray) -> tuple[float, float] | None:
  """(log10 lr, loss) at the vertex of the exact parabola through 3 points; None when not convex."""
  c2, c1, c0 = np.polyfit(log_lr, L, 2)
  if not c2 > 0:
    return None
  x = -c1 / (2 * c2)
  return float(x), float(c0 - c1 ** 2 / (4 * c2))


def _point_record(rows: Sequence[dict], p: dict) -> dict:
  arms = p['arms']
  means = [float(np.mean([rows[i]['L'] for i in p['by_arm'][a]])) for a in arms]
  best = int(np.argmin(means))
  rec = {'arms': [a for a in arms], 'arm_L': means, 'arm_runs': [[rows[i]['run'] for i in p['by_arm'][a]]
                                                                 for a in arms],
         'best': best, 'best_lr': arms[best], 'edge': None, 'lr_opt': None, 'L_lr_parabola': None}
  if len(arms) > 1:
    rec['edge'] = 'low' if best == 0 else ('high' if best == len(arms) - 1 else None)
  if len(arms) >= 3 and rec['edge'] is None:
    sel = slice(best - 1, best + 2)
    v = _vertex(np.log10(arms[sel]), np.array(means[sel]))
    if v is not None:
      rec['lr_opt'], rec['L_lr_parabola'] = 10.0 ** v[0], v[1]
  return rec


def reduce_arms(rows: Sequence[dict], estimator: str = 'best') -> tuple[list[dict], dict]:
  """(one row per point, record). estimator 'best': the best arm's loss; 'lr_parabola': the parabola minimum in
  log lr where the best arm is interior, else the best arm's. A point row is the best arm's first row with
  'L', 'arm_L' (every arm's mean loss), 'arms' and 'runs' (every run of the point)."""
  if estimator not in ('best', 'lr_parabola'):
    raise FitError(f"arm estimator must be 'best' or 'lr_parabola', got {estimator!r}")
  out, points = [], []
  for p in group_points(rows):
    rec = _point_record(rows, p)
    first = rows[p['by_arm'][rec['best_lr']][0]]
    L = rec['arm_L'][rec['best']]
    if estimator == 'lr_parabola' and rec['L_lr_parabola'] is not None:
      L = rec['L_lr_parabola']
    row = {**first, 'L': L, 'arm_L': list(rec['arm_L']), 'arms': list(rec['arms']),
           'runs': [rows[i]['run'] for i in p['idx']]}
    out.append(row)
    points.append({'run': first['run'], 'N': first['N'], 'D': first['D'], 'C': first['C'], **rec})
  n_arms = sorted({len(p['arms']) for p in points})
  edges = [p for p in points if p['edge']]
  record = {'estimator': estimator, 'points': points, 'arms_per_point': n_arms,
            'edge_points': len(edges), 'rows_in': len(rows), 'points_out': len(out),
            'note': (f'{len(edges)} of {len(points)} point(s) have their best learning rate at an end of the arms '
                     'tried (their optimum may lie beyond): ' + ', '.join(
                         f'N={p["N"]:.3g} D={p["D"]:.3g} best lr {p["best_lr"]:.3g} ({p["edge"]} end)'
                         for p in edges)) if edges else 'every point\'s best arm is interior'}
  return out, record


def best_of_draws(arm_L: np.ndarray, sd: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """arm_L (n, A) with NaN padding, sd (R,): (R, n) the lowest arm of each point after adding N(0, sd^2) to
  every arm."""
  R = len(sd)
  noise = sd[:, None, None] * rng.standard_normal((R,) + arm_L.shape)
  return np.nanmin(arm_L[None, :, :] + noise, axis=2)


def arm_matrix(rows: Sequence[dict]) -> np.ndarray | None:
  """(n, A) every row's arm losses, NaN-padded; None when no row has more than one arm."""
  arms = [r.get('arm_L') or [r['L']] for r in rows]
  if max(len(a) for a in arms) < 2:
    return None
  A = max(len(a) for a in arms)
  return np.array([list(a) + [math.nan] * (A - len(a)) for a in arms], dtype=np.float64)


# ----------------------------------------------------------------------------- the LR law
def _optima(points: Sequence[dict], arm_L_R: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Per point log10 lr_opt (R, n) and whether it is clamped (at an end arm), from arm losses (R, n, A) or the
  points' own."""
  n = len(points)
  A = max(len(p['arms']) for p in points)
  logs = np.full((n, A), np.nan)
  for j, p in enumerate(points):
    logs[j, :len(p['arms'])] = np.log10(p['arms'])
  if arm_L_R is None:
    arm_L_R = np.array([[list(p['arm_L']) + [np.nan] * (A - len(p['arm_L'])) for p in points]])
  R = arm_L_R.shape[0]
  out, clamped = np.empty((R, n)), np.zeros((R, n), dtype=bool)
  filled = np.where(np.isnan(arm_L_R), np.inf, arm_L_R)
  best = np.argmin(filled, axis=2)
  counts = np.array([len(p['arms']) for p in points])
  for j in range(n):
    b = best[:, j]
    interior = (b > 0) & (b < counts[j] - 1)
    out[:, j] = logs[j, b]
    clamped[:, j] = ~interior
    if not interior.any():
      continue
    r = np.nonzero(interior)[0]
    x = np.stack([logs[j, b[r] + k] for k in (-1, 0, 1)], 1)
    y = np.stack([arm_L_R[r, j, b[r] + k] for k in (-1, 0, 1)], 1)
    d1, d2 = x[:, 1] - x[:, 0], x[:, 2] - x[:, 1]
    s01, s12 = (y[:, 1] - y[:, 0]) / d1, (y[:, 2] - y[:, 1]) / d2
    c2 = (s12 - s01) / (x[:, 2] - x[:, 0])
    with np.errstate(all='ignore'):
      v = (x[:, 0] + x[:, 1]) / 2 - s01 / (2 * c2)
    out[r, j] = np.clip(np.where(c2 > 0, v, x[:, 1]), x[:, 0], x[:, 2])
  return out, clamped


def lr_law(points: Sequence[dict], *, noise_sd: float | None, draws: int = 4000, seed: int = 0,
           a: float | None = None, b: float | None = None) -> dict:
  """log10 lr_opt = c + alpha log10 N + beta log10 D over points with >= 3 arms (OLS), and its seed-noise
  interval; with a, b (N_opt ~ C^a, D_opt ~ C^b) also gamma = alpha a + beta b, lr_opt's exponent in C along the
  compute-optimal path (DeepSeek LLM 2024 report -0.125)."""
  pts = [p for p in points if len(p['arms']) >= 3]
  out: dict = {'points': len(pts), 'interior': sum(1 for p in pts if p['edge'] is None)}
  if len(pts) < 4 or len({p['N'] for p in pts}) < 2 or len({round(math.log(p['D'] / p['N']), 6) for p in pts}) < 2:
    out['skipped'] = (f'{len(pts)} point(s) with >= 3 arms: the law needs >= 4 over >= 2 sizes and >= 2 '
                      'tokens-per-parameter ratios')
    return out
  X = np.column_stack([np.ones(len(pts)), np.log10([p['N'] for p in pts]), np.log10([p['D'] for p in pts])])
  if np.linalg.matrix_rank(X) < 3:
    out['skipped'] = 'log N and log D are collinear over these points: alpha and beta are not separable'
    return out
  y0, clamped0 = _optima(pts)
  coef = np.linalg.lstsq(X, y0[0], rcond=None)[0]
  out.update(c=float(coef[0]), alpha=float(coef[1]), beta=float(coef[2]), clamped=int(clamped0.sum()),
             rmse_log10=float(np.sqrt(np.mean((X @ coef - y0[0]) ** 2))))
  if a is not None and b is not None:
    out['gamma'] = float(coef[1] * a + coef[2] * b)
  if not noise_sd:
    out['interval'] = 'none: no noise sd to draw with'
    return out
  rng = np.random.default_rng([seed, 5])
  A = max(len(p['arms']) for p in pts)
  base = np.array([list(p['arm_L']) + [np.nan] * (A - len(p['arm_L'])) for p in pts])
  arm_R = base[None] + noise_sd * rng.standard_normal((draws,) + base.shape)
  y, clamped = _optima(pts, arm_R)
  C = np.linalg.lstsq(X, y.T, rcond=None)[0]   # (3, R)
  for i, k in enumerate(('c', 'alpha', 'beta')):
    out[f'ci_{k}'] = with_state(honest_interval(C[i]))
  if 'gamma' in out:
    out['ci_gamma'] = with_state(honest_interval(C[1] * a + C[2] * b))
  out.update(draws=draws, noise_sd=float(noise_sd), clamped_share=float(clamped.mean()),
             seed=[seed, 5])
  return out
