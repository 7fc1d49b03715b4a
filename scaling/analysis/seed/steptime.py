"""Interleaved training-step timing of two or more configs on one machine: the seed study's speed claims.

A sweep's tokens/s column times each run alone, minutes apart, on a machine whose load changes (other
jobs, thermal state): a 10% difference between two runs says little. Here every config's jitted train
step (scaling.train.loop: the optimizer, clipping and loss of a real run, on synthetic tokens) is compiled
first, then timed in `rounds` rounds, each timing `steps` steps of every config back to back, in an order
that alternates between rounds. Round i of config a and round i of config b saw the same machine state,
so their ratio is a paired measurement; scaling/analysis/seed/claims.py's rounds_ratio turns the rounds into a ratio
with an interval.

    python -m scaling.analysis.seed.steptime --pair norm --config configs/sweeps/seed_upgrades.py --json out.jsonl

(`--pair`: one of seed_upgrades' PAIRS; the accelerator script bench/seed_claims_accelerator.sh runs both
pairs on a GPU/TPU.) Returns {'times': {name: [seconds per step, per round]}, 'backend', 'device', ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _stepper(cfg):
  """A function running n steps of cfg's train step on fixed synthetic tokens (compiled on creation)."""
  import jax
  import numpy as np

  from scaling.train import sharding
  from scaling.train.step import build_setup, init_state, jit_train_step
  setup = build_setup(cfg)
  state = [init_state(setup, 0)]
  B, T, V = cfg.train.batch_size, cfg.model.seq_len, setup.dims.vocab_size
  rng = np.random.default_rng(0)
  local = {k: rng.integers(0, V, (B, T)).astype(np.int32) for k in ('inputs', 'targets')}
  batch = sharding.global_batch(local, setup.mesh)
  step = jit_train_step(setup, tuple(sorted(batch)))

  def run(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
      state[0], m = step(state[0], batch)
    jax.block_until_ready(m)
    return time.perf_counter() - t0

  run(2)   # compile and warm up
  return run


def compare(cfgs: dict, *, rounds: int = 8, steps: int = 5) -> dict:
  """Seconds per step of each named config, per round (rounds interleaved, order alternating)."""
  import jax
  if rounds < 2 or steps < 1:
    raise ValueError(f'need rounds >= 2 and steps >= 1, got rounds={rounds} steps={steps}')
  runners = {name: _stepper(cfg) for name, cfg in cfgs.items()}
  names = list(runners)
  times = {n: [] for n in names}
  for i in range(rounds):
    for n in (names if i % 2 == 0 else names[::-1]):
      times[n].append(runners[n](steps) / steps)
  return {'times': times, 'rounds': rounds, 'steps': steps, 'backend': jax.default_backend(),
          'device': str(jax.devices()[0].device_kind)}


def main(argv=None) -> int:
  from scaling.base import hostmem
  hostmem.skip_absent_tpu()   # as the `scaling` command: libtpu without a TPU computes on the CPU, quietly
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='configs/sweeps/seed_upgrades.py', help='the sweep file (its PAIRS)')
  p.add_argument('--pair', action='append', default=None, help='pair name(s) (default: all)')
  p.add_argument('--rounds', type=int, default=8)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--json', default='', help='append one JSON line per pair to this file')
  p.add_argument('--override', action='append', default=[],
                 help='KEY=VALUE applied to every config of the pairs (e.g. model.d_model=768 on a GPU)')
  args = p.parse_args(argv)
  from scaling.config.load import apply_override, load_module
  spec, _, arg = args.config.partition(':')
  pairs = load_module(spec).steptime_pairs(arg or None)
  for o in args.override:
    key, eq, value = o.partition('=')
    if not eq:
      p.error(f'--override needs KEY=VALUE, got {o!r}')
    for cfgs in pairs.values():
      for cfg in cfgs.values():
        apply_override(cfg, key, value)
  for name in args.pair or list(pairs):
    if name not in pairs:
      p.error(f'--pair {name}: the sweep defines {", ".join(pairs)}')
    out = {'kind': 'steptime', 'pair': name, 'overrides': args.override,
           **compare(pairs[name], rounds=args.rounds, steps=args.steps)}
    print(json.dumps(out))
    if args.json:
      with open(args.json, 'a', encoding='utf-8') as f:
        f.write(json.dumps(out) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
