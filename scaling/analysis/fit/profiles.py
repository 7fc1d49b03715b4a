"""Is each IsoFLOP budget's profile a parabola the fit may use? Per-budget checks on the fit rows (pure functions).

Three checks per compute budget (grouped as approach 2 groups them):

  * misfit: the parabola's residual SD (dof-corrected: sqrt(SSE / (rows - 3))) against a noise floor. The floor is,
    in this order: one the caller passes (`noise_floor`), the seed-noise floor when the sweep has seed replicates
    (rows whose overrides differ only in a `*seed` key: the pooled within-group SD of the loss), else a pooled
    estimate from the other budgets' parabolas (the median of their residual SDs; the budget under test is left
    out so that its own misfit cannot raise its floor, and the median so that one other bad budget cannot). A
    budget misfits when its residual SD exceeds K_MISFIT x the floor. With 5 sizes (2 dof) against a floor
    pooled over 6 dof, a budget whose residuals are only noise exceeds 3x the floor with probability
    (1 + 2 * 9 / 6)^-3 = 1.6% (the F(2, 6) tail at 9).
  * one run: leave each run out, refit the parabola, and record how far log10 N_opt moves; a removal after which
    the parabola is concave, its vertex lies outside the remaining sizes, or the lowest loss is at an end of the
    remaining sizes (a monotone profile: no bracketed minimum) destroys the minimum, and the budget's minimum
    then rests on that one run.
  * shape: depth (num_layers) and head dim (head_dim, else d_model // num_heads) of each row's model, from its
    `overrides` over the packaged defaults (scaling/config/default.py); a budget whose sizes change shape mixes a
    shape effect into the N profile.

A budget that fails any check is flagged with its reasons; check_profiles also refits approach 2 without the
flagged budgets (fit_isoflop, scaling/analysis/fit/approaches.py), and without only those flagged for the profile
itself (misfit, one run, no bracketed minimum; shape changes kept).
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np

from scaling.analysis.fit.approaches import fit_isoflop
from scaling.analysis.fit.laws import _group_budgets, _parabola
from scaling.analysis.fit.load import FitError, override_value

K_MISFIT = 3.0
SEED_KEY = 'seed'          # an override key whose last dotted part is this is a seed
PROFILE_REASONS = ('misfit', 'one_run', 'not_bracketed')   # reasons about the profile itself (not the shape)


# ----------------------------------------------------------------------------- model shape
def model_defaults() -> dict:
  """num_layers, d_model, num_heads, head_dim of the packaged default config (scaling/config/default.py)."""
  from scaling.config import default  # lazy: ml_collections only when a shape is asked for
  m = default.model()
  return {k: m[k] for k in ('num_layers', 'd_model', 'num_heads', 'head_dim')}


def model_shape(raw: dict | None, defaults: dict | None = None) -> dict | None:
  """{num_layers, d_model, num_heads, head_dim} of a results row from its overrides over `defaults` (the packaged
  ones when None); None when the row has no overrides dict."""
  ov = (raw or {}).get('overrides')
  if not isinstance(ov, dict):
    return None
  d = model_defaults() if defaults is None else defaults
  shape = {k: override_value(ov, f'model.{k}') for k in ('num_layers', 'd_model', 'num_heads', 'head_dim')}
  shape = {k: (d[k] if v is None else v) for k, v in shape.items()}
  try:
    shape = {k: int(v) for k, v in shape.items()}
  except (TypeError, ValueError):
    return None
  if not shape['head_dim']:
    shape['head_dim'] = shape['d_model'] // shape['num_heads'] if shape['num_heads'] else 0
  return shape


def shape_check(rows: Sequence[dict], idx: Sequence[int], defaults: dict | None = None) -> dict:
  """Whether depth and head dim are constant across one budget's sizes: {known, constant, num_layers, head_dim,
  per_size [{N, num_layers, head_dim}]}; known False (and constant None) when a row has no overrides or every
  size reads as the same model (the overrides do not name the model dims)."""
  shapes = [model_shape(rows[i].get('raw'), defaults) for i in idx]
  if any(s is None for s in shapes):
    return {'known': False, 'constant': None, 'why': 'a row has no overrides'}
  dims = {(s['num_layers'], s['d_model'], s['num_heads'], s['head_dim']) for s in shapes}
  if len(dims) == 1 and len({rows[i]['N'] for i in idx}) > 1:
    return {'known': False, 'constant': None,
            'why': 'every size reads as one model: the overrides do not name the model dims'}
  per_size = sorted({(rows[i]['N'], s['num_layers'], s['head_dim']) for i, s in zip(idx, shapes)})
  layers = sorted({s['num_layers'] for s in shapes})
  heads = sorted({s['head_dim'] for s in shapes})
  return {'known': True, 'constant': len(layers) == 1 and len(heads) == 1, 'num_layers': layers,
          'head_dim': heads, 'per_size': [{'N': n, 'num_layers': nl, 'head_dim': hd} for n, nl, hd in per_size]}


# ----------------------------------------------------------------------------- noise floor
def _strip_seeds(obj: Any) -> tuple[Any, list]:
  """(obj without seed keys at any depth, the seed values removed, in key order)."""
  if isinstance(obj, dict):
    out, seeds = {}, []
    for k in sorted(obj, key=str):
      if str(k).rsplit('.', 1)[-1] == SEED_KEY:
        seeds.append((str(k), obj[k]))
        continue
      out[str(k)], inner = _strip_seeds(obj[k])
      seeds += inner
    return out, seeds
  if isinstance(obj, (list, tuple)):
    parts = [_strip_seeds(v) for v in obj]
    return [p[0] for p in parts], [s for p in parts for s in p[1]]
  return obj, []


def replicate_groups(rows: Sequence[dict]) -> list[list[int]]:
  """Groups (>= 2 rows) of rows that differ only in seed: equal overrides once every `*seed` key is removed, equal
  N, D and C, and at least 2 distinct seeds. Rows without a seed override are no one's replicates."""
  by: dict[str, list[int]] = {}
  seeds: dict[str, set] = {}
  for i, r in enumerate(rows):
    ov = (r.get('raw') or {}).get('overrides')
    if not isinstance(ov, dict):
      continue
    rest, s = _strip_seeds(ov)
    if not s:
      continue
    key = json.dumps([rest, r['N'], r['D'], r['C']], sort_keys=True, default=str)
    by.setdefault(key, []).append(i)
    seeds.setdefault(key, set()).add(json.dumps(s, default=str))
  return [idx for key, idx in by.items() if len(idx) >= 2 and len(seeds[key]) >= 2]


