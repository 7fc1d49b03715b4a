"""Tests of scaling/analysis/report.py: report cells against the generating law, a numeric minimisation and the rows
(the seed study's sections: tests/test_claims.py)."""

import json
import math

import pytest
from scipy import optimize

from scaling.analysis import report, report_checks, report_fit
from scaling.analysis.fit import anchors


def write_jsonl(path, rows):
  with open(path, 'w') as f:
    for r in rows:
      f.write(json.dumps(r) + '\n')


def test_report_without_any_arm_or_rows(tmp_path):
  write_jsonl(tmp_path / 'results.jsonl', [{'run': 'x', 'state': 'failed', 'overrides': {}}])
  text = open(report.write_report(str(tmp_path))).read()
  assert 'Seed guide claims' not in text
  assert 'fit not run' in text and 'no finished runs' in text
  # the seed study asked for by name, with no run of it: its sections, every claim not measured
  text = open(report.write_report(str(tmp_path), study='seed_upgrades', fit=False)).read()
  assert "no run is named 'seed_upgrades:<arm>'" in text
  table = text.split('| claim | the guide says | verdict |')[1].split('\n\n')[0]
  verdicts = [line.split(' | ')[2] for line in table.splitlines()[2:]]
  assert len(verdicts) == 8 and all(v.startswith('**not measured**') for v in verdicts), verdicts


E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28   # Hoffmann et al. 2022, approach 3


def chinchilla_law(n, d):
  return E + A / n ** ALPHA + B / d ** BETA


def numeric_optimum(flops):
  """(N_opt, D_opt, loss) of the law at `flops` = 6 N D, by bounded minimisation over log N."""
  res = optimize.minimize_scalar(lambda x: chinchilla_law(math.exp(x), flops / (6 * math.exp(x))),
                                 bounds=(math.log(1e6), math.log(1e14)), method='bounded',
                                 options={'xatol': 1e-10})
  n = math.exp(res.x)
  return n, flops / (6 * n), float(res.fun)


def parse_si(cell):
  """'20.2M' -> 2.02e7: the inverse of the report's 3-digit SI formatting, written independently."""
  scale = {'k': 1e3, 'M': 1e6, 'B': 1e9, 'T': 1e12}
  return float(cell[:-1]) * scale[cell[-1]] if cell[-1] in scale else float(cell)


def table_cells(text, first_cell):
  (line,) = [l for l in text.splitlines() if l.startswith(f'| {first_cell} |')]
  return [c.strip() for c in line.strip('|').split('|')]


