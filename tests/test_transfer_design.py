"""configs/sweeps/transfer.py (issue #36): the design keeps the promises its docstring makes.

Checked from the sweep rows themselves (what `scaling sweep` trains): the model arithmetic by
scaling.model.accounting and scaling.model.parametrization on each row's own resolved config, the packing by the
launcher's own grouping, the corpus size from isoflop_v2's measured figure, and the wall-time estimate recomputed
here from the rows and the constants the docstring states.
"""

import collections
import importlib.util
import math
import pathlib
import re

import pytest

from scaling.config.load import fill_vocab
from scaling.config.pack import pack_key
from scaling.model import parametrization as P
from scaling.model.accounting import flops_per_token

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARS = {'sp', 'mup', 'completep'}


def _load(name, path):
  spec = importlib.util.spec_from_file_location(name, ROOT / path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope='module')
def tr():
  return _load('transfer_design', 'configs/sweeps/transfer.py')


@pytest.fixture(scope='module')
def rows(tr):
  return tr.get_sweep()


def _model(tr, row):
  from configs.sweeps._common import resolved
  keys = {k: v for k, v in row.items() if k.startswith(('model.', 'data.'))}
  return fill_vocab(resolved(tr.get_config(), keys)).model


def _curves(rows, steps=None):
  """(par, width, depth, seed) -> sorted lrs."""
  out = collections.defaultdict(list)
  for r in rows:
    if steps is None or r['train.steps'] == steps:
      out[(r['model.parametrization'], r['model.d_model'], r['model.num_layers'], r['train.seed'])].append(r['train.lr'])
  return {k: sorted(v) for k, v in out.items()}


def _spaced_2x(lrs):
  return all(abs(b / a - 2.0) < 1e-9 for a, b in zip(lrs, lrs[1:]))


def test_width_arm_spans_8x_with_4_widths_6_lrs_and_every_parametrization(tr, rows):
  cv = _curves(rows, tr.STEPS)
  for par in PARS:
    widths = sorted({w for (p, w, d, s) in cv if p == par and d == tr.WIDTH_ARM_DEPTH and s == 0})
    assert len(widths) >= 4 and widths[-1] / widths[0] >= 8
    for w in widths:
      lrs = cv[(par, w, tr.WIDTH_ARM_DEPTH, 0)]
      assert len(lrs) >= 6 and _spaced_2x(lrs)


def test_depth_arm_spans_4x_with_3_depths_6_lrs(tr, rows):
  cv = _curves(rows, tr.STEPS)
  for par in PARS:
    depths = sorted({d for (p, w, d, s) in cv if p == par and w == tr.DEPTH_ARM_WIDTH and s == 0})
    assert len(depths) >= 3 and depths[-1] / depths[0] >= 4
    for d in depths:
      assert len(cv[(par, tr.DEPTH_ARM_WIDTH, d, 0)]) >= 6


def test_two_seeds_of_every_lr_at_the_centre_shapes(tr, rows):
  cv = _curves(rows, tr.STEPS)
  for par in PARS:
    for shape in ((tr.CENTRE_WIDTH, tr.WIDTH_ARM_DEPTH), (tr.DEPTH_ARM_WIDTH, tr.CENTRE_DEPTH)):
      assert cv[(par, *shape, 0)] == cv[(par, *shape, 1)]
  widths = sorted({w for (p, w, d, s) in cv if d == tr.WIDTH_ARM_DEPTH})
  assert widths[0] < tr.CENTRE_WIDTH < widths[-1]          # the centre is inside the range, not an end
  assert {s for (*_, s) in cv} == {0, 1}


def test_base_shape_makes_every_parametrization_the_same_model(tr, rows):
  """At (BASE_WIDTH, BASE_DEPTH) every multiplier is 1 for all three; elsewhere m and d follow that base."""
  shapes = {(r['model.d_model'], r['model.num_layers'], r['model.parametrization']): r for r in rows}
  seen = set()
  for r in shapes.values():
    m = _model(tr, r)
    seen.add((m.d_model, m.num_layers, m.parametrization))
    if (m.d_model, m.num_layers) == (tr.BASE_WIDTH, tr.BASE_DEPTH):
      assert all(v == P.ONE for v in P.multipliers(m).values())
      assert P.output_multiplier(m) == P.residual_multiplier(m) == P.attention_logit_multiplier(m) == 1.0
    elif m.parametrization != 'sp':
      assert P.width_mult(m) == m.d_model / 32
      assert P.attention_logit_multiplier(m) == 1.0              # head dim fixed: μP's attention factor 1
      if m.parametrization == 'completep':
        assert P.depth_mult(m) == m.num_layers / 2
  assert {(32, 2, p) for p in PARS} <= seen                     # the base shape is trained under all three


