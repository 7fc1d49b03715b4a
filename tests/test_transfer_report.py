"""scaling/analysis/transfer_report.py on synthetic sweeps with a known answer: loss = L0(shape) + A (log2 lr -
log2 lr_opt)^2 (+ normal noise of a known sd), optimum lr_opt and L0 set per parametrization and shape. No training."""

import json
import math

import numpy as np
import pytest

from scaling.analysis import transfer_report as tr

A = 0.06                      # curvature per octave^2
LADDER = [1.25e-3 * 2.0 ** k for k in range(-6, 8)]
WIDTHS, DEPTHS = (32, 64, 128, 256), (2, 4, 8)


def grid_around(lr, n=6):
  """The n ladder rungs centred (in log) on lr."""
  x = math.log2(lr / 1.25e-3)
  first = round(x - (n - 1) / 2)
  return [1.25e-3 * 2.0 ** k for k in range(first, first + n)]


def make_rows(opt, l0, *, sigma=0.0, seed=0, pars=('sp', 'mup', 'completep'), centre=((64, 2), (64, 4)),
              grid=None, steps=1500):
  """Rows of a width arm (depth 2) and a depth arm (width 64); 2 seeds at the centre shapes."""
  rng = np.random.default_rng(seed)
  shapes = [(w, 2) for w in WIDTHS] + [(64, d) for d in DEPTHS[1:]]
  rows = []
  for par in pars:
    for w, d in shapes:
      o = opt(par, w, d)
      for s in ((0, 1) if (w, d) in centre else (0,)):
        for lr in (grid or grid_around)(o):
          loss = l0(par, w, d) + A * math.log2(lr / o) ** 2 + (rng.normal(0, sigma) if sigma else 0.0)
          rows.append(row(par, w, d, lr, loss, s, steps))
  return rows


def row(par, w, d, lr, loss, seed=0, steps=1500):
  return {'state': 'done', 'eval/loss': loss, 'name': 'transfer', 'run': f'{par}{w}{d}{lr}{seed}{steps}',
          'overrides': {'model.parametrization': par, 'model.d_model': w, 'model.num_layers': d, 'train.lr': lr,
                        'train.seed': seed, 'train.steps': steps}}


def good_opt(par, w, d):
  """SP: the optimum falls as 1/width and 1/sqrt(depth); the transfer parametrizations: fixed."""
  return 6e-3 * (32 / w) * math.sqrt(2 / d) if par == 'sp' else 6e-3


def better_l0(par, w, d):
  return 3.9 - 0.1 * math.log2(w / 32) - 0.08 * math.log2(d / 2)


def by_name(an, name, par):
  return next(c for c in an['checks'] if c['name'].startswith(name) and c['par'] == par)


def test_read_off_recovers_a_parabolas_vertex_three_ways():
  x = np.log2(LADDER[4:10])
  x0 = math.log2(5.3e-3)
  y = 3.5 + A * (x - x0) ** 2
  r = tr.read_off(x, y)
  for m in ('parabola3', 'window'):
    assert r[m][0][0] == pytest.approx(x0, abs=1e-9) and r[m][1][0] == pytest.approx(3.5, abs=1e-12)
  assert r['best'][0][0] == x[np.argmin(np.abs(x - x0))]                 # the grid point nearest the vertex
  q = tr.interp(x, y[None, :], np.array([x0 + 0.3]))                    # exact on a parabola between grid points
  assert q[0] == pytest.approx(3.5 + A * 0.09, abs=1e-12)
  assert np.isnan(tr.interp(x, y[None, :], np.array([x[-1] + 0.6]))[0])   # off the grid: not a value


def test_noise_is_pooled_from_the_seed_pairs_near_the_optimum():
  cv = {('sp', 64, 2, 1500): {0: {1e-3: 3.00, 2e-3: 3.10, 4e-3: 3.20, 8e-3: 5.0},
                              1: {1e-3: 3.02, 2e-3: 3.10, 4e-3: 3.26, 8e-3: 5.2}}}
  # per lr, sum of squares about the mean over 1 degree of freedom: 0.0002, 0, 0.0018; 8e-3 lies > NEAR above
  assert tr.noise(cv)['sigma'] == pytest.approx(math.sqrt(0.002 / 3), rel=1e-9)
  single = {('sp', 64, 2, 1500): {0: {1e-3: 3.0, 2e-3: 4.0, 4e-3: 5.0}}}
  assert tr.noise(single) == pytest.approx({'sigma': tr.PRIOR_SIGMA_REL * 4.0, 'source': tr.noise(single)['source'],
                                             'measured': False})


