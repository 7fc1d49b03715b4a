"""The model ladder: `--config scaling/model/ladder.py:RUNG`.

CPU rungs (vocab 4096 BPE, context 256, tied embeddings) are for scaling
studies on one host; the named rungs from 125m up follow GPT-3 Table 2.1
(12L/768, 24L/1024, 24L/1536, ...) with LLaMA-style blocks (RMSNorm, RoPE,
SwiGLU, grouped-query attention, vocab 32000, untied head, context 2048).
Each named rung's total parameter count (embeddings included, as GPT-3
counts) lies within 5% of its name (tested in tests/test_accounting.py).

Training budgets default to the compute-optimal 20 tokens per parameter
(Chinchilla); batch sizes follow GPT-3 (0.5M tokens at 125m/350m, 1M from
760m, 2M from 3b), learning rates follow GPT-3's table.

`RUNG-mup` (e.g. `scaling/model/ladder.py:125m-mup`) is the same rung under μP
(model.parametrization='mup'): base width MUP_BASE_WIDTH and base head dim
MUP_BASE_HEAD_DIM (the 5m rung's shape, the proxy), and every such rung trains at
the one proxy learning rate MUP_LR instead of its own table entry: the lr (and
init_std) tuned on the proxy is meant to hold at every width (scaling/model/transformer.py
role_multipliers; docs/results/lr_transfer measures how well it does).

TARGETS names each named rung's recommended target: the smallest slice of TARGET_SLICES on which
`scaling plan` found a fitting setting at the rung's batch (`scaling table --targets ladder`;
docs/results/plan/TABLE.md), and PLANNED holds the knobs of that setting that differ from the
defaults set below, applied as the rung's own values so the rung fits its target as configured
(`scaling table --topology auto` checks it). They are knobs that change memory and speed only, never
the math (mesh, remat, microbatches, loss chunk, attention block: FREE in scaling/config/history.py).
"""


# name: (layers, d_model, heads, kv_heads, d_ff (0 = 8/3 d), lr, batch sequences)
CPU_RUNGS = {
    'nano': (2, 128, 4, 2, 512, 3e-3, 16),
    '2m': (3, 192, 4, 2, 0, 3e-3, 16),
    '5m': (5, 256, 4, 2, 768, 2e-3, 16),
    '10m': (5, 384, 6, 3, 0, 2e-3, 16),
    '20m': (6, 512, 8, 4, 0, 1.5e-3, 16),
    '30m': (9, 512, 8, 4, 0, 1.5e-3, 16),
}
BIG_RUNGS = {
    '125m': (12, 768, 12, 4, 0, 6e-4, 256),
    '350m': (24, 1024, 16, 8, 0, 3e-4, 256),
    '760m': (24, 1536, 16, 8, 4352, 2.5e-4, 512),
    '1b': (18, 2048, 16, 8, 0, 2e-4, 512),
    '3b': (32, 2560, 20, 4, 9216, 1.6e-4, 1024),
    '7b': (32, 4096, 32, 32, 11008, 1.2e-4, 1024),
}
RUNGS = {**CPU_RUNGS, **BIG_RUNGS}
# the slices `scaling table --targets ladder` tries, smallest first (Cloud TPU names: v5p-N counts TensorCores)
TARGET_SLICES = ('v5p-8', 'v5p-16', 'v5p-32', 'v5p-64', 'v5p-128')
# rung -> its recommended target (one of TARGET_SLICES; docs/results/plan/TABLE.md). 125m, 350m, 1b: compiled
# (they fit as configured); 760m, 3b, 7b: provisional, from params + Adam per chip, not compiled yet
TARGETS = {'125m': 'v5p-8', '350m': 'v5p-8', '760m': 'v5p-8', '1b': 'v5p-8', '3b': 'v5p-16', '7b': 'v5p-32'}
# rung -> the planned knobs on its target that differ from the big rungs' defaults (remat dots_except_mlp,
# mesh data=1 fsdp=-1, one microbatch, the default loss chunk and attention block)
PLANNED = {
    # `scaling plan` on v5p-8 (docs/results/plan/1b-v5p-8.md): remat dots_except_mlp at one microbatch needs
    # 118.7-165.9 GiB of 95 on any mesh; pure data parallelism (no FSDP all-gathers) at 4 microbatches fits
    # (62.3 GiB) and is the fastest of the 15 candidates compiled (est. 4.16 s/step; remat full at one
    # microbatch 4.41 s, fsdp 4 6.50 s; at 2 microbatches 97.8 GiB: too big)
    '1b': {'mesh.data': -1, 'mesh.fsdp': 1, 'train.microbatches': 4},
}
MUP_SUFFIX = '-mup'
# μP: the proxy every `RUNG-mup` config shares: the 5m rung's d_model and head_dim, and its lr. Re-tune
# MUP_LR by an lr sweep of the proxy (`scaling/model/ladder.py:5m-mup`, train.lr) before a real ladder.
MUP_BASE_WIDTH, MUP_BASE_HEAD_DIM, MUP_LR = 256, 64, 2e-3


def _load_default():
  from scaling.config import default
  return default.get_config()


def get_config(arg: str | None = None):
  rung = arg or 'nano'
  if rung.endswith(MUP_SUFFIX) and rung[:-len(MUP_SUFFIX)] in RUNGS:
    c = get_config(rung[:-len(MUP_SUFFIX)])
    c.model.parametrization = 'mup'
    c.model.mup_base_width, c.model.mup_base_head_dim = MUP_BASE_WIDTH, MUP_BASE_HEAD_DIM
    c.train.lr = MUP_LR
    return c
  if rung not in RUNGS:
    raise ValueError(f'unknown ladder rung {rung!r}; choose one of {", ".join(RUNGS)} '
                     f'(or RUNG{MUP_SUFFIX} for the rung under μP)')
  L, D, H, G, F, lr, batch = RUNGS[rung]
  c = _load_default()
  m = c.model
  m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.d_ff = L, D, H, G, F
  c.train.lr = lr
  c.train.batch_size = batch
  c.train.warmup_steps = 50
  if rung in BIG_RUNGS:
    m.seq_len = 2048
    m.tied_embeddings = False
    m.attention = 'auto'
    m.remat = 'dots_except_mlp'
    m.scan_layers = True
    c.data.vocab_size = 32000
    c.train.warmup_steps = 2000
    c.mesh.data, c.mesh.fsdp = 1, -1
    import copy

    from scaling.config.load import fill_vocab
    from scaling.model.accounting import TOKENS_PER_PARAM, count_params
    sized = fill_vocab(copy.deepcopy(c))    # the model's vocab follows data.vocab_size (filled again at load)
    c.train.tokens = TOKENS_PER_PARAM * count_params(sized.model)['total']   # compute-optimal budget
    for field, value in PLANNED.get(rung, {}).items():   # memory and speed only: not part of the math
      section, key = field.split('.')
      c[section][key] = value
  else:
    c.train.steps = 300
  return c

