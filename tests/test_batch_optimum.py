"""The batch study's analysis of arms (b) and (c) (scaling/analysis/batch_opt.py, batch_ramp.py, batch_report.py).

Checked against truth built into synthetic studies (a known B_opt(D) law under seed noise; a ramp whose steps to a
loss are known from its batch schedule) and against hand computation; numpy only, except one report end to end.
"""

import math

import numpy as np
import pytest

from scaling.analysis import batch_opt, batch_ramp

SEQ = 256
SIZES = (2e5, 7e5, 1.5e6)          # N; D_MAX = 20 N, budgets 1/4, 1/2, 1 of it
FRACS = (0.25, 0.5, 1.0)
LR_MULTS = (0.5, 1.0, 2.0)


def synthetic_rows(rng, *, b=0.4, k_tokens=None, g=0.0, noise=0.003, batches=(4, 8, 16, 32, 64, 128, 256),
                   sizes=SIZES, curvature=0.02, lr_curvature=0.01):
  """A grid study whose true B_opt (tokens) = k D^b (N / 1e6)^g: loss = L0(D) + curvature (log2 B - log2 B_opt)^2 +
  lr_curvature (log2 lr multiple)^2 + N(0, noise). k puts B_opt at 12 sequences at D = 1e6 unless given."""
  k = k_tokens if k_tokens is not None else 12 * SEQ / 1e6 ** b
  rows = []
  for n in sizes:
    for f in FRACS:
      d = f * 20 * n
      b_opt = k * d ** b * (n / 1e6) ** g / SEQ
      for bt in batches:
        for m in LR_MULTS:
          loss = (2 + 5 * d ** -0.2 + curvature * (math.log2(bt) - math.log2(b_opt)) ** 2
                  + lr_curvature * math.log2(m) ** 2 + rng.normal(0, noise))
          rows.append({'name': 'batch-grid', 'state': 'done', 'params': n, 'tokens': d * (1 + 1e-3 * math.log2(bt)),
                       'flops': 6 * n * d, 'eval/loss': loss,
                       'overrides': {'model.d_model': int(n // 1e4), 'train.batch_size': bt, 'train.lr': 1e-3 * m,
                                     'model.seq_len': SEQ}})
  return rows


# ----------------------------------------------------------------------------- (b): the vertex
def test_three_point_vertex_by_hand():
  """x = 3, 4, 5 and y = 1.0, 0.9, 0.95: the parabola's vertex, from np.polyfit as the reference, is 4 + 1/6."""
  x = np.array([3.0, 4.0, 5.0])
  y = np.array([1.0, 0.9, 0.95])
  c2, c1, _ = np.polyfit(x, y, 2)
  v, side = batch_opt.vertices(x, y[None], 'three')
  assert side[0] == 0 and v[0] == pytest.approx(-c1 / (2 * c2)) and v[0] == pytest.approx(4 + 1 / 6)
  # four points, the minimum at the 3rd: the parabola through points 2-4 only
  x4, y4 = np.array([3.0, 4.0, 5.0, 6.0]), np.array([1.2, 1.0, 0.9, 0.95])
  v4, _ = batch_opt.vertices(x4, y4[None], 'three')
  assert v4[0] == pytest.approx(5 + 1 / 6)
  # least squares over all four: the vertex of np.polyfit's parabola
  c2, c1, _ = np.polyfit(x4, y4, 2)
  va, sa = batch_opt.vertices(x4, y4[None], 'all')
  assert sa[0] == 0 and va[0] == pytest.approx(-c1 / (2 * c2))


def test_edge_minima_are_not_bracketed():
  x = np.log2([8.0, 16, 32, 64])
  v, side = batch_opt.vertices(x, np.array([[1.0, 1.1, 1.2, 1.3], [1.3, 1.2, 1.1, 1.0], [1.2, 1.0, 1.1, 1.3]]))
  assert side.tolist() == [-1, 1, 0] and np.isnan(v[:2]).all() and np.isfinite(v[2])


def test_an_optimum_below_the_grid_is_reported_as_a_bound_not_a_number():
  """True B_opt at 2-3 sequences on a grid of 8..64: every cell of the smallest size is at the lower edge."""
  rows = synthetic_rows(np.random.default_rng(0), batches=(8, 16, 32, 64), k_tokens=2.5 * SEQ / 1e6 ** 0.4,
                        sizes=(2e5,))
  res = batch_opt.study(rows, draws=300)
  for c in res['cells']:
    assert not c['bracketed'] and c['side'] == -1 and c['b_opt'] is None
    assert c['interval'][0] == 0.0          # an open lower end: '<8'
  assert res['per_size'][2e5] is None and res['pooled'] is None


def test_linear_draws_count_open_cells_in_their_direction():
  """w = (1, -1): an open cell pulls w.y by sign(side x w); both ways -> undetermined (nan)."""
  y = np.array([[1.0, 2.0], [np.inf, 0.0], [0.0, -np.inf], [np.inf, np.inf], [-np.inf, 5.0]])
  point, vals = batch_opt.linear_draws(np.array([1.0, -1.0]), np.array([1.0, 1.5]), y)
  assert point == -0.5
  assert vals[0] == -1 and vals[1] == np.inf and vals[2] == np.inf and np.isnan(vals[3]) and vals[4] == -np.inf
  lo, hi = batch_opt.interval(np.array([0.0, 1.0, np.nan]), level=0.9)
  assert lo == -np.inf and hi == np.inf


# ----------------------------------------------------------------------------- (b): calibration
def test_the_exponent_interval_covers_the_true_exponent(capsys):
  """50 synthetic studies (3 sizes x 3 budgets x 7 batches x 3 lrs, seed noise 0.003 known to the fit): the pooled
  90% interval of b holds the true 0.4 in most; the estimates centre on it."""
  hits, est = 0, []
  for s in range(50):
    res = batch_opt.study(synthetic_rows(np.random.default_rng(100 + s)), noise=0.003, draws=300, seed=s)
    b = res['pooled']['b']
    hits += b['interval'][0] <= 0.4 <= b['interval'][1]
    est.append(b['value'])
  with capsys.disabled():
    print(f'\nB_opt(D) exponent: 90% interval coverage {hits}/50, mean estimate {np.mean(est):.3f} (true 0.4)')
  assert 0.72 <= hits / 50 <= 1.0
  assert abs(np.mean(est) - 0.4) < 0.03


def test_the_size_test_finds_a_dependence_on_n_and_none_when_there_is_none():
  """g = 0.5 (B_opt grows with N at equal D): the joint fit's g interval excludes 0 and holds 0.5; g = 0: the
  interval holds 0. Power Lines' claim (no N dependence) is the g = 0 case."""
  dep = batch_opt.study(synthetic_rows(np.random.default_rng(1), g=0.5, noise=0.001), noise=0.001, draws=400)
  st = dep['size_test']
  assert st['depends_on_N'] and st['g']['interval'][0] <= 0.5 <= st['g']['interval'][1] and st['p_value'] < 0.1
  none = batch_opt.study(synthetic_rows(np.random.default_rng(2), noise=0.001), noise=0.001, draws=400)
  assert none['size_test']['g']['interval'][0] <= 0 <= none['size_test']['g']['interval'][1]
  assert not none['size_test']['depends_on_N']


def test_seed_repeats_set_the_noise_floor():
  """Two seeds of every cell whose losses differ by +-d: the pooled SD is d sqrt(2) (each pair's SD)."""
  rows = synthetic_rows(np.random.default_rng(3), noise=0.0, sizes=(2e5,), batches=(8, 16, 32))
  twins = []
  for r in rows:
    for s, sign in ((0, 1), (1, -1)):
      twins.append({**r, 'eval/loss': r['eval/loss'] + sign * 0.002,
                    'overrides': {**r['overrides'], 'train.seed': s}})
  grid = batch_opt.grid_rows(twins)
  got = batch_opt.noise_of(grid, None)
  assert got['value'] == pytest.approx(0.002 * math.sqrt(2)) and 'seed repeats' in got['source']
  assert 'assumed' in batch_opt.noise_of(batch_opt.grid_rows(rows), None)['source']


def test_implications_compare_the_fixed_batch_with_the_law():
  res = batch_opt.study(synthetic_rows(np.random.default_rng(4), noise=0.001), noise=0.001, draws=300)
  got = batch_opt.implications(res, [{'budget': 4e12, 'tokens': 1.1e6}, {'budget': 1.2e14, 'tokens': 3e7}], 2048)
  # truth: 12 x 256 x 1.1^0.4 tokens at D = 1.1e6, (3e7 / 1e6)^0.4 = 3.9x 12 x 256 at 3e7; DeepSeek at C by hand
  assert got[0]['b_opt'] == pytest.approx(12 * 256 * 1.1 ** 0.4, rel=0.1)
  assert got[1]['b_opt'] == pytest.approx(12 * 256 * 30 ** 0.4, rel=0.1)
  assert got[0]['verdict'] == 'fixed below B_opt' and not got[0]['extrapolated']
  assert got[0]['deepseek'] == pytest.approx(0.292 * 4e12 ** 0.327)


# ----------------------------------------------------------------------------- (c): the ramp
def test_crossing_and_interpolation_by_hand():
  assert batch_ramp.first_crossing(np.array([0.0, 10, 20]), np.array([3.0, 2, 1]), 1.5) == 15.0
  assert batch_ramp.first_crossing(np.array([0.0, 10, 20]), np.array([3.0, 2, 1]), 0.5) == math.inf
  rows = [{'step': s, 'train/loss': 3.0 - s / 100, 'tokens_seen': s * 2048, 'throughput/step_s': dt}
          for s, dt in ((10, 0.1), (20, 0.1), (30, 0.2))]
  c = batch_ramp.curve_from_rows(rows)
  assert c.wall.tolist() == pytest.approx([1.0, 2.0, 4.0])      # 10 x 0.1, + 10 x 0.1, + 10 x 0.2
  assert batch_ramp.at_step(c, 25, 'wall') == pytest.approx(3.0)
  assert batch_ramp.at_step(c, 25, 'tokens') == pytest.approx(25 * 2048)


def test_local_linear_returns_a_line_unchanged_to_its_ends():
  x = np.linspace(0, 10, 41)
  np.testing.assert_allclose(batch_ramp.local_linear(x, 2 - 0.3 * x, 1.0), 2 - 0.3 * x, atol=1e-9)


def _curve(name, steps, batch_of, noise, rng, step_s):
  """Loss against tokens 2 + 3 (t / 1e4)^-0.5, the same for both runs (a batch below the critical one costs no
  tokens); tokens from each step's batch."""
  b = np.array([batch_of(s) for s in range(1, steps + 1)], float)
  tok = np.cumsum(b * SEQ)
  idx = np.arange(19, steps, 20)
  loss = 2 + 3 * (tok[idx] / 1e4) ** -0.5 + rng.normal(0, noise, len(idx)) * np.sqrt(8 / b[idx])
  return batch_ramp.Curve(name, idx + 1.0, tok[idx], loss, np.cumsum(step_s * b[idx] / 8 * 20), b[idx])


def test_a_known_step_saving_is_recovered(capsys):
  """Fixed: batch 8 for 2000 steps (D = 4.1M tokens). Ramp: batch 8 to 0.2 D, then 32, run on to 1.6 D. The ramp
  reaches the fixed run's final loss at D: 400 + 0.8 D / (32 x 256) = 800 steps, 60% fewer, at the same tokens;
  training wall (step_s 0.1 at batch 8, x4 at batch 32): 40 + 400 x 0.4 = 200 s against 200 s. Over 8 noise draws:
  the estimates centre on 60%, the 90% intervals hold it in most, the goal is met in every one."""
  d = 2000 * 8 * SEQ
  hits, est, toks, walls = 0, [], [], []
  for seed in range(8):
    rng = np.random.default_rng(50 + seed)
    fixed = _curve('fixed', 2000, lambda s: 8, 0.005, rng, 0.1)
    ramp = _curve('ramp', int(400 + 1.4 * d / (32 * SEQ)), lambda s: 8 if s <= 400 else 32, 0.005, rng, 0.1)
    got = batch_ramp.compare(fixed, ramp, draws=100, seed=seed)
    lo, hi = got['interval']
    hits += lo <= 0.6 <= hi
    est.append(got['fewer_steps'])
    assert got['verdict'] == 'met' and lo >= 0.25
    toks.append(got['ratios']['tokens'])
    walls.append(got['ratios']['wall_s'])
  with capsys.disabled():
    print(f'\nramp: % fewer steps {np.mean(est):.3f} (true 0.6), 90% interval coverage {hits}/8')
  assert abs(np.mean(est) - 0.6) < 0.02 and hits >= 5
  assert abs(np.mean(toks) - 1) < 0.05 and abs(np.mean(walls) - 1) < 0.05   # one step of 8192 tokens is 0.2% of D
  # the same schedule as the fixed run, run longer: no saving, the goal not met
  same = _curve('same', 3200, lambda s: 8, 0.005, np.random.default_rng(7), 0.1)
  none = batch_ramp.compare(fixed, same, draws=100)
  assert none['fewer_steps'] == pytest.approx(0.0, abs=0.05) and none['verdict'] == 'not met'


def test_the_goal_verdict_by_hand():
  assert [batch_ramp.verdict(lo, hi, 0.25) for lo, hi in ((0.3, 0.5), (0.1, 0.2), (0.2, 0.3), (-math.inf, 0.3))] == \
      ['met', 'not met', 'not decided', 'not decided']


def test_a_ramp_that_never_reaches_the_target_counts_as_an_open_end():
  rng = np.random.default_rng(6)
  fixed = _curve('fixed', 2000, lambda s: 8, 0.005, rng, 0.1)
  short = _curve('short', 400, lambda s: 8 if s <= 200 else 32, 0.005, rng, 0.1)   # 2.0M tokens of 4.1M
  got = batch_ramp.compare(fixed, short, draws=100)
  assert got['fewer_steps'] == -math.inf and got['interval'][0] == -math.inf and got['verdict'] == 'not met'
  assert got['reached_share'] == 0.0


def test_budgets_of_one_parent_share_their_noise_in_the_correlated_draws():
  """Two budgets of one size whose (batch, lr) tables are identical (same losses, D x2): with an arm's noise shared
  by both budgets (fully correlated) every draw gives both cells the same vertex, so the slope b = 0 exactly in
  every draw; with independent noise it spreads. The reported interval is the envelope of the two."""
  rows = [r for r in synthetic_rows(np.random.default_rng(5), noise=0.0, sizes=(7e5,)) if r['tokens'] < 8e6]
  first = {json_key(r): r['eval/loss'] for r in rows if r['tokens'] < 5e6}
  for r in rows:                                   # the second budget (D = 7e6) gets the first's losses
    if r['tokens'] >= 5e6:
      r['eval/loss'] = first[json_key(r)]
  res = batch_opt.study(rows, noise=0.003, draws=400)
  a, b = res['cells']
  assert a['bracketed'] and b['bracketed'] and a['log2_b_opt'] == pytest.approx(b['log2_b_opt'])
  assert np.array_equal(a['draws_corr'], b['draws_corr']) and not np.array_equal(a['draws'], b['draws'])
  slope = res['per_size'][7e5]['b']
  assert slope['value'] == pytest.approx(0.0, abs=1e-9)
  assert slope['correlated'] == [0.0, 0.0] or np.allclose(slope['correlated'], 0.0)
  lo, hi = slope['independent']
  assert lo < -0.05 and hi > 0.05 and slope['interval'] == [lo, hi]


def json_key(r):
  return (r['overrides']['train.batch_size'], r['overrides']['train.lr'])