@pytest.fixture(scope='module')
def good():
  return tr.analyse(make_rows(good_opt, better_l0, sigma=0.004, seed=3), draws=200)


def test_optima_recovered_within_their_intervals(good):
  assert good['sigma']['measured'] and 0.002 < good['sigma']['sigma'] < 0.007
  covered = []
  for (par, w, d, _), c in good['results'].items():
    truth = math.log2(good_opt(par, w, d))
    lo, hi = c['xq'].interval()
    covered.append(lo <= truth <= hi)
    assert abs(math.log2(c['lr']) - truth) < 0.3 and c['edge'] is None
    assert c['lq'].interval()[0] <= better_l0(par, w, d) <= c['lq'].interval()[1]
  assert sum(covered) >= len(covered) - 2                  # 90% intervals: at most 2 of 18 curves miss
  assert good['transferred']['completep']['lr'] == pytest.approx(6e-3, rel=0.2)


def test_movement_ratio_and_the_must_show_pass(good):
  sp, cp = good['arms']['width']['sp'], good['arms']['width']['completep']
  lo, hi = sp['range'].interval()
  assert lo <= 3.0 <= hi                                   # SP moves 8x (log2 3) across 8x width
  assert 0.0 <= cp['range'].interval()[0] and cp['range'].interval()[1] <= 1.0
  lo, hi = sp['end'].interval()
  assert lo <= -3.0 <= hi                                  # and downwards: last/first = 1/8
  for par in ('mup', 'completep'):
    assert all(c['verdict'] == tr.PASS for c in good['checks'] if c['par'] == par), par
  assert by_name(good, 'pre-check', 'sp')['verdict'] == tr.PASS
  depth = good['arms']['depth']['sp']['range'].interval()
  assert depth[0] <= 1.0 <= depth[1]                       # SP: sqrt(8 / 2) = 2x across 4x depth


def test_fail_when_the_optimum_moves_and_the_loss_worsens():
  opt = lambda p, w, d: 6e-3 * (w / 32) ** (2 / 3) if p == 'completep' else good_opt(p, w, d)   # 4x over 8x
  l0 = lambda p, w, d: better_l0(p, min(w, 128), d) + (0.1 if w == 256 else 0.0)               # worse at 256
  an = tr.analyse(make_rows(opt, l0, sigma=0.003, seed=4), draws=200)
  assert by_name(an, 'width: optimum moves', 'completep')['verdict'] == tr.FAIL
  assert by_name(an, 'width: loss at the optimum', 'completep')['verdict'] == tr.FAIL
  assert by_name(an, 'depth: optimum moves', 'completep')['verdict'] == tr.PASS


def test_not_decided_when_the_noise_hides_the_difference():
  flat = lambda p, w, d: 3.9                               # width does not matter; noise 0.01
  an = tr.analyse(make_rows(good_opt, flat, sigma=0.01, seed=5), draws=200)
  assert by_name(an, 'width: loss at the optimum', 'completep')['verdict'] == tr.UNDECIDED
  assert by_name(an, 'pre-check', 'sp')['verdict'] == tr.UNDECIDED


def test_an_optimum_at_the_grid_edge_is_a_bound():
  common = lambda lr: grid_around(6e-3)                    # every curve on one grid, 1.25e-3 .. 4e-2
  opt = lambda p, w, d: 0.15 if (p, w) == ('completep', 256) else good_opt(p, w, d)   # far above the top rung
  an = tr.analyse(make_rows(opt, better_l0, sigma=0.0, grid=common), draws=100)
  c = an['results'][('completep', 256, 2, 1500)]
  assert c['edge'] == 'high' and c['xq'].interval()[1] == math.inf and c['lq'].interval()[0] == -math.inf
  assert an['results'][('sp', 256, 2, 1500)]['edge'] == 'low'   # SP's 7.5e-4 lies under the grid's 1.25e-3
  lo, hi = an['arms']['width']['completep']['range'].interval()
  assert hi == math.inf and lo > 1.0                       # a bound, yet at least 4x: decidedly more than 2x
  assert by_name(an, 'width: optimum moves', 'completep')['verdict'] == tr.FAIL
  assert '(a bound' in by_name(an, 'width: optimum moves', 'completep')['reason']
  assert an['identity'].endswith('at a shared lr and seed: 0.')   # noise-free: the base curves agree exactly
  text = tr.render(an, n_rows=0, results_name='r', png=None)
  assert 'edge: optimum >= highest lr (a bound)' in text and 'open]' in text


