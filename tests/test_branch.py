"""Cooldown branches (train.init_from, scaling/train/branch.py) and the WSD decay options.

The exact test: a stable parent (constant lr after the same warmup) forked at step S and decayed for
D steps equals, step for step, a from-scratch WSD run of S + D steps whose decay is D steps (same seed
and data order): the parent's losses up to S and the branch's after S are the from-scratch run's, to
float tolerance, and so are the final params. The reference is that second, independent code path
(one uninterrupted run). The lr of every step is also checked against the closed-form decay shapes.

Tiny model (1 layer, d_model 32, seq 32, byte tokenizer) on a synthetic corpus, 8 fake CPU devices.
"""

import json
import math
import pathlib

import jax
import numpy as np
import pytest

from scaling.config import load as config_lib
from scaling.train import branch, checkpoint, optim
from scaling.train import loop as train_lib
from scaling.train.metrics import read_metrics

FORK, DECAY = 6, 4          # the branch forks at step 6 and decays for 4 steps: a WSD run of 10
PARENT_STEPS = 12           # the parent runs on past the fork (saves 4, 6, 8, 12; keeps 6 and 12)
WORDS = 'alpha bravo charlie delta echo foxtrot golf hotel india juliet'.split()


def write_corpus(root: pathlib.Path) -> str:
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(7)
  for i in range(4):
    lines = [' '.join(WORDS[j] for j in rng.integers(0, len(WORDS), 8)) + '.' for _ in range(80)]
    (root / f'doc{i}.txt').write_text('\n'.join(lines) + '\n')
  return str(root / '*.txt')


def cfg_of(data: dict, **kw):
  over = {
      'model.vocab_size': 259, 'model.seq_len': 32, 'model.num_layers': 1, 'model.d_model': 32,
      'model.num_heads': 2, 'model.num_kv_heads': 1, 'model.d_ff': 64,
      'data.corpus': data['corpus'], 'data.tokenizer': 'byte', 'data.data_dir': data['data_dir'],
      'train.batch_size': 8, 'train.lr': 1e-2, 'train.warmup_steps': 3, 'train.min_lr_ratio': 0.1,
      'train.log_every': 1, 'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': 1000,
      'train.peak_flops': 1e12,
  }
  over.update({k.replace('__', '.'): v for k, v in kw.items()})
  return config_lib.load_config('default.py', over)


def losses(workdir) -> dict[int, float]:
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


def lrs(workdir) -> dict[int, float]:
  return {r['step']: r['train/lr'] for r in read_metrics(workdir) if 'train/lr' in r}


def final_params(workdir, cfg):
  setup = train_lib.build_setup(cfg)
  state = train_lib.init_state(setup, cfg.train.seed)
  mgr = checkpoint.manager(workdir, async_save=False)
  out = checkpoint.restore(mgr, checkpoint.latest_step(workdir), params_target=state['params'])
  mgr.close()
  return jax.tree.map(np.asarray, out['params'])


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  from scaling.data.prepare import prepare
  root = tmp_path_factory.mktemp('branch_data')
  d = dict(corpus=write_corpus(root / 'corpus'), data_dir=str(root / 'prepared'))
  prepare(cfg_of(d, train__steps=1).data, verbose=False)
  return d


@pytest.fixture(scope='module')
def runs(data, tmp_path_factory):
  """The stable parent, a branch of it (a sibling workdir, init_from relative), and the from-scratch WSD."""
  root = tmp_path_factory.mktemp('branch_runs')
  parent, child, scratch = root / 'parent', root / 'child', root / 'scratch'
  wsd = dict(train__schedule='wsd', train__steps=FORK + DECAY, train__decay_steps=DECAY,
             train__decay_shape='1-sqrt')
  out = {}
  out['parent'] = train_lib.train(cfg_of(data, train__schedule='constant', train__steps=PARENT_STEPS,
                                         train__ckpt_every=4, train__keep_checkpoints=1,
                                         train__ckpt_steps=(FORK,)), parent, quiet=True)
  out['child_cfg'] = cfg_of(data, train__init_from=f'../parent:{FORK}', **wsd)
  out['child'] = train_lib.train(out['child_cfg'], child, quiet=True)
  out['scratch_cfg'] = cfg_of(data, **wsd)
  out['scratch'] = train_lib.train(out['scratch_cfg'], scratch, quiet=True)
  return dict(out, root=root, parent_dir=parent, child_dir=child, scratch_dir=scratch, data=data, wsd=wsd)