def seed_noise_floor(rows: Sequence[dict]) -> dict | None:
  """The pooled within-replicate-group SD of the loss, sqrt(sum (L - group mean)^2 / sum (n_g - 1)), over
  replicate_groups; None without replicates."""
  groups = replicate_groups(rows)
  if not groups:
    return None
  ss = sum(float(np.sum((v - v.mean()) ** 2)) for v in (np.array([rows[i]['L'] for i in g]) for g in groups))
  dof = sum(len(g) - 1 for g in groups)
  return {'value': math.sqrt(ss / dof), 'dof': dof, 'source': 'seed replicates',
          'detail': f'pooled loss SD within {len(groups)} group(s) of runs that differ only in seed ({dof} dof)'}


# ----------------------------------------------------------------------------- per budget
def _residuals(n: np.ndarray, ls: np.ndarray) -> dict:
  """The least-squares parabola in log10 N: rmse, residual SD (dof-corrected) and dof."""
  x = np.log10(n)
  dof = len(n) - 3
  if len(np.unique(n)) < 3:
    return {'rmse': None, 'resid_sd': None, 'dof': max(dof, 0)}
  resid = ls - np.polyval(np.polyfit(x, ls, 2), x)
  return {'rmse': float(np.sqrt(np.mean(resid ** 2))),
          'resid_sd': float(np.sqrt(np.sum(resid ** 2) / dof)) if dof > 0 else None, 'dof': dof}


def _minimum(n: np.ndarray, d: np.ndarray, ls: np.ndarray) -> tuple[float | None, str | None]:
  """(log10 N_opt, None) when the profile has a bracketed minimum, else (None, why not)."""
  par = _parabola(n, d, ls)
  if par is None:
    return None, 'concave (no minimum)'
  sizes = np.unique(n)
  if not np.log10(sizes[0]) <= par[1] <= np.log10(sizes[-1]):
    return None, 'vertex outside the sizes'
  means = [float(np.mean(ls[n == s])) for s in sizes]
  if int(np.argmin(means)) in (0, len(sizes) - 1):
    return None, 'monotone (lowest loss at an end of the sizes)'
  return par[1], None


