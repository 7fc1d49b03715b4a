"""Packed members (scaling/train/packed.py, packed_loop.py, scaling/config/pack.py): K runs that differ only
in packable scalars train in one vmapped step, and each member's workdir is the run it would have been.

References: the single-run step (step.make_train_step) and `train()` on the same config, the learning-rate
schedule written out by hand, `scaling eval` of a member's workdir, an uninterrupted packed run.

Tolerance of packed vs single: the vmapped matmuls are batched dot products that XLA may reduce in another
order than the single ones, so values agree to float32 rounding that compounds over steps, not bit for bit:
losses within 2e-5 relative after 12 steps of a 2-layer model (measured: ~1e-6).
"""

import json
import math
import pathlib
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import load as config_lib
from scaling.config import pack
from scaling.train import loop as train_lib
from scaling.train import packed as packed_lib
from scaling.train.packed_loop import train_packed
from scaling.train.step import build_setup, init_state, make_train_step

WORDS = 'alpha beta gamma delta epsilon zeta eta theta , and . or'.split()
STEPS = 12
LOSS_RTOL = 2e-5


def write_docs(root: pathlib.Path) -> str:
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(7)
  for i in range(4):
    (root / f'doc{i}.txt').write_text(' '.join(WORDS[j] for j in rng.integers(0, len(WORDS), 900)))
  return str(root / '*.txt')


def make_cfg(root: pathlib.Path, **kw):
  base = {
      'model.vocab_size': 259, 'model.seq_len': 16, 'model.num_layers': 2, 'model.d_model': 32,
      'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64,
      'data.corpus': str(root / 'corpus' / '*.txt'), 'data.tokenizer': 'byte',
      'data.data_dir': str(root / 'prepared'), 'train.batch_size': 8, 'train.steps': STEPS,
      'train.lr': 1e-2, 'train.warmup_steps': 3, 'train.log_every': 1, 'train.eval_every': 6,
      'train.eval_batches': 2, 'train.ckpt_every': 6, 'train.peak_flops': 1e12,
  }
  base.update({k.replace('__', '.'): v for k, v in kw.items()})
  return config_lib.load_config('default.py', base)


MEMBERS = [dict(train__lr=1e-2), dict(train__lr=3e-3, train__b2=0.99, train__init_seed=5),
           dict(train__lr=2e-2, train__weight_decay=0.0, train__min_lr_ratio=0.5)]


def rows(workdir) -> list[dict]:
  return [json.loads(x) for x in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]


def losses(workdir) -> dict:
  return {r['step']: r['train/loss'] for r in rows(workdir) if 'train/loss' in r}


# ----------------------------------------------------------------------------- config rules (jax-free)
def test_members_must_differ_only_in_packable_fields(tmp_path):
  a, b = make_cfg(tmp_path), make_cfg(tmp_path, train__lr=1e-3, name='arm b', train__init_seed=3)
  pack.check_members([a, b])
  assert pack.pack_key(a) == pack.pack_key(b)
  c = make_cfg(tmp_path, model__d_model=64)
  with pytest.raises(ValueError, match=r'model\.d_model \(32 vs 64\).*not packable'):
    pack.check_members([a, c])
  assert pack.pack_key(a) != pack.pack_key(c)
  d = make_cfg(tmp_path, train__seed=1)   # the data order: not packable
  with pytest.raises(ValueError, match=r'train\.seed'):
    pack.check_members([a, d])
  assert pack.init_seed(a.train) == 0 and pack.init_seed(b.train) == 3


def test_init_seed_is_hash_neutral_and_validated(tmp_path):
  a = make_cfg(tmp_path)
  assert config_lib.config_hash(a) == config_lib.config_hash(make_cfg(tmp_path, train__init_seed=-1))
  assert config_lib.config_hash(a) != config_lib.config_hash(make_cfg(tmp_path, train__init_seed=0))
  with pytest.raises(config_lib.ConfigError, match='init_seed'):
    make_cfg(tmp_path, train__init_seed=-2)


# ----------------------------------------------------------------------------- the step
STEP_MEMBERS = [MEMBERS[0], dict(MEMBERS[1], train__weight_decay=0.0, train__min_lr_ratio=0.5)]