# ----------------------------------------------------------------------------- the exact test
def test_the_parent_keeps_its_fork_step_besides_the_newest(runs):
  # train.ckpt_steps=(6,): saved although 6 is no multiple of ckpt_every=4, and kept although
  # keep_checkpoints=1 deletes the periodic 4 and 8 once newer ones exist
  kept = sorted(int(p.name) for p in (runs['parent_dir'] / checkpoint.CKPT_DIR).iterdir() if p.name.isdigit())
  assert kept == [FORK, PARENT_STEPS]


def test_branch_equals_from_scratch_wsd_step_for_step(runs):
  assert runs['child']['state'] == runs['scratch']['state'] == 'done'
  ref = losses(runs['scratch_dir'])
  assert sorted(ref) == list(range(1, FORK + DECAY + 1))
  parent, child = losses(runs['parent_dir']), losses(runs['child_dir'])
  assert sorted(child) == list(range(FORK + 1, FORK + DECAY + 1))   # the branch trained only the decay
  got = {**{s: parent[s] for s in range(1, FORK + 1)}, **child}
  for s in ref:
    assert got[s] == pytest.approx(ref[s], abs=1e-6, rel=0), f'step {s}: {got[s]} vs from scratch {ref[s]}'
  # the decay changed the trajectory: the parent's own steps after the fork (constant lr) differ
  assert any(abs(parent[s] - ref[s]) > 1e-6 for s in range(FORK + 2, FORK + DECAY + 1))
  a = final_params(runs['child_dir'], runs['child_cfg'])
  b = final_params(runs['scratch_dir'], runs['scratch_cfg'])
  diff = max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))
  assert diff <= 1e-6
  # tokens seen include the parent's: the summary's D is the whole branch's, the fit's D
  assert runs['child']['tokens'] == runs['scratch']['tokens'] == (FORK + DECAY) * 8 * 32
  assert runs['child']['flops'] == runs['scratch']['flops']


def test_branch_lr_is_the_closed_form(runs):
  """Step k trains at lr(k - 1): warmup 0 -> lr over 3 steps, lr until the fork, then 1-sqrt to lr/10."""
  peak, final = 1e-2, 1e-3
  got = {**{s: v for s, v in lrs(runs['parent_dir']).items() if s <= FORK}, **lrs(runs['child_dir'])}
  for k in range(1, FORK + DECAY + 1):
    c = k - 1
    want = peak * c / 3 if c < 3 else peak if c < FORK else final + (peak - final) * (1 - math.sqrt((c - FORK) / DECAY))
    assert got[k] == pytest.approx(want, rel=1e-6), k


def test_branch_restart_resumes_its_own_checkpoint(runs, tmp_path):
  """Re-running a finished branch resumes its own checkpoint: the parent is not read again (even gone)."""
  import shutil
  parent_copy = tmp_path / 'parent'
  shutil.copytree(runs['parent_dir'], parent_copy)
  child = tmp_path / 'child'
  shutil.copytree(runs['child_dir'], child)
  shutil.rmtree(parent_copy)   # the relative init_from '../parent:6' now names nothing
  before = losses(child)
  result = train_lib.train(runs['child_cfg'], child, quiet=True)
  assert result['state'] == 'done' and result['step'] == FORK + DECAY
  assert losses(child) == before


# ----------------------------------------------------------------------------- errors before compile
@pytest.mark.parametrize('init_from, match', [
    ('../nowhere:6', 'does not exist'),
    ('../parent:7', r'no checkpoint of step 7 \(it has \[6, 12\]\)'),
])
def test_bad_init_from_is_a_clear_error(runs, init_from, match, tmp_path):
  cfg = cfg_of(runs['data'], train__init_from=init_from, train__schedule='wsd', train__steps=20,
               train__decay_steps=4)
  workdir = runs['root'] / f'bad-{tmp_path.name}'
  with pytest.raises(branch.BranchError, match=match):
    train_lib.train(cfg, workdir, quiet=True)
  assert not (workdir / 'config.json').exists()   # refused before the run's files were written


def test_schedule_note_when_the_parent_lr_differs_before_the_fork(runs):
  src = branch.Source(runs['parent_dir'], FORK)
  assert branch.schedule_note(src, runs['child_cfg']) is None            # same warmup and stable lr
  other = cfg_of(runs['data'], train__init_from=f'../parent:{FORK}', train__lr=2e-2, **runs['wsd'])
  assert 'parent trained step 2 at lr 0.003333' in branch.schedule_note(src, other)