def leave_one_out(rows: Sequence[dict], idx: Sequence[int]) -> dict:
  """Leave each run of one budget out and refit: the largest shift of log10 N_opt and the runs whose removal
  destroys the minimum (concave, vertex outside the sizes, or lowest loss at an end). tested False when the
  profile has no bracketed minimum with every run, or when no removal leaves >= 3 sizes."""
  n, d, ls = (np.array([rows[i][k] for i in idx]) for k in ('N', 'D', 'L'))
  x_all, why = _minimum(n, d, ls)
  if x_all is None:
    return {'tested': False, 'why': f'no bracketed minimum with every run: {why}'}
  shifts, destroyed = [], []
  for j in range(len(idx)):
    keep = np.arange(len(idx)) != j
    if len(np.unique(n[keep])) < 3:
      continue
    x, why = _minimum(n[keep], d[keep], ls[keep])
    if x is None:
      destroyed.append({'run': rows[idx[j]]['run'], 'N': float(n[j]), 'why': why})
    else:
      shifts.append((abs(x - x_all), rows[idx[j]]['run']))
  if not shifts and not destroyed:
    return {'tested': False, 'why': f'{len(np.unique(n))} sizes: removing any run leaves fewer than 3'}
  top = max(shifts) if shifts else (None, None)
  return {'tested': True, 'max_shift_log10': top[0], 'max_shift_run': top[1], 'destroyed_by': destroyed}


def _floors(stats: list[dict], floor: dict | None) -> list[dict | None]:
  """The floor each budget is judged against: the given or seed floor for all, else the median residual SD of
  the other budgets that have one."""
  if floor is not None:
    return [floor] * len(stats)
  out = []
  for i in range(len(stats)):
    others = [s['resid_sd'] for j, s in enumerate(stats) if j != i and s['resid_sd'] is not None]
    out.append({'value': float(np.median(others)), 'source': 'pooled parabola residuals',
                'detail': f'median residual SD of the {len(others)} other budget(s) (no seed replicates)'}
               if others else None)
  return out


def _budget_entry(budget: float, idx: list[int], rows: Sequence[dict], stats: dict, floor: dict | None,
                  k: float, defaults: dict | None) -> dict:
  n, d, ls = (np.array([rows[i][k_] for i in idx]) for k_ in ('N', 'D', 'L'))
  entry = {'flops': float(budget), 'runs': [rows[i]['run'] for i in idx], 'sizes': int(len(np.unique(n))),
           **stats, 'floor': floor['value'] if floor else None, 'floor_source': floor['source'] if floor else None}
  if entry['sizes'] < 3:   # no parabola: approach 2 does not use this budget, nothing to check
    return {**entry, 'checked': False, 'flagged': False, 'reasons': {}}
  entry['checked'] = True
  reasons: dict[str, str] = {}
  ratio = stats['resid_sd'] / floor['value'] if floor and stats['resid_sd'] is not None and floor['value'] > 0 \
      else None
  entry['misfit_ratio'] = ratio
  entry['misfit'] = None if ratio is None else bool(ratio > k)
  if entry['misfit']:
    reasons['misfit'] = (f'parabola residual SD {stats["resid_sd"]:.3g} is {ratio:.3g}x the noise floor '
                         f'{floor["value"]:.3g} ({floor["source"]}; limit {k:g}x)')
  x, why = _minimum(n, d, ls)
  par = _parabola(n, d, ls)
  if x is None and par is not None and np.log10(n.min()) <= par[1] <= np.log10(n.max()):
    reasons['not_bracketed'] = f'the parabola has a minimum inside the sizes but the runs do not bracket it: {why}'
  entry['leave_one_out'] = leave_one_out(rows, idx)
  gone = entry['leave_one_out'].get('destroyed_by') or []
  if gone:
    reasons['one_run'] = 'the minimum rests on one run: without ' + '; without '.join(
        f'{g["run"]} (N {g["N"]:.3g}) it is {g["why"]}' for g in gone)
  entry['shape'] = shape_check(rows, idx, defaults)
  if entry['shape']['constant'] is False:
    sh = entry['shape']
    reasons['shape'] = 'model shape changes across the sizes: ' + ', '.join(
        f'{name} {vals}' for name, vals in (('num_layers', sh['num_layers']), ('head_dim', sh['head_dim']))
        if len(vals) > 1)
  entry['flagged'] = bool(reasons)
  entry['reasons'] = reasons
  return entry


