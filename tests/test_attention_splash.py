"""scaling/model/splash.py: the TPU splash kernel per device under shard_map, checked on this CPU.

The kernel runs in the Pallas interpreter on the 8 fake CPU devices of tests/conftest.py, its inputs
sharded over a (data, fsdp, tensor) mesh as the train step shards them; the reference is
`reference_attention` (full logits, explicit mask, kv heads repeated), forward and gradients. The
sharding plans and the kernels' FLOPs are checked against hand-worked numbers.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scaling.model import attention as attn
from scaling.model import splash


def test_shard_plan_splits_batch_and_heads_and_groups_kv_heads():
  # batch over data x fsdp, heads over tensor; 2 kv heads over tensor 2: each device reads its own kv head
  assert splash.shard_plan({'data': 2, 'fsdp': 2, 'tensor': 2}, 4, 4, 2) == (('data', 'fsdp'), 'tensor', 1)
  # tensor 4 > 2 kv heads: each kv head repeated twice (lcm(2, 4) / 2), 4 heads over 4 devices
  assert splash.shard_plan({'data': 1, 'fsdp': 2, 'tensor': 4}, 4, 4, 2) == (('fsdp',), 'tensor', 2)
  # MQA: the one kv head repeated for each of 4 tensor devices
  assert splash.shard_plan({'data': 2, 'fsdp': 1, 'tensor': 4}, 4, 8, 1) == (('data',), 'tensor', 4)
  # batch 2 does not split 2 x 4 ways: data only; heads 6 do not split 4 ways: replicated, no repeat
  assert splash.shard_plan({'data': 2, 'fsdp': 4, 'tensor': 4}, 2, 6, 2) == (('data',), None, 1)
  # a batch of 1 (sampling) is not split at all
  assert splash.shard_plan({'data': 1, 'fsdp': 8, 'tensor': 1}, 1, 4, 2) == ((), None, 1)


def _kernel_calls(jaxpr, T, K) -> tuple[list, list]:
  """(in_specs of every shard_map; for every pallas_call, whether it is inside a shard_map and the head
  (batch, heads) of its [batch, heads, T, K] operands: q's, then k's and v's) of a jaxpr."""
  maps, calls = [], []

  def walk(jx, inside):
    for eqn in jx.eqns:
      if eqn.primitive.name == 'shard_map':
        maps.append(eqn.params['in_specs'])
      if eqn.primitive.name == 'pallas_call':
        # vmapped over the batch: [batch, heads, T, K], or [heads, T, K] for a batch of one
        calls.append((inside, [(v.aval.shape[0] if v.aval.ndim == 4 else 1, v.aval.shape[-3])
                               for v in eqn.invars if v.aval.ndim >= 3 and v.aval.shape[-2:] == (T, K)]))
      for p in eqn.params.values():
        for x in (p if isinstance(p, (tuple, list)) else (p,)):
          if isinstance(x, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
            walk(getattr(x, 'jaxpr', x), inside or eqn.primitive.name == 'shard_map')
  walk(jaxpr.jaxpr, False)
  return maps, calls


@pytest.mark.parametrize('mesh_shape, H, G, window, segments', [
    ((2, 2, 2), 4, 2, 0, True),    # batch over data x fsdp, 2 kv heads split with their 4 query heads
    ((2, 1, 4), 8, 1, 50, False),  # MQA over tensor 4: the kv head repeated per device; a window
])
def test_splash_under_shard_map_matches_reference(mesh_shape, H, G, window, segments):
  """Forward and gradients of the sharded interpreted kernel against the reference, causal GQA."""
  mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(mesh_shape), ('data', 'fsdp', 'tensor'))
  B, T, K = 4, 128, 64
  rng = np.random.default_rng(0)
  q, w = (rng.standard_normal((B, T, H, K), np.float32) for _ in range(2))
  k, v = (rng.standard_normal((B, T, G, K), np.float32) for _ in range(2))
  batch = NamedSharding(mesh, P(('data', 'fsdp')))
  q, w = (jax.device_put(x, NamedSharding(mesh, P(('data', 'fsdp'), None, 'tensor'))) for x in (q, w))
  k, v = (jax.device_put(x, batch) for x in (k, v))
  cuts = np.array([40, 90, 10, 64])[:, None]
  seg = jax.device_put(jnp.asarray((np.arange(T)[None] >= cuts).astype(np.int32)), batch) if segments else None
  kw = dict(segment_ids_BT=seg, window=window)

  def out_and_grads(fn):
    def run(q, k, v, w):
      out, vjp = jax.vjp(fn, q, k, v)
      return out, vjp(w)
    return jax.jit(run)(q, k, v, w), jax.make_jaxpr(run)(q, k, v, w)

  splash_fn = lambda q, k, v: attn._splash_attention(q, k, v, block_size=128, interpret=True, **kw)
  (out, grads), jaxpr = out_and_grads(splash_fn)
  (ref_out, ref_grads), _ = out_and_grads(lambda q, k, v: attn.reference_attention(q, k, v, **kw))
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5, err_msg='out')
  for name, g, rg in zip(('dq', 'dk', 'dv'), grads, ref_grads):
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-5, err_msg=name)
  # q, k, v enter one shard_map split as planned; the kernels (forward, dQ, dK/dV) run inside on each
  # device's block: B / (data x fsdp) examples, H / tensor query heads and the kv heads they read
  data, fsdp, tensor = mesh_shape
  batch_axes, head_axis, repeat = splash.shard_plan(dict(zip(('data', 'fsdp', 'tensor'), mesh_shape)), B, H, G)
  maps, calls = _kernel_calls(jaxpr, T, K)
  specs = [spec for spec in maps[0] if spec != P()]   # P(): the kernel's mask tables, closed over
  assert specs[:3] == [P(batch_axes, None, head_axis, None)] * 3, maps[0]
  assert len(calls) == 3 and all(inside for inside, _ in calls), calls
  b = B // (data * fsdp)
  assert calls[0][1][:3] == [(b, H // tensor), (b, G * repeat // tensor), (b, G * repeat // tensor)], calls


def test_visited_positions_and_kernel_flops_by_hand():
  # causal, 4 x 4 blocks of 128: the 10 blocks on and below the diagonal are computed
  assert splash.visited_positions(512, 512, 128, 128) == 10 * 128 * 128
  # window 100: query block i (from 128 i) also needs key block i - 1 (its last key 128 i - 1 > 128 i - 100)
  # but not i - 2: blocks (0,0), (1,0), (1,1), (2,1), (2,2), (3,2), (3,3)
  assert splash.visited_positions(512, 512, 128, 128, window=100) == 7 * 128 * 128
  assert splash.visited_positions(128, 128, 512, 512) == 128 * 128   # one block, capped at T
  q, k, lse = [2, 4, 256, 64], [2, 2, 256, 64], [2, 4, 8, 256]
  per_matmul = 2 * 2 * 4 * 64 * splash.visited_positions(256, 256, 128, 128)
  fwd = splash.kernel_flops('tpu_custom_call', [[2, 4, 256, 64]], [[1, 1, 1], q, k, k, [256, 128]], block_size=128)
  dkv = splash.kernel_flops('tpu_custom_call', [[2, 256, 64], k, k], [q, k, k, lse, q, lse], block_size=128)
  dq = splash.kernel_flops('tpu_custom_call', [[2, 256, 64], q], [q, k, k, lse, q, lse], block_size=128)
  assert (fwd, dq, dkv) == (2 * per_matmul, 3 * per_matmul, 4 * per_matmul)
  assert splash.kernel_flops('cublas_gemm', [q], [q, k, k], block_size=128) == 0.0
