"""The optimizer-scaling study (issue #36): the design of configs/sweeps/optimizers.py checked against hand arithmetic,
and scaling/analysis/optimizers.py on synthetic rows drawn from known laws with a known multiplier. No training."""

import math
import pathlib

import numpy as np
import pytest

from scaling.analysis import optimizers as an
from scaling.config.load import load_module

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def design():
  return load_module(REPO / 'configs' / 'sweeps' / 'optimizers.py')


# ----------------------------------------------------------------------------- the design
def _hand_size(width: int) -> tuple[float, float]:
  """(N total, training FLOPs per token) of the family at `width` by hand: 3 layers, full MHA, SwiGLU with
  d_ff = 8 round(d / 3), tied embeddings, RMSNorm, vocab 1024, context 256 (causal: (T + 1) / 2 keys per query)."""
  V, L, D, T = 1024, 3, width, 256
  F = 8 * round(D / 3)
  per_layer = 4 * D * D + 3 * D * F
  n = V * D + L * (per_layer + 2 * D) + D
  fpt = 6 * (L * per_layer + V * D) + 12 * L * D * (T + 1) / 2
  return n, fpt


def test_sizes_tokens_and_epochs(design):
  sizes = design.study_sizes()
  ns = [s['N'] for s in sizes]
  assert 3 <= len(sizes) <= 4 and ns == sorted(ns) and ns[-1] / ns[0] >= 10
  for s in sizes:
    n, fpt = _hand_size(s['width'])
    assert s['N'] == n and s['flops_per_token'] == pytest.approx(fpt, rel=1e-12)
    assert abs(s['tokens'] / n - 20) < 2048 / n                     # 20 tokens/param, to one step
    assert 2 * s['tokens'] <= 0.85 * 0.95 * 63.1e6                  # the 2x branch: under one epoch, with margin
    assert 0.5 * s['tokens'] / 2048 >= 250                          # the shortest branch is past the transient


@pytest.mark.parametrize('opt', ['adamw', 'muon'])
def test_lr_grids_bracket_the_centre(design, opt):
  for s in design.study_sizes():
    lrs = [design.lr_of(opt, s, m) for m in design.arms(opt, s['width'])]
    c = design.centre(opt, s)
    assert len(lrs) >= 5 and min(lrs) <= c / 2 * 1.01 and max(lrs) >= 2 * c * 0.99 and c in lrs
  s = design.size(32)   # the AdamW rule at width 32 and 690 reference steps: 7.24e-3 x (690/1000)^-0.125
  assert design.adamw_centre(s) == pytest.approx(7.24e-3 * (690 / 1000) ** -0.125, rel=5e-3)


def _study_rows(design, monkeypatch):
  monkeypatch.setattr(design, 'MUON_ADAM_SIDE', 'shared')
  return design.get_sweep()


def test_study_refuses_without_the_adam_side_field(design):
  if design.adam_side_supported():
    rows = design.get_sweep()
    muon = [r for r in rows if r.get('train.optimizer') == 'muon']
    assert all(r[design.ADAM_SIDE_LR_KEY] == design.adamw_centre(design.size(r['model.d_model'])) for r in muon)
  else:
    with pytest.raises(ValueError, match=design.ADAM_SIDE_LR_KEY):
      design.get_sweep()


def test_cost_recomputed_from_the_runs(design, monkeypatch):
  """Tokens and FLOPs trained counted from the sweep's own rows (a parent trains its steps, a branch its decay),
  with FLOPs per token by hand; runs and processes (a parent group and one group per fork step per optimizer and
  seed) counted from the rows."""
  rows = _study_rows(design, monkeypatch)
  tokens = flops = 0.0
  procs = set()
  for r in rows:
    own = r['train.decay_steps'] if 'branch_of' in r else r['train.steps']
    tokens += own * 2048
    flops += own * 2048 * _hand_size(r['model.d_model'])[1]
    key = (r['model.d_model'], r['train.optimizer'], r.get('train.seed', 0))
    procs.add(key + ((r['branch_of']['step'],) if 'branch_of' in r else ('parent',)))
    assert r['model.seq_len'] * r['train.batch_size'] == 2048
  c = design.cost(design.study_sizes())
  assert c['runs'] == len(rows) and c['processes'] == len(procs)
  assert c['tokens'] == pytest.approx(tokens, rel=1e-12) and c['flops'] == pytest.approx(flops, rel=1e-9)
  assert c['wall2_s'] >= c['wall_s'] / 1.6 and c['wall2_s'] < 8 * 3600   # affordable: under 8 h at 2 at once
  # every optimizer's arms of one size branch at the same steps (they pack); seeds: 2 per optimizer and size
  for w in design.WIDTHS:
    for opt in ('adamw', 'muon'):
      seeds = {r.get('train.seed', 0) for r in rows if r['model.d_model'] == w and r['train.optimizer'] == opt}
      assert seeds == {0, 1}


