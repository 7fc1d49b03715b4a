"""Training-step throughput: ours (JAX/NNX, jitted) against Hugging Face transformers' `LlamaForCausalLM`,
the model a user would pick instead, eager and under `torch.compile`, in float32 and bfloat16.

The peer is built from a `LlamaConfig` with our dims (scaling/inference/hf_export.py's hf_config_from_model: hidden,
layers, heads, kv heads, intermediate = our d_ff, vocab, tied embeddings, rms_norm_eps, rope_theta, no dropout)
and its default attention implementation (printed: `sdpa` in transformers 5), and starts from OUR initial
weights (scaling/inference/hf_export.py's params_to_hf): the first step of every arm sees the same weights and the same
batch, so the first-step losses must agree (to ~1e-5 in float32, ~1e-2 in bfloat16) and be ~ln(vocab).
Training setup as ours: AdamW with our lr, b1/b2/eps and weight decay on the same parameter set
(matrices, embeddings included; no decay on the norm scales: scaling/train/optim.py decay_mask), global-norm
clipping at train.grad_clip; the loss is a float32 cross-entropy over all B x T logits. (Ours runs its
warmup schedule, lr ~0 in the first steps; the peer a constant lr: the step's work is the same.)

dtypes. bfloat16 means ours at model.dtype=bfloat16 (bf16 compute, float32 master weights, float32
accumulation) and, to match, the peer's float32 parameters under torch.autocast('cpu', bfloat16).

Arms (--arms): ours (the jitted train step), transformers (eager), transformers+compile (the forward and
loss under torch.compile, inductor; backward via AOTAutograd, optimizer eager). Each arm runs in a process
of its own, as a user runs one framework: ours with the malloc tuning of the `scaling` command
(scaling/base/hostmem.py), the peer with PyTorch's defaults. (In one process the two frameworks shared one heap:
ours then took 11-12k page faults a step and ran ~11% slower than alone.) The processes take turns: this
one asks each for one step per round, after --warmup steps each (compile excluded), with --settle s of idle
before each timed step, so only one computes at a time and load changes hit all arms alike; each times its
own step; the median is kept. MFU uses the causal-aware FLOPs of scaling/model/accounting.py over each
framework's own matmul peak (n^3, per dtype), timed in the same rounds in ours' process and in the first
peer's.

A peer too slow to time is skipped, and said so, before it starts: a matmul in PyTorch (as the step runs it,
256^3 and up until one call takes 50 ms) is timed first, and where the step's FLOPs at that rate exceed
--peer_limit seconds the dtype's peer arms are left out, with that estimate of their step. That is bfloat16 on CPUs without native bf16 instructions
(AMD Zen 2, measured 2026-12-02: PyTorch's matmul 1-1.5 GFLOP/s at 256-1024^3, the transformers step
estimated at 69-77 s and measured at 30.6 s, ours 1.4-1.9 s, XLA's bf16 matmul at ~95 GFLOP/s).

The hand-written PyTorch model this script used to carry is gone: transformers' eager step was faster than
it at the same dims in float32 (9,053 tokens/s in issue #20's run, vs 6,058 for the hand-written one in
BENCHMARKS.md's; separate runs), so it understated the gap, and it measured nothing the transformers arms
do not: the same operations in the same framework, less the library users run.

    python bench/train_step.py [--arms ours,transformers,transformers+compile] [--dtypes float32,bfloat16]
        [--steps 10 --warmup 3] [--peer_malloc default|tuned] [--peer_limit 20]
        [--d_model --layers --heads --kv_heads --seq --batch --vocab]
        [--override KEY=VALUE ...] [--json PATH]

Dims default to scaling/config/default.py's (d_model 256, 4 layers, 4/2 heads, seq 256, batch 16, vocab 4096).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
# a CPU benchmark (the peer is torch on the CPU); and an installed libtpu (the tpu-aot extra) would otherwise
# make hostmem take this for an accelerator host and leave malloc untuned. At import: the spawned workers too.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from scaling.base import hostmem  # noqa: E402

ARMS = ('ours', 'transformers', 'transformers+compile')
DTYPES = ('float32', 'bfloat16')
# flag -> config key of the dims (None: scaling/config/default.py's value)
DIM_FLAGS = {'d_model': 'model.d_model', 'layers': 'model.num_layers', 'heads': 'model.num_heads',
             'kv_heads': 'model.num_kv_heads', 'seq': 'model.seq_len', 'batch': 'train.batch_size',
             'vocab': 'model.vocab_size'}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  for flag in DIM_FLAGS:
    p.add_argument(f'--{flag}', type=int, default=None, help=f'{DIM_FLAGS[flag]} (default: scaling/config/default.py)')
  p.add_argument('--arms', default=','.join(ARMS), help=f'comma-separated, of {", ".join(ARMS)}')
  p.add_argument('--dtypes', default=','.join(DTYPES), help=f'comma-separated, of {", ".join(DTYPES)}')
  p.add_argument('--steps', type=int, default=10, help='timed steps per arm (rounds)')
  p.add_argument('--warmup', type=int, default=3, help='untimed steps per arm first (compile included)')
  p.add_argument('--attention', default='auto', help="ours' model.attention")
  p.add_argument('--settle', type=float, default=0.3, help='seconds of idle before each timed step')
  p.add_argument('--peer_malloc', choices=('default', 'tuned'), default='default',
                 help="the peer's heap: glibc's defaults, as a PyTorch user runs it, or ours' tuning "
                      '(scaling/base/hostmem.py: one arena, freed blocks kept mapped), to compare like with like')
  p.add_argument('--peak_n', type=int, default=2048, help='matmul size of the peak measurement')
  p.add_argument('--compile_backend', default='inductor',
                 help="torch.compile's backend for transformers+compile (inductor: what a user gets; aot_eager: "
                      "the same graph capture and AOTAutograd without inductor's C++ build, for the tests)")
  p.add_argument('--peer_limit', type=float, default=20.0,
                 help="seconds: a dtype's peer arms are skipped (and said so) when PyTorch's matmul rate, probed "
                      'first (256^3 and up), puts their step above this (bfloat16 on CPUs without native bf16 '
                      'instructions, e.g. AMD Zen 2: ~1 GFLOP/s). 0: never skip')
  p.add_argument('--override', action='append', default=[], help='config override, KEY=VALUE (e.g. '
                 'train.loss_chunk=0; model fields reach the peer too)')
  p.add_argument('--json', default='', help='also write the rows, peaks and dims to this file')
  args = p.parse_args(argv)
  args.arms, args.dtypes = args.arms.split(','), args.dtypes.split(',')
  for name, got, allowed in (('--arms', args.arms, ARMS), ('--dtypes', args.dtypes, DTYPES)):
    if bad := [x for x in got if x not in allowed]:
      p.error(f'{name}: unknown {", ".join(map(repr, bad))}; choose from {", ".join(allowed)}')
  if args.peer_limit < 0:
    p.error('--peer_limit must be >= 0 (seconds; 0: never skip a peer)')
  if args.steps < 1 or args.warmup < 1 or args.peak_n < 1:
    p.error('--steps, --warmup and --peak_n must be >= 1 (the warm-up keeps compile out of the timing)')
  if bad := [o for o in args.override if '=' not in o]:
    p.error(f'--override {bad[0]!r}: expected KEY=VALUE')
  return args


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  import platform
  return platform.processor() or 'unknown CPU'


def model_config(args, dtype):
  """Our config for one dtype: scaling/config/default.py with the dims given on the command line."""
  from scaling.config.load import load_config
  ov = {'model.dtype': dtype, 'train.steps': '1000', 'model.attention': args.attention, 'mesh.data': '1'}
  ov.update({key: str(getattr(args, flag)) for flag, key in DIM_FLAGS.items() if getattr(args, flag) is not None})
  ov.update(o.split('=', 1) for o in args.override)
  return load_config('scaling/config/default.py', ov)


def jax_setup(cfg, batch):
  """(run, hf_tensors): one jitted train step of ours per call (returns the loss), and the initial
  weights in transformers' layout (taken before the first step donates them)."""
  from flax import nnx

  from scaling.inference.hf_export import params_to_hf
  from scaling.train import sharding
  from scaling.train.step import build_setup, init_state, jit_train_step
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  setup = build_setup(cfg, mesh)
  state = init_state(setup, cfg.train.seed)
  tensors = params_to_hf(nnx.merge(setup.graphdef, state['params']))
  step = jit_train_step(setup, tuple(batch))
  dev_batch = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in batch.items()}
  holder = {'state': state}

  def run():
    holder['state'], m = step(holder['state'], dev_batch)
    return float(m['loss'])   # waits for the step
  return run, tensors


