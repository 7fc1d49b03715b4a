"""Scaling-law fits over a sweep's `results.jsonl`: power laws, Chinchilla L(N, D), IsoFLOP.

`scaling fit --results PATH` reads one row per training run (as written by `scaling sweep
collect`), fits

  * per-group power laws L = a X^-b (+ E when there are enough points): loss against N at
    equal training tokens, and against D at equal N;
  * the parametric law L(N, D) = E + A / N^alpha + B / D^beta of Hoffmann et al. 2022
    (approach 3): Huber loss of log-space residuals, L-BFGS from a grid of starts, bootstrap
    confidence intervals;
  * IsoFLOP profiles (approach 2): per compute budget a parabola of loss in log N, its
    minimum N_opt, then N_opt ~ C^a and D_opt ~ C^b;

predicts the compute-optimal N, D and loss at target budgets, writes `fit.json` (every
number) and PNG plots. A fit the data cannot support is skipped with a note; a fit asked for
explicitly (`--fits chinchilla`) that cannot be done is an error, and so is having no fit.

N is the non-embedding parameter count by default (`--params total` for all parameters).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import sys
import warnings
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import optimize

try:  # L-BFGS-B calls BLAS on 5-vectors: threads only add contention (10-100x slower when busy).
  from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover - optional dependency
  _threadpool_limits = None


def _one_blas_thread():
  return _threadpool_limits(1) if _threadpool_limits else contextlib.nullcontext()


class FitError(ValueError):
  """The data cannot support the requested fit, or a results row is malformed."""


FIT_NAMES = ('power_law', 'chinchilla', 'isoflop')
METRICS = ('eval/bpb', 'eval/loss', 'train/loss')
PARAM_COLUMNS = {'non_embedding': 'non_embedding_params', 'total': 'params'}
BUDGET_KEYS = ('budget', 'flops_budget', 'compute_budget')
DEFAULT_TARGETS = (1e21, 1e23)

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


# --------------------------------------------------------------------------------------
# Loading


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _find_budget(row: dict) -> Any:
  """An explicit compute budget: a top-level column or an overrides key (dotted or not)."""
  for k in BUDGET_KEYS:
    if k in row and row[k] is not None:
      return k, row[k]
  overrides = row.get('overrides')
  if isinstance(overrides, dict):
    for k, v in overrides.items():
      if str(k).rsplit('.', 1)[-1] in BUDGET_KEYS and v is not None:
        return f'overrides[{k!r}]', v
  return None, None


def _check_positive(lineno: int, column: str, v: Any) -> float:
  if v is None:
    raise FitError(f'line {lineno}: column {column!r} is null; the run has no value for it')
  if not _is_number(v):
    raise FitError(f'line {lineno}: column {column!r} is not a number (got {v!r})')
  v = float(v)
  if math.isnan(v):
    raise FitError(f'line {lineno}: column {column!r} is NaN (diverged or unfinished run?)')
  if math.isinf(v):
    raise FitError(f'line {lineno}: column {column!r} is infinite')
  if v <= 0:
    raise FitError(f'line {lineno}: column {column!r} must be > 0 (got {v!r})')
  return v


def _parse_row(lineno: int, raw: dict, metric: str, n_column: str) -> dict:
  for column in (n_column, 'tokens', 'flops', metric):
    if column not in raw:
      raise FitError(f'line {lineno}: missing column {column!r} (run {raw.get("run")!r}); '
                     'rerun `scaling sweep collect` or pass --skip_bad')
  row = {
      'line': lineno,
      'run': str(raw.get('run', f'line{lineno}')),
      'N': _check_positive(lineno, n_column, raw[n_column]),
      'D': _check_positive(lineno, 'tokens', raw['tokens']),
      'C': _check_positive(lineno, 'flops', raw['flops']),
      'L': _check_positive(lineno, metric, raw[metric]),
      'budget': None,
      'raw': raw,
  }
  key, budget = _find_budget(raw)
  if key is not None:
    row['budget'] = _check_positive(lineno, key, budget)
  return row


def load_results(path: str, metric: str = 'eval/bpb', *, params: str = 'non_embedding',
                 skip_bad: bool = False, notes: list[str] | None = None,
                 keep: Callable[[dict], bool] | None = None) -> list[dict]:
  """Reads `results.jsonl` into rows {line, run, N, D, C, L, budget, raw} of finished runs.

  Rows whose 'state' is not 'done' are left out with a note. A malformed row (bad JSON,
  missing column, NaN loss, non-positive N/D/C) raises FitError naming its line and column;
  with skip_bad=True it is left out with a warning instead.
  """
  if params not in PARAM_COLUMNS:
    raise FitError(f'params must be one of {sorted(PARAM_COLUMNS)}, got {params!r}')
  n_column = PARAM_COLUMNS[params]
  notes = [] if notes is None else notes
  if not os.path.isfile(path):
    raise FitError(f'results file not found: {path}; run `scaling sweep collect` first')
  rows, not_done, bad = [], {}, []
  n_dropped = 0
  with open(path, encoding='utf-8') as f:
    for lineno, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        try:
          raw = json.loads(text)
        except json.JSONDecodeError as e:
          raise FitError(f'line {lineno}: not valid JSON ({e.msg} at column {e.colno})') from None
        if not isinstance(raw, dict):
          raise FitError(f'line {lineno}: expected a JSON object, got {type(raw).__name__}')
        if keep is not None and not keep(raw):
          n_dropped += 1
          continue
        if 'state' not in raw:
          raise FitError(f'line {lineno}: missing column \'state\' (run {raw.get("run")!r})')
        if raw['state'] != 'done':
          not_done.setdefault(str(raw['state']), []).append(str(raw.get('run', lineno)))
          continue
        rows.append(_parse_row(lineno, raw, metric, n_column))
      except FitError as e:
        if not skip_bad:
          raise FitError(f'{path}: {e}') from None
        bad.append(str(e))
        warnings.warn(f'{path}: skipping bad row: {e}', stacklevel=2)
  if n_dropped:
    notes.append(f'left out {n_dropped} row(s) not selected for the fit')
  for state, runs in sorted(not_done.items()):
    shown = ', '.join(runs[:5]) + (', ...' if len(runs) > 5 else '')
    notes.append(f'ignored {len(runs)} row(s) with state {state!r}: {shown}')
  for msg in bad:
    notes.append(f'skipped bad row: {msg}')
  return rows


# --------------------------------------------------------------------------------------
# Power laws


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
  return {
      'form': 'E + a * x^-b' if with_e else 'a * x^-b',
      'a': float(np.exp(c0)), 'b': float(b), 'E': float(e),
      'n': int(len(x)),
      'rmse_log': float(np.sqrt(np.mean(resid_log ** 2))),
      'r2_log': float(1 - np.sum(resid_log ** 2) / ss_tot) if ss_tot > 0 else None,
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


# --------------------------------------------------------------------------------------
# Chinchilla approach 3


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


def _params_dict(p: np.ndarray) -> dict:
  a, b, e, alpha, beta = (float(v) for v in p)
  return {'E': math.exp(e), 'A': math.exp(a), 'B': math.exp(b), 'alpha': alpha, 'beta': beta,
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


def fit_chinchilla(N: Sequence[float], D: Sequence[float], L: Sequence[float], *,
                   huber_delta: float = 1e-3, bootstrap: int = 200, seed: int = 0,
                   init_grid: dict | None = None, max_starts: int | None = 256) -> dict:
  """Fits L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, approach 3).

  Minimises the Huber loss (delta huber_delta) of LSE(a - alpha log N, b - beta log D, e) - log L
  with L-BFGS-B from points of init_grid (default: Hoffmann's grid, 4500 points) and keeps the
  best. To keep the fit to seconds, L-BFGS runs only from the max_starts grid points of lowest
  initial objective (None or 0: from all of them; on Chinchilla-like data the best 32 already
  reach the full grid's optimum).
  Bootstrap: `bootstrap` resamples of the rows (with replacement, seeded), each refitted from the
  best solution and two perturbations of it; 5/95 percentiles are reported.
  """
  N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
  if not (N.shape == D.shape == L.shape) or N.ndim != 1:
    raise FitError(f'N, D, L must be 1-D of equal length, got {N.shape}, {D.shape}, {L.shape}')
  n = len(N)
  if n < 5:
    raise FitError(f'chinchilla fit has 5 parameters (E, A, B, alpha, beta) but only {n} '
                   'point(s) were given: needs at least 5 finished runs')
  for name, v in (('N', N), ('D', D), ('L', L)):
    if not (np.all(np.isfinite(v)) and np.all(v > 0)):
      raise FitError(f'chinchilla fit needs finite positive {name}')
  if len(np.unique(N)) < 2 or len(np.unique(D)) < 2:
    raise FitError(f'chinchilla fit needs at least 2 distinct N and 2 distinct D (got '
                   f'{len(np.unique(N))} and {len(np.unique(D))}): alpha and beta are not '
                   'identifiable otherwise')
  lN, lD, lL = np.log(N), np.log(D), np.log(L)
  starts = _grid_starts(init_grid or DEFAULT_INIT_GRID)
  if max_starts and max_starts < len(starts):
    f0 = _batched_objective(starts, lN, lD, lL, huber_delta)
    starts = starts[np.argsort(f0, kind='stable')[:max_starts]]
  best, best_f, hits = _minimise(starts, lN, lD, lL, huber_delta)
  params = _params_dict(best)
  pred = chinchilla_loss(params, N, D)
  resid = np.log(L) - np.log(pred)
  out = {
      **params,
      'n': n, 'huber_delta': huber_delta, 'objective': best_f,
      'starts': int(len(starts)), 'starts_at_best': hits,
      'rmse_log': float(np.sqrt(np.mean(resid ** 2))),
      'max_abs_rel_error': float(np.max(np.abs(pred / L - 1))),
  }
  out.update(_bootstrap(best, N, D, L, huber_delta, bootstrap, seed))
  return out


_CI_KEYS = ('E', 'A', 'B', 'alpha', 'beta', 'a_exponent', 'b_exponent')


def _bootstrap(best: np.ndarray, N, D, L, delta: float, n_boot: int, seed: int) -> dict:
  """Row-resampling bootstrap; refits start from `best` and a small grid around it."""
  if n_boot <= 0:
    return {'bootstrap': {'resamples': 0}}
  a, b, e, alpha, beta = best
  starts = np.array([best, [a, b, e, alpha * 0.7, beta * 0.7], [a, b, e, alpha * 1.3, beta * 1.3]])
  rng = np.random.default_rng(seed)
  lN, lD, lL = np.log(N), np.log(D), np.log(L)
  samples = []
  for _ in range(n_boot):
    idx = rng.integers(0, len(N), size=len(N))
    if len(np.unique(N[idx])) < 2 or len(np.unique(D[idx])) < 2:
      continue
    try:
      p, _, _ = _minimise(starts, lN[idx], lD[idx], lL[idx], delta)
    except FitError:
      continue
    d = _params_dict(p)
    samples.append([d[k] if d[k] is not None else np.nan for k in _CI_KEYS])
  s = np.array(samples, dtype=np.float64).reshape(-1, len(_CI_KEYS))
  ci = {k: [float(np.nanpercentile(s[:, i], 5)), float(np.nanpercentile(s[:, i], 95))]
        for i, k in enumerate(_CI_KEYS)} if len(s) else {}
  return {'bootstrap': {'resamples': n_boot, 'succeeded': int(len(s)), 'seed': seed,
                        'percentiles': [5, 95], 'samples': {k: s[:, i].tolist()
                                                            for i, k in enumerate(_CI_KEYS)}},
          'ci': ci}


# --------------------------------------------------------------------------------------
# IsoFLOP (approach 2)


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


def fit_isoflop(rows: Sequence[dict], *, budget_tol: float = 0.1) -> dict:
  """Per budget a parabola L = c2 x^2 + c1 x + c0 in x = log10 N; N_opt at its vertex.

  D_opt comes from the rows' own tokens-vs-N relation within the budget (a line in log-log,
  which is C/(6N) when FLOPs are counted as 6ND); C/(6 N_opt) is recorded beside it. Then
  N_opt = kN C^a and D_opt = kD C^b across budgets whose vertex lies inside the sampled N.
  """
  groups, method = _group_budgets(rows, budget_tol)
  budgets, skipped = [], []
  for budget, idx in groups:
    n = np.array([rows[i]['N'] for i in idx])
    d = np.array([rows[i]['D'] for i in idx])
    ls = np.array([rows[i]['L'] for i in idx])
    if len(np.unique(n)) < 3:
      skipped.append(f'C={budget:.3g}: {len(np.unique(n))} distinct N (a parabola needs >= 3)')
      continue
    x = np.log10(n)
    c2, c1, c0 = np.polyfit(x, ls, 2)
    if c2 <= 0:
      skipped.append(f'C={budget:.3g}: loss against log N is not convex (no minimum)')
      continue
    x_opt = -c1 / (2 * c2)
    n_opt = 10.0 ** x_opt
    k0, k1 = _linfit(x, np.log10(d))
    entry = {
        'flops': float(budget), 'n': len(idx), 'runs': [rows[i]['run'] for i in idx],
        'parabola_log10N': [float(c2), float(c1), float(c0)],
        'N_opt': float(n_opt), 'D_opt': float(10.0 ** (k0 + k1 * x_opt)),
        'D_opt_6N': float(budget / (6 * n_opt)),
        'L_opt': float(c0 - c1 ** 2 / (4 * c2)),
        'inside_range': bool(x.min() <= x_opt <= x.max()),
    }
    budgets.append(entry)
  out = {'grouping': method, 'budgets': budgets, 'skipped_budgets': skipped}
  usable = [b for b in budgets if b['inside_range']]
  if len(usable) < len(budgets):
    out['note'] = (f'{len(budgets) - len(usable)} budget(s) have their minimum outside the '
                   'sampled N range and are left out of the power laws')
  if len(usable) < 2:
    raise FitError(f'needs >= 2 compute budgets with >= 3 distinct N each and the loss '
                   f'minimum inside the sampled N range; got {len(usable)} '
                   f'({"; ".join(skipped) or "see budgets"})')
  c = np.array([b['flops'] for b in usable])
  for key, name in (('N_opt', 'N_opt_vs_C'), ('D_opt', 'D_opt_vs_C')):
    fit = fit_power_law(c, [b[key] for b in usable], irreducible=False)
    # N_opt = k C^exponent; fit_power_law returns y = a x^-b.
    out[name] = {'k': fit['a'], 'exponent': -fit['b'], 'n': fit['n'], 'rmse_log': fit['rmse_log']}
  out['a'] = out['N_opt_vs_C']['exponent']
  out['b'] = out['D_opt_vs_C']['exponent']
  out['L_opt_vs_C'] = fit_power_law(c, [b['L_opt'] for b in usable])
  return out


# --------------------------------------------------------------------------------------
# Predictions


def predict(target_flops: Iterable[float], *, chinchilla: dict | None = None,
            isoflop: dict | None = None) -> list[dict]:
  """Compute-optimal N, D and loss at each target budget, from whichever fits are given."""
  out = []
  for c in target_flops:
    c = float(c)
    entry: dict[str, Any] = {'flops': c}
    if chinchilla is not None:
      try:
        n_opt, d_opt, l_opt = (float(v) for v in chinchilla_optimum(chinchilla, c))
        entry['chinchilla'] = {'N_opt': n_opt, 'D_opt': d_opt, 'loss': l_opt}
        samples = chinchilla.get('bootstrap', {}).get('samples')
        if samples and len(samples['alpha']):
          preds = []
          for E, A, B, al, be in zip(*(samples[k] for k in ('E', 'A', 'B', 'alpha', 'beta'))):
            if al > 0 and be > 0:
              p = {'E': E, 'A': A, 'B': B, 'alpha': al, 'beta': be}
              preds.append([float(v) for v in chinchilla_optimum(p, c)])
          if preds:
            arr = np.array(preds)
            entry['chinchilla']['ci'] = {
                k: [float(np.percentile(arr[:, i], 5)), float(np.percentile(arr[:, i], 95))]
                for i, k in enumerate(('N_opt', 'D_opt', 'loss'))}
      except FitError as e:
        entry['chinchilla'] = {'skipped': str(e)}
    if isoflop is not None and 'N_opt_vs_C' in isoflop:
      nf, df, lf = isoflop['N_opt_vs_C'], isoflop['D_opt_vs_C'], isoflop['L_opt_vs_C']
      entry['isoflop'] = {
          'N_opt': nf['k'] * c ** nf['exponent'], 'D_opt': df['k'] * c ** df['exponent'],
          'loss': lf['E'] + lf['a'] * c ** -lf['b'], 'loss_form': lf['form']}
    out.append(entry)
  return out


# --------------------------------------------------------------------------------------
# Plots


def _frontier(c: np.ndarray, l: np.ndarray) -> np.ndarray:
  """Indices of the compute-optimal frontier: rows with lower loss than every cheaper row."""
  order = np.argsort(c, kind='stable')
  keep, best = [], np.inf
  for i in order:
    if l[i] < best:
      keep.append(i)
      best = l[i]
  return np.array(keep, dtype=int)


def make_plots(rows: Sequence[dict], result: dict, out_dir: str) -> list[str]:
  """Writes the PNGs; returns their file names (relative to out_dir)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  metric = result['inputs']['metric']
  c = np.array([r['C'] for r in rows])
  l = np.array([r['L'] for r in rows])
  n = np.array([r['N'] for r in rows])
  written = []
  chin = result.get('chinchilla') if 'skipped' not in result.get('chinchilla', {}) else None
  iso = result.get('isoflop') if 'skipped' not in result.get('isoflop', {}) else None

  fig, ax = plt.subplots(figsize=(7, 5))
  sc = ax.scatter(c, l, c=np.log10(n), cmap='viridis', s=25, label='runs')
  fig.colorbar(sc, ax=ax, label='log10 N')
  f = _frontier(c, l)
  ax.plot(c[f], l[f], 'k-', lw=1.2, label='compute-optimal frontier (observed lower envelope)')
  targets = [p['flops'] for p in result.get('predictions', [])]
  c_line = np.geomspace(c.min() / 2, max([c.max() * 2] + targets), 200)
  if chin is not None and chin['alpha'] > 0 and chin['beta'] > 0:
    _, _, l_line = chinchilla_optimum(chin, c_line)
    ax.plot(c_line, l_line, 'r-', label='Chinchilla fit, compute-optimal L(C)')
    for p in result.get('predictions', []):
      if 'loss' in p.get('chinchilla', {}):
        ax.plot(p['flops'], p['chinchilla']['loss'], 'r*', ms=12)
  if iso is not None:
    ax.plot([b['flops'] for b in iso['budgets']], [b['L_opt'] for b in iso['budgets']], 'bs',
            mfc='none', label='IsoFLOP minima')
  ax.set_xscale('log')
  ax.set_xlabel('training FLOPs C')
  ax.set_ylabel(metric)
  ax.set_title('Loss against compute')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'loss_vs_compute.png'), dpi=110)
  plt.close(fig)
  written.append('loss_vs_compute.png')

  if iso is not None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    colors = plt.cm.plasma(np.linspace(0, 0.85, max(1, len(iso['budgets']))))
    for color, b in zip(colors, iso['budgets']):
      idx = [i for i, r in enumerate(rows) if r['run'] in set(b['runs'])]
      ax.scatter(n[idx], l[idx], color=color, s=20)
      x = np.linspace(np.log10(n[idx]).min() - 0.2, np.log10(n[idx]).max() + 0.2, 100)
      ax.plot(10 ** x, np.polyval(b['parabola_log10N'], x), color=color, lw=1,
              label=f'C={b["flops"]:.2g}')
      ax.plot(b['N_opt'], b['L_opt'], 'x', color=color, ms=10, mew=2)
    ax.set_xscale('log')
    ax.set_xlabel('N')
    ax.set_ylabel(metric)
    ax.set_title('IsoFLOP profiles (x: fitted minimum)')
    ax.legend(fontsize=7)
    cb = np.array([b['flops'] for b in iso['budgets']])
    ax2.scatter(cb, [b['N_opt'] for b in iso['budgets']], color='C0', label='N_opt')
    ax2.scatter(cb, [b['D_opt'] for b in iso['budgets']], color='C1', label='D_opt')
    cl = np.geomspace(cb.min() / 2, cb.max() * 2, 50)
    nf, df = iso['N_opt_vs_C'], iso['D_opt_vs_C']
    ax2.plot(cl, nf['k'] * cl ** nf['exponent'], 'C0-', label=f'N_opt ~ C^{nf["exponent"]:.3f}')
    ax2.plot(cl, df['k'] * cl ** df['exponent'], 'C1-', label=f'D_opt ~ C^{df["exponent"]:.3f}')
    ax2.set_xscale('log')
    ax2.set_yscale('log')
    ax2.set_xlabel('training FLOPs C')
    ax2.set_title('Compute-optimal N and D')
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'isoflop.png'), dpi=110)
    plt.close(fig)
    written.append('isoflop.png')

  if chin is not None:
    d = np.array([r['D'] for r in rows])
    pred = chinchilla_loss(chin, n, d)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(pred, l, s=20)
    lo, hi = min(pred.min(), l.min()), max(pred.max(), l.max())
    ax.plot([lo, hi], [lo, hi], 'k--', lw=1, label='y = x')
    ax.set_xlabel(f'fitted {metric}  (E + A/N^alpha + B/D^beta)')
    ax.set_ylabel(f'observed {metric}')
    ax.set_title(f'Parity: rmse(log) = {chin["rmse_log"]:.2e}')
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'parity.png'), dpi=110)
    plt.close(fig)
    written.append('parity.png')
  return written


