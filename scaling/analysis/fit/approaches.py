"""The two Chinchilla approaches over a sweep's rows, each with its bootstrap intervals.

  * approach 3 (fit_chinchilla): the parametric law L(N, D) = E + A / N^alpha + B / D^beta, Huber loss of
    log-space residuals, L-BFGS from the lowest points of Hoffmann et al.'s grid of starts;
  * approach 2 (fit_isoflop): per compute budget a parabola of loss in log N, its minimum N_opt, then
    N_opt ~ C^a and D_opt ~ C^b.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaling.analysis.fit.bootstrap import _bootstrap
from scaling.analysis.fit.laws import (
  DEFAULT_INIT_GRID,
  _batched_objective,
  _grid_starts,
  _group_budgets,
  _isoflop_lines,
  _minimise,
  _parabola,
  _params_dict,
  chinchilla_loss,
  fit_power_law,
)
from scaling.analysis.fit.load import FitError
from scaling.analysis.fit.schemes import STREAMS, budget_data, isoflop_resampling, samples_of
from scaling.analysis.fit.spec import main_convention, specification_curve


def fit_chinchilla(N: Sequence[float], D: Sequence[float], L: Sequence[float], *,
                   huber_delta: float = 1e-3, bootstrap: int = 200, seed: int = 0,
                   init_grid: dict | None = None, max_starts: int | None = 256,
                   strata: Sequence[Sequence[int]] | None = None) -> dict:
  """Fits L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, approach 3).

  Minimises the Huber loss (delta huber_delta) of LSE(a - alpha log N, b - beta log D, e) - log L
  with L-BFGS-B from points of init_grid (default: Hoffmann's grid, 4500 points) and keeps the
  best. To keep the fit to seconds, L-BFGS runs only from the max_starts grid points of lowest
  initial objective (None or 0: from all of them; on Chinchilla-like data the best 32 already
  reach the full grid's optimum).
  Bootstrap: `bootstrap` resamples of the rows (with replacement, seeded; within each of `strata`, the
  compute budgets' row indices, when given), each refitted from the best solution and two perturbations
  of it; 5/95 percentiles over every resample (a failed refit counts: scaling/analysis/fit/bootstrap.py).
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
  if not all(np.isfinite(params[k]) for k in ('E', 'A', 'B')):
    raise FitError(f'chinchilla: the best fit overflows (log E, log A, log B = {params["log_E"]:.3g}, '
                   f'{params["log_A"]:.3g}, {params["log_B"]:.3g}): the data do not determine the law')
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
  out.update(_bootstrap(best, N, D, L, huber_delta, bootstrap, seed, strata))
  return out


ISOFLOP_MIN_DRAWS = 1000   # the IsoFLOP resampling starts here (vectorised: cheap), then doubles to its MC target


def fit_isoflop(rows: Sequence[dict], *, budget_tol: float = 0.1, bootstrap: int = 200, seed: int = 0,
                params: str | None = None, mc_error: float = 0.005, max_draws: int = 64000,
                noise_sd: float | None = None) -> dict:
  """Per budget a parabola L = c2 x^2 + c1 x + c0 in x = log10 N; N_opt at its vertex.

  D_opt comes from the rows' own tokens-vs-N relation within the budget (a line in log-log,
  which is C/(6N) when FLOPs are counted as 6ND); C/(6 N_opt) is recorded beside it. Then
  N_opt = kN C^a and D_opt = kD C^b across budgets whose vertex lies inside the sampled N.
  Each budget records `interior` (its lowest observed loss is strictly inside its sizes) and
  `exact` (3 sizes: the parabola passes through every point).
  With bootstrap > 0: the resampling schemes of scaling/analysis/fit/schemes.py (every resample counts;
  ci is the seed-noise scheme's, drawn until its Monte-Carlo error is below mc_error or max_draws; the
  first `bootstrap` draws are kept as bootstrap.samples, each with its loss line, for the predictions),
  and the specification curve of scaling/analysis/fit/spec.py (params: the N convention of the rows).
  """
  groups, method = _group_budgets(rows, budget_tol)
  budgets, skipped, used = [], [], []
  for budget, idx in groups:
    entry, why = _budget_entry(rows, budget, idx)
    if entry is None:
      skipped.append(why)
      continue
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
  if bootstrap <= 0:
    out['bootstrap'] = {'resamples': 0}
    return out
  if not (mc_error > 0 and max_draws >= 1):
    raise FitError(f'mc_error must be > 0 and max_draws >= 1 (got {mc_error}, {max_draws})')
  if noise_sd is not None and not noise_sd > 0:
    raise FitError(f'noise_sd must be > 0 (a measured seed-noise sd in loss units), got {noise_sd}')
  out.update(_isoflop_intervals(rows, used, c, bootstrap=bootstrap, seed=seed, params=params,
                                mc_error=mc_error, max_draws=max_draws, noise_sd=noise_sd))
  return out


def _budget_entry(rows: Sequence[dict], budget: float, idx: list[int]) -> tuple[dict | None, str]:
  n, d, ls = (np.array([rows[i][k] for i in idx]) for k in ('N', 'D', 'L'))
  sizes = np.unique(n)
  par = _parabola(n, d, ls)
  if par is None:
    return None, f'C={budget:.3g}: ' + (f'{len(sizes)} distinct N (a parabola needs >= 3)'
                                        if len(sizes) < 3 else 'loss against log N is not convex (no minimum)')
  (c2, c1, c0), x_opt, y_opt = par
  x = np.log10(n)
  resid = ls - np.polyval([c2, c1, c0], x)
  return {
      'flops': float(budget), 'n': len(idx), 'sizes': int(len(sizes)),
      'runs': [rows[i]['run'] for i in idx], 'parabola_log10N': [c2, c1, c0],
      'N_opt': float(10.0 ** x_opt), 'D_opt': float(10.0 ** y_opt),
      'D_opt_6N': float(budget / (6 * 10.0 ** x_opt)), 'L_opt': float(c0 - c1 ** 2 / (4 * c2)),
      'inside_range': bool(x.min() <= x_opt <= x.max()),
      'interior': bool(sizes[0] < n[int(np.argmin(ls))] < sizes[-1]),
      'exact': bool(len(sizes) == 3), 'rmse': float(np.sqrt(np.mean(resid ** 2))),
  }, ''


def _loss_line(c: np.ndarray, l_opt: np.ndarray) -> tuple[float, float, float]:
  f = fit_power_law(c, l_opt)
  return f['E'], f['a'], f['b']


def _isoflop_intervals(rows, used, c, *, bootstrap, seed, params, mc_error, max_draws, noise_sd) -> dict:
  """ci, resampling (every scheme), bootstrap (stored draws of the headline scheme), specification_curve."""
  budgets = budget_data(rows, used, c)
  res = isoflop_resampling(budgets, draws=max(bootstrap, ISOFLOP_MIN_DRAWS), seed=seed, mc_error=mc_error,
                           max_draws=max_draws, noise_sd=noise_sd)
  scheme = 'seed_noise' if 'skipped' not in res['seed_noise'] else 'row'
  kept = res['seed_noise'].pop('_draws', None)
  out = {'ci': {k: res[scheme][k]['ci'] for k in ('a', 'b')}, 'ci_scheme': scheme,
         'ci_state': {k: res[scheme][k]['state'] for k in ('a', 'b')}, 'resampling': res,
         'mc': res[scheme]['mc']}
  if kept is not None:
    out['bootstrap'] = {'scheme': scheme, 'seed': [seed, STREAMS[scheme]], 'percentiles': [5, 95],
                        **samples_of(kept['ev'], budgets, bootstrap, _loss_line)}
    out['specification_curve'] = specification_curve(rows, budgets, kept['Ys'], main_convention(rows, params),
                                                     seed, res['seed_noise'])
  else:
    out['bootstrap'] = {'scheme': scheme, 'resamples': 0, 'note': res['seed_noise']['skipped']}
  return out


def budget_strata(rows: Sequence[dict], budget_tol: float = 0.1) -> list[list[int]]:
  """The rows' compute budgets as lists of row indices: the strata of approach 3's row bootstrap, so that
  its resamples are also approach-2 resamples (the paired test of scaling/analysis/fit/agreement.py)."""
  return [list(idx) for _, idx in _group_budgets(rows, budget_tol)[0]]
