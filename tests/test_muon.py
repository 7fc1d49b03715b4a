"""Muon (train.optimizer='muon', scaling/train/muon.py): the update against a direct numpy implementation of
Muon (momentum, Newton-Schulz, shape scale, decay) and of AdamW for the rest, which parameters take which
against a hand-written list, an interrupted and resumed run against the uninterrupted one, the optimizer FLOPs
against a hand count, bad input at load time.
"""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.config import load as config_lib
from scaling.config.load import ConfigError
from scaling.model import accounting
from scaling.model import transformer as model_lib
from scaling.train import checkpoint, muon, optim
from scaling.train import loop as train_lib
from scaling.train import step as step_lib
from scaling.train.metrics import read_metrics

NS = (3.4445, -4.7750, 2.0315)   # Jordan et al. 2024
# each hidden matrix of the tiny model (D 32, H 4, G 2, K 8, F 64) as L matrices [fan_in, fan_out], by hand
AS_MATRICES = {
    'wq_DHK': lambda x: x.reshape(x.shape[0], 32, 32), 'wk_DGK': lambda x: x.reshape(x.shape[0], 32, 16),
    'wv_DGK': lambda x: x.reshape(x.shape[0], 32, 16), 'wo_HKD': lambda x: x.reshape(x.shape[0], 32, 32),
    'w_gate_DF': lambda x: x, 'w_up_DF': lambda x: x, 'w_down_FD': lambda x: x,
}


def newton_schulz(g, steps):
  """The quintic iteration on the Frobenius-normalized matrix, on its wide orientation (float64)."""
  a, b, c = NS
  x = g / (np.linalg.norm(g) + 1e-8)
  tall = x.shape[0] > x.shape[1]
  x = x.T if tall else x
  for _ in range(steps):
    gram = x @ x.T
    x = a * x + (b * gram + c * gram @ gram) @ x
  return x.T if tall else x


def muon_reference(p, grads, lr, wd, beta, steps):
  """Params of one stacked hidden matrix after len(grads) Muon steps (Nesterov, bias-corrected momentum)."""
  p, mu = p.astype(np.float64), np.zeros_like(p, np.float64)
  for t, g in enumerate(grads, start=1):
    mu = beta * mu + (1 - beta) * g
    u = beta * mu / (1 - beta ** (t + 1)) + (1 - beta) * g / (1 - beta ** t)
    o = np.stack([newton_schulz(m, steps) for m in u])
    fan_in, fan_out = u.shape[1:]
    p = p - lr * (np.sqrt(max(1.0, fan_out / fan_in)) * o + wd * p)
  return p


