"""The specification curve: the IsoFLOP exponents a and b under every defensible analysis choice.

Choices (SPEC_AXES), every combination evaluated:
  convention  what N is: 'total' (all parameters), 'non_embedding' (Kaplan et al. 2020), 'M' (DeepSeek LLM
              2024: non-embedding FLOPs per token, M = C / D - 6 V d per row: the rows' FLOPs per token, as
              scaling/model/accounting.py counts them, less the LM head's matmul, 6 V d; the embedding lookup
              counts no FLOPs there). V and d come from the row's overrides, else the packaged defaults
              (scaling/config/default.py); a convention the rows cannot give is skipped with the reason.
  estimator   'parabola' (least squares over the budget's rows), 'local3' (the exact parabola through the
              best size and its neighbours), 'best' (the best observed size) -- scaling/analysis/fit/resample.py.
  transform   the parabola of 'loss' or of 'log_loss' (not for 'best': the best size is the same).
  budgets     'all', 'drop_top', 'drop_bottom' (the largest / smallest budget left out; needs 3 budgets).

Every specification is evaluated on the same seed-noise draws as the headline (schemes.py), so each has its
own statistical interval and every difference between two specifications is paired. The 'best' estimator
has a resolution: its minimum lies somewhere in the cell between the midpoints to the neighbouring sizes,
so each of its draws is placed uniformly in that cell.

headline intervals:
  statistical  the main specification's (the --params convention, parabola, loss, all budgets) seed-noise
               interval.
  systematic   [min, max] of the specifications' point estimates (an end is open when a specification's
               own estimate has no interior minimum on that side).
  combined     statistical + systematic: every specification's offset from the main one, d_s = a_s - a_main,
               shrunk by how much of it noise alone explains (empirical Bayes): tau^2 = max(0, mean_s(d_s^2 - v_s)),
               v_s the draws' variance of the paired difference a_s - a_main, and d_s weighted tau^2 / (tau^2 + v_s);
               each draw of the main specification is shifted by the shrunk offset of a specification picked at
               random (the main one among them), and the interval is the hull of the statistical interval and
               these draws' 5-95%. It keeps the curve's direction (specifications all above the main one widen
               only the upper end) and is calibrated: on simulated studies whose specifications are all
               unbiased (tests/test_fit_calibration.py) it covers the true a in ~90%, where the union of the
               per-specification intervals and the pooled draws x specifications (both reported under
               'alternatives') cover ~100%: they count the estimators' noise as a systematic error. When the
               specifications truly disagree (tau large against v_s) the offsets are barely shrunk.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from scaling.analysis.fit.intervals import honest_interval, with_state
from scaling.analysis.fit.load import override_value
from scaling.analysis.fit.resample import ESTIMATORS, UNKNOWN, budget_minima, exponents
from scaling.analysis.fit.schemes import d_at

CONVENTIONS = ('total', 'non_embedding', 'M')
TRANSFORMS = ('loss', 'log_loss')
BUDGET_SETS = ('all', 'drop_top', 'drop_bottom')
SPEC_AXES = {'convention': CONVENTIONS, 'estimator': ESTIMATORS, 'transform': TRANSFORMS, 'budgets': BUDGET_SETS}
COMBINED_STREAM = 4
_COLUMNS = {'total': 'params', 'non_embedding': 'non_embedding_params'}


def _defaults() -> dict:
  from scaling.config import default  # the packaged defaults (ml_collections only; no jax)
  m, d = default.model(), default.data()
  return {'model.d_model': m.d_model, 'model.vocab_size': m.vocab_size, 'data.vocab_size': d.vocab_size,
          'data.tokenizer': d.tokenizer}


def head_flops_per_token(raw: dict, defaults: dict | None = None) -> float:
  """6 V d: the LM head's training FLOPs per token (scaling/model/accounting.py, matmul_params' D V term);
  FitError-like ValueError naming what is missing when V or d cannot be known from the row."""
  defaults = defaults or _defaults()

  def get(key):
    v = override_value(raw.get('overrides') or {}, key)
    return defaults[key] if v is None else v
  d_model = get('model.d_model')
  vocab = get('model.vocab_size')
  if not vocab:
    tok = str(get('data.tokenizer'))
    if tok in ('bpe', 'unigram'):
      vocab = get('data.vocab_size')
    elif tok == 'byte':
      vocab = 259
    else:
      raise ValueError(f'the vocabulary size of tokenizer {tok!r} is set when the data is prepared and is not '
                       'in the row (add model.vocab_size to the sweep overrides)')
  if not (isinstance(d_model, int) and isinstance(vocab, int) and d_model > 0 and vocab > 0):
    raise ValueError(f'model.d_model={d_model!r} and the vocabulary size {vocab!r} must be positive integers')
  return 6.0 * vocab * d_model


def convention_sizes(rows: Sequence[dict], convention: str) -> np.ndarray:
  """Each row's N under a convention ('N': as the rows were loaded); ValueError (the reason it is skipped)
  when the rows cannot give it."""
  if convention == 'N':
    return np.array([r['N'] for r in rows], dtype=np.float64)
  if any('raw' not in r for r in rows):
    raise ValueError('the rows carry no results.jsonl columns (only their N)')
  if convention in _COLUMNS:
    col = _COLUMNS[convention]
    vals = [r['raw'].get(col) for r in rows]
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0 for v in vals):
      raise ValueError(f'some row has no positive {col!r}')
    return np.array(vals, dtype=np.float64)
  defaults = _defaults()
  m = np.array([r['C'] / r['D'] - head_flops_per_token(r['raw'], defaults) for r in rows])
  if not np.all(m > 0):
    raise ValueError('C / D - 6 V d is not positive for some row (its FLOPs were not counted as '
                     'scaling/model/accounting.py counts them)')
  return m


def _cell_jitter(x_sizes: np.ndarray, x_opt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """x_opt (one of x_sizes, or NaN) moved uniformly within its cell: the midpoints to its neighbours."""
  s = np.unique(x_sizes)
  i = np.clip(np.searchsorted(s, np.nan_to_num(x_opt)), 0, len(s) - 1)
  left = np.where(i > 0, (s[i] - s[np.maximum(i - 1, 0)]) / 2, 0.0)
  right = np.where(i < len(s) - 1, (s[np.minimum(i + 1, len(s) - 1)] - s[i]) / 2, 0.0)
  return x_opt - left + rng.uniform(size=len(x_opt)) * (left + right)


def _minima(budgets, xs, Ys, estimator, transform, rng=None):
  """Per budget (x_opt, log10 D_opt, code) stacked to (R, J)."""
  X, Yd, C = [], [], []
  for b, x, Y in zip(budgets, xs, Ys):
    Y = np.log(Y) if transform == 'log_loss' else Y
    f = budget_minima(x, Y, estimator)
    x_opt = f['x_opt']
    if estimator == 'best' and rng is not None:
      x_opt = _cell_jitter(x, x_opt, rng)
    X.append(x_opt)
    Yd.append(d_at(x, b['yD'], x_opt))
    C.append(f['code'])
  return np.stack(X, 1), np.stack(Yd, 1), np.stack(C, 1)


def _subset(name: str, J: int) -> slice | None:
  if name == 'all':
    return slice(0, J)
  if J < 3:
    return None
  return slice(0, J - 1) if name == 'drop_top' else slice(1, J)


def _spec_list(conventions: Sequence[str]) -> list[tuple[str, str, str]]:
  return [(c, e, t) for c in conventions for e in ESTIMATORS for t in TRANSFORMS
          if not (e == 'best' and t == 'log_loss')]


def _finite_side(ev: dict, k: str) -> tuple[np.ndarray, np.ndarray]:
  return np.where(ev['side_a'] == 0, ev[k], np.nan), ev[f'side_{k}']


def evaluate_specs(rows, budgets, Ys, main_convention: str, rng: np.random.Generator) -> dict:
  """Every specification's point estimate and draws: {specs: [...], skipped: [...], draws: {name: ev}}."""
  lc_all = np.log10([b['flops'] for b in budgets])
  specs, skipped, draws = [], [], {}
  convs = [main_convention] + [c for c in CONVENTIONS if c != main_convention]
  for conv in convs:
    try:
      n = convention_sizes(rows, conv)
    except ValueError as e:
      skipped.append({'convention': conv, 'reason': str(e)})
      continue
    xs = [np.log10(n[b['idx']]) for b in budgets]
    for _, est, tr in _spec_list([conv]):
      X0, Yd0, C0 = _minima(budgets, xs, [b['L'] for b in budgets], est, tr)
      X, Yd, C = _minima(budgets, xs, Ys, est, tr, rng)
      for bset in BUDGET_SETS:
        sub = _subset(bset, len(budgets))
        name = f'{conv}/{est}/{tr}/{bset}'
        if sub is None:
          skipped.append({'spec': name, 'reason': f'{len(budgets)} budgets: dropping one leaves too few'})
          continue
        e0 = exponents(lc_all[sub], X0[:, sub], Yd0[:, sub], C0[:, sub])
        draws[name] = exponents(lc_all[sub], X[:, sub], Yd[:, sub], C[:, sub])
        entry = {'name': name, 'convention': conv, 'estimator': est, 'transform': tr, 'budgets': bset,
                 'n_budgets': int(sub.stop - sub.start), 'side': int(e0['side_a'][0])}
        for k in ('a', 'b'):
          entry[k] = float(e0[k][0]) if e0['side_a'][0] == 0 else None
          entry[f'ci_{k}'] = with_state(honest_interval(*_finite_side(draws[name], k)))
        specs.append(entry)
  return {'specs': specs, 'skipped': skipped, 'draws': draws}


