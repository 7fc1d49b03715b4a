"""Causal (grouped-query) attention with interchangeable implementations.

One entry point, `attention(q_BTHK, k_BSGK, v_BSGK, impl=...)`, so the model can
switch kernels from the config without changing shapes or semantics:

  'reference'  plain einsum + explicit mask + softmax, kv heads repeated. Short,
               obviously correct; used by the tests. Stores the T x S matrix.
  'xla'        `jax.nn.dot_product_attention` (XLA). Also builds T x S.
  'blockwise'  pure-JAX flash attention: online softmax over query/key blocks,
               a custom VJP (FlashAttention-2 backward, recomputes each block
               from the saved logsumexp). Memory linear in T; key blocks above
               the causal diagonal (and outside the sliding window) are skipped.
               Its kernel lives in scaling/model/blockwise.py.
  'cudnn'      `jax.nn.dot_product_attention(implementation='cudnn')`, NVIDIA only.
  'splash'     the Pallas TPU splash-attention kernel shipped with JAX, TPU only;
               per device under shard_map over the mesh of its inputs (batch over
               data x fsdp, heads over tensor: scaling/model/splash.py).
  'auto'       cudnn on GPU, splash on TPU (each when it supports the call;
               else xla below 1k tokens, blockwise above); on CPU always
               'blockwise' with a cache-sized block (`cpu_block_size`), in its
               row form up to 8 query blocks (each query block against all its
               visible keys in one product; measured in
               bench/results/attention.md).

Shape letters: B batch, T query length, S key length, H query heads, G kv heads
(G divides H; query head h reads kv head h // (H // G)), K head dim, R = H // G.

Semantics shared by every implementation:
  * causal: query i sits at position i, key j at position j; query i sees key j
    iff j <= i (decoding against a KV cache, where queries sit at other
    positions, is `cached_attention` below);
  * window > 0: additionally j > i - window (the query sees `window` keys,
    itself included); window = 0 means unlimited;
  * segment_ids_BT (needs T == S): query i sees key j only if their ids match;
  * softmax scale 1/sqrt(K); logits, softmax and accumulation in float32; the
    output has q's dtype.
A query row with no visible key gives zeros in 'reference' and 'blockwise'
('xla' returns an average of the values there); causal self-attention never
produces such rows.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from scaling.base import names
from scaling.model.blockwise import _F32, _M_INIT, blockwise_attention

IMPLEMENTATIONS = names.ATTENTION   # model.attention: the one list is scaling/base/names.py

# 'auto' on GPU/TPU falls back to 'blockwise' from this query length on (below
# it, to 'xla') when the fused kernel cannot take the call.
_BLOCKWISE_MIN_T = 1024
# On CPU 'auto' is always 'blockwise' (bench/results/attention.md: faster than
# 'reference' and 'xla' from T=256 up, fwd and fwd+bwd, and memory linear in T),
# with the block shrunk until one [B, H, block, block] f32 logits tile fits in
# this many bytes (the L2 of the 2-core machine measured): tiles that spill out
# of the caches ran up to 6x slower, and at the default model (B 16, H 4, T 256)
# fwd+bwd took 19.7 ms with 1 MiB tiles (block 64) against 32.4 ms with 4 MiB
# (block 128); bench/results/attention.md, "Tile size".
_CPU_TILE_BYTES = 2 * 2**20
# ... and, up to this many query blocks, in its row form (each query block against
# all its visible keys in one product, blockwise `_rows`): at the default model fwd+bwd took
# 18.0 ms against 28.0 ms in bfloat16, 35.9 against 54.5 ms in float32, and 25-35%
# less up to 8 blocks at T 512-2048 (bench/results/attention.md, "Row form"). The
# loop is unrolled at trace time, so the bound also bounds compile time, and the
# largest logits tile to this many block tiles.
_CPU_ROW_BLOCKS = 8


# ---------------------------------------------------------------------------
# Backend selection
# ---------------------------------------------------------------------------


def _default_backend() -> str:
  return jax.default_backend()


def _is_nvidia_gpu(backend: str) -> bool:
  if backend == 'cuda':
    return True
  if backend != 'gpu':
    return False
  try:
    kind = jax.devices('gpu')[0].device_kind.lower()
  except RuntimeError:
    return False
  return 'amd' not in kind and 'instinct' not in kind and 'radeon' not in kind


def available_implementations(backend: str | None = None) -> list[str]:
  """Implementations that can run on `backend` (default: jax's default backend)."""
  backend = backend or _default_backend()
  impls = ['auto', 'reference', 'xla', 'blockwise']
  if _is_nvidia_gpu(backend):
    impls.append('cudnn')
  if backend == 'tpu':
    impls.append('splash')
  return impls


def _cudnn_unsupported_reason(dtype, head_dim, seq_q, seq_k, has_segments) -> str | None:
  """Why cuDNN flash attention cannot take this call (None if it can)."""
  if dtype is not None and jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16),
                                                     jnp.dtype(jnp.float16)):
    return f'cuDNN flash attention needs bfloat16/float16 inputs, got {jnp.dtype(dtype)}'
  if head_dim is not None and (head_dim > 128 or head_dim % 8):
    return f'cuDNN flash attention needs head_dim <= 128 and a multiple of 8, got {head_dim}'
  if seq_q is not None and seq_k is not None and seq_q != seq_k:
    return f'the cuDNN path here only supports self-attention (T == S), got T={seq_q}, S={seq_k}'
  if has_segments:
    return 'the cuDNN path here does not support segment_ids_BT'
  return None


