"""`scaling report`: writes REPORT.md in a sweep root from its results.jsonl.

The report says what the sweep measured (a table of runs), runs `scaling fit` into the root
(fit.json and PNGs) and sets the fitted exponents beside the published ones (Hoffmann et al.
2022, Kaplan et al. 2020). For the seed study (configs/sweeps/seed_upgrades.py: runs named
'seed_upgrades:<arm>') it leads with the claims, their verdict rules, numbers with intervals and
plots (scaling/analysis/seed/render.py); for an lr_transfer sweep it writes scaling/analysis/lr_report.py's
report. Partial data renders: a missing arm or column gives 'not measured', a failed fit gives
its reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from typing import Any, Sequence

from scaling.analysis.fit.command import fit_all
from scaling.analysis.fit.load import METRICS, PARAM_COLUMNS, FitError

THROUGHPUT = 'throughput/tokens_per_s'
BPB = 'eval/bpb'

# Hoffmann et al. 2022 (Table 2 and eq. 10; loss in nats/token on MassiveText) and Kaplan et
# al. 2020 (L(N) and L(D) exponents; compute-efficient N ~ C^0.73 and D ~ C^0.27).
PUBLISHED = {
    'alpha': {'chinchilla3': 0.34, 'kaplan': 0.076},
    'beta': {'chinchilla3': 0.28, 'kaplan': 0.095},
    'a': {'chinchilla3': 0.46, 'chinchilla2': 0.49, 'chinchilla1': 0.50, 'kaplan': 0.73},
    'b': {'chinchilla3': 0.54, 'chinchilla2': 0.51, 'chinchilla1': 0.50, 'kaplan': 0.27},
    'E': {'chinchilla3': 1.69}, 'A': {'chinchilla3': 406.4}, 'B': {'chinchilla3': 410.7},
}

# --------------------------------------------------------------------------------------
# Rows


def read_rows(path: str, notes: list[str]) -> list[dict]:
  """Every JSON object of results.jsonl, whatever its state; unreadable lines become notes."""
  rows = []
  if not os.path.isfile(path):
    notes.append(f'no results file at {path}: run `scaling sweep collect` first')
    return rows
  with open(path, encoding='utf-8') as f:
    for lineno, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        row = json.loads(text)
      except json.JSONDecodeError as e:
        notes.append(f'{os.path.basename(path)} line {lineno}: not valid JSON ({e.msg}); left out')
        continue
      if isinstance(row, dict):
        rows.append(row)
      else:
        notes.append(f'{os.path.basename(path)} line {lineno}: not a JSON object; left out')
  return rows


def _num(v: Any) -> float | None:
  """A finite float, or None for missing / null / NaN / non-numbers."""
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return None
  return float(v) if math.isfinite(v) else None


def _lookup(row: dict, keys: Sequence[str]) -> Any:
  """A value from the row, else from its overrides (a key or a dotted key's last part)."""
  for k in keys:
    if row.get(k) is not None:
      return row[k]
  overrides = row.get('overrides')
  if isinstance(overrides, dict):
    for k, v in overrides.items():
      if str(k).rsplit('.', 1)[-1] in keys and v is not None:
        return v
  return None


def row_study(row: dict) -> str | None:
  study = _lookup(row, ('study',))
  return str(study) if study is not None else None


# --------------------------------------------------------------------------------------
# Rendering


def _si(v: Any) -> str:
  v = _num(v)
  if v is None:
    return '—'
  for div, suffix in ((1e12, 'T'), (1e9, 'B'), (1e6, 'M'), (1e3, 'k')):
    if abs(v) >= div:
      return f'{v / div:.3g}{suffix}'
  return f'{v:.3g}'


def _g(v: Any, spec: str = '.4g') -> str:
  v = _num(v)
  return '—' if v is None else format(v, spec)


def _wall(v: Any) -> str:
  v = _num(v)
  if v is None:
    return '—'
  if v < 120:
    return f'{v:.0f} s'
  if v < 7200:
    return f'{v / 60:.1f} min'
  return f'{v / 3600:.1f} h'


def _cell(v: Any) -> str:
  return str(v).replace('|', '\\|').replace('\n', ' ')


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_cell(c) for c in r) + ' |' for r in rows]
  return lines