def test_steptime_and_quick_arms(design):
  st = design.get_sweep('steptime')
  assert len(st) == 2 * design.STEPTIME_REPEATS * len(design.WIDTHS)
  for a, b in zip(st[::2], st[1::2]):   # adjacent pairs: one shape, both optimizers, same steps and seed
    assert {a['train.optimizer'], b['train.optimizer']} == {'adamw', 'muon'}
    assert a['model.d_model'] == b['model.d_model'] and a['train.steps'] == b['train.steps'] >= 200
    assert a['train.seed'] == b['train.seed']
  assert design.get_resources('steptime')['pack_max_members'] == 1
  quick = design.get_sweep('quick')
  assert {r['model.d_model'] for r in quick} == set(design.QUICK_WIDTHS)
  assert max(r['train.steps'] for r in quick) <= 2 * design.QUICK_STEPS


# ----------------------------------------------------------------------------- the analysis, on known laws
E0, A0, ALPHA, CURV = 2.0, 1.5, 0.35, 0.05   # L = E + A (C / C_N)^-alpha + CURV (ln lr/lr*)^2


def synthetic(ns=(7e4, 1.5e5, 3e5, 7e5), m_true=lambda n: 1.3, sd=0.0, rng=None, tps_ratio=1.2,
              adamw_fracs=(0.5, 0.7, 1.0, 1.4, 2.0), muon_fracs=(0.5, 1.0)):
  """Rows of a study whose Muon curve is AdamW's at compute x m_true(N): each optimizer's best lr on its grid,
  both seeds at the centre lr (seed 1 only at 0.5x and 1x), noise N(0, sd) per row, and step-time rows."""
  rng = rng or np.random.default_rng(0)
  rows = []
  for w, n in zip((32, 48, 80, 128), ns):
    fpt, tok = 6 * n, 20 * n
    c_ref = fpt * tok
    e_n = E0 + 3e4 / n            # a larger model reaches a lower loss

    def law(c, lr, opt, lr_star):
      cc = c * (m_true(n) if opt == 'muon' else 1.0)
      return e_n + A0 * (cc / c_ref) ** -ALPHA + CURV * math.log(lr / lr_star) ** 2

    for opt, lr_star, fracs in (('adamw', 4e-3, adamw_fracs), ('muon', 1e-2, muon_fracs)):
      for k in range(-2, 3):
        lr = lr_star * 2 ** (k / 2)
        for seed in ((0, 1) if k == 0 else (0,)):
          for f in fracs:
            if seed == 1 and f not in (0.5, 1.0):
              continue
            rows.append({'name': an.NAME, 'state': 'done', 'params': n, 'tokens': f * tok, 'flops': f * c_ref,
                         'eval/loss': law(f * c_ref, lr, opt, lr_star) + sd * rng.standard_normal(),
                         'overrides': {'model.d_model': w, 'train.optimizer': opt, 'train.lr': lr,
                                       'train.seed': seed}})
      for rep in range(3):
        tps = 1e5 / n * 1e3 * (1.0 if opt == 'adamw' else 1 / tps_ratio) * (1 + 0.01 * (rep - 1))
        rows.append({'name': an.STEPTIME_NAME, 'state': 'done', 'tokens': 1e6, 'flops': 1e6 * fpt,
                     'throughput/tokens_per_s': tps, 'overrides': {'model.d_model': w, 'train.optimizer': opt}})
  return rows


def test_pieces_by_hand():
  # the parabola through (ln lr, L) = (-1, 2), (0, 1), (1, 2): vertex at 0, value 1; through (-1, 3), (0, 1.25),
  # (1, 1.5): L = x^2 - 0.75 x + 1.25, vertex at x = 0.375, value 1.25 - 0.75^2 / 4 = 1.109375
  lrs = np.exp([-1.0, 0.0, 1.0])
  val, x, edge = an.tuned(np.array([2.0, 1.0, 2.0]), lrs, 'parabola')
  assert val == pytest.approx(1.0) and x == pytest.approx(0.0) and not edge
  val, x, edge = an.tuned(np.array([3.0, 1.25, 1.5]), lrs, 'parabola')
  assert x == pytest.approx(0.375) and val == pytest.approx(1.109375) and not edge
  val, x, edge = an.tuned(np.array([4.25, 2.25, 1.25]), lrs, 'parabola')
  assert edge and val == 1.25   # the lowest loss at the grid's end: flagged, the end arm's loss kept
  assert np.allclose(an.decreasing_fit(np.array([3.0, 2.0, 2.2]))[0], [3.0, 2.1, 2.1])
  logc = np.array([0.0, 1.0, 2.0])
  assert an.invert(logc, np.array([3.0, 2.0, 1.5]), np.array([1.75]), 'monotone')[0] == pytest.approx(1.5)
  assert an.invert(logc, np.array([3.0, 2.0, 1.5]), np.array([1.0]), 'monotone')[0] == np.inf
  # an exact power law is recovered and inverted: L = 1 + 2 C^-0.5 reaches 2 at C = 4
  c = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
  al = an.ALPHAS[np.argmin(np.abs(an.ALPHAS - 0.5))]
  y = 1 + 2 * c ** -al
  assert math.exp(an.invert(np.log(c), y, np.array([2.0]), 'powerlaw')[0]) == pytest.approx(2 ** (1 / al), rel=1e-6)
  # seed noise: pair differences 0.01, -0.01, 0.02 -> sd = sqrt(mean(d^2) / 2) = 0.01
  rows = [{'name': an.NAME, 'state': 'done', 'tokens': t, 'eval/loss': 3.0 + d * s,
           'overrides': {'model.d_model': 32, 'train.optimizer': 'muon', 'train.lr': 1e-2, 'train.seed': s}}
          for t, d in ((1.0, 0.01), (2.0, -0.01), (3.0, 0.02)) for s in (0, 1)]
  nz = an.seed_noise(rows)
  assert nz['muon']['sd'] == pytest.approx(0.01) and nz['muon']['pairs'] == 3 and nz['adamw']['sd'] == nz['muon']['sd']


