"""Predictions at target compute budgets: the compute-optimal N, D and loss of each fit, with 5-95% intervals.

Every resample counts (scaling/analysis/fit/intervals.py): a parametric resample whose refit failed or has no
optimum (alpha or beta <= 0), and an IsoFLOP resample with no interior minimum, enter the percentiles at +-inf
(IsoFLOP: on the side its a escaped to, which at a target above the budgets' geometric-mean compute is the side
N_opt goes; else unknown, both ends). An interval with an open end, a span over SPAN_UNCONSTRAINED or no width
(degenerate) is not constrained.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from scaling.analysis.fit.diagnostics import SPAN_UNCONSTRAINED
from scaling.analysis.fit.intervals import UNKNOWN, honest_interval, is_degenerate
from scaling.analysis.fit.laws import chinchilla_optimum
from scaling.analysis.fit.load import FitError


def _with_interval(entry: dict, arr: np.ndarray | None, keys: Sequence[str],
                   sides: Sequence[np.ndarray] | None = None) -> dict:
  """Adds ci (5-95%, every row of arr, NaN rows failed on the side in sides[key]) per key, the N_opt
  interval's span, interval_state ('degenerate' for zero width) and whether it is constrained."""
  if arr is None or len(arr) < 2:
    entry['constrained'] = None   # no interval: cannot say
    return entry
  recs = {k: honest_interval(arr[:, i], None if sides is None else sides[i]) for i, k in enumerate(keys)}
  entry['ci'] = {k: r['ci'] for k, r in recs.items()}
  lo, hi = entry['ci']['N_opt']
  finite = math.isfinite(lo) and math.isfinite(hi) and lo > 0
  entry['N_opt_span'] = hi / lo if finite else None
  if is_degenerate(lo, hi, recs['N_opt']['distinct']):
    entry['interval_state'] = 'degenerate'   # the resampling cannot move it: not a constraint
  else:
    entry['interval_state'] = 'open' if not finite else 'finite'
  entry['constrained'] = bool(entry['interval_state'] == 'finite' and hi / lo <= SPAN_UNCONSTRAINED)
  return entry


def _chinchilla_prediction(chin: dict, c: float) -> dict:
  n_opt, d_opt, l_opt = (float(v) for v in chinchilla_optimum(chin, c))
  entry = {'N_opt': n_opt, 'D_opt': d_opt, 'loss': l_opt}
  boot = chin.get('bootstrap', {})
  samples = boot.get('samples')
  preds = []
  if samples and len(samples['alpha']):
    for E, A, B, al, be in zip(*(samples[k] for k in ('E', 'A', 'B', 'alpha', 'beta'))):
      p = {'E': E, 'A': A, 'B': B, 'alpha': al, 'beta': be}
      preds.append([float(v) for v in chinchilla_optimum(p, c)] if al > 0 and be > 0 else [math.nan] * 3)
    n_all = max(int(boot.get('resamples', len(preds))), len(preds))
    preds += [[math.nan] * 3] * (n_all - len(preds))   # failed refits count, side unknown
    missing = int(np.isnan(np.array(preds)[:, 0]).sum())
    if missing:   # a resample without an optimum: the interval is open
      entry['resamples_without_optimum'] = missing
  return _with_interval(entry, np.array(preds) if preds else None, ('N_opt', 'D_opt', 'loss'))


def _isoflop_prediction(iso: dict, c: float) -> dict:
  nf, df, lf = iso['N_opt_vs_C'], iso['D_opt_vs_C'], iso['L_opt_vs_C']
  entry = {'N_opt': nf['k'] * c ** nf['exponent'], 'D_opt': df['k'] * c ** df['exponent'],
           'loss': lf['E'] + lf['a'] * c ** -lf['b'], 'loss_form': lf['form']}
  boot = iso.get('bootstrap', {})
  s = boot.get('samples')
  if not (s and len(s['a'])):
    return _with_interval(entry, None, ())
  arr = np.stack([np.array(s['kN']) * c ** np.array(s['a']), np.array(s['kD']) * c ** np.array(s['b']),
                  np.array(s['L_E']) + np.array(s['L_a']) * c ** -np.array(s['L_b'])], 1)
  esc = boot.get('escaped', {})
  flops = [b['flops'] for b in iso.get('budgets', []) if b.get('inside_range')]
  pivot = math.exp(np.mean(np.log(flops))) if flops else c
  up = 1 if c > pivot else (-1 if c < pivot else UNKNOWN)   # a -> +inf moves N_opt(c) this way
  failed_n = [up] * esc.get('high', 0) + [-up if up != UNKNOWN else UNKNOWN] * esc.get('low', 0) + \
      [UNKNOWN] * esc.get('unknown_side', 0)
  failed_n = np.array(failed_n, dtype=np.int64)
  flip = np.where(failed_n == UNKNOWN, UNKNOWN, -failed_n)
  zeros = np.zeros(len(arr), dtype=np.int64)
  arr = np.concatenate([arr, np.full((len(failed_n), 3), np.nan)])
  sides = [np.concatenate([zeros, failed_n]), np.concatenate([zeros, flip]),
           np.concatenate([zeros, np.full(len(failed_n), UNKNOWN)])]
  return _with_interval(entry, arr, ('N_opt', 'D_opt', 'loss'), sides)


def predict(target_flops: Iterable[float], *, chinchilla: dict | None = None,
            isoflop: dict | None = None, max_flops: float | None = None) -> list[dict]:
  """Compute-optimal N, D and loss at each target budget, from whichever fits are given, each
  with its 5-95% interval (from the fit's bootstrap samples and failed resamples) and `constrained`
  (False when the N_opt interval spans more than SPAN_UNCONSTRAINED, is open or has no width: print it as
  unconstrained, not a number). extrapolation = target / max_flops (the largest sampled compute)."""
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
