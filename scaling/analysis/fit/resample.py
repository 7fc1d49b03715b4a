"""Vectorised IsoFLOP resampling: every resample's per-budget minimum (or why it has none) and the exponents.

The IsoFLOP estimate of a (N_opt ~ C^a) is, per compute budget, the minimum of loss against x = log10 N, then
a straight line of the minima's log10 N against log10 C. Here that runs on R resamples at once (numpy arrays
(R, n) per budget, batched 3x3 solves), so thousands of resamples cost well under a second.

A resample's budget has no interior minimum for one of four reasons (REASONS): fewer than 3 distinct sizes
drawn (no parabola), a concave parabola (no minimum), or a vertex below / above the sizes drawn. Such a
resample has no finite a; it still counts. It enters the percentiles on the side its minimum escaped to
(escape_sides): a budget whose minimum lies above its sizes pushes a up when the budget is above the mean
log C (it has positive weight in the least-squares slope) and down when below, so its resample counts as
a = +inf or -inf. When the side is unknown (fewer than 3 sizes, a concave parabola, a budget at the mean
log C, budgets escaping to opposite sides) it counts as -inf for the lower percentile and +inf for the
upper one: it widens both ends. scaling/analysis/fit/intervals.py turns these into intervals.

Estimators of a budget's minimum (ESTIMATORS): 'parabola' (least squares over every row of the budget),
'local3' (the exact parabola through the best size and its two neighbours; the best at an end has no
interior minimum), 'best' (the best observed size itself; at an end likewise).
"""

from __future__ import annotations

import numpy as np

OK, FEW, CONCAVE, BELOW, ABOVE = 0, 1, 2, 3, 4
REASONS = {FEW: 'fewer_than_3_sizes', CONCAVE: 'concave', BELOW: 'vertex_below_sizes',
           ABOVE: 'vertex_above_sizes'}
ESTIMATORS = ('parabola', 'local3', 'best')
UNKNOWN = 2   # escape side of a resample whose estimate could lie on either side


def _as_draws(Y, n: int) -> np.ndarray:
  Y = np.asarray(Y, dtype=np.float64)
  return np.broadcast_to(Y, (1, n)) if Y.ndim == 1 else Y


def parabola_fits(x: np.ndarray, Y: np.ndarray, W: np.ndarray | None = None) -> dict:
  """Weighted least-squares parabolas Y ~ c2 u^2 + c1 u + c0 (u = x - mean x) of every draw.

  x (n,) log10 N of the budget's rows; Y (R, n) the loss of each draw (or (n,): one draw); W (R, n)
  non-negative row weights (bootstrap counts; None: all 1). Returns {x_opt, l_opt, code (OK or a
  REASONS key), c2} as (R,) arrays; x_opt and l_opt are NaN where code != OK. The vertex must lie
  within the sizes the draw holds (inclusive), as fit_isoflop's inside_range.
  """
  x = np.asarray(x, dtype=np.float64)
  Y = _as_draws(Y, len(x))
  if W is None:
    W = np.ones_like(Y)
  else:
    Y, W = np.broadcast_arrays(Y, np.asarray(W, dtype=np.float64))
  xm = float(x.mean())
  P = (x - xm)[None, :] ** np.arange(5)[:, None]                      # (5, n): u^0 .. u^4
  S = W @ P.T                                                          # (R, 5)
  T = (W * Y) @ P[:3].T                                                # (R, 3)
  sizes, inv = np.unique(x, return_inverse=True)
  present = (W @ (inv[:, None] == np.arange(len(sizes))[None, :])) > 0  # (R, n_sizes)
  few = present.sum(axis=1) < 3
  M = S[:, [[0, 1, 2], [1, 2, 3], [2, 3, 4]]]
  M[few] = np.eye(3)
  with np.errstate(all='ignore'):
    c = np.linalg.solve(M, T[:, :, None])[:, :, 0]
    c0, c1, c2 = c[:, 0], c[:, 1], c[:, 2]
    x_opt = xm - c1 / (2 * c2)
    l_opt = c0 - c1 ** 2 / (4 * c2)
  lo = np.where(present, sizes[None, :], np.inf).min(axis=1)
  hi = np.where(present, sizes[None, :], -np.inf).max(axis=1)
  code = np.select([few, ~(c2 > 0), x_opt < lo, x_opt > hi], [FEW, CONCAVE, BELOW, ABOVE], OK)
  bad = code != OK
  return {'x_opt': np.where(bad, np.nan, x_opt), 'l_opt': np.where(bad, np.nan, l_opt),
          'code': code, 'c2': c2}