def test_report_with_fit_shows_exponents_beside_published(tmp_path):
  """Report cells against the generating law (literals), a numeric minimisation and the input rows."""
  rows = []
  for c in (1e18, 1e19, 1e20):
    n_opt = numeric_optimum(c)[0]
    for off in (-0.6, -0.3, 0.0, 0.3, 0.6):
      n = n_opt * 10 ** off
      loss = chinchilla_law(n, c / (6 * n))
      rows.append({'run': f'r{len(rows)}', 'state': 'done', 'overrides': {'model.d_model': 64},
                   'params': n, 'non_embedding_params': n, 'tokens': c / (6 * n), 'flops': c,
                   'eval/loss': loss, 'eval/bpb': loss, 'wall_s': 5000.0})
  write_jsonl(tmp_path / 'results.jsonl', rows)
  path = report.write_report(str(tmp_path), bootstrap=20, max_starts=16)
  text = open(path).read()

  # the runs table shows each input row (3-4 significant digits); 5000 s = 83.3 min; the override every
  # row shares is stated once above it
  assert 'Every run: model.d_model=64.' in text
  for r in rows:
    cells = table_cells(text, r['run'])
    assert cells[1:3] == ['done', '—'] and cells[9:] == ['—', '83.3 min']
    for cell, key in zip(cells[3:9], ('params', 'non_embedding_params', 'tokens', 'flops', 'eval/loss',
                                      'eval/bpb')):
      assert parse_si(cell) == pytest.approx(r[key], rel=5e-3), (r['run'], key, cell)

  # noiseless data from the law: the fitted exponents are the law's, shown to 3 digits
  # (a = 0.28 / 0.62 = 0.4516, b = 0.34 / 0.62 = 0.5484; A = 406.4 -> 406, B = 410.7 -> 411)
  exps = [[c.strip() for c in l.strip('|').split('|')] for l in text.splitlines()
          if l.startswith(('| α', '| β', '| a (', '| b (', '| E |', '| A |', '| B |'))]
  assert [c[:4] for c in exps] == [
      ['α (L ∝ N^-α)', 'parametric L(N, D)', '0.34', '0.34 – 0.34'],
      ['β (L ∝ D^-β)', 'parametric L(N, D)', '0.28', '0.28 – 0.28'],
      ['a (N_opt ∝ C^a)', 'parametric, β/(α+β)', '0.452', '0.452 – 0.452'],
      ['b (D_opt ∝ C^b)', 'parametric, α/(α+β)', '0.548', '0.548 – 0.548'],
      # with C = 6 N D in the rows the law's N_opt(C) over the budgets has slope beta / (alpha + beta)
      ['a (N_opt ∝ C^a)', "parametric, over the sampled budgets (rows' FLOPs per token)", '0.452',
       '0.452 – 0.452'],
      ['a (N_opt ∝ C^a)', 'IsoFLOP, 3 budgets', '0.452', exps[5][3]],
      ['b (D_opt ∝ C^b)', 'IsoFLOP, 3 budgets', '0.548', exps[6][3]],
      ['E', 'parametric L(N, D)', '1.69', '1.69 – 1.69'],
      ['A', 'parametric L(N, D)', '406', '406 – 406'],
      ['B', 'parametric L(N, D)', '411', '411 – 411']]
  # the anchor columns (scaling/analysis/fit/anchors.py): Hoffmann approach 3, Besiroglu et al.'s refit, Hoffmann
  # approach 2 (no alpha of its own), Kaplan
  assert exps[0][4:8] == ['0.34', '0.3478', '—', '0.076'] and exps[5][4:8] == ['0.46', '0.51', '0.49', '0.73']
  assert exps[7][4:8] == ['1.69', '1.82', '—', '—'] and exps[9][4:8] == ['410.7', '2085.4', '—', '—']
  # IsoFLOP intervals: resampled 5-point profiles of a law that is only nearly parabolic in log N
  # move the vertex a little; the interval holds the law's exponents and is narrow
  for row, law in ((exps[5], 0.28 / 0.62), (exps[6], 0.34 / 0.62)):
    lo, hi = (float(x) for x in row[3].split(' – '))
    assert lo <= law + 5e-4 and hi >= law - 5e-4 and hi - lo < 0.02, row
  saved = json.load(open(tmp_path / 'fit.json'))

  # predictions at the default targets: the law's compute-optimal point, found numerically; the report prints the
  # number when fit.json calls its interval constrained, else 'unconstrained' (never the number)
  for p in saved['predictions']:
    target = f'{p["flops"]:.3g}'
    cells = table_cells(text, target)
    n_ref, d_ref, l_ref = numeric_optimum(p['flops'])
    assert cells[1] == f'{p["flops"] / 1e20:.3g}x'   # target / the largest sampled 1e20 FLOPs
    q = p['chinchilla']
    assert q['N_opt'] == pytest.approx(n_ref, rel=5e-3) and q['loss'] == pytest.approx(l_ref, abs=5e-4)
    if q['constrained'] is False:
      assert cells[2].startswith('**unconstrained**') and cells[3] == '—'
    else:
      n_cell, ci = cells[2].split(' (')
      assert parse_si(n_cell) == pytest.approx(n_ref, rel=5e-3)
      assert [parse_si(x) for x in ci.rstrip(')').split('–')] == pytest.approx([n_ref] * 2, rel=5e-3)
      assert parse_si(cells[3]) == pytest.approx(d_ref, rel=5e-3)
      assert float(cells[4].split(' (')[0]) == pytest.approx(l_ref, abs=5e-4)
  # held out: the 1e20 budget; approach 3 refitted on the 1e18 and 1e19 rows still recovers the law,
  # so it predicts the law's own optimum loss at 1e20 (numerically minimised here)
  cells = table_cells(text, 'approach 3 (parametric)')
  assert float(cells[3]) == pytest.approx(numeric_optimum(1e20)[2], abs=5e-4)
  assert abs(float(cells[4].rstrip('%'))) < 0.1   # against the 1e20 parabola's vertex
  # the naive baselines beside it: D = 20 N is sqrt(C / 120) at C = 1e20
  cells = table_cells(text, 'baseline: D = 20 N (N_opt = sqrt(C / 120))')
  assert parse_si(cells[1]) == pytest.approx(math.sqrt(1e20 / 120), rel=5e-3) and cells[3:] == ['—', '—']
  # with two training budgets approach 2's line IS the line through the last two minima: skill 1 (to rounding: both
  # errors are ~1e-9), a tie, so the check does not pass, though the N_opt ratio is 1
  n_skill = saved['held_out']['skill']['approach2']['N_opt']
  assert n_skill['skill'] == pytest.approx(1, abs=1e-4) and n_skill['passes'] is False
  assert '- Approach 2 **does not pass**' in text
  assert report_fit.verdict_text(saved['exponent_agreement']) in text
  assert saved['plots'] == ['loss_vs_compute.png', 'isoflop.png', 'parity.png', 'residuals.png']
  for png in saved['plots']:
    assert f']({png})' in text and (tmp_path / png).read_bytes()[:4] == b'\x89PNG'
  assert '## Seed guide claims' not in text
  # the headline leads, above the runs; the anchors table cites every study
  assert text.index('## Headline') < text.index('## What the sweep measured')
  assert all(a['cite'] in text for a in anchors.ANCHORS)