def test_known_multiplier_recovered_within_its_interval():
  rng = np.random.default_rng(1)
  res = an.study(synthetic(sd=0.003, rng=rng), draws=200, seed=2)
  assert res['noise']['adamw']['pairs'] == 8 and 0.0005 < res['noise']['adamw']['sd'] < 0.01
  for s in res['sizes']:
    p = s['reference']
    assert p['tokens_per_param'] == pytest.approx(20) and p['flag'] is None
    assert p['interval'][0] < 1.3 < p['interval'][1] and p['combined'][0] <= p['interval'][0]
    assert p['M'] == pytest.approx(1.3, rel=0.15)
    half = next(q for q in s['points'] if not q['reference'])   # Muon's 0.5x branch: its own multiplier, also 1.3
    assert half['combined'][0] < 1.3 < half['combined'][1]
  tr = res['trend']
  assert tr['combined'][0] < 0 < tr['combined'][1] and tr['verdict'] == 'not decided'
  for opt, star in (('adamw', 4e-3), ('muon', 1e-2)):   # the optimum recovered; no width dependence built in
    assert all(r['lr_opt'] == pytest.approx(star, rel=0.1) and not r['edge'] for r in res['lr'][opt]['sizes'])
  st = res['steptime']
  assert [s['ratio'] for s in st] == pytest.approx([1.2] * 4, rel=1e-6)
  assert all(s['interval'][0] <= 1.2 <= s['interval'][1] for s in st)
  for s in res['sizes']:
    assert s['reference']['M_per_wall'] == pytest.approx(s['reference']['M'] / 1.2)


def test_exact_law_gives_the_multiplier_with_no_noise():
  res = an.study(synthetic(sd=0.0), draws=20, noise=1e-9)
  for s in res['sizes']:
    for key, c in s['reference']['choices'].items():
      tol = 0.02 if key.endswith('powerlaw') else 0.06   # monotone: the chord of a convex curve in log C
      assert c['M'] == pytest.approx(1.3, rel=tol), key


def test_bounds_flagged_outside_adamws_curve():
  res = an.study(synthetic(m_true=lambda n: 3.0), draws=30, noise=1e-3)
  for s in res['sizes']:
    p = s['reference']
    assert p['flag'] == 'lower bound' and p['bound_value'] == pytest.approx(2.0)
    assert p['choices']['best/envelope/monotone']['M'] == pytest.approx(2.0)
  res = an.study(synthetic(m_true=lambda n: 0.3), draws=30, noise=1e-3)
  assert all(s['reference']['flag'] == 'upper bound' and s['reference']['bound_value'] == pytest.approx(0.5)
             for s in res['sizes'])
  assert 'lower bound' not in an.describe(res)


def test_shrinking_multiplier_is_detected():
  slope = -0.15
  res = an.study(synthetic(m_true=lambda n: 1.6 * (n / 7e4) ** slope, sd=0.001, rng=np.random.default_rng(3)),
                 draws=200, seed=4)
  tr = res['trend']
  assert tr['verdict'] == 'shrinks with scale' and tr['combined'][1] < 0
  assert tr['interval'][0] < slope < tr['interval'][1]


def test_report_writes_its_files(tmp_path):
  root = tmp_path / 'root'
  root.mkdir()
  rows = synthetic(sd=0.002)
  (root / 'results.jsonl').write_text(''.join(__import__('json').dumps(r) + '\n' for r in rows))
  assert an.main(['--root', str(root), '--out', str(tmp_path / 'out'), '--draws', '30']) == 0
  text = (tmp_path / 'out' / 'REPORT.md').read_text()
  assert 'Step time' in text and 'Slope of log M' in text
  doc = __import__('json').loads((tmp_path / 'out' / 'optimizers.json').read_text())
  assert len(doc['sizes']) == 4 and (tmp_path / 'out' / 'optimizers.png').stat().st_size > 1000
  assert an.main(['--root', str(tmp_path / 'nowhere')]) == 2