def hf_model(cfg, tensors):
  """transformers' LlamaForCausalLM at our dims, default attention implementation, our initial weights."""
  import torch
  import transformers

  from scaling.inference.hf_export import hf_config_from_model
  d = hf_config_from_model(cfg.model)
  skip = ('architectures', 'model_type', 'torch_dtype', 'dtype')
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{k: v for k, v in d.items() if k not in skip}))
  missing, unexpected = model.load_state_dict({k: torch.tensor(v) for k, v in tensors.items()}, strict=False)
  tied = {'lm_head.weight'} if model.config.tie_word_embeddings else set()
  if unexpected or set(missing) - tied:
    raise RuntimeError(f'our weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}')
  return model.train()


def torch_setup(cfg, tensors, batch, dtype, compile_, backend='inductor'):
  """One training step of transformers' Llama per call (returns the loss): forward (autocast in bfloat16),
  float32 cross-entropy, backward, global-norm clip, AdamW (decay on matrices only, as ours)."""
  import torch
  import torch.nn.functional as F
  torch.manual_seed(cfg.train.seed)
  model = hf_model(cfg, tensors)
  t, V = cfg.train, cfg.model.vocab_size
  params = list(model.parameters())   # the tied embedding once
  groups = [{'params': [p for p in params if p.ndim >= 2], 'weight_decay': t.weight_decay},
            {'params': [p for p in params if p.ndim < 2], 'weight_decay': 0.0}]
  opt = torch.optim.AdamW(groups, lr=t.lr, betas=(t.b1, t.b2), eps=t.eps)
  tok, tgt = (torch.from_numpy(batch[k].astype(np.int64)) for k in ('inputs', 'targets'))
  autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=(dtype == 'bfloat16'))

  def loss_fn(tok, tgt):
    with autocast:
      logits = model(input_ids=tok, use_cache=False).logits
    return F.cross_entropy(logits.float().view(-1, V), tgt.view(-1))
  fwd = torch.compile(loss_fn, backend=backend) if compile_ else loss_fn

  def run():
    opt.zero_grad(set_to_none=True)
    loss = fwd(tok, tgt)
    loss.backward()
    if t.grad_clip > 0:
      torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
    opt.step()
    return loss.item()
  return run, model.config._attn_implementation


