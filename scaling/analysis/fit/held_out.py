"""The held-out check: refit both approaches without the largest compute budget, predict its minimum, and score the
predictions against naive baselines.

A law that predicts the held-out budget within some tolerance has shown nothing if a rule of thumb does as well, so
each prediction is scored by its skill = the law's error / the best naive baseline's error (held_out_baselines):

  * d20: D = 20 N with C = 6 N D, N_opt = sqrt(C / 120) (the rule most grids are centred on); no loss of its own;
  * last_two: the straight line in log-log through the last two training budgets' minima (N_opt and L_opt);
  * grid_centre: the middle of the held-out budget's sampled sizes in log N, sqrt(min N * max N), and the loss of
    the run(s) at the sampled size nearest to it (this one reads the held-out runs: the design's own guess).

Errors: |ln(predicted / observed)| for N_opt, |predicted / observed - 1| for the loss. A held-out prediction passes
only with skill < 1 (better than every baseline; a tie within SKILL_TIE does not pass); within the tolerance goals (N_opt within GOALS['N_opt'] x, loss
within GOALS['loss']) is the secondary line.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from scaling.analysis.fit.approaches import fit_chinchilla, fit_isoflop
from scaling.analysis.fit.laws import _flops_per_token, _group_budgets, _parabola, accounted_optimum
from scaling.analysis.fit.load import FitError

GOALS = {'N_opt': 1.5, 'loss': 0.02}   # the tolerance goals: N_opt within 1.5x, loss within 2%
TOKENS_PER_PARAM = 20.0
QUANTITIES = ('N_opt', 'loss')
SKILL_TIE = 1e-3   # passes needs skill < 1 - SKILL_TIE: equal errors computed along two float paths are a tie

def _observed_minimum(rows: Sequence[dict], idx: list[int]) -> dict:
  """A budget's minimum: its parabola's vertex when the budget brackets it (>= 3 sizes, lowest
  loss interior), else its best row, flagged as not bracketed."""
  n, d, ls = (np.array([rows[i][k] for i in idx]) for k in ('N', 'D', 'L'))
  par = _parabola(n, d, ls)
  sizes = np.unique(n)
  interior = len(sizes) >= 3 and sizes[0] < n[int(np.argmin(ls))] < sizes[-1]
  if par is not None and interior:
    (c2, c1, c0), x_opt, _ = par
    return {'kind': 'parabola vertex', 'bracketed': True, 'N_opt': float(10 ** x_opt),
            'L_opt': float(c0 - c1 ** 2 / (4 * c2)), 'sizes': int(len(sizes))}
  j = int(np.argmin(ls))
  return {'kind': 'best row', 'bracketed': False, 'N_opt': float(n[j]), 'L_opt': float(ls[j]),
          'sizes': int(len(sizes))}


def held_out_check(rows: Sequence[dict], *, budget_tol: float = 0.1, huber_delta: float = 1e-3,
                   max_starts: int | None = 256, seed: int = 0) -> dict:
  """Refits both approaches without the largest compute budget and predicts that budget's
  minimum loss and N_opt. loss_error = predicted / observed - 1; N_opt_ratio = predicted /
  observed (None when the held-out budget does not bracket its minimum: then its best row is
  only an upper bound on the minimum loss and says nothing about N_opt)."""
  groups, _ = _group_budgets(rows, budget_tol)
  if len(groups) < 3:
    raise FitError(f'held-out check needs >= 3 compute budgets (2 to fit, 1 held out); '
                   f'got {len(groups)}')
  c_out, idx_out = max(groups, key=lambda g: g[0])
  held = set(idx_out)
  train = [r for i, r in enumerate(rows) if i not in held]
  obs = _observed_minimum(rows, idx_out)
  out = {'held_out_flops': c_out, 'held_out_runs': [rows[i]['run'] for i in idx_out],
         'train_max_flops': max(r['C'] for r in train), 'observed': obs}
  approaches = {
      'approach2': lambda: fit_isoflop(train, budget_tol=budget_tol, bootstrap=0),
      'approach3': lambda: fit_chinchilla(*(np.array([r[k] for r in train]) for k in 'NDL'),
                                          huber_delta=huber_delta, bootstrap=0, seed=seed,
                                          max_starts=max_starts),
  }
  for name, run in approaches.items():
    try:
      f = run()
      if name == 'approach2':
        nf, lf = f['N_opt_vs_C'], f['L_opt_vs_C']
        n_pred, l_pred = nf['k'] * c_out ** nf['exponent'], lf['E'] + lf['a'] * c_out ** -lf['b']
      else:   # with the rows' own FLOPs per token, as the observed minimum has
        n, c, d = (np.array([r[k] for r in train]) for k in ('N', 'C', 'D'))
        n_range = (float(n.min()) / 100, float(n.max()) * 100)
        n_pred, _, l_pred = accounted_optimum(f, c_out, _flops_per_token(n, c, d), n_range)
        if not n_range[0] * 1.01 < n_pred < n_range[1] / 1.01:
          out[name] = {'optimum_at_search_bound': True}   # no optimum within 100x of the sizes
    except FitError as e:
      out[name] = {'skipped': str(e)}
      continue
    if name == 'approach2':
      out[name] = {'loss_form': f['L_opt_vs_C']['form']}
    out[name] = {**out.get(name, {}), 'N_opt': float(n_pred), 'loss': float(l_pred),
                 'loss_error': float(l_pred / obs['L_opt'] - 1),
                 'N_opt_ratio': float(n_pred / obs['N_opt']) if obs['bracketed'] else None}
  out['baselines'] = held_out_baselines(rows, groups, c_out, idx_out, obs)
  out['skill'] = held_out_skill(out)
  return out


def _errors(n_pred: float | None, l_pred: float | None, obs: dict) -> dict:
  """N_opt_ratio, N_opt_error = |ln ratio| (None when the held-out budget does not bracket its minimum), loss_error
  = predicted / observed - 1 and its absolute value."""
  out = {'N_opt': n_pred, 'loss': l_pred, 'N_opt_ratio': None, 'N_opt_error': None, 'loss_error': None,
         'loss_abs_error': None}
  if n_pred is not None and obs['bracketed']:
    out['N_opt_ratio'] = float(n_pred / obs['N_opt'])
    out['N_opt_error'] = float(abs(math.log(n_pred / obs['N_opt'])))
  if l_pred is not None:
    out['loss_error'] = float(l_pred / obs['L_opt'] - 1)
    out['loss_abs_error'] = abs(out['loss_error'])
  return out


def held_out_baselines(rows: Sequence[dict], groups: list, c_out: float, idx_out: list[int], obs: dict) -> dict:
  """The naive predictions of the held-out budget's minimum (module docstring), each with its errors."""
  out = {'d20': {'rule': f'D = {TOKENS_PER_PARAM:g} N, C = 6 N D: N_opt = sqrt(C / {6 * TOKENS_PER_PARAM:g})',
                 **_errors(math.sqrt(c_out / (6 * TOKENS_PER_PARAM)), None, obs)}}
  train = sorted((g for g in groups if g[0] != c_out), key=lambda g: g[0])
  (c1, i1), (c2, i2) = train[-2:]
  m1, m2 = _observed_minimum(rows, i1), _observed_minimum(rows, i2)
  t = math.log(c_out / c2) / math.log(c2 / c1)   # C_out beyond C2 in units of the C1 -> C2 step (log)

  def through(y1: float, y2: float) -> float:
    return math.exp(math.log(y2) + t * (math.log(y2) - math.log(y1)))
  out['last_two'] = {'rule': 'a straight line in log-log through the last two training budgets\' minima',
                     'from_flops': [float(c1), float(c2)], 'from_kind': [m1['kind'], m2['kind']],
                     **_errors(through(m1['N_opt'], m2['N_opt']), through(m1['L_opt'], m2['L_opt']), obs)}
  n, ls = np.array([rows[i]['N'] for i in idx_out]), np.array([rows[i]['L'] for i in idx_out])
  centre = math.sqrt(float(n.min()) * float(n.max()))
  sizes = np.unique(n)
  nearest = sizes[int(np.argmin(np.abs(np.log(sizes / centre))))]
  out['grid_centre'] = {'rule': 'sqrt(min N * max N) of the held-out sizes; loss of the runs at the size nearest '
                                'to it (reads the held-out runs)', 'loss_at_N': float(nearest),
                        **_errors(centre, float(np.mean(ls[n == nearest])), obs)}
  return out