def test_runs_table_states_shared_overrides_once_and_names_branches():
  parent = {'model.d_model': 64, 'train.schedule': 'constant'}
  rows = [
      {'run': 'aaa', 'state': 'done', 'overrides': {'data.corpus': 'prose', 'model.d_model': 64, 'train.steps': 10}},
      {'run': 'bbb', 'state': 'done', 'parent': 'ppp', 'fork_step': 8,
       'overrides': {'data.corpus': 'prose', 'model.d_model': 96, 'train.steps': 20,
                     'branch_of': {'parent': parent, 'step': 8}}},
  ]
  lines = report._runs_table(rows)
  assert lines[0] == 'Every run: data.corpus=prose.'
  body = [x for x in lines if x.startswith('| aaa') or x.startswith('| bbb')]
  assert body[0].split(' | ')[2] == 'model.d_model=64, train.steps=10'
  assert body[1].split(' | ')[2] == 'branch of ppp@8, model.d_model=96, train.steps=20'
  assert 'constant' not in '\n'.join(lines)   # the parent's overrides are not repeated in its branch's row


# ------------------------------------------------------------------------------- fit.json of both vintages


def minimal_result(**parts):
  base = {'inputs': {'metric': 'eval/bpb', 'params_column': 'params', 'rows_used': 20}, 'warnings': [],
          'chinchilla': {'skipped': 'x'}, 'power_law': {}, 'predictions': [], 'plots': [], 'notes': []}
  return {**base, **parts}