def test_incomplete_parent_step_is_refused(runs, tmp_path):
  import shutil
  shutil.copytree(runs['parent_dir'], tmp_path / 'parent')
  (tmp_path / 'parent' / 'checkpoints' / str(FORK) / 'opt_state' / checkpoint.COMMIT_MARKER).unlink()
  cfg = cfg_of(runs['data'], train__init_from=f'../parent:{FORK}', **runs['wsd'])
  with pytest.raises(branch.BranchError, match=r'checkpoint of step 6 is incomplete \(no commit_success.txt in'):
    branch.find_source(cfg, tmp_path / 'child')


def test_incompatible_parent_is_refused(runs):
  parent = runs['parent_dir']
  wd = runs['root'] / 'wide'
  other_model = cfg_of(runs['data'], train__init_from=f'{parent}:{PARENT_STEPS}', model__d_model=64,
                       train__schedule='wsd', train__steps=16, train__decay_steps=4)
  with pytest.raises(checkpoint.CheckpointError, match='d_model: checkpoint 32 vs config 64'):
    train_lib.train(other_model, wd, quiet=True)
  other_seed = cfg_of(runs['data'], train__init_from=f'{parent}:{PARENT_STEPS}', train__seed=1,
                      train__schedule='wsd', train__steps=16, train__decay_steps=4)
  with pytest.raises(checkpoint.CheckpointError, match='seed: checkpoint 0 vs config 1'):
    train_lib.train(other_seed, runs['root'] / 'seed1', quiet=True)
  assert not (wd / 'config.json').exists()


def test_config_rejects_a_decay_before_the_fork(data):
  with pytest.raises(config_lib.ConfigError, match='decay would start before the fork'):
    cfg_of(data, train__init_from='../p:8', train__schedule='wsd', train__steps=10, train__decay_steps=4)
  with pytest.raises(config_lib.ConfigError, match='decay_shape'):
    cfg_of(data, train__decay_shape='exp')
  with pytest.raises(config_lib.ConfigError, match='decay_steps'):
    cfg_of(data, train__decay_steps=-1)


def test_parse_init_from():
  assert branch.parse_init_from('/a/b:12') == ('/a/b', 12)
  assert branch.parse_init_from('../abc') == ('../abc', None)
  assert branch.parse_init_from('gs://bucket/run') == ('gs://bucket/run', None)
  assert branch.resolve_workdir('../p', '/x/runs/c') == pathlib.Path('/x/runs/p')


# ----------------------------------------------------------------------------- decay shapes (closed forms)
@pytest.mark.parametrize('shape', ['linear', 'cosine', '1-sqrt'])
def test_wsd_decay_shapes(shape):
  t = config_lib.load_config('default.py', {'train.schedule': 'wsd', 'train.steps': 50, 'train.warmup_steps': 10,
                                            'train.decay_steps': 8, 'train.decay_shape': shape,
                                            'train.lr': 1.0, 'train.min_lr_ratio': 0.1}).train
  sched = optim.schedule(t, 50)
  for c in range(0, 55):
    if c < 10:
      want = c / 10
    elif c < 42:
      want = 1.0
    else:
      x = min((c - 42) / 8, 1.0)
      want = {'linear': 1 - 0.9 * x, 'cosine': 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * x)),
              '1-sqrt': 0.1 + 0.9 * (1 - math.sqrt(x))}[shape]
    assert float(sched(c)) == pytest.approx(want, abs=1e-6), (shape, c)


def test_wsd_default_is_decay_fraction_of_the_steps_after_warmup():
  """decay_steps=0 keeps the old rule: round(0.2 * (100 - 20)) = 16 decay steps from step 84."""
  t = config_lib.load_config('default.py', {'train.schedule': 'wsd', 'train.steps': 100, 'train.warmup_steps': 20,
                                            'train.lr': 1.0, 'train.min_lr_ratio': 0.0}).train
  sched = optim.schedule(t, 100)
  assert float(sched(84)) == 1.0
  assert float(sched(92)) == pytest.approx(0.5)
  assert float(sched(100)) == pytest.approx(0.0)
  json.dumps(config_lib.to_dict(config_lib.load_config('default.py')))   # the new fields serialise