def adamw_reference(p, grads, lr, wd, b1, b2, eps):
  p, m, v = p.astype(np.float64), 0.0, 0.0
  for t, g in enumerate(grads, start=1):
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    p = p - lr * ((m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p)
  return p


def _train_cfg(tiny_cfg, **train):
  cfg = tiny_cfg(d_ff=64)
  over = dict(dict(optimizer='muon', lr=0.05, weight_decay=0.1, warmup_steps=0, schedule='constant', grad_clip=0.0,
                   muon_momentum=0.9, muon_ns_steps=5), **train)
  for k, v in over.items():
    cfg.train[k] = v
  return cfg


def _run(tx, params, grads_list):
  state, update = jax.jit(tx.init)(params), jax.jit(tx.update)
  out = [params]
  for g in grads_list:
    u, state = update(g, state, out[-1])
    out.append(jax.tree.map(lambda p, d: p + d, out[-1], u))
  return out


def test_muon_update_matches_a_direct_implementation(tiny_cfg):
  """3 steps on the tiny model's parameters with random gradients: every hidden matrix (square, wide and tall)
  follows the numpy Muon; the embedding (decayed) and a norm scale (not decayed) follow numpy AdamW; and each
  orthogonalized update has singular values near 1 (numpy SVD)."""
  cfg = _train_cfg(tiny_cfg)
  t = cfg.train
  params = nnx.to_pure_dict(nnx.state(model_lib.build_model(cfg.model, seed=1), nnx.Param))
  rng = np.random.default_rng(0)
  grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params) for _ in range(3)]
  tx, _ = optim.make_optimizer(t, 10)
  got = _run(tx, params, grads)[-1]
  for name, as_mat in AS_MATRICES.items():
    want = muon_reference(as_mat(np.asarray(params['blocks'][name])),
                          [as_mat(np.asarray(g['blocks'][name])) for g in grads], t.lr, t.weight_decay,
                          t.muon_momentum, t.muon_ns_steps)
    np.testing.assert_allclose(as_mat(np.asarray(got['blocks'][name])), want, rtol=1e-4, atol=2e-6, err_msg=name)
  for path, decay in ((('embed_VD',), t.weight_decay), (('blocks', 'attn_norm', 'scale'), 0.0)):
    pick = lambda tree: np.asarray(tree[path[0]] if len(path) == 1 else tree[path[0]][path[1]][path[2]])
    want = adamw_reference(pick(params), [pick(g) for g in grads], t.lr, decay, t.b1, t.b2, t.eps)
    np.testing.assert_allclose(pick(got), want, rtol=1e-5, atol=1e-7, err_msg=str(path))
  # one step without decay from zero momentum: the update / (lr s) is NS(g), whose singular values are ~1
  one = _run(optim.make_optimizer(_train_cfg(tiny_cfg, weight_decay=0.0).train, 10)[0], params, grads[:1])[-1]
  for name in ('wq_DHK', 'w_up_DF', 'w_down_FD'):
    d = AS_MATRICES[name](np.asarray(one['blocks'][name]) - np.asarray(params['blocks'][name]))[0]
    sv = np.linalg.svd(d / (t.lr * np.sqrt(max(1.0, d.shape[1] / d.shape[0]))), compute_uv=False)
    assert 0.5 < sv.min() and sv.max() < 1.5, (name, sv.min(), sv.max())


def test_which_parameters_take_muon(tiny_cfg):
  """The hidden matrices take Muon; embeddings, position table, untied head, norms (scale and bias) AdamW."""
  want_muon = {('blocks', n) for n in ('wq_DHK', 'wk_DGK', 'wv_DGK', 'wo_HKD', 'w_up_DF', 'w_down_FD')}
  variants = [
      (dict(), want_muon | {('blocks', 'w_gate_DF')},
       {('embed_VD',), ('blocks', 'attn_norm', 'scale'), ('blocks', 'mlp_norm', 'scale'), ('final_norm', 'scale')}),
      (dict(tied_embeddings=False, position='learned', norm='layernorm', mlp='gelu'), want_muon,
       {('embed_VD',), ('pos_embed_TD',), ('lm_head_DV',), ('final_norm', 'scale'), ('final_norm', 'bias')}
       | {('blocks', n, k) for n in ('attn_norm', 'mlp_norm') for k in ('scale', 'bias')}),
  ]
  for over, want_m, want_a in variants:
    params = nnx.to_pure_dict(nnx.state(model_lib.abstract_model(tiny_cfg(**over).model)))
    flat = {tuple(str(k.key) for k in p): v for p, v in jax.tree_util.tree_leaves_with_path(muon.labels(params))}
    assert {k for k, v in flat.items() if v == 'muon'} == want_m
    assert {k for k, v in flat.items() if v == 'adam'} == want_a


