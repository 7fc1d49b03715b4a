"""Agreement as a test on the difference: approach 2 against approach 3, and the headline against published values.

approach2_vs_approach3: the parametric law's row bootstrap (scaling/analysis/fit/bootstrap.py, resampled within
compute budgets) is replayed from its seed, and on the SAME row resamples approach 2 is refitted (every budget's
parabola with the drawn rows as weights: scaling/analysis/fit/schemes.py). Each resample gives a2 - a3; the
5-95% interval of that paired difference, every resample counted (a resample where either side has no finite
a enters on its side, or unknown), decides (intervals.difference_verdict): 'consistent', 'differ',
'not identified', 'degenerate', 'not decidable'. The two sides' own intervals are from the same resamples.

published: the headline against the published exponents of scaling/analysis/fit/anchors.py, each compared with
the specification of the same N convention (Hoffmann et al. and Besiroglu et al.: total parameters; Kaplan et
al.: non-embedding; DeepSeek: M), its seed-noise interval minus the published value (taken as exact); for the
main convention also the headline's combined (statistical + systematic) interval (verdict_combined).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaling.analysis.fit.bootstrap import row_resamples
from scaling.analysis.fit.intervals import UNKNOWN, difference_verdict, honest_interval, with_state
from scaling.analysis.fit.schemes import budget_data, evaluate

# (anchor key, method or None, the convention its N counts) -- the values are read from anchors.py
PUBLISHED = (('hoffmann2022', 'approach1', 'total'), ('hoffmann2022', 'approach2', 'total'),
             ('hoffmann2022', 'approach3', 'total'), ('besiroglu2024', None, 'total'),
             ('kaplan2020', None, 'non_embedding'), ('deepseek2024', None, 'M'))


def _approach2_on_draws(rows: Sequence[dict], iso: dict, idx: np.ndarray) -> dict | None:
  """Approach 2's a on each row resample idx (R, n): per budget the drawn rows' counts as weights."""
  where = {}
  for i, r in enumerate(rows):
    where.setdefault(r['run'], []).append(i)
  used = [b for b in iso['budgets'] if b.get('inside_range')]
  groups = []
  for b in used:
    if any(len(where.get(run, [])) != 1 for run in b['runs']):
      return None   # run names not unique: the budgets' rows cannot be found again
    groups.append([where[run][0] for run in b['runs']])
  counts = np.zeros((len(idx), len(rows)))
  np.add.at(counts, (np.arange(len(idx))[:, None], idx), 1.0)
  budgets = budget_data(rows, groups, [b['flops'] for b in used])
  return evaluate(budgets, [b['L'] for b in budgets], [counts[:, g] for g in groups])


def approach2_vs_approach3(rows: Sequence[dict], chin: dict, iso: dict) -> dict:
  """fit.json exponent_agreement: the paired test of a2 - a3 (module docstring)."""
  at = chin.get('a_at_data')
  a3 = at['a'] if at else chin['a_exponent']
  out = {'a_approach2': iso['a'], 'a_approach3': a3, 'difference': iso['a'] - a3,
         'approach3_form': 'over the sampled budgets' if at else 'beta / (alpha + beta)',
         'ci_approach2_headline': iso.get('ci', {}).get('a'), 'paired': True, 'test': 'a2 - a3 on the same rows'}
  boot = chin.get('bootstrap', {})
  R = int(boot.get('resamples') or 0)
  a3_draws = np.full(R, np.nan)
  if at and at.get('samples') is not None:
    a3_draws[boot['draws']] = np.array(at['samples'], dtype=np.float64)
  elif R:
    a3_draws[boot['draws']] = np.array(boot['samples']['a_exponent'], dtype=np.float64)
  ev = None
  if R >= 2:
    idx = row_resamples(len(rows), boot.get('strata'), R, boot['seed'])
    ev = _approach2_on_draws(rows, iso, idx)
  if ev is None:
    out.update(ci_approach2=None, ci_approach3=None, ci_difference=None, verdict='not decidable', agree=None,
               why='no paired resamples (no approach-3 bootstrap, or run names that are not unique)')
    return out
  a2 = np.where(ev['side_a'] == 0, ev['a'], np.nan)
  r2 = with_state(honest_interval(a2, ev['side_a']))
  r3 = with_state(honest_interval(a3_draws))
  diff_side = np.where(np.isnan(a3_draws), UNKNOWN, ev['side_a'])
  rd = with_state(honest_interval(a2 - a3_draws, diff_side))
  verdict = difference_verdict(rd['ci'], [r2['state'], r3['state']], rd['distinct'])
  out.update(ci_approach2=r2['ci'], ci_approach3=r3['ci'], ci_difference=rd['ci'],
             mc_error_difference=rd['mc_error'], resamples=R,
             states={'approach2': r2['state'], 'approach3': r3['state'], 'difference': rd['state']},
             resamples_without_a={'approach2': r2['failed'], 'approach3': r3['failed'], 'difference': rd['failed']},
             verdict=verdict, agree={'consistent': True, 'differ': False}.get(verdict))
  return out


def published_comparisons(curve: dict) -> list[dict]:
  """Each published a (PUBLISHED) against the specification of its convention (parabola, loss, all budgets)."""
  from scaling.analysis.fit.anchors import anchor_value  # the shared table of published results
  by_name = {s['name']: s for s in curve.get('specs', [])}
  head = curve.get('headline', {})
  out = []
  for key, method, conv in PUBLISHED:
    value = anchor_value(key, 'a', method)
    if value is None:
      continue
    entry = {'anchor': key, 'method': method, 'a_published': value, 'convention': conv}
    spec = by_name.get(f'{conv}/parabola/loss/all')
    if spec is None or spec['a'] is None:
      out.append({**entry, 'verdict': 'not decidable', 'why': f'no {conv} specification with a finite a'})
      continue
    ci = spec['ci_a']['ci']
    diff = [ci[0] - value, ci[1] - value]
    entry.update(spec=spec['name'], a=spec['a'], difference=spec['a'] - value, ci_difference=diff,
                 verdict=difference_verdict(diff, [spec['ci_a']['state'], 'identified'], spec['ci_a'].get('distinct')))
    comb = (head.get('a') or {}).get('combined') if head.get('main', '').startswith(f'{conv}/') else None
    if comb and comb.get('ci'):   # the main convention: also with the systematic term
      cd = [comb['ci'][0] - value, comb['ci'][1] - value]
      entry.update(ci_difference_combined=cd, verdict_combined=difference_verdict(cd, [comb['state'], 'identified']))
    out.append(entry)
  return out
