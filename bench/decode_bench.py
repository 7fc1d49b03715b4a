"""Decode speed: KV-cache generation against recomputing the full forward every step.

Both run greedy decoding inside one jitted loop on the same random-weight model:

  cache  `scaling.inference.generate.generate_tokens`: prefill the prompt once, then one
         token per step against the KV cache (cost per step ~ one token).
  full   a jitted fori_loop that reruns the whole forward over a fixed [B, C]
         token buffer every step and reads the logits at the current position
         (the LM head only at that position; cost per step ~ C tokens).

For each context C the prompt has C - N tokens and N tokens are generated, so
decoding runs up to position C. Columns: tokens/s = B * N / wall time of the
whole compiled call (the cache includes its prefill); speedup = full time /
cache time, on wall-clock and on process CPU time (CPU time is far less
disturbed by other jobs on a shared machine). The last columns split the cache
call, in CPU time: `prefill ms` is the same compiled call stopped after one
token, `decode ms/step` = (whole call - that) / (N - 1), and `decode-step
speedup` = full ms/step / cache decode ms/step, the steady-state gain once the
prompt is in the cache. `same tokens`: the cache loop, `generate_tokens` and
the full-forward loop produce identical tokens. Compilation is excluded; the
best of --reps runs is kept.

  .venv/bin/python bench/decode_bench.py                       # C 256 and 1024, B 1 and 8, N 64
  .venv/bin/python bench/decode_bench.py --contexts 256 --batches 1 --new_tokens 16
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from scaling.inference import generate as gen  # noqa: E402
from scaling.model.transformer import ModelDims, Transformer  # noqa: E402


@functools.partial(jax.jit, static_argnames=('graphdef', 'n'))
def full_forward_greedy(graphdef, state, buf_BC, start, *, n: int):
  """Greedy decoding without a cache: every step reruns the full forward over the [B, C] buffer."""
  model = nnx.merge(graphdef, state)

  def body(i, buf_BC):
    x_BCD, _ = model.hidden(buf_BC)
    pos = start + i - 1
    x_B1D = jax.lax.dynamic_slice_in_dim(x_BCD, pos, 1, axis=1)
    nxt_B = jnp.argmax(model.logits(x_B1D)[:, 0], axis=-1).astype(jnp.int32)
    return jax.lax.dynamic_update_slice(buf_BC, nxt_B[:, None], (0, start + i))

  return jax.lax.fori_loop(0, n, body, buf_BC)


def build(args) -> Transformer:
  dims = ModelDims(vocab_size=args.vocab, seq_len=max(args.contexts), num_layers=args.layers, d_model=args.d_model,
                   num_heads=args.heads, num_kv_heads=args.kv_heads, head_dim=args.d_model // args.heads,
                   d_ff=-(-int(8 * args.d_model / 3) // 64) * 64, dtype=args.dtype, init_std=0.1)
  return Transformer(dims, rngs=nnx.Rngs(params=0))


def _time(fn, reps: int):
  """(best wall seconds, best process-CPU seconds, last output) over reps calls."""
  wall = cpu = float('inf')
  out = None
  for _ in range(reps):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
  return wall, cpu, out


def bench_one(model, C: int, B: int, N: int, reps: int) -> dict:
  P = C - N
  prompt_BP = np.random.default_rng(0).integers(0, model.dims.vocab_size, (B, P)).astype(np.int32)
  lens_B = np.full((B,), P, np.int32)
  args, static = gen.prepare_call(model, prompt_BP, lens_B, max_new_tokens=N, temperature=0.0, top_k=0, top_p=1.0,
                                  rng=None, eos_id=None)
  args_1 = list(args)
  args_1[5] = jnp.int32(1)  # same compiled function, one decode step: prefill + 1 token

  def run_cache():
    return np.asarray(gen._generate_jit(*args, **static)[0])[:, :N]

  def run_prefill():
    return np.asarray(gen._generate_jit(*args_1, **static)[0])

  graphdef, state = nnx.split(model)
  buf_BC = jnp.asarray(np.pad(prompt_BP, ((0, 0), (0, N))))
  full = full_forward_greedy.lower(graphdef, state, buf_BC, P, n=N).compile()

  def run_full():
    return np.asarray(full(state, buf_BC, P))[:, P:]

  run_cache()  # compile
  t = {name: _time(fn, reps) for name, fn in (('cache', run_cache), ('prefill', run_prefill), ('full', run_full))}
  api_tokens, _ = gen.generate_tokens(model, prompt_BP, lens_B, max_new_tokens=N, temperature=0.0)
  same = bool(np.array_equal(t['cache'][2], t['full'][2]) and np.array_equal(api_tokens, t['full'][2]))
  decode_cpu = (t['cache'][1] - t['prefill'][1]) / (N - 1)
  return dict(C=C, B=B, N=N, cache_tps=B * N / t['cache'][0], full_tps=B * N / t['full'][0],
              speedup_wall=t['full'][0] / t['cache'][0], speedup_cpu=t['full'][1] / t['cache'][1],
              prefill_ms=1e3 * t['prefill'][1], decode_ms=1e3 * decode_cpu, full_ms=1e3 * t['full'][1] / N,
              step_speedup=t['full'][1] / N / decode_cpu, same=same)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--contexts', type=lambda s: [int(x) for x in s.split(',')], default=[256, 1024])
  p.add_argument('--batches', type=lambda s: [int(x) for x in s.split(',')], default=[1, 8])
  p.add_argument('--new_tokens', type=int, default=64, help='N >= 2 (tokens generated per call)')
  p.add_argument('--reps', type=int, default=2, help='timed repetitions (best is reported)')
  p.add_argument('--layers', type=int, default=4)
  p.add_argument('--d_model', type=int, default=256)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--kv_heads', type=int, default=2)
  p.add_argument('--vocab', type=int, default=4096)
  p.add_argument('--dtype', default='float32')
  args = p.parse_args(argv)
  if args.new_tokens < 2 or min(args.contexts) <= args.new_tokens:
    p.error(f'need 2 <= --new_tokens < every context, got {args.new_tokens} and contexts {args.contexts}')
  model = build(args)
  d = model.dims
  print(f'model: {d.num_layers} layers, d_model {d.d_model}, {d.num_heads} heads / {d.num_kv_heads} kv heads, '
        f'd_ff {d.d_ff}, vocab {d.vocab_size}, {d.dtype}, {d.position}; backend {jax.default_backend()} '
        f'({jax.devices()[0].device_kind})\n')
  print('| context | batch | new tokens | cache tok/s | full-forward tok/s | speedup (wall) | speedup (CPU) '
        '| cache prefill ms | cache decode ms/step | full ms/step | decode-step speedup | same tokens |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|')
  for C in args.contexts:
    for B in args.batches:
      r = bench_one(model, C, B, args.new_tokens, args.reps)
      print(f"| {r['C']} | {r['B']} | {r['N']} | {r['cache_tps']:,.1f} | {r['full_tps']:,.1f} | "
            f"{r['speedup_wall']:.1f}x | {r['speedup_cpu']:.1f}x | {r['prefill_ms']:.1f} | {r['decode_ms']:.2f} | "
            f"{r['full_ms']:.1f} | {r['step_speedup']:.0f}x | {'yes' if r['same'] else 'NO'} |", flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
