"""The scaling-law sections of REPORT.md, from a fit.json (scaling/analysis/fit/__init__.py lists its fields).

The headline (a and b with their statistical and systematic intervals, the held-out skill against naive baselines,
the flagged IsoFLOP budgets and a without them, approach 2 against approach 3, the published anchors), then the
exponents beside the published ones, the profile checks, the held-out table and the predictions. Written to read
fit.json files of every vintage: a field that an older fit.json lacks falls back to what it has (an `agree` flag
instead of a verdict, `ci` instead of `headline`), and a missing one renders as not measured.
"""

from __future__ import annotations

from typing import Any

from scaling.analysis.fit.anchors import ANCHORS, a_range_text, anchor_value, value_text
from scaling.analysis.report_format import _g, _rng, _si, _table, as_interval, interval_text, pick

# the anchor columns of the exponents table: (header, anchor key, method for per-method values)
ANCHOR_COLUMNS = (('Hoffmann 2022 approach 3', 'hoffmann2022', 'approach3'),
                  ('Besiroglu 2024 (approach 3 refit)', 'besiroglu2024', None),
                  ('Hoffmann 2022 approach 2', 'hoffmann2022', 'approach2'),
                  ('Kaplan 2020', 'kaplan2020', None))
BASELINE_SHORT = {'d20': 'D = 20 N', 'last_two': 'the last-two-budgets line', 'grid_centre': 'the grid centre'}
VERDICTS = {'consistent': 'consistent (the test on the difference finds none)',
            'differ': '**differ** (the test on the difference rejects equality)',
            'not identified': 'not identified (an approach does not determine a)',
            'degenerate': 'degenerate (an interval has no width to test against)',
            'not decidable': 'not decidable (an interval is missing)'}


def _fitted(result: dict, key: str) -> dict | None:
  part = result.get(key)
  return part if isinstance(part, dict) and part and 'skipped' not in part else None


def _agreement(result: dict) -> dict | None:
  return result.get('agreement') or result.get('exponent_agreement')


def verdict_text(agree: dict) -> str:
  """The agreement verdict in words: the new vocabulary, or an old fit.json's interval-overlap flag, relabelled."""
  v = agree.get('verdict')
  if v is not None:
    return VERDICTS.get(v, str(v))
  return {True: 'their 5–95% intervals overlap (an overlap only, not a test on the difference)',
          False: '**their 5–95% intervals do not overlap** (an overlap only, not a test on the difference)',
          None: 'not decidable (an interval is missing)'}[agree.get('agree')]


# ----------------------------------------------------------------------------- the headline
def headline_field(result: dict) -> dict | None:
  """The specification curve's headline: fit.json `headline`, else isoflop.specification_curve.headline."""
  h = result.get('headline')
  if not isinstance(h, dict):
    h = ((result.get('isoflop') or {}).get('specification_curve') or {}).get('headline')
  return h if isinstance(h, dict) else None


def _quantity(result: dict, q: str) -> dict | None:
  """{value, statistical, systematic, combined, source} of exponent q ('a' or 'b'), intervals as text: the
  specification curve's headline when the fit has one, else approach 2's value and bootstrap interval (then only
  statistical)."""
  h = headline_field(result)
  e = (h or {}).get(q)
  if isinstance(e, dict) and pick(e, 'value', 'estimate', 'point') is not None:
    main = (h or {}).get('main')
    return {'value': pick(e, 'value', 'estimate', 'point'),
            'statistical': interval_text(pick(e, 'statistical', 'ci_statistical', 'stat')),
            'systematic': interval_text(pick(e, 'systematic', 'ci_systematic', 'syst')),
            'combined': interval_text(pick(e, 'combined', 'ci_combined', 'total')),
            'source': 'the specification curve' + (f' (main specification {main}, {h.get("specifications")} '
                                                   'specifications)' if main else '')}
  iso = _fitted(result, 'isoflop')
  if iso is None or iso.get(q) is None:
    return None
  return {'value': iso[q], 'statistical': interval_text(iso.get('ci', {}).get(q)), 'systematic': None,
          'combined': None, 'source': f'approach 2 (IsoFLOP), {iso.get("budgets_used", "?")} budgets, row bootstrap'}


def _quantity_line(q: str, e: dict) -> str:
  label = {'a': 'a (N_opt ∝ C^a)', 'b': 'b (D_opt ∝ C^b)'}[q]
  parts = [f'statistical 5–95% {e["statistical"] or "none"}']
  parts.append(f'systematic {e["systematic"]}' if e['systematic'] else 'systematic: not computed in this fit.json')
  if e['combined']:
    parts.append(f'combined {e["combined"]}')
  return f'- **{label} = {_g(e["value"], ".3g")}** ({"; ".join(parts)}) — {e["source"]}.'


