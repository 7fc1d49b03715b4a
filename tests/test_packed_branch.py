"""Packed cooldown branches (scaling/train/packed_loop.py with train.init_from): the branches of several parents
that fork at one step train in one packed run, each member from its own parent's checkpoint.

References: each branch trained alone by `train()` (the single-run path of `scaling train`, which
tests/test_branch.py holds equal to a from-scratch WSD run) from the same parent checkpoint, and an
uninterrupted packed run for the resume. The parents are two constant-lr arms trained packed (as the IsoFLOP
study trains them), to step 8 with the fork step 6 kept: a member that took the latest step would differ.
No validation split (no evals: each would be one more compile on a loaded 2-core machine).

Tolerance of packed vs single: tests/test_packed.py's (batched matmuls reduce in another order: losses within
2e-5 relative, params 1e-4).
"""

import json
import pathlib
import shutil
import signal

import jax
import numpy as np
import pytest

from scaling.config import load as config_lib
from scaling.config import pack
from scaling.launch import rundir as rd_lib
from scaling.train import branch, checkpoint
from scaling.train import loop as train_lib
from scaling.train.checkpoint import CheckpointError
from scaling.train.metrics import read_metrics
from scaling.train.packed_loop import train_packed

FORK, DECAY, PARENT_STEPS = 6, 4, 8
LRS = (1e-2, 4e-3)            # the two arms: each parent's lr, and its branch's
LOSS_RTOL = 2e-5
WORDS = 'alpha beta gamma delta epsilon zeta eta theta , and . or'.split()


def write_docs(root: pathlib.Path) -> None:
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(7)
  for i in range(4):
    (root / f'doc{i}.txt').write_text(' '.join(WORDS[j] for j in rng.integers(0, len(WORDS), 900)))


def cfg_of(root: pathlib.Path, **kw):
  base = {
      'model.vocab_size': 259, 'model.seq_len': 16, 'model.num_layers': 1, 'model.d_model': 32,
      'model.num_heads': 2, 'model.num_kv_heads': 1, 'model.d_ff': 64,
      'data.corpus': str(root / 'corpus' / '*.txt'), 'data.tokenizer': 'byte',
      'data.data_dir': str(root / 'prepared'), 'data.val_fraction': 0.0, 'train.eval_sets': '{}',
      'train.batch_size': 8, 'train.warmup_steps': 2,
      'train.min_lr_ratio': 0.1, 'train.log_every': 1, 'train.ckpt_every': 1000, 'train.peak_flops': 1e12,
  }
  base.update({k.replace('__', '.'): v for k, v in kw.items()})
  return config_lib.load_config('default.py', base)


def parent_cfg(root, lr):
  return cfg_of(root, train__lr=lr, train__schedule='constant', train__steps=PARENT_STEPS, train__ckpt_steps=(FORK,))


def branch_cfg(root, lr, parent: str, fork: int = FORK, steps: int = FORK + DECAY):
  return cfg_of(root, train__lr=lr, train__schedule='wsd', train__steps=steps, train__decay_steps=DECAY,
                train__decay_shape='linear', train__init_from=f'{parent}:{fork}')


def losses(workdir) -> dict:
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


def ckpt_steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (pathlib.Path(workdir) / 'checkpoints').iterdir() if p.name.isdigit())


def final_params(workdir, cfg):
  setup = train_lib.build_setup(cfg)
  state = train_lib.init_state(setup, 0)
  mgr = checkpoint.manager(workdir, async_save=False)
  out = checkpoint.restore(mgr, checkpoint.latest_step(workdir), params_target=state['params'])
  mgr.close()
  return jax.tree.map(np.asarray, out['params'])


@pytest.fixture(scope='module')
def parents(tmp_path_factory):
  """Two constant-lr parents (lr 1e-2, 4e-3) trained packed to step 8, their fork step 6 kept: ROOT/pa, ROOT/pb."""
  root = tmp_path_factory.mktemp('packed_branch')
  write_docs(root / 'corpus')
  result = train_packed([parent_cfg(root, lr) for lr in LRS], [root / 'pa', root / 'pb'], quiet=True)
  assert result['exit_code'] == 0
  for p in ('pa', 'pb'):
    assert ckpt_steps(root / p) == [FORK, PARENT_STEPS]
  return root


@pytest.fixture(scope='module')
def branches(parents):
  """The two branches (one per arm, each from its own parent) packed, and each trained alone."""
  root = parents
  cfgs = [branch_cfg(root, lr, f'../{p}') for lr, p in zip(LRS, ('pa', 'pb'))]
  packed = train_packed(cfgs, [root / 'packed-a', root / 'packed-b'], quiet=True)
  single = [train_lib.train(branch_cfg(root, lr, f'../{p}'), root / f'single-{p[1]}', quiet=True)
            for lr, p in zip(LRS, ('pa', 'pb'))]
  return root, cfgs, packed, single