def test_muon_under_mup_keeps_lr_on_the_matrices(tiny_cfg):
  """μP + Muon at 4x the base width: Muon's shape scale is the matrices' width rule, so no μP lr / m on them;
  the AdamW parameters' μP multipliers are 1: the optimizer's step equals SP + Muon's, leaf for leaf."""
  cfgs = {p: tiny_cfg(d_model=128, d_ff=256, parametrization=p, mup_base_width=32) for p in ('sp', 'mup')}
  for c in cfgs.values():
    c.train.optimizer, c.train.warmup_steps, c.train.schedule = 'muon', 0, 'constant'
  params = nnx.to_pure_dict(nnx.state(model_lib.build_model(cfgs['sp'].model, seed=0), nnx.Param))
  rng = np.random.default_rng(3)
  grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)]
  out = {p: _run(optim.make_optimizer(c.train, 10, model_lib.ModelDims.from_config(c.model))[0], params, grads)[-1]
         for p, c in cfgs.items()}
  jax.tree.map(np.testing.assert_array_equal, out['sp'], out['mup'])
  step = (np.asarray(out['mup']['blocks']['wq_DHK']) - np.asarray(params['blocks']['wq_DHK']))[0].reshape(128, 128)
  top = np.linalg.svd(step, compute_uv=False).max() / cfgs['mup'].train.lr
  assert 0.5 < top < 1.5, top   # a full-lr step (spectral norm ~ lr; lr / m would give ~ lr / 4)


def test_muon_state_is_sharded_like_the_params(tiny_cfg):
  """On a (2, 2, 2) mesh the momentum of each hidden matrix is sharded as the matrix; counts replicated."""
  cfg = tiny_cfg()
  cfg.train.optimizer = 'muon'
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 2, 2, 2
  setup = step_lib.build_setup(cfg)
  flat = {tuple(str(getattr(k, 'key', getattr(k, 'name', k))) for k in p): s
          for p, s in jax.tree_util.tree_leaves_with_path(setup.state_sharding['opt_state'])}
  mu = [s for k, s in flat.items() if k[-3:] == ('mu', 'blocks', 'wq_DHK')]
  assert mu and all(s == setup.param_sharding['blocks']['wq_DHK'] for s in mu), mu
  assert all(s.spec == jax.sharding.PartitionSpec() for k, s in flat.items() if k[-1] in ('count', 'ns_coeffs'))


def test_newton_schulz_flops_against_a_hand_count(tiny_cfg):
  """k (4 a^2 b + 2 a^3) per matrix (a <= b its sides), every hidden matrix of every layer, by hand for the
  tiny model (D 32, H 4, G 2, K 8, F 64, 2 layers, swiglu): the shapes are those Muon takes."""
  m = tiny_cfg(d_ff=64).model
  sq, kv, mlp = 6 * 32 ** 3, 4 * 16 ** 2 * 32 + 2 * 16 ** 3, 4 * 32 ** 2 * 64 + 2 * 32 ** 3   # one iteration
  assert (sq, kv, mlp) == (196608, 40960, 327680)
  want = 2 * 5 * (2 * sq + 2 * kv + 3 * mlp)
  assert accounting.optimizer_flops_per_step(m, 'muon', 5) == want == 14581760
  assert accounting.optimizer_flops_per_step(m, 'muon', 3) == want * 3 // 5
  assert accounting.optimizer_flops_per_step(m, 'adamw') == 0
  # the matrices counted are the ones Muon orthogonalizes, at the shapes it sees
  params = nnx.to_pure_dict(nnx.state(model_lib.abstract_model(m)))
  leaves = jax.tree_util.tree_leaves_with_path(params)
  seen = {str(p[-1].key): muon.fans(str(p[-1].key), x.shape)
          for (p, x), label in zip(leaves, jax.tree.leaves(muon.labels(params))) if label == 'muon'}
  assert seen == accounting.hidden_matrix_shapes(m)


@pytest.mark.parametrize('over, words', [
    ({'train.optimizer': 'sgd'}, "train.optimizer='sgd' is unknown; choose one of adamw, muon"),
    ({'train.optimizer': 'muon', 'train.muon_ns_steps': '0'}, 'train.muon_ns_steps must be an integer >= 1'),
    ({'train.optimizer': 'muon', 'train.muon_momentum': '1.0'}, r'train.muon_momentum must be in \[0, 1\)'),
])
def test_bad_muon_config_fails_at_load(over, words):
  with pytest.raises(ConfigError, match=words):
    config_lib.load_config('default.py', over)


