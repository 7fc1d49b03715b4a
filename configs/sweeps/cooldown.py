"""cooldown: many token budgets from one stable run (WSD cooldown branches) vs separate runs, on CPU.

One model size (~0.55M params: 4 layers, d_model 104, byte tokens, context 64) at four budgets
spanning 8x (BUDGETS steps of 16 x 64 tokens), three arms:

  branch   one stable parent (constant lr after warmup) to the last fork step, checkpointed at every
           fork step; per budget B one WSD decay branch forked at B - d, d = DECAY_FRACTION x B
           (scaling/launch/sweep.py branches): parent + 4 decays
  wsd      a from-scratch WSD run of B steps with the same decay (train.decay_steps = d): by
           construction the run each branch equals (same seed and data order; tests/test_branch.py)
  cosine   a from-scratch cosine run of B steps (to lr x min_lr_ratio)

All arms share lr, warmup, batch, seed and data order. Compared by the final validation loss
(eval/loss over 24 fixed batches); the compute of the branch arm (each parent step counted once)
against the sum of the budgets.

  scaling sweep --config configs/sweeps/cooldown.py --backend local --root sweeps/cooldown
  scaling sweep collect --root sweeps/cooldown && scaling report --root sweeps/cooldown

`cooldown.py:quick` is a small smoke version (budgets 20..160, 1 layer).
"""

from configs.sweeps._common import CPU_RUN, load_config_file
from scaling.launch.sweep import branches, concat

BUDGETS = (150, 300, 600, 1200)
DECAY_FRACTION = 0.2
MODEL = {
    'data.tokenizer': 'byte', 'model.seq_len': 64, 'model.num_layers': 4, 'model.d_model': 104,
    'model.num_heads': 4, 'model.num_kv_heads': 2, 'train.batch_size': 16, 'train.lr': 3e-3,
    'train.min_lr_ratio': 0.1,
}
QUICK = {'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2, 'model.num_kv_heads': 1,
         'model.seq_len': 32, 'train.batch_size': 8}


def get_config(arg=None):
  del arg
  return load_config_file('default')


def _settings(arg) -> tuple[dict, tuple[int, ...]]:
  base = {**CPU_RUN, **MODEL, 'train.warmup_steps': 30}
  if arg == 'quick':
    return {**base, **QUICK, 'train.warmup_steps': 5, 'train.log_every': 5, 'train.eval_batches': 4}, \
        (20, 40, 80, 160)
  return base, BUDGETS


def get_sweep(arg=None):
  base, budgets = _settings(arg)
  arm = branches([base], budgets, decay_fraction=DECAY_FRACTION, parent={'name': 'parent'},
                 branch={'name': 'branch'})
  wsd, cosine = [], []
  for b in budgets:
    d = max(int(round(DECAY_FRACTION * b)), 1)
    wsd.append({**base, 'name': 'wsd', 'train.schedule': 'wsd', 'train.steps': b, 'train.decay_steps': d})
    cosine.append({**base, 'name': 'cosine', 'train.schedule': 'cosine', 'train.steps': b})
  # the cosine arm before the wsd arm, whose longest runs go last: on a loaded CPU they are the ones a
  # deadline cuts (a branch is the from-scratch WSD run of its budget by construction, tests/test_branch.py)
  return concat(arm, cosine, wsd)
