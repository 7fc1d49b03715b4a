"""CompleteP (model.parametrization='completep', Dey et al. 2025 Table 1 at alpha = 1; scaling/model/parametrization.py):
the multipliers against a table written by hand at two depths and two widths, SP bit for bit at the base shape
(init, losses and params of a few training steps), the forward at 4x the base depth against SP with the
residual factor folded into the output projections, and the optimizer's step against a direct AdamW with
per-parameter lr, weight decay and eps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.config.load import ConfigError
from scaling.model import parametrization as par_lib
from scaling.model import transformer as model_lib
from scaling.train import optim, sharding
from scaling.train import step as step_lib

BASE_WIDTH, BASE_DEPTH = 32, 2


def _cfg(tiny_cfg, d_model=32, layers=2, parametrization='completep', **kw):
  return tiny_cfg(d_model=d_model, num_layers=layers, num_heads=4, num_kv_heads=2, d_ff=2 * d_model,
                  parametrization=parametrization, mup_base_width=BASE_WIDTH, mup_base_depth=BASE_DEPTH, **kw)


def _dims(cfg):
  return model_lib.ModelDims.from_config(cfg.model)


# (width, depth) -> group -> (init, lr, wd, eps); residual multiplier. m = width / 32, d = depth / 2:
# hidden (m^-1/2, 1/m, m, 1/(m d)), hidden_out (m^-1/2 sqrt(d), 1/m, m, 1/(m d)), block norms eps 1/(m d)
ONE = (1.0, 1.0, 1.0, 1.0)
TABLE = {
    (32, 2): ({'hidden': ONE, 'hidden_out': ONE, 'block_vector': ONE}, 1.0),
    (128, 2): ({'hidden': (0.5, 0.25, 4.0, 0.25), 'hidden_out': (0.5, 0.25, 4.0, 0.25),
                'block_vector': (1.0, 1.0, 1.0, 0.25)}, 1.0),
    (32, 8): ({'hidden': (1.0, 1.0, 1.0, 0.25), 'hidden_out': (2.0, 1.0, 1.0, 0.25),
               'block_vector': (1.0, 1.0, 1.0, 0.25)}, 0.25),
    (128, 8): ({'hidden': (0.5, 0.25, 4.0, 1 / 16), 'hidden_out': (1.0, 0.25, 4.0, 1 / 16),
                'block_vector': (1.0, 1.0, 1.0, 1 / 16)}, 0.25),
}


def test_multipliers_equal_the_hand_written_table(tiny_cfg):
  for (width, depth), (groups, residual) in TABLE.items():
    dims = _dims(_cfg(tiny_cfg, width, depth))
    got = par_lib.multipliers(dims)
    want = {'embedding': ONE, 'vector': ONE, 'readout': ONE, **groups}
    assert set(got) == set(want)
    for g in want:
      assert tuple(got[g]) == pytest.approx(want[g], rel=1e-12), (width, depth, g)
    assert par_lib.residual_multiplier(dims) == residual
    assert par_lib.output_multiplier(dims) == BASE_WIDTH / width
    # SP at any shape, and μP (no depth rule), have residual 1 and no eps / wd rule
    for par in ('sp', 'mup'):
      other = _dims(_cfg(tiny_cfg, width, depth, par))
      assert par_lib.residual_multiplier(other) == 1.0
      assert {v.wd for v in par_lib.multipliers(other).values()} == {v.eps for v in par_lib.multipliers(other).values()} == {1.0}
  # the groups by path: block norms vs the final norm, output projections vs the other hidden matrices
  assert par_lib.param_group(('blocks', 'attn_norm', 'scale')) == 'block_vector'
  assert par_lib.param_group(('final_norm', 'bias')) == 'vector'
  assert [par_lib.param_group(('blocks', n)) for n in ('wq_DHK', 'wo_HKD', 'w_up_DF', 'w_down_FD')] == \
      ['hidden', 'hidden_out', 'hidden', 'hidden_out']


def _losses_and_params(cfg, steps=3):
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  setup = step_lib.build_setup(cfg, mesh=mesh)
  state = step_lib.init_state(setup, seed=0)
  init = jax.tree.map(np.asarray, state['params'])
  step = step_lib.jit_train_step(setup, ('inputs', 'targets'))
  tok = np.random.default_rng(0).integers(0, 97, (steps, cfg.train.batch_size, cfg.model.seq_len + 1)).astype(np.int32)
  losses = []
  for t in tok:
    state, m = step(state, sharding.global_batch({'inputs': t[:, :-1], 'targets': t[:, 1:]}, mesh))
    losses.append(float(m['loss']))
  return init, losses, jax.tree.map(np.asarray, state['params'])


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_completep_at_base_width_and_depth_is_sp_bit_for_bit(tiny_cfg, optimizer):
  """Same seed, real initializers and training steps: identical init, losses and params after 3 steps."""
  runs = {}
  for par in ('sp', 'completep'):
    cfg = _cfg(tiny_cfg, parametrization=par)
    cfg.train.batch_size, cfg.train.optimizer, cfg.train.warmup_steps = 4, optimizer, 1
    runs[par] = _losses_and_params(cfg)
  (i_sp, l_sp, p_sp), (i_cp, l_cp, p_cp) = runs['sp'], runs['completep']
  jax.tree.map(np.testing.assert_array_equal, i_sp, i_cp)
  assert l_sp == l_cp and l_sp[0] != l_sp[-1]
  jax.tree.map(np.testing.assert_array_equal, p_sp, p_cp)


def test_completep_at_4x_depth_is_sp_with_the_residual_factor_folded(tiny_cfg):
  """8 layers = 4 x the base depth (base width): the init is SP's with the output projections x sqrt(4) (the same
  draws), and the forward equals SP's with wo and w_down x 1/4 (each branch is linear in its output projection)."""
  sp = model_lib.build_model(_cfg(tiny_cfg, 32, 8, 'sp').model, seed=0)
  cp = model_lib.build_model(_cfg(tiny_cfg, 32, 8).model, seed=0)
  p_sp, p_cp = (nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in (sp, cp))
  for name in ('wo_HKD', 'w_down_FD'):
    np.testing.assert_array_equal(p_cp['blocks'][name], 2.0 * p_sp['blocks'][name])
  for name in ('wq_DHK', 'wk_DGK', 'wv_DGK', 'w_gate_DF', 'w_up_DF'):
    np.testing.assert_array_equal(p_cp['blocks'][name], p_sp['blocks'][name])
  np.testing.assert_array_equal(p_cp['embed_VD'], p_sp['embed_VD'])
  folded = jax.tree.map(lambda x: x, p_cp)
  for name in ('wo_HKD', 'w_down_FD'):
    folded['blocks'][name] = p_cp['blocks'][name] * 0.25
  graphdef, state = nnx.split(sp)
  nnx.replace_by_pure_dict(state, folded)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 97, (2, 16)), jnp.int32)
  np.testing.assert_allclose(np.asarray(cp(tokens)), np.asarray(nnx.merge(graphdef, state)(tokens)),
                             rtol=1e-5, atol=1e-5)