def _overrides_cell(r: dict, common: dict) -> str:
  """A run's overrides less those every run shares; a cooldown branch as 'branch of PARENT@STEP'."""
  ov = r.get('overrides')
  if not isinstance(ov, dict):
    return ''
  cells = [f'{k}={v}' for k, v in ov.items() if k != 'branch_of' and common.get(k, object()) != v]
  if 'branch_of' in ov:
    cells.insert(0, f'branch of {r.get("parent") or "?"}@{r.get("fork_step") or "?"}')
  return ', '.join(cells)


def _runs_table(rows: Sequence[dict]) -> list[str]:
  ovs = [r['overrides'] for r in rows if isinstance(r.get('overrides'), dict)]
  common = {k: v for k, v in ovs[0].items() if k != 'branch_of' and all(o.get(k, object()) == v for o in ovs)} \
      if len(ovs) > 1 else {}
  body = []
  for r in rows:
    body.append([r.get('run', '?'), r.get('state', '?'), _overrides_cell(r, common) or '—', _si(r.get('params')),
                 _si(r.get('non_embedding_params')), _si(r.get('tokens')),
                 _g(r.get('flops'), '.3g'),
                 _g(r.get('eval/loss')), _g(r.get(BPB)), _si(r.get(THROUGHPUT)),
                 _wall(r.get('wall_s'))])
  head = [f'Every run: {", ".join(f"{k}={v}" for k, v in common.items())}.', ''] if common else []
  return head + _table(['run', 'state', 'overrides', 'params', 'non-emb params', 'tokens', 'FLOPs',
                        'eval loss', 'eval bpb', 'tokens/s', 'wall'], body)


def _ci(fit_part: dict, key: str) -> str:
  ci = fit_part.get('ci', {}).get(key)
  return f'{ci[0]:.3g} – {ci[1]:.3g}' if ci and None not in ci else '—'


def _published(q: str, src: str) -> str:
  v = PUBLISHED[q].get(src)
  return '—' if v is None else f'{v:g}'


def _flag(p: dict | None) -> str:
  """The flag cell of a fitted parameter (fit.json chinchilla.parameters entry)."""
  if not p:
    return ''
  if p.get('at_bound'):
    return f'**at {p["at_bound"]} bound** (not determined)'
  if p.get('constrained') is False:
    return '**unconstrained**'
  return 'no interval' if p.get('constrained') is None else ''


def _exponents_section(result: dict) -> list[str]:
  chin, iso = result.get('chinchilla', {}), result.get('isoflop', {})
  pl = result.get('power_law', {})
  params = chin.get('parameters', {})
  body = []

  def add(label, q, value, ci, method, flag=''):
    body.append([label, method, _g(value, '.3g'), ci, _published(q, 'chinchilla3'),
                 _published(q, 'chinchilla2'), _published(q, 'kaplan'), flag])

  has_chin = 'skipped' not in chin and chin
  if has_chin:
    add('α (L ∝ N^-α)', 'alpha', chin['alpha'], _ci(chin, 'alpha'), 'parametric L(N, D)',
        _flag(params.get('alpha')))
    add('β (L ∝ D^-β)', 'beta', chin['beta'], _ci(chin, 'beta'), 'parametric L(N, D)',
        _flag(params.get('beta')))
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
      add(label, q, part['exponent_median'],
          f'{part["exponent_min"]:.3g} – {part["exponent_max"]:.3g} (range)',
          f'power law per {"token budget" if key == "vs_N" else "model size"}, median of {k}',
          f'{exact} of {k} exact (2 points)' if exact else '')
  if 'skipped' not in iso and iso:
    exact = 'exact (2 budgets)' if iso.get('N_opt_vs_C', {}).get('exact') else ''
    add('a (N_opt ∝ C^a)', 'a', iso['a'], _ci(iso, 'a'), f'IsoFLOP, {iso["budgets_used"]} budgets',
        exact)
    add('b (D_opt ∝ C^b)', 'b', iso['b'], _ci(iso, 'b'), f'IsoFLOP, {iso["budgets_used"]} budgets',
        exact)
  if has_chin:
    for q in ('E', 'A', 'B'):
      add(q, q, chin[q], _ci(chin, q), 'parametric L(N, D)', _flag(params.get(q)))
  if not body:
    return ['No exponent could be fitted (see the notes below).']
  lines = _table(['quantity', 'method', 'this sweep', '5–95% (bootstrap)',
                  'Chinchilla approach 3', 'Chinchilla approach 2', 'Kaplan 2020', 'flag'], body)
  if has_chin:
    lines += ['', 'Parametric fit: ' + (
        f'exact ({chin["n"]} points for 5 parameters; no fit quality can be measured)'
        if chin.get('exact') else f'{chin["n"]} points, rmse(log) {chin["rmse_log"]:.3g}, '
        f'r2(log) {_g(chin.get("r2_log"), ".4f")}') + '.']
  lines += ['', 'Published: Hoffmann et al. 2022 (Table 2: a = 0.50/0.49/0.46 and '
            'b = 0.50/0.51/0.54 for approaches 1/2/3; eq. 10: E 1.69, A 406.4, B 410.7, '
            'α 0.34, β 0.28), Kaplan et al. '
            '2020 (α_N 0.076, α_D 0.095 without an irreducible term; N_opt ∝ C^0.73, D_opt ∝ '
            'C^0.27). E, A, B are nats/token on MassiveText: compare exponents, not constants, '
            'and expect small-scale sweeps to differ.']
  return lines


