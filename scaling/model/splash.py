"""Splash attention (the Pallas TPU kernel shipped with JAX) under `jax.shard_map`.

XLA cannot partition a Mosaic (Pallas TPU) kernel: called on arrays sharded over a mesh it fails to
compile ('Mosaic kernels cannot be automatically partitioned'). So the kernel runs per device inside
`jax.shard_map`: the batch split over the data-parallel mesh axes (`data`, `fsdp`, as
scaling/train/sharding.py splits it) and the heads over `tensor`. Attention is independent per example
and per head, so each device runs the plain kernel on its block and nothing is communicated.

The mesh is the one the arrays are traced on: the context mesh (`jax.set_mesh`) if there is one, else
the mesh in q's type (every array inside a jit whose inputs carry NamedShardings has it). With no
mesh, or one device, the kernel is called directly.

Grouped-query heads: query head h reads kv head h // (H / G). Heads are split in contiguous blocks, so
a device holding query heads [i H/t, (i+1) H/t) needs exactly kv heads [i G/t, (i+1) G/t) when t
divides G. Otherwise (t > G, e.g. MQA) the kv heads are first repeated m = lcm(G, t) / G times (head j
-> heads j m .. j m + m - 1, the order `jnp.repeat` gives): G m is divisible by t and by the
query-to-kv ratio still H / (G m), so every device again holds the kv heads its query heads read.
Axes that do not divide (a batch of 1 while sampling, H not divisible by t) are left unsplit:
that block is computed on every device of the axis, which is correct, only redundant.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')   # the mesh axes the batch is split over (scaling/train/sharding.py)
HEAD_AXIS = 'tensor'            # ... and the heads


def shard_plan(axis_sizes: dict, B: int, H: int, G: int) -> tuple[tuple, str | None, int]:
  """(batch mesh axes, head mesh axis or None, kv-head repeat) for a mesh of `axis_sizes` {name: size}.

  Batch axes are taken in order while their product divides B; the head axis when its size divides H;
  the repeat makes the kv heads divisible by the head axis (see the module docstring).
  """
  batch, n = [], 1
  for a in BATCH_AXES:
    s = axis_sizes.get(a, 1)
    if s > 1 and B % (n * s) == 0:
      batch.append(a)
      n *= s
  t = axis_sizes.get(HEAD_AXIS, 1)
  if t <= 1 or H % t:
    return tuple(batch), None, 1
  return tuple(batch), HEAD_AXIS, math.lcm(G, t) // G


def mesh_of(x):
  """The mesh x is laid out on (a Mesh or AbstractMesh), or None when there is none."""
  ctx = jax.sharding.get_abstract_mesh()
  if not ctx.empty:
    return ctx
  if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
    sh = x.sharding   # a concrete array: its concrete mesh (an eager shard_map needs one)
    return sh.mesh if isinstance(sh, NamedSharding) and not sh.mesh.empty else None
  mesh = getattr(getattr(jax.typeof(x), 'sharding', None), 'mesh', None)
  return None if mesh is None or mesh.empty else mesh


def splash_attention(q_BTHK, k_BSGK, v_BSGK, *, segment_ids_BT=None, window: int = 0, block_size: int = 512,
                     interpret: bool = False):
  """Causal GQA attention by the splash kernel, per device under shard_map over q's mesh (if any).

  Shapes and semantics as scaling/model/attention.py's `attention`; `interpret=True` runs the kernel
  in the Pallas interpreter (any backend: the tests).
  """
  local = functools.partial(_splash_local, window=window, block_size=block_size, interpret=interpret)
  mesh = mesh_of(q_BTHK)
  if mesh is None or mesh.size == 1:
    return local(q_BTHK, k_BSGK, v_BSGK, segment_ids_BT)
  B, _, H, _ = q_BTHK.shape
  batch, head, repeat = shard_plan(dict(mesh.shape), B, H, k_BSGK.shape[2])
  if repeat > 1:
    k_BSGK, v_BSGK = (jnp.repeat(x, repeat, axis=2) for x in (k_BSGK, v_BSGK))
  b = batch or None
  spec = P(b, None, head, None)
  if segment_ids_BT is None:
    body, args, specs = (lambda q, k, v: local(q, k, v, None)), (q_BTHK, k_BSGK, v_BSGK), (spec,) * 3
  else:
    body, args, specs = local, (q_BTHK, k_BSGK, v_BSGK, segment_ids_BT), (spec,) * 3 + (P(b, None),)
  return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=spec, check_vma=False)(*args)


def _splash_local(q_BTHK, k_BSGK, v_BSGK, segment_ids_BT, *, window, block_size, interpret):
  """The kernel on one device's arrays: heads inside the kernel, vmapped over the batch.

  The kernel applies no softmax scale, so q is scaled first. Its mask is static: causal (or local window).
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
  kernel = sa.make_splash_mha_single_device(sa.MultiHeadMask([mask] * H), block_sizes=sizes, interpret=interpret)
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


# ----------------------------------------------------------------------------- FLOPs of the kernels
def visited_positions(T: int, S: int, block_q: int, block_kv: int, window: int = 0) -> int:
  """Query-key positions the kernel computes: every position of each (block_q x block_kv) block that holds
  at least one visible key (causal, and within `window` if > 0); fully masked blocks are skipped."""
  bq, bk = min(block_q, T), min(block_kv, S)
  n = 0
  for q0 in range(0, T, bq):
    q1 = min(q0 + bq, T) - 1          # the block's last query
    for k0 in range(0, S, bk):
      k1 = min(k0 + bk, S) - 1
      if k0 <= q1 and (not window or k1 > q0 - window):
        n += (q1 - q0 + 1) * (k1 - k0 + 1)
  return n


def kernel_flops(target: str, outs: list, operands: list, *, block_size: int, window: int = 0) -> float:
  """The matmul FLOPs of one splash kernel call in the HLO (scaling/train/hlo.py hlo_dot_flops), from its shapes.

  Its (vmapped) operands start q [B, H, T, K], k [B, G, S, K], v; each matmul of the kernel costs
  2 B H K per visited position. The forward (q, k, v: 3 four-dimensional operands) does 2 (q k^T, p v);
  the backward kernels also read the logsumexp, dO and di: the dK/dV kernel (two k-shaped outputs) does 4
  (q k^T, dO v^T, p^T dO, ds^T q), the dQ kernel 3 (q k^T, dO v^T, ds k). Other custom calls: 0.
  """
  arrays = [d for d in operands if len(d) == 4]
  if target != 'tpu_custom_call' or len(arrays) < 3:
    return 0.0
  (B, H, T, K), (_, _, S, _) = arrays[0], arrays[1]
  if len(arrays) == 3:
    matmuls = 2
  else:
    matmuls = 4 if sum(list(o) == list(arrays[1]) for o in outs) >= 2 else 3
  return float(matmuls * 2 * B * H * K * visited_positions(T, S, block_size, block_size, window))