def test_one_shape_family_prose_bpe1024_untied(tr, rows):
  for r in rows[:: max(len(rows) // 20, 1)]:
    m = _model(tr, r)
    assert m.head_dim == 16 and m.num_heads * 16 == m.d_model and m.num_kv_heads == m.num_heads
    assert m.d_ff == 3 * m.d_model and not m.tied_embeddings
    assert (r['data.corpus'], r['data.vocab_size']) == ('prose', 1024)


def test_every_run_under_one_epoch(tr, rows, monkeypatch):
  v2 = _load('isoflop_v2_for_transfer', 'configs/sweeps/isoflop_v2.py')
  train_tokens = v2.CORPUS_TOKENS * (1 - v2.VAL_FRACTION)        # measured there: 63.1M at BPE-1024, 5% held out
  monkeypatch.setattr(tr, 'HORIZON_LR', 5e-3)
  for r in tr.get_sweep():
    assert r['train.steps'] * r['train.batch_size'] * r['model.seq_len'] < train_tokens


def test_precheck_first_then_horizon_at_4x_with_half_and_double(tr, rows, monkeypatch):
  pre = tr.get_sweep('precheck')
  assert {r['model.parametrization'] for r in pre} == {'sp'}
  assert [tuple(sorted(r.items())) for r in rows[:len(pre)]] == [tuple(sorted(r.items())) for r in pre]
  assert not [r for r in rows if r['name'] != 'transfer']      # no horizon before HORIZON_LR is set
  with pytest.raises(ValueError, match='HORIZON_LR'):
    tr.get_sweep('horizon')
  monkeypatch.setattr(tr, 'HORIZON_LR', 6.1e-3)
  hz = [r for r in tr.get_sweep() if r['name'] == 'transfer-horizon']
  assert hz and {r['train.steps'] for r in hz} == {4 * tr.STEPS}
  for par in tr.HORIZON_PARAMETRIZATIONS:
    lrs = sorted(r['train.lr'] for r in hz if r['model.parametrization'] == par)
    assert lrs == pytest.approx([2.5e-3, 5e-3, 1e-2])   # 6.1e-3's nearest rung of 1.25e-3 x 2^k is 5e-3; x0.5, x2


def test_quick_arm(tr):
  q = tr.get_sweep('quick')
  assert {r['train.steps'] for r in q} == {20}
  assert len({r['model.d_model'] for r in q}) == 2
  assert all(len(v) == 3 for v in _curves(q).values())


def test_a_curves_lrs_differ_only_in_packable_fields(tr, rows):
  from configs.sweeps._common import resolved
  cv = [r for r in rows if (r['model.parametrization'], r['model.d_model'], r['train.seed']) == ('mup', 64, 1)
        and r['model.num_layers'] == 2]
  keys = {pack_key(resolved(tr.get_config(), r)) for r in cv}
  assert len(cv) == 6 and len(keys) == 1


def test_the_launcher_packs_the_precheck_as_the_plan_counts(tr):
  from scaling.launch import packing
  from scaling.launch.sweep import load_sweep
  sweep = load_sweep(str(ROOT / 'configs/sweeps/transfer.py:precheck'))
  units = packing.group_runs(sweep.runs, tr.get_resources(), host_bytes=None)
  assert len(units) == tr.cost(tr.get_sweep('precheck'))['processes'] == 6


def _recomputed_wall(tr, runs):
  """Independent: group the rows by everything but the lr, split each group into processes of at most
  pack_max_members, and price each as 40 s + tokens / (rate x packing efficiency), rate = 1 / (5e-6 + fpt / 1.1e11)."""
  groups = collections.defaultdict(list)
  for r in runs:
    groups[tuple(sorted((k, str(v)) for k, v in r.items() if k != 'train.lr'))].append(r)
  k_max = tr.get_resources()['pack_max_members']
  total, procs = 0.0, 0
  for g in groups.values():
    fpt = flops_per_token(_model(tr, g[0]))
    rate = 1.0 / (5e-6 + fpt / 1.1e11)
    n = len(g)
    while n:
      k = min(k_max, n)
      eff = 0.74 if k > 1 and fpt > 2e6 else 1.0
      total += 40.0 + k * g[0]['train.steps'] * 8 * 256 / (rate * eff)
      procs, n = procs + 1, n - k
  return total, procs


def test_estimate_arithmetic_and_the_docstring_hours(tr, monkeypatch):
  monkeypatch.setattr(tr, 'HORIZON_LR', tr.PRIOR_LR)     # the plan prices the horizon at the prior
  runs = tr.get_sweep()
  c = tr.cost(runs)
  wall, procs = _recomputed_wall(tr, runs)
  assert c['processes'] == procs and c['wall_s'] == pytest.approx(wall, rel=1e-9)
  assert c['wall_parallel_s'] == pytest.approx(wall / 1.15, rel=1e-9)
  doc = ' '.join(tr.__doc__.split())
  serial, parallel = map(float, re.search(r'estimated ([\d.]+) h one process at a time, ([\d.]+) h with', doc).groups())
  assert serial == pytest.approx(wall / 3600, abs=0.006) and parallel == pytest.approx(wall / 1.15 / 3600, abs=0.006)
  assert f'{c["runs"]} runs in {procs} packed processes' in doc
  pre_wall, _ = _recomputed_wall(tr, tr.get_sweep('precheck'))
  assert f'pre-check {pre_wall / 3600:.2f} h / {pre_wall / 1.15 / 3600:.2f} h' in doc
  assert math.isclose(tr.tokens_per_s(1e7), 1 / (5e-6 + 1e7 / 1.1e11))