def _approaches_section(result: dict) -> list[str]:
  """Approach 2 and approach 3 side by side: a with intervals, agreement, held-out errors."""
  agree = result.get('exponent_agreement')
  ho = result.get('held_out', {})
  lines = []
  if agree:
    verdict = {True: 'agree (5–95% intervals overlap)', False: '**disagree** (5–95% intervals '
               'do not overlap)', None: 'not decidable (an interval is missing)'}[agree['agree']]
    lines += _table(['', 'approach 2 (IsoFLOP)', 'approach 3 (parametric)'], [
        ['exponent a of N_opt ∝ C^a', f'{agree["a_approach2"]:.3g} ' + _rng(agree['ci_approach2']),
         f'{agree["a_approach3"]:.3g} ' + _rng(agree['ci_approach3'])]])
    lines += ['', f'The two estimates of a {verdict}. Approach 3\'s a is '
              f'{agree.get("approach3_form", "β/(α+β)")}' + (
                  ': the slope of its N_opt(C) with D = C / (FLOPs per token of the rows), which '
                  'for small models (LM head, attention) is not C / 6N, so it can differ from '
                  'β/(α+β).' if agree.get('approach3_form') == 'over the sampled budgets' else '.'),
              '']
  else:
    have = [n for n, k in (('approach 2 (IsoFLOP)', 'isoflop'), ('approach 3 (parametric)',
                                                                 'chinchilla'))
            if 'skipped' not in result.get(k, {'skipped': 1})]
    lines += [(f'Only {have[0]} could be fitted' if have else 'Neither approach could be fitted') +
              ': no comparison.', '']
  if 'skipped' in ho or not ho:
    lines += [f'Held-out check: not run ({ho.get("skipped", "not requested")}).']
    return lines
  obs = ho['observed']
  lines += [f'Held-out check: refit without the largest budget (C = {ho["held_out_flops"]:.3g}, '
            f'{len(ho["held_out_runs"])} run(s); fits use C ≤ {ho["train_max_flops"]:.3g}) and '
            f'predict its minimum. Observed: {obs["kind"]} '
            f'(N_opt {_si(obs["N_opt"])}, loss {obs["L_opt"]:.4g})' +
            ('' if obs['bracketed'] else ' — **not bracketed**: the best run only bounds the '
             'minimum loss from above; no N_opt error can be measured') + '.', '']
  body = []
  for key, name in (('approach2', 'approach 2 (IsoFLOP)'), ('approach3', 'approach 3 (parametric)')):
    q = ho.get(key, {})
    if 'loss' in q:
      n_cell = _si(q['N_opt']) + (' (at the search bound: no optimum within 100x of the sizes)'
                                  if q.get('optimum_at_search_bound') else '')
      body.append([name, f'{q["loss"]:.4g}', f'{100 * q["loss_error"]:+.2f}%', n_cell,
                   _g(q['N_opt_ratio'], '.3g') if q['N_opt_ratio'] is not None else 'not measurable'])
    else:
      body.append([name, '—', '—', '—', f'not fitted: {q.get("skipped", "?")}'])
  lines += _table(['held-out prediction', 'loss', 'loss error', 'N_opt', 'N_opt predicted / observed'],
                  body)
  form = ho.get('approach2', {}).get('loss_form')
  if form:
    lines += ['', f'Approach 2 predicts the loss by a power law in C through the IsoFLOP minima '
              f'(`{form}`; an irreducible term E needs >= 4 budgets to fit): without E it '
              'extrapolates the loss too low.' if form == 'a * x^-b' else
              f'Approach 2 predicts the loss by `{form}` in C through the IsoFLOP minima.']
  return lines


