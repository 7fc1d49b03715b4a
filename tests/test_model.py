"""Tests of scaling/model/transformer.py against independent references.

References used: numpy formulas (norms, RoPE as a complex rotation), invariances
(causality, RoPE's dependence on relative position only), and second code paths
through the same parameters (GQA vs repeated-head MHA, scan vs unrolled, remat
vs none, float32 vs bfloat16, KV-cache decoding vs the full forward).

All models are tiny (see conftest.TINY_MODEL) with numpy-random parameters.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.model import transformer as model_lib

B, T, V = 2, 16, 97


def _tokens(batch=B, length=T, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, V, (batch, length)), jnp.int32)


def _logits_fn(model):
  """jit(tokens -> logits) for `model`; params are passed as jit arguments."""
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens))
  return lambda tokens: np.asarray(fn(state, tokens))


def _with_config(model, model_cfg):
  """The same parameters in a model built for another (layout-compatible) config."""
  graphdef, _ = nnx.split(model_lib.abstract_model(model_cfg))
  return nnx.merge(graphdef, nnx.state(model))


def _rel_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))) /
               np.max(np.abs(np.asarray(b, np.float64))))


# ----------------------------------------------------------------------------- norms
def test_rms_norm_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(0, 3, (2, 5, 24)).astype(np.float32)
  scale = rng.normal(1, 0.3, (24,)).astype(np.float32)
  eps = 1e-5
  want = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + eps) * scale
  got = model_lib.rms_norm(jnp.asarray(x), jnp.asarray(scale), eps)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  # bf16 input: computed in f32, returned in bf16.
  got16 = model_lib.rms_norm(jnp.asarray(x, jnp.bfloat16), jnp.asarray(scale), eps)
  assert got16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got16, np.float32), want, rtol=2e-2, atol=2e-2)
  # eps matters for tiny inputs exactly as in the formula.
  tiny = np.full((1, 4), 1e-3, np.float32)
  got_tiny = model_lib.rms_norm(jnp.asarray(tiny), jnp.ones(4), 1e-2)
  np.testing.assert_allclose(np.asarray(got_tiny), tiny / np.sqrt(1e-6 + 1e-2), rtol=1e-5)


def test_layer_norm_matches_numpy():
  rng = np.random.default_rng(1)
  x = rng.normal(2, 3, (3, 4, 24)).astype(np.float32)   # non-zero mean: the centring matters
  scale = rng.normal(1, 0.3, (24,)).astype(np.float32)
  bias = rng.normal(0, 0.3, (24,)).astype(np.float32)
  eps = 1e-5
  x64 = x.astype(np.float64)
  mean = x64.mean(-1, keepdims=True)
  var = ((x64 - mean) ** 2).mean(-1, keepdims=True)
  want = (x64 - mean) / np.sqrt(var + eps) * scale + bias
  got = model_lib.layer_norm(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(bias), eps)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', ['rmsnorm', 'layernorm'])
def test_norm_module_dispatches_to_formula(tiny_cfg, kind):
  dims = model_lib.ModelDims.from_config(tiny_cfg(norm=kind).model)
  norm = model_lib.Norm(dims)
  rng = np.random.default_rng(2)
  norm.scale[...] = jnp.asarray(rng.normal(1, 0.3, (dims.d_model,)), jnp.float32)
  x = rng.normal(1, 2, (2, 3, dims.d_model)).astype(np.float32)
  x64 = x.astype(np.float64)
  if kind == 'layernorm':
    norm.bias[...] = jnp.asarray(rng.normal(0, 0.3, (dims.d_model,)), jnp.float32)
    c = x64 - x64.mean(-1, keepdims=True)
    want = c / np.sqrt((c ** 2).mean(-1, keepdims=True) + dims.norm_eps)
    want = want * np.asarray(norm.scale[...]) + np.asarray(norm.bias[...])
  else:
    assert not hasattr(norm, 'bias')
    want = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + dims.norm_eps) * np.asarray(norm.scale[...])
  np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- RoPE
def _rope_complex(x, positions, theta):
  """Reference RoPE: pair (i, i + K/2) as x_i + j x_{i+K/2}, times exp(j pos theta^(-2i/K))."""
  K = x.shape[-1]
  x = x.astype(np.float64)
  z = x[..., : K // 2] + 1j * x[..., K // 2:]
  inv_freq = theta ** (-2.0 * np.arange(K // 2) / K)
  angle = positions[:, :, None, None].astype(np.float64) * inv_freq        # [B, T, 1, K/2]
  z = z * np.exp(1j * angle)
  return np.concatenate([z.real, z.imag], axis=-1)


@pytest.mark.parametrize('theta', [10000.0, 500.0])
def test_rope_equals_complex_rotation(theta):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 7, 3, 16)).astype(np.float32)
  positions = np.stack([np.arange(7), np.array([0, 5, 9, 100, 257, 511, 1023])])
  got = model_lib.apply_rope(jnp.asarray(x), jnp.asarray(positions, jnp.int32), theta)
  np.testing.assert_allclose(np.asarray(got), _rope_complex(x, positions, theta), atol=2e-4)
  assert got.dtype == jnp.float32
  # position 0 is the identity
  np.testing.assert_allclose(np.asarray(got)[0, 0], x[0, 0], atol=1e-6)


def test_default_positions_use_constant_rope_tables_equal_to_the_formula(make_model):
  """Transformer.hidden with positions None: the tables are compiled in as constants (no cos or sin left
  in the compiled step) and rotate as the complex reference does; the model's output equals the one with
  the same positions passed explicitly (the traced tables)."""
  B, T, K, theta = 2, 40, 16, 10000.0
  cos_BTk, sin_BTk = model_lib.static_rope_tables(B, T, K, theta)
  x = np.random.default_rng(5).normal(size=(B, T, 3, K)).astype(np.float32)
  pos = np.broadcast_to(np.arange(T), (B, T))
  got = model_lib.apply_rope(jnp.asarray(x), jnp.asarray(pos, jnp.int32), theta, (cos_BTk, sin_BTk))
  np.testing.assert_allclose(np.asarray(got), _rope_complex(x, pos, theta), atol=2e-4)
  model = make_model(seq_len=T)
  tokens = jnp.asarray(np.random.default_rng(6).integers(0, model.dims.vocab_size, (B, T)), jnp.int32)
  implicit = jax.jit(lambda t: model(t))
  explicit = jax.jit(lambda t, p: model(t, p))
  np.testing.assert_allclose(np.asarray(implicit(tokens)), np.asarray(explicit(tokens, jnp.asarray(pos, jnp.int32))),
                             rtol=1e-5, atol=1e-5)
  hlo = implicit.lower(tokens).compile().as_text()
  assert 'cosine(' not in hlo and ' sine(' not in hlo


@pytest.mark.parametrize('T, K, theta', [(40, 16, 10000.0), (300, 96, 500000.0)])
def test_static_rope_tables_are_the_tables_of_device_positions(T, K, theta):
  """static_rope_tables takes its integers (positions, 2k) from numpy: bit for bit the tables rope_tables
  computes from device positions (jnp.arange, its path before), and cos/sin(pos theta^(-2k/K)) in float64 to
  float32 precision (an angle of up to 300 rounded to float32: ~2e-5)."""
  with jax.ensure_compile_time_eval():
    cos_BTk, sin_BTk = model_lib.static_rope_tables(2, T, K, theta)
    device_tables = model_lib.rope_tables(jnp.arange(T, dtype=jnp.int32)[None], K, theta)
  angle_Tk = np.arange(T)[:, None] * theta ** (-2.0 * np.arange(K // 2) / K)
  for got, device, formula in zip((cos_BTk, sin_BTk), device_tables, (np.cos(angle_Tk), np.sin(angle_Tk))):
    assert got.shape == (2, T, K // 2) and got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got).view(np.uint32),
                                  np.broadcast_to(np.asarray(device).view(np.uint32), got.shape))
    np.testing.assert_allclose(np.asarray(got)[1], formula, rtol=0, atol=1e-4)


def test_rope_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(4)
  K = 32
  q = jnp.asarray(rng.normal(size=(1, 1, 1, K)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, K)), jnp.float32)

  def score(pq, pk):
    rq = model_lib.apply_rope(q, jnp.full((1, 1), pq, jnp.int32), 10000.0)
    rk = model_lib.apply_rope(k, jnp.full((1, 1), pk, jnp.int32), 10000.0)
    return float(jnp.sum(rq * rk))

  by_offset = {}
  for offset in (0, 1, 3, 10):
    scores = [score(p + offset, p) for p in (0, 1, 7, 50, 300)]
    np.testing.assert_allclose(scores, scores[0], rtol=1e-4, atol=1e-4)
    by_offset[offset] = scores[0]
  # ... and does depend on the offset (else the test above would be vacuous).
  assert len({round(s, 3) for s in by_offset.values()}) == len(by_offset)
  # offset 0 is the plain dot product (rotations preserve inner products)
  np.testing.assert_allclose(by_offset[0], float(jnp.sum(q * k)), rtol=1e-5)


# ----------------------------------------------------------------------------- causality
@pytest.mark.parametrize('position,mlp,extra', [
    ('rope', 'swiglu', {}),
    ('rope', 'gelu', {}),
    ('learned', 'swiglu', {}),
    ('learned', 'gelu', {'norm': 'layernorm'}),
    ('none', 'swiglu', {'norm': 'layernorm'}),
    ('none', 'gelu', {}),
    ('rope', 'swiglu', {'sliding_window': 4, 'scan_layers': False}),
])
def test_future_tokens_do_not_change_earlier_logits(make_model, position, mlp, extra):
  model = make_model(position=position, mlp=mlp, **extra)
  tokens = _tokens()
  cut = 7
  changed = tokens.at[:, cut:].set((tokens[:, cut:] + 1 + _tokens(seed=5)[:, cut:] % (V - 1)) % V)
  assert bool(jnp.all(changed[:, cut:] != tokens[:, cut:]))
  logits = _logits_fn(model)(jnp.concatenate([tokens, changed]))
  a, b = logits[:B], logits[B:]
  np.testing.assert_allclose(a[:, :cut], b[:, :cut], rtol=0, atol=1e-5)
  # the changed positions themselves do see the change
  assert np.abs(a[:, cut:] - b[:, cut:]).max(axis=-1).min() > 1e-4


def test_rope_model_with_segments_equals_separate_documents(make_model):
  """Document masking + RoPE: a document's logits do not depend on what precedes it
  in the row, nor on its absolute offset (RoPE is relative)."""
  model = make_model(position='rope')
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, t, seg: nnx.merge(graphdef, s)(t, segment_ids_BT=seg))
  doc_a, doc_b = _tokens(1, 6, seed=6), _tokens(1, 10, seed=7)
  packed = jnp.concatenate([doc_a, doc_b], axis=1)
  seg = jnp.asarray([[1] * 6 + [2] * 10], jnp.int32)
  packed_logits = np.asarray(fn(state, packed, seg))
  alone = np.asarray(fn(state, jnp.concatenate([doc_b, doc_a], axis=1),
                        jnp.asarray([[2] * 10 + [1] * 6], jnp.int32)))
  np.testing.assert_allclose(packed_logits[0, 6:], alone[0, :10], atol=2e-5)
  np.testing.assert_allclose(packed_logits[0, :6], alone[0, 10:], atol=2e-5)


# ----------------------------------------------------------------------------- GQA
def test_gqa_equals_mha_with_repeated_kv_heads(tiny_cfg, make_model):
  H, G = 4, 2
  gqa = make_model(num_heads=H, num_kv_heads=G)
  mha_cfg = tiny_cfg(num_heads=H, num_kv_heads=H).model
  state = nnx.state(gqa)

  def mha_with(kv_head_of_h):
    def repeat_kv(path, w):
      name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
      return w[:, :, kv_head_of_h, :] if name in ('wk_DGK', 'wv_DGK') else w   # [L, D, G, K] -> [L, D, H, K]

    s = jax.tree_util.tree_map_with_path(repeat_kv, state)
    graphdef, _ = nnx.split(model_lib.abstract_model(mha_cfg))
    return nnx.merge(graphdef, s)

  R = H // G
  want = _logits_fn(mha_with(np.arange(H) // R))(_tokens())  # head h reads kv head h // (H / G)
  got = _logits_fn(gqa)(_tokens())
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The other natural grouping (h % G) gives different logits: the mapping is pinned down.
  other = _logits_fn(mha_with(np.arange(H) % G))(_tokens())
  assert np.abs(other - got).max() > 1e-3


# ----------------------------------------------------------------------------- execution modes
def test_scanned_and_unrolled_models_agree(tiny_cfg, make_model):
  scanned = make_model(scan_layers=True, num_layers=3)
  unrolled = _with_config(scanned, tiny_cfg(scan_layers=False, num_layers=3).model)
  tokens = _tokens()
  np.testing.assert_allclose(_logits_fn(unrolled)(tokens), _logits_fn(scanned)(tokens), rtol=1e-5, atol=1e-5)


def _primitive_names(jaxpr, out=None):
  out = set() if out is None else out
  for eqn in jaxpr.eqns:
    out.add(eqn.primitive.name)
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          _primitive_names(sub.jaxpr, out)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          _primitive_names(sub, out)
  return out


def test_remat_policies_give_same_loss_and_grads(tiny_cfg, make_model):
  base = make_model(remat='none')
  tokens = _tokens()
  policies = ('none', 'full', 'dots', 'dots_except_mlp')
  graphdefs = [nnx.split(_with_config(base, tiny_cfg(remat=r).model))[0] for r in policies]
  state = nnx.state(base)

  def loss_fn(graphdef):
    def loss(state):
      logits = nnx.merge(graphdef, state)(tokens[:, :-1])
      logp = jax.nn.log_softmax(logits, axis=-1)
      return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))
    return jax.value_and_grad(loss)

  def has_remat(graphdef):   # the primitive is 'remat2' in this jax ('checkpoint' in others)
    names = _primitive_names(jax.make_jaxpr(loss_fn(graphdef))(state).jaxpr)
    return any(n.startswith(('remat', 'checkpoint')) for n in names)

  assert [has_remat(g) for g in graphdefs] == [False, True, True, True]
  # One jit for all four (compiling once is about half the CPU time of four compiles).
  results = jax.jit(lambda s: [loss_fn(g)(s) for g in graphdefs])(state)
  (want_loss, want_grads), others = results[0], results[1:]
  for remat, (loss, grads) in zip(policies[1:], others):
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-6, err_msg=remat)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7, err_msg=remat),
                 grads, want_grads)


def test_remat_policies_save_what_they_promise(make_model, capsys):
  """What each policy keeps for the backward pass (jax's own residual listing), by shape:
  F-sized MLP activations [.., T, F], attention projections [.., T, H|G, K], scores [.., T, T]."""
  F = 96   # unique among the dims, so the MLP activations are recognizable by shape
  tokens = _tokens()

  def saved(remat):
    graphdef, state = nnx.split(make_model(remat=remat, d_ff=F))
    jax.ad_checkpoint.print_saved_residuals(lambda s: nnx.merge(graphdef, s)(tokens).sum(), state)
    lines = [l for l in capsys.readouterr().out.splitlines() if 'from the argument' not in l]
    def has(suffix):
      return any(re.search(r'\[[\d,]*' + suffix + r'\]', l) for l in lines)
    return dict(mlp=has(f'{T},{F}'), proj=has(f'{T},[24],8'), scores=has(f'{T},{T}'))

  assert saved('none') == dict(mlp=True, proj=True, scores=True)
  assert saved('dots') == dict(mlp=True, proj=True, scores=True)   # every matmul output
  assert saved('dots_except_mlp') == dict(mlp=False, proj=True, scores=False)
  assert saved('full') == dict(mlp=False, proj=False, scores=False)


def test_bfloat16_compute_stays_close_to_float32(tiny_cfg, make_model):
  f32 = make_model(dtype='float32', std=0.05)
  bf16 = _with_config(f32, tiny_cfg(dtype='bfloat16').model)
  tokens = _tokens()
  l32, l16 = _logits_fn(f32)(tokens), _logits_fn(bf16)(tokens)
  assert l16.dtype == np.float32   # logits come back in float32
  err = _rel_err(l16, l32)
  assert 1e-5 < err < 2e-2, err    # close, and bf16 was really used


@pytest.mark.parametrize('extra', [
    {},                                                            # rope, scan
    {'scan_layers': False, 'sliding_window': 5, 'position': 'learned', 'mlp': 'gelu'},
])
def test_kv_cache_decoding_matches_full_forward(make_model, extra):
  model = make_model(**extra)
  graphdef, state = nnx.split(model)
  tokens = _tokens()
  full = _logits_fn(model)(tokens)

  @jax.jit
  def step(state, cache, tok_BT, pos_BT):
    return nnx.merge(graphdef, state)(tok_BT, positions_BT=pos_BT, cache=cache)

  cache = model.init_cache(B, T)
  assert cache[0].shape == (model.dims.num_layers, B, T, model.dims.num_kv_heads, model.dims.head_dim)
  prompt = 9
  pos = jnp.broadcast_to(jnp.arange(prompt, dtype=jnp.int32), (B, prompt))
  logits, cache = step(state, cache, tokens[:, :prompt], pos)
  np.testing.assert_allclose(np.asarray(logits), full[:, :prompt], atol=2e-5)
  for t in range(prompt, T):
    logits, cache = step(state, cache, tokens[:, t:t + 1], jnp.full((B, 1), t, jnp.int32))
    np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, t], atol=2e-5)


def test_prefill_not_at_position_zero_is_an_error(make_model):
  """A multi-token cache call attends over its own keys only: it must start at position 0.

  Concrete positions fail on the host before anything runs; traced ones (inside jit) when the
  call runs; decode steps (T = 1) and positions_BT=None are not checked (nothing to check)."""
  model = make_model()
  tokens = _tokens()[:, :4]
  cache = model.init_cache(B, T)
  shifted = jnp.broadcast_to(jnp.arange(3, 7, dtype=jnp.int32), (B, 4))
  with pytest.raises(ValueError, match=r'prefill, which must start at position 0.*starting at \[3\]'):
    model(tokens, shifted, cache=cache)
  graphdef, state = nnx.split(model)
  step = jax.jit(lambda state, tok, pos, cache: nnx.merge(graphdef, state)(tok, pos, cache=cache))
  with pytest.raises(Exception, match='prefill, which must start at position 0'):
    jax.block_until_ready(step(state, tokens, shifted, cache))
  start = jnp.broadcast_to(jnp.arange(4, dtype=jnp.int32), (B, 4))
  logits, _ = step(state, tokens, start, cache)                     # arange(T): accepted, traced
  np.testing.assert_allclose(np.asarray(logits), _logits_fn(model)(tokens), atol=2e-5)   # uncached forward


# ----------------------------------------------------------------------------- a longer position table
def test_learned_table_longer_than_seq_len(tiny_cfg, make_model):
  """model.position_table=64 at seq_len 16: a table of 64 rows; given the same parameters (its first 16 rows as
  a seq_len-row table) the logits of a <= seq_len sequence are those of the seq_len-table model; sequences of
  2x and 4x seq_len run, and their first 16 positions are the short sequence's logits (causality)."""
  long_cfg = tiny_cfg(position='learned', position_table=64).model
  long = make_model(long_cfg, seed=3)
  assert long.dims.position_rows == 64 and long.pos_embed_TD[...].shape == (64, long_cfg.d_model)
  short_cfg = tiny_cfg(position='learned').model
  graphdef, state = nnx.split(model_lib.abstract_model(short_cfg))
  state = nnx.state(long)
  state['pos_embed_TD'] = nnx.Param(long.pos_embed_TD[...][:short_cfg.seq_len])
  short = nnx.merge(graphdef, state)
  assert short.dims.position_rows == 16 and short.pos_embed_TD[...].shape == (16, short_cfg.d_model)
  tokens = _tokens(length=64, seed=4)
  for t in (5, 16):
    np.testing.assert_array_equal(_logits_fn(long)(tokens[:, :t]), _logits_fn(short)(tokens[:, :t]))
  ref = _logits_fn(long)(tokens[:, :16])
  for t in (32, 64):
    out = _logits_fn(long)(tokens[:, :t])
    assert out.shape == (B, t, V) and np.isfinite(out).all()
    np.testing.assert_allclose(out[:, :16], ref, rtol=0, atol=1e-5)
  # the rows past seq_len are used (not clipped to row 15, as the seq_len-table model does there)
  assert np.abs(_logits_fn(long)(tokens[:, :32])[:, 16:] - _logits_fn(short)(tokens[:, :32])[:, 16:]).max() > 1e-3


# ----------------------------------------------------------------------------- metadata
def test_param_axes_name_every_dimension(tiny_cfg):
  model = model_lib.abstract_model(tiny_cfg(position='learned', tied_embeddings=False, norm='layernorm').model)
  axes = jax.tree.leaves(model_lib.param_axes(model), is_leaf=lambda x: isinstance(x, tuple))
  shapes = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert len(axes) == len(shapes) > 0
  known = {'vocab', 'embed', 'heads', 'kv_heads', 'head_dim', 'mlp', 'layers', 'seq'}
  for ax, s in zip(axes, shapes):
    assert len(ax) == len(s.shape) and set(ax) <= known, (ax, s.shape)


def test_init_statistics(tiny_cfg):
  """Real initializers: matrices ~ N(0, init_std), residual outputs / sqrt(2 L), norms 1."""
  cfg = tiny_cfg(num_layers=4, d_model=64, d_ff=256, vocab_size=512, norm='layernorm').model
  model = model_lib.build_model(cfg, seed=0)
  std, out_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.num_layers)
  blocks = model.blocks
  for w, s in ((model.embed_VD, std), (blocks.wq_DHK, std), (blocks.wk_DGK, std), (blocks.w_up_DF, std),
               (blocks.wo_HKD, out_std), (blocks.w_down_FD, out_std)):
    a = np.asarray(w[...])
    assert abs(a.mean()) < 4 * s / math.sqrt(a.size)
    np.testing.assert_allclose(a.std(), s, rtol=0.05)
  for n in (blocks.attn_norm, blocks.mlp_norm, model.final_norm):
    assert np.all(np.asarray(n.scale[...]) == 1) and np.all(np.asarray(n.bias[...]) == 0)
  # layers are initialized independently
  q = np.asarray(blocks.wq_DHK[...])
  assert not np.allclose(q[0], q[1])


@pytest.mark.parametrize('eq,xs,ws', [('btd,dhk->bthk', (2, 3, 4), (4, 2, 5)), ('bthk,hkd->btd', (2, 3, 2, 5), (2, 5, 4)),
                                      ('btd,df->btf', (2, 3, 4), (4, 6)), ('btf,fd->btd', (2, 3, 6), (6, 4))])
def test_mixed_einsum_gradients_match_einsum_and_accumulate_in_f32(eq, xs, ws):
  from scaling.model.transformer import mixed_einsum
  x = jax.random.normal(jax.random.key(0), xs)
  w = jax.random.normal(jax.random.key(1), ws)
  ours = jax.grad(lambda x, w: jnp.sum(jnp.sin(mixed_einsum(eq, x, w))), (0, 1))(x, w)
  ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(jnp.einsum(eq, x, w))), (0, 1))(x, w)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # in bf16 every matmul of the backward pass, too, accumulates in float32
  xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  jaxpr = jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(mixed_einsum(eq, x, w)), (0, 1)))(xb, wb)
  text = str(jaxpr)
  assert text.count('dot_general') >= 3
  assert 'preferred_element_type=bfloat16' not in text
  assert text.count('preferred_element_type=float32') >= 3
