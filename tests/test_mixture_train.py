"""A data mixture in preparing and training: one tokenizer and each source's own split; the step's per-source
sums (with microbatches too); a whole run with a stage, then a resume with new weights (slow)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from scaling.config.load import load_config

WORDS = {'alpha': 'apple avocado almond apricot anchovy ', 'beta': 'banana bramble biscuit brioche borage '}


def _corpus(root, name: str, docs: int, repeat: int = 30) -> str:
  d = os.path.join(root, name)
  if os.path.isdir(d):
    return os.path.join(d, '*.txt')
  os.makedirs(d)
  for i in range(docs):
    with open(os.path.join(d, f'{name}{i:02d}.txt'), 'w') as f:
      f.write(f'{name} document {i}: ' + WORDS[name] * (repeat + i) + ('\u00e9' if name == 'beta' else ''))
  return os.path.join(d, '*.txt')


def _cfg(tmp_path, tokenizer='char', **over):
  sources = {n: _corpus(tmp_path / 'corpus', n, 12) for n in WORDS}
  return load_config(None, {'data.mixture': str(sources), 'data.mixture_weights': 'alpha=0.5,beta=0.5',
                            'data.tokenizer': tokenizer, 'data.val_fraction': 0.2, **over})


def test_prepare_gives_one_tokenizer_and_each_source_its_own_split(tmp_path, monkeypatch):
  from scaling.data import shards
  from scaling.data.mixture import prepare_mixture
  from scaling.data.tokenizer import load_tokenizer
  monkeypatch.setenv('SCALING_CACHE', str(tmp_path / 'cache'))
  cfg = _cfg(tmp_path)
  out = prepare_mixture(cfg.data, verbose=False)
  toks = {n: load_tokenizer(s['data_dir']) for n, s in out['sources'].items()}
  assert len({t.sha256 for t in toks.values()}) == 1   # one tokenizer ...
  assert toks['alpha'].encode('\u00e9') and 'b' in toks['alpha'].decode(toks['alpha'].encode('b'))   # ... of both
  for n, s in out['sources'].items():
    val = [d['name'] for d in shards.read_split(s['data_dir'])['val_documents']]
    assert len(val) == round(0.2 * 12) and all(v.startswith(n) for v in val)   # its own held-out documents
  again = prepare_mixture(_cfg(tmp_path, **{'data.mixture_weights': 'alpha=0.9,beta=0.1'}).data, verbose=False)
  assert all(s['skipped'] for s in again['sources'].values())   # the weights prepare nothing new
  assert {n: s['data_dir'] for n, s in again['sources'].items()} == {n: s['data_dir'] for n, s in out['sources'].items()}


@pytest.mark.slow   # two compiles of the step
def test_the_step_gives_per_source_sums_that_make_the_batch_loss(tiny_cfg):
  import jax
  import jax.numpy as jnp

  from scaling.train.step import build_setup, init_state, jit_train_step
  rng = np.random.default_rng(1)
  B, T, S = 16, 8, 2   # 16 rows: microbatches of 8 split over the tests' 8 CPU devices
  batch = {'inputs': rng.integers(0, 64, (B, T)).astype(np.int32), 'targets': rng.integers(0, 64, (B, T)).astype(np.int32),
           'source': np.asarray(jax.nn.one_hot(jnp.asarray([1, 0, 1, 1] * 4), S))}
  out = {}
  for M in (1, 2):
    cfg = tiny_cfg(vocab_size=64, seq_len=T)
    with cfg.train.unlocked():
      cfg.train.batch_size, cfg.train.microbatches, cfg.train.loss_chunk = B, M, 0
    setup = build_setup(cfg)
    step = jit_train_step(setup, tuple(sorted(batch)))
    _, m = step(init_state(setup, 0), {k: jnp.asarray(v) for k, v in batch.items()})
    nll, count = np.asarray(m['source_nll']), np.asarray(m['source_count'])
    np.testing.assert_allclose(count, [4 * T, 12 * T])
    np.testing.assert_allclose(nll.sum() / count.sum(), float(m['loss']), rtol=1e-5)   # token-weighted
    out[M] = nll
  np.testing.assert_allclose(out[1], out[2], rtol=1e-5)   # microbatches sum the same rows


@pytest.mark.slow
def test_a_run_with_a_stage_then_a_resume_with_new_weights(tmp_path, monkeypatch):
  from scaling.config.history import read_history
  from scaling.train.loop import train
  from scaling.train.metrics import read_metrics
  monkeypatch.setenv('SCALING_CACHE', str(tmp_path / 'cache'))
  small = {'model.num_layers': 1, 'model.d_model': 16, 'model.num_heads': 2, 'model.num_kv_heads': 1,
           'model.seq_len': 8, 'train.batch_size': 8, 'train.eval_every': 4, 'train.eval_batches': 1,
           'train.log_every': 2, 'train.ckpt_every': 4, 'train.warmup_steps': 1, 'train.eval_sets': '{}',
           'sample.prompts': '()', 'data.tokenizer': 'byte', 'data.mixture_max_epochs': 4.0}
  work = tmp_path / 'run'
  cfg = _cfg(tmp_path, 'byte', **small, **{'train.steps': 6, 'data.mixture_weights': 'alpha=0.25,beta=0.75',
                                           'data.mixture_stages': '4:alpha=0.75,beta=0.25'})
  assert train(cfg, work, quiet=True)['state'] == 'done'
  # the resume edits the stage in force: its weights apply from the resume step on (steps 4-5 keep the old ones)
  cfg = _cfg(tmp_path, 'byte', **small, **{'train.steps': 6, 'data.mixture_weights': 'alpha=0.25,beta=0.75',
                                           'data.mixture_stages': '4:alpha=0.5,beta=0.5'})
  done = train(cfg, work, quiet=True, extend=8)
  hist = done['mixture']['history']
  assert [(h['step'], h['why']) for h in hist] == [(0, 'start'), (4, 'stage'), (6, 'changed')]
  assert hist[-1]['weights'] == 'alpha=0.5,beta=0.5'
  assert done['mixture']['positions'] == {'alpha': 4 * 2 + 2 * 6 + 2 * 4, 'beta': 4 * 6 + 2 * 2 + 2 * 4}
  lines = read_history(work)
  assert [e['how'] for e in lines] == ['mixture', 'extend'] and lines[0]['step'] == 6
  assert lines[0]['fields'] == {'data.mixture_stages': ['4:alpha=0.75,beta=0.25', '4:alpha=0.5,beta=0.5']}
  last = read_metrics(work)[-1]
  for n in WORDS:
    assert f'eval/{n}/bpb' in last and f'train/{n}/loss' in last and f'eval/{n}/bpb' in done
  assert last['eval/bpb'] == pytest.approx((last['eval/alpha/bpb'] + last['eval/beta/bpb']) / 2)
  assert json.loads((work / 'config.json').read_text())['data']['mixture_stages'] == '4:alpha=0.5,beta=0.5'
