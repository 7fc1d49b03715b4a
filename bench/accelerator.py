"""Training throughput of ladder rungs on an accelerator: tokens/s, step time, MFU, memory, compile time.

For each rung: bf16 compute, the best attention for the backend (`auto`: cuDNN on
NVIDIA, splash on TPU), scan over layers, and the largest per-device batch (from
--batches, tried largest first) that fits. Synthetic tokens (no data pipeline),
`--steps` timed steps after the compile. Prints one markdown table.

    python bench/accelerator.py --rungs 125m,350m,1b            # on a GPU / TPU host
    python bench/accelerator.py --rungs nano --batches 4 --steps 2 --seq_len 128   # CPU smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from scaling.base import hostmem  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--rungs', default='125m,350m,1b', help='comma-separated ladder rungs')
  p.add_argument('--batches', default='64,48,32,24,16,12,8,4,2,1', help='per-device batch sizes to try, largest first')
  p.add_argument('--steps', type=int, default=20, help='timed steps after warm-up')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--seq_len', type=int, default=0, help='0: the rung default')
  p.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  p.add_argument('--attention', default='auto')
  p.add_argument('--remat', default='', help="'' keeps the rung default (dots_except_mlp for big rungs)")
  p.add_argument('--override', action='append', default=[], help='extra config overrides KEY=VALUE')
  args = p.parse_args(argv)
  try:
    args.batch_list = [int(b) for b in args.batches.split(',') if b]
  except ValueError:
    p.error(f'--batches must be comma-separated integers, got {args.batches!r}')
  if not args.batch_list or min(args.batch_list) <= 0:
    p.error('--batches needs positive sizes')
  if args.steps <= 0:
    p.error('--steps must be positive')
  for o in args.override:
    if '=' not in o:
      p.error(f'--override needs KEY=VALUE, got {o!r}')
  return args


def is_oom(e: Exception) -> bool:
  msg = str(e)
  return 'RESOURCE_EXHAUSTED' in msg or 'Out of memory' in msg or 'out of memory' in msg


def measure(rung: str, per_device_batch: int, args):
  import jax
  import numpy as np

  from scaling.config.load import load_config
  from scaling.model import accounting
  from scaling.train import sharding
  from scaling.train.metrics import device_peak_flops
  from scaling.train.step import build_setup, init_state, jit_train_step
  n = jax.device_count()
  ov = {'model.dtype': args.dtype, 'model.attention': args.attention, 'train.batch_size': str(per_device_batch * n),
        'train.steps': '1000', 'train.tokens': '0', 'train.microbatches': '1',
        # fused head+loss in chunks of ~8k logits rows per device (global rows; 512 suits a CPU cache)
        'train.loss_chunk': str(8192 * n)}
  if args.seq_len:
    ov['model.seq_len'] = str(args.seq_len)
  if args.remat:
    ov['model.remat'] = args.remat
  ov.update(dict(o.split('=', 1) for o in args.override))
  cfg = load_config(f'ladder.py:{rung}', ov)
  setup = build_setup(cfg)
  state = init_state(setup, 0)
  T, V = cfg.model.seq_len, cfg.model.vocab_size
  rng = np.random.default_rng(0)
  local = {k: rng.integers(0, V, (cfg.train.batch_size // jax.process_count(), T)).astype(np.int32)
           for k in ('inputs', 'targets')}
  batch = sharding.global_batch(local, setup.mesh)
  step = jit_train_step(setup, tuple(sorted(batch)))
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    state, m = compiled(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  tokens = cfg.train.batch_size * T
  fpt = accounting.flops_per_token(cfg.model)
  peak, src = device_peak_flops(setup.dims.dtype, cfg.train.peak_flops)
  mem = [d.memory_stats() or {} for d in jax.local_devices()]
  peak_mem = max((s.get('peak_bytes_in_use', 0) for s in mem), default=0)
  return dict(rung=rung, params=accounting.count_params(cfg.model)['total'], seq_len=T,
              batch_per_device=per_device_batch, devices=n, step_s=step_s, tokens_per_s=tokens / step_s,
              mfu=fpt * tokens / step_s / (peak * n), peak_src=src, compile_s=compile_s,
              peak_mem_gb=peak_mem / 2 ** 30, loss=float(m['loss']), attention=cfg.model.attention,
              remat=cfg.model.remat)


def main(argv=None):
  args = parse_args(argv)
  import jax
  dev = jax.devices()[0]
  print(f'# {jax.device_count()} x {getattr(dev, "device_kind", dev.platform)} ({dev.platform}), jax {jax.__version__}',
        flush=True)
  rows = []
  for rung in args.rungs.split(','):
    for b in args.batch_list:
      try:
        r = measure(rung, b, args)
      except Exception as e:  # noqa: BLE001 - OOM: try the next smaller batch
        if is_oom(e):
          print(f'# {rung}: batch {b}/device does not fit, trying smaller', flush=True)
          jax.clear_caches()
          continue
        raise
      print(f'# {rung}: {r}', flush=True)
      rows.append(r)
      break
    else:
      rows.append(dict(rung=rung, error='no batch size fits'))
  print('| rung | params | T | batch/device | step s | tokens/s | MFU | peak mem/device GB | compile s | attention | remat |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    if 'error' in r:
      print(f'| {r["rung"]} | {r["error"]} | | | | | | | | | |')
      continue
    print(f'| {r["rung"]} | {r["params"] / 1e6:.0f}M | {r["seq_len"]} | {r["batch_per_device"]} | {r["step_s"]:.3f} | '
          f'{r["tokens_per_s"]:,.0f} | {r["mfu"]:.1%} | {r["peak_mem_gb"]:.1f} | {r["compile_s"]:.1f} | '
          f'{r["attention"]} | {r["remat"]} |')
  return 0


if __name__ == '__main__':
  hostmem.tune_malloc()   # first, before JAX starts its threads (scaling/base/hostmem.py)
  sys.exit(main())
