"""Fits that know what they know: the diagnostics of scaling/analysis/fit/ on synthetic data from a known law.

Every reference number is a literal of the generating law (Hoffmann et al. 2022's E, A, B, alpha, beta),
a numeric minimisation of it, or a property of the design written here; never a number the fit printed.
"""

import json
import math
import pathlib

import numpy as np
import pytest
from scipy import optimize

from scaling.analysis import report
from scaling.analysis.fit import approaches, command, diagnostics, held_out, intervals, laws, load, plots, predictions

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
A_EXP = BETA / (ALPHA + BETA)   # N_opt ~ C^a of the law: 0.4516
MICRO_LADDER = pathlib.Path(__file__).resolve().parent.parent / 'docs/results/archive/micro_ladder/results.jsonl'


def law(n, d, e=E):
  return e + A / np.asarray(n, float) ** ALPHA + B / np.asarray(d, float) ** BETA


def true_optimum(flops, e=E):
  """(N_opt, loss) of the law at C = 6 N D by bounded 1-D minimisation over log N."""
  res = optimize.minimize_scalar(lambda x: law(math.exp(x), flops / (6 * math.exp(x)), e),
                                 bounds=(math.log(1e5), math.log(1e14)), method='bounded',
                                 options={'xatol': 1e-10})
  return math.exp(res.x), float(res.fun)


def isoflop_design(budgets=(1e18, 1e19, 1e20, 1e21), offsets=np.linspace(-0.6, 0.6, 7), repeats=1,
                   noise=0.005, seed=0, e=E):
  """Rows {run, N, D, C, L, budget}: per budget, sizes at N_opt * 10^offset, loss * (1 + noise)."""
  rng = np.random.default_rng(seed)
  rows = []
  for c in budgets:
    n_opt, _ = true_optimum(c, e)
    for off in offsets:
      for _ in range(repeats):
        n = n_opt * 10 ** off
        loss = float(law(n, c / (6 * n), e) * math.exp(rng.normal(0, noise)))
        rows.append({'run': f'r{len(rows)}', 'N': n, 'D': c / (6 * n), 'C': c, 'L': loss,
                     'budget': None})
  return rows


def write_rows(path, rows):
  with open(path, 'w') as f:
    for r in rows:
      f.write(json.dumps({'run': r['run'], 'state': 'done', 'overrides': {}, 'params': r['N'],
                          'non_embedding_params': r['N'], 'tokens': r['D'], 'flops': r['C'],
                          'eval/bpb': r['L'], 'eval/loss': r['L'], 'train/loss': r['L']}) + '\n')
  return str(path)


def width(ci):
  return ci[1] - ci[0]


# ------------------------------------------------------------------------------- held-out check


def test_held_out_check_predicts_the_largest_budget_from_the_others():
  rows = isoflop_design()
  got = held_out.held_out_check(rows, max_starts=32)
  assert got['held_out_flops'] == pytest.approx(1e21)
  assert len(got['held_out_runs']) == 7 and got['train_max_flops'] == pytest.approx(1e20)
  n_true, l_true = true_optimum(1e21)
  obs = got['observed']   # the held-out budget's own parabola: near the law's optimum
  assert obs['bracketed'] and obs['kind'] == 'parabola vertex'
  assert obs['N_opt'] / n_true == pytest.approx(1, abs=0.15)
  assert obs['L_opt'] == pytest.approx(l_true, rel=0.005)
  for name in ('approach2', 'approach3'):
    q = got[name]
    assert q['loss_error'] == pytest.approx(q['loss'] / obs['L_opt'] - 1, rel=1e-9)
    assert q['N_opt_ratio'] == pytest.approx(q['N_opt'] / obs['N_opt'], rel=1e-9)
    assert 1 / 1.5 < q['N_opt_ratio'] < 1.5, name       # the goal: N_opt within 1.5x
    assert q['N_opt'] / n_true == pytest.approx(1, abs=0.3), name
  assert abs(got['approach3']['loss_error']) < 0.02     # the parametric law: loss within 2%
  # approach 2's L_opt(C) through 3 budgets is a pure power law (an E needs >= 4 budgets): with the
  # law's floor E = 1.69 ignored it extrapolates too low, by a few percent at 10x
  assert -0.1 < got['approach2']['loss_error'] < 0


