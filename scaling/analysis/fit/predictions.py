"""Predictions at target compute budgets: the compute-optimal N, D and loss of each fit, with 5-95% intervals."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from scaling.analysis.fit.bootstrap import _interval
from scaling.analysis.fit.diagnostics import SPAN_UNCONSTRAINED
from scaling.analysis.fit.laws import chinchilla_optimum
from scaling.analysis.fit.load import FitError


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
