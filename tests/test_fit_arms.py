"""Learning-rate arms in the IsoFLOP fit (scaling/analysis/fit/arms.py): points trained at several rates.

The synthetic studies come from a known law, computed here independently of the code under test:
L(N, D, lr) = E + A / N^alpha + B / D^beta + KAPPA (log10 lr - log10 lr_opt(N, D))^2 with
log10 lr_opt = C0 + ALPHA_LR log10 N + BETA_LR log10 D, D = C / (6 N). Each point is trained at three arms,
0.5x, 1x and 2x a centre rate that is off the optimum by a known factor (within sqrt(2), so the 1x arm is best).
"""

import json
import math

import numpy as np
import pytest
from scipy import optimize

from scaling.analysis.fit import approaches, arms, command

E, A, B, ALPHA, BETA = 0.3, 406.4 * 0.2, 410.7 * 0.2, 0.34, 0.28
KAPPA = 0.05                                  # loss per decade^2 of lr off the optimum
C0, ALPHA_LR, BETA_LR = 0.5, -0.35, -0.12     # the true LR law
BUDGETS = 4e12 * 10 ** (0.5 * np.arange(4))
STEPS = np.log10(1.45) * (np.arange(6) - 2.5)
MULTS = (0.5, 1.0, 2.0)


def law(n, d):
  return E + A / n ** ALPHA + B / d ** BETA


def lr_opt(n, d):
  return 10 ** (C0 + ALPHA_LR * math.log10(n) + BETA_LR * math.log10(d))


def n_opt(c):
  res = optimize.minimize_scalar(lambda x: law(math.exp(x), c / (6 * math.exp(x))),
                                 bounds=(math.log(1e3), math.log(1e10)), method='bounded', options={'xatol': 1e-12})
  return math.exp(res.x)


TRUE_A = float(np.polyfit(np.log(BUDGETS), np.log([n_opt(c) for c in BUDGETS]), 1)[0])


def raw_row(run, n, d, c, lr, loss, seed=None):
  ov = {'model.d_model': round(n), 'train.steps': round(d), 'train.lr': lr, 'name': 'sim'}
  if seed is not None:
    ov['train.seed'] = seed
  return {'run': run, 'state': 'done', 'params': n, 'non_embedding_params': n, 'tokens': d, 'flops': c,
          'eval/bpb': loss, 'overrides': ov}


def simulate(rng, sd=0.0, offsets=None):
  """results.jsonl rows: every point at three arms around a centre rate off the optimum by 10^offset."""
  out = []
  for j, c in enumerate(BUDGETS):
    for k, x in enumerate(math.log10(n_opt(c)) + STEPS):
      n = 10 ** x
      d = c / (6 * n)
      off = offsets[j][k] if offsets is not None else rng.uniform(-0.12, 0.12)
      centre = lr_opt(n, d) * 10 ** off
      for m in MULTS:
        lr = centre * m
        loss = law(n, d) + KAPPA * math.log10(lr / lr_opt(n, d)) ** 2 + (rng.normal(0, sd) if sd else 0.0)
        out.append(raw_row(f'b{j}s{k}m{m}', n, d, c, lr, loss))
  return out


def as_fit_rows(raws):
  return [{'run': r['run'], 'N': r['params'], 'D': r['tokens'], 'C': r['flops'], 'L': r['eval/bpb'],
           'budget': None, 'raw': r} for r in raws]


def test_points_group_arms_and_pick_the_best():
  rows = as_fit_rows(simulate(np.random.default_rng(0)))
  points = arms.group_points(rows)
  assert len(points) == len(BUDGETS) * len(STEPS)
  assert all(len(p['arms']) == 3 for p in points)
  reduced, rec = arms.reduce_arms(rows)
  assert len(reduced) == 24 and rec['rows_in'] == 72
  for r, p in zip(reduced, rec['points']):
    n, d = r['N'], r['D']
    truth = [law(n, d) + KAPPA * math.log10(lr / lr_opt(n, d)) ** 2 for lr in p['arms']]
    assert p['best'] == int(np.argmin(truth)) == 1     # offsets within sqrt(2): the middle arm is best
    assert r['L'] == pytest.approx(min(truth), abs=1e-12)
    assert p['edge'] is None
    # the exact parabola in log lr through three arms finds the optimum itself (the loss is quadratic in log lr)
    assert p['lr_opt'] == pytest.approx(lr_opt(n, d), rel=1e-9)
    assert p['L_lr_parabola'] == pytest.approx(law(n, d), abs=1e-12)