# --------------------------------------------------------------------------------------
# Orchestration and CLI


def _jsonable(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


_DEFAULTS = {
    'results': None, 'metric': 'eval/bpb', 'params': 'non_embedding', 'out': None,
    'target_flops': None, 'fits': 'auto', 'bootstrap': 200, 'seed': 0, 'huber_delta': 1e-3,
    'max_starts': 256, 'budget_tol': 0.1, 'skip_bad': False, 'plots': True,
}


def _options(args: Any = None, **kwargs) -> dict:
  opts = dict(_DEFAULTS)
  if args is not None:
    opts.update({k: v for k, v in (vars(args) if not isinstance(args, dict) else args).items()
                 if k in _DEFAULTS})
  opts.update({k: v for k, v in kwargs.items() if k in _DEFAULTS})
  unknown = set(kwargs) - set(_DEFAULTS) - {'keep'}
  if unknown:
    raise FitError(f'unknown fit option(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}')
  if not opts['results']:
    raise FitError('no results file given: pass --results PATH (from `scaling sweep collect`)')
  if opts['metric'] not in METRICS:
    raise FitError(f'--metric must be one of {METRICS}, got {opts["metric"]!r}')
  fits = opts['fits']
  if isinstance(fits, str):
    fits = [f.strip() for f in fits.split(',') if f.strip()]
  if fits == ['auto']:
    opts['explicit'] = []
  else:
    bad = [f for f in fits if f not in FIT_NAMES]
    if bad:
      raise FitError(f'--fits: unknown fit(s) {bad}; choose from {FIT_NAMES} or auto')
    opts['explicit'] = list(fits)
  opts['targets'] = [float(t) for t in (opts['target_flops'] or DEFAULT_TARGETS)]
  if any(not t > 0 for t in opts['targets']):
    raise FitError(f'--target_flops must be > 0, got {opts["targets"]}')
  if opts['out'] is None:
    opts['out'] = os.path.dirname(os.path.abspath(opts['results']))
  return opts


def _with_notes(power_laws: dict, notes: list[str]) -> dict:
  for k, v in power_laws.items():
    if 'skipped' in v:
      notes.append(f'power_law {k} skipped: {v["skipped"]}')
  return power_laws


def fit_all(args: Any = None, **kwargs) -> dict:
  """Loads the results, runs every fit it can, writes fit.json and plots; never raises for a
  fit that the data cannot support (its reason is recorded), only for bad input.

  The returned dict is what fit.json holds, plus 'errors': reasons that make `scaling fit`
  fail (an explicitly requested fit that could not be done, or no fit at all). keep (keyword
  only, not a CLI option): a predicate on raw rows selecting those to fit.
  """
  o = _options(args, **kwargs)
  notes: list[str] = []
  rows = load_results(o['results'], o['metric'], params=o['params'], skip_bad=o['skip_bad'],
                      notes=notes, keep=kwargs.get('keep'))
  if not rows:
    raise FitError(f'{o["results"]}: no finished runs with usable values ({"; ".join(notes)})')
  arr = {k: np.array([r[k] for r in rows]) for k in ('N', 'D', 'C', 'L')}
  result: dict[str, Any] = {
      'inputs': {
          'results': os.path.abspath(o['results']), 'metric': o['metric'],
          'params_column': PARAM_COLUMNS[o['params']], 'rows_used': len(rows),
          'runs': [r['run'] for r in rows],
          'range': {k: [float(v.min()), float(v.max())] for k, v in arr.items()},
          'options': {k: o[k] for k in ('bootstrap', 'seed', 'huber_delta', 'max_starts',
                                        'budget_tol', 'fits', 'skip_bad')},
      },
      'notes': notes,
  }
  runs = {
      'power_law': lambda: _with_notes(fit_power_laws(rows), notes),
      'chinchilla': lambda: fit_chinchilla(arr['N'], arr['D'], arr['L'],
                                           huber_delta=o['huber_delta'], bootstrap=o['bootstrap'],
                                           seed=o['seed'], max_starts=o['max_starts'] or None),
      'isoflop': lambda: fit_isoflop(rows, budget_tol=o['budget_tol']),
  }
  wanted = o['explicit'] or list(FIT_NAMES)
  errors, fitted = [], []
  for name in FIT_NAMES:
    if name not in wanted:
      result[name] = {'skipped': 'not requested (--fits)'}
      continue
    try:
      result[name] = runs[name]()
      fitted.append(name)
    except FitError as e:
      result[name] = {'skipped': str(e)}
      notes.append(f'{name} skipped: {e}')
      if name in o['explicit']:
        errors.append(f'{name} was requested but cannot be fitted: {e}')
  if not fitted:
    errors.append('no fit is possible: ' + '; '.join(
        f'{k}: {result[k]["skipped"]}' for k in FIT_NAMES))
  result['predictions'] = predict(
      o['targets'], chinchilla=result['chinchilla'] if 'chinchilla' in fitted else None,
      isoflop=result['isoflop'] if 'isoflop' in fitted else None)
  os.makedirs(o['out'], exist_ok=True)
  result['plots'] = make_plots(rows, result, o['out']) if o['plots'] else []
  result['errors'] = errors
  result = _jsonable(result)
  with open(os.path.join(o['out'], 'fit.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1, allow_nan=False)
  return result


def main_fit(args: Any = None, **kwargs) -> dict:
  """fit_all, then FitError if an explicitly requested fit failed or nothing could be fitted."""
  result = fit_all(args, **kwargs)
  if result['errors']:
    raise FitError('; '.join(result['errors']))
  return result


def add_fit_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """Arguments of `scaling fit`."""
  parser.add_argument('--results', required=True, help='results.jsonl from `scaling sweep collect`')
  parser.add_argument('--metric', default=_DEFAULTS['metric'], choices=METRICS,
                      help='loss column to fit (default eval/bpb)')
  parser.add_argument('--params', default=_DEFAULTS['params'], choices=sorted(PARAM_COLUMNS),
                      help='N = non-embedding (default) or total parameter count')
  parser.add_argument('--out', default=None,
                      help='directory for fit.json and the plots (default: beside --results)')
  parser.add_argument('--target_flops', type=float, action='append', default=None,
                      help='compute budget to predict for (repeatable; default 1e21 and 1e23)')
  parser.add_argument('--fits', default='auto',
                      help='comma list of power_law,chinchilla,isoflop; a listed fit that the data '
                           'cannot support is an error (default auto: all that the data allows)')
  parser.add_argument('--bootstrap', type=int, default=_DEFAULTS['bootstrap'],
                      help='bootstrap resamples for the Chinchilla CIs (0: none)')
  parser.add_argument('--seed', type=int, default=0, help='bootstrap seed')
  parser.add_argument('--huber_delta', type=float, default=1e-3)
  parser.add_argument('--max_starts', type=int, default=_DEFAULTS['max_starts'],
                      help='L-BFGS from this many grid points of lowest initial loss '
                           '(0: all 4500 of Hoffmann et al.\'s grid)')
  parser.add_argument('--budget_tol', type=float, default=0.1,
                      help='relative FLOP tolerance that groups runs into one IsoFLOP budget')
  parser.add_argument('--skip_bad', action='store_true',
                      help='skip malformed rows with a warning instead of failing')
  parser.add_argument('--no_plots', dest='plots', action='store_false')
  return parser


def _fmt(v: float) -> str:
  return f'{v:.4g}'


def run_fit(args: argparse.Namespace) -> int:
  """`scaling fit`: returns the process exit status."""
  try:
    result = fit_all(args)
  except FitError as e:
    print(f'scaling fit: error: {e}', file=sys.stderr)
    return 2
  out = _options(args)['out']
  for note in result['notes']:
    print(f'note: {note}')
  c = result['chinchilla']
  if 'skipped' not in c:
    print(f'chinchilla: E={_fmt(c["E"])} A={_fmt(c["A"])} B={_fmt(c["B"])} '
          f'alpha={_fmt(c["alpha"])} beta={_fmt(c["beta"])} a={_fmt(c["a_exponent"])}')
  i = result['isoflop']
  if 'skipped' not in i:
    print(f'isoflop: N_opt ~ C^{_fmt(i["a"])}, D_opt ~ C^{_fmt(i["b"])} '
          f'({len(i["budgets"])} budgets)')
  for p in result['predictions']:
    for src in ('chinchilla', 'isoflop'):
      if src in p and 'N_opt' in p[src]:
        q = p[src]
        print(f'C={p["flops"]:.3g} ({src}): N_opt={_fmt(q["N_opt"])} D_opt={_fmt(q["D_opt"])} '
              f'loss={_fmt(q["loss"])}')
  print(f'wrote {os.path.join(out, "fit.json")}' +
        (f' and {", ".join(result["plots"])}' if result['plots'] else ''))
  if result['errors']:
    for e in result['errors']:
      print(f'scaling fit: error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(run_fit(add_fit_args(argparse.ArgumentParser(prog='scaling fit')).parse_args()))