def jax_peak(n, dtype):
  """One n^3 matmul in JAX (float32 accumulation) per call."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  f(a, a).block_until_ready()
  return lambda: f(a, a).block_until_ready()


def torch_peak(n, dtype):
  """One n^3 matmul in PyTorch per call."""
  import torch
  ta = torch.ones(n, n, dtype=getattr(torch, dtype))
  ta @ ta

  def run():
    ta @ ta
  return run


PROBE_S = 0.05   # the pre-flight matmul grows from 256^3 until one call takes this long (or 2048^3)


def torch_matmul_rates(dtypes) -> dict:
  """{dtype: (n, PyTorch's FLOP/s on an n^3 matmul as the peer's step runs it)} (float32 tensors, under autocast
  in bfloat16): n doubles from 256 until a call takes PROBE_S (a 256^3 float32 call is ~0.3 ms, which
  thread wake-ups on a loaded machine dominate), then the best of 2 at that n; in a process of its own, so the
  parent never imports torch. ~1 s in all even where bfloat16 runs at ~1 GFLOP/s (stops at 512^3)."""
  import torch

  def best(n, calls):
    a, t_best = torch.ones(n, n), math.inf
    for _ in range(calls):
      t = time.perf_counter()
      a @ a
      t_best = min(t_best, time.perf_counter() - t)
    return t_best
  rates = {}
  for dtype in dtypes:
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=(dtype == 'bfloat16')):
      n = 256
      best(n, 1)   # untimed: first-call set-up
      while best(n, 1) < PROBE_S and n < 2048:
        n *= 2
      rates[dtype] = (n, 2 * n ** 3 / best(n, 2))
  return rates


def slow_peers(args, configs) -> dict:
  """{dtype: why its peer arms are skipped} for the dtypes whose step, at PyTorch's probed rate, would exceed
  --peer_limit s: {probe_n, rate (FLOP/s at probe_n^3), est_step_s (the step's FLOPs at that rate)}. An order of
  magnitude, not a bound: PyTorch's rate differs by shape (bfloat16 on Zen 2: estimated 69-77 s, measured
  30.6 s)."""
  if not args.peer_limit or all(a == 'ours' for a in args.arms):
    return {}
  from scaling.model.accounting import flops_per_token
  with multiprocessing.get_context('spawn').Pool(1) as pool:
    rates = pool.apply(torch_matmul_rates, (list(configs),))
  slow = {}
  for dtype, cfg in configs.items():
    n, rate = rates[dtype]
    est = flops_per_token(cfg.model) * cfg.train.batch_size * cfg.model.seq_len / rate
    if est > args.peer_limit:
      slow[dtype] = dict(probe_n=n, rate=rate, est_step_s=est)
  return slow


def skip_line(s, peer_limit) -> str:
  """The one line that says a peer arm was skipped (`s`: a `skipped` entry of the --json)."""
  return (f'# skipped: {s["arm"]} {s["dtype"]}: PyTorch\'s matmul at {s["rate"] / 1e9:.2f} GFLOP/s '
          f'({s["probe_n"]}^3) puts its step at ~{s["est_step_s"]:.0f} s, above --peer_limit {peer_limit:g} '
          '(an order of magnitude: the rate differs by shape; 0 runs it anyway)')


def _timed(fn):
  """(seconds, minor page faults, value) of one call."""
  f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  t = time.perf_counter()
  value = fn()
  return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, value


def worker(conn, arm, args, dtype, batch):
  """One arm in a process of its own: builds its step (and, for ours and the first peer, its framework's
  matmul peak), runs step 0 (compile), then one call per request: ('run', key) -> (s, faults, value)."""
  try:
    cfg = model_config(args, dtype)
    runners, info = {}, {}
    if arm == 'ours':
      hostmem.tune_malloc()   # as the `scaling` command does, before JAX starts its threads
      runners[arm], tensors = jax_setup(cfg, batch)
      runners['peak/jax'] = jax_peak(args.peak_n, dtype)
      conn.send(('tensors', tensors))
    else:
      if args.peer_malloc == 'tuned':
        hostmem.tune_malloc()
      import torch
      import transformers
      tensors = conn.recv()
      runners[arm], info['attn'] = torch_setup(cfg, tensors, batch, dtype, arm.endswith('+compile'),
                                               args.compile_backend)
      if conn.recv():   # this peer also times torch's matmul peak
        runners['peak/torch'] = torch_peak(args.peak_n, dtype)
      info['versions'] = (transformers.__version__, torch.__version__, torch.get_num_threads())
    info['first_loss'] = runners[arm]()   # step 0 (compiles): the same weights and batch in every arm
    # compiled: freed step buffers stay mapped from now on in ours (scaling/base/hostmem.py); the heap grows to its
    # steady size in the warm-up steps, not in the timed ones
    info['malloc_tuning'] = hostmem.hold_heap() if arm == 'ours' or args.peer_malloc == 'tuned' else False
    conn.send(('ready', info))
    while (msg := conn.recv()) != 'stop':
      conn.send(('ran', _timed(runners[msg[1]])))
  except BaseException as e:   # the parent reports it and stops the others
    conn.send(('error', f'{arm} ({dtype}): {type(e).__name__}: {e}'))
    raise


class Arms:
  """The arms' processes of one dtype (spawned: JAX and PyTorch each start clean), as a context manager."""

  def __init__(self, args, dtype, batch):
    self.args, self.dtype, self.batch, self.procs, self.conns = args, dtype, batch, {}, {}

  def _start(self, arm):
    ctx = multiprocessing.get_context('spawn')
    parent, child = ctx.Pipe()
    p = ctx.Process(target=worker, args=(child, arm, self.args, self.dtype, self.batch), daemon=True)
    p.start()
    self.procs[arm], self.conns[arm] = p, parent
    return parent

  def _recv(self, arm, tag):
    """The payload of the arm's next message, which must be `tag`; a worker's error raised here."""
    got = self.conns[arm].recv()
    if got[0] == 'error':
      raise RuntimeError(f'train_step.py worker failed: {got[1]}')
    assert got[0] == tag, got
    return got[1]

  def __enter__(self):
    """Starts ours first (its initial weights go to the peers), then the peers; {arm: info} once all are
    compiled. Without ours (--arms of peers only) the weights come from a process of ours all the same."""
    arms = self.args.arms
    self._start('ours')
    tensors = self._recv('ours', 'tensors')
    for i, arm in enumerate(a for a in arms if a != 'ours'):
      self._start(arm).send(tensors)
      self.conns[arm].send(i == 0)
    self.info = {arm: self._recv(arm, 'ready') for arm in self.conns}
    if 'ours' not in arms:   # it only supplied the weights
      self.conns.pop('ours').send('stop')
      self.info.pop('ours')
    # run key -> the process that runs it
    self.keys = {arm: arm for arm in arms}
    peers = [a for a in arms if a != 'ours']
    if 'ours' in arms:
      self.keys['peak/jax'] = 'ours'
    if peers:
      self.keys['peak/torch'] = peers[0]
    return self

  def run(self, key):
    """(seconds, page faults, value) of one call of `key` (an arm or 'peak/jax' / 'peak/torch')."""
    self.conns[self.keys[key]].send(('run', key))
    return self._recv(self.keys[key], 'ran')

  def __exit__(self, *exc):
    for arm, conn in self.conns.items():
      try:
        conn.send('stop')
      except OSError:
        pass
    for p in self.procs.values():
      p.join(timeout=30)
      if p.is_alive():
        p.kill()
    return False


def measure(arms, args):
  """{key: (step times, page faults per step)} for the arms and the peaks: --warmup - 1 more untimed calls
  of each, then --steps rounds of one call of each, so load changes hit all alike."""
  for key in arms.keys:
    for _ in range(args.warmup - 1):
      arms.run(key)
  times, faults = {k: [] for k in arms.keys}, dict.fromkeys(arms.keys, 0)
  for _ in range(args.steps):
    for k in arms.keys:
      time.sleep(args.settle)   # the last framework's idle threads (OpenMP spin-wait) stop competing
      t, f, _ = arms.run(k)
      times[k].append(t)
      faults[k] += f
  return {k: (times[k], faults[k] / args.steps) for k in arms.keys}


def bench_dtype(args, cfg, dtype, slow=None):
  """The rows of one dtype, the matmul peaks ({'jax', 'torch'}: FLOP/s, median of the rounds; only those of
  the frameworks measured), the arms' info (first-step loss; the peer's attention implementation and
  versions; ours' malloc tuning) and the skipped peers (slow: slow_peers' entry for this dtype, if any)."""
  from scaling.model.accounting import flops_per_token
  B, T, V = cfg.train.batch_size, cfg.model.seq_len, cfg.model.vocab_size
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(0, V, (B, T)).astype(np.int32) for k in ('inputs', 'targets')}
  skipped = []
  if slow is not None:
    peers = [a for a in args.arms if a != 'ours']
    skipped = [dict(arm=a, dtype=dtype, **slow) for a in peers]
    for sk in skipped:   # now, before the measurement; and again after the table
      print(skip_line(sk, args.peer_limit), file=sys.stderr, flush=True)
    if 'ours' not in args.arms:
      return [], {}, {}, skipped
    args = argparse.Namespace(**{**vars(args), 'arms': ['ours']})
  with Arms(args, dtype, batch) as arms:
    got = measure(arms, args)
    info = arms.info
  peaks = {fw: 2 * args.peak_n ** 3 / statistics.median(got.pop(f'peak/{fw}')[0])
           for fw in ('jax', 'torch') if f'peak/{fw}' in got}
  fpt, tokens = flops_per_token(cfg.model), B * T
  rows = []
  for arm, (ts, pf) in got.items():
    step_s = statistics.median(ts)
    tps = tokens / step_s
    peak = peaks['jax' if arm == 'ours' else 'torch']
    ratio = tokens / statistics.median(got['ours'][0]) / tps if 'ours' in got else None
    # the same in each round (this arm's step over ours' of that round): load that drifts between rounds cancels
    paired = [t / o for t, o in zip(ts, got['ours'][0])] if 'ours' in got else None
    rows.append(dict(arm=arm, dtype=dtype, step_s=step_s, tokens_per_s=tps, ratio=ratio, step_times=ts,
                     round_ratio=paired and statistics.median(paired),
                     round_ratio_range=paired and [min(paired), max(paired)], mfu=fpt * tps / peak, peak=peak,
                     flops_per_token=fpt, first_loss=info[arm]['first_loss'], faults_per_step=pf))
  return rows, peaks, info, skipped


