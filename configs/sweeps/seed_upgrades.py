"""seed_upgrades: the seed upgrade guide's five upgrades, measured at equal training compute.

Baseline as the guide describes its starting point: character tokens, LayerNorm, learned
positions, context 64, a GELU MLP, about 50k parameters (2 layers, d_model 48). Then each
upgrade alone, and all together:

  bpe       sentencepiece BPE tokens (vocab 1024) instead of characters
  rmsnorm   RMSNorm instead of LayerNorm
  rope      RoPE instead of learned positions
  context   context 512 instead of 64
  scale10x  a ~10x larger model (4 layers, d_model 112)
  all       all five together

The baseline also runs at 1/4 and 1/2 of the budget, so that `scaling report` can state the
BPE arm's gain as a compute-equivalent factor read off the baseline's bpb-vs-compute law.

Every arm trains for the same FLOPs (train.tokens = BUDGET / flops_per_token), so an
upgrade that costs more per token gets fewer tokens. Compared by validation bits per byte
(fair across tokenizers) and tokens/s; models that can run at twice the training context
are also evaluated there (eval/bpb@2x: the RoPE claim).

  scaling sweep --config configs/sweeps/seed_upgrades.py --backend local --root sweeps/seed_upgrades
  scaling sweep collect --root sweeps/seed_upgrades && scaling report --root sweeps/seed_upgrades
"""

from configs.sweeps._common import CPU_RUN, load_config_file, resolved
from launch.sweep import concat

BUDGET = 3e12   # training FLOPs per arm
BATCH = 16
BASELINE_EXTRA_FRACTIONS = (0.25, 0.5)

BASELINE = {
    'data.tokenizer': 'char', 'model.vocab_size': 96,   # 86 characters in the corpus, padded
    'model.norm': 'layernorm', 'model.position': 'learned', 'model.mlp': 'gelu',
    'model.seq_len': 64, 'model.num_layers': 2, 'model.d_model': 48, 'model.num_heads': 4,
    'model.num_kv_heads': 4, 'model.tied_embeddings': True, 'train.lr': 3e-3,
}
UPGRADES = {
    'bpe': {'data.tokenizer': 'bpe', 'data.vocab_size': 1024, 'model.vocab_size': 1024},
    'rmsnorm': {'model.norm': 'rmsnorm'},
    'rope': {'model.position': 'rope'},
    'context': {'model.seq_len': 512},
    'scale10x': {'model.num_layers': 4, 'model.d_model': 112, 'train.lr': 2e-3},
}


def get_config(arg=None):
  return load_config_file('default', arg)


def arms() -> dict:
  out = {'baseline': dict(BASELINE)}
  for name, up in UPGRADES.items():
    out[name] = {**BASELINE, **up}
  allx = dict(BASELINE)
  for up in UPGRADES.values():
    allx.update(up)
  out['all'] = allx
  return out


def get_sweep(arg=None):
  del arg
  from scaling.accounting import flops_per_token
  runs = []
  plan = [(name, ov, BUDGET) for name, ov in arms().items()]
  # the baseline also at 1/4 and 1/2 the budget: its bpb-vs-compute power law turns the BPE
  # arm's bpb into a compute-equivalent factor (the guide's "10-100x")
  plan += [('baseline', BASELINE, BUDGET * f) for f in BASELINE_EXTRA_FRACTIONS]
  for name, ov, budget in plan:
    cfg = resolved(get_config, ov)
    T = cfg.model.seq_len
    tokens = int(budget / flops_per_token(cfg.model))
    tokens = max(tokens // (BATCH * T), 1) * BATCH * T
    extra = (2 * T,) if cfg.model.position != 'learned' else ()
    steps = tokens // (BATCH * T)
    runs.append({**CPU_RUN, **ov, 'name': name, 'train.batch_size': BATCH, 'train.tokens': tokens,
                 'train.warmup_steps': max(5, min(100, steps // 10)), 'train.final_eval_lengths': extra})
  return concat(runs)


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '00:30:00'}
