"""Batch schedules (train.batch_schedule, train.batch_lr_rule; scaling/config/batch.py, scaling/train/batch_schedule.py).

References are independent of the code under test: the corpus order is grain's permutation of the window indices
read straight from the prepared token file; the lr factors, token counts and FLOPs are written out by hand; a
resumed run is compared with an uninterrupted one (a second code path through the same loop).

Tiny model (1 layer, d_model 32, seq 32, byte tokens) on a synthetic corpus, 8 fake CPU devices.
"""

import json
import math
import os
import signal

import jax
import numpy as np
import pytest

from scaling.config import batch as batch_lib
from scaling.config import load as config_lib
from scaling.data import shards
from scaling.data.loader import make_train_loader
from scaling.train import batch_schedule, checkpoint, optim, sharding
from scaling.train import loop as train_lib
from scaling.train.metrics import read_metrics

T = 32
WORDS = 'alpha bravo charlie delta echo foxtrot golf hotel india juliet'.split()


def cfg_of(data: dict | None = None, **kw):
  over = {
      'model.vocab_size': 259, 'model.seq_len': T, 'model.num_layers': 1, 'model.d_model': 32,
      'model.num_heads': 2, 'model.num_kv_heads': 1, 'model.d_ff': 64, 'data.tokenizer': 'byte',
      'train.batch_size': 8, 'train.lr': 1e-2, 'train.warmup_steps': 0, 'train.schedule': 'constant',
      'train.log_every': 1, 'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': 1000,
      'train.peak_flops': 1e12, 'train.steps': 8, 'train.eval_sets': {},
  }
  if data:
    over |= {'data.corpus': data['corpus'], 'data.data_dir': data['data_dir']}
  over.update({k.replace('__', '.'): v for k, v in kw.items()})
  return config_lib.load_config('default.py', over)


# ----------------------------------------------------------------------------- the schedule, by hand
def test_schedule_arithmetic_by_hand():
  s = batch_lib.parse('3:16,5:32', 8)
  assert [s.batch_at(i) for i in range(8)] == [8, 8, 8, 16, 16, 32, 32, 32]
  # windows before step k: 8 a step for 3 steps, then 16 for 2, then 32
  assert [s.windows_before(k) for k in range(8)] == [0, 8, 16, 24, 40, 56, 88, 120]
  assert s.tokens_seen(7, T) == 120 * T
  assert s.step_at_windows(56) == 5 and s.step_at_windows(57) is None
  assert s.steps_within_windows(87) == 5 and s.steps_within_windows(88) == 6
  assert batch_lib.steps_for_tokens(s, 100 * T, T) == 6   # 88 windows fit, 120 do not
  cfg = cfg_of(train__tokens=100 * T + 5, train__batch_schedule='3:16,5:32')
  assert config_lib.train_steps(cfg) == 6
  # a ramp from tokens: 16 from 20 windows on (the first step boundary at or after: 24), 32 from 50 (56)
  assert batch_lib.spec_from_tokens(8, T, [(20 * T, 16), (50 * T, 32)]) == '3:16,5:32'


def test_lr_rule_values_by_hand():
  """Constant lr 1e-2, no warmup: the lr of step index k is 1e-2 x the rule's factor of its batch / 8."""
  by_hand = {'sqrt': [1, 1, 1, math.sqrt(2), math.sqrt(2), 2, 2, 2], 'linear': [1, 1, 1, 2, 2, 4, 4, 4],
             'unchanged': [1] * 8}
  for rule, factors in by_hand.items():
    cfg = cfg_of(train__batch_schedule='3:16,5:32', train__batch_lr_rule=rule)
    sched = optim.schedule(cfg.train, 8)
    np.testing.assert_allclose([float(sched(k)) for k in range(8)], [1e-2 * f for f in factors], rtol=1e-6)
  plain = optim.schedule(cfg_of().train, 8)   # no schedule: the base lr, whatever the rule
  assert [float(plain(k)) for k in range(8)] == [pytest.approx(1e-2)] * 8


@pytest.mark.parametrize('spec, words', [
    ('3:16,2:32', 'must increase'),
    ('0:16', 'step must be >= 1'),
    ('3:8', 'keeps the batch'),
    ('3-16', "not 'STEP:BATCH'"),
    ('8:16', 'at or after the last step'),
])
def test_bad_schedules_fail_at_load(spec, words):
  with pytest.raises(config_lib.ConfigError, match=words):
    cfg_of(train__batch_schedule=spec)


def test_batches_that_do_not_split_name_the_step():
  with pytest.raises(config_lib.ConfigError, match='batch 12 of step 3 does not divide into train.microbatches=8'):
    cfg_of(train__batch_schedule='3:12', train__microbatches=8, train__batch_size=16)
  with pytest.raises(config_lib.ConfigError, match='batch_lr_rule'):
    cfg_of(train__batch_schedule='3:16', train__batch_lr_rule='cubic')
  cfg = cfg_of(train__batch_schedule='3:16,5:12')   # 12 rows over 8 data-parallel devices
  with pytest.raises(sharding.MeshError, match='the batch 12 of step 5'):
    train_lib.build_setup(cfg)