def print_table(rows):
  print('| arm | dtype | step ms | tokens/s | ours / this | ours / this per round (median, range) '
        '| MFU (vs own matmul peak) | first-step loss | page faults/step |')
  print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
  for r in rows:
    ratio = '-' if r['ratio'] is None else f'{r["ratio"]:.2f}x'
    paired = '-' if r['round_ratio'] is None else (f'{r["round_ratio"]:.2f}x ({r["round_ratio_range"][0]:.2f}-'
                                                    f'{r["round_ratio_range"][1]:.2f})')
    ms = r['step_s'] * 1e3
    ms = f'{ms:.4g}' if ms < 1000 else f'{ms:,.0f}'   # >= 4 significant digits, never an exponent
    print(f'| {r["arm"]} | {r["dtype"]} | {ms} | {r["tokens_per_s"]:,.0f} | {ratio} | {paired} '
          f'| {r["mfu"]:.1%} | {r["first_loss"]:.4f} | {r["faults_per_step"]:,.0f} |')


def main(argv=None):
  args = parse_args(argv)
  configs = {dt: model_config(args, dt) for dt in args.dtypes}   # bad overrides fail here, before any work
  if any(a != 'ours' for a in args.arms):
    from scaling.inference.hf import HFError
    from scaling.inference.hf_export import check_llama_compatible
    try:
      check_llama_compatible(configs[args.dtypes[0]].model)   # the peer is a Llama: e.g. no LayerNorm, no GELU
    except HFError as e:
      sys.exit(f'train_step.py: the transformers arms need a model LlamaForCausalLM can express ({e}); '
               'drop the override or run --arms ours')
  rows, peaks, infos, skipped = [], {}, {}, []
  slow = slow_peers(args, configs)
  for dtype, cfg in configs.items():
    got, peaks[dtype], infos[dtype], skip = bench_dtype(args, cfg, dtype, slow.get(dtype))
    rows += got
    skipped += skip
  m = cfg.model
  print(f'# train step: d_model={m.d_model} layers={m.num_layers} heads={m.num_heads}/{m.num_kv_heads} '
        f'seq={m.seq_len} batch={cfg.train.batch_size} vocab={m.vocab_size}; {jax.device_count()} JAX device(s), '
        f'{os.cpu_count()} CPUs ({cpu_model()}); median of {args.steps} after {args.warmup} warm-up; '
        f'ln(vocab) = {math.log(m.vocab_size):.4f}; one process per arm, taking turns')
  peer = next((i for inf in infos.values() for a, i in inf.items() if a != 'ours'), None)
  attn = peer and peer['attn']
  if peer:
    tv, tt, threads = peer['versions']
    print(f'# peer: transformers {tv} LlamaForCausalLM, attn_implementation={attn}, torch {tt} with {threads} '
          'threads; bfloat16 = torch.autocast on float32 params (ours: bf16 compute, float32 master weights)')
    if 'transformers+compile' in args.arms:
      print(f'# transformers+compile: torch.compile(backend={args.compile_backend!r}) on the forward and loss')
  print(f'# matmul peak {args.peak_n}^3 (GFLOP/s, median of the same rounds as the steps): ' + ', '.join(
      f'{dt}: ' + ', '.join(f'{fw} {v / 1e9:.0f}' for fw, v in p.items()) for dt, p in peaks.items()))
  tuned = {a: i['malloc_tuning'] for inf in infos.values() for a, i in inf.items()}
  print('# host malloc tuning (scaling/base/hostmem.py): ' + ', '.join(f'{a} {"on" if on else "off"}' for a, on in tuned.items()))
  print_table(rows)
  for sk in skipped:
    print(skip_line(sk, args.peer_limit))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(dict(peaks=peaks, attn_implementation=attn, batch=cfg.train.batch_size, seq=m.seq_len,
                     vocab=m.vocab_size, rows=rows, skipped=skipped), f, indent=1)


if __name__ == '__main__':
  main()
