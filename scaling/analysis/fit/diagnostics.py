"""What the data do not determine: flags and warnings over the fits (fit.json's diagnostic fields).

Parameters at their bounds or unconstrained (chinchilla_parameters), the design before any fit (one size per
budget, budgets with too few sizes, minima at an end of their sizes: isoflop_design), exact fits, approach 2
against approach 3 (implied_exponent, exponent_agreement), the held-out budget and unconstrained predictions
(diagnose, which gathers them into fit.json's warnings).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from scaling.analysis.fit.agreement import approach2_vs_approach3, published_comparisons
from scaling.analysis.fit.intervals import INFORMATIVE_WIDTH, honest_interval, is_degenerate, with_state
from scaling.analysis.fit.laws import _flops_per_token, _group_budgets, accounted_optimum

# The range each Chinchilla parameter can take (the fit is unbounded in log E, log A, log B,
# alpha and beta; these are where a value stops meaning anything): E in [0, min L] (E/min L
# under E_FLOOR is "at 0": the fit drove the irreducible loss away), exponents in [0, 3].
E_FLOOR = 1e-3
EXPONENT_RANGE = (1e-3, 3.0)
SPAN_UNCONSTRAINED = 10.0   # an interval of a positive quantity wider than this factor
N_PARAMS = {'chinchilla': 5, 'parabola': 3, 'line': 2}


def _interval_state(lo: float, hi: float, positive: bool) -> tuple[float | None, bool]:
  """(hi/lo or None, constrained) of an interval: a positive quantity is unconstrained when it
  spans more than SPAN_UNCONSTRAINED or reaches <= 0; an exponent when it reaches <= 0; an open
  interval (an end at +-inf: failed resamples) and a degenerate one (no width) are never constrained."""
  if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
    return None, False
  if lo <= 0:
    return None, False
  span = hi / lo
  if is_degenerate(lo, hi):
    return span, False
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
    ok = None if lo is None else bool(0 < lo and hi < 1 and not is_degenerate(lo, hi))
    out[k] = {'value': chin[k], 'ci': [lo, hi] if lo is not None else None, 'span': None,
              'bound': [0.0, 1.0], 'at_bound': None, 'constrained': ok}
  return out


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


def implied_exponent(chin: dict, rows: Sequence[dict], flops: Sequence[float]) -> dict:
  """The a of N_opt ~ C^a that the parametric law implies over the sampled budgets `flops`,
  with the rows' FLOPs accounting (C / D = fpt(N), which for small models is far from 6 N: the
  LM head and attention): the slope of log N_opt against log C, for the fit and for every
  bootstrap sample (samples: aligned with chin.bootstrap.draws, NaN without an optimum), and its
  5-95% interval over every resample (a failed refit or one without an optimum counts, side
  unknown). With C = 6 N D exactly it is beta / (alpha + beta)."""
  n, c, d = (np.array([r[k] for r in rows]) for k in ('N', 'C', 'D'))
  fpt = _flops_per_token(n, c, d)
  n_range = (float(n.min()) / 100, float(n.max()) * 100)
  lc = np.log(np.asarray(flops, dtype=np.float64))

  def slope(p):
    ln = [math.log(accounted_optimum(p, f, fpt, n_range)[0]) for f in flops]
    return float(np.polyfit(lc, ln, 1)[0])

  out = {'a': slope(chin), 'flops': [float(f) for f in flops]}
  boot = chin.get('bootstrap', {})
  s = boot.get('samples')
  if s and len(s['alpha']) >= 2:
    vals = [slope({'E': E, 'A': A, 'B': B, 'alpha': al, 'beta': be}) if al > 0 and be > 0 else math.nan
            for E, A, B, al, be in zip(*(s[k] for k in ('E', 'A', 'B', 'alpha', 'beta')))]
    full = np.full(max(int(boot.get('resamples', len(vals))), len(vals)), np.nan)
    full[:len(vals)] = vals
    rec = with_state(honest_interval(full))
    out.update(samples=vals, ci=rec['ci'], mc_error=rec['mc_error'], state=rec['state'])
  return out


def exponent_agreement(chin: dict | None, iso: dict | None, rows: Sequence[dict] | None = None) -> dict | None:
  """Approach 2's a (IsoFLOP) against approach 3's (chin['a_at_data'] when present, else beta/(alpha+beta)):
  a test on their difference on the same row resamples (scaling/analysis/fit/agreement.py), never an
  overlap of intervals. Without the rows or approach 3's bootstrap: 'not decidable'."""
  if chin is None or iso is None or chin.get('a_exponent') is None:
    return None
  if rows is None:
    at = chin.get('a_at_data')
    a3 = at['a'] if at else chin['a_exponent']
    return {'a_approach2': iso['a'], 'a_approach3': a3, 'difference': iso['a'] - a3, 'verdict': 'not decidable',
            'agree': None, 'why': 'no rows to replay the paired resamples'}
  return approach2_vs_approach3(rows, chin, iso)


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
      if is_degenerate(lo, hi):
        warn.append(f'chinchilla: {k}\'s 5-95% interval {lo:.3g} to {hi:.3g} has no width (degenerate: every '
                    'resample refits the same value, as on noiseless data), which is not a constraint')
        continue
      why = ('is open: more than 5% of the resamples have no finite fit'
             if not (math.isfinite(lo) and math.isfinite(hi)) else
             f'spans {p["span"]:.3g}x' if p['span'] else
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
  agree = exponent_agreement(chin, iso, rows)
  result['exponent_agreement'] = agree
  _warn_agreement(agree, warn)
  result['headline'] = headline(iso, warn)
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
        warn.append(f'prediction C={p["flops"]:.3g} ({src}): N_opt ' + (
                    'interval has no width (degenerate), not a constraint (' if q.get('interval_state') ==
                    'degenerate' else 'unconstrained (') +
                    (f'5-95% interval spans {span:.3g}x' if span else 'interval reaches <= 0 or '
                     'some resamples have no optimum') +
                    f'; {p.get("extrapolation", float("nan")):.3g}x beyond the largest sampled compute)')
  return warn


def _fmt_ci(ci) -> str:
  if not ci or None in ci:
    return '(no interval)'
  return '[' + ', '.join('open' if not math.isfinite(v) else f'{v:.3g}' for v in ci) + ']'


def _warn_agreement(agree: dict | None, warn: list[str]) -> None:
  if agree is None:
    return
  both = (f'a = {agree["a_approach2"]:.3g} {_fmt_ci(agree.get("ci_approach2"))} (IsoFLOP) against '
          f'{agree["a_approach3"]:.3g} {_fmt_ci(agree.get("ci_approach3"))} (parametric), a2 - a3 '
          f'{_fmt_ci(agree.get("ci_difference"))} on the same row resamples')
  if agree['verdict'] == 'differ':
    warn.append(f'approaches differ: {both}: the difference excludes 0')
  elif agree['verdict'] in ('not identified', 'degenerate'):
    warn.append(f'approaches 2 and 3 cannot be compared ({agree["verdict"]}): {both}; an interval wider than '
                f'{INFORMATIVE_WIDTH} in a, open or without width agrees with nothing')


def headline(iso: dict | None, warn: list[str]) -> dict:
  """fit.json headline: the specification curve's a and b (statistical, systematic, combined), the
  number of specifications and those skipped, and the comparisons with published exponents."""
  curve = (iso or {}).get('specification_curve')
  if not curve:
    note = (iso or {}).get('bootstrap', {}).get('note')
    if note:
      warn.append(f'isoflop: no statistical interval of a from the seed-noise scheme: {note}; the row bootstrap '
                  f'gives {_fmt_ci(iso["ci"]["a"])} ({iso["ci_state"]["a"]})')
    why = ('approach 2 (IsoFLOP) was not fitted' if iso is None else
           f'no seed-noise draws: {note}' if note else 'no resampling (bootstrap 0)')
    return {'skipped': why}
  head = dict(curve['headline'])
  head['published'] = published_comparisons(curve)
  for k in ('a', 'b'):
    e = head.get(k)
    if not e:
      continue
    st = e['statistical']
    if st['state'] != 'identified':
      warn.append(f'headline: the statistical 5-95% interval of {k} {_fmt_ci(st["ci"])} is {st["state"]}')
    lo, hi = e['systematic']
    if k == 'a' and not hi - lo <= INFORMATIVE_WIDTH:
      warn.append(f'headline: analysis choices move a more than its noise: a = {e["value"]:.3g}, statistical '
                  f'{_fmt_ci(st["ci"])}, systematic (range over {head["specifications"]} specifications) '
                  f'{_fmt_ci([lo, hi])}, combined {_fmt_ci(e["combined"]["ci"])}')
  mc = iso.get('mc', {})
  if mc and not mc.get('met'):
    warn.append(f'isoflop: the Monte-Carlo error of the interval ends is above {mc["target"]} after '
                f'{mc["draws"]} draws (the cap, --max_draws)')
  return head