def _skill_line(ho: dict) -> str | None:
  skill = ho.get('skill')
  if not isinstance(skill, dict) or not ho.get('baselines'):
    return None
  parts = []
  for name, label in (('approach2', 'approach 2'), ('approach3', 'approach 3')):
    e = skill.get(name, {})
    if 'passes' not in e:
      continue
    qs = []
    for key in ('N_opt', 'loss'):
      s = e.get(key, {})
      qs.append(f'{key} skill {_g(s["skill"], ".2f")} against {BASELINE_SHORT.get(s.get("best_baseline"), "?")}'
                if _g(s.get('skill')) != '—'
                else f'{key}: {s.get("why", "no skill")}')
    verdict = {True: 'passes', False: '**does not pass**', None: 'not decidable'}[e['passes']]
    goals = {True: 'within', False: 'outside', None: 'n/a for'}[e.get('within_goals')]
    parts.append(f'{label} {verdict} ({", ".join(qs)}; {goals} the 1.5x / 2% goals)')
  if not parts:
    return None
  return (f'- **Held-out budget C = {ho["held_out_flops"]:.3g}** (skill = the law\'s error / the best naive '
          'baseline\'s; passes only below 1): ' + '; '.join(parts) + '.')


def _without_text(w: dict | None) -> str:
  if not w:
    return 'not computed'
  if w.get('same_as_headline'):
    return 'nothing left out'
  if 'skipped' in w:
    return f'no exponent ({w["skipped"][:140]})'
  exact = ', an exact line through 2 budgets' if w.get('exact') else ''
  return (f'a = {_g(w.get("a"), ".3g")} {_rng(as_interval((w.get("ci") or {}).get("a")))} from '
          f'{w.get("budgets_used")} budget(s){exact}')


def _profiles_line(result: dict) -> str | None:
  prof = result.get('profiles')
  if not isinstance(prof, dict) or not prof.get('budgets'):
    return None
  checked = [b for b in prof['budgets'] if b.get('checked', True)]
  flagged = [b for b in checked if b.get('flagged')]
  if not flagged:
    return f'- **IsoFLOP profiles**: none of the {len(checked)} checked budget(s) is flagged.'
  which = '; '.join(f'C = {b["flops"]:.3g} ({", ".join(b["reasons"])})' for b in flagged)
  line = (f'- **IsoFLOP profiles**: {len(flagged)} of {len(checked)} budget(s) flagged: {which}. Without them: '
          f'{_without_text(prof.get("without_flagged"))}.')
  wp = prof.get('without_profile_flags')
  if wp and wp.get('left_out') != (prof.get('without_flagged') or {}).get('left_out'):
    line += f' Without only those whose profile fails (misfit, one run; shape changes kept): {_without_text(wp)}.'
  return line


def headline_section(result: dict) -> list[str]:
  """The numbers to read first, each with what qualifies it."""
  lines = []
  for q in ('a', 'b'):
    e = _quantity(result, q)
    if e is not None:
      lines.append(_quantity_line(q, e))
  ho = result.get('held_out') or {}
  for line in (_skill_line(ho), _profiles_line(result)):
    if line:
      lines.append(line)
  agree = _agreement(result)
  if agree:
    lines.append(f'- **Approach 2 against approach 3** (a): {verdict_text(agree)}.')
  lines.append('- **Published a**: ' + '; '.join(f'{a["short"]} {a_range_text(a)}' for a in ANCHORS) +
               ' (what each measured: "Published anchors" below).')
  return ['## Headline', ''] + lines if len(lines) > 1 else []


