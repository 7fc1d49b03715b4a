"""`scaling fit --results PATH`: the options, every fit the data allow, fit.json and the plots, the summary.

fit_all runs the fits (scaling/analysis/fit/approaches.py and laws.py), the held-out check, the predictions and
the diagnostics, then writes fit.json and the PNGs; run_fit is the command, which prints notes, warnings, the
numbers and the headline lines (one per fitted law, or one saying why nothing was fitted).
fit.json's fields are described in scaling/analysis/fit/__init__.py.

Outputs are written whole and only for a fit that succeeded. Everything is computed first; the PNGs are drawn
into temporary files, fit.json is written atomically (scaling/base/files.py), then the PNGs are renamed into
place. A fit FAILS when the input is bad (FitError before any fit), when a plot raises, or when
result['errors'] is not empty: a fit asked for with --fits that the data cannot support, or no fit possible at
all. A failed fit leaves the fit.json and PNGs already in --out byte-identical (no temporary file stays), with
one exception: when --out holds no fit.json yet, a fit with errors writes fit.json (no PNGs) so that the
reasons are on record; it never replaces an existing one (os.link, which refuses an existing name).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

import numpy as np

from scaling.analysis.fit.approaches import budget_strata, fit_chinchilla, fit_isoflop
from scaling.analysis.fit.arms import has_arms, lr_law, reduce_arms
from scaling.analysis.fit.diagnostics import diagnose, isoflop_design
from scaling.analysis.fit.held_out import format_skill, held_out_check
from scaling.analysis.fit.laws import fit_power_laws
from scaling.analysis.fit.load import METRICS, PARAM_COLUMNS, FitError, is_metric, load_results
from scaling.analysis.fit.plots import discard_plots, install_plots, render_plots
from scaling.analysis.fit.predictions import predict
from scaling.analysis.fit.profiles import check_profiles, profile_warnings
from scaling.analysis.fit.provenance import inputs_record, provenance
from scaling.base.files import atomic_write_json, open_temp_beside

FIT_NAMES = ('power_law', 'chinchilla', 'isoflop')
DEFAULT_TARGETS = (1e21, 1e23)


def _jsonable(obj: Any) -> Any:
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, (np.floating, float)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


_DEFAULTS = {
    'results': None, 'metric': 'eval/bpb', 'params': 'non_embedding', 'out': None,
    'target_flops': None, 'fits': 'auto', 'bootstrap': 200, 'seed': 0, 'huber_delta': 1e-3,
    'max_starts': 256, 'budget_tol': 0.1, 'skip_bad': False, 'plots': True, 'held_out': True,
    'noise_floor': None, 'mc_error': 0.005, 'max_draws': 64000, 'arms': 'best',
}


def _options(args: Any = None, **kwargs) -> dict:
  opts = dict(_DEFAULTS)
  if args is not None:
    opts.update({k: v for k, v in (vars(args) if not isinstance(args, dict) else args).items()
                 if k in _DEFAULTS})
  opts.update({k: v for k, v in kwargs.items() if k in _DEFAULTS})
  unknown = set(kwargs) - set(_DEFAULTS) - {'keep'}
  if unknown:
    raise FitError(f'unknown fit option(s) {sorted(unknown)}; known: {sorted(_DEFAULTS)}')
  if not opts['results']:
    raise FitError('no results file given: pass --results PATH (from `scaling sweep collect`)')
  if not is_metric(opts['metric']):
    raise FitError(f'--metric must be one of {METRICS} or a tagged eval set\'s eval/<tag>/bpb | eval/<tag>/loss, '
                   f'got {opts["metric"]!r}')
  fits = opts['fits']
  if isinstance(fits, str):
    fits = [f.strip() for f in fits.split(',') if f.strip()]
  if fits == ['auto']:
    opts['explicit'] = []
  else:
    bad = [f for f in fits if f not in FIT_NAMES]
    if bad:
      raise FitError(f'--fits: unknown fit(s) {bad}; choose from {FIT_NAMES} or auto')
    opts['explicit'] = list(fits)
  opts['targets'] = [float(t) for t in (opts['target_flops'] or DEFAULT_TARGETS)]
  if any(not t > 0 for t in opts['targets']):
    raise FitError(f'--target_flops must be > 0, got {opts["targets"]}')
  if opts['out'] is None:
    opts['out'] = os.path.dirname(os.path.abspath(opts['results']))
  return opts


def _with_notes(power_laws: dict, notes: list[str]) -> dict:
  for k, v in power_laws.items():
    if 'skipped' in v:
      notes.append(f'power_law {k} skipped: {v["skipped"]}')
  return power_laws


def _fit_rows(o: dict, keep) -> tuple[list[dict], dict]:
  """Loads the rows and runs every fit, the checks and the diagnostics: (rows, result without plots);
  writes nothing."""
  notes: list[str] = []
  rows = load_results(o['results'], o['metric'], params=o['params'], skip_bad=o['skip_bad'],
                      notes=notes, keep=keep)
  if not rows:
    raise FitError(f'{o["results"]}: no finished runs with usable values ({"; ".join(notes)})')
  all_rows, arms = rows, None
  if has_arms(rows):
    rows, arms = reduce_arms(rows, o['arms'])
    notes.append(f'{arms["rows_in"]} rows are {arms["points_out"]} points trained at several learning rates; '
                 f'each point is its {"best arm" if o["arms"] == "best" else "parabola minimum in log lr"} '
                 f'(--arms); {arms["note"]}')
  arr = {k: np.array([r[k] for r in rows]) for k in ('N', 'D', 'C', 'L')}
  result: dict[str, Any] = {
      'inputs': inputs_record(o['results'], all_rows, o, keep),
      'provenance': provenance(),
      'notes': notes,
  }
  runs = {
      'power_law': lambda: _with_notes(fit_power_laws(rows), notes),
      'chinchilla': lambda: fit_chinchilla(arr['N'], arr['D'], arr['L'],
                                           huber_delta=o['huber_delta'], bootstrap=o['bootstrap'],
                                           seed=o['seed'], max_starts=o['max_starts'] or None,
                                           strata=budget_strata(rows, o['budget_tol'])),
      'isoflop': lambda: fit_isoflop(rows, budget_tol=o['budget_tol'], bootstrap=o['bootstrap'],
                                     seed=o['seed'], params=o['params'], mc_error=o['mc_error'],
                                     max_draws=o['max_draws'], noise_sd=o['noise_floor']),
  }
  wanted = o['explicit'] or list(FIT_NAMES)
  errors, fitted = [], []
  for name in FIT_NAMES:
    if name not in wanted:
      result[name] = {'skipped': 'not requested (--fits)'}
      continue
    try:
      result[name] = runs[name]()
      fitted.append(name)
    except FitError as e:
      result[name] = {'skipped': str(e)}
      notes.append(f'{name} skipped: {e}')
      if name in o['explicit']:
        errors.append(f'{name} was requested but cannot be fitted: {e}')
  if not fitted:
    errors.append('no fit is possible: ' + '; '.join(
        f'{k}: {result[k]["skipped"]}' for k in FIT_NAMES))
  if arms is not None:
    result['lr_arms'] = _arms_result(all_rows, arms, result, o)
  result['design'] = isoflop_design(rows, budget_tol=o['budget_tol'])
  result['profiles'] = check_profiles(rows, budget_tol=o['budget_tol'], noise_floor=o['noise_floor'],
                                      bootstrap=o['bootstrap'], seed=o['seed'], refit='isoflop' in fitted)
  if not o['held_out']:
    result['held_out'] = {'skipped': 'not requested (--no_held_out)'}
  elif not set(fitted) & {'chinchilla', 'isoflop'}:
    result['held_out'] = {'skipped': 'neither approach 2 nor approach 3 could be fitted on all rows'}
  else:
    try:
      result['held_out'] = held_out_check(rows, budget_tol=o['budget_tol'],
                                          huber_delta=o['huber_delta'],
                                          max_starts=o['max_starts'] or None, seed=o['seed'])
    except FitError as e:
      result['held_out'] = {'skipped': str(e)}
  result['predictions'] = predict(
      o['targets'], chinchilla=result['chinchilla'] if 'chinchilla' in fitted else None,
      isoflop=result['isoflop'] if 'isoflop' in fitted else None, max_flops=float(arr['C'].max()))
  result['warnings'] = diagnose(rows, result) + profile_warnings(result['profiles'])
  result['errors'] = errors
  return rows, result


def _arms_result(all_rows: list[dict], arms: dict, result: dict, o: dict) -> dict:
  """The arms record with the LR law, and a under the other arm estimator (a systematic choice: the headline's
  systematic interval is widened to include it)."""
  iso = result.get('isoflop') or {}
  sigma = o['noise_floor'] or ((iso.get('resampling') or {}).get('seed_noise') or {}).get('sigma')
  arms['law'] = lr_law(arms['points'], noise_sd=sigma, seed=o['seed'], a=iso.get('a'), b=iso.get('b'))
  if 'a' not in iso:
    return arms
  other = 'lr_parabola' if o['arms'] == 'best' else 'best'
  try:
    alt = fit_isoflop(reduce_arms(all_rows, other)[0], budget_tol=o['budget_tol'], bootstrap=0)
  except FitError as e:
    arms['other_estimator'] = {'estimator': other, 'skipped': str(e)}
    return arms
  arms['other_estimator'] = {'estimator': other, 'a': alt['a'], 'b': alt['b']}
  head = (iso.get('specification_curve') or {}).get('headline') or {}
  for k in ('a', 'b'):
    if isinstance(head.get(k), dict) and head[k].get('systematic'):
      lo, hi = head[k]['systematic']
      head[k]['systematic'] = [min(lo, alt[k]), max(hi, alt[k])]
      head[k]['systematic_includes'] = f'the arm estimator {other!r} ({alt[k]:.4g})'
  return arms


def _write_new_only(path: str, text: str) -> bool:
  """Writes `path` whole when no file has that name (os.link refuses an existing one); whether it wrote."""
  f, tmp = open_temp_beside(path, 'w')
  try:
    with f:
      f.write(text)
    try:
      os.link(tmp, path)
      return True
    except FileExistsError:
      return False
    except OSError:   # no hard links here: the check and the rename are then two steps
      if os.path.exists(path):
        return False
      os.replace(tmp, path)
      return True
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def _fit_and_write(o: dict, keep=None) -> tuple[dict, str]:
  """The fit and its outputs (module docstring); returns (result, what was written: 'all', 'record' (fit.json
  of a failed fit, none being there) or 'nothing'). Raises FitError for bad input and for a plot that raised,
  having written nothing."""
  rows, result = _fit_rows(o, keep)
  os.makedirs(o['out'], exist_ok=True)
  path = os.path.join(o['out'], 'fit.json')
  errors = result.pop('errors')   # fit.json's order: ..., plots, errors
  if errors:
    result.update(plots=[], errors=errors)
    result = _jsonable(result)
    text = json.dumps(result, indent=1, allow_nan=False) + '\n'
    return result, ('record' if _write_new_only(path, text) else 'nothing')
  staged: dict[str, str] = {}
  try:
    if o['plots']:
      try:
        staged = render_plots(rows, result, o['out'])
      except Exception as e:
        raise FitError(f'plotting failed: {type(e).__name__}: {e}') from e
    result.update(plots=list(staged), errors=errors)
    result = _jsonable(result)
    atomic_write_json(path, result, indent=1, allow_nan=False, end='\n')
    install_plots(staged, o['out'])
  finally:
    discard_plots(staged)   # what was not installed (after install_plots: nothing)
  return result, 'all'


def fit_all(args: Any = None, **kwargs) -> dict:
  """Loads the results, runs every fit it can, writes fit.json and plots when the fit succeeded (module
  docstring); never raises for a fit that the data cannot support (its reason is recorded), only for bad
  input or a plot that raised.

  The returned dict is what fit.json holds, plus 'errors': reasons that make `scaling fit`
  fail (an explicitly requested fit that could not be done, or no fit at all). keep (keyword
  only, not a CLI option): a predicate on raw rows selecting those to fit.
  """
  return _fit_and_write(_options(args, **kwargs), kwargs.get('keep'))[0]


def main_fit(args: Any = None, **kwargs) -> dict:
  """fit_all, then FitError if an explicitly requested fit failed or nothing could be fitted."""
  result = fit_all(args, **kwargs)
  if result['errors']:
    raise FitError('; '.join(result['errors']))
  return result


def add_fit_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """Arguments of `scaling fit`."""
  parser.add_argument('--results', required=True, help='results.jsonl from `scaling sweep collect`')
  parser.add_argument('--metric', default=_DEFAULTS['metric'],
                      help=f'loss column to fit: {", ".join(METRICS)} or a tagged eval set\'s eval/<tag>/bpb '
                           f'(default eval/bpb)')
  parser.add_argument('--params', default=_DEFAULTS['params'], choices=sorted(PARAM_COLUMNS),
                      help='N = non-embedding (default) or total parameter count')
  parser.add_argument('--out', default=None,
                      help='directory for fit.json and the plots (default: beside --results)')
  parser.add_argument('--target_flops', type=float, action='append', default=None,
                      help='compute budget to predict for (repeatable; default 1e21 and 1e23)')
  parser.add_argument('--fits', default='auto',
                      help='comma list of power_law,chinchilla,isoflop; a listed fit that the data '
                           'cannot support is an error (default auto: all that the data allows)')
  parser.add_argument('--bootstrap', type=int, default=_DEFAULTS['bootstrap'],
                      help='bootstrap resamples for the Chinchilla CIs (0: none)')
  parser.add_argument('--seed', type=int, default=0, help='bootstrap seed')
  parser.add_argument('--huber_delta', type=float, default=1e-3)
  parser.add_argument('--max_starts', type=int, default=_DEFAULTS['max_starts'],
                      help='L-BFGS from this many grid points of lowest initial loss '
                           '(0: all 4500 of Hoffmann et al.\'s grid)')
  parser.add_argument('--budget_tol', type=float, default=0.1,
                      help='relative FLOP tolerance that groups runs into one IsoFLOP budget')
  parser.add_argument('--skip_bad', action='store_true',
                      help='skip malformed rows with a warning instead of failing')
  parser.add_argument('--no_plots', dest='plots', action='store_false')
  parser.add_argument('--no_held_out', dest='held_out', action='store_false',
                      help='skip the refit without the largest budget')
  parser.add_argument('--noise_floor', type=float, default=None,
                      help='loss noise floor the IsoFLOP parabolas are judged against (default: the seed-replicate '
                           'SD when the sweep has seed replicates, else the other budgets\' median residual SD); '
                           'when given, also the sd of the IsoFLOP seed-noise bootstrap (default there: the pooled '
                           'parabola residual sd)')
  parser.add_argument('--arms', default=_DEFAULTS['arms'], choices=('best', 'lr_parabola'),
                      help='runs of one point trained at several learning rates: the point is the best arm (default; '
                           'redrawn in every seed-noise draw) or the parabola minimum in log lr through the best arm '
                           'and its neighbours (the other is reported as a systematic choice)')
  parser.add_argument('--mc_error', type=float, default=_DEFAULTS['mc_error'],
                      help='IsoFLOP intervals: draw until the Monte-Carlo error of every interval end is below this '
                           '(units of a; default 0.005)')
  parser.add_argument('--max_draws', type=int, default=_DEFAULTS['max_draws'],
                      help='IsoFLOP intervals: at most this many draws (default 64000)')
  return parser


def _fmt(v: float) -> str:
  return f'{v:.4g}'


def _ci_str(ci) -> str:
  return f' [{_fmt(ci[0])}, {_fmt(ci[1])}]' if ci and None not in ci else ' [no interval]'


def format_n_opt(q: dict) -> str:
  """A predicted N_opt as text: the number with its 5-95% interval, or 'unconstrained' when the
  interval spans more than SPAN_UNCONSTRAINED (the number would be meaningless)."""
  if q.get('interval_state') == 'degenerate':   # the resamples cannot move it: no interval, not a constraint
    return _fmt(q['N_opt']) + ' (degenerate interval: the resampling does not move it)'
  if q.get('constrained') is False:
    span = q.get('N_opt_span')
    return 'unconstrained' + (f' (5-95% spans {span:.3g}x)' if span else ' (interval open)')
  return _fmt(q['N_opt']) + _ci_str(q.get('ci', {}).get('N_opt'))


def _print_summary(result: dict) -> None:
  for w in result['warnings']:
    print(f'WARNING: {w}')
  c = result['chinchilla']
  if 'skipped' not in c:
    params = ', '.join(f'{k}={_fmt(p["value"])}{_ci_str(p["ci"])}' + (
        f' AT {p["at_bound"].upper()} BOUND' if p['at_bound'] else '') for k, p in
        c['parameters'].items())
    fitq = 'exact fit' if c['exact'] else f'r2_log={_fmt(c["r2_log"]) if c["r2_log"] is not None else "-"}'
    print(f'approach 3 (parametric): {params}; {fitq}')
    print(f'approach 3: N_opt ~ C^{_fmt(c["a_exponent"])}{_ci_str(c.get("ci", {}).get("a_exponent"))}')
  i = result['isoflop']
  if 'skipped' not in i:
    print(f'approach 2 (IsoFLOP, {i["budgets_used"]} budgets): N_opt ~ C^{_fmt(i["a"])}'
          f'{_ci_str(i.get("ci", {}).get("a"))}, D_opt ~ C^{_fmt(i["b"])}'
          f'{_ci_str(i.get("ci", {}).get("b"))}')
  ho = result.get('held_out', {})
  for src in ('approach2', 'approach3'):
    q = ho.get(src, {})
    if 'loss' in q:
      ratio = f'{q["N_opt_ratio"]:.3g}' if q['N_opt_ratio'] is not None else 'not measurable'
      print(f'held-out C={ho["held_out_flops"]:.3g} ({src}): loss error {100 * q["loss_error"]:+.2f}%, '
            f'N_opt predicted/observed {ratio}')
  for line in format_skill(ho):
    print(line)
  for p in result['predictions']:
    for src in ('chinchilla', 'isoflop'):
      q = p.get(src, {})
      if 'N_opt' in q:
        tail = '' if q.get('constrained') is False else (
            f' D_opt={_fmt(q["D_opt"])} loss={_fmt(q["loss"])}')
        print(f'C={p["flops"]:.3g} ({src}, {p["extrapolation"]:.3g}x the largest sampled '
              f'compute): N_opt={format_n_opt(q)}{tail}')


def _ci_text(ci) -> str:
  """An interval as text; an end that is None (open, in fit.json) or infinite prints as 'open'."""
  if not ci:
    return '[no interval]'
  return '[' + ', '.join(_fmt(v) if v is not None and math.isfinite(v) else 'open' for v in ci) + ']'


def headline_lines(result: dict) -> list[str]:
  """After the summary's approach 2 and 3 lines, the headline lines: approach 2's headline a and b (statistical,
  systematic and combined intervals) when fit.json has one, and the per-group power laws' exponents; or one
  line saying why no law was fitted."""
  lines = []
  head = result.get('headline') or {}
  for k, law in (('a', 'N_opt ~ C^a'), ('b', 'D_opt ~ C^b')):
    e = head.get(k)
    if e and e.get('value') is not None:
      lines.append(f'headline ({head.get("main")}): {law}: {k} = {_fmt(e["value"])}, statistical 5-95% '
                   f'{_ci_text(e["statistical"].get("ci"))}, systematic {_ci_text(e.get("systematic"))} over '
                   f'{head.get("specifications")} specifications, combined {_ci_text(e["combined"].get("ci"))}')
  pl = result.get('power_law', {})
  for key, law in (('vs_N', 'L ~ N^-b at equal tokens'), ('vs_D', 'L ~ D^-b at equal N')):
    q = pl.get(key, {})
    if 'exponent_median' in q:
      lines.append(f'power law {law}: b = {_fmt(q["exponent_median"])} (median of {len(q["groups"])} groups, '
                   f'range [{_fmt(q["exponent_min"])}, {_fmt(q["exponent_max"])}])')
  if not any('skipped' not in result.get(k, {'skipped': ''}) for k in FIT_NAMES):
    lines.append('no law fitted: ' + '; '.join(f'{k}: {result.get(k, {}).get("skipped", "not run")}'
                                              for k in FIT_NAMES))
  return lines


def _failed(out: str | None, what: str) -> None:
  """The one stderr line saying what a failed fit left in out."""
  where = out or 'the output directory'
  if what == 'record':
    print(f'scaling fit: failed; wrote {os.path.join(where, "fit.json")} to record why (there was none), '
          'and no plots', file=sys.stderr)
  else:
    print(f'scaling fit: failed; nothing written: the fit.json and plots in {where} (if any) are unchanged',
          file=sys.stderr)


def run_fit(args: argparse.Namespace) -> int:
  """`scaling fit`: returns the process exit status: 0 success, 1 result['errors'] (a requested fit that cannot
  be done, or no fit), 2 bad input or a failed plot."""
  out = None
  try:
    o = _options(args)
    out = o['out']
    result, written = _fit_and_write(o)
  except FitError as e:
    print(f'scaling fit: error: {e}', file=sys.stderr)
    _failed(out, 'nothing')
    return 2
  for note in result['notes']:
    print(f'note: {note}')
  _print_summary(result)
  for line in headline_lines(result):
    print(line)
  if result['errors']:
    for e in result['errors']:
      print(f'scaling fit: error: {e}', file=sys.stderr)
    _failed(out, written)
    return 1
  print(f'wrote {os.path.join(out, "fit.json")}' +
        (f' and {", ".join(result["plots"])}' if result['plots'] else ''))
  return 0


if __name__ == '__main__':
  sys.exit(run_fit(add_fit_args(argparse.ArgumentParser(prog='scaling fit')).parse_args()))
