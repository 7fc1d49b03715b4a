"""Where a training step's time goes: one block's fwd+bwd, its MLP and attention halves, and the head
with its loss (materialized logits vs the fused chunked form), each against the time its matmuls
would take at the 2048^3 matmul rate measured in the same run.

    python bench/block_profile.py [--d_model 256 --seq 256 --batch 16 --vocab 4096 --dtype float32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from scaling.base import hostmem  # noqa: E402


def median_ms(f, *a, n=11):
  jax.block_until_ready(f(*a))
  hostmem.hold_heap()
  ts = []
  for _ in range(n):
    t = time.perf_counter()
    jax.block_until_ready(f(*a))
    ts.append(time.perf_counter() - t)
  return sorted(ts)[n // 2] * 1e3


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--d_model', type=int, default=256)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--kv_heads', type=int, default=2)
  p.add_argument('--seq', type=int, default=256)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--vocab', type=int, default=4096)
  p.add_argument('--dtype', default='float32')
  args = p.parse_args()
  from scaling.config.load import load_config
  from scaling.model.transformer import Block, mixed_einsum, static_rope_tables
  from scaling.train.loss import cross_entropy, fused_cross_entropy
  from scaling.train.step import resolve_dims
  cfg = load_config('scaling/config/default.py', {
      'model.d_model': str(args.d_model), 'model.num_heads': str(args.heads), 'model.num_kv_heads': str(args.kv_heads),
      'model.seq_len': str(args.seq), 'model.vocab_size': str(args.vocab), 'model.dtype': args.dtype})
  dims = resolve_dims(cfg, args.vocab)
  B, T, D, V, F = args.batch, args.seq, dims.d_model, args.vocab, dims.d_ff
  H, G, K = dims.num_heads, dims.num_kv_heads, dims.head_dim
  N = B * T
  a = jnp.ones((2048, 2048), dims.compute_dtype)
  mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  peak = 2 * 2048 ** 3 / (median_ms(mm, a, a) / 1e3)

  gd, params = nnx.split(Block(dims, 1, rngs=nnx.Rngs(0)))
  params = jax.tree.map(lambda p: p[0], params)
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, D)).astype(dims.compute_dtype)
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  # the tables the model uses at its default positions (compiled-in constants), not ones traced from pos
  rope = static_rope_tables(B, T, K, dims.rope_theta) if dims.position == 'rope' else None

  def part(which):
    def loss(p, x):
      b = nnx.merge(gd, p)
      if which == 'block':
        y = b(x, pos, rope=rope)[0]
      elif which == 'mlp':
        y = b.mlp(b.mlp_norm(x))
      else:
        y = b.attention(b.attn_norm(x), pos, None, None, rope)[0]
      return jnp.sum(jnp.square(y.astype(jnp.float32)))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))

  n_mlp = (3 if dims.mlp == 'swiglu' else 2) * D * F
  flops = {'mlp': 3 * 2 * N * n_mlp,
           'attention': 3 * (2 * N * D * (2 * H * K + 2 * G * K) + 2 * 2 * B * H * T * T * K / 2)}
  flops['block'] = flops['mlp'] + flops['attention']
  flops['head+loss'] = 3 * 2 * N * D * V
  rows = [(w, median_ms(part(w), params, x), flops[w]) for w in ('block', 'mlp', 'attention')]

  w = jax.random.normal(jax.random.PRNGKey(1), (D, V)) * 0.05
  t = jax.random.randint(jax.random.PRNGKey(2), (B, T), 0, V)
  dt = dims.compute_dtype
  plain = jax.jit(jax.grad(lambda x, w: cross_entropy(mixed_einsum('btd,dv->btv', x, w.astype(dt)), t)[0], (0, 1)))
  fused = jax.jit(jax.grad(lambda x, w: fused_cross_entropy(x, w, t, dtype=dt)[0], (0, 1)))
  rows.append(('head+loss (logits)', median_ms(plain, x, w), flops['head+loss']))
  rows.append(('head+loss (fused)', median_ms(fused, x, w), flops['head+loss']))

  print(f'# fwd+bwd, {args.dtype}, batch {B} x {T}, d_model {D}, d_ff {F}, heads {H}/{G}, vocab {V}; '
        f'matmul peak 2048^3: {peak / 1e9:.0f} GFLOP/s')
  print('| part | ms | matmul GFLOP | ms at peak | achieved / peak |')
  print('|---|---:|---:|---:|---:|')
  for name, ms, fl in rows:
    print(f'| {name} | {ms:.1f} | {fl / 1e9:.1f} | {fl / peak * 1e3:.1f} | {fl / peak * 1e3 / ms:.0%} |')


if __name__ == '__main__':
  hostmem.tune_malloc()   # first, before JAX starts its threads (scaling/base/hostmem.py)
  main()