def _systematic(specs: list[dict], k: str) -> list[float]:
  vals = [s[k] for s in specs if s[k] is not None]
  sides = {s['side'] * (1 if k == 'a' else -1) if s['side'] != UNKNOWN else UNKNOWN
           for s in specs if s[k] is None}
  lo = -math.inf if sides & {-1, UNKNOWN} else min(vals, default=math.nan)
  hi = math.inf if sides & {1, UNKNOWN} else max(vals, default=math.nan)
  return [lo, hi]


def combine(specs: list[dict], draws: dict, main: str, k: str, rng: np.random.Generator) -> dict:
  """The combined interval (module docstring) and the two rejected alternatives."""
  m = next(s for s in specs if s['name'] == main)
  vm, sm = _finite_side(draws[main], k)
  offsets, variances = [0.0], [0.0]
  for s in specs:
    if s['name'] == main or s[k] is None or m[k] is None:
      continue
    diff = _finite_side(draws[s['name']], k)[0] - vm
    diff = diff[np.isfinite(diff)]
    if len(diff) >= 2:
      offsets.append(s[k] - m[k])
      variances.append(float(np.var(diff, ddof=1)))
  d, v = np.array(offsets), np.array(variances)
  tau2 = max(0.0, float(np.mean(d[1:] ** 2 - v[1:]))) if len(d) > 1 else 0.0
  shrunk = d * (tau2 / (tau2 + v) if tau2 > 0 else 0.0)
  mix = vm + shrunk[rng.integers(0, len(shrunk), size=len(vm))]
  rec = honest_interval(mix, sm)
  stat = honest_interval(vm, sm)
  for end, pick in ((0, min), (1, max)):   # the hull of the statistical and the mixture's interval
    if pick(rec['ci'][end], stat['ci'][end]) == stat['ci'][end]:
      rec['ci'][end], rec['mc_error'][end] = stat['ci'][end], stat['mc_error'][end]
  syst = _systematic(specs, k)
  for end, inf in ((0, -math.inf), (1, math.inf)):   # a specification with no minimum opens that end
    if syst[end] == inf:
      rec['ci'][end], rec['mc_error'][end] = inf, None
  pooled_v = np.concatenate([_finite_side(draws[s['name']], k)[0] for s in specs])
  pooled_s = np.concatenate([_finite_side(draws[s['name']], k)[1] for s in specs])
  union = [min(s[f'ci_{k}']['ci'][0] for s in specs), max(s[f'ci_{k}']['ci'][1] for s in specs)]
  return {**with_state(rec), 'method': 'shrunk_offsets', 'tau': math.sqrt(tau2),
          'alternatives': {'pooled_draws_x_specs': honest_interval(pooled_v, pooled_s)['ci'],
                           'union_of_spec_intervals': union}}


