"""The law forms and their point fits (no resampling): power laws, the parametric L(N, D), IsoFLOP parabolas.

  * power laws y = a x^-b (+ E), alone (fit_power_law) and per group of rows at equal D or N (fit_power_laws);
  * the parametric law L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, approach 3): its Huber
    objective in log space, L-BFGS-B from a grid of starts, its closed-form optimum under C = 6 N D and its
    optimum under the rows' own FLOPs per token;
  * IsoFLOP pieces (approach 2): the rows grouped into compute budgets, one parabola in log N per budget and
    the power laws of its minima against C.

scaling/analysis/fit/approaches.py puts these together with the bootstrap into the fits of a sweep.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable, Sequence

import numpy as np
from scipy import optimize

from scaling.analysis.fit.load import FitError

try:  # L-BFGS-B calls BLAS on 5-vectors: threads only add contention (10-100x slower when busy).
  from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover - optional dependency
  _threadpool_limits = None


def _one_blas_thread():
  return _threadpool_limits(1) if _threadpool_limits else contextlib.nullcontext()


# Hoffmann et al. 2022's grid of initialisations (approach 3), in (a, b, e, alpha, beta)
# with a = log A, b = log B, e = log E.
DEFAULT_INIT_GRID = {
    'a': tuple(np.arange(0.0, 25.1, 5.0)),
    'b': tuple(np.arange(0.0, 25.1, 5.0)),
    'e': tuple(np.arange(-1.0, 1.01, 0.5)),
    'alpha': tuple(np.arange(0.0, 2.01, 0.5)),
    'beta': tuple(np.arange(0.0, 2.01, 0.5)),
}
_PARAM_ORDER = ('a', 'b', 'e', 'alpha', 'beta')
_LBFGS_OPTIONS = {'gtol': 1e-10, 'ftol': 1e-14, 'maxiter': 2000}


def _linfit(u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
  """Least-squares v = c0 + c1 u; returns (c0, c1)."""
  c1, c0 = np.polyfit(u, v, 1)
  return float(c0), float(c1)


def fit_power_law(x: Sequence[float], y: Sequence[float], *,
                  irreducible: bool | str = 'auto') -> dict:
  """Fits y = a x^-b (+ E) by least squares of log-space residuals.

  irreducible: False (pure power law, a straight line in log-log), True (with E >= 0), or
  'auto' (with E when there are at least 4 distinct x, so E leaves a residual dof).
  E is profiled: for each E the rest is a straight line fit of log(y - E), the best E is
  found by bounded 1-D search, then all three are polished jointly.
  """
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise FitError(f'x and y must be 1-D of equal length, got {x.shape} and {y.shape}')
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
    raise FitError('power law needs finite positive x and y')
  n_distinct = len(np.unique(x))
  if n_distinct < 2:
    raise FitError(f'power law needs at least 2 distinct x values, got {n_distinct}')
  with_e = (n_distinct >= 4) if irreducible == 'auto' else bool(irreducible)
  if with_e and n_distinct < 4:
    raise FitError(f'power law with an irreducible term has 3 parameters: needs at least 4 '
                   f'distinct x values, got {n_distinct}')
  lx, ly = np.log(x), np.log(y)

  def line(e: float) -> tuple[float, float, float]:
    """Best (log a, b) for fixed E, and the log-space SSE of y against E + a x^-b."""
    c0, c1 = _linfit(lx, np.log(y - e))
    pred = e + np.exp(c0 + c1 * lx)
    return c0, -c1, float(np.sum((ly - np.log(pred)) ** 2))

  e = 0.0
  c0, b, _ = line(0.0)
  if with_e:
    hi = float(np.min(y)) * (1 - 1e-9)
    res = optimize.minimize_scalar(lambda e_: line(e_)[2], bounds=(0.0, hi), method='bounded',
                                   options={'xatol': 1e-12 * hi})
    e = float(res.x) if line(float(res.x))[2] < line(0.0)[2] else 0.0
    c0, b, _ = line(e)

    def resid(p: np.ndarray) -> np.ndarray:
      return np.log(p[2] + np.exp(p[0] - p[1] * lx)) - ly

    polished = optimize.least_squares(resid, np.array([c0, b, e]), bounds=([-np.inf, -np.inf, 0.0],
                                                                          [np.inf, np.inf, hi]),
                                      xtol=1e-15, ftol=1e-15, gtol=1e-15)
    if np.sum(polished.fun ** 2) <= line(e)[2]:
      c0, b, e = (float(v) for v in polished.x)
  pred = e + np.exp(c0 - b * lx)
  resid_log = ly - np.log(pred)
  ss_tot = float(np.sum((ly - ly.mean()) ** 2))
  exact = len(x) <= (3 if with_e else 2)   # as many points as parameters: r2 says nothing
  return {
      'form': 'E + a * x^-b' if with_e else 'a * x^-b',
      'a': float(np.exp(c0)), 'b': float(b), 'E': float(e),
      'n': int(len(x)), 'exact': bool(exact),
      'rmse_log': float(np.sqrt(np.mean(resid_log ** 2))),
      'r2_log': float(1 - np.sum(resid_log ** 2) / ss_tot) if ss_tot > 0 and not exact else None,
  }


def _cluster(values: np.ndarray, rel_tol: float) -> list[np.ndarray]:
  """Groups indices of values that lie within rel_tol of the smallest value of their group."""
  order = np.argsort(values)
  groups, current, start = [], [], None
  for i in order:
    if start is None or values[i] > start * (1 + rel_tol):
      if current:
        groups.append(np.array(current))
      current, start = [], values[i]
    current.append(i)
  if current:
    groups.append(np.array(current))
  return groups


def fit_power_laws(rows: Sequence[dict], *, rel_tol: float = 1e-3) -> dict:
  """Per-group power laws: L against N at equal tokens, and L against D at equal N.

  'Equal' is within rel_tol: sweeps repeat exact model shapes and token budgets.
  """
  out = {}
  for name, by, x_key in (('vs_N', 'D', 'N'), ('vs_D', 'N', 'D')):
    by_vals = np.array([r[by] for r in rows])
    groups, reasons = [], []
    for idx in _cluster(by_vals, rel_tol):
      xs = np.array([rows[i][x_key] for i in idx])
      ls = np.array([rows[i]['L'] for i in idx])
      fixed = float(np.exp(np.mean(np.log(by_vals[idx]))))
      try:
        fit = fit_power_law(xs, ls)
      except FitError as e:
        reasons.append(f'{by}={fixed:.3g}: {e}')
        continue
      groups.append({f'fixed_{by}': fixed, **fit})
    fixed_name = 'tokens' if by == 'D' else 'N'
    if groups:
      bs = [g['b'] for g in groups]
      out[name] = {'groups': groups, 'exponent_median': float(np.median(bs)),
                   'exponent_min': float(min(bs)), 'exponent_max': float(max(bs))}
    else:
      out[name] = {'skipped': f'no group of rows at equal {fixed_name} has >= 2 distinct '
                              f'{x_key} values ({len(reasons)} group(s) of one {x_key})'}
  if 'skipped' in out['vs_N'] and 'skipped' in out['vs_D']:
    raise FitError('; '.join(out[k]['skipped'] for k in ('vs_N', 'vs_D')))
  return out


def _huber_objective(p: np.ndarray, lN: np.ndarray, lD: np.ndarray, lL: np.ndarray,
                     delta: float) -> tuple[float, np.ndarray]:
  """Sum of Huber(LSE(a - alpha lN, b - beta lD, e) - lL) and its gradient in (a,b,e,alpha,beta)."""
  a, b, e, alpha, beta = p
  t_3R = np.stack([a - alpha * lN, b - beta * lD, np.full_like(lN, e)])
  m_R = t_3R.max(axis=0)
  w_3R = np.exp(t_3R - m_R)
  s_R = w_3R.sum(axis=0)
  r_R = m_R + np.log(s_R) - lL
  w_3R /= s_R
  abs_r = np.abs(r_R)
  loss = np.where(abs_r <= delta, 0.5 * r_R ** 2, delta * (abs_r - 0.5 * delta)).sum()
  g_R = np.clip(r_R, -delta, delta)
  gw_3R = g_R * w_3R
  grad = np.array([gw_3R[0].sum(), gw_3R[1].sum(), gw_3R[2].sum(),
                   -(gw_3R[0] * lN).sum(), -(gw_3R[1] * lD).sum()])
  return float(loss), grad


def _batched_objective(P_K5: np.ndarray, lN, lD, lL, delta: float,
                       chunk: int = 256) -> np.ndarray:
  """The Huber objective at K parameter vectors (for ranking the grid of starts), in chunks of
  starts so that memory stays at 3 * chunk * rows floats."""
  out = []
  for P in np.split(P_K5, range(chunk, len(P_K5), chunk)):
    a, b, e, alpha, beta = (P[:, i:i + 1] for i in range(5))
    t_3KR = np.stack(np.broadcast_arrays(a - alpha * lN, b - beta * lD, e + 0 * lN))
    r_KR = np.logaddexp.reduce(t_3KR, axis=0) - lL
    abs_r = np.abs(r_KR)
    out.append(np.where(abs_r <= delta, 0.5 * r_KR ** 2, delta * (abs_r - 0.5 * delta)).sum(axis=1))
  return np.concatenate(out)


def _minimise(starts_K5: np.ndarray, lN, lD, lL, delta: float) -> tuple[np.ndarray, float, int]:
  """L-BFGS-B from every start; returns the best (params, objective, starts that reached it)."""
  best_p, best_f, results = None, np.inf, []
  with _one_blas_thread(), np.errstate(over='ignore', invalid='ignore'):
    for p0 in starts_K5:
      res = optimize.minimize(_huber_objective, p0, args=(lN, lD, lL, delta), jac=True,
                              method='L-BFGS-B', options=_LBFGS_OPTIONS)
      if np.all(np.isfinite(res.x)) and np.isfinite(res.fun):
        results.append(res.fun)
        if res.fun < best_f:
          best_p, best_f = res.x, float(res.fun)
  if best_p is None:
    raise FitError('chinchilla: L-BFGS found no finite solution from any start')
  hits = int(np.sum(np.array(results) <= best_f * (1 + 1e-6) + 1e-15))
  return best_p, best_f, hits


def _exp(v: float) -> float:
  """exp that overflows to inf (a refit can run log A to thousands) instead of raising."""
  return math.exp(v) if v < 709.0 else math.inf


def _params_dict(p: np.ndarray) -> dict:
  a, b, e, alpha, beta = (float(v) for v in p)
  return {'E': _exp(e), 'A': _exp(a), 'B': _exp(b), 'alpha': alpha, 'beta': beta,
          'a_exponent': beta / (alpha + beta) if alpha + beta != 0 else None,
          'b_exponent': alpha / (alpha + beta) if alpha + beta != 0 else None,
          'log_A': a, 'log_B': b, 'log_E': e}


def chinchilla_loss(params: dict, N, D) -> np.ndarray:
  """L(N, D) = E + A / N^alpha + B / D^beta."""
  N, D = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
  return params['E'] + params['A'] * N ** -params['alpha'] + params['B'] * D ** -params['beta']


def chinchilla_optimum(params: dict, flops) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Compute-optimal (N, D, L) under C = 6 N D, in closed form.

  Minimising A N^-alpha + B (C / 6N)^-beta over N gives
  N_opt = G (C/6)^(beta/(alpha+beta)) with G = (alpha A / (beta B))^(1/(alpha+beta)),
  and D_opt = C/(6 N_opt).
  """
  c = np.asarray(flops, dtype=np.float64)
  alpha, beta, A, B = params['alpha'], params['beta'], params['A'], params['B']
  if alpha <= 0 or beta <= 0:
    raise FitError(f'no compute-optimal allocation: needs alpha, beta > 0 (got {alpha:.3g}, '
                   f'{beta:.3g}), otherwise loss keeps falling by moving all compute to one side')
  G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
  n_opt = G * (c / 6.0) ** (beta / (alpha + beta))
  d_opt = c / (6.0 * n_opt)
  return n_opt, d_opt, chinchilla_loss(params, n_opt, d_opt)