def test_default_fields_keep_every_hash():
  cfg = cfg_of()
  assert cfg.train.batch_schedule == '' and cfg.train.batch_lr_rule == 'sqrt'
  d = config_lib.to_dict(cfg)
  del d['train']['batch_schedule'], d['train']['batch_lr_rule']
  assert config_lib.config_hash(cfg) == config_lib.config_hash(config_lib.ml_collections.ConfigDict(d))


# ----------------------------------------------------------------------------- the data order
@pytest.fixture(scope='module')
def data(tmp_path_factory):
  from scaling.data.prepare import prepare
  root = tmp_path_factory.mktemp('batch_data')
  (root / 'corpus').mkdir()
  rng = np.random.default_rng(3)
  for i in range(3):
    lines = [' '.join(WORDS[j] for j in rng.integers(0, len(WORDS), 8)) + '.' for _ in range(60)]
    (root / 'corpus' / f'doc{i}.txt').write_text('\n'.join(lines) + '\n')
  d = dict(corpus=str(root / 'corpus' / '*.txt'), data_dir=str(root / 'prepared'))
  prepare(cfg_of(d).data, verbose=False)
  return d


def reference_windows(data_dir: str, seed: int, count: int) -> np.ndarray:
  """[count, T + 1]: the windows of global positions 0..count-1, from grain's permutation of the window indices
  (a new one each epoch) and the token file itself."""
  import grain
  tokens = np.asarray(shards.open_split(data_dir, 'train').tokens)
  n = (tokens.size - 1) // T
  order = grain.MapDataset.range(n).shuffle(seed=seed).repeat()
  return np.stack([tokens[w * T:w * T + T + 1] for w in (order[i] for i in range(count))]).astype(np.int32), n


def scheduled(data, spec: str, *, base: int = 8, process_index: int = 0, process_count: int = 1, seed: int = 5):
  sched = batch_lib.parse(spec, base)
  inner = make_train_loader(data['data_dir'], seq_len=T, batch_size=base // process_count, seed=seed,
                            process_index=process_index, process_count=process_count)
  return batch_schedule.ScheduledLoader(inner, sched, process_count), sched


@pytest.mark.parametrize('process_count', [1, 2])
def test_batch_changes_see_every_window_of_the_order_once(data, process_count):
  """Across two changes (8 -> 24 -> 40, past an epoch), the processes' rows of step k are exactly the order's
  positions windows_before(k) .. windows_before(k+1), in order: none repeated, none skipped."""
  spec = '4:24,9:40'
  loaders = [scheduled(data, spec, process_index=p, process_count=process_count)[0] for p in range(process_count)]
  sched = batch_lib.parse(spec, 8)
  _, n = reference_windows(data['data_dir'], 5, 1)
  steps = sched.steps_within_windows(n) + 3   # past the end of the first epoch
  ref, _ = reference_windows(data['data_dir'], 5, sched.windows_before(steps))
  for k in range(steps):
    got = [next(ld) for ld in loaders]
    a, b = sched.windows_before(k), sched.windows_before(k + 1)
    rows = np.empty((b - a, T + 1), np.int32)
    for p, batch in enumerate(got):   # process p holds positions a + p, a + p + P, ...
      rows[p::process_count] = np.concatenate([batch['inputs'], batch['targets'][:, -1:]], axis=1)
    np.testing.assert_array_equal(rows, ref[a:b], err_msg=f'step {k}')
  assert loaders[0].loader.position == sched.windows_before(steps) > n


def test_state_resumes_across_a_change_at_the_same_windows(data):
  """A state saved inside the second phase (its loader started at window 32) and one saved on the step of a
  change, each restored into a fresh loader of the same schedule: the next batches are the ones the first
  loader gives."""
  for saved_at in (6, 4):
    first, sched = scheduled(data, '4:24,9:40')
    for _ in range(saved_at):
      next(first)
    state = json.loads(json.dumps(first.get_state()))
    assert state['position'] == sched.windows_before(saved_at)
    expected = [next(first) for _ in range(5)]
    fresh, _ = scheduled(data, '4:24,9:40')
    fresh.set_state(state)
    assert fresh.step == saved_at
    for e in expected:
      np.testing.assert_array_equal(next(fresh)['inputs'], e['inputs'])


# ----------------------------------------------------------------------------- whole runs
def losses(workdir) -> dict[int, float]:
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


