"""lr_transfer: does the optimal learning rate hold across width? SP against μP, on CPU.

WIDTHS (8x range) x LRS (log spaced by 2x) x {sp, mup}, at a fixed depth (LAYERS) and a fixed
head_dim (HEAD_DIM; num_heads = d_model / HEAD_DIM, num_kv_heads = num_heads), so μP's attention
factor sqrt(K_base / K) is 1 at every width and the two arms differ only in the width rules of
scaling/model/transformer.py role_multipliers: hidden matrices init / sqrt(m) and Adam lr / m, logits / m,
with m = d_model / WIDTHS[0] (mup_base_width = the smallest width: there both arms are the same
model bit for bit, tests/test_mup.py).

Every run: the same seed and data order (train.seed), STEPS optimizer steps of BATCH x SEQ tokens
of the Shakespeare corpus (BPE-4096), untied head, a short warmup and a cosine decay to 0.1 x lr;
compared by the final validation loss (eval/loss over the same fixed batches).

  scaling sweep --config configs/sweeps/lr_transfer.py --backend local --root sweeps/lr_transfer
  scaling sweep collect --root sweeps/lr_transfer && scaling report --root sweeps/lr_transfer

Re-submitting the same command continues it (finished runs are skipped). The runs go narrow width
first (cheap runs first, so a sweep cut short still has whole curves for the small widths).

Sizing (measured on the shared 2-core machine at load ~17, 2026-12-01): d_model 512 ran at ~450
tokens/s (seq 128), d_model 256 at ~1,450 tokens/s (seq 64, 0.35 s/step), plus ~35 s per run to
start, compile and evaluate. d_model 64..512 at 300 steps x 1,024 tokens would need ~3 h for the
widest width alone, so the 8x range is 32..256 at 300 steps x 512 tokens: ~65 min of runs one at
a time, ~40 min with --max-parallel 2.
`lr_transfer.py:quick` is a smoke version (2 widths, 3 lrs, 20 steps).
"""

from configs.sweeps._common import CPU_RUN, load_config_file
from scaling.launch.sweep import product

WIDTHS = (32, 64, 128, 256)
HEAD_DIM = 32
LAYERS = 2
LRS = (1.25e-3, 2.5e-3, 5e-3, 1e-2, 2e-2, 4e-2)
STEPS = 300
BATCH, SEQ = 8, 64
PARAMETRIZATIONS = ('sp', 'mup')


def model(width: int, parametrization: str, base_width: int) -> dict:
  heads = width // HEAD_DIM
  return {'model.d_model': width, 'model.num_heads': heads, 'model.num_kv_heads': heads,
          'model.head_dim': HEAD_DIM, 'model.num_layers': LAYERS, 'model.parametrization': parametrization,
          'model.mup_base_width': base_width}


def get_config(arg=None):
  del arg
  return load_config_file('default')


def _settings(arg):
  if arg == 'quick':
    return (32, 64), LRS[2:5], 20, {'train.warmup_steps': 2, 'train.log_every': 5, 'train.eval_batches': 2}
  return WIDTHS, LRS, STEPS, {}


def get_sweep(arg=None):
  widths, lrs, steps, extra = _settings(arg)
  base = {**CPU_RUN, 'name': 'lr_transfer', 'model.seq_len': SEQ, 'model.tied_embeddings': False,
          'train.batch_size': BATCH, 'train.steps': steps, 'train.warmup_steps': max(steps // 10, 1),
          'train.seed': 0, 'train.schedule': 'cosine', 'train.eval_batches': 16,
          'sample.max_new_tokens': 0, 'train.eval_sets.prose': '', **extra}   # the training split's eval only
  runs = []
  for width in widths:   # narrow first: a sweep cut short still has whole curves of the cheap widths
    for par in PARAMETRIZATIONS:
      runs += product({'train.lr': list(lrs)}, [{**base, **model(width, par, widths[0])}])
  return sorted(runs, key=lambda r: _priority(r, runs, widths[0]))


def _priority(run: dict, runs: list[dict], base_width: int):
  """Run order only (every run is run): first, at every width (narrow first), the three lrs nearest the
  expected optimum of each parametrization, then the rest, so a sweep cut short keeps the points that
  bracket each optimum. Expected: ~7e-3 at the base width (measured in the first part of this sweep),
  moving ~ 1/width under SP (measured 3.8e-3 at 2x) and staying put under μP."""
  import math

  def dist(r):
    center = 7e-3 * (base_width / r['model.d_model'] if r['model.parametrization'] == 'sp' else 1.0)
    return abs(math.log2(r['train.lr'] / center))
  key = lambda r: (r['model.d_model'], r['model.parametrization'])
  same = sorted((r for r in runs if key(r) == key(run)), key=dist)
  idx = next(i for i, r in enumerate(same) if r is run)
  return (idx >= 3, run['model.d_model'], idx, run['model.parametrization'])


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '02:00:00'}
