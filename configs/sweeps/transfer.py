"""transfer: does the optimal learning rate transfer across width and depth under μP and CompleteP, in a regime
where width and depth matter? Issue #36, redoing configs/sweeps/lr_transfer.py (docs/results/lr_transfer), whose
referee found 300 steps of 512 Shakespeare tokens, one seed, losses between a unigram and a bigram model, and μP
not improving with width.

  python configs/sweeps/transfer.py                # the plan: every curve, its cost, the estimated hours
  # 1. the pre-check (SP only): does SP's best loss improve with width at this horizon? Read its verdict first
  scaling sweep --config configs/sweeps/transfer.py:precheck --backend local --root sweeps/transfer --max-parallel 2
  scaling sweep collect --root sweeps/transfer && scaling report --root sweeps/transfer
  # 2. the study (the pre-check's runs are part of it and are not trained again: same root, same configs)
  scaling sweep --config configs/sweeps/transfer.py --backend local --root sweeps/transfer --max-parallel 2
  # 3. set HORIZON_LR below to the report's transferred lr, then the horizon arm (also in the whole study then)
  scaling sweep --config configs/sweeps/transfer.py:horizon --backend local --root sweeps/transfer --max-parallel 2

Arms (`transfer.py:ARM`; no argument: all of them, pre-check first, then cheap curves first):

* **precheck** (SP only): SP at widths PRECHECK_WIDTHS (32, 128, 256: the whole 8x and its top doubling, where a
  saturating width would show first), depth 2, every lr of its grid. The rule (scaling/analysis/transfer_report.py
  `precheck`): SP's best observed loss drops at every step up these widths by more than the one-sided 95% noise
  margin of a difference, 1.645 sqrt(2) sigma (sigma: the centre seeds' pooled sd once they exist, else
  PRIOR_SIGMA_REL x the loss, the seed study's measured run-to-run sd of 0.455%: ~0.037 nats at loss 3.5). Pass:
  go on. Fail or not decided: the horizon is too short for width to matter; lengthen STEPS before the study.
* **width**: WIDTHS 32, 64, 128, 256 (8x) at depth WIDTH_ARM_DEPTH = 2, x {sp, mup, completep}, N_LRS = 6 lrs;
  the centre width CENTRE_WIDTH = 64 trains a second seed (train.seed 1: its own data order and init) of every lr.
* **depth**: DEPTHS 2, 4, 8 (4x) at width DEPTH_ARM_WIDTH = 64, x {sp, mup, completep}, 6 lrs; the centre depth
  CENTRE_DEPTH = 4 trains a second seed of every lr. Its depth-2 curves are the width arm's width-64 curves.
* **horizon**: the transferred lr (HORIZON_LR: the base shape's optimum read by the report, rounded to the lr
  ladder) and its neighbours 0.5x and 2x, at HORIZON_MULT = 4x the steps, at width HORIZON_WIDTH = 128 (4x the
  base width) under completep and mup: is the transferred lr still optimal? Until HORIZON_LR is set, `:horizon`
  refuses and the whole study leaves it out.
* **quick**: a smoke version (widths 32 and 64, the 3 middle lrs, 20 steps, every parametrization).

The shape family: head dim HEAD_DIM = 16 (heads = width / 16, as many KV heads: μP's attention factor is 1 at every
width), SwiGLU with d_ff = FF_RATIO x d_model (3: the MLP's width grows exactly with m), untied head (μP's readout),
RMSNorm, RoPE, context 256. The base shape is (BASE_WIDTH, BASE_DEPTH) = (32, 2), the smallest width and depth: there
m = d = 1 and sp, mup and completep are the same model bit for bit (scaling/model/parametrization.py), so the width
arm's width-32 curves of the three parametrizations should agree to every digit (a check). Every other shape is m =
width / 32, d = depth / 2 from it. The lr of a curve is a rung of the ladder 1.25e-3 x 2^k (2x apart, one ladder for
every curve, so curves share lrs), the N_LRS rungs centred on the curve's prior optimum: PRIOR_LR = 7.24e-3 at the
base (v1's law, which the IsoFLOP study's lr check confirmed within 2x at width 64 and 1,655 steps of this batch and
corpus: docs/results/isoflop_cpu lrcheck), times (32 / width)^0.8 for SP (v1's SP width law) and 1 for mup and
completep (the claim under test). 6 rungs span 32x, so a prior off by 2x still brackets the optimum.

Every run: prose corpus at BPE-1024 (character_coverage 0.9995; 59.8M training tokens, richer than Shakespeare's
1.6M), batch 8 x 256 = 2,048 tokens, STEPS = 1,500 AdamW steps (3.1M tokens, 5x the old study's steps and 20x its
tokens; the IsoFLOP runs at this batch and corpus reached 3.5-3.7 nats by ~1,650 steps, 0.8-1.2 nats under the old
study's, and wider was better there at a tuned lr: width 64 3.71, width 128 3.47), warmup STEPS / 10, cosine to 0.1
lr, b2 0.95, weight decay 0.1, clip 1.0; train.seed 0 (data order and init) unless a second seed; compared by the
final eval/loss on the same 24 validation batches. Every run reads under one epoch (the horizon's 12.3M tokens are
0.21 of the training split).

Packing: the lrs of one curve (one shape, parametrization and seed) differ only in train.lr, a packable field
(scaling/config/pack.py), so `scaling sweep` trains them as members of `scaling train-packed` processes, in groups
of at most PACK_MAX_MEMBERS = 3 (get_resources): a curve is two processes, and --max-parallel 2 runs them together.
On this 2-core machine a packed process uses about one core and packing saves each run's fixed start/compile/eval
(~25-40 s), not step time (BENCHMARKS.md, "Packed members against separate runs": 8 members at d_model 128 ran at
0.74x one run's aggregate rate; two packs of 4 at once matched two single runs at d_model 64), hence groups of 3 and
two at once.

Wall time (`cost`): per process, RUN_OVERHEAD_S + its members' tokens / (tokens_per_s x PACK_EFFICIENCY), where
tokens_per_s is isoflop_v2's throughput model by FLOPs per token (fitted to the v1 runs on this machine kind,
conservative: it gives 26k tokens/s at width 128 where v1 measured 34k) and PACK_EFFICIENCY is 1 up to 2e6 FLOPs per
token and 0.74 above (the bench's d_model 128); with --max-parallel 2 divided by TWO_AT_ONCE = 1.15 (two single runs
at once made 1.09x one's rate at d_model 256 and 1.2x at 128, where most of this study's time goes). The plan
(2026-12-08, `python configs/sweeps/transfer.py`): 24 curves x 6 lrs at 1,500 steps and 2 horizon curves x 3 lrs at
6,000 steps (priced at the prior's rung until HORIZON_LR is set), 150 runs in 50 packed processes, 1.77e15 FLOPs:
estimated 7.36 h one process at a time, 6.40 h with --max-parallel 2; of which the pre-check 1.21 h / 1.05 h and the
horizon 1.10 h / 0.96 h. Measured throughput on a shared machine varies +-30%; the plan prints every curve's share.
The model assumes the cores are not shared with another study: a smoke run of the quick arm's completep width-64 pack
(3 members, 20 steps; 2026-12-08, load ~11 from another sweep) made 4.2k tokens/s together, 15x under the model's
62k, and compiled in 60 s. Run the study on a quiet machine, or expect that factor.
"""

