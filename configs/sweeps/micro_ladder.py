"""micro_ladder: 5 model sizes x 3 token budgets on the Shakespeare corpus (BPE 4096, context 256).

Sized so the whole sweep runs on a 2-core CPU in about an hour:

  scaling sweep --config configs/sweeps/micro_ladder.py --backend local --root sweeps/micro_ladder
  scaling sweep collect --root sweeps/micro_ladder
  scaling fit --results sweeps/micro_ladder/results.jsonl --out sweeps/micro_ladder/fit
  scaling report --root sweeps/micro_ladder

Rungs nano (1M), 2m, 5m, 10m and 20m of scaling/model/ladder.py; budgets of 64k, 128k and 256k tokens.
These are far below the compute-optimal 20 tokens/param for the larger rungs: the sweep
measures the data-limited corner of L(N, D), which is what a CPU hour can reach.
"""

from configs.sweeps._common import CPU_RUN, load_config_file
from scaling.launch.sweep import product

RUNGS = ['nano', '2m', '5m', '10m', '20m']
TOKENS = [65536, 131072, 262144]
BATCH = 8   # x 256 tokens = 2048 tokens per step


def get_config(arg=None):
  return load_config_file('ladder', arg or 'nano')


def get_sweep(arg=None):
  del arg
  runs = product({'rung': RUNGS, 'train.tokens': TOKENS},
                 [{**CPU_RUN, 'train.batch_size': BATCH, 'name': 'micro_ladder'}])
  for r in runs:   # warm up over a tenth of each run
    r['train.warmup_steps'] = max(5, r['train.tokens'] // (BATCH * 256) // 10)
  return runs


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '01:00:00'}