def test_packed_muon_members_equal_their_single_runs(tiny_cfg):
  """A packed run (scaling/train/packed.py builds each member's optimizer with make_optimizer and its traced lr,
  weight decay...) of 2 Muon members differing in lr and weight decay: each member's losses and params after 4
  steps equal its single run's."""
  from scaling.config import pack
  from scaling.train import packed as packed_lib
  cfgs = []
  for lr, wd in ((1e-2, 0.1), (3e-3, 0.0)):
    c = tiny_cfg()
    c.train.optimizer, c.train.lr, c.train.weight_decay, c.train.warmup_steps, c.train.batch_size = 'muon', lr, wd, 1, 8
    c.mesh.data = 8
    cfgs.append(c)
  setup = step_lib.build_setup(cfgs[0])
  packed = packed_lib.build_packed(setup, 2)
  state = packed_lib.init_packed(packed, [pack.init_seed(c.train) for c in cfgs])
  step = jax.jit(packed_lib.make_packed_step(setup, 'vmap'))
  scalars = packed_lib.scalars_array(packed, cfgs)
  rng = np.random.default_rng(0)
  batches = [{k: jnp.asarray(rng.integers(0, 97, (8, 16)), jnp.int32) for k in ('inputs', 'targets')}
             for _ in range(4)]
  got = []
  for b in batches:
    state, m = step(state, scalars, b)
    got.append(np.asarray(m['loss']))
  for i, cfg in enumerate(cfgs):
    single = step_lib.build_setup(cfg)
    s = step_lib.init_state(single, pack.init_seed(cfg.train))
    f = jax.jit(step_lib.make_train_step(single.graphdef, single.tx, cfg.train))
    ref = []
    for b in batches:
      s, m = f(s, b)
      ref.append(float(m['loss']))
    np.testing.assert_allclose([g[i] for g in got], ref, rtol=2e-5)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(np.asarray(p)[i], np.asarray(q), rtol=1e-4, atol=1e-6),
                 state['params'], s['params'])
  assert got[-1][0] != got[-1][1]


# ----------------------------------------------------------------------------- resume
STEPS = 8


def _corpus(root):
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(7)
  words = 'muon orthogonal momentum matrix newton schulz iteration spectral'.split()
  for i in range(4):
    lines = [' '.join(words[j] for j in rng.integers(0, len(words), 8)) + '.' for _ in range(80)]
    (root / f'doc{i}.txt').write_text('\n'.join(lines) + '\n')
  return str(root / '*.txt')


def _resume_cfg(tmp_path):
  from scaling.data.prepare import prepare
  over = {'model.vocab_size': 259, 'model.seq_len': 16, 'model.num_layers': 2, 'model.d_model': 32,
          'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64, 'data.corpus': _corpus(tmp_path / 'c'),
          'data.tokenizer': 'byte', 'data.data_dir': str(tmp_path / 'prepared'), 'train.batch_size': 8,
          'train.steps': STEPS, 'train.lr': 1e-2, 'train.warmup_steps': 2, 'train.optimizer': 'muon',
          'train.log_every': 1, 'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': 1000,
          'train.eval_sets': '{}', 'train.peak_flops': 1e12}
  cfg = config_lib.load_config('default.py', over)
  prepare(cfg.data, verbose=False)
  return cfg


def _final_state(workdir, setup):
  def init():
    params = nnx.to_pure_dict(nnx.state(model_lib.Transformer(setup.dims, rngs=nnx.Rngs(params=0)), nnx.Param))
    return dict(params=params, opt_state=setup.tx.init(params))
  target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), jax.eval_shape(init),
                        {k: setup.state_sharding[k] for k in ('params', 'opt_state')})
  mgr = checkpoint.manager(workdir, async_save=False)
  out = checkpoint.restore(mgr, checkpoint.latest_step(workdir), params_target=target['params'],
                           opt_target=target['opt_state'])
  mgr.close()
  return jax.tree.map(np.asarray, dict(params=out['params'], opt_state=out['opt_state']))