def test_held_out_budget_that_does_not_bracket_its_minimum_has_no_n_opt_error():
  rows = isoflop_design(budgets=(1e18, 1e19, 1e20))
  rows = [r for r in rows if not (r['C'] == 1e20 and r['N'] > true_optimum(1e20)[0] / 1.5)]
  got = held_out.held_out_check(rows, max_starts=32)
  assert not got['observed']['bracketed'] and got['observed']['kind'] == 'best row'
  assert got['observed']['L_opt'] == min(r['L'] for r in rows if r['C'] == 1e20)
  assert got['approach3']['N_opt_ratio'] is None
  with pytest.raises(load.FitError, match='>= 3 compute budgets'):
    held_out.held_out_check(isoflop_design(budgets=(1e18, 1e19)))


# ------------------------------------------------------------------------------- intervals


def test_intervals_hold_the_law_and_shrink_with_more_points():
  few = isoflop_design(offsets=np.linspace(-0.6, 0.6, 5), noise=0.01, seed=1)
  many = isoflop_design(offsets=np.linspace(-0.6, 0.6, 5), repeats=9, noise=0.01, seed=2)
  widths = {}
  for name, rows in (('few', few), ('many', many)):
    iso = approaches.fit_isoflop(rows, bootstrap=100, seed=0)
    chin = approaches.fit_chinchilla(*(np.array([r[k] for r in rows]) for k in 'NDL'), bootstrap=40,
                                     max_starts=32, seed=0)
    for ci in (iso['ci']['a'], chin['ci']['a_exponent']):
      assert ci[0] - 0.03 < A_EXP < ci[1] + 0.03, (name, ci)
    widths[name] = (width(iso['ci']['a']), width(chin['ci']['alpha']), width(chin['ci']['beta']),
                    width(chin['ci']['E']))
  # 9x the points: intervals about a third as wide (1/sqrt(9)); at least a quarter narrower here
  for w_few, w_many in zip(widths['few'], widths['many']):
    assert w_many < 0.75 * w_few, widths


# ------------------------------------------------------------------------------- flags


def test_one_size_per_budget_is_flagged():
  rows = [{'run': f'r{i}', 'N': n, 'D': 20 * n, 'C': 120 * n * n, 'L': float(law(n, 20 * n)),
           'budget': None} for i, n in enumerate(np.geomspace(1e7, 1e9, 6))]
  design = diagnostics.isoflop_design(rows)
  assert len(design['budgets']) == 6 and all(b['sizes'] == 1 for b in design['budgets'])
  assert 'one_N_per_budget' in design['flags'] and design['budgets_with_3_sizes'] == 0
  result = {'chinchilla': {'skipped': 'x'}, 'isoflop': {'skipped': 'no budget'}, 'design': design,
            'predictions': []}
  warns = diagnostics.diagnose(rows, result)
  assert any('every compute budget has one model size' in w for w in warns)
  assert any('approach 2 (IsoFLOP) not fitted' in w for w in warns)


def test_minimum_at_an_end_of_the_sizes_is_flagged():
  rows = isoflop_design(budgets=(1e18, 1e19), noise=0.0)
  n_opt = true_optimum(1e19)[0]
  rows = [r for r in rows if not (r['C'] == 1e19 and r['N'] < n_opt * 0.9)]   # 1e19: N_opt and up
  design = diagnostics.isoflop_design(rows)
  interior = {round(math.log10(b['flops'])): b['interior'] for b in design['budgets']}
  assert interior == {18: True, 19: False}
  assert design['budgets_not_interior'] == [pytest.approx(1e19)]


