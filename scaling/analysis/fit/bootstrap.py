"""Resampling intervals: the row bootstraps of the parametric law and of the IsoFLOP fit, and 5-95% intervals.

Both resample with a seeded numpy Generator and report the samples themselves (fit.json: bootstrap.samples),
from which scaling/analysis/fit/predictions.py and diagnostics.py derive intervals of derived quantities.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaling.analysis.fit.laws import _isoflop_lines, _minimise, _parabola, _params_dict
from scaling.analysis.fit.load import FitError


def _interval(values: Sequence[float]) -> list[float]:
  return [float(np.percentile(values, 5)), float(np.percentile(values, 95))]


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