def banner(result: dict) -> str:
  """One sentence on what is unconstrained or failed (for the top of the report)."""
  parts = []
  params = result.get('chinchilla', {}).get('parameters', {})
  bad = [k for k, p in params.items() if p.get('at_bound') or p.get('constrained') is False]
  if bad:
    parts.append(f'Parametric L(N, D): {", ".join(bad)} not determined by the data.')
  flags = result.get('design', {}).get('flags', [])
  if 'one_N_per_budget' in flags:
    parts.append('Every compute budget has one model size.')
  elif 'no_budget_with_3_sizes' in flags:
    parts.append('No compute budget has 3 or more model sizes.')
  if 'skipped' in result.get('isoflop', {}) and 'not requested' not in result['isoflop']['skipped']:
    parts.append('No IsoFLOP profile could be fitted: no compute-optimal N is measured.')
  if result.get('design', {}).get('budgets_not_interior'):
    parts.append(f'{len(result["design"]["budgets_not_interior"])} budget(s) with the minimum at '
                 'an end of their sizes.')
  flagged = (result.get('profiles') or {}).get('flagged') or []
  if flagged:
    parts.append(f'{len(flagged)} IsoFLOP budget(s) flagged (profile not a clean parabola or shape changes).')
  unc = sorted({f'{p["flops"]:.3g}' for p in result.get('predictions', [])
                for s in ('chinchilla', 'isoflop') if p.get(s, {}).get('constrained') is False})
  if unc:
    parts.append(f'N_opt at C = {", ".join(unc)} is unconstrained.')
  skill = (result.get('held_out') or {}).get('skill') or {}
  if any(e.get('passes') is False for e in skill.values() if isinstance(e, dict)):
    parts.append('The held-out check does not beat the naive baselines.')
  agree = _agreement(result) or {}
  if agree.get('verdict') == 'differ' or (agree.get('verdict') is None and agree.get('agree') is False):
    parts.append('Approaches 2 and 3 differ on a.')
  return ' '.join(parts) or f'{len(result.get("warnings", []))} warning(s).'


# ----------------------------------------------------------------------------- exponents and anchors
def _ci(fit_part: dict, key: str) -> str:
  ci = fit_part.get('ci', {}).get(key)
  return f'{ci[0]:.3g} – {ci[1]:.3g}' if ci and None not in ci else '—'


def _flag(p: dict | None) -> str:
  """The flag cell of a fitted parameter (fit.json chinchilla.parameters entry)."""
  if not p:
    return ''
  if p.get('at_bound'):
    return f'**at {p["at_bound"]} bound** (not determined)'
  if p.get('constrained') is False:
    return '**unconstrained**'
  return 'no interval' if p.get('constrained') is None else ''


def _anchor_cells(q: str) -> list[str]:
  out = []
  for _, key, method in ANCHOR_COLUMNS:
    v = anchor_value(key, q, method)
    out.append('—' if v is None else f'{v:g}')
  return out


def _exponent_rows(result: dict) -> list[list[Any]]:
  chin, iso, pl = _fitted(result, 'chinchilla'), _fitted(result, 'isoflop'), result.get('power_law', {})
  body = []

  def add(label, q, value, ci, method, flag=''):
    body.append([label, method, _g(value, '.3g'), ci] + _anchor_cells(q) + [flag])

  if chin:
    params = chin.get('parameters', {})
    add('α (L ∝ N^-α)', 'alpha', chin['alpha'], _ci(chin, 'alpha'), 'parametric L(N, D)', _flag(params.get('alpha')))
    add('β (L ∝ D^-β)', 'beta', chin['beta'], _ci(chin, 'beta'), 'parametric L(N, D)', _flag(params.get('beta')))
    add('a (N_opt ∝ C^a)', 'a', chin['a_exponent'], _ci(chin, 'a_exponent'), 'parametric, β/(α+β)',
        _flag(params.get('a_exponent')))
    add('b (D_opt ∝ C^b)', 'b', chin['b_exponent'], _ci(chin, 'b_exponent'), 'parametric, α/(α+β)',
        _flag(params.get('b_exponent')))
    at = chin.get('a_at_data')
    if at:
      add('a (N_opt ∝ C^a)', 'a', at['a'], _rng(at.get('ci')).strip('()').replace('no interval', '—'),
          'parametric, over the sampled budgets (rows\' FLOPs per token)')
  for key, q, label in (('vs_N', 'alpha', 'α (L ∝ N^-α)'), ('vs_D', 'beta', 'β (L ∝ D^-β)')):
    part = pl.get(key, {})
    if 'groups' in part:
      k = len(part['groups'])
      exact = sum(g.get('exact', False) for g in part['groups'])
      add(label, q, part['exponent_median'], f'{part["exponent_min"]:.3g} – {part["exponent_max"]:.3g} (range)',
          f'power law per {"token budget" if key == "vs_N" else "model size"}, median of {k}',
          f'{exact} of {k} exact (2 points)' if exact else '')
  if iso:
    exact = 'exact (2 budgets)' if iso.get('N_opt_vs_C', {}).get('exact') else ''
    for q in ('a', 'b'):
      add(f'{q} ({"N" if q == "a" else "D"}_opt ∝ C^{q})', q, iso[q], _ci(iso, q),
          f'IsoFLOP, {iso["budgets_used"]} budgets', exact)
  if chin:
    for q in ('E', 'A', 'B'):
      add(q, q, chin[q], _ci(chin, q), 'parametric L(N, D)', _flag(chin.get('parameters', {}).get(q)))
  return body


