"""cbs: the branches of a critical-batch measurement planned by `scaling cbs plan` (scaling/analysis/cbs.py).

  scaling cbs plan --parent WORKDIR --out plan.json
  scaling sweep --config configs/sweeps/cbs.py:plan.json --backend local --root sweeps/cbs   # resumable
  scaling cbs report --root sweeps/cbs

The argument is the plan's path: the base config is the parent's own (config.json, kept in the plan), and every
row a branch (train.init_from='PARENT:STEP', train.batch_schedule='STEP:kB', a fixed window of tokens).
"""

import json
import pathlib


def _plan(arg) -> dict:
  if not arg:
    raise ValueError("configs/sweeps/cbs.py needs the plan: --config configs/sweeps/cbs.py:plan.json "
                     "(`scaling cbs plan` writes it)")
  return json.loads(pathlib.Path(arg).read_text())


def get_config(arg=None):
  import ml_collections
  return ml_collections.ConfigDict(_plan(arg)['config'])


def get_sweep(arg=None):
  return [{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()} for r in _plan(arg)['rows']]