def _by_size(x: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The distinct sizes (sorted) and each draw's mean loss per size."""
  sizes, inv = np.unique(x, return_inverse=True)
  onehot = (inv[:, None] == np.arange(len(sizes))[None, :]).astype(np.float64)
  return sizes, (Y @ onehot) / onehot.sum(axis=0)


def local_fits(x: np.ndarray, Y: np.ndarray, estimator: str) -> dict:
  """'local3' or 'best' (see the module docstring) over the draws Y (R, n) at fixed sizes x (n,)."""
  sizes, Ys = _by_size(np.asarray(x, dtype=np.float64), _as_draws(Y, len(x)))
  R, m = Ys.shape
  i = np.argmin(Ys, axis=1)
  end = np.where(i == 0, BELOW, np.where(i == m - 1, ABOVE, OK))
  if m < 3:
    end = np.full(R, FEW)
  rows = np.arange(R)
  if estimator == 'best':
    x_opt, l_opt, code = sizes[i], Ys[rows, i], end
  else:
    j = np.clip(i, 1, max(m - 2, 1))
    x0, x1, x2 = (sizes[np.clip(j + k, 0, m - 1)] for k in (-1, 0, 1))
    y0, y1, y2 = (Ys[rows, np.clip(j + k, 0, m - 1)] for k in (-1, 0, 1))
    with np.errstate(all='ignore'):
      s01, s12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
      c2 = (s12 - s01) / (x2 - x0)
      x_opt = (x0 + x1) / 2 - s01 / (2 * c2)
      l_opt = y1 - c2 * (x1 - x_opt) ** 2
    code = np.where(end != OK, end, np.where(c2 > 0, OK, CONCAVE))
  bad = code != OK
  return {'x_opt': np.where(bad, np.nan, x_opt), 'l_opt': np.where(bad, np.nan, l_opt), 'code': code}


def budget_minima(x: np.ndarray, Y: np.ndarray, estimator: str = 'parabola',
                  W: np.ndarray | None = None) -> dict:
  """One budget's minimum in every draw by the named estimator (ESTIMATORS); W only for 'parabola'."""
  if estimator == 'parabola':
    return parabola_fits(x, Y, W)
  if estimator not in ESTIMATORS:
    raise ValueError(f'unknown estimator {estimator!r}; choose from {ESTIMATORS}')
  if W is not None:
    raise ValueError(f'estimator {estimator!r} takes no row weights (resample the losses instead)')
  return local_fits(x, Y, estimator)


def line_fits(lc: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(slope, intercept) of the least-squares line X ~ lc for each draw: lc (J,) log C, X (R, J)."""
  lc = np.asarray(lc, dtype=np.float64)
  u = lc - lc.mean()
  slope = (X - X.mean(axis=1, keepdims=True)) @ u / float(u @ u)
  return slope, X.mean(axis=1) - slope * lc.mean()


def escape_sides(codes: np.ndarray, lc: np.ndarray) -> np.ndarray:
  """Per draw (codes (R, J), lc (J,)): 0 every budget has a minimum; +1 / -1 the slope escapes to
  +inf / -inf (every budget without a minimum pushes it the same way); UNKNOWN otherwise."""
  lc = np.asarray(lc, dtype=np.float64)
  w = np.sign(np.round(lc - lc.mean(), 12))[None, :]
  push = np.where(codes == ABOVE, w, np.where(codes == BELOW, -w, 0.0))
  unknown = ((codes == FEW) | (codes == CONCAVE) | ((codes != OK) & (w == 0))).any(axis=1)
  up, down = (push > 0).any(axis=1), (push < 0).any(axis=1)
  side = np.where(up & ~down, 1, np.where(down & ~up, -1, np.where(up & down, UNKNOWN, 0)))
  return np.where(unknown, UNKNOWN, side).astype(np.int64)


def exponents(lc: np.ndarray, x_opt: np.ndarray, y_opt: np.ndarray | None, codes: np.ndarray) -> dict:
  """a (and b from y_opt = log10 D_opt) per draw over the budgets (columns), NaN where some budget has no
  minimum, with the escape side of each draw (b escapes opposite to a: D_opt = C / fpt(N_opt))."""
  a, ka = line_fits(lc, x_opt)
  side = escape_sides(codes, lc)
  out = {'a': a, 'log10_kN': ka, 'side_a': side,
         'side_b': np.where(side == UNKNOWN, UNKNOWN, -side)}
  if y_opt is not None:
    out['b'], out['log10_kD'] = line_fits(lc, y_opt)
  return out


def failure_counts(codes: np.ndarray, side: np.ndarray) -> dict:
  """How many draws have no finite estimate, by escape side, and per reason how many (draw, budget)
  pairs had no interior minimum."""
  failed = side != 0
  return {'draws_without_estimate': int(failed.sum()),
          'escaped': {'low': int((side == -1).sum()), 'high': int((side == 1).sum()),
                      'unknown_side': int((side == UNKNOWN).sum())},
          'budget_failures': {name: int((codes == k).sum()) for k, name in REASONS.items()}}


def row_weights(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
  """Bootstrap counts (draws, n): n rows drawn with replacement from n."""
  idx = rng.integers(0, n, size=(draws, n))
  W = np.zeros((draws, n))
  np.add.at(W, (np.arange(draws)[:, None], idx), 1.0)
  return W