def _skill_of(err: float | None, baselines: dict, key: str, within: bool | None) -> dict:
  """One quantity's skill = the law's error / the best baseline's error; passes only when < 1."""
  if err is None:
    return {'error': None, 'skill': None, 'passes': None, 'within_goal': None,
            'why': 'not measurable (the held-out budget does not bracket its minimum)' if key == 'N_opt_error'
            else 'no prediction'}
  have = {name: b[key] for name, b in baselines.items() if b.get(key) is not None}
  if not have:
    return {'error': err, 'skill': None, 'passes': None, 'within_goal': within, 'why': 'no baseline'}
  best = min(sorted(have), key=lambda k: have[k])
  out = {'error': err, 'best_baseline': best, 'best_baseline_error': have[best],
         'baseline_errors': dict(sorted(have.items())), 'passes': False, 'within_goal': within}
  if have[best] > 0:
    out['skill'] = err / have[best]
    out['passes'] = bool(out['skill'] < 1 - SKILL_TIE)
  else:   # a baseline that is exactly right cannot be beaten (fit.json: skill null)
    out['skill'] = None
    out['why'] = f'{best} is exactly right: no skill is possible'
  return out


def held_out_skill(ho: dict) -> dict:
  """Per approach and quantity: error, best_baseline, best_baseline_error, skill, passes (skill < 1), within_goal
  (the old tolerance goal); per approach `passes` is True only when every measurable quantity passes (None when
  none is measurable) and `within_goals` the same for the goals."""
  out = {}
  for name in ('approach2', 'approach3'):
    q = ho.get(name, {})
    if 'loss' not in q:
      out[name] = {'skipped': q.get('skipped', 'no prediction')}
      continue
    n_err = abs(math.log(q['N_opt_ratio'])) if q.get('N_opt_ratio') else None
    l_err = abs(q['loss_error'])
    entry = {
        'N_opt': _skill_of(n_err, ho['baselines'], 'N_opt_error',
                           None if n_err is None else bool(n_err <= math.log(GOALS['N_opt']))),
        'loss': _skill_of(l_err, ho['baselines'], 'loss_abs_error', bool(l_err <= GOALS['loss'])),
    }
    measured = [entry[k] for k in QUANTITIES if entry[k]['passes'] is not None]
    entry['passes'] = all(m['passes'] for m in measured) if measured else None
    entry['within_goals'] = all(m['within_goal'] for m in measured) if measured else None
    out[name] = entry
  return out


def format_skill(ho: dict) -> list[str]:
  """Lines for `scaling fit`'s summary: each approach's skill per quantity and whether the check passes."""
  lines = []
  for name, entry in ho.get('skill', {}).items():
    if 'skipped' in entry:
      continue
    parts = []
    for key in QUANTITIES:
      e = entry[key]
      if e.get('skill') is None:
        parts.append(f'{key} {e.get("why", "skill undefined")}')
      else:
        parts.append(f'{key} skill {e["skill"]:.3g} (error {e["error"]:.3g} against {e["best_baseline"]} '
                     f'{e["best_baseline_error"]:.3g})')
    verdict = {True: 'PASSES (beats every naive baseline)', False: 'DOES NOT PASS (a naive baseline does as well)',
               None: 'not decidable'}[entry['passes']]
    goals = {True: 'within', False: 'outside', None: 'n/a for'}[entry['within_goals']]
    lines.append(f'held-out skill ({name}): ' + '; '.join(parts) + f' -> {verdict}; {goals} the 1.5x / 2% goals')
  return lines
