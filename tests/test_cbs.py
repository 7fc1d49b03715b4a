"""The critical batch size by branching (`scaling cbs`, scaling/analysis/cbs.py).

The estimator is checked on synthetic loss curves whose critical batch is known by construction (branches above it
lose a set amount per doubling, below it nothing, plus noise); the plan's rows against hand-written values; and one
tiny end-to-end measurement (a parent, its branches trained from the planned sweep's configs, the report).
"""

import json
import math

import numpy as np
import pytest

from scaling.analysis import cbs


def synthetic(b_star: float, *, batch=8, fork_tokens=1e5, window=2e4, factors=(1, 2, 4, 8, 16), noise=0.002,
              per_doubling=0.05, seed=0, parent='/runs/p', fork=100):
  """Branches of one fork point: the reference's loss 3 + 40 x tokens^-0.3; a branch of batch kB > b_star loses
  per_doubling x log2(kB / b_star) more; every logged point has N(0, noise) added; one point per step."""
  rng = np.random.default_rng(seed)
  out = []
  for k in factors:
    steps = int(window // (k * batch * 32))
    tok = fork_tokens + np.arange(1, steps + 1) * k * batch * 32
    excess = per_doubling * max(0.0, math.log2(k * batch / b_star))
    loss = 3 + 40 * tok ** -0.3 + excess + rng.normal(0, noise, steps)
    out.append(cbs.Branch(f'{parent}-{k}', parent, fork, int(fork_tokens), batch, k, tok, loss))
  return out


@pytest.mark.parametrize('b_star', [8, 32, 64, 128])
def test_a_known_critical_batch_on_the_grid_is_recovered(b_star):
  p = cbs.estimate_point(synthetic(b_star), tolerance=0.01)
  assert p['cbs'] == b_star
  lo, hi = p['interval']
  assert lo <= b_star < hi
  assert p['above_grid'] == (b_star == 128) and p['at_reference'] == (b_star == 8)


def test_a_critical_batch_between_grid_points_is_bracketed():
  """b_star = 48: 32 passes (no loss), 64 loses 0.05 x log2(64/48) = 0.021 > 0.01: the estimate is 32 and the
  interval [32, 64] holds 48."""
  p = cbs.estimate_point(synthetic(48), tolerance=0.01)
  assert p['cbs'] == 32 and p['interval'][0] <= 32 and p['interval'][1] >= 64
  # a tolerance above that loss: 64 passes too
  assert cbs.estimate_point(synthetic(48), tolerance=0.03)['cbs'] == 64


def test_noise_widens_the_interval_not_the_estimate():
  quiet = cbs.estimate_point(synthetic(32, noise=0.001), tolerance=0.01)
  loud = cbs.estimate_point(synthetic(32, noise=0.05), tolerance=0.01)
  assert quiet['cbs'] == 32 and quiet['interval'] == [32.0, 64.0]
  assert loud['interval'][1] - loud['interval'][0] > quiet['interval'][1] - quiet['interval'][0]


def test_critical_batch_takes_the_first_failure():
  """A smaller batch that fails ends the search even if a larger one passes (the CBS is a threshold)."""
  assert cbs.critical_batch({1: 3.0, 2: 3.005, 4: 3.02, 8: 3.0}, 0.01) == 2


def test_points_are_grouped_by_parent_and_fork():
  a = synthetic(32, fork=100, fork_tokens=1e5)
  b = synthetic(64, fork=200, fork_tokens=2e5, seed=1)
  got = cbs.estimate(a + b, tolerance=0.01)
  assert [(p['fork'], p['cbs']) for p in got] == [(100, 32), (200, 64)]
  text = cbs.describe(got)
  assert '32' in text and '64' in text


def test_plan_rows_by_hand():
  """Parent: batch 8, seq 32, constant lr after 10 warmup steps. Forks 20 and 40, k = 1, 2, 4, window 1000 tokens
  -> rounded up to one step at the largest batch (4 x 8 x 32 = 1024): 4, 2 and 1 steps."""
  parent = {'train': {'batch_size': 8, 'batch_schedule': '', 'schedule': 'constant', 'warmup_steps': 10},
            'model': {'seq_len': 32}}
  rows = cbs.plan_rows(parent, '/w/parent', [20, 40], [1, 2, 4], 1000, 'sqrt')
  got = [(r['train.init_from'], r['train.batch_schedule'], r['train.steps']) for r in rows]
  assert got == [('/w/parent:20', '', 24), ('/w/parent:20', '20:16', 22), ('/w/parent:20', '20:32', 21),
                 ('/w/parent:40', '', 44), ('/w/parent:40', '40:16', 42), ('/w/parent:40', '40:32', 41)]
  assert all(r['name'] == 'cbs' and r['train.schedule'] == 'constant' for r in rows)
  # a parent that itself ramped 8 -> 16 at step 30: at fork 40 its batch is 16, the branches keep the ramp
  ramp = {**parent, 'train': {**parent['train'], 'batch_schedule': '30:16'}}
  rows = cbs.plan_rows(ramp, '/w/parent', [40], [1, 2], 1000, 'sqrt')
  assert [r['train.batch_schedule'] for r in rows] == ['30:16', '30:16,40:32']
  with pytest.raises(cbs.CbsError, match='cosine'):
    cbs.plan_rows({**parent, 'train': {**parent['train'], 'schedule': 'cosine'}}, '/w', [20], [1, 2], 1000)
  with pytest.raises(cbs.CbsError, match='warmup'):
    cbs.plan_rows(parent, '/w', [5], [1, 2], 1000)


def cfg_of(data: dict, **kw):
  from scaling.config import load as config_lib
  over = {
      'model.vocab_size': 259, 'model.seq_len': 32, 'model.num_layers': 1, 'model.d_model': 32,
      'model.num_heads': 2, 'model.num_kv_heads': 1, 'model.d_ff': 64, 'data.tokenizer': 'byte',
      'data.corpus': data['corpus'], 'data.data_dir': data['data_dir'], 'train.lr': 1e-2,
      'train.schedule': 'constant', 'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': 1000,
      'train.peak_flops': 1e12, 'train.eval_sets': {}, 'sample.prompts': (),
  }
  over.update({k.replace('__', '.'): v for k, v in kw.items()})
  return config_lib.load_config('default.py', over)


@pytest.mark.slow
def test_plan_sweep_train_and_report_end_to_end(tmp_path):
  """A tiny constant-lr parent keeps step 6; `scaling cbs plan` writes two branches (k = 1, 4) of 256 tokens; the
  planned sweep resolves through the launcher (configs/sweeps/cbs.py); each branch trains to the same tokens from
  the parent's window position; `scaling cbs report` writes cbs.json and cbs.png."""
  from scaling.cli import cbs as cli
  from scaling.cli.main import build_parser
  from scaling.data.prepare import prepare
  from scaling.launch.sweep import load_sweep
  from scaling.train import loop as train_lib
  (tmp_path / 'corpus').mkdir()
  rng = np.random.default_rng(0)
  for name in 'abc':
    (tmp_path / 'corpus' / f'{name}.txt').write_text('\n'.join(' '.join(rng.choice(['ab', 'cd', 'ef', 'gh'], 9))
                                                              for _ in range(120)))
  data = dict(corpus=str(tmp_path / 'corpus' / '*.txt'), data_dir=str(tmp_path / 'prep'))
  prepare(cfg_of(data).data, verbose=False)
  parent = tmp_path / 'parent'
  pcfg = cfg_of(data, train__steps=8, train__warmup_steps=2, train__ckpt_steps=(6,), train__batch_size=8)
  assert train_lib.train(pcfg, parent, quiet=True)['state'] == 'done'
  plan = tmp_path / 'plan.json'
  args = build_parser('cbs').parse_args(['cbs', 'plan', '--parent', str(parent), '--steps', '6', '--factors', '1,4',
                                         '--window', '512', '--out', str(plan)])
  assert cli.run(args) == 0
  sweep = load_sweep(f'configs/sweeps/cbs.py:{plan}')
  assert [r.config.train.batch_schedule for r in sweep.runs] == ['', '6:32']
  # 512 tokens -> 1024 (one step at the largest batch, 32 x 32): 4 steps of 8, 1 of 32
  assert [r.config.train.steps for r in sweep.runs] == [6 + 4, 6 + 1]
  root = tmp_path / 'root'
  for r in sweep.runs:
    assert train_lib.train(r.config, root / 'runs' / r.hash, quiet=True)['tokens'] == (48 + 32) * 32
  args = build_parser('cbs').parse_args(['cbs', 'report', '--root', str(root)])
  assert cli.run(args) == 0
  doc = json.loads((root / 'cbs.json').read_text())
  (p,) = doc['points']
  assert p['fork'] == 6 and p['tokens'] == 48 * 32 and p['batch'] == 8 and p['factors'] == [1, 4]
  assert (root / 'cbs.png').stat().st_size > 0