def specification_curve(rows, budgets, Ys, main_convention: str, seed: int, statistical: dict) -> dict:
  """fit.json isoflop.specification_curve: every specification and the headline's three intervals.
  statistical: the seed-noise scheme's record (schemes.record), the main specification's interval."""
  rng = np.random.default_rng([seed, COMBINED_STREAM])
  out = evaluate_specs(rows, budgets, Ys, main_convention, rng)
  specs, draws = out['specs'], out.pop('draws')
  main = f'{main_convention}/parabola/loss/all'
  head: dict = {'main': main, 'specifications': len(specs), 'skipped': out['skipped']}
  if not any(s['name'] == main for s in specs):
    head['skipped'].append({'spec': main, 'reason': 'the main specification could not be evaluated'})
    return {'headline': head, 'specs': specs}
  m = next(s for s in specs if s['name'] == main)
  for k in ('a', 'b'):
    head[k] = {'value': m[k], 'statistical': {**statistical[k], 'scheme': 'seed_noise'},
               'systematic': _systematic(specs, k), 'combined': combine(specs, draws, main, k, rng)}
  return {'headline': head, 'specs': specs}


def main_convention(rows: Sequence[dict], params: str | None) -> str:
  """The convention the rows' N was loaded with: params when given, else the raw column N equals, else 'N'."""
  if params:
    return params
  for conv, col in _COLUMNS.items():
    if rows and all('raw' in r and r['raw'].get(col) == r['N'] for r in rows):
      return conv
  return 'N'