def test_e_at_its_bound_is_flagged():
  """Data from the law with E = 0: the fit drives E to 0 (its bound) and says so."""
  rows = isoflop_design(budgets=(1e18, 1e19, 1e20), noise=0.0, e=0.0)
  n, d, loss = (np.array([r[k] for r in rows]) for k in 'NDL')
  chin = approaches.fit_chinchilla(n, d, loss, bootstrap=10, max_starts=32)
  params = diagnostics.chinchilla_parameters(chin, float(loss.min()))
  assert params['E']['at_bound'] == 'lower' and params['E']['bound'] == [0.0, float(loss.min())]
  assert params['alpha']['at_bound'] is None and params['alpha']['value'] == pytest.approx(ALPHA, rel=1e-3)
  result = {'chinchilla': chin, 'isoflop': {'skipped': 'not requested (--fits)'},
            'design': diagnostics.isoflop_design(rows), 'predictions': []}
  warns = diagnostics.diagnose(rows, result)
  assert chin['identified'] is False
  assert any(w.startswith('chinchilla: E = ') and 'lower bound 0' in w for w in warns)


def test_exact_fits_say_so_instead_of_r2():
  rows = isoflop_design(budgets=(1e18,), offsets=np.linspace(-0.6, 0.6, 5), noise=0.01)
  n, d, loss = (np.array([r[k] for r in rows]) for k in 'NDL')
  chin = approaches.fit_chinchilla(n, d * np.geomspace(1, 3, 5), loss, bootstrap=0, max_starts=16)
  assert chin['exact'] and chin['dof'] == 0 and chin['r2_log'] is None   # 5 points, 5 parameters
  two = laws.fit_power_law([1e6, 1e7], [3.0, 2.5])
  assert two['exact'] and two['r2_log'] is None
  three = laws.fit_power_law([1e6, 1e7, 1e8], [3.0, 2.5, 2.2])
  assert not three['exact'] and three['r2_log'] is not None
  iso = approaches.fit_isoflop(isoflop_design(budgets=(1e18, 1e19), offsets=(-0.4, 0.0, 0.4)), bootstrap=0)
  assert all(b['exact'] for b in iso['budgets']) and iso['N_opt_vs_C']['exact']
  warns = diagnostics.diagnose(rows, {'chinchilla': chin, 'isoflop': {'skipped': 'not requested (--fits)'},
                                      'design': diagnostics.isoflop_design(rows), 'predictions': []})
  assert any('exact fit (5 points for 5 parameters)' in w for w in warns)


@pytest.mark.parametrize('diff, sides, verdict', [
    ([-0.02, 0.03], ['identified', 'identified'], 'consistent'),      # contains 0, both sides narrow
    ([0.05, 0.12], ['identified', 'identified'], 'differ'),           # excludes 0
    ([-0.30, -0.01], ['not identified', 'identified'], 'differ'),     # excludes 0 even with a wide side
    ([-0.05, 0.05], ['not identified', 'identified'], 'not identified'),  # a side wider than 0.2
    ([-0.15, 0.15], ['identified', 'identified'], 'not identified'),  # the difference itself wider than 0.2
    ([-math.inf, 0.1], ['identified', 'identified'], 'not identified'),   # open: more than 5% failed
    ([0.05, math.inf], ['identified', 'identified'], 'differ'),
    ([0.0, 0.0], ['identified', 'identified'], 'degenerate'),
    ([-0.02, 0.03], ['degenerate', 'identified'], 'degenerate'),
    (None, ['identified', 'identified'], 'not decidable'),
    ([-0.02, 0.03], [None, 'identified'], 'not decidable'),
])
def test_agreement_is_a_test_on_the_difference(diff, sides, verdict):
  """The verdict vocabulary, each case worked out by hand from its definition (never interval overlap)."""
  assert intervals.difference_verdict(diff, sides) == verdict


def test_approach_2_against_3_without_paired_resamples_is_not_decidable():
  chin = {'a_exponent': 0.45, 'ci': {'a_exponent': [0.42, 0.48]}}
  got = diagnostics.exponent_agreement(chin, {'a': 0.50, 'ci': {'a': [0.47, 0.53]}})   # overlapping intervals
  assert got['verdict'] == 'not decidable' and got['agree'] is None