def _grid_starts(grid: dict) -> np.ndarray:
  return np.array(list(itertools.product(*(grid[k] for k in _PARAM_ORDER))), dtype=np.float64)


def _group_budgets(rows: Sequence[dict],
                   rel_tol: float) -> tuple[list[tuple[float, list[int]]], str]:
  """Compute budgets: explicit 'budget' values if every row has one, else FLOP clusters."""
  if rows and all(r['budget'] is not None for r in rows):
    by = {}
    for i, r in enumerate(rows):
      by.setdefault(r['budget'], []).append(i)
    return sorted(by.items()), 'explicit budget column'
  flops = np.array([r['C'] for r in rows])
  groups = []
  for idx in _cluster(flops, rel_tol):
    groups.append((float(np.exp(np.mean(np.log(flops[idx])))), [int(i) for i in idx]))
  return groups, f'flops within {rel_tol:.0%}'


def _parabola(n: np.ndarray, d: np.ndarray, ls: np.ndarray) -> tuple | None:
  """(coefficients in x = log10 N, x_opt, log10 D_opt) or None (< 3 sizes or not convex)."""
  if len(np.unique(n)) < 3:
    return None
  x = np.log10(n)
  c2, c1, c0 = np.polyfit(x, ls, 2)
  if c2 <= 0:
    return None
  x_opt = -c1 / (2 * c2)
  k0, k1 = _linfit(x, np.log10(d))
  return (float(c2), float(c1), float(c0)), float(x_opt), float(k0 + k1 * x_opt)


