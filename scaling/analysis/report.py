"""`scaling report`: writes REPORT.md in a sweep root from its results.jsonl.

The report says what the sweep measured (a table of runs), runs `scaling fit` into the root
(fit.json and PNGs), leads with the headline (a and b with their intervals, the held-out skill against naive
baselines, the flagged IsoFLOP budgets, approach 2 against 3) and sets the fitted exponents beside the published
anchors (scaling/analysis/fit/anchors.py); the fit sections are scaling/analysis/report_fit.py and
report_checks.py, the cell formatting report_format.py. For the seed study (configs/sweeps/seed_upgrades.py: runs named
'seed_upgrades:<arm>') it leads with the claims, their verdict rules, numbers with intervals and
plots (scaling/analysis/seed/render.py); for an lr_transfer sweep it writes scaling/analysis/lr_report.py's
report. Partial data renders: a missing arm or column gives 'not measured', a failed fit gives
its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Any, Sequence

from scaling.analysis.fit.command import fit_all
from scaling.analysis.fit.load import METRICS, PARAM_COLUMNS, FitError
from scaling.analysis.report_arms import arms_section
from scaling.analysis.report_checks import approaches_section, profiles_section
from scaling.analysis.report_fit import (
  anchors_section,
  banner,
  exponents_section,
  headline_section,
  predictions_section,
)
from scaling.analysis.report_format import _g, _num, _si, _table, _wall
from scaling.base.files import atomic_write_text

THROUGHPUT = 'throughput/tokens_per_s'
BPB = 'eval/bpb'

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


def _changes_section(rows: Sequence[dict]) -> list[str]:
  """Runs whose config changed after they started (collect's 'changes', from each run's history.jsonl; the field
  classification is scaling/config/history.py): [] without any. A change of the math (--extend, --force-change)
  means the run's results are not those of the config it was hashed and planned by."""
  changed = [r for r in rows if isinstance(r.get('changes'), list) and r['changes']]
  if not changed:
    return []
  math = [r for r in changed if any(c.get('how') in ('extend', 'force') for c in r['changes'])]
  lines = ['', '## Runs changed after they started', '',
           f'{len(changed)} run(s) were resumed with a changed config (each run\'s `history.jsonl`); '
           f'{len(math)} of them in their math (`--extend`: a new length with its schedule recomputed from the resume '
           f'step on; `--force-change`: any field), so their results are not those of the config they were planned '
           f'with. `free` changes (evaluation, logging, checkpoints, samples, layout) leave the math as it was.', '']
  body = []
  for r in changed:
    for c in r['changes']:
      fields = c.get('fields') or {}
      body.append([r.get('run', '?'), c.get('step'), c.get('how'),
                   '; '.join(f'{k}: {json.dumps(v[0])} → {json.dumps(v[1])}' for k, v in fields.items())])
  return lines + _table(['run', 'from step', 'how', 'fields (old → new)'], body)


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
    lines += [f'> **The fits below are not results.** {banner(result)} See "What these data do '
              'not determine".', '']
  if result is not None:
    head = headline_section(result)
    lines += head + ([''] if head else [])
  lines += list(extra)   # the seed study's claims first, rules before numbers (scaling/analysis/seed/render.py)
  lines += ['## What the sweep measured', '']
  lines += _runs_table(rows) if rows else ['No runs.']
  lines += _branches_section(rows)
  lines += _changes_section(rows)
  lines += ['', '## Scaling-law fits', '']
  lines += ['No fit was run (see the notes below).'] if result is None else _fit_sections(result)
  all_notes = list(notes) + (list(result.get('notes', [])) if result else [])
  if all_notes:
    lines += ['', '## Notes', ''] + [f'- {n}' for n in all_notes]
  return '\n'.join(lines) + '\n'


def _provenance_line(result: dict) -> str:
  inp, prov = result.get('inputs', {}), result.get('provenance') or {}
  sha = inp.get('results_sha256')
  commit = prov.get('code_commit')
  return (f'Metric `{inp.get("metric")}`, N = `{inp.get("params_column")}`, {inp.get("rows_used")} finished run(s); '
          'all numbers are in `fit.json`' + (f' (results sha256 {sha[:12]}…, code ' + (
              f'{commit[:12]}{" with uncommitted changes" if prov.get("code_dirty") else ""}' if commit else
              'outside a git checkout') + f', bootstrap seed {inp.get("rng_seed")})' if sha else '') + '.')


def _fit_sections(result: dict) -> list[str]:
  lines = [_provenance_line(result), '']
  warns = result.get('warnings', [])
  if warns:
    lines += ['### What these data do not determine', '',
              f'**{len(warns)} warning(s): read these before any number below.**', '']
    lines += [f'- {w}' for w in warns] + ['']
  lines += ['### Fitted exponents beside the published ones', ''] + exponents_section(result)
  lines += ['', '### IsoFLOP profiles: which budgets approach 2 may use', ''] + profiles_section(result)
  lines += ['', '### Approach 2 against approach 3, and a held-out budget', ''] + approaches_section(result)
  arms = arms_section(result)
  if arms:
    lines += [''] + arms
  lines += ['', '### Compute-optimal predictions', ''] + predictions_section(result)
  lines += ['', '### Published anchors', ''] + anchors_section(result)
  if result.get('plots'):
    lines += ['', '### Plots', '']
    lines += [f'![{p[:-4].replace("_", " ")}]({p})' for p in result['plots']]
  return lines


