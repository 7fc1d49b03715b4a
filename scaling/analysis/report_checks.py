"""The checks sections of REPORT.md: approach 2 against approach 3, the held-out budget scored against naive
baselines, and the per-budget IsoFLOP profile checks (fit.json's exponent_agreement / agreement, held_out and
profiles; older fit.json files without baselines or profiles render what they have)."""

from __future__ import annotations

from scaling.analysis.report_fit import BASELINE_SHORT, _agreement, _without_text, verdict_text
from scaling.analysis.report_format import _g, _si, _table, interval_text, pick

BASELINE_NAMES = {'d20': 'D = 20 N (N_opt = sqrt(C / 120))', 'last_two': 'last two budgets\' minima, log-log line',
                  'grid_centre': 'grid centre (reads the held-out runs)'}


def _agreement_lines(result: dict) -> list[str]:
  agree = _agreement(result)
  if not agree:
    have = [n for n, k in (('approach 2 (IsoFLOP)', 'isoflop'), ('approach 3 (parametric)', 'chinchilla'))
            if 'skipped' not in result.get(k, {'skipped': 1})]
    return [(f'Only {have[0]} could be fitted' if have else 'Neither approach could be fitted') +
            ': no comparison.', '']
  a2, a3 = pick(agree, 'a_approach2', 'a2'), pick(agree, 'a_approach3', 'a3')
  c2, c3 = pick(agree, 'ci_approach2', 'ci2'), pick(agree, 'ci_approach3', 'ci3')
  lines = _table(['', 'approach 2 (IsoFLOP)', 'approach 3 (parametric)'], [
      ['exponent a of N_opt ∝ C^a', f'{_g(a2, ".3g")} ({interval_text(c2) or "no interval"})',
       f'{_g(a3, ".3g")} ({interval_text(c3) or "no interval"})']])
  diff = pick(agree, 'difference', 'diff')
  dci = interval_text(pick(agree, 'ci_difference', 'difference_ci', 'diff_ci'))
  tail = (f' Difference a2 − a3 = {_g(diff, ".3g")}' + (f' (5–95% {dci}' + (', paired: the same row resamples'
          if agree.get('paired') else '') + ')' if dci else '') + '.') if diff is not None else ''
  form = agree.get('approach3_form')
  lines += ['', f'Approach 2 against approach 3: {verdict_text(agree)}.{tail} Approach 3\'s a is '
            f'{form or "β/(α+β)"}' + (
                ': the slope of its N_opt(C) with D = C / (FLOPs per token of the rows), which for small models (LM '
                'head, attention) is not C / 6N, so it can differ from β/(α+β).' if form == 'over the sampled budgets'
                else '.'), '']
  return lines


def _predictor_row(name: str, q: dict) -> list[str]:
  ratio = q.get('N_opt_ratio')
  n_cell = _si(q.get('N_opt')) + (' (at the search bound: no optimum within 100x of the sizes)'
                                  if q.get('optimum_at_search_bound') else '')
  return [name, n_cell, _g(ratio, '.3g') if ratio is not None else ('not measurable' if q.get('N_opt') else '—'),
          _g(q.get('loss')), f'{100 * q["loss_error"]:+.2f}%' if q.get('loss_error') is not None else '—']


def _skill_lines(ho: dict) -> list[str]:
  lines = []
  for name, label in (('approach2', 'Approach 2'), ('approach3', 'Approach 3')):
    e = (ho.get('skill') or {}).get(name, {})
    if 'passes' not in e:
      continue
    parts = []
    for key in ('N_opt', 'loss'):
      s = e.get(key, {})
      if s.get('skill') is None:
        parts.append(f'{key}: {s.get("why", "no skill")}')
      else:
        parts.append(f'{key} skill {s["skill"]:.3g} (error {s["error"]:.3g} against '
                     f'{BASELINE_SHORT.get(s["best_baseline"], s["best_baseline"])}\'s {s["best_baseline_error"]:.3g})')
    verdict = {True: 'passes: it beats every naive baseline', False: '**does not pass**: a naive baseline does '
               'at least as well', None: 'is not decidable'}[e['passes']]
    goals = {True: 'within', False: 'outside', None: 'not measurable against'}[e.get('within_goals')]
    lines.append(f'- {label} {verdict} ({"; ".join(parts)}); it is {goals} the old goals (N_opt within 1.5x, '
                 'loss within 2%).')
  return lines


