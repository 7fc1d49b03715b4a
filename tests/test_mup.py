"""Tests of μP (model.parametrization='mup'): scaling/model/transformer.py role table and forward multipliers,
scaling/train/optim.py per-role learning rates.

References: multipliers written out by hand for two widths; the SP model (bit for bit at the base
width; with the multipliers folded into its weights at 4x the base width); the SP optimizer's update.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.model import transformer as model_lib
from scaling.train import optim

BASE = 32


def _cfg(tiny_cfg, d_model, parametrization, **kw):
  return tiny_cfg(d_model=d_model, num_heads=4, num_kv_heads=2, d_ff=2 * d_model, parametrization=parametrization,
                  mup_base_width=BASE, **kw)


def _dims(tiny_cfg, d_model, parametrization='mup', **kw):
  return model_lib.ModelDims.from_config(_cfg(tiny_cfg, d_model, parametrization, **kw).model)


def test_role_multipliers_equal_the_hand_written_table(tiny_cfg):
  # base width 32: m = 1 -> every factor 1; d_model 128: m = 4 -> hidden init 1/sqrt(4) = 0.5, lr 1/4
  want = {
      32: {'embedding': (1.0, 1.0), 'hidden': (1.0, 1.0), 'readout': (1.0, 1.0), 'vector': (1.0, 1.0)},
      128: {'embedding': (1.0, 1.0), 'hidden': (0.5, 0.25), 'readout': (1.0, 1.0), 'vector': (1.0, 1.0)},
  }
  forward = {32: (1.0, 1.0), 128: (0.25, 1.0)}   # (logits multiplier 1/m, attention logits: no base head dim -> 1)
  for width in (32, 128):
    dims = _dims(tiny_cfg, width)
    assert model_lib.role_multipliers(dims) == want[width], width
    assert (model_lib.output_multiplier(dims), model_lib.attention_logit_multiplier(dims)) == forward[width]
    sp = _dims(tiny_cfg, width, 'sp')
    assert set(model_lib.role_multipliers(sp).values()) == {(1.0, 1.0)}
    assert (model_lib.output_multiplier(sp), model_lib.attention_logit_multiplier(sp)) == (1.0, 1.0)
  # every parameter of every variant has a role
  for kw in ({}, dict(position='learned', tied_embeddings=False, norm='layernorm', mlp='gelu')):
    params = nnx.to_pure_dict(nnx.state(model_lib.abstract_model(_cfg(tiny_cfg, 128, 'mup', **kw).model)))
    mults = jax.tree.leaves(optim.lr_multipliers(params, _dims(tiny_cfg, 128, **kw)))
    assert sorted(set(mults)) == [0.25, 1.0]


def test_attention_logit_multiplier_follows_the_head_dim_not_the_width(tiny_cfg):
  # 4 heads at d_model 32 -> head_dim 8 = the base head dim. Growing the head dim (4 heads at d_model 128:
  # K = 32): sqrt(8 / 32) = 0.5, so q.k / sqrt(32) x 0.5 = q.k sqrt(8) / 32 ~ 1/K. Growing the head count
  # at a fixed head dim (16 heads of 8 at d_model 128): factor 1, although the width grew 4x
  assert model_lib.attention_logit_multiplier(_dims(tiny_cfg, 32, mup_base_head_dim=8)) == 1.0
  assert model_lib.attention_logit_multiplier(_dims(tiny_cfg, 128, mup_base_head_dim=8)) == 0.5
  assert model_lib.attention_logit_multiplier(_dims(tiny_cfg, 128, mup_base_head_dim=16)) == pytest.approx(0.5 ** 0.5)
  wide_heads = model_lib.ModelDims.from_config(
      tiny_cfg(d_model=128, num_heads=16, num_kv_heads=4, head_dim=8, d_ff=256, parametrization='mup',
               mup_base_width=BASE, mup_base_head_dim=8).model)
  assert (wide_heads.width_mult, model_lib.attention_logit_multiplier(wide_heads)) == (4.0, 1.0)
  assert model_lib.attention_logit_multiplier(_dims(tiny_cfg, 128, 'sp', mup_base_head_dim=8)) == 1.0
  with pytest.raises(Exception, match='mup_base_head_dim'):
    _dims(tiny_cfg, 128, mup_base_head_dim=-2)


def _step(tx, params, grads):
  updates, _ = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
  return updates


@pytest.mark.parametrize('kw', [{}, dict(tied_embeddings=False, position='learned')])
def test_mup_at_base_width_is_sp_bit_for_bit(tiny_cfg, kw):
  """Same seed, real initializers: identical parameters, logits and optimizer updates."""
  sp_cfg, mup_cfg = _cfg(tiny_cfg, BASE, 'sp', **kw), _cfg(tiny_cfg, BASE, 'mup', **kw)
  sp, mup = model_lib.build_model(sp_cfg.model, seed=3), model_lib.build_model(mup_cfg.model, seed=3)
  p_sp = nnx.to_pure_dict(nnx.state(sp, nnx.Param))
  p_mup = nnx.to_pure_dict(nnx.state(mup, nnx.Param))
  jax.tree.map(np.testing.assert_array_equal, p_sp, p_mup)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 16)), jnp.int32)
  np.testing.assert_array_equal(np.asarray(sp(tokens)), np.asarray(mup(tokens)))
  grads = jax.tree.map(lambda x: jnp.asarray(np.random.default_rng(1).normal(size=x.shape), x.dtype), p_sp)
  tx_sp, _ = optim.make_optimizer(sp_cfg.train, 10, sp.dims)
  tx_mup, _ = optim.make_optimizer(mup_cfg.train, 10, mup.dims)
  jax.tree.map(np.testing.assert_array_equal, _step(tx_sp, p_sp, grads), _step(tx_mup, p_mup, grads))


def test_mup_init_and_forward_at_4x_width_match_sp_with_folded_multipliers(tiny_cfg):
  """d_model 128 = 4 x base, same seed: the μP init is the SP init with hidden matrices x 0.5 (the
  same random draws), and the μP forward equals the SP forward of weights with the multipliers folded
  in (wq x sqrt(8 / 32) for the attention logits, the untied head x 1/4 for the logits)."""
  kw = dict(tied_embeddings=False, mup_base_head_dim=8)   # head_dim 32 = 4 x the base 8: attention x 0.5
  sp = model_lib.build_model(_cfg(tiny_cfg, 128, 'sp', **kw).model, seed=0)
  mup = model_lib.build_model(_cfg(tiny_cfg, 128, 'mup', **kw).model, seed=0)
  p_sp = nnx.to_pure_dict(nnx.state(sp, nnx.Param))
  p_mup = nnx.to_pure_dict(nnx.state(mup, nnx.Param))
  for name in ('wq_DHK', 'wk_DGK', 'wv_DGK', 'wo_HKD', 'w_gate_DF', 'w_up_DF', 'w_down_FD'):
    np.testing.assert_allclose(p_mup['blocks'][name], 0.5 * p_sp['blocks'][name], rtol=1e-6, err_msg=name)
  for name in ('embed_VD', 'lm_head_DV'):
    np.testing.assert_array_equal(p_mup[name], p_sp[name])
  folded = jax.tree.map(lambda x: x, p_mup)
  folded['blocks']['wq_DHK'] = p_mup['blocks']['wq_DHK'] * 0.5
  folded['lm_head_DV'] = p_mup['lm_head_DV'] * 0.25
  graphdef, state = nnx.split(sp)
  nnx.replace_by_pure_dict(state, folded)
  sp_folded = nnx.merge(graphdef, state)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 16)), jnp.int32)
  np.testing.assert_allclose(np.asarray(mup(tokens)), np.asarray(sp_folded(tokens)), rtol=1e-5, atol=1e-6)


def test_mup_learning_rates_and_weight_decay_per_role(tiny_cfg):
  """At 4x the base width one AdamW step of μP is the SP step x 1/4 on hidden matrices and x 1 on
  the rest, and with zero gradients (decay only) a hidden matrix shrinks by lr * wd / 4, an
  embedding by lr * wd: the decay follows each parameter's own learning rate."""
  over = {'train.lr': 0.1, 'train.weight_decay': 0.5, 'train.warmup_steps': 0, 'train.schedule': 'constant',
          'train.grad_clip': 0.0}
  cfgs = {}
  for par in ('sp', 'mup'):
    cfg = _cfg(tiny_cfg, 128, par)
    for k, v in over.items():
      sec, key = k.split('.')
      cfg[sec][key] = v
    cfgs[par] = cfg
  dims = {p: model_lib.ModelDims.from_config(c.model) for p, c in cfgs.items()}
  params = nnx.to_pure_dict(nnx.state(model_lib.abstract_model(cfgs['sp'].model)))
  params = jax.tree.map(lambda s: jnp.full(s.shape, 2.0, s.dtype), params)
  rng = np.random.default_rng(2)
  grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
  tx = {p: optim.make_optimizer(cfgs[p].train, 10, dims[p])[0] for p in cfgs}
  u_sp, u_mup = _step(tx['sp'], params, grads), _step(tx['mup'], params, grads)
  for name in ('wq_DHK', 'w_down_FD'):
    np.testing.assert_allclose(u_mup['blocks'][name], 0.25 * u_sp['blocks'][name], rtol=1e-6)
  np.testing.assert_array_equal(u_mup['embed_VD'], u_sp['embed_VD'])
  np.testing.assert_array_equal(u_mup['final_norm']['scale'], u_sp['final_norm']['scale'])
  zero = jax.tree.map(jnp.zeros_like, grads)
  u = _step(tx['mup'], params, zero)
  np.testing.assert_allclose(u['blocks']['wq_DHK'], -2.0 * 0.1 * 0.5 / 4, rtol=1e-6)   # -p * lr * wd / m
  np.testing.assert_allclose(u['embed_VD'], -2.0 * 0.1 * 0.5, rtol=1e-6)               # -p * lr * wd
  np.testing.assert_array_equal(u['final_norm']['scale'], 0.0)                          # no decay on norms