import functools
import json
import math
import sys

if __name__ == '__main__' and not __package__:   # `python configs/sweeps/transfer.py` from anywhere
  import os as _os
  import sys as _sys
  _sys.path.insert(0, _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))))

from configs.sweeps._common import CPU_RUN, load_config_file, resolved

NAME = 'transfer'
PARAMETRIZATIONS = ('sp', 'mup', 'completep')
BASE_WIDTH, BASE_DEPTH = 32, 2            # m = d = 1: every parametrization is the same model
WIDTHS = (32, 64, 128, 256)               # the width arm: 8x
WIDTH_ARM_DEPTH = 2
DEPTHS = (2, 4, 8)                        # the depth arm: 4x
DEPTH_ARM_WIDTH = 64
CENTRE_WIDTH, CENTRE_DEPTH = 64, 4        # the shapes with a second seed (every lr)
SEEDS = (0, 1)
PRECHECK_WIDTHS = (32, 128, 256)
PRIOR_SIGMA_REL = 0.00455                 # run-to-run sd of log loss, the seed study (docs/results/batch/README.md)
HEAD_DIM, FF_RATIO = 16, 3
BATCH, SEQ_LEN = 8, 256
STEPS = 1500
WARMUP_FRACTION = 0.1
N_LRS = 6
LADDER_LR = 1.25e-3                       # the lr ladder: LADDER_LR x 2^k
PRIOR_LR, SP_WIDTH_EXP = 7.24e-3, -0.8
HORIZON_MULT, HORIZON_WIDTH, HORIZON_DEPTH = 4, 128, 2
HORIZON_PARAMETRIZATIONS = ('completep', 'mup')
HORIZON_ARMS = (0.5, 1.0, 2.0)
HORIZON_LR = None                         # set from the report's transferred lr (module docstring, step 3)
VOCAB, COVERAGE, CORPUS = 1024, 0.9995, 'prose'
TRAIN_TOKENS = 59.76e6                    # the prose training split at BPE-1024 (isoflop_v2: measured)
QUICK_STEPS, QUICK_WIDTHS = 20, (32, 64)
PACK_MAX_MEMBERS = 3
RUN_OVERHEAD_S = 40.0                     # start, compile, final eval, checkpoint: per process
PACK_EFFICIENCY, PACK_EFFICIENCY_FPT = 0.74, 2e6
TWO_AT_ONCE = 1.15
FLOP_RATE, PER_TOKEN_S = 1.1e11, 5e-6     # isoflop_v2's throughput model (tokens_per_s below)


