"""Tests of scaling/analysis/report.py: report cells against the generating law, a numeric minimisation and the rows
(the seed study's sections: tests/test_claims.py)."""

import json
import math

import pytest
from scipy import optimize

from scaling.analysis import report


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
  assert exps[0][4:] == ['0.34', '—', '0.076', ''] and exps[5][4:] == ['0.46', '0.49', '0.73', '']
  # IsoFLOP intervals: resampled 5-point profiles of a law that is only nearly parabolic in log N
  # move the vertex a little; the interval holds the law's exponents and is narrow
  for row, law in ((exps[5], 0.28 / 0.62), (exps[6], 0.34 / 0.62)):
    lo, hi = (float(x) for x in row[3].split(' – '))
    assert lo <= law + 5e-4 and hi >= law - 5e-4 and hi - lo < 0.02, row
  assert all(c[7] == '' for c in exps)   # exact data: nothing at a bound, every interval tight
  assert '### What these data do not determine' not in text and 'not results' not in text

  # predictions at the default targets: the law's compute-optimal point, found numerically
  for target in ('1e+21', '1e+23'):
    cells = table_cells(text, target)
    n_ref, d_ref, l_ref = numeric_optimum(float(target))
    assert cells[1] == f'{float(target) / 1e20:.3g}x'   # target / the largest sampled 1e20 FLOPs
    n_cell, ci = cells[2].split(' (')
    assert parse_si(n_cell) == pytest.approx(n_ref, rel=5e-3)
    assert [parse_si(x) for x in ci.rstrip(')').split('–')] == pytest.approx([n_ref] * 2, rel=5e-3)
    assert parse_si(cells[3]) == pytest.approx(d_ref, rel=5e-3)
    assert float(cells[4].split(' (')[0]) == pytest.approx(l_ref, abs=5e-4)
  # held out: the 1e20 budget; approach 3 refitted on the 1e18 and 1e19 rows still recovers the law,
  # so it predicts the law's own optimum loss at 1e20 (numerically minimised here)
  cells = table_cells(text, 'approach 3 (parametric)')
  assert float(cells[1]) == pytest.approx(numeric_optimum(1e20)[2], abs=5e-4)
  assert abs(float(cells[2].rstrip('%'))) < 0.1   # against the 1e20 parabola's vertex
  assert 'The two estimates of a agree' in text
  saved = json.load(open(tmp_path / 'fit.json'))
  assert saved['plots'] == ['loss_vs_compute.png', 'isoflop.png', 'parity.png', 'residuals.png']
  for png in saved['plots']:
    assert f']({png})' in text and (tmp_path / png).read_bytes()[:4] == b'\x89PNG'
  assert '## Seed guide claims' not in text


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