def test_completep_adamw_step_against_a_direct_implementation(tiny_cfg):
  """4x the base width and depth, 2 steps with small gradients (so eps matters): every parameter follows
  p <- p - lr c_lr (Adam(g; eps c_eps) + wd c_wd p [decayed]) with the hand-written multipliers of TABLE (PyTorch
  parameter groups: lr c_lr and weight decay wd c_wd, so a hidden matrix decays at lr / m x wd m = lr wd)."""
  cfg = _cfg(tiny_cfg, 128, 8)
  t = cfg.train
  t.lr, t.weight_decay, t.eps, t.warmup_steps, t.schedule, t.grad_clip = 0.01, 0.2, 1e-3, 0, 'constant', 0.0
  params = nnx.to_pure_dict(nnx.state(model_lib.build_model(cfg.model, seed=0), nnx.Param))
  rng = np.random.default_rng(1)
  grads = [jax.tree.map(lambda x: jnp.asarray(1e-3 * rng.normal(size=x.shape), jnp.float32), params)
           for _ in range(2)]
  tx, _ = optim.make_optimizer(t, 10, _dims(cfg))
  state, p = tx.init(params), params
  for g in grads:
    u, state = jax.jit(tx.update)(g, state, p)
    p = jax.tree.map(lambda a, b: a + b, p, u)
  groups = {**TABLE[(128, 8)][0], 'embedding': ONE, 'vector': ONE}
  cases = [(('blocks', 'wq_DHK'), 'hidden', True), (('blocks', 'w_down_FD'), 'hidden_out', True),
           (('blocks', 'mlp_norm', 'scale'), 'block_vector', False), (('final_norm', 'scale'), 'vector', False),
           (('embed_VD',), 'embedding', True)]
  for path, group, decayed in cases:
    pick = lambda tree: np.asarray(tree[path[0]] if len(path) == 1 else
                                   tree[path[0]][path[1]] if len(path) == 2 else tree[path[0]][path[1]][path[2]])
    _, c_lr, c_wd, c_eps = groups[group]
    want, m, v = pick(params).astype(np.float64), 0.0, 0.0
    for k, g in enumerate(grads, start=1):
      g = pick(g).astype(np.float64)
      m, v = t.b1 * m + (1 - t.b1) * g, t.b2 * v + (1 - t.b2) * g * g
      adam = (m / (1 - t.b1 ** k)) / (np.sqrt(v / (1 - t.b2 ** k)) + t.eps * c_eps)
      want = want - t.lr * c_lr * (adam + (t.weight_decay * c_wd * want if decayed else 0.0))
    np.testing.assert_allclose(pick(p), want, rtol=2e-5, atol=1e-8, err_msg=str(path))


def test_bad_completep_config_fails_at_load(tiny_cfg):
  with pytest.raises(ConfigError, match="model.parametrization='complete' is unknown; choose one of sp, mup, completep"):
    tiny_cfg(parametrization='complete')
  with pytest.raises(ConfigError, match='model.mup_base_depth must be an integer >= 0'):
    tiny_cfg(parametrization='completep', mup_base_depth=-2)


def test_hf_export_and_resume_know_completep(tiny_cfg, tmp_path):
  """Llama has no residual factor: a CompleteP model off its base depth is refused by the export (at base depth
  it is SP and exports); a resume across another base depth is refused like μP's base width."""
  from scaling.inference.hf_export import HFError, check_llama_compatible
  from scaling.train.checkpoint import CheckpointError, check_compatible
  m = tiny_cfg().model
  m.parametrization, m.mup_base_depth = 'completep', m.num_layers
  check_llama_compatible(m)
  m.mup_base_depth = 2 * m.num_layers
  with pytest.raises(HFError, match='residual branch'):
    check_llama_compatible(m)
  saved = {k: m[k] for k in ('num_layers', 'd_model', 'parametrization', 'mup_base_depth')}
  with pytest.raises(CheckpointError, match='mup_base_depth'):
    check_compatible({'model': saved}, {**saved, 'mup_base_depth': m.num_layers}, tmp_path)
