"""mixtures: a data-mixing law on CPU: two prose domains mixed five ways, one size and budget; the law fitted on
four mixtures predicts the fifth's per-domain bits per byte (scaling/analysis/mixing.py).

Domains (scaling/data/prose.py parts): linux (kernel documentation, 17 MB) and gcide (a dictionary, 29 MB),
mixed at r_linux = 0.1, 0.3, 0.5, 0.7, 0.9 (data.mixture_weights, the sweep's one axis); kjv (the King James
Bible, 4 MB) is a third domain that no run trains on, evaluated as a tagged set. Each run is evaluated on each
domain's own held-out split: eval/linux/bpb, eval/gcide/bpb, eval/kjv/bpb. The law is fitted per domain on the
four mixtures other than r_linux = 0.5 and predicts that one (error, 90% interval, against linear interpolation
of the four mixtures' losses), plus leave-one-out over all five.

One model (2 layers, d_model 128, byte tokens, context 128, batch 16: 2,048 tokens a step), STEPS steps each.
Sizing: THROUGHPUT tokens/s was measured for one mixture run on this 2-core machine (while another study ran:
docs/results/mixtures/README.md); `python configs/sweeps/mixtures.py` prints the plan and its estimated hours.

  scaling prepare --config configs/sweeps/mixtures.py         # the mixture's sources once (all runs share them)
  scaling sweep --config configs/sweeps/mixtures.py --backend local --root sweeps/mixtures
  scaling sweep collect --root sweeps/mixtures
  python -m scaling.analysis.mixing --root sweeps/mixtures --domains linux,gcide,kjv --out docs/results/mixtures

`mixtures.py:quick` is a smoke version (20 steps, 1 layer).
"""

import pathlib
import sys

if __name__ == '__main__':   # `python configs/sweeps/mixtures.py`: the folder holding configs/ on the path
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from configs.sweeps._common import CPU_RUN, load_config_file  # noqa: E402
from scaling.launch.sweep import axis  # noqa: E402

SOURCES = {'linux': 'prose:linux', 'gcide': 'prose:gcide'}
EVAL_ONLY = {'kjv': 'prose:kjv'}
R_LINUX = (0.1, 0.3, 0.5, 0.7, 0.9)
HELD_OUT = 0.5
STEPS = 800
THROUGHPUT = 2500.0      # tokens/s of one mixture run of MODEL on 2 CPU cores shared with another study (README.md)
OVERHEAD_S = 120.0       # per run: compile, the evaluations, start and end
MODEL = {
    'data.tokenizer': 'byte', 'model.seq_len': 128, 'model.num_layers': 2, 'model.d_model': 128,
    'model.num_heads': 4, 'model.num_kv_heads': 2, 'train.batch_size': 16, 'train.lr': 3e-3,
    'train.min_lr_ratio': 0.1, 'train.eval_sets': str(EVAL_ONLY), 'train.eval_batches': 32,
}
QUICK = {'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2, 'model.num_kv_heads': 1,
         'model.seq_len': 64, 'train.batch_size': 8, 'train.eval_batches': 4, 'train.warmup_steps': 5}


def weights(r: float) -> str:
  return f'linux={r:g},gcide={1 - r:.10g}'


def get_config(arg=None):
  del arg
  cfg = load_config_file('default')
  with cfg.data.unlocked():
    cfg.data.mixture.update(SOURCES)
    cfg.data.mixture_weights = weights(0.5)
    cfg.data.tokenizer = MODEL['data.tokenizer']   # `scaling prepare --config` of this file prepares what runs read
  return cfg


def _base(arg) -> dict:
  base = {**CPU_RUN, **MODEL, 'train.steps': STEPS, 'sample.prompts': ()}
  if arg == 'quick':
    base |= {**QUICK, 'train.steps': 20, 'train.log_every': 5}
  return base


def get_sweep(arg=None):
  return [{**_base(arg), **row} for row in axis('data.mixture_weights', [weights(r) for r in R_LINUX])]


def plan(arg=None) -> str:
  runs = get_sweep(arg)
  b = runs[0]
  tokens = b['train.steps'] * b['train.batch_size'] * b['model.seq_len']
  hours = len(runs) * (tokens / THROUGHPUT + OVERHEAD_S) / 3600
  rows = [f'mixtures{":" + arg if arg else ""}: {len(runs)} runs, one model '
          f'({b["model.num_layers"]}L d={b["model.d_model"]} T={b["model.seq_len"]} B={b["train.batch_size"]}), '
          f'{b["train.steps"]} steps = {tokens:,} tokens each',
          f'  sources {SOURCES}; eval-only {EVAL_ONLY}']
  for r in runs:
    mark = '  <- held out (predicted by the law fitted on the others)' if r['data.mixture_weights'] == weights(HELD_OUT) else ''
    rows.append(f'  data.mixture_weights={r["data.mixture_weights"]}{mark}')
  rows.append(f'estimated: {hours:.2f} h of this machine ({THROUGHPUT:,.0f} tokens/s measured, +{OVERHEAD_S:.0f} s per '
              f'run), one run at a time')
  return '\n'.join(rows)


if __name__ == '__main__':
  print(plan(sys.argv[1] if len(sys.argv) > 1 else None))
