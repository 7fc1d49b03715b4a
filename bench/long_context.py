"""Long context on CPU: one training step at T up to 8192 and a forward at 16384, with peak RSS.

Each measurement runs in a fresh subprocess (so ru_maxrss is that configuration's peak):
a small model (2 layers, d_model 128, 4 heads, batch 1), random tokens, one jitted
AdamW step (or one forward). Peak memory should grow about linearly in T with
`blockwise` attention, and quadratically with `xla` (which materialises T x T).

    python bench/long_context.py [--impls blockwise,xla] [--out bench/results/long_context.md]
        [--layers 2 --d_model 128 --heads 4 --kv_heads 2 --vocab 4096] [--child_xla_flags '']

The model flags and --child_xla_flags (the children's XLA_FLAGS, default none: XLA's own optimization level) are
for a smoke test at a tiny size (tests/test_bench_scripts.py); the defaults are the benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')

CHILD = r'''
import json, resource, sys, time
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from scaling.config.load import load_config
from scaling.train import sharding
from scaling.train.loop import build_setup, init_state, jit_train_step
T, impl, mode, V = {T}, {impl!r}, {mode!r}, {vocab}
cfg = load_config('scaling/config/default.py', {{
    'model.seq_len': str(T), 'model.num_layers': '{layers}', 'model.d_model': '{d_model}', 'model.num_heads': '{heads}',
    'model.num_kv_heads': '{kv_heads}', 'model.vocab_size': str(V), 'model.attention': impl,
    'model.attention_block_size': '256', 'model.remat': 'full', 'train.batch_size': '1', 'train.steps': '10',
    'mesh.data': '1'}})
mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
setup = build_setup(cfg, mesh)
state = init_state(setup, 0)
rng = np.random.default_rng(0)
tok = rng.integers(0, V, (1, T)).astype(np.int32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.time()
if mode == 'train':
  step = jit_train_step(setup, ('inputs', 'targets'))
  batch = {{'inputs': jnp.asarray(tok), 'targets': jnp.asarray(tok)}}
  state, m = step(state, batch)
  loss = float(m['loss'])
  t1 = time.time()
  state, m = step(state, batch)
  float(m['loss'])
else:
  model = nnx.merge(setup.graphdef, state['params'])
  f = nnx.jit(lambda m, t: m(t).sum())
  loss = float(f(model, jnp.asarray(tok)))
  t1 = time.time()
  float(f(model, jnp.asarray(tok)))
t2 = time.time()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(T=T, impl=impl, mode=mode, peak_mb=peak / 1024, base_mb=base / 1024,
                      compile_and_first_s=t1 - t0, step_s=t2 - t1, loss=loss)))
'''


MODEL_FLAGS = dict(layers=2, d_model=128, heads=4, kv_heads=2, vocab=4096)   # the benchmark's model


def run(T, impl, mode, timeout, model=MODEL_FLAGS, xla_flags=''):
  code = CHILD.format(root=ROOT, T=T, impl=impl, mode=mode, **model)
  try:
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, 'XLA_FLAGS': xla_flags})
  except subprocess.TimeoutExpired:
    return dict(T=T, impl=impl, mode=mode, error=f'timeout {timeout}s')
  if out.returncode:
    return dict(T=T, impl=impl, mode=mode, error=out.stderr.strip().splitlines()[-1][:120])
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--impls', default='blockwise,xla')
  p.add_argument('--train_lengths', default='1024,2048,4096,8192')
  p.add_argument('--forward_lengths', default='16384')
  p.add_argument('--xla_max', type=int, default=4096, help='skip xla above this length (T x T memory)')
  p.add_argument('--timeout', type=int, default=900)
  p.add_argument('--out', default='')
  for flag, default in MODEL_FLAGS.items():
    p.add_argument(f'--{flag}', type=int, default=default, help=f'the model\'s {flag} (default {default})')
  p.add_argument('--child_xla_flags', default='', help="each child's XLA_FLAGS (default: none)")
  args = p.parse_args()
  model = {flag: getattr(args, flag) for flag in MODEL_FLAGS}
  rows = []
  plan = [(int(T), 'train') for T in args.train_lengths.split(',')] + \
         [(int(T), 'forward') for T in args.forward_lengths.split(',')]
  for T, mode in plan:
    for impl in args.impls.split(','):
      if impl == 'xla' and T > args.xla_max:
        continue
      t = time.time()
      r = run(T, impl, mode, args.timeout, model, args.child_xla_flags)
      print(f'# {mode} T={T} {impl}: {r} ({time.time() - t:.0f}s)', flush=True)
      rows.append(r)
  lines = ['| mode | T | attention | peak RSS MB | step s | compile+first s |', '|---|---:|---|---:|---:|---:|']
  for r in rows:
    if 'error' in r:
      lines.append(f'| {r["mode"]} | {r["T"]} | {r["impl"]} | {r["error"]} | | |')
    else:
      lines.append(f'| {r["mode"]} | {r["T"]} | {r["impl"]} | {r["peak_mb"]:.0f} | {r["step_s"]:.2f} | '
                   f'{r["compile_and_first_s"]:.1f} |')
  table = '\n'.join(lines)
  print(table)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(f'# Long context on CPU ({model["layers"]} layers, d_model {model["d_model"]}, batch 1, remat full)\n\n')
      f.write(f'Command: `python bench/long_context.py {" ".join(sys.argv[1:])}`\n\n{table}\n')


if __name__ == '__main__':
  main()