def test_packed_step_equals_each_single_step(tmp_path):
  """K=2 members that differ in lr, b2, weight decay, min_lr_ratio and init seed, 12 steps on the same random
  batches, in both layouts: each member's losses and final params equal its single-run step's."""
  cfgs = [make_cfg(tmp_path, **m) for m in STEP_MEMBERS]
  setup = build_setup(cfgs[0])
  packed = packed_lib.build_packed(setup, len(cfgs))
  scalars = packed_lib.scalars_array(packed, cfgs)
  rng = np.random.default_rng(0)
  batches = [{'inputs': jnp.asarray(rng.integers(0, 259, (8, 16)), jnp.int32),
              'targets': jnp.asarray(rng.integers(0, 259, (8, 16)), jnp.int32)} for _ in range(STEPS)]
  by_layout = {}
  for layout in packed_lib.LAYOUTS:   # one vmapped step; the members one after another in one program
    state = packed_lib.init_packed(packed, [pack.init_seed(c.train) for c in cfgs])
    step = jax.jit(packed_lib.make_packed_step(setup, layout))
    got = []
    for b in batches:
      state, m = step(state, scalars, b)
      got.append(np.asarray(m['loss']))
    by_layout[layout] = got, state
  got, state = by_layout['vmap']
  np.testing.assert_allclose(by_layout['loop'][0], got, rtol=LOSS_RTOL)
  for i, cfg in enumerate(cfgs):
    single = build_setup(cfg)
    s = init_state(single, pack.init_seed(cfg.train))
    if i == 0:   # the init itself is the single run's, bit for bit
      init = packed_lib.init_packed(packed, [pack.init_seed(c.train) for c in cfgs])
      jax.tree.map(lambda p, q: np.testing.assert_array_equal(np.asarray(p)[0], np.asarray(q)), init['params'],
                   s['params'])
    f = jax.jit(make_train_step(single.graphdef, single.tx, cfg.train))
    ref = []
    for b in batches:
      s, m = f(s, b)
      ref.append(float(m['loss']))
    np.testing.assert_allclose([g[i] for g in got], ref, rtol=LOSS_RTOL)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(np.asarray(p)[i], np.asarray(q), rtol=1e-4, atol=1e-6),
                 state['params'], s['params'])
  assert bool(np.all(np.asarray(state['alive'])))


# ----------------------------------------------------------------------------- whole runs
@pytest.fixture(scope='module')
def packed_run(tmp_path_factory):
  """Three members trained packed (12 steps, checkpoints at 6 and 12, evals at 6 and 12)."""
  root = tmp_path_factory.mktemp('packed')
  write_docs(root / 'corpus')
  cfgs = [make_cfg(root, **m) for m in MEMBERS]
  wds = [root / f'm{i}' for i in range(len(cfgs))]
  result = train_packed(cfgs, wds, quiet=True)
  return root, cfgs, wds, result


def _cosine_lr(cfg, step: int) -> float:
  """The schedule written out: linear warmup 0 -> lr over warmup_steps, then cosine to lr * min_lr_ratio."""
  t = cfg.train
  if step < t.warmup_steps:
    return t.lr * step / t.warmup_steps
  frac = (step - t.warmup_steps) / (STEPS - t.warmup_steps)
  return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


@pytest.mark.slow   # whole packed training runs
def test_each_member_is_a_complete_run(packed_run):
  root, cfgs, wds, result = packed_run
  assert result['exit_code'] == 0 and result['state'] == 'done'
  for cfg, wd, res in zip(cfgs, wds, result['members']):
    summary = json.loads((wd / 'summary.json').read_text())
    assert summary['state'] == 'done' and summary['step'] == STEPS and summary == res
    assert sorted(int(p.name) for p in (wd / 'checkpoints').iterdir() if p.name.isdigit()) == [6, 12]
    assert json.loads((wd / 'config.json').read_text())['train']['lr'] == cfg.train.lr
    got = {r['step']: r['train/lr'] for r in rows(wd) if 'train/lr' in r}
    assert sorted(got) == list(range(1, STEPS + 1))
    for s, lr in got.items():   # the row of step s logs the lr its update used (schedule at s - 1)
      assert lr == pytest.approx(_cosine_lr(cfg, s - 1), rel=1e-5), (wd.name, s)
    assert {r['step'] for r in rows(wd) if 'eval/bpb' in r} == {6, 12}