def _rng(ci) -> str:
  return f'({ci[0]:.3g} – {ci[1]:.3g})' if ci and None not in ci else '(no interval)'


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


def _predictions_section(result: dict) -> list[str]:
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


def _headline(result: dict) -> str:
  """One sentence on what is unconstrained (for the top of the report)."""
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
  unc = sorted({f'{p["flops"]:.3g}' for p in result.get('predictions', [])
                for s in ('chinchilla', 'isoflop') if p.get(s, {}).get('constrained') is False})
  if unc:
    parts.append(f'N_opt at C = {", ".join(unc)} is unconstrained.')
  agree = result.get('exponent_agreement') or {}
  if agree.get('agree') is False:
    parts.append('Approaches 2 and 3 disagree on a.')
  return ' '.join(parts) or f'{len(result["warnings"])} warning(s).'


def _branches_section(rows: Sequence[dict]) -> list[str]:
  """Compute saved by cooldown branches (collect's role/own_flops columns; scaling/launch/rundir.py): [] without any.

  The sweep's compute counts each stable parent once and each branch's decay; separate runs of the
  branches' lengths would take their full FLOPs (the per-row C the fit uses).
  """
  done = [r for r in rows if r.get('role') == 'branch' and r.get('state') == 'done']
  parents = [r for r in rows if r.get('role') == 'parent' and r.get('run') in {b.get('parent') for b in done}]
  own = [_num(r.get('own_flops')) for r in done + parents]
  full = [_num(r.get('flops')) for r in done]
  if not done or None in own or None in full:
    return []
  used, separate = sum(own), sum(full)
  lines = ['', '## Compute saved by cooldown branches', '',
           f'{len(done)} finished branch(es) of {len(parents)} stable parent(s) took {_si(used)} FLOPs (each '
           f'parent\'s steps once, each branch its decay), against {_si(separate)} for separate runs of the same '
           f'lengths: {used / separate:.0%} of the compute, {1 - used / separate:.0%} saved. Each row\'s FLOPs '
           f'(the fit\'s C) and tokens count its parent\'s steps before the fork in full.', '']
  parents_of = {b.get('parent') for b in done}
  open_ = sum(r.get('role') == 'branch' and r.get('state') != 'done' and r.get('parent') in parents_of for r in rows)
  if open_:
    lines[-2] += (f' {open_} more branch(es) of these parents have not finished: the parents\' compute is not '
                  f'yet shared by all their branches, so the saving is understated.')
  body = [[r.get('run'), r.get('parent'), r.get('fork_step'), _si(r.get('tokens')), _si(r.get('own_flops')),
           _si(r.get('flops')), _g(r.get('eval/loss'))] for r in done]
  return lines + _table(['branch', 'parent', 'fork step', 'tokens', 'own FLOPs', 'FLOPs (fit)', 'eval loss'], body)


def render_report(rows: Sequence[dict], result: dict | None, *,
                  title: str, notes: Sequence[str], results_name: str = 'results.jsonl',
                  extra: Sequence[str] = ()) -> str:
  """REPORT.md text from the raw rows, the fit result (fit.json) and `extra` sections (the seed study's)."""
  states: dict[str, int] = {}
  for r in rows:
    states[str(r.get('state', '?'))] = states.get(str(r.get('state', '?')), 0) + 1
  lines = [f'# Scaling report: {title}', '',
           f'Generated by `scaling report` from `{results_name}`: {len(rows)} run(s) (' +
           ', '.join(f'{n} {s}' for s, n in sorted(states.items())) + ').', '']
  if result is not None and result.get('warnings'):
    lines += [f'> **The fits below are not results.** {_headline(result)} See "What these data do '
              'not determine".', '']
  lines += list(extra)   # the seed study's claims first, rules before numbers (scaling/analysis/seed/render.py)
  lines += ['## What the sweep measured', '']
  lines += _runs_table(rows) if rows else ['No runs.']
  lines += _branches_section(rows)
  lines += ['', '## Scaling-law fits', '']
  if result is None:
    lines += ['No fit was run (see the notes below).']
  else:
    inp = result.get('inputs', {})
    lines += [f'Metric `{inp.get("metric")}`, N = `{inp.get("params_column")}`, '
              f'{inp.get("rows_used")} finished run(s); all numbers are in `fit.json`.', '']
    warns = result.get('warnings', [])
    if warns:
      lines += ['### What these data do not determine', '',
                f'**{len(warns)} warning(s): read these before any number below.**', '']
      lines += [f'- {w}' for w in warns] + ['']
    lines += ['### Fitted exponents beside the published ones', '']
    lines += _exponents_section(result)
    lines += ['', '### Approach 2 against approach 3, and a held-out budget', '']
    lines += _approaches_section(result)
    lines += ['', '### Compute-optimal predictions', '']
    lines += _predictions_section(result)
    if result.get('plots'):
      lines += ['', '### Plots', '']
      lines += [f'![{p[:-4].replace("_", " ")}]({p})' for p in result['plots']]
  all_notes = list(notes) + (list(result.get('notes', [])) if result else [])
  if all_notes:
    lines += ['', '## Notes', ''] + [f'- {n}' for n in all_notes]
  return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------------------