# --------------------------------------------------------------------------------------
# Orchestration and CLI


NOISE_SUFFIX = '-noise'   # runs named '<study>-noise': seed replicates that measure the noise floor, not fit points


def is_noise_run(raw: dict) -> bool:
  return str(raw.get('name') or '').endswith(NOISE_SUFFIX)


def _not_noise(raw: dict) -> bool:
  return not is_noise_run(raw)


def _noise_runs(results: str, rows: Sequence[dict], fit_options: dict) -> list[str]:
  """Runs named '*-noise' (configs/sweeps/isoflop_v2.py): left out of the fit, and their pooled seed SD is the fit's
  noise floor unless one is given. Returns the notes."""
  if not any(is_noise_run(r) for r in rows):
    return []
  from scaling.analysis.fit.load import load_results
  from scaling.analysis.fit.profiles import seed_noise_floor
  fit_options.setdefault('keep', _not_noise)
  noise = load_results(results, fit_options.get('metric', 'eval/bpb'),
                       params=fit_options.get('params', 'non_embedding'), skip_bad=True,
                       keep=is_noise_run)
  floor = seed_noise_floor(noise)
  if floor is None:
    return [f'{len(noise)} noise run(s) (named *{NOISE_SUFFIX}) left out of the fit; no seed replicates among them yet']
  fit_options.setdefault('noise_floor', floor['value'])
  return [f'{len(noise)} noise run(s) (named *{NOISE_SUFFIX}) left out of the fit; their {floor["detail"]} = '
          f'{floor["value"]:.4g} is the noise floor of the fit (--noise_floor)']


def _family_section(result: dict | None, compare: str, label: str, title: str) -> list[str]:
  """The report's comparison with another study's fit.json (scaling/analysis/fit/families.py)."""
  from scaling.analysis.fit.families import compare_families
  lines = [f'## A second family: {label}', '']
  if not result or 'a' not in (result.get('isoflop') or {}):
    return lines + ['No IsoFLOP fit here to compare.', '']
  with open(compare, encoding='utf-8') as f:
    other = json.load(f)
  try:
    rec = compare_families(result, other, labels=(title, label))
  except FitError as e:
    return lines + [f'Not compared: {e}.', '']
  lines += [f'{title} against {label} ({os.path.relpath(compare)}), N as each fit counts it; {rec["test"]}.', '',
            '| exponent | this study | ' + label + ' | difference | 5–95% of the difference | verdict |',
            '|---|---|---|---|---|---|']
  for k in ('a', 'b'):
    r = rec[k]
    ci = r['ci']
    lines.append(f'| {k} | {r["value_1"]:.3f} | {r["value_2"]:.3f} | {r["difference"]:+.3f} | '
                 f'{ci[0]:+.3f} – {ci[1]:+.3f} | **{r["verdict"]}** |')
  return lines + ['']


def write_report(root: str, results: str | None = None, study: str | None = None, *,
                 fit: bool = True, compare: str | None = None, compare_label: str = 'the other study',
                 **fit_options) -> str:
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
  from scaling.analysis import transfer_report  # width x depth x parametrization x lr (configs/sweeps/transfer.py)
  if study == 'transfer' or (study is None and rows and transfer_report.is_transfer(rows)):
    return transfer_report.write_report(root, rows, results)
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
  if fit and rows and not seed_study:
    notes += _noise_runs(results, rows, fit_options)
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
  if compare:
    extra = extra + _family_section(result, compare, compare_label, title)
  text = render_report(rows, result, title=title, notes=notes, results_name=os.path.relpath(results, root),
                       extra=extra)
  path = os.path.join(root, 'REPORT.md')
  atomic_write_text(path, text)
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
  parser.add_argument('--compare', default=None,
                      help="another study's fit.json: a section testing whether a and b differ between the two "
                           '(e.g. docs/results/isoflop_cpu/fit.json, the first IsoFLOP design)')
  parser.add_argument('--compare_label', default='the other study', help='its name in the report')
  return parser


def run_report(args: argparse.Namespace) -> int:
  """`scaling report`: returns the process exit status."""
  try:
    path = write_report(args.root, args.results, args.study, fit=args.fit, compare=args.compare,
                        compare_label=args.compare_label, metric=args.metric,
                        params=args.params, bootstrap=args.bootstrap, max_starts=args.max_starts)
  except FitError as e:
    print(f'scaling report: error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(run_report(add_report_args(argparse.ArgumentParser(prog='scaling report')).parse_args()))