def _isoflop_lines(c: np.ndarray, n_opt: np.ndarray, d_opt: np.ndarray,
                   l_opt: np.ndarray) -> dict:
  """N_opt = kN C^a, D_opt = kD C^b (straight lines in log-log) and L_opt(C) (power law)."""
  out = {}
  for key, y in (('N_opt_vs_C', n_opt), ('D_opt_vs_C', d_opt)):
    fit = fit_power_law(c, y, irreducible=False)
    # N_opt = k C^exponent; fit_power_law returns y = a x^-b.
    out[key] = {'k': fit['a'], 'exponent': -fit['b'], 'n': fit['n'], 'rmse_log': fit['rmse_log'],
                'exact': fit['n'] <= 2}
  out['L_opt_vs_C'] = fit_power_law(c, l_opt)
  return out


def _flops_per_token(n: np.ndarray, c: np.ndarray, d: np.ndarray) -> Callable:
  """FLOPs per token as a function of N, from the rows themselves (a line in log-log through
  C / D against N: it includes the LM head and attention, which 6 N leaves out)."""
  if len(np.unique(n)) < 2:
    ratio = float(np.median(c / d / n))
    return lambda N: ratio * np.asarray(N, dtype=np.float64)
  k0, k1 = _linfit(np.log(n), np.log(c / d))
  return lambda N: np.exp(k0 + k1 * np.log(np.asarray(N, dtype=np.float64)))


def accounted_optimum(params: dict, flops: float, fpt: Callable,
                      n_range: tuple[float, float]) -> tuple[float, float, float]:
  """(N_opt, D_opt, L_opt) of the law at `flops` with D = flops / fpt(N) (the rows' own FLOPs
  accounting, see _flops_per_token), by bounded minimisation over log N in n_range."""
  def loss(x):
    n = math.exp(x)
    return float(chinchilla_loss(params, n, flops / fpt(n)))
  res = optimize.minimize_scalar(loss, bounds=tuple(math.log(v) for v in n_range),
                                 method='bounded', options={'xatol': 1e-8})
  n = math.exp(res.x)
  return n, float(flops / fpt(n)), float(res.fun)