def exponents_section(result: dict) -> list[str]:
  body = _exponent_rows(result)
  if not body:
    return ['No exponent could be fitted (see the notes below).']
  lines = _table(['quantity', 'method', 'this sweep', '5–95% (bootstrap)'] + [c[0] for c in ANCHOR_COLUMNS] +
                 ['flag'], body)
  chin = _fitted(result, 'chinchilla')
  if chin:
    lines += ['', 'Parametric fit: ' + (
        f'exact ({chin["n"]} points for 5 parameters; no fit quality can be measured)'
        if chin.get('exact') else f'{chin["n"]} points, rmse(log) {chin["rmse_log"]:.3g}, '
        f'r2(log) {_g(chin.get("r2_log"), ".4f")}') + '.']
  lines += ['', 'E, A, B are nats/token on each study\'s own data and tokenizer: compare exponents, not constants, '
            'and expect small-scale sweeps to differ. Each study\'s source and what it measured: "Published anchors".']
  return lines


def _published_cell(result: dict | None, key: str) -> str:
  """This sweep's a against an anchor's (fit.json headline.published: a test on the difference, per method)."""
  comps = [c for c in ((headline_field(result or {}) or {}).get('published') or []) if c.get('anchor') == key]
  cells = []
  for c in comps:
    label = f'{c["method"].replace("approach", "approach ")}: ' if c.get('method') else ''
    diff = interval_text(c.get('ci_difference'))
    cells.append(f'{label}{c.get("verdict", "?")}' + (f' (difference {diff})' if diff else
                                                       f' ({c["why"]})' if c.get('why') else ''))
  return '; '.join(cells) or '—'


def anchors_section(result: dict | None = None) -> list[str]:
  """The published anchors: numbers, N convention, what was measured, this sweep's a against each (a test on the
  difference, when the fit has one), citation; † marks unchecked numbers."""
  body = []
  for a in ANCHORS:
    v = a['values']
    ab = ', '.join(f'{k} {value_text(v[k])}' for k in ('alpha', 'beta') if v.get(k) is not None) or '—'
    consts = ', '.join(f'{k} {value_text(v[k])}' for k in ('E', 'A', 'B') if v.get(k) is not None) or '—'
    b_text = value_text(v.get('b'))
    note = a['notes'] + (' † ' + '; '.join(a['uncertain']) if a['uncertain'] else '')
    body.append([a['short'], a_range_text(a), b_text, ab, consts, a['n_convention'], _published_cell(result, a['key']),
                 a['measured'], note])
  return _table(['study', 'a', 'b', 'α, β', 'E, A, B', 'N', 'this sweep\'s a against it', 'what it measured',
                 'notes'], body) + [
      '', 'Sources: ' + '; '.join(a['cite'] for a in ANCHORS) + '. † recalled, not checked against the paper: '
      'check before quoting.']


# ----------------------------------------------------------------------------- predictions
def _pred_cells(q: dict) -> list[str]:
  if not q or 'N_opt' not in q:
    return ['—', '—', '—']
  ci = q.get('ci', {})
  if q.get('constrained') is False:
    span = q.get('N_opt_span')
    n_cell = '**unconstrained**' + (f' (5–95% spans {span:.2g}x)' if span else ' (interval open)')
    return [n_cell, '—', '—']
  n_cell = _si(q['N_opt']) + (f' ({_si(ci["N_opt"][0])}–{_si(ci["N_opt"][1])})'
                              if 'N_opt' in ci else ' (no interval)')
  l_cell = _g(q['loss']) + (f' ({ci["loss"][0]:.4g}–{ci["loss"][1]:.4g})' if 'loss' in ci else '')
  return [n_cell, _si(q['D_opt']), l_cell]


def predictions_section(result: dict) -> list[str]:
  body = []
  for p in result.get('predictions', []):
    ext = p.get('extrapolation')
    body.append([f'{p["flops"]:.3g}', f'{ext:.3g}x' if ext else '—'] +
                _pred_cells(p.get('chinchilla', {})) + _pred_cells(p.get('isoflop', {})))
  if not body or all(all(c == '—' for c in b[2:]) for b in body):
    return ['No prediction: neither the parametric nor the IsoFLOP fit is available.']
  lines = _table(['target FLOPs', 'extrapolation', 'N_opt parametric (5–95%)', 'D_opt parametric',
                  'loss parametric (5–95%)', 'N_opt IsoFLOP (5–95%)', 'D_opt IsoFLOP',
                  'loss IsoFLOP (5–95%)'], body)
  lines += ['', 'extrapolation = target / largest sampled compute. An N_opt whose 5–95% interval '
            'spans more than 10x is shown as unconstrained, not as a number.']
  return lines
