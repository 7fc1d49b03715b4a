"""Next-token cross-entropy, two ways with one meaning.

`cross_entropy(logits_BTV, ...)`: the textbook form over materialized float32
logits. Simple, and the reference the fused form is tested against.

`fused_cross_entropy(x_BTD, w_DV, ...)`: the LM head and the loss in one pass
over chunks of positions, never holding more than one chunk of logits
[B, C, V]. Its custom VJP computes the gradients during the forward (softmax
minus one-hot, times the head, for each chunk while it is still in cache), so
the backward only scales them: the head's three matmuls stay, the
[B, T, V] float32 logits, their softmax and the one-hot scatter go. Training
uses it whenever `train.loss_chunk` > 0; see BENCHMARKS.md for what it saves.

Both return (loss, (sum_nll, count)): loss = mean NLL over unmasked tokens
(+ z_loss * mean log(Z)^2), sum_nll and count for bits-per-byte metrics. The
gradient flows through `loss` only. With `source_BS` (a data mixture's rows,
one-hot over its S sources) the aux also holds each source's NLL sum and token
count, (sum_nll, count, nll_S, count_S); without it nothing changes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def cross_entropy(logits_BTV, targets_BT, mask_BT=None, z_loss: float = 0.0, source_BS=None):
  """Mean next-token cross entropy in float32 (+ z-loss); returns (loss, (sum_nll, count)) (and each source's
  sums with source_BS: module docstring)."""
  logits = logits_BTV.astype(jnp.float32)
  lse_BT = jax.nn.logsumexp(logits, axis=-1)
  target_logit_BT = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
  nll_BT = lse_BT - target_logit_BT
  mask = jnp.ones_like(nll_BT) if mask_BT is None else mask_BT.astype(jnp.float32)
  count = jnp.maximum(mask.sum(), 1.0)
  sum_nll = (nll_BT * mask).sum()
  loss = sum_nll / count
  if z_loss:
    loss = loss + z_loss * (jnp.square(lse_BT) * mask).sum() / count
  if source_BS is not None:
    return loss, (sum_nll, mask.sum()) + per_source((nll_BT * mask).sum(-1), mask.sum(-1), source_BS)
  return loss, (sum_nll, mask.sum())


def per_source(nll_B, count_B, source_BS):
  """(nll_S, count_S): each source's NLL sum and token count from the rows' sums and their one-hot sources."""
  src = jax.lax.stop_gradient(source_BS.astype(jnp.float32))
  return jax.lax.stop_gradient(nll_B) @ src, count_B.astype(jnp.float32) @ src


def chunk_positions(seq_len: int, batch: int, rows: int) -> int:
  """Positions per chunk for about `rows` logits rows (batch * positions): the largest divisor of seq_len
  not above rows // batch (at least 1)."""
  want = max(1, min(seq_len, rows // max(batch, 1)))
  return max(c for c in range(1, want + 1) if seq_len % c == 0)


def fused_cross_entropy(x_BTD, w_DV, targets_BT, mask_BT=None, z_loss: float = 0.0, *,
                        chunk_rows: int = 512, dtype=None, source_BS=None):
  """The LM head (x_BTD @ w_DV, float32 accumulation) and `cross_entropy`, chunked over positions.

  x_BTD: final hidden states; w_DV: head weights (any float dtype; the gradient comes back in it);
  dtype: matmul input dtype (default x's). Returns what `cross_entropy` returns, to float rounding.
  """
  B, T, _ = x_BTD.shape
  mask_BT = jnp.ones((B, T), jnp.float32) if mask_BT is None else mask_BT.astype(jnp.float32)
  dtype = jnp.dtype(dtype or x_BTD.dtype)
  C = chunk_positions(T, B, chunk_rows)
  rows = source_BS is not None
  obj, sum_nll = _head_loss(x_BTD, w_DV, targets_BT, mask_BT, float(z_loss), C, dtype, rows)
  count = mask_BT.sum()
  if rows:   # sum_nll is per row [B]: each source's sums, then the total
    extra = per_source(sum_nll, mask_BT.sum(-1), source_BS)
    sum_nll = jax.lax.stop_gradient(sum_nll).sum()
    return obj / jnp.maximum(count, 1.0), (sum_nll, count) + extra
  # sum_nll is a metric: stop_gradient guarantees the custom VJP never receives a cotangent for it
  return obj / jnp.maximum(count, 1.0), (jax.lax.stop_gradient(sum_nll), count)


def _chunks(a, C):
  """[B, T, ...] -> [T/C, B, C, ...] (chunk index leading, for lax.scan)."""
  B, T = a.shape[:2]
  return a.reshape((B, T // C, C) + a.shape[2:]).swapaxes(0, 1)


def _unchunk(a):
  n, B, C = a.shape[:3]
  return a.swapaxes(0, 1).reshape((B, n * C) + a.shape[3:])


def _scan_chunks(x_BTD, w_DV, targets_BT, mask_BT, z_loss, C, dtype, with_grads, rows=False):
  w_c = w_DV.astype(dtype)
  D, V = w_DV.shape

  def body(dw_DV, inp):
    x_BCD, t_BC, m_BC = inp
    logits_BCV = jnp.einsum('bcd,dv->bcv', x_BCD.astype(dtype), w_c, preferred_element_type=jnp.float32)
    max_BC1 = jax.lax.stop_gradient(logits_BCV.max(-1, keepdims=True))
    e_BCV = jnp.exp(logits_BCV - max_BC1)
    s_BC1 = e_BCV.sum(-1, keepdims=True)
    lse_BC = (jnp.log(s_BC1) + max_BC1)[..., 0]
    nll_BC = lse_BC - jnp.take_along_axis(logits_BCV, t_BC[..., None], axis=-1)[..., 0]
    row_nll_B = (nll_BC * m_BC).sum(-1) if rows else None   # rows: each row's sum (a mixture's per-source loss)
    sum_nll = row_nll_B.sum() if rows else (nll_BC * m_BC).sum()
    obj = sum_nll + z_loss * (jnp.square(lse_BC) * m_BC).sum() if z_loss else sum_nll
    if rows:
      sum_nll = row_nll_B
    if not with_grads:
      return dw_DV, (obj, sum_nll)
    # d obj / d logits = mask * ((1 + 2 z lse) softmax - onehot(target))
    scale_BC1 = (m_BC * (1.0 + 2.0 * z_loss * lse_BC))[..., None]
    onehot_BCV = jax.nn.one_hot(t_BC, V, dtype=jnp.float32)
    g_BCV = ((e_BCV / s_BC1) * scale_BC1 - onehot_BCV * m_BC[..., None]).astype(dtype)
    dx_BCD = jnp.einsum('bcv,dv->bcd', g_BCV, w_c, preferred_element_type=jnp.float32).astype(x_BTD.dtype)
    dw_DV = dw_DV + jnp.einsum('bcd,bcv->dv', x_BCD.astype(dtype), g_BCV, preferred_element_type=jnp.float32)
    return dw_DV, (obj, sum_nll, dx_BCD)

  dw0 = jnp.zeros((D, V), jnp.float32) if with_grads else jnp.zeros((), jnp.float32)
  dw_DV, outs = jax.lax.scan(body, dw0, (_chunks(x_BTD, C), _chunks(targets_BT, C), _chunks(mask_BT, C)))
  obj, sum_nll = outs[0].sum(), outs[1].sum(0)
  if not with_grads:
    return obj, sum_nll
  return obj, sum_nll, _unchunk(outs[2]), dw_DV


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _head_loss(x_BTD, w_DV, targets_BT, mask_BT, z_loss, C, dtype, rows):
  """(sum over tokens of mask * (nll + z lse^2), sum of mask * nll; with rows, per row [B])."""
  return _scan_chunks(x_BTD, w_DV, targets_BT, mask_BT, z_loss, C, dtype, with_grads=False, rows=rows)


def _head_loss_fwd(x_BTD, w_DV, targets_BT, mask_BT, z_loss, C, dtype, rows):
  obj, sum_nll, dx_BTD, dw_DV = _scan_chunks(x_BTD, w_DV, targets_BT, mask_BT, z_loss, C, dtype, with_grads=True,
                                             rows=rows)
  return (obj, sum_nll), (dx_BTD, dw_DV.astype(w_DV.dtype))


def _head_loss_bwd(z_loss, C, dtype, rows, res, g):
  dx_BTD, dw_DV = res
  g_obj = g[0]   # g[1] (for sum_nll) is always zero: fused_cross_entropy stops its gradient
  return (g_obj * dx_BTD).astype(dx_BTD.dtype), (g_obj * dw_DV).astype(dw_DV.dtype), None, None


_head_loss.defvjp(_head_loss_fwd, _head_loss_bwd)
