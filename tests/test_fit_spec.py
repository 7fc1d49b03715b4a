"""The specification curve (scaling/analysis/fit/spec.py) and the vectorised resampling under it (resample.py,
intervals.py), each against an independent reference: numpy's polyfit, a hand count of ranks, a simulation of the
order statistic, the law that made the data, or the model dimensions of a committed run written out here."""

import json
import math
import pathlib

import numpy as np
import pytest

from scaling.analysis.fit import approaches, intervals, resample, spec

ISOFLOP_CPU = pathlib.Path(__file__).resolve().parent.parent / 'docs/results/isoflop_cpu/results.jsonl'
E, A, B, ALPHA, BETA = 0.3, 81.28, 82.14, 0.34, 0.28
A_TRUE = BETA / (ALPHA + BETA)
BUDGETS = 4e12 * 10 ** (0.5 * np.arange(4))


def law(n, d):
  return E + A / np.asarray(n, float) ** ALPHA + B / np.asarray(d, float) ** BETA


def n_opt(c):
  """The law's compute-optimal N at C = 6 N D in closed form (Hoffmann et al. 2022, eq. 4)."""
  g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
  return g * (c / 6) ** A_TRUE


def rows_at(offsets, noise=0.0, seed=0, embed=None):
  """Per budget, sizes n_opt * 10^offset; raw columns: params = N + embed(N) (total), non_embedding_params = N."""
  rng = np.random.default_rng(seed)
  rows = []
  for c in BUDGETS:
    for off in offsets:
      n = n_opt(c) * 10 ** off
      loss = float(law(n, c / (6 * n)) + rng.normal(0, noise))
      total = n + (embed(n) if embed else 0.0)
      rows.append({'run': f'r{len(rows)}', 'N': total, 'D': c / (6 * n), 'C': c, 'L': loss, 'budget': None,
                   'raw': {'params': total, 'non_embedding_params': n, 'flops': c, 'tokens': c / (6 * n),
                           'overrides': {'model.d_model': 64, 'model.vocab_size': 1000}}})
  return rows


# ----------------------------------------------------------------------------- vectorised parabolas


def test_weighted_parabolas_match_numpy_polyfit_draw_by_draw():
  rng = np.random.default_rng(0)
  x = np.log10([1e5, 1.7e5, 2.9e5, 4.9e5, 8.4e5])
  Y = 2.0 + 0.4 * (x - 5.4) ** 2 + rng.normal(0, 0.01, (50, 5))
  W = resample.row_weights(rng, 5, 50)
  got = resample.parabola_fits(x, Y, W)
  for r in range(50):
    keep = W[r] > 0
    if len(np.unique(x[keep])) < 3:
      assert got['code'][r] == resample.FEW
      continue
    c2, c1, c0 = np.polyfit(x, Y[r], 2, w=np.sqrt(W[r]))
    xv = -c1 / (2 * c2)
    if c2 <= 0:
      assert got['code'][r] == resample.CONCAVE
    elif not x[keep].min() <= xv <= x[keep].max():
      assert got['code'][r] == (resample.BELOW if xv < x[keep].min() else resample.ABOVE)
    else:
      assert got['code'][r] == resample.OK
      assert got['x_opt'][r] == pytest.approx(xv, abs=1e-9)
      assert got['l_opt'][r] == pytest.approx(c0 - c1 ** 2 / (4 * c2), abs=1e-9)


def test_local_and_best_estimators_by_hand():
  x = np.array([0.0, 1.0, 2.0, 3.0])
  Y = np.array([[3.0, 1.0, 2.0, 5.0],    # best at x=1: parabola through (0,3), (1,1), (2,2): vertex 1 + 1/6
                [1.0, 2.0, 3.0, 4.0],    # best at the lower end: no interior minimum
                [4.0, 3.0, 2.0, 1.0]])   # best at the upper end
  loc = resample.local_fits(x, Y, 'local3')
  assert list(loc['code']) == [resample.OK, resample.BELOW, resample.ABOVE]
  assert loc['x_opt'][0] == pytest.approx(1 + 1 / 6)
  assert loc['l_opt'][0] == pytest.approx(1 - 1.5 * (1 / 6) ** 2)   # c2 = 1.5: 3 - 2*1 + 2 over 2
  best = resample.local_fits(x, Y, 'best')
  assert best['x_opt'][0] == 1.0 and list(best['code']) == [resample.OK, resample.BELOW, resample.ABOVE]


def test_escape_sides_follow_the_weight_of_each_budget_in_the_slope():
  lc = np.array([12.0, 12.5, 13.0, 13.5])     # mean 12.75: the first two budgets pull the slope down when high
  codes = np.array([[0, 0, 0, resample.ABOVE],   # top budget's minimum above its sizes: a -> +inf
                    [resample.ABOVE, 0, 0, 0],   # bottom budget's above: a -> -inf
                    [resample.BELOW, 0, 0, resample.ABOVE],   # both push a up
                    [resample.ABOVE, 0, 0, resample.ABOVE],   # opposite pushes: unknown
                    [0, resample.CONCAVE, 0, 0],              # no minimum at all: unknown
                    [0, 0, 0, 0]])
  assert list(resample.escape_sides(codes, lc)) == [1, -1, 1, resample.UNKNOWN, resample.UNKNOWN, 0]