@pytest.mark.slow   # whole packed training runs
def test_a_member_equals_its_single_run(packed_run, tmp_path):
  """Member 1 (lr 3e-3, b2 0.99, init seed 5) against `train()` of the same config alone: the losses of
  every step and the final eval loss."""
  root, cfgs, wds, _ = packed_run
  single = train_lib.train(make_cfg(root, **MEMBERS[1]), tmp_path / 'single', quiet=True)
  a, b = losses(wds[1]), losses(tmp_path / 'single')
  assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([a[s] for s in sorted(a)], [b[s] for s in sorted(b)], rtol=LOSS_RTOL)
  member = json.loads((wds[1] / 'summary.json').read_text())
  assert member['eval/loss'] == pytest.approx(single['eval/loss'], rel=1e-4)


@pytest.mark.slow   # whole packed training runs
def test_scaling_eval_opens_a_member(packed_run, capsys):
  """`scaling eval` of a member's workdir (a single-run reader) gives the member's final eval loss."""
  from scaling.cli import main as cli
  _, _, wds, result = packed_run
  capsys.readouterr()
  assert cli.main(['eval', '--workdir', str(wds[2]), '--batches', '2', '--json']) == 0
  (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{')]
  assert row['eval/loss'] == pytest.approx(result['members'][2]['eval/loss'], rel=1e-5), row


@pytest.mark.slow   # whole packed training runs
def test_a_diverging_member_is_frozen_and_the_others_finish(packed_run, tmp_path):
  """The packed run's members 0 and 2 with an absurd lr between them (its loss goes non-finite): that member
  is marked diverged (exit code 3, summary.json) while the other two finish with the losses they have in the
  packed run without it (the same corpus, written again here)."""
  _, _, ref_wds, _ = packed_run
  write_docs(tmp_path / 'corpus')
  cfgs = [make_cfg(tmp_path, **m) for m in (MEMBERS[0], dict(train__lr=1e9), MEMBERS[2])]
  wds = [tmp_path / f'm{i}' for i in range(3)]
  result = train_packed(cfgs, wds, quiet=True)
  assert result['exit_code'] == 3 and result['state'] == 'diverged'
  bad = json.loads((wds[1] / 'summary.json').read_text())
  assert bad['state'] == 'diverged' and bad['exit_code'] == 3 and 'diverged' in bad['error']
  assert 0 < bad['step'] <= STEPS
  for i in (0, 2):
    assert json.loads((wds[i] / 'summary.json').read_text())['state'] == 'done'
    a, b = losses(wds[i]), losses(ref_wds[i])
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([a[s] for s in sorted(a)], [b[s] for s in sorted(b)], rtol=LOSS_RTOL)


@pytest.mark.slow   # whole packed training runs
def test_resume_after_a_stop_equals_the_uninterrupted_run(packed_run, tmp_path, monkeypatch):
  """A SIGTERM after step 6 saves every member at 6 and exits 75; the re-run resumes all of them and ends
  with the uninterrupted packed run's losses and eval losses."""
  from scaling.train import runtime
  root, cfgs, ref_wds, ref = packed_run
  wds = [tmp_path / f'm{i}' for i in range(len(cfgs))]
  real = runtime.StopFlag.should_stop

  def stop_at_6(self, step):
    if step == 6:
      self.signum = signal.SIGTERM
      return True
    return real(self, step)
  monkeypatch.setattr(runtime.StopFlag, 'should_stop', stop_at_6)
  first = train_packed(cfgs, wds, quiet=True)
  assert first['exit_code'] == 75 and [r['state'] for r in first['members']] == ['preempted'] * 3
  monkeypatch.setattr(runtime.StopFlag, 'should_stop', real)
  second = train_packed(cfgs, wds, quiet=True)
  assert second['exit_code'] == 0
  for wd, rwd, a, b in zip(wds, ref_wds, second['members'], ref['members']):
    la, lb = losses(wd), losses(rwd)
    assert sorted(la) == list(range(1, STEPS + 1))
    np.testing.assert_array_equal([la[s] for s in sorted(la)], [lb[s] for s in sorted(lb)])
    assert a['eval/loss'] == b['eval/loss']
  again = train_packed(cfgs, wds, quiet=True)   # finished: left alone
  assert again['exit_code'] == 0 and [r['state'] for r in again['members']] == ['done'] * 3


def test_members_split_over_the_data_axis_equal_replicated(tmp_path):
  """8 fake devices: 4 members split over mesh axis data (size 4; fsdp 2) give the replicated layout's losses."""
  if jax.device_count() < 8:
    pytest.skip('needs the 8 fake CPU devices of tests/conftest.py')
  cfgs = [make_cfg(tmp_path, train__lr=lr, mesh__data=4, mesh__fsdp=2) for lr in (1e-2, 5e-3, 2e-3, 1e-3)]
  setup = build_setup(cfgs[0])
  rng = np.random.default_rng(1)
  batches = [{'inputs': jnp.asarray(rng.integers(0, 259, (8, 16)), jnp.int32),
              'targets': jnp.asarray(rng.integers(0, 259, (8, 16)), jnp.int32)} for _ in range(4)]
  out = {}
  for axis in (None, 'data'):
    packed = packed_lib.build_packed(setup, 4, axis)
    state = packed_lib.init_packed(packed, [0, 1, 2, 3])
    step = packed_lib.jit_packed_step(packed, ('inputs', 'targets'))
    scalars = packed_lib.scalars_array(packed, cfgs)
    got = []
    for b in batches:
      state, m = step(state, scalars, b)
      got.append(np.asarray(m['loss']))
    out[axis] = np.array(got)
    if axis == 'data':
      leaf = jax.tree.leaves(state['params'])[0]
      assert leaf.sharding.spec[0] == 'data'
  np.testing.assert_allclose(out['data'], out[None], rtol=LOSS_RTOL)
  with pytest.raises(ValueError, match='do not split'):
    packed_lib.build_packed(setup, 3, 'data')
  with pytest.raises(ValueError, match='already shards'):
    packed_lib.build_packed(setup, 2, 'fsdp')


@pytest.mark.slow   # whole packed training runs
def test_cli_vary_trains_the_members_and_refuses_an_unpackable_field(tmp_path, capsys):
  """`scaling train-packed --vary`: one member per value in ROOT/member-<i>, members.json beside them (the
  same command resumes: here, finished, it leaves them alone); a field that is not packable is refused."""
  from scaling.cli import main as cli
  write_docs(tmp_path / 'corpus')
  flags = [f'--config.{k.replace("__", ".")}={v}' for k, v in dict(
      model__vocab_size=259, model__seq_len=16, model__num_layers=1, model__d_model=16, model__num_heads=2,
      model__num_kv_heads=1, model__d_ff=32, data__corpus=str(tmp_path / 'corpus' / '*.txt'), data__tokenizer='byte',
      data__data_dir=str(tmp_path / 'prepared'), train__batch_size=8, train__steps=3, train__warmup_steps=1,
      train__eval_every=0, train__eval_batches=1, train__ckpt_every=0, train__peak_flops=1e12).items()]
  argv = ['train-packed', '--workdir', str(tmp_path / 'root'), '--vary', 'train.lr=1e-2,3e-3', '--layout', 'loop',
          *flags]
  assert cli.main(argv) == 0
  members = json.loads((tmp_path / 'root' / 'members.json').read_text())
  assert [m['overrides']['train.lr'] for m in members] == ['1e-2', '3e-3']
  for i, lr in enumerate((1e-2, 3e-3)):
    wd = tmp_path / 'root' / f'member-{i}'
    assert json.loads((wd / 'config.json').read_text())['train']['lr'] == lr
    assert json.loads((wd / 'summary.json').read_text())['state'] == 'done'
  capsys.readouterr()
  assert cli.main(argv) == 0 and 'already finished' in capsys.readouterr().out
  with pytest.raises(SystemExit, match='not packable'):
    cli.main(['train-packed', '--workdir', str(tmp_path / 'x'), '--vary', 'model.d_model=16,32', *flags])