# ----------------------------------------------------------------------------- the config rule (no training)
def test_branches_of_different_parents_share_a_pack_key_only_at_one_fork_step(tmp_path):
  a = branch_cfg(tmp_path, 1e-2, '../pa')
  b = branch_cfg(tmp_path, 4e-3, '/elsewhere/pb')   # another parent, another lr: packable
  pack.check_members([a, b])
  assert pack.pack_key(a) == pack.pack_key(b)
  c = branch_cfg(tmp_path, 1e-2, '../pa', fork=5)   # the same budget and decay, forked one step earlier
  assert pack.pack_key(a) != pack.pack_key(c)
  with pytest.raises(ValueError, match=r"fork at different steps: member 0 from '\.\./pa:6', step 6, member 1 "
                                       r"from '\.\./pa:5', step 5"):
    pack.check_members([a, c])
  plain = cfg_of(tmp_path, train__schedule='wsd', train__steps=FORK + DECAY, train__decay_steps=DECAY,
                 train__decay_shape='linear')
  with pytest.raises(ValueError, match=r'member 1 from no branch \(train.init_from unset\)'):
    pack.check_members([a, plain])


# ----------------------------------------------------------------------------- a packed member is its single branch
@pytest.mark.slow   # trains the parents, the packed branches and each branch alone
def test_each_packed_branch_equals_the_branch_trained_alone(branches):
  """Per member: the losses and lr of steps 7..10, the final params, the checkpoints, and the files
  a single branch writes (config.json with its parent, segments from the fork, summary.json's tokens and FLOPs
  with the parent's steps) are those of the same branch trained alone by train()."""
  root, cfgs, packed, single = branches
  assert packed['exit_code'] == 0 and [m['state'] for m in packed['members']] == ['done', 'done']
  trajectories = []
  for p, cfg, res, ref in zip(('a', 'b'), cfgs, packed['members'], single):
    wd, swd = root / f'packed-{p}', root / f'single-{p}'
    a, b = losses(wd), losses(swd)
    assert sorted(a) == sorted(b) == list(range(FORK + 1, FORK + DECAY + 1))   # the branch trained the decay only
    np.testing.assert_allclose([a[s] for s in sorted(a)], [b[s] for s in sorted(b)], rtol=LOSS_RTOL)
    trajectories.append([a[s] for s in sorted(a)])
    lr_a = {r['step']: r['train/lr'] for r in read_metrics(wd) if 'train/lr' in r}
    lr_b = {r['step']: r['train/lr'] for r in read_metrics(swd) if 'train/lr' in r}
    assert lr_a == pytest.approx(lr_b, rel=1e-6)
    x, y = final_params(wd, cfg), final_params(swd, cfg)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6), x, y)
    assert ckpt_steps(wd) == ckpt_steps(swd) == [FORK + DECAY]
    assert json.loads((wd / 'config.json').read_text()) == json.loads((swd / 'config.json').read_text())
    assert rd_lib.lineage(json.loads((wd / 'config.json').read_text())) == (f'p{p}', FORK)   # what collect reads
    summ = json.loads((wd / 'summary.json').read_text())
    assert summ == res and summ['state'] == 'done' and summ['step'] == FORK + DECAY
    for k in ('tokens', 'flops', 'params', 'flops_per_token'):
      assert summ[k] == ref[k], k
    assert summ['tokens'] == (FORK + DECAY) * 8 * 16
    assert [(s['start'], s['end']) for s in summ['segments']] == [(s['start'], s['end']) for s in ref['segments']] \
        == [(FORK, FORK + DECAY)]
  # the arms differ (another lr from another parent): the comparison above is not of one run twice
  assert abs(trajectories[0][-1] - trajectories[1][-1]) > 1e-3


