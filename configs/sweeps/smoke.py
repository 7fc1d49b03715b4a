"""Smoke sweep: 4 short nano-scale runs, 2 model sizes x 2 token budgets, so that a fit can use it.

  scaling sweep --config configs/sweeps/smoke.py --backend local --max-parallel 2
  scaling sweep --config configs/sweeps/smoke.py --backend slurm --wait
  scaling sweep status --root sweeps/smoke;  scaling sweep collect --root sweeps/smoke
  scaling fit --results sweeps/smoke/results.jsonl     # power laws in N (at each D) and in D (at each N)

Sizes: the nano rung with 1 and 2 layers; budgets: 8 and 16 steps of 4 x 64 tokens, one eval at
the end (each run about 20 s on a CPU core, most of it compiling). Two points per group is the
least a power law needs: the exponents mean little, the fit and its plots are what is smoked. The
Chinchilla fit needs 5 runs and the isoflop fit 3 sizes per budget: `scaling fit` skips them with
a note. Used by tests/test_slurm.py. Override anything for all runs with --config.KEY=VALUE on the
sweep command line.
"""

from scaling.launch.sweep import product

# Settings shared by every run: tiny batches and context, one eval and one checkpoint at the
# end, and a fixed peak FLOP/s so no run spends time measuring the CPU (it only scales MFU).
COMMON = {
    'train.warmup_steps': 2,
    'train.batch_size': 4,
    'model.seq_len': 64,
    'train.log_every': 4,
    'train.eval_every': 16,
    'train.eval_batches': 1,
    'train.ckpt_every': 16,
    'train.peak_flops': 1e11,
}
LAYERS = [1, 2]      # model sizes (the nano rung has 2 layers)
STEPS = [8, 16]      # token budgets: steps x batch_size x seq_len


def get_config(arg=None):
  """The nano rung (used by runs without a 'rung' key, and by `scaling train --config` on this file)."""
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parent.parent / 'ladder.py'
  spec = importlib.util.spec_from_file_location('_smoke_ladder', path)
  ladder = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ladder)
  return ladder.get_config(arg or 'nano')


def get_sweep(arg=None):
  del arg
  grid = product({'rung': ['nano'], 'model.num_layers': LAYERS, 'train.steps': STEPS})
  return product(grid, [COMMON])


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 1, 'time': '00:10:00'}