def test_headline_reads_the_specification_curve_and_falls_back_to_the_bootstrap():
  iso = {'a': 0.55, 'b': 0.45, 'ci': {'a': [0.47, 0.62], 'b': [0.40, 0.55]}, 'budgets_used': 4, 'budgets': []}
  # an older fit.json: approach 2's row-bootstrap interval, and interval overlap instead of a verdict
  old = minimal_result(isoflop=iso, exponent_agreement={'a_approach2': 0.55, 'ci_approach2': [0.47, 0.62],
                                                        'a_approach3': 0.48, 'ci_approach3': [0.37, 0.83],
                                                        'difference': 0.07, 'agree': True})
  text = report.render_report([], old, title='t', notes=[])
  assert '- **a (N_opt ∝ C^a) = 0.55** (statistical 5–95% 0.47 – 0.62; systematic: not computed in this fit.json)' \
      in text
  assert 'their 5–95% intervals overlap (an overlap only, not a test on the difference)' in text
  # the new headline: three intervals, an open systematic end, a verdict from the paired test
  new = minimal_result(isoflop=iso, headline={
      'main': 'total/parabola/loss/all', 'specifications': 45,
      'a': {'value': 0.551, 'statistical': {'ci': [0.44, 0.63], 'state': 'identified'}, 'systematic': [0.5, None],
            'combined': {'ci': [0.44, 0.81], 'state': 'not identified'}}},
      exponent_agreement={'a_approach2': 0.55, 'ci_approach2': [0.44, None], 'a_approach3': 0.48,
                          'ci_approach3': [0.38, 0.84], 'difference': 0.07, 'ci_difference': [-0.1, 0.2],
                          'verdict': 'differ', 'agree': False, 'paired': True})
  text = report.render_report([], new, title='t', notes=[])
  assert ('- **a (N_opt ∝ C^a) = 0.551** (statistical 5–95% 0.44 – 0.63; systematic 0.5 – +∞; combined 0.44 – 0.81 '
          '(not identified)) — the specification curve (main specification total/parabola/loss/all, 45 '
          'specifications).') in text
  assert '- **b (D_opt ∝ C^b) = 0.45**' in text    # no headline b: approach 2's own
  assert '**differ** (the test on the difference rejects equality)' in text
  assert '| exponent a of N_opt ∝ C^a | 0.55 (0.44 – +∞) | 0.48 (0.38 – 0.84) |' in text
  assert 'Difference a2 − a3 = 0.07 (5–95% -0.1 – 0.2, paired: the same row resamples).' in text
  assert report_fit.banner(new).endswith('Approaches 2 and 3 differ on a.')


def test_held_out_table_prints_every_predictor_and_the_skill():
  obs = {'kind': 'parabola vertex', 'bracketed': True, 'N_opt': 1.27e6, 'L_opt': 1.939, 'sizes': 5}

  def q(n, loss):
    return {'N_opt': n, 'loss': loss, 'N_opt_ratio': None if n is None else n / obs['N_opt'],
            'loss_error': None if loss is None else loss / obs['L_opt'] - 1}
  skill = {'approach2': {'N_opt': {'error': 0.19, 'best_baseline': 'grid_centre', 'best_baseline_error': 0.124,
                                   'skill': 1.55, 'passes': False, 'within_goal': True},
                         'loss': {'error': 0.006, 'best_baseline': 'last_two', 'best_baseline_error': 0.0139,
                                  'skill': 0.44, 'passes': True, 'within_goal': True},
                         'passes': False, 'within_goals': True}}
  ho = {'held_out_flops': 1.2e14, 'held_out_runs': ['a'] * 5, 'train_max_flops': 4e13, 'observed': obs,
        'approach2': q(1.05e6, 1.951), 'approach3': {'skipped': 'no fit'},
        'baselines': {'d20': q(1e6, None), 'last_two': q(1.1e6, 1.966), 'grid_centre': q(1.44e6, 1.969)},
        'skill': skill}
  text = '\n'.join(report_checks.held_out_lines(minimal_result(held_out=ho, profiles={'flagged': [1.2e14]})))
  assert table_cells(text, 'approach 2 (IsoFLOP)') == ['approach 2 (IsoFLOP)', '1.05M', '0.827', '1.951', '+0.62%']
  assert table_cells(text, 'baseline: D = 20 N (N_opt = sqrt(C / 120))')[1:] == ['1M', '0.787', '—', '—']
  assert table_cells(text, "baseline: last two budgets' minima, log-log line")[1:] == ['1.1M', '0.866', '1.966',
                                                                                       '+1.39%']
  assert table_cells(text, 'approach 3 (parametric)')[2] == 'not fitted: no fit'
  assert 'The held-out budget is itself flagged' in text
  assert ("- Approach 2 **does not pass**: a naive baseline does at least as well (N_opt skill 1.55 (error 0.19 "
          "against the grid centre's 0.124); loss skill 0.44 (error 0.006 against the last-two-budgets line's "
          "0.0139)); it is within the old goals") in text
  # an old fit.json (no baselines, no skill) still renders its two predictions
  old = {k: v for k, v in ho.items() if k not in ('baselines', 'skill')}
  text = '\n'.join(report_checks.held_out_lines(minimal_result(held_out=old)))
  assert 'approach 2 (IsoFLOP)' in text and 'Skill =' not in text and 'baseline' not in text


