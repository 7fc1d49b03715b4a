"""configs/sweeps/isoflop_cpu.py: the design keeps the promises its docstring makes.

Checked from the sweep rows themselves (what `scaling sweep` trains), with the model arithmetic
recomputed here by scaling.model.accounting on each row's own config, not read from the plan.
"""

import importlib.util
import math
import pathlib

import pytest

from scaling.config.load import fill_vocab
from scaling.launch.sweep import BRANCH_KEY
from scaling.model.accounting import count_params, flops_per_token

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def iso():
  spec = importlib.util.spec_from_file_location('isoflop_cpu_design', ROOT / 'configs/sweeps/isoflop_cpu.py')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.fixture(scope='module')
def rows(iso):
  return iso.get_sweep()


def _model(iso, row):
  from configs.sweeps._common import resolved
  keys = {k: v for k, v in row.items() if k.startswith(('model.', 'data.'))}
  return fill_vocab(resolved(iso.get_config(), keys)).model


def _fit_rows(rows):
  return [r for r in rows if r.get('name') == 'isoflop_cpu']


def test_every_budget_has_five_sizes_evenly_spaced_at_its_flops(iso, rows):
  tokens_per_step = iso.BATCH * iso.SEQ_LEN
  by_budget = {}
  for r in _fit_rows(rows):
    m = _model(iso, r)
    c = r['train.steps'] * tokens_per_step * float(flops_per_token(m))
    budget = min(iso.BUDGETS, key=lambda b: abs(math.log(c / b)))
    assert abs(c / budget - 1) < 0.003, (r, c, budget)   # each run costs its budget's FLOPs
    by_budget.setdefault(budget, []).append(float(count_params(m)['total']))
  assert sorted(by_budget) == sorted(iso.BUDGETS) and max(iso.BUDGETS) / min(iso.BUDGETS) >= 30
  for b, ns in by_budget.items():
    ns = sorted(ns)
    assert len(set(ns)) == 5, (b, ns)
    ratios = [y / x for x, y in zip(ns, ns[1:])]
    # even in log N up to the shape family's granularity (d_model a multiple of 32, whole layers)
    assert all(1.3 < q < 2.2 for q in ratios), (b, ratios)


def test_every_run_has_enough_steps_and_reads_under_one_epoch(iso, rows):
  train_tokens = (1 - iso.VAL_FRACTION) * iso.CORPUS_TOKENS
  for r in rows:
    assert r['train.steps'] >= iso.MIN_STEPS or r.get('name') == 'isoflop_cpu-parent', r
    assert r['train.steps'] * iso.BATCH * iso.SEQ_LEN < train_tokens, r


def test_branches_fork_inside_their_parent_and_decay_a_fifth(iso, rows):
  branched = [r for r in rows if BRANCH_KEY in r]
  assert branched, 'the larger budgets share stable parents'
  for r in branched:
    fork, parent = r[BRANCH_KEY]['step'], r[BRANCH_KEY]['parent']
    assert fork + r['train.decay_steps'] == r['train.steps']
    assert r['train.decay_steps'] == round(iso.DECAY_FRACTION * r['train.steps'])
    assert fork in parent['train.ckpt_steps'] and parent['train.steps'] >= fork
    for k in ('train.lr', 'train.warmup_steps', 'model.d_model', 'model.num_layers'):
      assert parent[k] == r[k]
  scratch = [r for r in _fit_rows(rows) if BRANCH_KEY not in r]
  assert all(r['train.schedule'] == 'wsd' and r['train.decay_steps'] == round(0.2 * r['train.steps'])
             for r in scratch)


def test_learning_rate_follows_the_transfer_studys_law(iso, rows):
  # docs/results/lr_transfer: SP optima 7.24e-3 at d_model 32 and 2.38e-3 at 128 -> exponent
  # log(2.38/7.24) / log(4) = -0.80
  for r in _fit_rows(rows):
    want = 7.24e-3 * (r['model.d_model'] / 32) ** (math.log(2.38 / 7.24) / math.log(4))
    assert r['train.lr'] == pytest.approx(want, rel=0.01)


def test_the_lr_check_brackets_the_smallest_budgets_rate(iso):
  check = iso.get_sweep('lrcheck')
  assert len(check) == 6
  for r in check:
    want = 7.24e-3 * (r['model.d_model'] / 32) ** -0.80
    assert r['train.lr'] / want == pytest.approx(0.5, rel=0.01) or r['train.lr'] / want == pytest.approx(2, rel=0.01)
  with pytest.raises(ValueError, match='lrcheck'):
    iso.get_sweep('nonsense')