def held_out_lines(result: dict) -> list[str]:
  ho = result.get('held_out') or {}
  if 'skipped' in ho or not ho:
    return [f'Held-out check: not run ({ho.get("skipped", "not requested")}).']
  obs = ho['observed']
  lines = [f'Held-out check: refit without the largest budget (C = {ho["held_out_flops"]:.3g}, '
           f'{len(ho["held_out_runs"])} run(s); fits use C ≤ {ho["train_max_flops"]:.3g}) and predict its minimum. '
           f'Observed: {obs["kind"]} (N_opt {_si(obs["N_opt"])}, loss {obs["L_opt"]:.4g})' +
           ('' if obs['bracketed'] else ' — **not bracketed**: the best run only bounds the minimum loss from above; '
            'no N_opt error can be measured') + '.', '']
  flagged = (result.get('profiles') or {}).get('flagged') or []
  if any(abs(c / ho['held_out_flops'] - 1) < 1e-6 for c in flagged):
    lines += ['The held-out budget is itself flagged (see "IsoFLOP profiles"): its observed minimum is a noisy '
              'target.', '']
  body = []
  for key, name in (('approach2', 'approach 2 (IsoFLOP)'), ('approach3', 'approach 3 (parametric)')):
    q = ho.get(key, {})
    body.append(_predictor_row(name, q) if 'loss' in q else [name, '—', f'not fitted: {q.get("skipped", "?")}',
                                                             '—', '—'])
  for key, b in (ho.get('baselines') or {}).items():
    body.append(_predictor_row(f'baseline: {BASELINE_NAMES.get(key, key)}', b))
  lines += _table(['predictor', 'N_opt', 'N_opt predicted / observed', 'loss', 'loss error'], body)
  if ho.get('skill'):
    lines += ['', 'Skill = the law\'s error / the best baseline\'s error (|ln ratio| for N_opt, |relative error| '
              'for the loss); a held-out prediction passes only with skill < 1.', ''] + _skill_lines(ho)
  form = ho.get('approach2', {}).get('loss_form')
  if form:
    lines += ['', f'Approach 2 predicts the loss by a power law in C through the IsoFLOP minima (`{form}`; an '
              'irreducible term E needs >= 4 budgets to fit): without E it extrapolates the loss too low.'
              if form == 'a * x^-b' else f'Approach 2 predicts the loss by `{form}` in C through the IsoFLOP minima.']
  return lines


def approaches_section(result: dict) -> list[str]:
  """Approach 2 and approach 3 side by side (a, the agreement verdict), then the held-out budget."""
  return _agreement_lines(result) + held_out_lines(result)


def _loo_cell(b: dict) -> str:
  loo = b.get('leave_one_out') or {}
  if not loo.get('tested'):
    return f'not tested ({loo.get("why", "?")})'
  cell = f'max shift {_g(loo.get("max_shift_log10"), ".2g")} dex'
  gone = loo.get('destroyed_by') or []
  if gone:
    cell += '; **minimum gone without** ' + ', '.join(f'{_si(g["N"])} ({g["why"].split(" (")[0]})' for g in gone)
  return cell


def _shape_cell(b: dict) -> str:
  sh = b.get('shape') or {}
  if not sh.get('known'):
    return f'unknown ({sh.get("why", "?")})'
  text = f'layers {"/".join(map(str, sh["num_layers"]))}, head dim {"/".join(map(str, sh["head_dim"]))}'
  return text if sh.get('constant') else f'**changes**: {text}'


def profiles_section(result: dict) -> list[str]:
  """Per budget: the parabola against the noise floor, leave-one-run-out, model shape, and the verdict."""
  prof = result.get('profiles')
  if not isinstance(prof, dict) or not prof.get('budgets'):
    return ['No profile checks in this fit.json.']
  body = []
  for b in prof['budgets']:
    if not b.get('checked', True):
      continue
    ratio = b.get('misfit_ratio')
    fit_cell = (f'{_g(b.get("resid_sd"), ".3g")} / {_g(b.get("floor"), ".3g")} = ' +
                (f'**{ratio:.3g}x**' if b.get('misfit') else f'{ratio:.3g}x') if ratio is not None else
                f'{_g(b.get("resid_sd"), ".3g")} (no floor or no residual dof)')
    body.append([f'{b["flops"]:.3g}', b['sizes'], _g(b.get('rmse'), '.3g'), fit_cell, _loo_cell(b), _shape_cell(b),
                 ', '.join(b['reasons']) if b.get('flagged') else 'ok'])
  if not body:
    return ['No budget has 3 or more sizes: no profile to check.']
  floor = prof.get('noise_floor') or {}
  lines = _table(['C', 'sizes', 'rmse', 'residual SD / floor', 'leave one run out (log10 N_opt)', 'model shape',
                  'flagged'], body)
  lines += ['', f'Noise floor: {floor.get("detail", "?")}' + (f' = {floor["value"]:.3g}' if floor.get('value') else '') +
            f'. A budget is flagged when its residual SD exceeds {prof.get("k", 3):g}x the floor, when removing one '
            'run leaves no bracketed minimum (concave, vertex outside the sizes, or lowest loss at an end), or when '
            'depth or head dim changes across its sizes (a shape effect mixed into the N profile).']
  if prof.get('flagged'):
    lines += ['', f'Approach 2 without the flagged budgets: {_without_text(prof.get("without_flagged"))}.']
    wp = prof.get('without_profile_flags')
    if wp and wp.get('left_out') != (prof.get('without_flagged') or {}).get('left_out'):
      lines += ['', f'Without only those whose profile fails (misfit, one run; shape changes kept): '
                f'{_without_text(wp)}.']
  return lines