# ----------------------------------------------------------------------------- resume
@pytest.mark.slow   # two packed branch runs
def test_a_stopped_packed_branch_group_resumes_from_its_own_checkpoints(branches, tmp_path, monkeypatch):
  """A SIGTERM after step 8 saves both members at 8 (exit 75); their parents are then deleted, and the re-run
  resumes each member from its own checkpoint and ends with the uninterrupted packed run's losses."""
  from scaling.train import runtime
  root, cfgs, ref, _ = branches
  for p in ('pa', 'pb'):
    shutil.copytree(root / p, tmp_path / p)
  cfgs = [branch_cfg(root, lr, f'../{p}') for lr, p in zip(LRS, ('pa', 'pb'))]   # root's prepared data
  wds = [tmp_path / 'a', tmp_path / 'b']
  real = runtime.StopFlag.should_stop

  def stop_at_8(self, step):
    if step == 8:
      self.signum = signal.SIGTERM
      return True
    return real(self, step)
  monkeypatch.setattr(runtime.StopFlag, 'should_stop', stop_at_8)
  first = train_packed(cfgs, wds, quiet=True)
  assert first['exit_code'] == 75 and [r['state'] for r in first['members']] == ['preempted'] * 2
  assert [ckpt_steps(w) for w in wds] == [[8], [8]]
  monkeypatch.setattr(runtime.StopFlag, 'should_stop', real)
  for p in ('pa', 'pb'):   # a resume reads the members' own checkpoints, never the parents again
    shutil.rmtree(tmp_path / p)
  second = train_packed(cfgs, wds, quiet=True)
  assert second['exit_code'] == 0
  for wd, p, a, b in zip(wds, ('a', 'b'), second['members'], ref['members']):
    la, lb = losses(wd), losses(root / f'packed-{p}')
    assert sorted(la) == list(range(FORK + 1, FORK + DECAY + 1))
    np.testing.assert_array_equal([la[s] for s in sorted(la)], [lb[s] for s in sorted(lb)])
    assert a['tokens'] == b['tokens'] and a['train/loss'] == b['train/loss']
    assert [(s['start'], s['end']) for s in a['segments']] == [(FORK, 8), (8, FORK + DECAY)]


# ----------------------------------------------------------------------------- refusals, before any data or compile
def test_members_forking_at_different_steps_are_refused(tmp_path):
  cfgs = [branch_cfg(tmp_path, 1e-2, '../pa'), branch_cfg(tmp_path, 4e-3, '../pb', fork=8, steps=12)]
  wds = [tmp_path / 'a', tmp_path / 'b']
  with pytest.raises(config_lib.ConfigError, match=r"fork at different steps: member 0 from '\.\./pa:6', step 6, "
                                                   r"member 1 from '\.\./pb:8', step 8"):
    train_packed(cfgs, wds, quiet=True)
  assert not any(w.exists() for w in wds)


def fake_parent(workdir: pathlib.Path, step: int) -> None:
  """A parent workdir as branch.find_source sees it (no array is read there): step `step` saved, committed."""
  d = workdir / checkpoint.CKPT_DIR / str(step)
  for sub in (d, *(d / item for item in checkpoint.ITEMS)):
    sub.mkdir(parents=True, exist_ok=True)
    (sub / checkpoint.COMMIT_MARKER).write_text('')


def test_a_missing_parent_checkpoint_is_refused_naming_the_member(tmp_path):
  """Member 0's parent has step 6; member 1's ran on to 8 without keeping 6, or is not there: refused before
  any data is read or a member's workdir is made."""
  fake_parent(tmp_path / 'pa', FORK)
  fake_parent(tmp_path / 'pb', 8)
  cfgs = [branch_cfg(tmp_path, 1e-2, '../pa'), branch_cfg(tmp_path, 4e-3, '../pb')]
  wds = [tmp_path / 'a', tmp_path / 'b']
  with pytest.raises(branch.BranchError, match=rf'packed member 1 \({wds[1]}\): .*the parent has no checkpoint of '
                                               rf'step 6 \(it has \[8\]\)'):
    train_packed(cfgs, wds, quiet=True)
  cfgs[1] = branch_cfg(tmp_path, 4e-3, '../nowhere')
  with pytest.raises(branch.BranchError, match=r'packed member 1 .*the parent workdir .*nowhere does not exist'):
    train_packed(cfgs, wds, quiet=True)
  assert not any(w.exists() for w in wds)


@pytest.mark.slow   # the parents' fixture trains
def test_a_parent_of_another_model_is_refused_naming_the_member(parents, tmp_path):
  """Parent b's checkpoint says d_model 64 (its meta edited, and resealed): refused before anything is restored or
  written."""
  root = parents
  shutil.copytree(root / 'pb', tmp_path / 'pb')
  meta = tmp_path / 'pb' / 'checkpoints' / str(FORK) / 'meta' / 'metadata'
  m = json.loads(meta.read_text())
  m['model']['d_model'] = 64
  meta.write_text(json.dumps(m))
  if (meta.parent.parent / 'checksums.json').exists():   # a sealed step: its manifest made anew, as if saved so
    checkpoint.seal(meta.parent.parent)
  cfgs = [branch_cfg(root, 1e-2, f'{root / "pa"}'), branch_cfg(root, 4e-3, '../pb')]
  wds = [tmp_path / 'a', tmp_path / 'b']
  with pytest.raises(CheckpointError, match=r'packed member 1 .*pb \(train.init_from\) holds a checkpoint of an '
                                            r'incompatible model \(d_model: checkpoint 64 vs config 32\)'):
    train_packed(cfgs, wds, quiet=True)
  assert not any((w / 'config.json').exists() for w in wds)