def test_stopped_and_resumed_muon_run_equals_the_uninterrupted_run(tmp_path, monkeypatch):
  """STEPS steps == STEPS/2 + SIGTERM (checkpoint) + resume: the same loss at every step, the same final params
  and Muon/AdamW state (momenta, counts) restored from both final checkpoints."""
  cfg = _resume_cfg(tmp_path)
  ref = train_lib.train(cfg, tmp_path / 'ref', quiet=True)
  assert ref['state'] == 'done' and ref['step'] == STEPS
  orig, calls = train_lib.jit_train_step, []

  def jit_with_sigterm(setup, keys):
    step = orig(setup, keys)

    def wrapped(state, batch):
      out = step(state, batch)
      calls.append(1)
      if len(calls) == STEPS // 2:
        os.kill(os.getpid(), signal.SIGTERM)
      return out
    return wrapped

  monkeypatch.setattr(train_lib, 'jit_train_step', jit_with_sigterm)
  first = train_lib.train(cfg, tmp_path / 'resumed', quiet=True)
  assert first['state'] == 'preempted' and first['step'] == STEPS // 2
  monkeypatch.setattr(train_lib, 'jit_train_step', orig)
  second = train_lib.train(cfg, tmp_path / 'resumed', quiet=True)
  assert second['state'] == 'done' and second['step'] == STEPS

  def losses(w):
    return {r['step']: r['train/loss'] for r in read_metrics(w) if 'train/loss' in r}
  a, b = losses(tmp_path / 'ref'), losses(tmp_path / 'resumed')
  assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([b[s] for s in a], [a[s] for s in a], rtol=1e-6)
  setup = train_lib.build_setup(cfg)
  sa, sb = _final_state(tmp_path / 'ref', setup), _final_state(tmp_path / 'resumed', setup)
  assert jax.tree.structure(sa) == jax.tree.structure(sb)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7), sa, sb)
  counts = [np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(sb['opt_state'])
            if str(getattr(p[-1], 'name', '')) == 'count']
  assert counts and all(int(c) == STEPS for c in counts)   # both branches' counts restored and advanced


def test_muon_adam_lr_sets_the_adamw_part_apart_from_the_matrices(tiny_cfg):
  """train.muon_adam_lr = 0.01 under lr 0.05: the hidden matrices follow the numpy Muon at 0.05, the embedding and
  a norm scale the numpy AdamW at 0.01. The field is refused under AdamW and below 0."""
  from scaling.config.load import ConfigError, validate_config
  cfg = _train_cfg(tiny_cfg, muon_adam_lr=0.01)
  t = cfg.train
  params = nnx.to_pure_dict(nnx.state(model_lib.build_model(cfg.model, seed=1), nnx.Param))
  rng = np.random.default_rng(1)
  grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params) for _ in range(2)]
  got = _run(optim.make_optimizer(t, 10)[0], params, grads)[-1]
  name, as_mat = 'w_up_DF', AS_MATRICES['w_up_DF']
  want = muon_reference(as_mat(np.asarray(params['blocks'][name])), [as_mat(np.asarray(g['blocks'][name])) for g in grads],
                        0.05, t.weight_decay, t.muon_momentum, t.muon_ns_steps)
  np.testing.assert_allclose(as_mat(np.asarray(got['blocks'][name])), want, rtol=1e-4, atol=2e-6)
  for path, decay in ((('embed_VD',), t.weight_decay), (('blocks', 'attn_norm', 'scale'), 0.0)):
    pick = lambda tree: np.asarray(tree[path[0]] if len(path) == 1 else tree[path[0]][path[1]][path[2]])
    want = adamw_reference(pick(params), [pick(g) for g in grads], 0.01, decay, t.b1, t.b2, t.eps)
    np.testing.assert_allclose(pick(got), want, rtol=1e-5, atol=1e-7, err_msg=str(path))
  for bad, words in ((dict(optimizer='adamw', muon_adam_lr=0.01), 'only under'), (dict(muon_adam_lr=-1.0), '>= 0')):
    c = _train_cfg(tiny_cfg, **bad)
    with pytest.raises(ConfigError, match=words):
      validate_config(c)
