"""configs/sweeps/isoflop_v2.py: the design keeps the promises its docstring makes.

Checked from the sweep rows themselves (what `scaling sweep` trains); the model arithmetic is recomputed here by
scaling.model.accounting on each row's own config, and the budgets from C = tokens x FLOPs per token.
"""

import importlib.util
import json
import math
import pathlib

import pytest

from scaling.config.load import fill_vocab
from scaling.config.pack import pack_key
from scaling.launch.sweep import BRANCH_KEY
from scaling.model.accounting import count_params, flops_per_token

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def v2():
  spec = importlib.util.spec_from_file_location('isoflop_v2_design', ROOT / 'configs/sweeps/isoflop_v2.py')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope='module')
def rows(v2):
  saved = v2.BETA2
  v2.BETA2 = 0.99
  try:
    return v2.get_sweep()
  finally:
    v2.BETA2 = saved


def _model(v2, row):
  from configs.sweeps._common import resolved
  keys = {k: v for k, v in row.items() if k.startswith(('model.', 'data.'))}
  return fill_vocab(resolved(v2.get_config(), keys)).model


def test_the_study_refuses_to_start_before_the_beta2_check(v2, monkeypatch):
  monkeypatch.setattr(v2, 'BETA2', None)
  with pytest.raises(ValueError, match='beta2 pre-check'):
    v2.get_sweep()


def test_one_shape_family(v2, rows):
  """Every model: 3 layers, head dim 16, as many KV heads as heads, d_ff / d_model within 2.6-2.8."""
  for r in rows:
    m = _model(v2, r)
    assert m.num_layers == 3
    assert m.d_model // m.num_heads == 16 and m.d_model % m.num_heads == 0
    assert m.num_kv_heads == m.num_heads
    assert 2.6 <= m.d_ff / m.d_model <= 2.8


def _points(v2, rows):
  """(budget, N) of every fit row (a branch or a from-scratch run named isoflop_v2), with its lr."""
  out = {}
  for r in rows:
    if r.get('name') != 'isoflop_v2':
      continue
    m = _model(v2, r)
    c = r['train.steps'] * r['train.batch_size'] * m.seq_len * flops_per_token(m)
    budget = min(v2.BUDGETS, key=lambda b: abs(math.log(c / b)))
    assert abs(c / budget - 1) < 0.01            # every run of a budget costs its budget
    out.setdefault((budget, count_params(m)['total']), []).append(r['train.lr'])
  return out


def test_six_sizes_per_budget_evenly_spread_and_three_arms_each(v2, rows):
  pts = _points(v2, rows)
  for b in v2.BUDGETS:
    sizes = sorted(n for (c, n) in pts if c == b)
    assert len(sizes) == 6
    ratios = [y / x for x, y in zip(sizes, sizes[1:])]
    assert all(1.2 < q < 1.9 for q in ratios)             # the width grid is coarse at the small end
    assert 1.3 < math.exp(sum(map(math.log, ratios)) / len(ratios)) < 1.6
    centre = v2.V1_KN * b ** v2.V1_A
    assert sizes[1] < centre < sizes[-2]                  # two sizes on each side of v1's optimum
  for lrs in pts.values():
    lrs = sorted(lrs)
    assert len(lrs) == 3
    assert lrs[1] / lrs[0] == pytest.approx(2, rel=0.01) and lrs[2] / lrs[1] == pytest.approx(2, rel=0.01)


def test_arms_pack_and_branches_fork_from_their_own_arm(v2, rows):
  from configs.sweeps._common import resolved
  parents = [r for r in rows if r.get('name') == 'isoflop_v2-parent']
  by_width = {}
  for r in parents:
    by_width.setdefault(r['model.d_model'], []).append(r)
  for width, ps in by_width.items():
    assert len(ps) == 3
    keys = {pack_key(resolved(v2.get_config(), p)) for p in ps}
    assert len(keys) == 1, f'the three arms of width {width} do not pack'
  for r in rows:
    if BRANCH_KEY in r:
      assert r[BRANCH_KEY]['parent']['train.lr'] == r['train.lr']
      assert r['train.decay_shape'] == '1-sqrt'
      assert r['train.decay_steps'] == max(round(0.2 * r['train.steps']), 1)


def test_noise_runs_are_seeds_of_two_central_sizes(rows):
  noise = [r for r in rows if r.get('name') == 'isoflop_v2-noise']
  assert len(noise) == 6
  assert sorted({r['model.d_model'] for r in noise}) == [64, 80]
  assert sorted(r['train.seed'] for r in noise) == [0, 0, 1, 1, 2, 2]


def test_every_run_reads_under_one_epoch_and_trains_at_least_250_steps(v2, rows):
  for r in rows:
    assert r['train.steps'] >= 250 or r.get('name') == 'isoflop_v2-parent'
    assert r['train.steps'] * r['train.batch_size'] * r['model.seq_len'] <= v2.MAX_TOKENS


def test_extend_adds_the_arm_beyond_the_winning_end(v2, tmp_path, monkeypatch):
  monkeypatch.setattr(v2, 'ARMS_FILE', str(tmp_path / 'arms.json'))
  results = tmp_path / 'results.jsonl'
  centre = {p['width']: p['centre_lr'] for p in v2.points()}
  rows = []
  for width, losses in ((64, (2.50, 2.52, 2.55)), (80, (2.49, 2.47, 2.48)), (96, (2.50, 2.49, 2.45))):
    for mult, loss in zip((0.5, 1.0, 2.0), losses):
      rows.append({'state': 'done', 'name': 'isoflop_v2', 'eval/bpb': loss,
                   'overrides': {'model.d_model': width, 'train.steps': 1000, 'train.lr': centre[width] * mult}})
  results.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  assert v2.extend(str(results)) == {'64': [0.25], '96': [4.0]}
  assert json.loads((tmp_path / 'arms.json').read_text()) == {'64': [0.25], '96': [4.0]}
  assert v2.extend(str(results)) == {}                     # applying the rule twice adds nothing


def test_beta2_choice_follows_its_rule(v2, tmp_path):
  rows = []
  # 0.99 is best at both widths (by 1.0% and 0.55%): the winner, the sizes agree, 0.55% is within 2 x 0.49%
  for w, bpbs in ((64, {0.95: 2.02, 0.99: 2.00, 0.999: 2.05}), (128, {0.95: 1.81, 0.99: 1.80, 0.999: 1.85})):
    for b2, bpb in bpbs.items():
      rows.append({'state': 'done', 'name': 'isoflop_v2-beta2', 'eval/bpb': bpb,
                   'overrides': {'model.d_model': w, 'train.b2': b2}})
  rows.append({'state': 'failed', 'name': 'isoflop_v2-beta2', 'overrides': {'model.d_model': 64, 'train.b2': 0.99}})
  results = tmp_path / 'results.jsonl'
  results.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  c = v2.beta2_choice(str(results))
  assert c['winner'] == 0.99 and c['agree']
  assert c['margin'][64] == pytest.approx(math.log(2.02 / 2.00))
  assert c['margin'][128] == pytest.approx(math.log(1.81 / 1.80))
  assert not c['beyond_noise']                      # 0.55% at width 128 < 2 x 0.49%
  results.write_text(''.join(json.dumps(r) + '\n' for r in rows[:4]))
  with pytest.raises(ValueError, match='not finished'):
    v2.beta2_choice(str(results))
