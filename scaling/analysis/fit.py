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

Fits that know what they know: besides the numbers, fit.json says what the data cannot tell.
Its diagnostic fields (all intervals are 5-95% bootstrap percentiles):

  warnings                  list of sentences, the first thing `scaling fit` prints and the
                            report shows; empty when nothing is flagged.
  design                    the design before any fit (isoflop_design): grouping, budgets[]
                            {flops, rows, sizes (distinct N), N_range, interior (lowest observed
                            loss strictly inside the sizes)}, budgets_with_3_sizes,
                            budgets_not_interior [flops], flags ⊆ {one_N_per_budget,
                            no_budget_with_3_sizes, fewer_than_2_budgets}.
  chinchilla.parameters     per E, A, B, alpha, beta, a_exponent, b_exponent: {value, ci, span
                            (hi/lo), bound, at_bound ('lower'|'upper'|None), constrained (False:
                            E/A/B interval spans > 10x or reaches <= 0, alpha/beta interval
                            reaches <= 0, a/b interval leaves (0, 1); None: no bootstrap)}.
                            E is at its lower bound when E < E_FLOOR * min L, alpha/beta when
                            below EXPONENT_RANGE[0] or above EXPONENT_RANGE[1].
  chinchilla.identified     False when any parameter is at a bound or unconstrained.
  chinchilla.exact, .dof    exact: as many points as parameters (5); then r2_log is None.
  power_law ... .exact      the same for each per-group power law (r2_log None when exact).
  isoflop.budgets[]         + sizes, interior, exact (3 sizes: the parabola has no residual), rmse.
  isoflop.ci {a, b}         bootstrap (rows resampled within each budget); isoflop.bootstrap
                            holds the samples (a, kN, b, kD, L_E, L_a, L_b) and succeeded.
  isoflop.N_opt_vs_C.exact  True when the line runs through 2 budgets.
  chinchilla.a_at_data      {a, ci, flops}: the N_opt ~ C^a that the parametric law implies over
                            the IsoFLOP budgets with D = C / (the rows' FLOPs per token), which
                            for small models is not C / 6N (LM head, attention), so it can differ
                            from a_exponent = beta / (alpha + beta) (implied_exponent).
  exponent_agreement        {a_approach2, ci_approach2, a_approach3 (a_at_data when present),
                            ci_approach3, approach3_form, difference, agree: False when the
                            intervals do not overlap, None without both}.
  held_out                  refit without the largest budget (held_out_check): held_out_flops,
                            held_out_runs, train_max_flops, observed {kind ('parabola vertex' |
                            'best row'), bracketed, N_opt, L_opt, sizes}, approach2/approach3
                            (approach 3 at the rows' FLOPs per token, as the observed minimum)
                            {N_opt, loss, loss_error = predicted/observed - 1, N_opt_ratio =
                            predicted/observed (None when the held-out budget does not bracket
                            its minimum)} or {skipped}; or {skipped: reason}.
  predictions[]             {flops, extrapolation = flops / largest sampled C, chinchilla and
                            isoflop: {N_opt, D_opt, loss, ci {N_opt, D_opt, loss}, N_opt_span,
                            constrained (False: N_opt interval spans > 10x, printed as
                            'unconstrained' instead of a number; None: no interval)}}; the
                            parametric optimum there is closed-form under C = 6 N D (large
                            models, where the head's FLOPs are a small part).
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


def is_metric(name: str) -> bool:
  """One of METRICS, or eval/<tag>/bpb | eval/<tag>/loss of a tagged eval set (scaling/train/evalsets.py)."""
  parts = str(name).split('/')
  return name in METRICS or (len(parts) == 3 and parts[0] == 'eval' and bool(parts[1]) and parts[2] in ('bpb', 'loss'))
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
  ss_tot = float(np.sum((lL - lL.mean()) ** 2))
  out = {
      **params,
      'n': n, 'exact': n == 5, 'dof': n - 5, 'huber_delta': huber_delta, 'objective': best_f,
      'r2_log': float(1 - np.sum(resid ** 2) / ss_tot) if n > 5 and ss_tot > 0 else None,
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


def isoflop_design(rows: Sequence[dict], *, budget_tol: float = 0.1) -> dict:
  """What the design can show, before any fit: per budget its distinct sizes and whether the
  lowest observed loss lies strictly inside them (bracketed); flags for a design of one N per
  budget and for budgets too thin for a parabola (fewer than 3 sizes)."""
  groups, method = _group_budgets(rows, budget_tol)
  budgets = []
  for budget, idx in groups:
    n = np.array([rows[i]['N'] for i in idx])
    ls = np.array([rows[i]['L'] for i in idx])
    sizes = np.unique(n)
    best_n = n[int(np.argmin(ls))]
    budgets.append({'flops': float(budget), 'rows': len(idx), 'sizes': int(len(sizes)),
                    'N_range': [float(sizes[0]), float(sizes[-1])],
                    'interior': bool(len(sizes) >= 3 and sizes[0] < best_n < sizes[-1])})
  counts = [b['sizes'] for b in budgets]
  flags = []
  if counts and max(counts) == 1:
    flags.append('one_N_per_budget')
  if counts and max(counts) < 3:
    flags.append('no_budget_with_3_sizes')
  if len(budgets) < 2:
    flags.append('fewer_than_2_budgets')
  return {'grouping': method, 'budgets': budgets, 'flags': flags,
          'budgets_with_3_sizes': int(sum(c >= 3 for c in counts)),
          'budgets_not_interior': [b['flops'] for b in budgets
                                   if b['sizes'] >= 3 and not b['interior']]}


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


def _isoflop_bootstrap(rows: Sequence[dict], groups: list[list[int]], c: np.ndarray,
                       n_boot: int, seed: int) -> dict:
  """Resamples the rows within each budget (redrawn while it has < 3 sizes), refits every
  parabola and the lines; a replicate where some budget has no minimum or a vertex outside its
  sizes is dropped (fit.json: bootstrap.succeeded)."""
  if n_boot <= 0:
    return {'bootstrap': {'resamples': 0}}
  rng = np.random.default_rng(seed)
  keys = ('a', 'kN', 'b', 'kD', 'L_E', 'L_a', 'L_b')
  samples = []
  for _ in range(n_boot):
    pts = []
    for idx in groups:
      for _ in range(20):   # redraw a resample with < 3 sizes (no parabola): conditional bootstrap
        pick = [idx[j] for j in rng.integers(0, len(idx), size=len(idx))]
        n, d, ls = (np.array([rows[i][k] for i in pick]) for k in ('N', 'D', 'L'))
        if len(np.unique(n)) >= 3:
          break
      par = _parabola(n, d, ls)
      if par is None or not np.log10(n.min()) <= par[1] <= np.log10(n.max()):
        break
      coef, x_opt, y_opt = par
      pts.append((10 ** x_opt, 10 ** y_opt, coef[2] - coef[1] ** 2 / (4 * coef[0])))
    if len(pts) < len(groups):
      continue
    n_o, d_o, l_o = (np.array(v) for v in zip(*pts))
    try:
      lines = _isoflop_lines(c, n_o, d_o, l_o)
    except FitError:
      continue
    nf, df, lf = lines['N_opt_vs_C'], lines['D_opt_vs_C'], lines['L_opt_vs_C']
    samples.append([nf['exponent'], nf['k'], df['exponent'], df['k'], lf['E'], lf['a'], lf['b']])
  s = np.array(samples, dtype=np.float64).reshape(-1, len(keys))
  ci = {k: [float(np.percentile(s[:, i], 5)), float(np.percentile(s[:, i], 95))]
        for i, k in enumerate(keys) if k in ('a', 'b')} if len(s) >= 2 else {}
  return {'bootstrap': {'resamples': n_boot, 'succeeded': int(len(s)), 'seed': seed,
                        'percentiles': [5, 95],
                        'samples': {k: s[:, i].tolist() for i, k in enumerate(keys)}},
          'ci': ci}


def fit_isoflop(rows: Sequence[dict], *, budget_tol: float = 0.1, bootstrap: int = 200,
                seed: int = 0) -> dict:
  """Per budget a parabola L = c2 x^2 + c1 x + c0 in x = log10 N; N_opt at its vertex.

  D_opt comes from the rows' own tokens-vs-N relation within the budget (a line in log-log,
  which is C/(6N) when FLOPs are counted as 6ND); C/(6 N_opt) is recorded beside it. Then
  N_opt = kN C^a and D_opt = kD C^b across budgets whose vertex lies inside the sampled N,
  with 5-95% bootstrap intervals of a and b (rows resampled within each budget).
  Each budget records `interior` (its lowest observed loss is strictly inside its sizes) and
  `exact` (3 sizes: the parabola passes through every point).
  """
  groups, method = _group_budgets(rows, budget_tol)
  budgets, skipped, used = [], [], []
  for budget, idx in groups:
    n, d, ls = (np.array([rows[i][k] for i in idx]) for k in ('N', 'D', 'L'))
    sizes = np.unique(n)
    par = _parabola(n, d, ls)
    if par is None:
      skipped.append(f'C={budget:.3g}: ' + (f'{len(sizes)} distinct N (a parabola needs >= 3)'
                     if len(sizes) < 3 else 'loss against log N is not convex (no minimum)'))
      continue
    (c2, c1, c0), x_opt, y_opt = par
    x = np.log10(n)
    resid = ls - np.polyval([c2, c1, c0], x)
    entry = {
        'flops': float(budget), 'n': len(idx), 'sizes': int(len(sizes)),
        'runs': [rows[i]['run'] for i in idx], 'parabola_log10N': [c2, c1, c0],
        'N_opt': float(10.0 ** x_opt), 'D_opt': float(10.0 ** y_opt),
        'D_opt_6N': float(budget / (6 * 10.0 ** x_opt)), 'L_opt': float(c0 - c1 ** 2 / (4 * c2)),
        'inside_range': bool(x.min() <= x_opt <= x.max()),
        'interior': bool(sizes[0] < n[int(np.argmin(ls))] < sizes[-1]),
        'exact': bool(len(sizes) == 3), 'rmse': float(np.sqrt(np.mean(resid ** 2))),
    }
    budgets.append(entry)
    if entry['inside_range']:
      used.append(idx)
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
  out.update(_isoflop_lines(c, *(np.array([b[k] for b in usable])
                                 for k in ('N_opt', 'D_opt', 'L_opt'))))
  out['a'] = out['N_opt_vs_C']['exponent']
  out['b'] = out['D_opt_vs_C']['exponent']
  out['budgets_used'] = len(usable)
  out['flops_range'] = [float(c.min()), float(c.max())]
  out.update(_isoflop_bootstrap(rows, used, c, bootstrap, seed))
  return out


# --------------------------------------------------------------------------------------
# Diagnostics: parameters at their bounds, exact fits, agreement, held-out budget

# The range each Chinchilla parameter can take (the fit is unbounded in log E, log A, log B,
# alpha and beta; these are where a value stops meaning anything): E in [0, min L] (E/min L
# under E_FLOOR is "at 0": the fit drove the irreducible loss away), exponents in [0, 3].
E_FLOOR = 1e-3
EXPONENT_RANGE = (1e-3, 3.0)
SPAN_UNCONSTRAINED = 10.0   # an interval of a positive quantity wider than this factor
N_PARAMS = {'chinchilla': 5, 'parabola': 3, 'line': 2}


def _interval_state(lo: float, hi: float, positive: bool) -> tuple[float | None, bool]:
  """(hi/lo or None, constrained) of an interval: a positive quantity is unconstrained when it
  spans more than SPAN_UNCONSTRAINED or reaches <= 0; an exponent when it reaches <= 0."""
  if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
    return None, False
  if lo <= 0:
    return None, False
  span = hi / lo
  return span, (span <= SPAN_UNCONSTRAINED) if positive else True


def chinchilla_parameters(chin: dict, min_loss: float) -> dict:
  """Each fitted parameter of the parametric law with its 5-95% interval and flags:
  at_bound ('lower' / 'upper' / None) and constrained (interval finite, positive, and for E, A,
  B within a factor SPAN_UNCONSTRAINED)."""
  out = {}
  ci = chin.get('ci', {})
  for k in ('E', 'A', 'B', 'alpha', 'beta'):
    v = chin[k]
    lo, hi = ci.get(k, [None, None])
    if k == 'E':
      at = 'lower' if v < E_FLOOR * min_loss else ('upper' if v > (1 - E_FLOOR) * min_loss
                                                    else None)
      bound = [0.0, float(min_loss)]
    elif k in ('alpha', 'beta'):
      at = 'lower' if v < EXPONENT_RANGE[0] else ('upper' if v > EXPONENT_RANGE[1] else None)
      bound = [0.0, EXPONENT_RANGE[1]]
    else:
      at, bound = None, None
    span, constrained = _interval_state(lo, hi, positive=k in ('E', 'A', 'B'))
    if lo is None:
      constrained = None   # no bootstrap: unknown
    out[k] = {'value': v, 'ci': [lo, hi] if lo is not None else None, 'span': span,
              'bound': bound, 'at_bound': at, 'constrained': constrained}
  for k in ('a_exponent', 'b_exponent'):   # beta/(alpha+beta) and alpha/(alpha+beta) lie in (0, 1)
    lo, hi = ci.get(k, [None, None])
    ok = None if lo is None else bool(0 < lo and hi < 1)
    out[k] = {'value': chin[k], 'ci': [lo, hi] if lo is not None else None, 'span': None,
              'bound': [0.0, 1.0], 'at_bound': None, 'constrained': ok}
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


def implied_exponent(chin: dict, rows: Sequence[dict], flops: Sequence[float]) -> dict:
  """The a of N_opt ~ C^a that the parametric law implies over the sampled budgets `flops`,
  with the rows' FLOPs accounting (C / D = fpt(N), which for small models is far from 6 N: the
  LM head and attention): the slope of log N_opt against log C, for the fit and for every
  bootstrap sample (5-95% interval). With C = 6 N D exactly it is beta / (alpha + beta)."""
  n, c, d = (np.array([r[k] for r in rows]) for k in ('N', 'C', 'D'))
  fpt = _flops_per_token(n, c, d)
  n_range = (float(n.min()) / 100, float(n.max()) * 100)
  lc = np.log(np.asarray(flops, dtype=np.float64))

  def slope(p):
    ln = [math.log(accounted_optimum(p, f, fpt, n_range)[0]) for f in flops]
    return float(np.polyfit(lc, ln, 1)[0])

  out = {'a': slope(chin), 'flops': [float(f) for f in flops]}
  s = chin.get('bootstrap', {}).get('samples')
  if s and len(s['alpha']) >= 2:
    vals = [slope({'E': E, 'A': A, 'B': B, 'alpha': al, 'beta': be})
            for E, A, B, al, be in zip(*(s[k] for k in ('E', 'A', 'B', 'alpha', 'beta')))
            if al > 0 and be > 0]
    if len(vals) >= 2:
      out['ci'] = _interval(vals)
  return out


def exponent_agreement(chin: dict | None, iso: dict | None) -> dict | None:
  """Approach 2's a (IsoFLOP) beside approach 3's (the exponent the parametric law implies over
  the sampled budgets, chin['a_at_data'], else beta/(alpha+beta)): disagree when their 5-95%
  intervals do not overlap; without an interval on either side, not decidable (None)."""
  if chin is None or iso is None or chin.get('a_exponent') is None:
    return None
  at = chin.get('a_at_data')
  a3, c3 = (at['a'], at.get('ci')) if at else (chin['a_exponent'],
                                                chin.get('ci', {}).get('a_exponent'))
  a2, c2 = iso['a'], iso.get('ci', {}).get('a')
  out = {'a_approach2': a2, 'ci_approach2': c2, 'a_approach3': a3, 'ci_approach3': c3,
         'approach3_form': 'over the sampled budgets' if at else 'beta / (alpha + beta)',
         'difference': a2 - a3}
  if c2 and c3 and None not in c2 + c3:
    out['agree'] = bool(c2[0] <= c3[1] and c3[0] <= c2[1])
  else:
    out['agree'] = None
  return out


def _observed_minimum(rows: Sequence[dict], idx: list[int]) -> dict:
  """A budget's minimum: its parabola's vertex when the budget brackets it (>= 3 sizes, lowest
  loss interior), else its best row, flagged as not bracketed."""
  n, d, ls = (np.array([rows[i][k] for i in idx]) for k in ('N', 'D', 'L'))
  par = _parabola(n, d, ls)
  sizes = np.unique(n)
  interior = len(sizes) >= 3 and sizes[0] < n[int(np.argmin(ls))] < sizes[-1]
  if par is not None and interior:
    (c2, c1, c0), x_opt, _ = par
    return {'kind': 'parabola vertex', 'bracketed': True, 'N_opt': float(10 ** x_opt),
            'L_opt': float(c0 - c1 ** 2 / (4 * c2)), 'sizes': int(len(sizes))}
  j = int(np.argmin(ls))
  return {'kind': 'best row', 'bracketed': False, 'N_opt': float(n[j]), 'L_opt': float(ls[j]),
          'sizes': int(len(sizes))}


def held_out_check(rows: Sequence[dict], *, budget_tol: float = 0.1, huber_delta: float = 1e-3,
                   max_starts: int | None = 256, seed: int = 0) -> dict:
  """Refits both approaches without the largest compute budget and predicts that budget's
  minimum loss and N_opt. loss_error = predicted / observed - 1; N_opt_ratio = predicted /
  observed (None when the held-out budget does not bracket its minimum: then its best row is
  only an upper bound on the minimum loss and says nothing about N_opt)."""
  groups, _ = _group_budgets(rows, budget_tol)
  if len(groups) < 3:
    raise FitError(f'held-out check needs >= 3 compute budgets (2 to fit, 1 held out); '
                   f'got {len(groups)}')
  c_out, idx_out = max(groups, key=lambda g: g[0])
  held = set(idx_out)
  train = [r for i, r in enumerate(rows) if i not in held]
  obs = _observed_minimum(rows, idx_out)
  out = {'held_out_flops': c_out, 'held_out_runs': [rows[i]['run'] for i in idx_out],
         'train_max_flops': max(r['C'] for r in train), 'observed': obs}
  approaches = {
      'approach2': lambda: fit_isoflop(train, budget_tol=budget_tol, bootstrap=0),
      'approach3': lambda: fit_chinchilla(*(np.array([r[k] for r in train]) for k in 'NDL'),
                                          huber_delta=huber_delta, bootstrap=0, seed=seed,
                                          max_starts=max_starts),
  }
  for name, run in approaches.items():
    try:
      f = run()
      if name == 'approach2':
        nf, lf = f['N_opt_vs_C'], f['L_opt_vs_C']
        n_pred, l_pred = nf['k'] * c_out ** nf['exponent'], lf['E'] + lf['a'] * c_out ** -lf['b']
      else:   # with the rows' own FLOPs per token, as the observed minimum has
        n, c, d = (np.array([r[k] for r in train]) for k in ('N', 'C', 'D'))
        n_range = (float(n.min()) / 100, float(n.max()) * 100)
        n_pred, _, l_pred = accounted_optimum(f, c_out, _flops_per_token(n, c, d), n_range)
        if not n_range[0] * 1.01 < n_pred < n_range[1] / 1.01:
          out[name] = {'optimum_at_search_bound': True}   # no optimum within 100x of the sizes
    except FitError as e:
      out[name] = {'skipped': str(e)}
      continue
    if name == 'approach2':
      out[name] = {'loss_form': f['L_opt_vs_C']['form']}
    out[name] = {**out.get(name, {}), 'N_opt': float(n_pred), 'loss': float(l_pred),
                 'loss_error': float(l_pred / obs['L_opt'] - 1),
                 'N_opt_ratio': float(n_pred / obs['N_opt']) if obs['bracketed'] else None}
  return out


# --------------------------------------------------------------------------------------
# Predictions


def _interval(values: Sequence[float]) -> list[float]:
  return [float(np.percentile(values, 5)), float(np.percentile(values, 95))]


def _with_interval(entry: dict, arr: np.ndarray | None, keys: Sequence[str]) -> dict:
  """Adds ci (5-95%) per key, the N_opt interval's span and whether it is constrained."""
  if arr is None or len(arr) < 2:
    entry['constrained'] = None   # no interval: cannot say
    return entry
  entry['ci'] = {k: _interval(arr[:, i]) for i, k in enumerate(keys)}
  lo, hi = entry['ci']['N_opt']
  entry['N_opt_span'] = hi / lo if lo > 0 else None
  entry['constrained'] = bool(lo > 0 and hi / lo <= SPAN_UNCONSTRAINED)
  return entry


def _chinchilla_prediction(chin: dict, c: float) -> dict:
  n_opt, d_opt, l_opt = (float(v) for v in chinchilla_optimum(chin, c))
  entry = {'N_opt': n_opt, 'D_opt': d_opt, 'loss': l_opt}
  samples = chin.get('bootstrap', {}).get('samples')
  preds = []
  if samples and len(samples['alpha']):
    for E, A, B, al, be in zip(*(samples[k] for k in ('E', 'A', 'B', 'alpha', 'beta'))):
      if al > 0 and be > 0:
        p = {'E': E, 'A': A, 'B': B, 'alpha': al, 'beta': be}
        preds.append([float(v) for v in chinchilla_optimum(p, c)])
    n_all = len(samples['alpha'])
    if len(preds) < n_all:   # a resample without an optimum: the interval is open
      entry['resamples_without_optimum'] = n_all - len(preds)
  entry = _with_interval(entry, np.array(preds) if preds else None, ('N_opt', 'D_opt', 'loss'))
  if samples and entry.get('resamples_without_optimum', 0) > 0.05 * len(samples['alpha']):
    entry['constrained'] = False
  return entry


def _isoflop_prediction(iso: dict, c: float) -> dict:
  nf, df, lf = iso['N_opt_vs_C'], iso['D_opt_vs_C'], iso['L_opt_vs_C']
  entry = {'N_opt': nf['k'] * c ** nf['exponent'], 'D_opt': df['k'] * c ** df['exponent'],
           'loss': lf['E'] + lf['a'] * c ** -lf['b'], 'loss_form': lf['form']}
  s = iso.get('bootstrap', {}).get('samples')
  arr = None
  if s and len(s['a']):
    arr = np.stack([np.array(s['kN']) * c ** np.array(s['a']),
                    np.array(s['kD']) * c ** np.array(s['b']),
                    np.array(s['L_E']) + np.array(s['L_a']) * c ** -np.array(s['L_b'])], 1)
  return _with_interval(entry, arr, ('N_opt', 'D_opt', 'loss'))


def predict(target_flops: Iterable[float], *, chinchilla: dict | None = None,
            isoflop: dict | None = None, max_flops: float | None = None) -> list[dict]:
  """Compute-optimal N, D and loss at each target budget, from whichever fits are given, each
  with its 5-95% interval (from the fit's bootstrap samples) and `constrained` (False when the
  N_opt interval spans more than SPAN_UNCONSTRAINED: print it as unconstrained, not a number).
  extrapolation = target / max_flops (the largest sampled compute)."""
  out = []
  for c in target_flops:
    c = float(c)
    entry: dict[str, Any] = {'flops': c}
    if max_flops:
      entry['extrapolation'] = c / max_flops
    if chinchilla is not None:
      try:
        entry['chinchilla'] = _chinchilla_prediction(chinchilla, c)
      except FitError as e:
        entry['chinchilla'] = {'skipped': str(e)}
    if isoflop is not None and 'N_opt_vs_C' in isoflop:
      entry['isoflop'] = _isoflop_prediction(isoflop, c)
    out.append(entry)
  return out


def _warn_chinchilla(chin: dict, warn: list[str]) -> None:
  if chin.get('exact'):
    warn.append(f'chinchilla: exact fit ({chin["n"]} points for 5 parameters): no residual '
                'degree of freedom, so the fit quality (r2) is not defined')
  for k, p in chin['parameters'].items():
    if p['at_bound']:
      warn.append(f'chinchilla: {k} = {p["value"]:.3g} is at its {p["at_bound"]} bound '
                  f'{p["bound"][0 if p["at_bound"] == "lower" else 1]:.3g}: the data do not '
                  f'determine it')
    elif p['constrained'] is False:
      lo, hi = p['ci'] or [float('nan')] * 2
      why = (f'spans {p["span"]:.3g}x' if p['span'] else
             'leaves (0, 1)' if k.endswith('_exponent') else 'reaches <= 0')
      warn.append(f'chinchilla: {k} is unconstrained (5-95% interval {lo:.3g} to {hi:.3g} {why})')


def _warn_design(design: dict, iso: dict | None, warn: list[str]) -> None:
  flags = design['flags']
  if 'one_N_per_budget' in flags:
    warn.append('design: every compute budget has one model size: no IsoFLOP profile, so the '
                'data cannot locate a compute-optimal N; a parametric L(N, D) fit would place it '
                'by its functional form alone')
  elif 'no_budget_with_3_sizes' in flags:
    warn.append('design: no compute budget has >= 3 model sizes: no IsoFLOP parabola can be fitted')
  if design['budgets_not_interior']:
    warn.append('design: the lowest loss of budget(s) C=' + ', '.join(
        f'{c:.3g}' for c in design['budgets_not_interior']) + ' is at an end of their sizes: '
        'the minimum is not bracketed (add sizes beyond that end)')
  if iso is not None:
    exact = [b['flops'] for b in iso['budgets'] if b['exact']]
    if exact:
      warn.append(f'isoflop: {len(exact)} budget(s) have 3 sizes: their parabola is exact (no check '
                  'of the parabola)')
    if iso['N_opt_vs_C'].get('exact'):
      warn.append('isoflop: N_opt ~ C^a through 2 budgets is exact (no check of the power law, no '
                  'interval of a)')


def diagnose(rows: Sequence[dict], result: dict) -> list[str]:
  """Flags and warnings over every fit in result (which it annotates in place): parameters at
  bounds or unconstrained, exact fits, design flaws, approach 2 vs 3, unconstrained predictions."""
  warn: list[str] = []
  chin = result['chinchilla'] if 'skipped' not in result['chinchilla'] else None
  iso = result['isoflop'] if 'skipped' not in result['isoflop'] else None
  if chin is not None:
    chin['parameters'] = chinchilla_parameters(chin, min(r['L'] for r in rows))
    chin['identified'] = not any(p['at_bound'] or p['constrained'] is False
                                 for p in chin['parameters'].values())
    _warn_chinchilla(chin, warn)
  _warn_design(result['design'], iso, warn)
  if iso is None and result['isoflop']['skipped'] != 'not requested (--fits)':
    warn.append('approach 2 (IsoFLOP) not fitted: no compute-optimal N is measured from the data '
                f'({result["isoflop"]["skipped"][:120]}...)')
  pl = result.get('power_law', {})
  n_exact = sum(g.get('exact', False) for k in ('vs_N', 'vs_D') for g in pl.get(k, {}).get('groups', []))
  if n_exact and chin is None and iso is None:   # else the flag column shows it
    warn.append(f'power_law: {n_exact} group fit(s) are exact (as many points as parameters): '
                'their exponents are not checked by the data')
  if chin is not None and iso is not None and chin['alpha'] > 0 and chin['beta'] > 0:
    chin['a_at_data'] = implied_exponent(chin, rows, [b['flops'] for b in iso['budgets']
                                                      if b['inside_range']])
  agree = exponent_agreement(chin, iso)
  result['exponent_agreement'] = agree
  if agree is not None and agree['agree'] is False:
    warn.append(f'approaches disagree: N_opt ~ C^a with a = {agree["a_approach2"]:.3g} '
                f'{_fmt_ci(agree["ci_approach2"])} (IsoFLOP) against {agree["a_approach3"]:.3g} '
                f'{_fmt_ci(agree["ci_approach3"])} (parametric): their 5-95% intervals do not overlap')
  ho = result.get('held_out', {})
  if ho.get('approach3', {}).get('optimum_at_search_bound'):
    warn.append('held-out: the parametric refit has no compute-optimal N within 100x of the sampled '
                f'sizes at C={ho["held_out_flops"]:.3g} (its N_opt ran to the search bound)')
  if 'observed' in ho and not ho['observed']['bracketed']:
    warn.append(f'held-out: budget C={ho["held_out_flops"]:.3g} does not bracket its minimum '
                f'({ho["observed"]["sizes"]} size(s)): its best run only bounds the minimum loss, '
                'and no N_opt error can be measured')
  for p in result['predictions']:
    for src in ('chinchilla', 'isoflop'):
      q = p.get(src, {})
      if q.get('constrained') is False:
        span = q.get('N_opt_span')
        warn.append(f'prediction C={p["flops"]:.3g} ({src}): N_opt unconstrained (' +
                    (f'5-95% interval spans {span:.3g}x' if span else 'interval reaches <= 0 or '
                     'some resamples have no optimum') +
                    f'; {p.get("extrapolation", float("nan")):.3g}x beyond the largest sampled compute)')
  return warn


def _fmt_ci(ci) -> str:
  return f'[{ci[0]:.3g}, {ci[1]:.3g}]' if ci and None not in ci else '(no interval)'


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


def parametric_frontier(chin: dict, rows: Sequence[dict], flops: np.ndarray) -> np.ndarray:
  """The fitted law's lowest loss at each training-FLOPs value where there is data, with
  D = C / flops_per_token(N) as in the rows (not C = 6 N D): min of L(N, C / fpt(N)) over the
  N in [min N, max N] whose D lies in [min D, max D]; NaN where no such N exists."""
  n, c, d = (np.array([r[k] for r in rows]) for k in ('N', 'C', 'D'))
  fpt = _flops_per_token(n, c, d)
  grid = np.geomspace(n.min(), n.max(), 400)
  out = []
  for f in flops:
    dg = f / fpt(grid)
    ok = (dg >= d.min() * (1 - 1e-9)) & (dg <= d.max() * (1 + 1e-9))
    out.append(np.min(chinchilla_loss(chin, grid[ok], dg[ok])) if ok.any() else np.nan)
  return np.array(out)


def _plot_loss_vs_compute(plt, rows, result, chin, iso, path):
  """Runs against compute with the parametric law drawn through them: its compute-optimal
  frontier (D = C / FLOPs per token of the rows) and, for a grid of few sizes, one curve per size."""
  metric = result['inputs']['metric']
  c, l, n, d = (np.array([r[k] for r in rows]) for k in ('C', 'L', 'N', 'D'))
  fig, ax = plt.subplots(figsize=(7.5, 5))
  sizes = np.unique(n)
  norm = plt.Normalize(np.log10(sizes.min()), np.log10(sizes.max()) + 1e-9)
  sc = ax.scatter(c, l, c=np.log10(n), cmap='viridis', norm=norm, s=25, zorder=3, label='runs')
  fig.colorbar(sc, ax=ax, label='log10 N')
  if chin is not None and len(sizes) <= 8:
    for size in sizes:
      m = n == size
      per_token = float(np.median(c[m] / d[m]))
      cl = np.geomspace(c[m].min() / 2, c[m].max() * 2, 50)
      ax.plot(cl, chinchilla_loss(chin, size, cl / per_token), color=plt.cm.viridis(
          norm(np.log10(size))), lw=0.8, alpha=0.8)
  f = _frontier(c, l)
  ax.plot(c[f], l[f], 'k:', lw=1.2, label='observed lower envelope')
  if chin is not None:
    cl = np.geomspace(c.min() / 2, c.max() * 2, 80)
    ax.plot(cl, parametric_frontier(chin, rows, cl), 'r-', lw=1.5,
            label='parametric fit: lowest loss at C within the sampled N and D' + (
                '' if len(sizes) > 8 else ' (thin: per size)'))
  if iso is not None:
    ax.plot([b['flops'] for b in iso['budgets']], [b['L_opt'] for b in iso['budgets']], 'ks',
            mfc='none', ms=8, label='IsoFLOP minima (parabola)')
  ax.set_xscale('log')
  ax.set_xlabel('training FLOPs C')
  ax.set_ylabel(metric)
  if chin is not None and not chin.get('identified', True):
    ax.set_title('Loss against compute: parametric fit NOT identified (see warnings)', color='red')
  else:
    ax.set_title('Loss against compute')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _band(iso: dict, cl: np.ndarray, k: str, e: str) -> tuple | None:
  s = iso.get('bootstrap', {}).get('samples')
  if not s or len(s[e]) < 2:
    return None
  lines = np.array(s[k])[:, None] * cl[None, :] ** np.array(s[e])[:, None]
  return np.percentile(lines, 5, axis=0), np.percentile(lines, 95, axis=0)


def _plot_isoflop(plt, rows, result, iso, path):
  """Left: loss against N per budget with the parabola and its minimum (open marker: minimum
  not interior). Right: N_opt and D_opt against C with the fitted lines and 5-95% bands."""
  metric = result['inputs']['metric']
  n, l = np.array([r['N'] for r in rows]), np.array([r['L'] for r in rows])
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
  colors = plt.cm.plasma(np.linspace(0, 0.85, max(1, len(iso['budgets']))))
  for color, b in zip(colors, iso['budgets']):
    idx = [i for i, r in enumerate(rows) if r['run'] in set(b['runs'])]
    ax.scatter(n[idx], l[idx], color=color, s=20)
    x = np.linspace(np.log10(n[idx]).min() - 0.2, np.log10(n[idx]).max() + 0.2, 100)
    flag = '' if b['interior'] else ' (min at an end)'
    ax.plot(10 ** x, np.polyval(b['parabola_log10N'], x), color=color, lw=1,
            label=f'C={b["flops"]:.2g}{flag}')
    ax.plot(b['N_opt'], b['L_opt'], 'o' if b['interior'] else 'x', color=color, ms=9, mew=2,
            mfc='none')
  ax.set_xscale('log')
  ax.set_xlabel('N')
  ax.set_ylabel(metric)
  ax.set_title('IsoFLOP profiles (o: fitted minimum; x: not interior)')
  ax.legend(fontsize=7)
  used = [b for b in iso['budgets'] if b['inside_range']]
  cb = np.array([b['flops'] for b in used])
  cl = np.geomspace(cb.min() / 2, cb.max() * 2, 50)
  for key, k, e, color in (('N_opt', 'kN', 'a', 'C0'), ('D_opt', 'kD', 'b', 'C1')):
    fit = iso[f'{key}_vs_C']
    ax2.scatter(cb, [b[key] for b in used], color=color)
    ci = iso.get('ci', {}).get(e)
    label = f'{key} ~ C^{fit["exponent"]:.3f}' + (f' [{ci[0]:.2f}, {ci[1]:.2f}]' if ci else '')
    ax2.plot(cl, fit['k'] * cl ** fit['exponent'], '-', color=color, label=label)
    band = _band(iso, cl, k, e)
    if band is not None:
      ax2.fill_between(cl, *band, color=color, alpha=0.2, lw=0)
  ax2.set_xscale('log')
  ax2.set_yscale('log')
  ax2.set_xlabel('training FLOPs C')
  ax2.set_title('Compute-optimal N and D (band: 5-95% bootstrap)')
  ax2.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_parity_residuals(plt, rows, result, chin, iso, out_dir):
  metric = result['inputs']['metric']
  c, l, n, d = (np.array([r[k] for r in rows]) for k in ('C', 'L', 'N', 'D'))
  written = []
  if chin is not None:
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
  if chin is None and iso is None:
    return written
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  if chin is not None:
    sc = axes[0].scatter(c, 100 * (l / chinchilla_loss(chin, n, d) - 1), c=np.log10(n), s=20)
    fig.colorbar(sc, ax=axes[0], label='log10 N')
  axes[0].axhline(0, color='k', lw=0.8)
  axes[0].set_xscale('log')
  axes[0].set_xlabel('training FLOPs C')
  axes[0].set_ylabel('observed / parametric fit - 1 (%)')
  axes[0].set_title('Parametric L(N, D) residuals' if chin is not None else 'no parametric fit')
  for b in (iso or {}).get('budgets', []):
    idx = [i for i, r in enumerate(rows) if r['run'] in set(b['runs'])]
    axes[1].plot(n[idx], l[idx] - np.polyval(b['parabola_log10N'], np.log10(n[idx])), 'o',
                 ms=4, label=f'C={b["flops"]:.2g}')
  axes[1].axhline(0, color='k', lw=0.8)
  axes[1].set_xscale('log')
  axes[1].set_xlabel('N')
  axes[1].set_ylabel(f'observed - parabola ({metric})')
  axes[1].set_title('IsoFLOP parabola residuals' if iso is not None else 'no IsoFLOP fit')
  if iso is not None:
    axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'residuals.png'), dpi=110)
  plt.close(fig)
  written.append('residuals.png')
  return written


def make_plots(rows: Sequence[dict], result: dict, out_dir: str) -> list[str]:
  """Writes the PNGs; returns their file names (relative to out_dir)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  chin = result.get('chinchilla') if 'skipped' not in result.get('chinchilla', {}) else None
  iso = result.get('isoflop') if 'skipped' not in result.get('isoflop', {}) else None
  _plot_loss_vs_compute(plt, rows, result, chin, iso, os.path.join(out_dir, 'loss_vs_compute.png'))
  written = ['loss_vs_compute.png']
  if iso is not None:
    _plot_isoflop(plt, rows, result, iso, os.path.join(out_dir, 'isoflop.png'))
    written.append('isoflop.png')
  return written + _plot_parity_residuals(plt, rows, result, chin, iso, out_dir)


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
    'max_starts': 256, 'budget_tol': 0.1, 'skip_bad': False, 'plots': True, 'held_out': True,
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
  if not is_metric(opts['metric']):
    raise FitError(f'--metric must be one of {METRICS} or a tagged eval set\'s eval/<tag>/bpb | eval/<tag>/loss, '
                   f'got {opts["metric"]!r}')
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
      'isoflop': lambda: fit_isoflop(rows, budget_tol=o['budget_tol'], bootstrap=o['bootstrap'],
                                     seed=o['seed']),
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
  result['design'] = isoflop_design(rows, budget_tol=o['budget_tol'])
  if not o['held_out']:
    result['held_out'] = {'skipped': 'not requested (--no_held_out)'}
  elif not set(fitted) & {'chinchilla', 'isoflop'}:
    result['held_out'] = {'skipped': 'neither approach 2 nor approach 3 could be fitted on all rows'}
  else:
    try:
      result['held_out'] = held_out_check(rows, budget_tol=o['budget_tol'],
                                          huber_delta=o['huber_delta'],
                                          max_starts=o['max_starts'] or None, seed=o['seed'])
    except FitError as e:
      result['held_out'] = {'skipped': str(e)}
  result['predictions'] = predict(
      o['targets'], chinchilla=result['chinchilla'] if 'chinchilla' in fitted else None,
      isoflop=result['isoflop'] if 'isoflop' in fitted else None, max_flops=float(arr['C'].max()))
  result['warnings'] = diagnose(rows, result)
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
  parser.add_argument('--metric', default=_DEFAULTS['metric'],
                      help=f'loss column to fit: {", ".join(METRICS)} or a tagged eval set\'s eval/<tag>/bpb '
                           f'(default eval/bpb)')
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
  parser.add_argument('--no_held_out', dest='held_out', action='store_false',
                      help='skip the refit without the largest budget')
  return parser


def _fmt(v: float) -> str:
  return f'{v:.4g}'


def _ci_str(ci) -> str:
  return f' [{_fmt(ci[0])}, {_fmt(ci[1])}]' if ci and None not in ci else ' [no interval]'


def format_n_opt(q: dict) -> str:
  """A predicted N_opt as text: the number with its 5-95% interval, or 'unconstrained' when the
  interval spans more than SPAN_UNCONSTRAINED (the number would be meaningless)."""
  if q.get('constrained') is False:
    span = q.get('N_opt_span')
    return 'unconstrained' + (f' (5-95% spans {span:.3g}x)' if span else ' (interval open)')
  return _fmt(q['N_opt']) + _ci_str(q.get('ci', {}).get('N_opt'))


def _print_summary(result: dict) -> None:
  for w in result['warnings']:
    print(f'WARNING: {w}')
  c = result['chinchilla']
  if 'skipped' not in c:
    params = ', '.join(f'{k}={_fmt(p["value"])}{_ci_str(p["ci"])}' + (
        f' AT {p["at_bound"].upper()} BOUND' if p['at_bound'] else '') for k, p in
        c['parameters'].items())
    fitq = 'exact fit' if c['exact'] else f'r2_log={_fmt(c["r2_log"]) if c["r2_log"] is not None else "-"}'
    print(f'approach 3 (parametric): {params}; {fitq}')
    print(f'approach 3: N_opt ~ C^{_fmt(c["a_exponent"])}{_ci_str(c.get("ci", {}).get("a_exponent"))}')
  i = result['isoflop']
  if 'skipped' not in i:
    print(f'approach 2 (IsoFLOP, {i["budgets_used"]} budgets): N_opt ~ C^{_fmt(i["a"])}'
          f'{_ci_str(i.get("ci", {}).get("a"))}, D_opt ~ C^{_fmt(i["b"])}'
          f'{_ci_str(i.get("ci", {}).get("b"))}')
  ho = result.get('held_out', {})
  for src in ('approach2', 'approach3'):
    q = ho.get(src, {})
    if 'loss' in q:
      ratio = f'{q["N_opt_ratio"]:.3g}' if q['N_opt_ratio'] is not None else 'not measurable'
      print(f'held-out C={ho["held_out_flops"]:.3g} ({src}): loss error {100 * q["loss_error"]:+.2f}%, '
            f'N_opt predicted/observed {ratio}')
  for p in result['predictions']:
    for src in ('chinchilla', 'isoflop'):
      q = p.get(src, {})
      if 'N_opt' in q:
        tail = '' if q.get('constrained') is False else (
            f' D_opt={_fmt(q["D_opt"])} loss={_fmt(q["loss"])}')
        print(f'C={p["flops"]:.3g} ({src}, {p["extrapolation"]:.3g}x the largest sampled '
              f'compute): N_opt={format_n_opt(q)}{tail}')


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
  _print_summary(result)
  print(f'wrote {os.path.join(out, "fit.json")}' +
        (f' and {", ".join(result["plots"])}' if result['plots'] else ''))
  if result['errors']:
    for e in result['errors']:
      print(f'scaling fit: error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(run_fit(add_fit_args(argparse.ArgumentParser(prog='scaling fit')).parse_args()))
