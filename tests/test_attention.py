"""Tests of scaling.model.attention (and its kernel scaling.model.blockwise) against independent references.

The main reference is `reference_attention` (full logits, explicit mask, kv heads
repeated); 'xla' (jax.nn.dot_product_attention, its own causal/window masks) is
a second, independent code path. Small block sizes make the blockwise loops run
over many blocks while keeping the tests fast.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.model import attention as attn
from scaling.model import blockwise


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
  forms = {impl: lambda q, k, v, impl=impl: attn.attention(q, k, v, impl=impl, **kw) for impl in ('blockwise', 'xla')}
  # the row form of the blockwise kernel (each query block against all its keys at once; CPU 'auto')
  forms['blockwise rows'] = lambda q, k, v: attn.blockwise_attention(q, k, v, row_blocks=99, **kw)
  for impl, fn in forms.items():
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
  for row_blocks in (0, 99):   # the loops, and the row form
    fn = lambda q, k, v: attn.blockwise_attention(
        q, k, v, block_size=16, segment_ids_BT=seg, row_blocks=row_blocks)
    out, grads = _out_and_grads(fn, q, k, v, w)
    assert out.dtype == jnp.bfloat16
    assert all(g.dtype == jnp.bfloat16 for g in grads)
    _assert_close(out, ref_out, 2e-2, 2e-2, f'bf16 out, row_blocks={row_blocks}')
    for name, g, rg in zip(('dq', 'dk', 'dv'), grads, ref_grads):
      scale = float(jnp.max(jnp.abs(rg)))
      _assert_close(g, rg, 0, 3e-2 * scale, f'bf16 {name}, row_blocks={row_blocks}')


def _cache_with_junk(x_BLGK, S):
  """x in slots [0, L) of an S-slot cache, stale values (100) in the rest."""
  B, L, G, K = x_BLGK.shape
  return jnp.concatenate([x_BLGK, 100.0 * jnp.ones((B, S - L, G, K))], axis=1)


def test_cached_attention_rows_match_full_attention():
  """Decode rows (T=1) and a chunk of queries against a cache longer than the valid part:
  the rows of full causal attention (reference: kv heads repeated, -inf mask) at the same positions."""
  B, L, H, G, K, S, window = 2, 40, 4, 2, 16, 48, 11
  q, k, v, _ = _qkv(B, L, L, H, G, K)
  full = attn.reference_attention(q, k, v, window=window)
  k_cache, v_cache = _cache_with_junk(k, S), _cache_with_junk(v, S)
  step = jax.jit(lambda q, pos: attn.cached_attention(q, k_cache, v_cache, pos, window=window))
  for pos in (0, 17, L - 1):   # traced positions: one compile for all of them
    out = step(q[:, pos:pos + 1], jnp.full((B, 1), pos, jnp.int32))
    _assert_close(out, full[:, pos:pos + 1], 1e-5, 2e-6, f'decode pos {pos}')
  chunk = jnp.broadcast_to(jnp.arange(16, 24, dtype=jnp.int32), (B, 8))   # queries 16..23
  _assert_close(step(q[:, 16:24], chunk), full[:, 16:24], 1e-5, 2e-6, 'chunk of queries')


def test_cached_attention_rows_at_different_positions():
  """One call, row 0 at position 3 and row 1 at position 30 (prompts of different lengths),
  without and with a window: each row equals full attention of its own sequence at its position,
  so the slots past a row's position (the other row's tokens, stale values) are never seen."""
  B, L, H, G, K, S = 2, 32, 2, 1, 8, 40
  q, k, v, _ = _qkv(B, L, L, H, G, K, seed=3)
  k_cache, v_cache = _cache_with_junk(k, S), _cache_with_junk(v, S)
  pos_B1 = jnp.array([[3], [30]], jnp.int32)
  q_B1 = jnp.stack([q[0, 3], q[1, 30]])[:, None]
  for window in (0, 5):
    full = attn.reference_attention(q, k, v, window=window)
    out = attn.cached_attention(q_B1, k_cache, v_cache, pos_B1, window=window)
    _assert_close(out[0, 0], full[0, 3], 1e-5, 2e-6, f'row 0, window {window}')
    _assert_close(out[1, 0], full[1, 30], 1e-5, 2e-6, f'row 1, window {window}')


def test_cached_attention_matches_numpy_formula():
  """Independent of reference_attention: a direct numpy loop over the visible slots (GQA 2:1)."""
  B, S, H, G, K, window = 2, 12, 4, 2, 8, 4
  q, k, v, _ = _qkv(B, 1, S, H, G, K, seed=5)
  pos = np.array([[6], [11]])
  out = attn.cached_attention(q, k, v, jnp.asarray(pos, jnp.int32), window=window)
  qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
  exp = np.zeros((B, 1, H, K))
  for b in range(B):
    p = pos[b, 0]
    slots = [s for s in range(S) if p - window < s <= p]
    for h in range(H):
      g = h // (H // G)
      logits = np.array([qn[b, 0, h] @ kn[b, s, g] for s in slots]) / np.sqrt(K)
      w = np.exp(logits - logits.max())
      exp[b, 0, h] = sum(wi * vn[b, s, g] for wi, s in zip(w / w.sum(), slots))
  _assert_close(out, exp, 1e-5, 1e-6, 'cached_attention vs numpy')


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
      lambda q, k, v: attn._splash_attention(q, k, v, block_size=128,
                                             interpret=True, **kw), q, k, v, w)
  _assert_close(out, ref_out, 1e-5, 1e-5, 'splash out')
  for name, g, rg in zip(('dq', 'dk', 'dv'), grads, ref_grads):
    _assert_close(g, rg, 1e-5, 1e-5, f'splash {name}')


def test_even_block_sizes():
  assert blockwise._even_block(513, 512) == 264   # 2 blocks, 15 padded, not 511
  assert blockwise._even_block(4096, 512) == 512
  assert blockwise._even_block(50, 20) == 17      # 24 would exceed the request
  assert blockwise._even_block(1, 512) == 1


def test_auto_on_cpu_takes_the_row_form_up_to_eight_query_blocks():
  """B 1, H 1: cpu_block_size keeps the requested block 16, so T 128 is 8 query blocks (the row form:
  no loop in the program) and T 144 is 9 (the flash loops)."""
  def has_loop(T):
    q, k, v, _ = _qkv(1, T, T, 1, 1, 8)
    f = lambda q, k, v: attn.attention(q, k, v, block_size=16)
    jaxpr = jax.make_jaxpr(jax.grad(lambda q, k, v: f(q, k, v).sum(), argnums=(0, 1, 2)))(q, k, v)
    return 'while' in str(jaxpr)
  assert attn._CPU_ROW_BLOCKS == 8
  assert not has_loop(128)
  assert has_loop(144)
  q, k, v, w = _qkv(1, 128, 128, 2, 1, 8)   # and the row form at 8 blocks (MQA) is the reference
  out, grads = _out_and_grads(lambda q, k, v: attn.attention(q, k, v, block_size=16), q, k, v, w)
  ref_out, ref_grads = _out_and_grads(attn.reference_attention, q, k, v, w)
  _assert_close(out, ref_out, 1e-5, 2e-6, 'auto out')
  for name, g, rg in zip(('dq', 'dk', 'dv'), grads, ref_grads):
    _assert_close(g, rg, 1e-5, 2e-5, f'auto {name}')


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
  assert attn.cpu_block_size(16, 4, 512) == 64    # 16 * 4 * 64^2 * 4 B = 1 MiB; 128 would be 4 MiB
  assert attn.cpu_block_size(1, 1, 64) == 64      # never above the request
  assert attn.resolve_impl('auto', 'cuda', dtype=jnp.bfloat16, head_dim=64,
                           seq_len=2048) == 'cudnn'
  # f32 is not a cuDNN flash dtype: falls back.
  assert attn.resolve_impl('auto', 'cuda', dtype=jnp.float32, head_dim=64,
                           seq_len=2048) == 'blockwise'
  assert attn.resolve_impl('auto', 'tpu', head_dim=128, seq_len=2048) == 'splash'
  assert attn.resolve_impl('auto', 'tpu', head_dim=128, seq_len=1,
                           kv_len=2048) == 'xla'


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
  with pytest.raises(ValueError, match='multiple of 128'):
    attn.resolve_impl('splash', 'tpu', seq_len=200)
  with pytest.raises(ValueError, match='segment_ids_BT'):
    attn.resolve_impl('cudnn', 'cuda', dtype=jnp.bfloat16, head_dim=64, has_segments=True)


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
