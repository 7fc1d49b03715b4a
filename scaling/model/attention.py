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
  'cudnn'      `jax.nn.dot_product_attention(implementation='cudnn')`, NVIDIA only.
  'splash'     the Pallas TPU splash-attention kernel shipped with JAX, TPU only.
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

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from scaling.base import names

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
# all its visible keys in one product, `_rows`): at the default model fwd+bwd took
# 18.0 ms against 28.0 ms in bfloat16, 35.9 against 54.5 ms in float32, and 25-35%
# less up to 8 blocks at T 512-2048 (bench/results/attention.md, "Row form"). The
# loop is unrolled at trace time, so the bound also bounds compile time, and the
# largest logits tile to this many block tiles.
_CPU_ROW_BLOCKS = 8

_F32 = jnp.float32
# Initial running max: finite, so exp(m_old - m_new) never sees inf - inf.
_M_INIT = -1e30


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
# Blockwise (flash) attention in pure JAX
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _FlashCfg:
  """Static parameters of the blockwise kernel (hashable: a custom_vjp nondiff arg)."""
  bq: int          # query block
  bk: int          # key block
  nq: int          # number of query blocks (padded T = nq * bq)
  nk: int          # number of key blocks (padded S = nk * bk)
  window: int      # 0 = unlimited
  kv_len: int      # S before padding: keys at or past it are padding
  scale: float
  segments: bool   # whether segment ids are given