def final(workdir, cfg):
  setup = train_lib.build_setup(cfg)
  state = train_lib.init_state(setup, 0)
  mgr = checkpoint.manager(workdir, async_save=False)
  out = checkpoint.restore(mgr, checkpoint.latest_step(workdir), params_target=state['params'],
                           opt_target=state['opt_state'])
  mgr.close()
  return jax.tree.map(np.asarray, out['params']), jax.tree.map(np.asarray, out['opt_state']), out['data']


SPEC = '3:16,5:32'


@pytest.fixture(scope='module')
def ref_run(data, tmp_path_factory):
  cfg = cfg_of(data, train__batch_schedule=SPEC, train__batch_lr_rule='linear')
  workdir = tmp_path_factory.mktemp('ref') / 'run'
  result = train_lib.train(cfg, workdir, quiet=True)
  assert result['state'] == 'done'
  return dict(cfg=cfg, workdir=workdir, result=result)


@pytest.mark.slow
def test_accounting_across_changes_by_hand(ref_run):
  """tokens_seen of every row, the batch and lr logged, the summary's tokens and FLOPs, the checkpoint's data
  position: 3 steps of 8, 2 of 16, 3 of 32 sequences of 32 tokens."""
  from scaling.model import accounting
  rows = {r['step']: r for r in read_metrics(ref_run['workdir']) if 'train/loss' in r}
  batches = [8, 8, 8, 16, 16, 32, 32, 32]
  assert [rows[s]['train/batch_size'] for s in range(1, 9)] == batches
  assert [rows[s]['tokens_seen'] for s in range(1, 9)] == [sum(batches[:s]) * T for s in range(1, 9)]
  np.testing.assert_allclose([rows[s]['train/lr'] for s in range(1, 9)], [1e-2 * b / 8 for b in batches], rtol=1e-6)
  tokens = 152 * T
  fpt = accounting.flops_per_token(train_lib.build_setup(ref_run['cfg']).dims)
  assert ref_run['result']['tokens'] == tokens
  assert ref_run['result']['flops'] == pytest.approx(fpt * tokens)
  *_, data_state = final(ref_run['workdir'], ref_run['cfg'])
  assert data_state['position'] == 152 and data_state['batch_size'] == 32 and data_state['start'] == 56


@pytest.mark.slow
def test_resume_across_a_change_equals_the_uninterrupted_run(data, ref_run, tmp_path, monkeypatch):
  """Stopped (SIGTERM) after step 3, the last step at batch 8, and resumed: steps 4..8 cross both changes; every
  logged loss, the final params and Adam moments and the data position equal the uninterrupted run's."""
  cfg, workdir, calls = ref_run['cfg'], tmp_path / 'resumed', []
  orig = train_lib.jit_train_step

  def jit_with_sigterm(setup, keys):
    step = orig(setup, keys)

    def wrapped(state, batch):
      out = step(state, batch)
      calls.append(1)
      if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      return out
    return wrapped

  monkeypatch.setattr(train_lib, 'jit_train_step', jit_with_sigterm)
  first = train_lib.train(cfg, workdir, quiet=True)
  assert first['state'] == 'preempted' and first['step'] == 3
  monkeypatch.setattr(train_lib, 'jit_train_step', orig)
  second = train_lib.train(cfg, workdir, quiet=True)
  assert second['state'] == 'done' and second['tokens'] == ref_run['result']['tokens']
  ref, got = losses(ref_run['workdir']), losses(workdir)
  assert sorted(got) == sorted(ref) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in ref], [ref[s] for s in ref], rtol=1e-6)
  pa, oa, da = final(ref_run['workdir'], cfg)
  pb, ob, db = final(workdir, cfg)
  for x, y in zip(jax.tree.leaves((pa, oa)), jax.tree.leaves((pb, ob))):
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
  assert da['position'] == db['position'] == 152


@pytest.mark.slow
def test_a_branch_with_another_batch(data, ref_run, tmp_path):
  """A branch at step 3 of the run with batch 4 x 8 = 32 from the fork (train.batch_schedule='3:32'): it starts at
  the parent's window 24; without the schedule (batch_size 32 throughout) it is refused before any compile,
  naming the schedule to use."""
  parent = ref_run['workdir']
  # the parent keeps no step-3 checkpoint: fork from its last one (step 8, window 152) instead
  bad = cfg_of(data, train__init_from=f'{parent}:8', train__steps=10, train__batch_size=32)
  with pytest.raises(checkpoint.CheckpointError, match="train.batch_schedule='8:kB'"):
    train_lib.train(bad, tmp_path / 'bad', quiet=True)
  ok = cfg_of(data, train__init_from=f'{parent}:8', train__steps=10, train__batch_schedule=SPEC + ',8:64')
  result = train_lib.train(ok, tmp_path / 'branch', quiet=True)
  assert result['state'] == 'done' and result['tokens'] == (152 + 2 * 64) * T
  *_, state = final(tmp_path / 'branch', ok)
  assert state['position'] == 152 + 2 * 64