def get_config(arg=None):
  del arg
  return load_config_file('default')


def shape(width: int, depth: int, parametrization: str) -> dict:
  heads = width // HEAD_DIM
  return {'model.d_model': width, 'model.num_layers': depth, 'model.num_heads': heads, 'model.num_kv_heads': heads,
          'model.head_dim': HEAD_DIM, 'model.d_ff': FF_RATIO * width, 'model.tied_embeddings': False,
          'model.parametrization': parametrization, 'model.mup_base_width': BASE_WIDTH,
          'model.mup_base_depth': BASE_DEPTH, 'model.mup_base_head_dim': HEAD_DIM}


def _data() -> dict:
  return {'data.corpus': CORPUS, 'data.vocab_size': VOCAB, 'data.character_coverage': COVERAGE}


def prior_lr(parametrization: str, width: int) -> float:
  return PRIOR_LR * ((width / BASE_WIDTH) ** SP_WIDTH_EXP if parametrization == 'sp' else 1.0)


def rung(k: int) -> float:
  return LADDER_LR * 2.0 ** k


def lr_grid(parametrization: str, width: int, n: int = N_LRS) -> list[float]:
  """The n ladder rungs whose log-middle is nearest the prior optimum."""
  x = math.log2(prior_lr(parametrization, width) / LADDER_LR)
  first = round(x - (n - 1) / 2)
  return [rung(k) for k in range(first, first + n)]


def nearest_rung(lr: float) -> float:
  return rung(round(math.log2(lr / LADDER_LR)))


def _base(steps: int, name: str) -> dict:
  return {**CPU_RUN, **_data(), 'name': name, 'model.seq_len': SEQ_LEN, 'train.batch_size': BATCH,
          'train.steps': steps, 'train.warmup_steps': max(int(steps * WARMUP_FRACTION), 1), 'train.schedule': 'cosine',
          'sample.max_new_tokens': 0, 'train.eval_sets.prose': ''}   # the training corpus's validation split only


def curve(par: str, width: int, depth: int, *, seed: int = 0, steps: int = STEPS, lrs=None, name: str = NAME,
          extra: dict | None = None) -> list[dict]:
  """The runs of one loss-vs-lr curve: one shape, parametrization and seed (the members of packed processes)."""
  lrs = lr_grid(par, width) if lrs is None else lrs
  return [{**_base(steps, name), **shape(width, depth, par), 'train.seed': seed, 'train.lr': lr, **(extra or {})}
          for lr in lrs]