def blockwise_attention(q_BTHK, k_BSGK, v_BSGK, *, segment_ids_BT=None, window=0,
                        block_size=512, row_blocks=0):
  """Flash attention in pure JAX; memory O(T) in both passes.

  Pads T and S up to whole blocks (sizes from _even_block), moves heads in
  front of the sequence axis so each block's matmuls are plain batched GEMMs,
  and runs the custom-VJP kernel `_flash`; or, when there are at most
  `row_blocks` query blocks, its row form `_rows` (each query block against all
  its visible keys at once; the largest logits tile holds B x H x block x S).
  """
  B, T, H, K = q_BTHK.shape
  S, G = k_BSGK.shape[1], k_BSGK.shape[2]
  R = H // G
  bq, bk = _even_block(T, block_size), _even_block(S, block_size)
  nq, nk = -(-T // bq), -(-S // bk)
  cfg = _FlashCfg(bq=bq, bk=bk, nq=nq, nk=nk, window=window, kv_len=S,
                  scale=1.0 / math.sqrt(K), segments=segment_ids_BT is not None)
  q_BGTRK = q_BTHK.reshape(B, T, G, R, K).transpose(0, 2, 1, 3, 4)
  q_BGTRK = jnp.pad(q_BGTRK, ((0, 0), (0, 0), (0, nq * bq - T), (0, 0), (0, 0)))
  pad_kv = ((0, 0), (0, 0), (0, nk * bk - S), (0, 0))
  k_BGSK = jnp.pad(k_BSGK.transpose(0, 2, 1, 3), pad_kv)
  v_BGSK = jnp.pad(v_BSGK.transpose(0, 2, 1, 3), pad_kv)
  if segment_ids_BT is None:
    seg_q_BT = seg_k_BS = jnp.zeros((B, 0), jnp.int32)  # unused placeholder
  else:
    seg = segment_ids_BT.astype(jnp.int32)
    seg_q_BT = jnp.pad(seg, ((0, 0), (0, nq * bq - T)), constant_values=-1)
    seg_k_BS = jnp.pad(seg, ((0, 0), (0, nk * bk - S)), constant_values=-2)
  kernel = _rows if nq <= row_blocks else _flash
  out_BGTRK = kernel(cfg, q_BGTRK, k_BGSK, v_BGSK, seg_q_BT, seg_k_BS)
  return out_BGTRK[:, :, :T].transpose(0, 2, 1, 3, 4).reshape(B, T, H, K)


def _even_block(n, block_size):
  """Block <= block_size splitting n into equal blocks with little padding
  (T=513, block 512: two blocks of 264, not 512 + 1 padded to 1024)."""
  if n <= block_size:
    return n
  num = -(-n // block_size)
  block = -(-n // num)
  rounded = -(-block // 8) * 8  # multiples of 8 suit the vector units
  return rounded if rounded <= block_size else block


def _kv_block_range(cfg, i):
  """Key blocks [lo, hi) that query block i can see (causal, window)."""
  first_q = i * cfg.bq
  last_q = first_q + cfg.bq - 1
  hi = jnp.clip(last_q // cfg.bk + 1, 0, cfg.nk)
  lo = jnp.zeros_like(hi)
  if cfg.window:
    lo = jnp.clip((first_q - cfg.window + 1) // cfg.bk, 0, cfg.nk)
  return lo, jnp.maximum(hi, lo)


def _q_block_range(cfg, j):
  """Query blocks [lo, hi) that can see key block j (causal, window)."""
  first_k = j * cfg.bk
  lo = jnp.clip(first_k // cfg.bq, 0, cfg.nq)
  hi = jnp.full_like(lo, cfg.nq)
  if cfg.window:  # query p needs some key k in the block with k > p - window
    last_k = first_k + cfg.bk - 1
    hi = jnp.clip((last_k + cfg.window - 1) // cfg.bq + 1, 0, cfg.nq)
  return lo, jnp.maximum(hi, lo)


def _block_mask(cfg, i, j, seg_q_BT, seg_k_BS):
  """[B|1, 1, bq, 1, bk] visibility of key block j from query block i."""
  return _visibility(cfg, i * cfg.bq, j * cfg.bk, cfg.bk, seg_q_BT, seg_k_BS)


def _visibility(cfg, q_start, k_start, n_keys, seg_q_BT, seg_k_BS):
  """[B|1, 1, bq, 1, n_keys] visibility of keys [k_start, k_start + n_keys) from the
  query block starting at q_start (starts traced in the loops, Python ints in the row form)."""
  qpos_Q = q_start + jnp.arange(cfg.bq)
  kpos_C = k_start + jnp.arange(n_keys)
  mask_QC = kpos_C[None, :] <= qpos_Q[:, None]
  if cfg.window:
    mask_QC &= kpos_C[None, :] > qpos_Q[:, None] - cfg.window
  mask_BQC = (mask_QC & (kpos_C[None, :] < cfg.kv_len))[None]   # padded keys
  if cfg.segments:
    sq_BQ = lax.dynamic_slice_in_dim(seg_q_BT, q_start, cfg.bq, axis=1)
    sk_BC = lax.dynamic_slice_in_dim(seg_k_BS, k_start, n_keys, axis=1)
    mask_BQC &= sq_BQ[:, :, None] == sk_BC[:, None, :]
  return mask_BQC[:, None, :, None, :]


def _flash_forward(cfg, q, k, v, seg_q_BT, seg_k_BS):
  """Returns out [B,G,Tp,R,K] (q dtype) and logsumexp [B,G,Tp,R] (f32).

  Rows that see no key get out = 0 and lse = +inf (so the backward's
  exp(s - lse) is 0 there, not NaN).
  """
  B, G, Tp, R, K = q.shape

  def q_block(i, carry):
    out, lse = carry
    q_i = lax.dynamic_slice_in_dim(q, i * cfg.bq, cfg.bq, axis=2)

    def kv_step(j, state):
      m_BGQR, l_BGQR, acc_BGQRK = state
      k_j = lax.dynamic_slice_in_dim(k, j * cfg.bk, cfg.bk, axis=2)
      v_j = lax.dynamic_slice_in_dim(v, j * cfg.bk, cfg.bk, axis=2)
      s = jnp.einsum('bgqrk,bgck->bgqrc', q_i, k_j,
                     preferred_element_type=_F32) * cfg.scale
      mask = _block_mask(cfg, i, j, seg_q_BT, seg_k_BS)
      s = jnp.where(mask, s, -jnp.inf)
      m_new = jnp.maximum(m_BGQR, jnp.max(s, axis=-1))
      alpha = jnp.exp(m_BGQR - m_new)
      p = jnp.exp(s - m_new[..., None])
      l_new = alpha * l_BGQR + jnp.sum(p, axis=-1)
      pv = jnp.einsum('bgqrc,bgck->bgqrk', p.astype(v.dtype), v_j,
                      preferred_element_type=_F32)
      return m_new, l_new, alpha[..., None] * acc_BGQRK + pv

    lo, hi = _kv_block_range(cfg, i)
    init = (jnp.full((B, G, cfg.bq, R), _M_INIT, _F32),
            jnp.zeros((B, G, cfg.bq, R), _F32),
            jnp.zeros((B, G, cfg.bq, R, K), _F32))
    m, l, acc = lax.fori_loop(lo, hi, kv_step, init)
    out_i, lse_i = _normalize(acc, m, l, out.dtype)
    out = lax.dynamic_update_slice_in_dim(out, out_i, i * cfg.bq, axis=2)
    lse = lax.dynamic_update_slice_in_dim(lse, lse_i, i * cfg.bq, axis=2)
    return out, lse

  init = (jnp.zeros(q.shape, q.dtype), jnp.zeros((B, G, Tp, R), _F32))
  return lax.fori_loop(0, cfg.nq, q_block, init)


def _normalize(acc, m, l, dtype):
  """(out, lse) of a query block from its softmax numerator acc, row max m and row sum l; rows that saw
  no key (l = 0) get out 0 and lse +inf."""
  seen = l > 0
  inv_l = jnp.where(seen, 1.0 / jnp.where(seen, l, 1.0), 0.0)
  lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf)
  return (acc * inv_l[..., None]).astype(dtype), lse


def _kernel(forward, backward):
  """The custom-VJP kernel kernel(cfg, q, k, v, seg_q_BT, seg_k_BS) -> out: forward returns (out, lse),
  backward(cfg, (q, k, v, seg_q_BT, seg_k_BS, out, lse), dout) the cotangents."""
  @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
  def kernel(cfg, q, k, v, seg_q_BT, seg_k_BS):
    return forward(cfg, q, k, v, seg_q_BT, seg_k_BS)[0]

  def kernel_fwd(cfg, *args):
    out, lse = forward(cfg, *args)
    return out, (*args, out, lse)
  kernel.defvjp(kernel_fwd, backward)
  return kernel


def _flash_bwd(cfg, res, dout):
  """FlashAttention-2 backward: per key block, loop over the query blocks that
  see it, recompute P = exp(S - lse), accumulate dK_j, dV_j locally and dQ in a
  full-size f32 buffer. Nothing of size T x S is stored."""
  q, k, v, seg_q_BT, seg_k_BS, out, lse = res
  B, G, Tp, R, K = q.shape
  delta_BGTR = jnp.sum(dout.astype(_F32) * out.astype(_F32), axis=-1)
  dout = dout.astype(q.dtype)

  def kv_block(j, carry):
    dq, dk, dv = carry
    k_j = lax.dynamic_slice_in_dim(k, j * cfg.bk, cfg.bk, axis=2)
    v_j = lax.dynamic_slice_in_dim(v, j * cfg.bk, cfg.bk, axis=2)

    def q_step(i, state):
      dq, dk_j, dv_j = state
      sl = lambda x: lax.dynamic_slice_in_dim(x, i * cfg.bq, cfg.bq, axis=2)
      q_i, do_i, lse_i, delta_i = sl(q), sl(dout), sl(lse), sl(delta_BGTR)
      s = jnp.einsum('bgqrk,bgck->bgqrc', q_i, k_j,
                     preferred_element_type=_F32) * cfg.scale
      mask = _block_mask(cfg, i, j, seg_q_BT, seg_k_BS)
      p = jnp.where(mask, jnp.exp(s - lse_i[..., None]), 0.0)
      dv_j = dv_j + jnp.einsum('bgqrc,bgqrk->bgck', p.astype(do_i.dtype), do_i,
                               preferred_element_type=_F32)
      dp = jnp.einsum('bgqrk,bgck->bgqrc', do_i, v_j, preferred_element_type=_F32)
      ds = p * (dp - delta_i[..., None])  # dL/dS without the scale
      dk_j = dk_j + jnp.einsum('bgqrc,bgqrk->bgck', ds.astype(q_i.dtype), q_i,
                               preferred_element_type=_F32)
      dq_i = jnp.einsum('bgqrc,bgck->bgqrk', ds.astype(k_j.dtype), k_j,
                        preferred_element_type=_F32)
      dq = lax.dynamic_update_slice_in_dim(dq, sl(dq) + dq_i, i * cfg.bq, axis=2)
      return dq, dk_j, dv_j

    lo, hi = _q_block_range(cfg, j)
    zeros = jnp.zeros((B, G, cfg.bk, K), _F32)
    dq, dk_j, dv_j = lax.fori_loop(lo, hi, q_step, (dq, zeros, zeros))
    dk = lax.dynamic_update_slice_in_dim(dk, dk_j * cfg.scale, j * cfg.bk, axis=2)
    dv = lax.dynamic_update_slice_in_dim(dv, dv_j, j * cfg.bk, axis=2)
    return dq, dk, dv

  init = (jnp.zeros(q.shape, _F32), jnp.zeros(k.shape, _F32),
          jnp.zeros(v.shape, _F32))
  dq, dk, dv = lax.fori_loop(0, cfg.nk, kv_block, init)
  dq = (dq * cfg.scale).astype(q.dtype)
  return (dq, dk.astype(k.dtype), dv.astype(v.dtype), None, None)


_flash = _kernel(_flash_forward, _flash_bwd)


# The row form: the query-block loop unrolled at trace time, each query block
# against all the keys it can see in one product. Key ranges are then static, so
# there is no online softmax (no running max, no rescaling of the accumulator)
# and each block's matmuls are 1 to nk times wider than a block pair's, which the
# CPU's small-matmul kernels run far closer to their peak. Memory: the largest
# logits tile is [B, H, bq, S], i.e. nq block tiles; 'auto' on CPU takes this form
# up to _CPU_ROW_BLOCKS query blocks (bench/results/attention.md, "Row form").


def _row_keys(cfg, i):
  """Static key range [lo, hi) that query block i can see (causal, window), in the padded keys."""
  first_q = i * cfg.bq
  hi = min(first_q + cfg.bq, cfg.nk * cfg.bk)
  lo = max(0, first_q - cfg.window + 1) if cfg.window else 0
  return lo, max(hi, lo)


def _rows_forward(cfg, q, k, v, seg_q_BT, seg_k_BS):
  """Same contract as _flash_forward (rows that see no key: out 0, lse +inf)."""
  B, G, _, R, K = q.shape
  outs, lses = [], []
  for i in range(cfg.nq):
    lo, hi = _row_keys(cfg, i)
    if hi == lo:
      outs.append(jnp.zeros((B, G, cfg.bq, R, K), q.dtype))
      lses.append(jnp.full((B, G, cfg.bq, R), jnp.inf, _F32))
      continue
    q_i = q[:, :, i * cfg.bq:(i + 1) * cfg.bq]
    s = jnp.einsum('bgqrk,bgck->bgqrc', q_i, k[:, :, lo:hi], preferred_element_type=_F32) * cfg.scale
    s = jnp.where(_visibility(cfg, i * cfg.bq, lo, hi - lo, seg_q_BT, seg_k_BS), s, -jnp.inf)
    m_BGQR = jnp.max(s, axis=-1)
    m_BGQR = jnp.where(m_BGQR > -jnp.inf, m_BGQR, 0.0)   # a row that sees no key: p = 0, not NaN
    p = jnp.exp(s - m_BGQR[..., None])
    l_BGQR = jnp.sum(p, axis=-1)
    pv = jnp.einsum('bgqrc,bgck->bgqrk', p.astype(v.dtype), v[:, :, lo:hi], preferred_element_type=_F32)
    out_i, lse_i = _normalize(pv, m_BGQR, l_BGQR, q.dtype)
    outs.append(out_i)
    lses.append(lse_i)
  return jnp.concatenate(outs, axis=2), jnp.concatenate(lses, axis=2)


def _rows_bwd(cfg, res, dout):
  """_flash_bwd's products per query block against its whole key range: P recomputed from the
  saved logsumexp, dQ of the block written once, dK and dV accumulated over their range."""
  q, k, v, seg_q_BT, seg_k_BS, out, lse = res
  delta_BGTR = jnp.sum(dout.astype(_F32) * out.astype(_F32), axis=-1)
  dout = dout.astype(q.dtype)
  dqs = []
  dk, dv = jnp.zeros(k.shape, _F32), jnp.zeros(v.shape, _F32)
  for i in range(cfg.nq):
    rows_i = slice(i * cfg.bq, (i + 1) * cfg.bq)
    lo, hi = _row_keys(cfg, i)
    if hi == lo:
      dqs.append(jnp.zeros(q[:, :, rows_i].shape, _F32))
      continue
    q_i, do_i = q[:, :, rows_i], dout[:, :, rows_i]
    k_i, v_i = k[:, :, lo:hi], v[:, :, lo:hi]
    s = jnp.einsum('bgqrk,bgck->bgqrc', q_i, k_i, preferred_element_type=_F32) * cfg.scale
    mask = _visibility(cfg, i * cfg.bq, lo, hi - lo, seg_q_BT, seg_k_BS)
    p = jnp.where(mask, jnp.exp(s - lse[:, :, rows_i][..., None]), 0.0)
    dv = dv.at[:, :, lo:hi].add(jnp.einsum('bgqrc,bgqrk->bgck', p.astype(do_i.dtype), do_i,
                                           preferred_element_type=_F32))
    dp = jnp.einsum('bgqrk,bgck->bgqrc', do_i, v_i, preferred_element_type=_F32)
    ds = p * (dp - delta_BGTR[:, :, rows_i][..., None])  # dL/dS without the scale
    dk = dk.at[:, :, lo:hi].add(jnp.einsum('bgqrc,bgqrk->bgck', ds.astype(q_i.dtype), q_i,
                                           preferred_element_type=_F32))
    dqs.append(jnp.einsum('bgqrc,bgck->bgqrk', ds.astype(k_i.dtype), k_i, preferred_element_type=_F32))
  dq = (jnp.concatenate(dqs, axis=2) * cfg.scale).astype(q.dtype)
  return (dq, (dk * cfg.scale).astype(k.dtype), dv.astype(v.dtype), None, None)


_rows = _kernel(_rows_forward, _rows_bwd)


# ---------------------------------------------------------------------------
# Splash attention (Pallas, TPU)
# ---------------------------------------------------------------------------


def _splash_attention(q_BTHK, k_BSGK, v_BSGK, *, segment_ids_BT, window,
                      block_size, interpret=False):
  """Per-example splash kernel (heads inside the kernel), vmapped over batch.

  The kernel applies no softmax scale, so q is scaled first. Its mask is static:
  causal (or local window).
  """
  from jax.experimental.pallas.ops.tpu import splash_attention as sa
  B, T, H, K = q_BTHK.shape
  S = k_BSGK.shape[1]
  if window:
    mask = sa.LocalMask((T, S), window_size=(window - 1, 0), offset=0)
  else:
    mask = sa.CausalMask((T, S))
  bq, bk = min(block_size, T), min(block_size, S)
  sizes = sa.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk,
                        block_q_dkv=bq, block_kv_dkv=bk, block_kv_dkv_compute=bk,
                        block_q_dq=bq, block_kv_dq=bk)
  kernel = sa.make_splash_mha_single_device(sa.MultiHeadMask([mask] * H),
                                            block_sizes=sizes, interpret=interpret)
  scale = 1.0 / math.sqrt(K)
  q_BHTK = (q_BTHK * jnp.asarray(scale, q_BTHK.dtype)).transpose(0, 2, 1, 3)
  k_BGSK = k_BSGK.transpose(0, 2, 1, 3)
  v_BGSK = v_BSGK.transpose(0, 2, 1, 3)
  if segment_ids_BT is None:
    out_BHTK = jax.vmap(kernel)(q_BHTK, k_BGSK, v_BGSK)
  else:
    seg = segment_ids_BT.astype(jnp.int32)
    out_BHTK = jax.vmap(
        lambda q, k, v, s: kernel(q, k, v, segment_ids=sa.SegmentIds(q=s, kv=s))
    )(q_BHTK, k_BGSK, v_BGSK, seg)
  return out_BHTK.transpose(0, 2, 1, 3).astype(q_BTHK.dtype)