def test_edge_arms_are_named():
  offsets = [[0.0] * 6 for _ in BUDGETS]
  offsets[1][2] = 0.6     # centre 4x above the optimum: the 0.5x arm is best, the optimum lies below the arms
  offsets[2][3] = -0.6
  rows = as_fit_rows(simulate(np.random.default_rng(0), offsets=offsets))
  _, rec = arms.reduce_arms(rows)
  edges = {(round(p['N']), p['edge']) for p in rec['points'] if p['edge']}
  assert len(edges) == 2 and {e for _, e in edges} == {'low', 'high'}
  assert rec['edge_points'] == 2 and 'end of the arms' in rec['note']


def test_seeds_are_separate_points_with_their_own_arms():
  """A seed is part of a point's identity (seed replicates stay replicates for the noise floor): two seeds x two
  arms are two points of two arms each; rows equal in every override (a duplicate) are averaged within their arm."""
  rows = as_fit_rows([raw_row('a', 1e5, 1e6, 6e11, 1e-3, 3.0, seed=0), raw_row('b', 1e5, 1e6, 6e11, 2e-3, 3.1, seed=0),
                      raw_row('c', 1e5, 1e6, 6e11, 1e-3, 3.2, seed=1), raw_row('d', 1e5, 1e6, 6e11, 2e-3, 3.1, seed=1),
                      raw_row('e', 1e5, 1e6, 6e11, 2e-3, 3.3, seed=1)])
  points = arms.group_points(rows)
  assert [sorted(rows[i]['run'] for i in p['idx']) for p in points] == [['a', 'b'], ['c', 'd', 'e']]
  reduced, rec = arms.reduce_arms(rows)
  assert [r['run'] for r in reduced] == ['a', 'c']
  assert rec['points'][1]['arm_L'] == pytest.approx([3.2, 3.2])   # arm 2e-3 of seed 1: mean of 3.1 and 3.3
  assert [p['edge'] for p in rec['points']] == ['low', 'low']      # a tie goes to the first (lower) arm


def test_arms_do_not_enter_the_parabola_as_sizes():
  """Without the reduction every arm would be a row of its budget's parabola; with it the fit recovers the law's
  exponent as the single-arm study does (noise-free, so only the parabola's approximation remains)."""
  rng = np.random.default_rng(1)
  raws = simulate(rng)
  reduced, _ = arms.reduce_arms(as_fit_rows(raws))
  fit = approaches.fit_isoflop(reduced, bootstrap=0)
  assert all(b['sizes'] == b['n'] == 6 for b in fit['budgets'])   # one row per size, not three
  assert fit['a'] == pytest.approx(TRUE_A, abs=0.02)


def test_lr_law_recovers_the_generating_law():
  rows = as_fit_rows(simulate(np.random.default_rng(2)))
  _, rec = arms.reduce_arms(rows)
  law_fit = arms.lr_law(rec['points'], noise_sd=None, a=0.5, b=0.5)
  assert law_fit['alpha'] == pytest.approx(ALPHA_LR, abs=1e-6)
  assert law_fit['beta'] == pytest.approx(BETA_LR, abs=1e-6)
  assert law_fit['c'] == pytest.approx(C0, abs=1e-5)
  assert law_fit['gamma'] == pytest.approx(0.5 * ALPHA_LR + 0.5 * BETA_LR, abs=1e-6)


def test_lr_law_interval_covers_the_truth_under_noise():
  rows = as_fit_rows(simulate(np.random.default_rng(3), sd=0.002))
  _, rec = arms.reduce_arms(rows)
  law_fit = arms.lr_law(rec['points'], noise_sd=0.002, draws=2000, seed=0)
  lo, hi = law_fit['ci_alpha']['ci']
  assert lo < ALPHA_LR < hi
  assert 0 <= law_fit['clamped_share'] < 0.5


