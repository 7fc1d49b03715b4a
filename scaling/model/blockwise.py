"""The 'blockwise' attention kernel: flash attention in pure JAX.

`blockwise_attention` pads T and S to whole blocks (`_even_block`, the tile
sizes), and runs either the custom-VJP kernel `_flash` (online softmax over
query/key blocks in `lax.fori_loop`s, FlashAttention-2 backward recomputing each
block from the saved logsumexp; memory linear in T) or its row form `_rows`
(the query-block loop unrolled at trace time, each query block against all its
visible keys in one product). Key blocks above the causal diagonal and outside
the sliding window are skipped. Masking semantics and shape letters are those of
scaling/model/attention.py, whose `attention(impl='blockwise')` (and 'auto')
calls in here and picks the CPU block size and the row-form bound.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

_F32 = jnp.float32
# Initial running max: finite, so exp(m_old - m_new) never sees inf - inf.
_M_INIT = -1e30


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
# up to attention._CPU_ROW_BLOCKS query blocks (bench/results/attention.md, "Row form").


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
