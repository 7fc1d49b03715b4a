"""isoflop: 3 compute budgets x 5 model sizes each (Chinchilla approach 2).

For each budget C the token count of a run is C / flops_per_token(model), so every run of a
budget costs the same training FLOPs; `scaling fit` fits a parabola in log N per budget.

  scaling sweep --config configs/sweeps/isoflop.py --backend local --root sweeps/isoflop
"""

from configs.sweeps._common import CPU_RUN, load_config_file
from scaling.launch.sweep import concat

RUNGS = ['nano', '2m', '5m', '10m', '20m']
BUDGETS = [2e12, 6e12, 2e13]   # training FLOPs
BATCH = 8


def get_config(arg=None):
  return load_config_file('ladder', arg or 'nano')


def get_sweep(arg=None):
  del arg
  from scaling.model.accounting import flops_per_token
  runs = []
  for c in BUDGETS:
    for rung in RUNGS:
      cfg = load_config_file('ladder', rung)
      tokens = int(c / flops_per_token(cfg.model))
      tokens = max(tokens // (BATCH * cfg.model.seq_len), 1) * BATCH * cfg.model.seq_len
      runs.append({'rung': rung, 'train.tokens': tokens, 'train.batch_size': BATCH,
                   'name': f'isoflop-{c:.0e}', **CPU_RUN})
  return concat(runs)


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '01:00:00'}