def profile_diagnostics(rows: Sequence[dict], *, budget_tol: float = 0.1, noise_floor: float | None = None,
                        k: float = K_MISFIT, defaults: dict | None = None) -> dict:
  """Per budget: flops, runs, sizes, rmse, resid_sd, dof, floor, floor_source, checked (False with < 3 sizes: no
  parabola, nothing else), misfit_ratio, misfit, leave_one_out, shape, flagged, reasons {misfit | one_run | not_bracketed | shape: sentence}. noise_floor: a
  floor (loss units) to judge every budget against; default: the seed floor, else the pooled one."""
  if noise_floor is not None and not (isinstance(noise_floor, (int, float)) and noise_floor > 0):
    raise FitError(f'noise_floor must be a positive loss difference, got {noise_floor!r}')
  groups, _ = _group_budgets(rows, budget_tol)
  floor = ({'value': float(noise_floor), 'source': 'given', 'detail': 'passed by the caller (--noise_floor)'}
           if noise_floor is not None else seed_noise_floor(rows))
  stats = [_residuals(*(np.array([rows[i][key] for i in idx]) for key in ('N', 'L'))) for _, idx in groups]
  floors = _floors(stats, floor)
  budgets = [_budget_entry(c, idx, rows, s, f, k, defaults) for (c, idx), s, f in zip(groups, stats, floors)]
  return {'k': k, 'noise_floor': floor or {'value': None, 'source': 'pooled parabola residuals',
                                           'detail': 'no seed replicates: per budget, the median residual SD '
                                                     'of the other budgets'},
          'budgets': budgets, 'flagged': [b['flops'] for b in budgets if b['flagged']]}


# ----------------------------------------------------------------------------- refits without flagged budgets
def _refit_without(rows: Sequence[dict], left_out: list[float], *, budget_tol: float, bootstrap: int,
                   seed: int) -> dict:
  """Approach 2 on the rows of every budget but `left_out` (fit_isoflop): a, b and their intervals."""
  groups, _ = _group_budgets(rows, budget_tol)
  drop = {i for c, idx in groups if c in left_out for i in idx}
  out: dict[str, Any] = {'left_out': list(left_out)}
  if not left_out:
    return {**out, 'same_as_headline': True}
  kept = [r for i, r in enumerate(rows) if i not in drop]
  try:
    iso = fit_isoflop(kept, budget_tol=budget_tol, bootstrap=bootstrap, seed=seed)
  except FitError as e:
    return {**out, 'skipped': f'{len(groups) - len(left_out)} budget(s) left: {e}'}
  return {**out, 'a': iso.get('a'), 'b': iso.get('b'), 'ci': iso.get('ci', {}), 'budgets_used': iso.get(
      'budgets_used'), 'exact': bool(iso.get('N_opt_vs_C', {}).get('exact')), 'flops_range': iso.get('flops_range')}


def check_profiles(rows: Sequence[dict], *, budget_tol: float = 0.1, noise_floor: float | None = None,
                   k: float = K_MISFIT, bootstrap: int = 200, seed: int = 0, refit: bool = True,
                   defaults: dict | None = None) -> dict:
  """profile_diagnostics plus, when refit, approach 2 refitted without the flagged budgets (without_flagged) and
  without those flagged for the profile itself, shape changes kept (without_profile_flags)."""
  out = profile_diagnostics(rows, budget_tol=budget_tol, noise_floor=noise_floor, k=k, defaults=defaults)
  if not refit:
    return out
  kw = {'budget_tol': budget_tol, 'bootstrap': bootstrap, 'seed': seed}
  out['without_flagged'] = _refit_without(rows, out['flagged'], **kw)
  profile_only = [b['flops'] for b in out['budgets'] if set(b['reasons']) & set(PROFILE_REASONS)]
  out['without_profile_flags'] = (dict(out['without_flagged']) if profile_only == out['flagged']
                                  else _refit_without(rows, profile_only, **kw))
  return out


def profile_warnings(profiles: dict) -> list[str]:
  """One sentence per flagged budget (for fit.json's warnings)."""
  out = []
  for b in profiles.get('budgets', []):
    if b.get('flagged'):
      out.append(f'isoflop: budget C={b["flops"]:.3g} flagged: ' + '; '.join(b['reasons'].values()))
  wf = profiles.get('without_flagged', {})
  if profiles.get('flagged') and 'a' in wf:
    out.append(f'isoflop: without the {len(wf["left_out"])} flagged budget(s) a = {wf["a"]:.3g}'
               + (f' [{wf["ci"]["a"][0]:.3g}, {wf["ci"]["a"][1]:.3g}]' if wf.get('ci', {}).get('a') else '')
               + f' from {wf["budgets_used"]} budget(s)')
  elif profiles.get('flagged') and 'skipped' in wf:
    out.append(f'isoflop: without the flagged budget(s) no exponent: {wf["skipped"][:160]}')
  wp = profiles.get('without_profile_flags', {})
  if wp.get('left_out') != wf.get('left_out') and 'a' in wp:
    out.append(f'isoflop: without the {len(wp["left_out"])} budget(s) whose profile fails (shape changes kept) '
               f'a = {wp["a"]:.3g} from {wp["budgets_used"]} budget(s)' + (' (an exact line)' if wp.get('exact') else ''))
  return out
