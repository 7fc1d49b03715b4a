"""The held-out check: refit both approaches without the largest compute budget and predict its minimum."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaling.analysis.fit.approaches import fit_chinchilla, fit_isoflop
from scaling.analysis.fit.laws import _flops_per_token, _group_budgets, _parabola, accounted_optimum
from scaling.analysis.fit.load import FitError


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
