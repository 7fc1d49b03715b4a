"""The row bootstrap of the parametric law (approach 3), and plain 5-95% intervals.

It resamples with a seeded numpy Generator (within compute budgets when given strata) and reports the samples
themselves (fit.json: chinchilla.bootstrap.samples, with `draws`: the resample index of each), from which
scaling/analysis/fit/predictions.py and diagnostics.py derive intervals of derived quantities. Every resample
counts (scaling/analysis/fit/intervals.py). The IsoFLOP resampling is scaling/analysis/fit/schemes.py.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from scaling.analysis.fit.intervals import honest_interval, with_state
from scaling.analysis.fit.laws import _minimise, _params_dict
from scaling.analysis.fit.load import FitError

_CI_KEYS = ('E', 'A', 'B', 'alpha', 'beta', 'a_exponent', 'b_exponent')


def row_resamples(n: int, strata: Sequence[Sequence[int]] | None, draws: int, seed: int) -> np.ndarray:
  """(draws, n) row indices: each draw resamples every stratum (a compute budget) with replacement, so
  each keeps its number of rows (without strata: all n rows at once). Deterministic in seed, so the
  paired approach-2 resamples of scaling/analysis/fit/agreement.py are the same rows."""
  rng = np.random.default_rng(seed)
  if not strata:
    return rng.integers(0, n, size=(draws, n))
  strata = [np.asarray(s, dtype=np.int64) for s in strata]
  covered = set(np.concatenate(strata).tolist())
  rest = [i for i in range(n) if i not in covered]
  if rest:
    strata.append(np.array(rest, dtype=np.int64))
  return np.concatenate([s[rng.integers(0, len(s), size=(draws, len(s)))] for s in strata], axis=1)


def _refit(starts, lN, lD, lL, delta) -> tuple[list | None, str]:
  """One resample's parameters in _CI_KEYS order, or (None, why it failed)."""
  if len(np.unique(lN)) < 2 or len(np.unique(lD)) < 2:
    return None, 'fewer_than_2_distinct_N_or_D'
  try:
    p, _, _ = _minimise(starts, lN, lD, lL, delta)
  except FitError:
    return None, 'no_finite_solution'
  d = _params_dict(p)
  if not all(math.isfinite(d[k]) for k in ('E', 'A', 'B')):
    return None, 'overflow'
  return [d[k] if d[k] is not None else np.nan for k in _CI_KEYS], ''


def _bootstrap(best: np.ndarray, N, D, L, delta: float, n_boot: int, seed: int,
               strata: Sequence[Sequence[int]] | None = None) -> dict:
  """Row-resampling bootstrap (within strata when given); refits start from `best` and a small grid around
  it. Every resample counts: one whose refit fails (too few distinct N or D, no finite solution, a
  parameter that overflows) has no estimate on an unknown side (scaling/analysis/fit/intervals.py), so
  more than 5% of failures open the interval."""
  if n_boot <= 0:
    return {'bootstrap': {'resamples': 0}}
  a, b, e, alpha, beta = best
  starts = np.array([best, [a, b, e, alpha * 0.7, beta * 0.7], [a, b, e, alpha * 1.3, beta * 1.3]])
  lN, lD, lL = np.log(N), np.log(D), np.log(L)
  samples, draws, failed = [], [], {}
  for r, idx in enumerate(row_resamples(len(N), strata, n_boot, seed)):
    vals, why = _refit(starts, lN[idx], lD[idx], lL[idx], delta)
    if vals is None:
      failed[why] = failed.get(why, 0) + 1
      continue
    samples.append(vals)
    draws.append(r)
  s = np.array(samples, dtype=np.float64).reshape(-1, len(_CI_KEYS))
  full = np.full((n_boot, len(_CI_KEYS)), np.nan)
  full[draws] = s
  recs = {k: with_state(honest_interval(full[:, i])) for i, k in enumerate(_CI_KEYS)}
  return {'bootstrap': {'resamples': n_boot, 'succeeded': int(len(s)), 'failed': failed, 'seed': seed,
                        'strata': [list(map(int, g)) for g in strata] if strata else None,
                        'percentiles': [5, 95], 'draws': draws,
                        'mc_error': {k: r['mc_error'] for k, r in recs.items()},
                        'samples': {k: s[:, i].tolist() for i, k in enumerate(_CI_KEYS)}},
          'ci': {k: r['ci'] for k, r in recs.items()},
          'ci_state': {k: r['state'] for k, r in recs.items() if k in ('a_exponent', 'b_exponent')}}