def precheck_runs() -> list[dict]:
  return [r for w in PRECHECK_WIDTHS for r in curve('sp', w, WIDTH_ARM_DEPTH)]


def width_runs() -> list[dict]:
  out = [r for w in WIDTHS for p in PARAMETRIZATIONS for r in curve(p, w, WIDTH_ARM_DEPTH)]
  return out + [r for p in PARAMETRIZATIONS for r in curve(p, CENTRE_WIDTH, WIDTH_ARM_DEPTH, seed=SEEDS[1])]


def depth_runs() -> list[dict]:
  out = [r for d in DEPTHS for p in PARAMETRIZATIONS for r in curve(p, DEPTH_ARM_WIDTH, d)]
  return out + [r for p in PARAMETRIZATIONS for r in curve(p, DEPTH_ARM_WIDTH, CENTRE_DEPTH, seed=SEEDS[1])]


def horizon_runs(lr: float | None = None) -> list[dict]:
  lr = HORIZON_LR if lr is None else lr
  if lr is None:
    raise ValueError('transfer: HORIZON_LR is not set: run the width arm, `scaling report --root sweeps/transfer`, '
                     "and set HORIZON_LR in configs/sweeps/transfer.py to the report's transferred lr")
  centre = nearest_rung(lr)
  lrs = [centre * a for a in HORIZON_ARMS]
  return [r for p in HORIZON_PARAMETRIZATIONS
          for r in curve(p, HORIZON_WIDTH, HORIZON_DEPTH, steps=HORIZON_MULT * STEPS, lrs=lrs, name=f'{NAME}-horizon')]


def quick_runs() -> list[dict]:
  extra = {'train.warmup_steps': 2, 'train.log_every': 5, 'train.eval_batches': 2}
  return [r for w in QUICK_WIDTHS for p in PARAMETRIZATIONS
          for r in curve(p, w, WIDTH_ARM_DEPTH, steps=QUICK_STEPS, lrs=lr_grid(p, w)[2:5], name=f'{NAME}-quick',
                         extra=extra)]


def _key(run: dict) -> str:
  return json.dumps(run, sort_keys=True)


def _curve_key(run: dict) -> tuple:
  """The fields a curve's runs share (everything but the lr): one group of packed members."""
  return tuple(sorted((k, json.dumps(v)) for k, v in run.items() if k != 'train.lr'))


def ordered(runs: list[dict]) -> list[dict]:
  """Without duplicates (the depth arm's depth-2 curves are the width arm's), each curve's runs together, the curves
  cheapest first (the lrs of a curve in ladder order)."""
  seen, out = set(), []
  for r in runs:
    if _key(r) not in seen:
      seen.add(_key(r))
      out.append(r)
  curves: dict = {}
  for r in out:
    curves.setdefault(_curve_key(r), []).append(r)
  groups = sorted(curves.values(), key=lambda c: (_curve_seconds(c), c[0]['train.seed']))
  return [r for c in groups for r in sorted(c, key=lambda r: r['train.lr'])]


def get_sweep(arg=None):
  arms = {'precheck': precheck_runs, 'width': width_runs, 'depth': depth_runs, 'horizon': horizon_runs,
          'quick': quick_runs}
  if arg in (None, ''):
    main = ordered(width_runs() + depth_runs())
    pre = precheck_runs()
    keys = {_key(r) for r in pre}
    rest = [r for r in main if _key(r) not in keys]
    return ordered(pre) + rest + (ordered(horizon_runs()) if HORIZON_LR is not None else [])
  if arg not in arms:
    raise ValueError(f'transfer: unknown arm {arg!r}; use none or one of {", ".join(arms)}')
  return ordered(arms[arg]())


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '02:00:00',
          'pack_max_members': PACK_MAX_MEMBERS}


# ------------------------------------------------------------------------------------------ the plan's arithmetic


@functools.lru_cache(maxsize=None)
def flops_per_token(width: int, depth: int) -> float:
  from scaling.config.load import fill_vocab
  from scaling.model.accounting import flops_per_token as fpt
  cfg = fill_vocab(resolved(get_config(), {**shape(width, depth, 'sp'), **_data(), 'model.seq_len': SEQ_LEN}))
  return float(fpt(cfg.model))