# the committed IsoFLOP study's fit.json (commit c59753a, written by the interval-overlap rule): approach 2's
# conditional-bootstrap interval and approach 3's interval of a over the sampled budgets
ISOFLOP_CPU = pathlib.Path(__file__).resolve().parent.parent / 'docs/results/isoflop_cpu/results.jsonl'
COMMITTED_CI2, COMMITTED_CI3 = [0.4705028997903916, 0.621996529729671], [0.3721021669566855, 0.8267436342519038]


def test_committed_isoflop_study_agreed_by_overlap_and_is_not_identified_by_the_test(tmp_path):
  """docs/results/isoflop_cpu: the old rule (intervals overlap) said the approaches agree; approach 3's interval is
  0.45 wide, more than the 0.2 an interval may be to agree with anything, so the test on a2 - a3 says 'not
  identified'."""
  old_agree = COMMITTED_CI2[0] <= COMMITTED_CI3[1] and COMMITTED_CI3[0] <= COMMITTED_CI2[1]   # the overlap rule
  assert old_agree is True
  assert COMMITTED_CI3[1] - COMMITTED_CI3[0] > intervals.INFORMATIVE_WIDTH
  saved = command.fit_all(results=str(ISOFLOP_CPU), params='total', bootstrap=40, max_starts=32, plots=False,
                          held_out=False, out=str(tmp_path))
  agree = saved['exponent_agreement']
  assert agree['verdict'] == 'not identified' and agree['agree'] is None
  assert agree['states']['approach3'] != 'identified' or agree['states']['approach2'] != 'identified'


# ------------------------------------------------------------------------------- predictions


def test_predictions_carry_intervals_and_the_extrapolation_factor():
  rows = isoflop_design(noise=0.005)
  iso = approaches.fit_isoflop(rows, bootstrap=60)
  (p,) = predictions.predict([1e23], isoflop=iso, max_flops=1e21)
  assert p['extrapolation'] == pytest.approx(100.0)
  q = p['isoflop']
  lo, hi = q['ci']['N_opt']
  assert lo < q['N_opt'] < hi and q['N_opt_span'] == pytest.approx(hi / lo)
  assert q['constrained'] is (hi / lo <= 10)
  assert lo / 2 < true_optimum(1e23)[0] < hi * 2
  # a bootstrap whose N_opt spans more than 10x is unconstrained and printed as such, not as a number
  wide = {'N_opt_vs_C': {'k': 1.0, 'exponent': 0.5}, 'D_opt_vs_C': {'k': 1.0, 'exponent': 0.5},
          'L_opt_vs_C': {'E': 0.0, 'a': 10.0, 'b': 0.05, 'form': 'a * x^-b'},
          'bootstrap': {'samples': {'a': [0.3, 0.5, 0.7], 'kN': [1.0] * 3, 'b': [0.5] * 3,
                                    'kD': [1.0] * 3, 'L_E': [0.0] * 3, 'L_a': [10.0] * 3,
                                    'L_b': [0.05] * 3}}}
  (p,) = predictions.predict([1e20], isoflop=wide, max_flops=1e18)
  assert p['isoflop']['constrained'] is False      # 1e20^0.3 .. 1e20^0.7: ~1e7x
  assert command.format_n_opt(p['isoflop']).startswith('unconstrained')
  assert f'{1e10:.4g}' not in command.format_n_opt(p['isoflop'])


# ------------------------------------------------------------------------------- micro_ladder