# ----------------------------------------------------------------------------- intervals and MC error


def test_an_end_opens_when_more_than_five_percent_fail_towards_it():
  v = np.arange(1.0, 101.0)
  five = np.concatenate([v[:95], [np.nan] * 5])
  six = np.concatenate([v[:94], [np.nan] * 6])
  up5, up6 = np.array([0] * 95 + [1] * 5), np.array([0] * 94 + [1] * 6)
  assert intervals.honest_interval(five, up5)['ci'] == [6.0, 95.0]        # 5 beyond each end: closed
  assert intervals.honest_interval(six, up6)['ci'] == [6.0, math.inf]     # 6 escaped upward: open above
  unknown = intervals.honest_interval(six, None)['ci']                    # side unknown: both ends
  assert unknown == [-math.inf, math.inf]


def test_mc_error_matches_the_spread_of_the_percentile_over_repeated_runs():
  rng = np.random.default_rng(5)
  ends, errs = [], []
  for _ in range(400):
    rec = intervals.honest_interval(rng.standard_normal(500))
    ends.append(rec['ci'][1])
    errs.append(rec['mc_error'][1])
  assert np.mean(errs) == pytest.approx(np.std(ends), rel=0.25)


# ----------------------------------------------------------------------------- conventions


def test_m_is_the_flops_per_token_less_the_lm_head_for_committed_runs():
  """M for every committed isoflop_cpu run against DeepSeek's definition written out from the run's dims: 6 x the
  blocks' matmul parameters + the attention term 12 L H K (T + 1) / 2 (swiglu d_ff = 8/3 d rounded up to 64)."""
  raws = [json.loads(line) for line in ISOFLOP_CPU.read_text().splitlines() if line.strip()]
  rows = [{'N': r['params'], 'D': r['tokens'], 'C': r['flops'], 'L': r['eval/bpb'], 'raw': r} for r in raws]
  got = spec.convention_sizes(rows, 'M')
  for m, r in zip(got, raws):
    o = r['overrides']
    d, layers, h, g, t = (o[f'model.{k}'] for k in ('d_model', 'num_layers', 'num_heads', 'num_kv_heads', 'seq_len'))
    k = d // h
    f = -(-int(8 * d / 3) // 64) * 64
    per_layer = d * h * k + 2 * d * g * k + h * k * d + 3 * d * f
    assert m == pytest.approx(6 * layers * per_layer + 12 * layers * h * k * (t + 1) / 2, rel=1e-9)


def test_a_convention_the_rows_cannot_give_is_skipped_with_its_reason():
  rows = rows_at([-0.3, 0, 0.3])
  for r in rows:
    r['raw']['overrides'] = {'data.tokenizer': 'char', 'model.d_model': 64}
  with pytest.raises(ValueError, match="tokenizer 'char'"):
    spec.convention_sizes(rows, 'M')
  rows = rows_at(np.log10(1.7) * np.arange(-2, 3), noise=0.003)
  for r in rows:
    r['raw']['overrides'] = {'data.tokenizer': 'char'}
  iso = approaches.fit_isoflop(rows, bootstrap=20, params='total')
  (skip,) = iso['specification_curve']['headline']['skipped']
  assert skip['convention'] == 'M' and "tokenizer 'char'" in skip['reason']
  assert {s['convention'] for s in iso['specification_curve']['specs']} == {'total', 'non_embedding'}


# ----------------------------------------------------------------------------- the curve


def test_noiseless_centred_studies_give_the_laws_exponent_under_every_specification():
  """Sizes centred on each budget's optimum: L - E along a budget is the same curve in log N - log N_opt scaled
  by a factor of C, so every estimator's error in log N is the same at every budget and every specification of
  the loss (N = non-embedding: the law's N) finds beta / (alpha + beta); log L = log(E + that) is not a scaled copy,
  and its parabolas are off by ~1e-5."""
  rows = rows_at(np.log10(1.7) * np.arange(-2, 3), noise=0.0)
  for r in rows:
    r['N'] = r['raw']['non_embedding_params']
  iso = approaches.fit_isoflop(rows, bootstrap=50, params='non_embedding', noise_sd=1e-4)
  specs = [s for s in iso['specification_curve']['specs'] if s['convention'] == 'non_embedding']
  assert len(specs) == 5 * 3   # (parabola, local3) x (loss, log loss) + best, x 3 budget sets
  for s in specs:
    assert s['a'] == pytest.approx(A_TRUE, abs=1e-4 if s['transform'] == 'log_loss' else 1e-9), s['name']


def test_conventions_that_disagree_widen_the_combined_interval_and_the_systematic_range_holds_them():
  """Total parameters = N + an embedding of 1000 x d with d ~ N^(1/2): the total-N exponent differs from the law's.
  The reference a of each convention: numpy parabolas per budget and a least-squares line, written here."""
  rows = rows_at(np.log10(1.7) * np.arange(-2, 3), noise=0.003, seed=4, embed=lambda n: 1000 * 2 * np.sqrt(n))
  iso = approaches.fit_isoflop(rows, bootstrap=50, params='total', seed=1)
  head = iso['specification_curve']['headline']

  def ref_a(col):
    lx = []
    for j in range(4):
      g = rows[5 * j:5 * j + 5]
      x = np.log10([r['raw'][col] for r in g])
      c2, c1, _ = np.polyfit(x, [r['L'] for r in g], 2)
      lx.append(-c1 / (2 * c2))
    return np.polyfit(np.log10(BUDGETS), lx, 1)[0]
  a_tot, a_ne = ref_a('params'), ref_a('non_embedding_params')
  assert head['a']['value'] == pytest.approx(a_tot, abs=1e-9)
  by = {s['name']: s['a'] for s in iso['specification_curve']['specs']}
  assert by['non_embedding/parabola/loss/all'] == pytest.approx(a_ne, abs=1e-9)
  lo, hi = head['a']['systematic']
  assert lo <= min(a_tot, a_ne) and max(a_tot, a_ne) <= hi
  stat, comb = head['a']['statistical']['ci'], head['a']['combined']['ci']
  assert comb[0] <= stat[0] and stat[1] <= comb[1]                 # the hull holds the statistical interval
  assert head['a']['combined']['tau'] > 0.5 * abs(a_ne - a_tot)    # the conventions' gap is not noise
  assert comb[1] - comb[0] > stat[1] - stat[0] + 0.5 * abs(a_ne - a_tot)


def test_dropping_a_budget_needs_three_and_is_skipped_otherwise():
  rows = rows_at(np.log10(1.7) * np.arange(-2, 3), noise=0.003)[:10]   # 2 budgets
  iso = approaches.fit_isoflop(rows, bootstrap=20, params='total')
  skipped = iso['specification_curve']['headline']['skipped']
  assert any(s.get('spec', '').endswith('/drop_top') and 'too few' in s['reason'] for s in skipped)
  assert all(s['budgets'] == 'all' for s in iso['specification_curve']['specs'])


def test_draws_double_until_the_mc_error_is_met_or_the_cap():
  rows = rows_at(np.log10(1.7) * np.arange(-2, 3), noise=0.005, seed=2)
  loose = approaches.fit_isoflop(rows, bootstrap=20, params='total', mc_error=0.5)
  tight = approaches.fit_isoflop(rows, bootstrap=20, params='total', mc_error=1e-6, max_draws=4000)
  assert loose['mc']['draws'] == approaches.ISOFLOP_MIN_DRAWS and loose['mc']['met'] is True
  assert tight['mc']['draws'] == 4000 and tight['mc']['met'] is False
  assert tight['resampling']['seed_noise']['draws'] == 4000
  assert all(e is not None and e > 1e-6 for e in tight['resampling']['seed_noise']['a']['mc_error'])
  ssr = 0.0   # the pooled residual sd of the budgets' parabolas: 20 rows, 4 x 3 coefficients
  for j in range(4):
    x, y = np.log10([r['N'] for r in rows[5 * j:5 * j + 5]]), [r['L'] for r in rows[5 * j:5 * j + 5]]
    ssr += float(np.sum((y - np.polyval(np.polyfit(x, y, 2), x)) ** 2))
  sn = tight['resampling']['seed_noise']
  assert sn['sigma'] == pytest.approx(math.sqrt(ssr / 8), rel=1e-9) and sn['sigma_dof'] == 8


def test_published_exponents_are_tested_against_the_specification_of_their_convention():
  from scaling.analysis.fit.agreement import published_comparisons

  def s(name, a, ci):
    return {'name': name, 'a': a, 'ci_a': {'ci': ci, 'state': intervals.interval_state(ci), 'distinct': 100}}
  curve = {'specs': [s('total/parabola/loss/all', 0.52, [0.45, 0.58]), s('non_embedding/parabola/loss/all', 0.64,
                                                                         [0.60, 0.69])],
           'headline': {'main': 'total/parabola/loss/all', 'a': {'combined': {'ci': [0.45, 0.80],
                                                                             'state': 'not identified'}}}}
  got = {(p['anchor'], p['method']): p for p in published_comparisons(curve)}
  hoff = got[('hoffmann2022', 'approach2')]      # 0.49 (Table 2): 0.45 - 0.49 < 0 < 0.58 - 0.49
  assert hoff['ci_difference'] == pytest.approx([0.45 - 0.49, 0.58 - 0.49])
  assert hoff['verdict'] == 'consistent' and hoff['verdict_combined'] == 'not identified'
  kaplan = got[('kaplan2020', None)]             # 0.73 against the non-embedding convention: above 0.69
  assert kaplan['spec'].startswith('non_embedding/') and kaplan['verdict'] == 'differ'
  assert got[('deepseek2024', None)]['verdict'] == 'not decidable'   # no M specification here