def tokens_per_s(fpt: float) -> float:
  return 1.0 / (PER_TOKEN_S + fpt / FLOP_RATE)


def process_seconds(fpt: float, steps: int, members: int) -> float:
  """One `scaling train`/`train-packed` process of `members` runs of `steps` steps."""
  eff = PACK_EFFICIENCY if members > 1 and fpt > PACK_EFFICIENCY_FPT else 1.0
  return RUN_OVERHEAD_S + members * steps * BATCH * SEQ_LEN / (tokens_per_s(fpt) * eff)


def _split(n: int) -> list[int]:
  """Members per process of a curve of n runs: groups of at most PACK_MAX_MEMBERS in order."""
  return [min(PACK_MAX_MEMBERS, n - i) for i in range(0, n, PACK_MAX_MEMBERS)]


def _curve_seconds(runs: list[dict]) -> float:
  r = runs[0]
  fpt = flops_per_token(r['model.d_model'], r['model.num_layers'])
  return sum(process_seconds(fpt, r['train.steps'], k) for k in _split(len(runs)))


def cost(runs: list[dict]) -> dict:
  """Tokens, FLOPs, processes and estimated wall (s) of a list of runs, its curves packed as `scaling sweep` does."""
  curves: dict = {}
  for r in runs:
    curves.setdefault(_curve_key(r), []).append(r)
  tokens = flops = wall = 0.0
  procs = 0
  for c in curves.values():
    r = c[0]
    fpt = flops_per_token(r['model.d_model'], r['model.num_layers'])
    tokens += len(c) * r['train.steps'] * BATCH * SEQ_LEN
    flops += len(c) * r['train.steps'] * BATCH * SEQ_LEN * fpt
    wall += _curve_seconds(c)
    procs += len(_split(len(c)))
  return {'runs': len(runs), 'curves': len(curves), 'processes': procs, 'tokens': tokens, 'flops': flops,
          'wall_s': wall, 'wall_parallel_s': wall / TWO_AT_ONCE}


def main(arg=None):
  runs = get_sweep(arg) if arg not in (None, '') else get_sweep()
  if arg in (None, '') and HORIZON_LR is None:
    runs = runs + ordered(horizon_runs(PRIOR_LR))
    print(f'(HORIZON_LR is not set: the horizon arm is priced at the prior {nearest_rung(PRIOR_LR):.3g})')
  curves: dict = {}
  for r in runs:
    curves.setdefault(_curve_key(r), []).append(r)
  print('name               par        width depth seed  steps   FLOPs/tok  tokens/s  lrs                          '
        'est. s')
  for c in curves.values():
    r = c[0]
    fpt = flops_per_token(r['model.d_model'], r['model.num_layers'])
    lrs = ' '.join(f'{x["train.lr"]:.3g}' for x in c)
    print(f'{r["name"]:18s} {r["model.parametrization"]:10s} {r["model.d_model"]:5d} {r["model.num_layers"]:5d} '
          f'{r["train.seed"]:4d} {r["train.steps"]:6d}  {fpt:9.3g}  {tokens_per_s(fpt):8.0f}  {lrs:28s} '
          f'{_curve_seconds(c):6.0f}')
  most = max(r['train.steps'] for r in runs) * BATCH * SEQ_LEN
  print(f'most tokens in one run: {most:.3g} = {most / TRAIN_TOKENS:.2f} epochs of the training split')
  parts = [('all', runs)]
  if arg in (None, ''):
    pre = {_key(r) for r in precheck_runs()}
    parts += [('precheck', [r for r in runs if _key(r) in pre]),
              ('horizon', [r for r in runs if r['name'] == f'{NAME}-horizon'])]
  for label, rs in parts:
    c = cost(rs)
    print(f'{label}: {c["runs"]} runs, {c["curves"]} curves, {c["processes"]} processes, {c["tokens"]:.3g} tokens, '
          f'{c["flops"]:.3g} FLOPs; estimated {c["wall_s"] / 3600:.2f} h one process at a time, '
          f'{c["wall_parallel_s"] / 3600:.2f} h with --max-parallel 2')


if __name__ == '__main__':
  main(*sys.argv[1:])