def test_anchor_numbers_hold_together():
  """The literals against each other: a = beta / (alpha + beta) for Besiroglu et al.'s refit (0.513, published as
  ~0.51), the rounded Hoffmann eq. 10 exponents give 0.452 (Table 2: 0.46), b = 1 - a where both are given."""
  v = anchors.BY_KEY['besiroglu2024']['values']
  assert v['beta'] / (v['alpha'] + v['beta']) == pytest.approx(v['a'], abs=0.005)
  assert v['a'] + v['b'] == pytest.approx(1)
  h = anchors.BY_KEY['hoffmann2022']['values']
  assert h['beta']['approach3'] / (h['alpha']['approach3'] + h['beta']['approach3']) == pytest.approx(0.452, abs=5e-4)
  for method in ('approach1', 'approach2', 'approach3'):
    assert anchors.anchor_value('hoffmann2022', 'a', method) + anchors.anchor_value('hoffmann2022', 'b', method) == \
        pytest.approx(1)
  assert anchors.anchor_value('hoffmann2022', 'alpha', 'approach2') is None
  d = anchors.BY_KEY['deepseek2024']['values']
  assert d['a'] + d['b'] == pytest.approx(1) and anchors.anchor_value('kaplan2020', 'a') == 0.73
  text = '\n'.join(report_fit.anchors_section())
  assert '| Besiroglu et al. 2024 | 0.51 | 0.49 | alpha 0.3478, beta 0.3658 | E 1.82, A 482, B 2085.4 |' in text
  assert '† the per-dataset range' in text   # an unchecked number is marked as such


def test_loss_vs_compute_marks_budget_minima_without_a_line(tmp_path, monkeypatch):
  """Each budget's lowest run, unjoined: no lower-envelope line through the vertical stacks of runs."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  from scaling.analysis.fit import plots
  rows = [{'run': str(i), 'N': n, 'D': c / (6 * n), 'C': c, 'L': loss, 'budget': None}
          for i, (c, n, loss) in enumerate([(1e12, 1e4, 3.0), (1e12, 2e4, 2.9), (1e12, 4e4, 2.95),
                                            (1e13, 1e4, 2.8), (1e13, 2e4, 2.6), (1e13, 4e4, 2.5)])]
  assert plots.budget_minima(rows) == [1, 5]
  figs, close = [], plt.close
  monkeypatch.setattr(plt, 'close', lambda fig=None: figs.append(fig))
  plots._plot_loss_vs_compute(plt, rows, {'inputs': {'metric': 'eval/bpb'}}, None, None, str(tmp_path / 'x.png'))
  ax = figs[0].axes[0]
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert not any('envelope' in t or 'frontier' in t for t in labels), labels
  (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith('lowest observed loss per budget')]
  assert line.get_linestyle() == 'None' and list(line.get_ydata()) == [2.9, 2.5]
  close(figs[0])