def test_precheck_rule_and_margin():
  """SP only, no seeds: sigma assumed 0.00455 x loss; each step must drop by more than 1.645 sqrt(2) sigma."""
  rows = []
  for w, best in ((32, 3.9), (128, 3.7), (256, 3.68)):
    rows += [row('sp', w, 2, lr, best + A * math.log2(lr / 3e-3) ** 2) for lr in grid_around(3e-3)]
  an = tr.analyse(rows, draws=50)
  pre = an['checks'][0]
  margin = 1.645 * math.sqrt(2) * 0.00455 * 3.7               # 0.0392 at the 128 -> 256 step; its drop is 0.02
  assert pre['verdict'] == tr.UNDECIDED and f'(margin {margin:.4f})' in pre['interval']
  rows = [r if r['overrides']['model.d_model'] != 256 else dict(r, **{'eval/loss': r['eval/loss'] - 0.05})
          for r in rows]                                      # now 0.07 > 0.0392
  assert tr.analyse(rows, draws=50)['checks'][0]['verdict'] == tr.PASS
  rows = [r if r['overrides']['model.d_model'] != 256 else dict(r, **{'eval/loss': r['eval/loss'] + 0.2})
          for r in rows]
  assert tr.analyse(rows, draws=50)['checks'][0]['verdict'] == tr.FAIL


def test_horizon_check():
  base = make_rows(good_opt, better_l0, pars=('completep',), centre=((64, 2),))
  def horizon(best_lr):
    return [row('completep', 128, 2, lr, 3.5 + A * math.log2(lr / best_lr) ** 2, 0, 6000)
            for lr in (3e-3, 6e-3, 1.2e-2)]
  for best_lr, want in ((6e-3, tr.PASS), (2.5e-3, tr.FAIL)):
    an = tr.analyse(base + horizon(best_lr), draws=100)
    h = by_name(an, 'horizon', 'completep')
    assert h['verdict'] == want and h['mult'] == 4 and h['lr'] == 6e-3


def test_a_quick_sized_sweep_is_not_decided_on_its_short_range():
  rows = [row(p, w, 2, lr, 4.0 - 0.1 * (w == 64) + A * math.log2(lr / 6e-3) ** 2, 0, 20)
          for p in ('sp', 'completep') for w in (32, 64) for lr in (2.5e-3, 5e-3, 1e-2)]
  an = tr.analyse(rows, draws=50)
  moves = by_name(an, 'width: optimum moves', 'completep')
  assert moves['verdict'] == tr.UNDECIDED and 'span 2x, under the 8x asked' in moves['reason']
  assert an['families']['depth'] is None and '## Depth arm' in tr.render(an, n_rows=12, results_name='r', png=None)


def test_is_transfer():
  rows = make_rows(good_opt, better_l0, pars=('sp', 'completep'))
  assert tr.is_transfer(rows)
  lr_transfer = [dict(r, name='lr_transfer') for r in make_rows(good_opt, better_l0, pars=('sp', 'mup'))
                 if r['overrides']['model.num_layers'] == 2]
  assert not tr.is_transfer(lr_transfer)                   # lr_report's sweep stays lr_report's
  assert tr.is_transfer([dict(r, name='x') for r in rows])  # completep among several parametrizations


def test_report_files_through_scaling_report(tmp_path):
  from scaling.analysis import report
  rows = make_rows(good_opt, better_l0, sigma=0.004, seed=6)
  (tmp_path / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  path = report.write_report(str(tmp_path))
  text = (tmp_path / 'REPORT.md').read_text()
  assert path == str(tmp_path / 'REPORT.md') and text.startswith('# Learning-rate transfer across width and depth')
  assert '## Width arm (depth 2)' in text and '## Depth arm (width 64)' in text
  data = json.loads((tmp_path / 'transfer.json').read_text())
  assert {c['verdict'] for c in data['checks']} <= {tr.PASS, tr.FAIL, tr.UNDECIDED}
  assert data['curves']['completep/w256/d2/s1500']['lr'] == pytest.approx(6e-3, rel=0.2)
  assert (tmp_path / 'transfer.png').stat().st_size > 10_000