def test_micro_ladder_rows_are_flagged_as_unconstrained(tmp_path):
  """The committed micro_ladder sweep (5 sizes x 3 token budgets of 32-128 steps): nothing it
  predicts is a result, and the report says so instead of printing the numbers."""
  root = tmp_path / 'micro_ladder'
  root.mkdir()
  (root / 'results.jsonl').write_text(MICRO_LADDER.read_text())
  report.write_report(str(root), bootstrap=40, max_starts=16, plots=False)
  saved = json.loads((root / 'fit.json').read_text())
  text = (root / 'REPORT.md').read_text()
  params = saved['chinchilla']['parameters']
  assert params['E']['at_bound'] == 'lower'
  assert saved['chinchilla']['identified'] is False
  assert 'skipped' in saved['isoflop']     # no budget brackets a minimum with a parabola
  max_c = max(json.loads(l)['flops'] for l in MICRO_LADDER.read_text().splitlines() if l.strip())
  for p in saved['predictions']:
    assert p['extrapolation'] == pytest.approx(p['flops'] / max_c)
    assert p['chinchilla']['constrained'] is False
  assert saved['held_out']['observed']['bracketed'] is False
  assert saved['held_out']['approach3']['N_opt_ratio'] is None
  assert text.index('The fits below are not results') < text.index('## What the sweep measured')
  # the predictions table prints 'unconstrained', not the parametric N_opt
  for p in saved['predictions']:
    (line,) = [l for l in text.splitlines() if l.startswith(f'| {p["flops"]:.3g} |')]
    assert '**unconstrained**' in line
    assert report._si(p['chinchilla']['N_opt']) not in line.split('|')[3]


def test_fit_json_records_the_diagnostics(tmp_path):
  path = write_rows(tmp_path / 'results.jsonl', isoflop_design(noise=0.005))
  saved = command.fit_all(results=path, bootstrap=20, max_starts=32, target_flops=[1e22])
  on_disk = json.loads((tmp_path / 'fit.json').read_text())
  assert on_disk['warnings'] == saved['warnings']
  for key in ('design', 'held_out', 'exponent_agreement', 'warnings'):
    assert key in on_disk, key
  assert set(on_disk['chinchilla']['parameters']) == {'E', 'A', 'B', 'alpha', 'beta', 'a_exponent',
                                                     'b_exponent'}
  assert on_disk['predictions'][0]['extrapolation'] == pytest.approx(10.0)
  agree = on_disk['exponent_agreement']   # both approaches see the same law: a test on a2 - a3 finds no difference
  assert agree['verdict'] == 'consistent' and agree['agree'] is True
  assert agree['ci_difference'][0] < 0 < agree['ci_difference'][1]
  assert on_disk['design']['flags'] == [] and on_disk['design']['budgets_with_3_sizes'] == 4
  assert on_disk['plots'] == ['loss_vs_compute.png', 'isoflop.png', 'parity.png', 'residuals.png']


def test_parametric_frontier_is_the_laws_compute_optimum_where_there_is_data():
  """Rows with C = 6 N D: the frontier at C is the law's own optimum (numeric minimisation) when
  that optimum lies inside the sampled N and D, and absent (NaN) outside them."""
  rows = isoflop_design(budgets=(1e18, 1e19, 1e20), noise=0.0)
  params = {'E': E, 'A': A, 'B': B, 'alpha': ALPHA, 'beta': BETA}
  got = plots.parametric_frontier(params, rows, np.array([3e18, 3e19, 1e30]))
  for c, v in zip((3e18, 3e19), got[:2]):
    assert v == pytest.approx(true_optimum(c)[1], rel=1e-5)
  assert math.isnan(got[2])


def test_implied_exponent_follows_the_rows_flops_accounting():
  """Rows whose FLOPs per token are 60 N^0.8 (not 6 N): minimising A N^-alpha + B (C / 60 N^0.8)^-beta
  gives N_opt ~ C^(beta / (alpha + 0.8 beta)) in closed form; with 6 N it is beta / (alpha + beta)."""
  params = {'E': E, 'A': A, 'B': B, 'alpha': ALPHA, 'beta': BETA}
  budgets = (1e16, 1e17, 1e18)
  for fpt, expected in ((lambda n: 60 * n ** 0.8, BETA / (ALPHA + 0.8 * BETA)),
                        (lambda n: 6 * n, BETA / (ALPHA + BETA))):
    rows = [{'run': f'{c}-{n}', 'N': n, 'D': c / fpt(n), 'C': c, 'L': 3.0, 'budget': None}
            for c in budgets for n in np.geomspace(1e5, 1e9, 5)]
    got = diagnostics.implied_exponent(params, rows, budgets)
    assert got['a'] == pytest.approx(expected, rel=1e-5)
