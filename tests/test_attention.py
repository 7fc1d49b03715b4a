"""Tests of scaling.attention against independent references.

The main reference is `reference_attention` (full logits, explicit mask, kv heads
repeated); 'xla' (jax.nn.dot_product_attention, its own causal/window masks) is
a second, independent code path. Small block sizes make the blockwise loops run
over many blocks while keeping the tests fast.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling import attention as attn


def _qkv(B, T, S, H, G, K, dtype=jnp.float32, seed=0):
  """Random q, k, v and an output cotangent w (numpy RNG: nothing to compile)."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
  q, k, v = normal(B, T, H, K), normal(B, S, G, K), normal(B, S, G, K)
  w = normal(B, T, H, K)
  return (jnp.asarray(q, dtype), jnp.asarray(k, dtype), jnp.asarray(v, dtype),
          jnp.asarray(w))


def _segments(B, T):
  """Two or three packed documents per row, different cut points per row."""
  pos = jnp.arange(T)[None, :]
  cuts1 = jnp.array([T // 3, T // 2])[:B, None]
  cuts2 = jnp.array([2 * T // 3, T])[:B, None]
  return ((pos >= cuts1).astype(jnp.int32) + (pos >= cuts2).astype(jnp.int32)) + 7


def _out_and_grads(fn, q, k, v, w):
  """Output and (dq, dk, dv) for the cotangent w, in one jitted call."""
  @jax.jit
  def run(q, k, v, w):
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(w.astype(out.dtype))
  return run(q, k, v, w)


def _assert_close(a, b, rtol, atol, what):
  a = np.asarray(jnp.asarray(a, jnp.float32))
  b = np.asarray(jnp.asarray(b, jnp.float32))
  np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


CASES = [
    # (B, T, H, G, K, block, window, segments)
    (2, 64, 4, 2, 16, 16, 0, False),    # T multiple of the block, GQA
    (2, 50, 4, 1, 16, 20, 13, False),   # odd blocks of 17 + 1 pad, window, MQA
    (1, 77, 6, 2, 8, 32, 0, True),      # segments, GQA 3:1, ragged
    (2, 70, 4, 2, 16, 16, 20, True),    # window + segments + ragged
]


@pytest.mark.parametrize('B,T,H,G,K,block,window,segments', CASES)
def test_blockwise_and_xla_match_reference_f32(B, T, H, G, K, block, window,
                                               segments):
  q, k, v, w = _qkv(B, T, T, H, G, K)
  seg = _segments(B, T) if segments else None
  kw = dict(segment_ids_BT=seg, window=window, block_size=block)
  ref_out, ref_grads = _out_and_grads(
      lambda q, k, v: attn.attention(q, k, v, impl='reference', **kw), q, k, v, w)
  for impl in ('blockwise', 'xla'):
    fn = lambda q, k, v: attn.attention(q, k, v, impl=impl, **kw)
    out, grads = _out_and_grads(fn, q, k, v, w)
    assert out.shape == q.shape and out.dtype == q.dtype
    _assert_close(out, ref_out, 1e-5, 2e-6, f'{impl} out')
    for name, g, rg in zip(('dq', 'dk', 'dv'), grads, ref_grads):
      _assert_close(g, rg, 1e-5, 2e-5, f'{impl} {name}')


def test_reference_matches_numpy_formula():
  """The reference itself against a direct numpy loop (GQA + window)."""
  B, T, H, G, K, window = 1, 9, 4, 2, 8, 4
  q, k, v, _ = _qkv(B, T, T, H, G, K)
  out = attn.reference_attention(q, k, v, window=window)
  qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
  exp = np.zeros((B, T, H, K))
  for h in range(H):
    g = h // (H // G)
    for t in range(T):
      keys = [s for s in range(T) if s <= t and s > t - window]
      logits = np.array([qn[0, t, h] @ kn[0, s, g] for s in keys]) / np.sqrt(K)
      p = np.exp(logits - logits.max())
      p /= p.sum()
      exp[0, t, h] = sum(pi * vn[0, s, g] for pi, s in zip(p, keys))
  _assert_close(out, exp, 1e-5, 1e-6, 'reference vs numpy')


def test_blockwise_bf16_close_to_f32_reference():
  B, T, H, G, K = 2, 72, 4, 2, 32
  q, k, v, w = _qkv(B, T, T, H, G, K, dtype=jnp.bfloat16)
  seg = _segments(B, T)
  f32 = lambda x: x.astype(jnp.float32)
  ref_out, ref_grads = _out_and_grads(
      lambda q, k, v: attn.reference_attention(q, k, v, segment_ids_BT=seg),
      f32(q), f32(k), f32(v), w)
  fn = lambda q, k, v: attn.attention(
      q, k, v, impl='blockwise', block_size=16, segment_ids_BT=seg)
  out, grads = _out_and_grads(fn, q, k, v, w)
  assert out.dtype == jnp.bfloat16
  assert all(g.dtype == jnp.bfloat16 for g in grads)
  _assert_close(out, ref_out, 2e-2, 2e-2, 'bf16 out')
  for name, g, rg in zip(('dq', 'dk', 'dv'), grads, ref_grads):
    scale = float(jnp.max(jnp.abs(rg)))
    _assert_close(g, rg, 0, 3e-2 * scale, f'bf16 {name}')


@pytest.mark.parametrize('impl', ['reference', 'xla', 'blockwise'])
def test_decode_rows_match_full_attention(impl):
  """T=1 (and a prefill chunk) against a KV cache longer than the valid part."""
  B, L, H, G, K, cache = 2, 40, 4, 2, 16, 48
  q, k, v, _ = _qkv(B, L, L, H, G, K)
  full = jax.jit(functools.partial(attn.reference_attention, window=11))(q, k, v)
  junk = 100.0 * jnp.ones((B, cache - L, G, K))  # stale cache slots
  k_cache = jnp.concatenate([k, junk], axis=1)
  v_cache = jnp.concatenate([v, junk], axis=1)
  step = jax.jit(lambda q, pos, n: attn.attention(
      q, k_cache, v_cache, impl=impl, window=11, block_size=16, q_offset=pos,
      kv_valid_len_B=n))
  for pos in (0, 17, L - 1):  # traced q_offset: one compile for all positions
    out = step(q[:, pos:pos + 1], jnp.int32(pos), jnp.full((B,), pos + 1))
    _assert_close(out, full[:, pos:pos + 1], 1e-5, 2e-6, f'decode pos {pos}')
  # Chunked prefill: queries 16..23 with keys valid up to 24.
  out = step(q[:, 16:24], jnp.int32(16), jnp.full((B,), 24))
  _assert_close(out, full[:, 16:24], 1e-5, 2e-6, 'prefill chunk')


def test_kv_valid_len_per_example_and_empty_rows():
  """Different valid lengths per example; a row that sees no key gives 0."""
  B, T, S, H, G, K = 2, 4, 24, 2, 1, 8
  q, k, v, w = _qkv(B, T, S, H, G, K)
  n = jnp.array([0, 13])
  kw = dict(q_offset=20, kv_valid_len_B=n)
  ref_out, ref_grads = _out_and_grads(
      lambda q, k, v: attn.reference_attention(q, k, v, **kw), q, k, v, w)
  out, grads = _out_and_grads(
      lambda q, k, v: attn.blockwise_attention(q, k, v, block_size=8, **kw),
      q, k, v, w)
  assert float(jnp.max(jnp.abs(out[0]))) == 0.0  # example 0: nothing valid
  _assert_close(out, ref_out, 1e-5, 2e-6, 'out')
  for name, g, rg in zip(('dq', 'dk', 'dv'), grads, ref_grads):
    assert bool(jnp.all(jnp.isfinite(g))), name
    _assert_close(g, rg, 1e-5, 2e-5, name)
  # Keys past the valid length get no gradient.
  assert float(jnp.max(jnp.abs(grads[1][1, 13:]))) == 0.0


def test_splash_interpret_mode_matches_reference():
  """The TPU splash wrapper (GQA, window, segments), run by the Pallas
  interpreter on CPU: checks our wrapping (scale, layouts, masks, vmap)."""
  B, T, H, G, K = 1, 128, 2, 1, 128
  q, k, v, w = _qkv(B, T, T, H, G, K)
  seg = _segments(B, T)
  kw = dict(segment_ids_BT=seg, window=50)
  ref_out, ref_grads = _out_and_grads(
      lambda q, k, v: attn.reference_attention(q, k, v, **kw), q, k, v, w)
  out, grads = _out_and_grads(
      lambda q, k, v: attn._splash_attention(q, k, v, block_size=128, q_offset=0,
                                             interpret=True, **kw), q, k, v, w)
  _assert_close(out, ref_out, 1e-5, 1e-5, 'splash out')
  for name, g, rg in zip(('dq', 'dk', 'dv'), grads, ref_grads):
    _assert_close(g, rg, 1e-5, 1e-5, f'splash {name}')


def test_even_block_sizes():
  assert attn._even_block(513, 512) == 264   # 2 blocks, 15 padded, not 511
  assert attn._even_block(4096, 512) == 512
  assert attn._even_block(50, 20) == 17      # 24 would exceed the request
  assert attn._even_block(1, 512) == 1


def test_auto_on_cpu_matches_reference():
  q, k, v, _ = _qkv(2, 40, 40, 4, 2, 16)
  out = jax.jit(lambda q, k, v: attn.attention(q, k, v, window=9))(q, k, v)
  ref = attn.reference_attention(q, k, v, window=9)
  _assert_close(out, ref, 1e-5, 2e-6, 'auto')


# --- selection and errors ----------------------------------------------------


def test_available_and_resolve():
  assert attn.available_implementations('cpu') == ['auto', 'reference', 'xla',
                                                   'blockwise']
  assert 'cudnn' in attn.available_implementations('cuda')
  assert 'splash' in attn.available_implementations('tpu')
  assert attn.resolve_impl('auto', 'cpu', seq_len=256) == 'blockwise'
  assert attn.resolve_impl('auto', 'cpu', seq_len=4096) == 'blockwise'
  assert attn.cpu_block_size(1, 8, 512) == 256   # 8 * 256^2 * 4 B = 2 MiB
  assert attn.cpu_block_size(16, 4, 512) == 128
  assert attn.cpu_block_size(1, 1, 64) == 64      # never above the request
  assert attn.resolve_impl('auto', 'cuda', dtype=jnp.bfloat16, head_dim=64,
                           seq_len=2048) == 'cudnn'
  # f32 is not a cuDNN flash dtype: falls back.
  assert attn.resolve_impl('auto', 'cuda', dtype=jnp.float32, head_dim=64,
                           seq_len=2048) == 'blockwise'
  assert attn.resolve_impl('auto', 'tpu', head_dim=128, seq_len=2048) == 'splash'
  assert attn.resolve_impl('auto', 'tpu', head_dim=128, seq_len=1,
                           kv_len=2048, q_offset=7) == 'xla'


@pytest.mark.parametrize('impl,pattern', [
    ('flash', 'Unknown attention implementation'),
    ('cudnn', "needs an NVIDIA GPU; this backend is cpu. Use 'blockwise' or 'auto'"),
    ('splash', "needs a TPU; this backend is cpu"),
])
def test_unavailable_impl_errors(impl, pattern):
  q, k, v, _ = _qkv(1, 8, 8, 2, 1, 8)
  with pytest.raises(ValueError, match=pattern):
    attn.attention(q, k, v, impl=impl)
  with pytest.raises(ValueError, match=pattern):
    attn.resolve_impl(impl, 'cpu')


def test_unsupported_combinations_error():
  with pytest.raises(ValueError, match='bfloat16/float16'):
    attn.resolve_impl('cudnn', 'cuda', dtype=jnp.float32, head_dim=64)
  with pytest.raises(ValueError, match='kv_valid_len_B'):
    attn.resolve_impl('splash', 'tpu', seq_len=256, has_valid_len=True)


def test_bad_shapes_error():
  q, k, v, _ = _qkv(1, 8, 8, 6, 4, 8)
  with pytest.raises(ValueError, match=r'kv heads \(4\) must divide query heads \(6\)'):
    attn.attention(q, k, v, impl='reference')
  q, k, v, _ = _qkv(1, 4, 8, 2, 1, 8)
  with pytest.raises(ValueError, match='T == S'):
    attn.attention(q, k, v, segment_ids_BT=jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match='window'):
    attn.attention(q, k, v, window=-1)


# --- memory ------------------------------------------------------------------


def _temp_bytes(impl, T, B=1, H=2, K=32, block=512):
  q = jax.ShapeDtypeStruct((B, T, H, K), jnp.float32)
  kv = jax.ShapeDtypeStruct((B, T, H, K), jnp.float32)

  def loss(q, k, v):
    return jnp.sum(attn.attention(q, k, v, impl=impl, block_size=block))

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  return step.lower(q, kv, kv).compile().memory_analysis().temp_size_in_bytes


def test_blockwise_memory_is_linear_in_T():
  """XLA's compiled temp memory of fwd+bwd: blockwise stays far below one
  T x T f32 matrix per head and grows ~linearly; the reference does not."""
  B, H, T = 1, 2, 4096
  tt_bytes = T * T * 4 * B * H
  blk_t = _temp_bytes('blockwise', T)
  blk_2t = _temp_bytes('blockwise', 2 * T)
  ref_t = _temp_bytes('reference', T)
  assert ref_t >= tt_bytes  # the reference materialises the probabilities
  assert blk_t < tt_bytes / 8, (blk_t, tt_bytes)
  assert blk_2t / blk_t < 2.6, (blk_t, blk_2t)
