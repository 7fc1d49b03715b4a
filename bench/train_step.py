"""Training-step throughput: ours (JAX/NNX, jitted) against the same model in PyTorch.

The PyTorch model is written here for the benchmark: same dims, RMSNorm, RoPE
(rotate_half), SwiGLU, grouped-query attention, tied embeddings, AdamW with
the same hyperparameters and global-norm clipping. Both run in this process,
alternating one step each after a warm-up, and the median step time is kept.
MFU uses the causal-aware FLOPs of scaling/accounting.py over a matmul peak
measured in the same run, in each framework.

    python bench/train_step.py [--d_model 256 --layers 4 --seq 256 --batch 16 --vocab 8192 --steps 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import jax
import jax.numpy as jnp
import numpy as np

from scaling import hostmem  # noqa: E402


def jax_setup(args, dtype):
  from scaling import sharding
  from scaling.config import load_config
  from scaling.train import build_setup, init_state, jit_train_step
  cfg = load_config('configs/default.py', {
      'model.d_model': str(args.d_model), 'model.num_layers': str(args.layers), 'model.num_heads': str(args.heads),
      'model.num_kv_heads': str(args.kv_heads), 'model.seq_len': str(args.seq), 'model.vocab_size': str(args.vocab),
      'model.dtype': dtype, 'train.batch_size': str(args.batch), 'train.steps': '1000',
      'model.attention': args.attention, 'mesh.data': '1', **dict(o.split('=', 1) for o in args.override)})
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  setup = build_setup(cfg, mesh)
  state = init_state(setup, 0)
  step = jit_train_step(setup, ('inputs', 'targets'))
  rng = np.random.default_rng(0)
  batch = {k: jax.device_put(rng.integers(0, args.vocab, (args.batch, args.seq)).astype(np.int32),
                             sharding.batch_sharding(mesh)) for k in ('inputs', 'targets')}
  holder = {'state': state}

  def run():
    holder['state'], m = step(holder['state'], batch)
    jax.block_until_ready(m['loss'])
  return cfg, run


def torch_setup(args, dtype, compile_):
  import torch
  import torch.nn as nn
  import torch.nn.functional as F
  torch.manual_seed(0)
  D, L, H, G, T, V = args.d_model, args.layers, args.heads, args.kv_heads, args.seq, args.vocab
  K = D // H
  Fd = -(-int(8 * D / 3) // 64) * 64

  class RMSNorm(nn.Module):
    def __init__(self):
      super().__init__()
      self.w = nn.Parameter(torch.ones(D))

    def forward(self, x):
      x32 = x.float()
      return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5) * self.w).to(x.dtype)

  inv = 1.0 / (10000 ** (torch.arange(0, K, 2).float() / K))
  ang = torch.arange(T).float()[:, None] * inv[None]
  cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]

  def rope(x):
    x1, x2 = x[..., :K // 2].float(), x[..., K // 2:].float()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      self.n1, self.n2 = RMSNorm(), RMSNorm()
      self.q = nn.Linear(D, H * K, bias=False)
      self.k = nn.Linear(D, G * K, bias=False)
      self.v = nn.Linear(D, G * K, bias=False)
      self.o = nn.Linear(H * K, D, bias=False)
      self.gate = nn.Linear(D, Fd, bias=False)
      self.up = nn.Linear(D, Fd, bias=False)
      self.down = nn.Linear(Fd, D, bias=False)

    def forward(self, x):
      B = x.shape[0]
      h = self.n1(x)
      q = rope(self.q(h).view(B, T, H, K))
      k = rope(self.k(h).view(B, T, G, K))
      v = self.v(h).view(B, T, G, K)
      k = k.repeat_interleave(H // G, dim=2)
      v = v.repeat_interleave(H // G, dim=2)
      a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
      x = x + self.o(a.transpose(1, 2).reshape(B, T, H * K))
      h = self.n2(x)
      return x + self.down(F.silu(self.gate(h)) * self.up(h))

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.emb = nn.Embedding(V, D)
      self.blocks = nn.ModuleList([Block() for _ in range(L)])
      self.norm = RMSNorm()

    def forward(self, tok):
      x = self.emb(tok)
      for b in self.blocks:
        x = b(x)
      return self.norm(x) @ self.emb.weight.T

  model = Model()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
  tok = torch.randint(0, V, (args.batch, T))
  tgt = torch.randint(0, V, (args.batch, T))
  autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=(dtype == 'bfloat16'))

  def loss_fn():
    with autocast:
      logits = model(tok)
    return F.cross_entropy(logits.float().view(-1, V), tgt.view(-1))
  fwd = torch.compile(loss_fn) if compile_ else loss_fn

  def run():
    opt.zero_grad(set_to_none=True)
    loss = fwd()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    loss.item()
  return run


def matmul_peaks(n=2048):
  import torch
  out = {}
  for dt in ('float32', 'bfloat16'):
    a = jnp.ones((n, n), dt)
    f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    f(a, a).block_until_ready()
    t = min(_time(lambda: f(a, a).block_until_ready()) for _ in range(3))
    ta = torch.ones(n, n, dtype=getattr(torch, dt))
    ta @ ta
    tt = min(_time(lambda: ta @ ta) for _ in range(3))
    out[dt] = (2 * n ** 3 / t, 2 * n ** 3 / tt)
  return out


def _time(fn):
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--d_model', type=int, default=256)
  p.add_argument('--layers', type=int, default=4)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--kv_heads', type=int, default=4)
  p.add_argument('--seq', type=int, default=256)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--vocab', type=int, default=8192)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--attention', default='auto')
  p.add_argument('--dtypes', default='float32,bfloat16')
  p.add_argument('--no_compile', action='store_true')
  p.add_argument('--settle', type=float, default=0.3, help='seconds of idle before each timed step')
  p.add_argument('--override', action='append', default=[], help='config override for ours, KEY=VALUE '
                 '(e.g. train.loss_chunk=0)')
  args = p.parse_args()
  from scaling.accounting import flops_per_token
  peaks = matmul_peaks()
  tokens = args.batch * args.seq
  print(f'# train step: d={args.d_model} L={args.layers} H={args.heads} G={args.kv_heads} T={args.seq} '
        f'B={args.batch} V={args.vocab}; {jax.device_count()} JAX device(s), {os.cpu_count()} CPUs')
  print('# matmul peak 2048^3 (GFLOP/s): ' + ', '.join(
      f'{dt}: jax {j / 1e9:.0f}, torch {t / 1e9:.0f}' for dt, (j, t) in peaks.items()))
  rows = []
  for dtype in args.dtypes.split(','):
    cfg, ours = jax_setup(args, dtype)
    fpt = flops_per_token(cfg.model)
    peers = {'torch eager': torch_setup(args, dtype, False)}
    if not args.no_compile:
      peers['torch.compile'] = torch_setup(args, dtype, True)
    runners = {'ours (jax)': ours, **peers}
    for fn in runners.values():
      for _ in range(args.warmup):
        fn()
    held = hostmem.hold_heap()   # compiled: freed step buffers stay mapped from now on (scaling/hostmem.py)
    times = {k: [] for k in runners}
    faults = {k: 0 for k in runners}
    for _ in range(args.steps):
      for k, fn in runners.items():   # alternate, so load changes hit all alike
        time.sleep(args.settle)   # the last framework's idle threads (OpenMP spin-wait) stop competing
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        times[k].append(_time(fn))
        faults[k] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in runners:
      tps = tokens / med[k]
      peak = peaks[dtype][0 if k.startswith('ours') else 1]
      rows.append((dtype, k, med[k] * 1e3, tps, (tokens / med['ours (jax)']) / tps, fpt * tps / peak,
                   faults[k] / args.steps))
  print(f'# host malloc tuning (scaling/hostmem.py): {"on" if held else "off"}')
  print('| dtype | implementation | step ms | tokens/s | ours / this | MFU (vs own matmul peak) | page faults/step |')
  print('|---|---|---|---|---|---|---|')
  for dt, k, ms, tps, ratio, mfu, pf in rows:
    print(f'| {dt} | {k} | {ms:.0f} | {tps:,.0f} | {ratio:.2f}x | {mfu:.0%} | {pf:,.0f} |')


if __name__ == '__main__':
  hostmem.tune_malloc()   # first, before JAX starts its threads (scaling/hostmem.py)
  main()