# Orchestration and CLI


def write_report(root: str, results: str | None = None, study: str | None = None, *,
                 fit: bool = True, **fit_options) -> str:
  """Writes <root>/REPORT.md (and fit.json + plots in root); returns the report's path."""
  if not os.path.isdir(root):
    raise FitError(f'--root {root} is not a directory (the sweep root that holds '
                   'results.jsonl)')
  results = results or os.path.join(root, 'results.jsonl')
  notes: list[str] = []
  rows = read_rows(results, notes)
  studies = sorted({row_study(r) for r in rows} - {None})
  if study is None and len(studies) == 1:
    study = studies[0]
  from scaling.analysis import lr_report  # a parametrization x width x lr sweep (configs/sweeps/lr_transfer.py)
  if study == 'lr_transfer' or (study is None and rows and lr_report.is_lr_transfer(rows)):
    return lr_report.write_report(root, rows, results)
  result = None
  from scaling.analysis.seed import claims as claims_lib  # the seed study, rows named 'seed_upgrades:<arm>'
  seed_study = claims_lib.is_study(rows) or study == claims_lib.STUDY
  if seed_study:
    per_run, other = claims_lib.read_measurements(root)
    rows = claims_lib.merged(rows, per_run)
    fit_options['keep'] = claims_lib.fit_keep
    notes.append('seed_upgrades study: the scaling-law fits use the BPE tokenizer frontier (tok-bpe) only')
    if not claims_lib.is_study(rows):
      notes.append(f"study {claims_lib.STUDY} requested, but no run is named '{claims_lib.PREFIX}<arm>' "
                   '(configs/sweeps/seed_upgrades.py): every claim is not measured')
  if fit and rows:
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # bad rows become notes in fit.json
        result = fit_all(results=results, out=root, skip_bad=True, **fit_options)
      notes += [f'fit: {e}' for e in result['errors'] if not e.startswith('no fit is possible')]
    except FitError as e:
      notes.append(f'fit not run: {e}')
  title = study or os.path.basename(os.path.abspath(root))
  extra = []
  if seed_study:
    from scaling.analysis.seed import render as claims_render
    extra = claims_render.sections(rows, other, result, root)
  text = render_report(rows, result, title=title, notes=notes, results_name=os.path.relpath(results, root),
                       extra=extra)
  path = os.path.join(root, 'REPORT.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return path


def add_report_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """Arguments of `scaling report`."""
  parser.add_argument('--root', required=True, help='sweep root; REPORT.md is written there')
  parser.add_argument('--results', default=None, help='default: <root>/results.jsonl')
  parser.add_argument('--study', default=None,
                      help="study name (e.g. seed_upgrades: check the seed guide's claims)")
  parser.add_argument('--metric', default='eval/bpb', choices=METRICS)
  parser.add_argument('--params', default='non_embedding', choices=sorted(PARAM_COLUMNS),
                      help='the N of the fits: non-embedding (Kaplan) or total parameters (Hoffmann)')
  parser.add_argument('--bootstrap', type=int, default=200, help='bootstrap resamples of the fit')
  parser.add_argument('--max_starts', type=int, default=256)
  parser.add_argument('--no_fit', dest='fit', action='store_false', help='tables and claims only')
  return parser


def run_report(args: argparse.Namespace) -> int:
  """`scaling report`: returns the process exit status."""
  try:
    path = write_report(args.root, args.results, args.study, fit=args.fit, metric=args.metric,
                        params=args.params, bootstrap=args.bootstrap, max_starts=args.max_starts)
  except FitError as e:
    print(f'scaling report: error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(run_report(add_report_args(argparse.ArgumentParser(prog='scaling report')).parse_args()))