def _splash_unsupported_reason(seq_q, seq_k, block_size) -> str | None:
  """Why the splash kernel cannot take this call (None if it can)."""
  for name, n in (('T', seq_q), ('S', seq_k)):
    if n is not None:
      b = min(block_size, n)
      if n % 128 or b % 128 or n % b:
        return (f'splash attention needs {name}={n} to be a multiple of 128 and of '
                f'the block size {b}')
  return None


def resolve_impl(impl: str, backend: str | None = None, *, dtype=None,
                 head_dim: int | None = None, seq_len: int | None = None,
                 kv_len: int | None = None, has_segments: bool = False,
                 block_size: int = 512) -> str:
  """Maps `impl` (possibly 'auto') to a concrete implementation for `backend`.

  Raises ValueError, naming the fix, when the name is unknown or the choice
  cannot run on this backend / with these arguments.
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f'Unknown attention implementation {impl!r}; choose one of '
                     f'{", ".join(IMPLEMENTATIONS)}.')
  backend = backend or _default_backend()
  kv_len = seq_len if kv_len is None else kv_len
  if impl == 'cudnn':
    if not _is_nvidia_gpu(backend):
      raise ValueError(f"attention='cudnn' needs an NVIDIA GPU; this backend is "
                       f"{backend}. Use 'blockwise' or 'auto'.")
    why = _cudnn_unsupported_reason(dtype, head_dim, seq_len, kv_len, has_segments)
    if why:
      raise ValueError(f"attention='cudnn': {why}. Use 'blockwise', 'xla' or 'auto'.")
    return impl
  if impl == 'splash':
    if backend != 'tpu':
      raise ValueError(f"attention='splash' needs a TPU; this backend is "
                       f"{backend}. Use 'blockwise' or 'auto'.")
    why = _splash_unsupported_reason(seq_len, kv_len, block_size)
    if why:
      raise ValueError(f"attention='splash': {why}. Use 'blockwise', 'xla' or 'auto'.")
    return impl
  if impl != 'auto':
    return impl
  # auto
  long_seq = seq_len is not None and seq_len >= _BLOCKWISE_MIN_T
  if _is_nvidia_gpu(backend):
    why = _cudnn_unsupported_reason(dtype, head_dim, seq_len, kv_len, has_segments)
    if why is None:
      return 'cudnn'
    return 'blockwise' if long_seq else 'xla'
  if backend == 'tpu':
    why = _splash_unsupported_reason(seq_len, kv_len, block_size)
    if why is None and (seq_len or 0) >= 128:
      return 'splash'
    return 'blockwise' if long_seq else 'xla'
  # CPU (and anything else): measured in bench/attention_bench.py.
  return 'blockwise'


def cpu_block_size(batch: int, heads: int, block_size: int) -> int:
  """Largest power-of-two block <= block_size (and >= 16) whose f32 logits
  tile [batch, heads, block, block] fits in _CPU_TILE_BYTES. Used by 'auto' on
  CPU, where cache-sized tiles were up to 6x faster than 512 x 512 ones."""
  block = 16
  while (block * 2 <= block_size and
         batch * heads * (block * 2) ** 2 * 4 <= _CPU_TILE_BYTES):
    block *= 2
  return min(block, block_size)


# ---------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------


def attention(q_BTHK: jax.Array, k_BSGK: jax.Array, v_BSGK: jax.Array, *,
              impl: str = 'auto', segment_ids_BT: jax.Array | None = None,
              window: int = 0, block_size: int = 512) -> jax.Array:
  """Causal grouped-query attention; returns out_BTHK in q's dtype.

  Args:
    q_BTHK: queries.
    k_BSGK, v_BSGK: keys and values with G kv heads (G divides H).
    impl: one of IMPLEMENTATIONS ('auto' picks per backend, see resolve_impl).
    segment_ids_BT: int ids; attention stays within equal ids (needs T == S).
    window: sliding window in keys (itself included); 0 = unlimited.
    block_size: query/key block size of 'blockwise' (and 'splash'); 'auto' on
      CPU may lower it to fit the caches (see cpu_block_size).
  """
  _check_inputs(q_BTHK, k_BSGK, v_BSGK, segment_ids_BT, window, block_size)
  B, T, H, K = q_BTHK.shape
  S = k_BSGK.shape[1]
  auto = impl == 'auto'
  impl = resolve_impl(impl, dtype=q_BTHK.dtype, head_dim=K, seq_len=T,
                      kv_len=S, has_segments=segment_ids_BT is not None,
                      block_size=block_size)
  kwargs = dict(segment_ids_BT=segment_ids_BT, window=window)
  row_blocks = 0
  if auto and impl == 'blockwise' and _default_backend() == 'cpu':
    block_size, row_blocks = cpu_block_size(B, H, block_size), _CPU_ROW_BLOCKS
  if impl == 'reference':
    return reference_attention(q_BTHK, k_BSGK, v_BSGK, **kwargs)
  if impl == 'xla':
    return _xla_attention(q_BTHK, k_BSGK, v_BSGK, implementation='xla', **kwargs)
  if impl == 'cudnn':
    return _xla_attention(q_BTHK, k_BSGK, v_BSGK, implementation='cudnn', **kwargs)
  if impl == 'blockwise':
    return blockwise_attention(q_BTHK, k_BSGK, v_BSGK, block_size=block_size,
                               row_blocks=row_blocks, **kwargs)
  if impl == 'splash':
    return _splash_attention(q_BTHK, k_BSGK, v_BSGK, segment_ids_BT=segment_ids_BT,
                             window=window, block_size=block_size)
  raise AssertionError(impl)


def _check_inputs(q, k, v, segment_ids, window, block_size):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError('attention expects q [B,T,H,K], k and v [B,S,G,K]; got shapes '
                     f'{q.shape}, {k.shape}, {v.shape}.')
  B, T, H, K = q.shape
  if k.shape != v.shape:
    raise ValueError(f'k and v must have the same shape, got {k.shape} and {v.shape}.')
  if k.shape[0] != B or k.shape[3] != K:
    raise ValueError(f'k/v {k.shape} must match q {q.shape} in batch and head_dim.')
  G = k.shape[2]
  if G == 0 or H % G:
    raise ValueError(f'kv heads ({G}) must divide query heads ({H}).')
  if segment_ids is not None:
    if segment_ids.shape != (B, T):
      raise ValueError(f'segment_ids_BT must have shape {(B, T)}, got {segment_ids.shape}.')
    if k.shape[1] != T:
      raise ValueError('segment_ids_BT needs self-attention (T == S); got '
                       f'T={T}, S={k.shape[1]}.')
  if not isinstance(window, int) or window < 0:
    raise ValueError(f'window must be an int >= 0 (0 = unlimited), got {window!r}.')
  if not isinstance(block_size, int) or block_size < 1:
    raise ValueError(f'block_size must be a positive int, got {block_size!r}.')


# ---------------------------------------------------------------------------
# Reference: einsum + explicit mask
# ---------------------------------------------------------------------------


def _mask_BTS(T, S, *, segment_ids_BT, window):
  """Boolean [B or 1, T, S] mask: True where query t may attend key s."""
  qpos_T = jnp.arange(T)
  kpos_S = jnp.arange(S)
  mask = kpos_S[None, :] <= qpos_T[:, None]
  if window:
    mask &= kpos_S[None, :] > qpos_T[:, None] - window
  mask = mask[None]
  if segment_ids_BT is not None:
    mask = mask & (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])
  return mask


def reference_attention(q_BTHK, k_BSGK, v_BSGK, *, segment_ids_BT=None, window=0):
  """Plain attention: repeat kv heads, full logits, explicit mask, softmax."""
  B, T, H, K = q_BTHK.shape
  S, G = k_BSGK.shape[1], k_BSGK.shape[2]
  k_BSHK = jnp.repeat(k_BSGK, H // G, axis=2)
  v_BSHK = jnp.repeat(v_BSGK, H // G, axis=2)
  logits_BHTS = jnp.einsum('bthk,bshk->bhts', q_BTHK, k_BSHK,
                           preferred_element_type=_F32) / math.sqrt(K)
  mask_B1TS = _mask_BTS(T, S, segment_ids_BT=segment_ids_BT, window=window)[:, None]
  logits_BHTS = jnp.where(mask_B1TS, logits_BHTS, -jnp.inf)
  has_key_B1T1 = jnp.any(mask_B1TS, axis=-1, keepdims=True)
  logits_BHTS = jnp.where(has_key_B1T1, logits_BHTS, 0.0)  # avoid NaN rows
  probs_BHTS = jax.nn.softmax(logits_BHTS, axis=-1)
  probs_BHTS = jnp.where(has_key_B1T1, probs_BHTS, 0.0)
  out_BTHK = jnp.einsum('bhts,bshk->bthk', probs_BHTS.astype(v_BSHK.dtype), v_BSHK,
                        preferred_element_type=_F32)
  return out_BTHK.astype(q_BTHK.dtype)


# ---------------------------------------------------------------------------
# Decoding against a KV cache
# ---------------------------------------------------------------------------


def cached_attention(q_BTHK, k_BSGK, v_BSGK, positions_BT, *, window: int = 0):
  """Attention of queries at absolute positions positions_BT over a KV cache of S slots.

  Slot s holds the key/value of position s. Query (b, t) sees slots
  s <= positions_BT[b, t] (and s > positions_BT[b, t] - window with a sliding
  window), so rows of one batch may sit at different positions and slots past
  a row's position (stale values, another prompt's padding) are never seen.
  The caller has written the query positions' own keys/values into the cache
  first, so every query sees at least one slot. Plain masked softmax with the
  kv heads shared by H/G query heads (no repeat); work ~ T x S: meant for
  decoding (T = 1), not for a long prefill (that is `attention`).
  """
  B, T, H, K = q_BTHK.shape
  S, G = k_BSGK.shape[1], k_BSGK.shape[2]
  key_pos_S = jnp.arange(S)
  mask_BTS = key_pos_S[None, None, :] <= positions_BT[:, :, None]
  if window:
    mask_BTS &= key_pos_S[None, None, :] > positions_BT[:, :, None] - window
  q_BTGRK = q_BTHK.reshape(B, T, G, H // G, K)
  s_BGRTS = jnp.einsum('btgrk,bsgk->bgrts', q_BTGRK, k_BSGK.astype(q_BTHK.dtype),
                       preferred_element_type=_F32) / math.sqrt(K)
  s_BGRTS = jnp.where(mask_BTS[:, None, None], s_BGRTS, _M_INIT)
  p_BGRTS = jax.nn.softmax(s_BGRTS, axis=-1)
  out_BTGRK = jnp.einsum('bgrts,bsgk->btgrk', p_BGRTS.astype(q_BTHK.dtype),
                         v_BSGK.astype(q_BTHK.dtype), preferred_element_type=_F32)
  return out_BTGRK.reshape(B, T, H, K).astype(q_BTHK.dtype)


# ---------------------------------------------------------------------------
# XLA / cuDNN via jax.nn.dot_product_attention
# ---------------------------------------------------------------------------


def _xla_attention(q_BTHK, k_BSGK, v_BSGK, *, implementation, segment_ids_BT, window):
  """jax.nn.dot_product_attention with our mask semantics.

  Its `is_causal` / `local_window_size` are used when T == S; otherwise the
  mask is explicit.
  """
  T, S = q_BTHK.shape[1], k_BSGK.shape[1]
  if T == S:
    mask = None
    if segment_ids_BT is not None:
      mask = (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])[:, None]
    return jax.nn.dot_product_attention(
        q_BTHK, k_BSGK, v_BSGK, mask=mask, is_causal=True,
        local_window_size=(window - 1, 0) if window else None,
        implementation=implementation)
  if implementation == 'cudnn':
    raise ValueError("attention='cudnn' supports only T == S; use 'xla' or 'blockwise'.")
  mask_B1TS = _mask_BTS(T, S, segment_ids_BT=segment_ids_BT, window=window)[:, None]
  return jax.nn.dot_product_attention(q_BTHK, k_BSGK, v_BSGK, mask=mask_B1TS,
                                      implementation=implementation)


# ---------------------------------------------------------------------------
# Splash attention (Pallas, TPU)
# ---------------------------------------------------------------------------


def _splash_attention(q_BTHK, k_BSGK, v_BSGK, *, segment_ids_BT, window,
                      block_size, interpret=False):
  """The splash kernel, per device under shard_map over the arrays' mesh: scaling/model/splash.py."""
  from scaling.model.splash import splash_attention
  return splash_attention(q_BTHK, k_BSGK, v_BSGK, segment_ids_BT=segment_ids_BT, window=window,
                          block_size=block_size, interpret=interpret)