def test_bad_parametrization_fails_at_load(tiny_cfg):
  from scaling.config.load import ConfigError
  with pytest.raises(ConfigError, match="model.parametrization='mu'.*sp, mup"):
    tiny_cfg(parametrization='mu')
  with pytest.raises(ConfigError, match='model.mup_base_width'):
    tiny_cfg(mup_base_width=-1)


def test_checkpoint_compatibility_compares_the_parametrization(tiny_cfg, tmp_path):
  """A μP checkpoint is refused by an SP config (and one of another base shape by μP), naming the field;
  SP checkpoints ignore the unused base fields, and checkpoints saved before μP existed are accepted."""
  import dataclasses

  from scaling.train import checkpoint
  mup = dataclasses.asdict(_dims(tiny_cfg, 128, mup_base_head_dim=8))
  sp = dataclasses.asdict(_dims(tiny_cfg, 128, 'sp'))
  checkpoint.check_compatible({'model': mup}, mup, tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match="parametrization: checkpoint 'mup' vs config 'sp'"):
    checkpoint.check_compatible({'model': mup}, sp, tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match='mup_base_width: checkpoint 32 vs config 64'):
    checkpoint.check_compatible({'model': mup}, dict(mup, mup_base_width=64), tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match='mup_base_head_dim: checkpoint 8 vs config 16'):
    checkpoint.check_compatible({'model': mup}, dict(mup, mup_base_head_dim=16), tmp_path)
  checkpoint.check_compatible({'model': sp}, dict(sp, mup_base_width=64), tmp_path)   # unused under sp
  old = {k: v for k, v in sp.items() if k not in ('parametrization', 'mup_base_width', 'mup_base_head_dim')}
  checkpoint.check_compatible({'model': old}, sp, tmp_path)
