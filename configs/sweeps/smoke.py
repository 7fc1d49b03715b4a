"""Smoke sweep: 4 short runs of the nano rung (2 learning rates x 2 seeds).

  scaling sweep --config configs/sweeps/smoke.py --backend local --max-parallel 2
  scaling sweep --config configs/sweeps/smoke.py --backend slurm --wait
  scaling sweep status --root sweeps/smoke;  scaling sweep collect --root sweeps/smoke

Used by tests/test_slurm.py. Each run trains 12 steps of 4 x 64 tokens with one eval at the end
(about 20 s on a CPU core, most of it compiling); override anything for all runs with
--config.KEY=VALUE on the sweep command line.
"""

from launch.sweep import product

# Settings shared by every run: tiny batches and context, one eval and one checkpoint at the
# end, and a fixed peak FLOP/s so no run spends time measuring the CPU (it only scales MFU).
COMMON = {
    'train.steps': 12,
    'train.warmup_steps': 2,
    'train.batch_size': 4,
    'model.seq_len': 64,
    'train.log_every': 4,
    'train.eval_every': 12,
    'train.eval_batches': 1,
    'train.ckpt_every': 12,
    'train.peak_flops': 1e11,
}


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
  grid = product({'rung': ['nano'], 'train.lr': [1e-3, 3e-3], 'train.seed': [0, 1]})
  return product(grid, [COMMON])


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 1, 'time': '00:10:00'}