# cuDNN flash attention's tile (query x key blocks) for the positions it computes: an estimate, since the engine
# cuDNN picks on the GPU sets the real tiles (and a compile without a GPU builds no cuDNN graph: scaling/train/aot.py)
CUDNN_TILE = 128


def cudnn_kernel_flops(target: str, outs: list, operands: list, *, window: int = 0, tile: int = CUDNN_TILE) -> float:
  """The matmul FLOPs of one cuDNN flash-attention call in the HLO, from its shapes (a kernel counter for
  scaling/train/hlo.py hlo_dot_flops).

  jax.nn.dot_product_attention(implementation='cudnn') reaches the HLO as a custom call `CustomSPMDPartitioning`
  (jax's custom_partitioning; `__cudnn$fmhaSoftmax*` after partitioning) with global shapes, layout BTNH:
  operands q [B, T, H, K], k [B, S, G, K], v [B, S, G, K], then scalars. Each matmul costs 2 B H K per computed
  position. The forward (outputs o like q and the logsumexp [B, H, T]) does 2 (q k^T, p v); the backward
  (outputs dq, dk, dv like q, k, v) 5 (q k^T, dO v^T, p^T dO, ds^T q, ds k). The kernel skips the tiles above
  the causal diagonal (and outside the window): counted as every position of the tile x tile blocks with a
  visible key (splash.visited_positions). Other custom calls: 0.
  """
  from scaling.model import splash
  arrays = [list(d) for d in operands if len(d) == 4]
  if target != 'CustomSPMDPartitioning' or len(arrays) < 3:
    return 0.0
  q, k, v = arrays[:3]
  (B, T, H, K), (_, S, G, _) = q, k
  if k != v or [k[0], k[3]] != [B, K] or H % G:
    return 0.0
  outs4 = [list(o) for o in outs if len(o) == 4]
  if outs4[:3] == [q, k, v]:
    matmuls = 5
  elif outs4[:1] == [q] and [B, H, T] in [list(o) for o in outs]:
    matmuls = 2
  else:
    return 0.0
  return float(matmuls * 2 * B * H * K * splash.visited_positions(T, S, tile, tile, window))