def test_lr_law_says_when_it_cannot_be_fitted():
  rows = as_fit_rows(simulate(np.random.default_rng(4))[:9])   # 3 points of one budget
  _, rec = arms.reduce_arms(rows)
  assert 'skipped' in arms.lr_law(rec['points'], noise_sd=0.01)


def test_seed_noise_draws_redraw_every_arm():
  """With two arms of equal loss, the best-of-two of noisy draws sits below either arm by sd/sqrt(pi) on
  average (the mean of the minimum of two independent normals); a draw of the point alone would not."""
  from scaling.analysis.fit import schemes
  rows = [{'run': 'p', 'N': 1.0, 'D': 1.0, 'C': 1.0, 'L': 3.0, 'arm_L': [3.0, 3.0]}]
  budgets = schemes.budget_data(rows, [[0]], [1.0])
  assert budgets[0]['arm_L'].shape == (1, 2)
  rng = np.random.default_rng(0)
  draws = arms.best_of_draws(budgets[0]['arm_L'], np.full(200000, 0.01), rng)
  assert draws.mean() == pytest.approx(3.0 - 0.01 / math.sqrt(math.pi), abs=2e-4)


def test_fit_command_reduces_arms_and_fits_the_lr_law(tmp_path):
  rng = np.random.default_rng(5)
  path = tmp_path / 'results.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in simulate(rng, sd=0.002)))
  result = command.fit_all(results=str(path), params='total', bootstrap=50, plots=False, held_out=False,
                           max_draws=2000, mc_error=0.05, fits='isoflop')
  la = result['lr_arms']
  assert la['points_out'] == 24 and la['rows_in'] == 72
  assert len(result['inputs']['runs']) == 72      # provenance names every run, not only the best arms
  assert result['inputs']['options']['arms'] == 'best'
  assert la['law']['ci_alpha']['ci'][0] < ALPHA_LR < la['law']['ci_alpha']['ci'][1]
  assert la['other_estimator']['estimator'] == 'lr_parabola'
  assert abs(result['isoflop']['a'] - TRUE_A) < 0.05
  head = result['isoflop']['specification_curve']['headline']['a']
  lo, hi = head['systematic']
  assert lo <= la['other_estimator']['a'] <= hi


def test_report_leaves_noise_runs_out_and_uses_their_sd(tmp_path):
  """Runs named '*-noise' are seed replicates: out of the fit, and their pooled SD (computed here by hand) is the
  noise floor; the report shows the arms table and the LR law."""
  from scaling.analysis import report
  rng = np.random.default_rng(6)
  raws = simulate(rng, sd=0.002)
  noise = {}
  for size, losses in ((1.5e5, (2.51, 2.53, 2.52)), (2.2e5, (2.47, 2.50, 2.44))):
    for s, loss in enumerate(losses):
      r = raw_row(f'n{size:.0f}s{s}', size, 4e12 / (6 * size), 4e12, 0.003, loss, seed=s)
      r['name'] = r['overrides']['name'] = 'sim-noise'
      raws.append(r)
      noise.setdefault(size, []).append(loss)
  ss = sum(float(np.sum((np.array(v) - np.mean(v)) ** 2)) for v in noise.values())
  floor = math.sqrt(ss / 4)
  (tmp_path / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in raws))
  path = report.write_report(str(tmp_path), params='total', bootstrap=50, fits='isoflop', held_out=False, plots=False,
                             max_draws=2000, mc_error=0.05)
  text = open(path).read()
  assert 'Learning-rate arms' in text and 'LR law' in text
  assert f'{floor:.4g} is the noise floor' in text
  fit = json.load(open(tmp_path / 'fit.json'))
  assert fit['inputs']['rows_used'] == 72 and not any(r.startswith('n') for r in fit['inputs']['runs'])
  assert fit['inputs']['options']['noise_floor'] == pytest.approx(floor)


def test_fit_draws_the_arms_plot(tmp_path):
  path = tmp_path / 'results.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in simulate(np.random.default_rng(7), sd=0.002)))
  result = command.fit_all(results=str(path), params='total', bootstrap=20, held_out=False, max_draws=1000,
                           mc_error=0.05, fits='isoflop')
  assert 'lr_arms.png' in result['plots']
  assert (tmp_path / 'lr_arms.png').stat().st_size > 10000
