"""optimizers: Muon against AdamW at 4 sizes over 10x in N (issue #36): each optimizer's learning rate tuned at every
size, AdamW's loss against compute from cooldown branches, and Muon's compute multiplier over AdamW per size.

  python configs/sweeps/optimizers.py                  # the plan: sizes, tokens, LR grids, runs, FLOPs, hours
  python configs/sweeps/optimizers.py quick            # the smoke arm's plan (also: steptime)
  scaling sweep --config configs/sweeps/optimizers.py:steptime --backend local --root sweeps/optimizers_steptime \
      --max-parallel 2                                  # the step-time ratio (minutes; no packing)
  scaling sweep --config configs/sweeps/optimizers.py --backend local --root sweeps/optimizers --max-parallel 2
  scaling sweep collect --root sweeps/optimizers && scaling sweep collect --root sweeps/optimizers_steptime
  python -m scaling.analysis.optimizers --root sweeps/optimizers --steptime sweeps/optimizers_steptime \
      --out docs/results/optimizers

The question (Wen et al. 2025, "Fantastic Pretraining Optimizers and Where to Find Them", Marin): with each
optimizer tuned, how much less compute does Muon need than AdamW to reach a loss, and does that multiplier shrink
with scale (theirs: ~1.4x at 0.1B, ~1.1x at 1.2B)? The multiplier of a size is M = C_AdamW(L_Muon) / C_Muon: the
training compute AdamW needs to reach the loss Muon reaches at the compute-optimal budget. Measuring it needs
AdamW's loss as a function of compute at each size, not one point; hence the cooldown branches below.

The design
----------
* **Sizes**: one shape family, isoflop_v2's (configs/sweeps/isoflop_v2.py: 3 layers, head dim 16, full multi-head
  attention, SwiGLU d_ff = 8/3 d, tied embeddings, prose at BPE-1024, batch 8 x 256 = 2,048 tokens per step), at
  WIDTHS = 32, 48, 80, 128: N = 70.6k, 132k, 315k, 725k total (10.3x; non-embedding 37.9k-594k, 15.7x), spaced
  1.9-2.4x. A 5th size is out of reach: width 160 (1.08M) alone would add ~11 h at one process at a time, more
  than the four together. This is 150x-1,700x below Wen et al.'s 0.1B-1.2B: a trend here is a trend at these
  sizes.
* **Tokens**: TOKENS_PER_PARAM = 20 x total N at the reference budget (1.0x). v1's fitted IsoFLOP law on this corpus
  (N_opt = 0.0211 C^0.551, docs/results/isoflop_cpu) puts the compute-optimal D/N at these sizes at 17.4 (width 32)
  down to 13.5 (width 128) (printed per size), so 20 is within 1.5x of compute-optimal at all four, and AdamW's
  branches (10-40 tokens/param) cover the optimum; one ratio for every size keeps the multipliers comparable
  (and 20 is the 1x-Chinchilla ratio Wen et al. start from). The longest run (AdamW's 2.0x branch at width 128:
  29M tokens) stays under one epoch of the corpus (isoflop_v2.MAX_TOKENS: 85% of the training split).
* **AdamW's loss against compute**: every AdamW arm is one constant-lr parent with WSD cooldown branches (1-sqrt
  decay over the last 20% to 0.1 lr, as isoflop_v2) at ADAMW_FRACTIONS = 0.5, 0.7, 1.0, 1.4, 2.0 of the reference
  token count: a curve over 4x in compute at sqrt(2) steps, which brackets Muon's reference loss when M lies in
  [0.5, 2]; outside, the analysis reports M as a bound. Muon's arms branch at MUON_FRACTIONS = 0.5 and 1.0 (1.0 is
  the reference; 0.5 gives a second multiplier per size at half the compute, for the same price as a few
  percent of the parent).
* **Learning rates, tuned at every size**: AdamW at 5 arms, ADAMW_ARMS = 2^(k/2), k = -2..2 (0.5x-2x) times the
  rule isoflop_v2 uses: v1's width law 7.24e-3 (d/32)^-0.80 times the horizon prior (T/1000)^-0.125, T the
  reference's steps (docs/results/lr_transfer; the rule has been right within 2x on this corpus). Muon at 7 arms,
  MUON_ARMS = 2^(k/2), k = -3..3 (0.35x-2.8x), times its own centre MUON_LR (times the same horizon prior) with
  no width factor: Muon's update is lr x sqrt(max(1, fan_out/fan_in)) x an orthogonal matrix (scaling/train/muon.py),
  whose spectral norm does not grow with width (Yang, Simon & Bernstein 2023), so its lr should transfer across
  widths; the analysis checks that (the fitted width exponent of each optimizer's lr optimum, with an interval).
  MUON_LR = 0.01 sits between two priors: Jordan's 0.02 (tuned at ~0.5M-token batches) and the lr that matches
  AdamW's update RMS here (0.2 sqrt(d) lr_AdamW, Liu et al. 2025: 4e-3 at width 128, 9e-3 at 32); the grid
  (2.7e-3-2.8e-2 at width 128) holds both. Muon's grid is wider than AdamW's because nothing in this repository
  has measured Muon's optimum yet; its arms cost 1.1x the reference each against AdamW's 2.7x. A best arm at a
  grid end is flagged by the analysis; add the arm beyond it in EXTRA_ARMS and re-submit (only new runs train).
* **Muon's AdamW part** (embeddings, the tied head, the norms): its lr is fixed to the AdamW rule's value at
  that size (the AdamW grid's centre, `adamw_centre`) through ADAM_SIDE_LR_KEY, so the Muon arms vary the
  hidden matrices' lr alone and the embedding lr is never a Muon-scale one. The field is per size, equal in all
  Muon arms of a size, so they still pack. **The engine does not have such a field yet** (train.lr drives both
  parts, scaling/train/optim.py); until it does, `get_sweep()` refuses the study (MUON_ADAM_SIDE = 'rule') and the
  plan says so. MUON_ADAM_SIDE = 'shared' runs it on the engine as it is (one lr for both parts: a different
  question, since the embeddings then take Muon-scale rates that grow off AdamW's optimum with width).
* **Noise floor**: at each size and optimizer, the centre arm is trained again with train.seed = 1 (data order and
  init; rows named like the grid's, told apart by train.seed) with branches at SEED_FRACTIONS = 0.5, 1.0: 16
  seed pairs in all, pooled per optimizer by the analysis. This is the unpaired seed spread: AdamW and Muon at
  seed 0 share data order and init, so it overstates the noise of their difference (a conservative interval).
* **Fixed**: weight decay 0.1 on both (decoupled; Muon's matrices decay at lr x wd), b1 0.9, b2 B2 = 0.95 (the
  default; set it to isoflop_v2's BETA2 pre-check's winner before launching if that has run: both studies use one
  batch), grad clip 1.0 before both, Muon's momentum 0.95 (Nesterov) and 5 Newton-Schulz steps. Wen et al. tuned
  weight decay too; here it is one value (a limitation the report states).
* **Packing** (scaling/config/pack.py): train.optimizer is not packable (a different optimizer state), so each
  optimizer's arms of a size pack by themselves: one parent process and one process per fork step, per
  optimizer; the seed-1 runs (train.seed is not packable) train alone.
* **Step time** (`:steptime`, its own root: not fit points): at every size, STEPTIME_REPEATS pairs of from-scratch
  runs of STEPTIME_STEPS steps, AdamW and Muon of one shape, adjacent in the sweep so that with --max-parallel 2
  each pair trains side by side under the same load (no packing); the analysis takes each run's median tokens/s.
  The FLOP model's prediction (model + Newton-Schulz FLOPs over model FLOPs) is printed beside it.
* **`:quick`**: a smoke version of the whole pipeline (widths 32 and 48, 100 reference steps, 3 lr arms per
  optimizer, AdamW branches at 0.5/1/2x, Muon's at 0.5/1x, the seed pair: 54 runs in 26 processes, ~10-15 minutes
  at --max-parallel 2), with the same run names as the study so the analysis reads it. It runs on the engine as
  it is (Muon's AdamW part at train.lr until ADAM_SIDE_LR_KEY exists).

Wall time is estimated from isoflop_v2's throughput model (tokens_per_s: fitted to v1's runs on this machine kind),
with the Newton-Schulz FLOPs added to Muon's FLOPs per token; `python configs/sweeps/optimizers.py` prints it.
The plan (2026-12-07): 4 sizes, 228 runs (57 per size: AdamW 5 arms x (parent + 5 branches), Muon 7 arms x
(parent + 2), and the seed-1 centre runs 2 x (parent + 2)) in 60 processes, 2.1e15 FLOPs trained (80% of it at
width 128), estimated 7.1 h at one process at a time, ~4.5 h at --max-parallel 2 (the longest parent-to-branch
chain, width 128's packed AdamW arms, is 2.0 h at one process's rate); the step-time arm 24 runs, ~0.4 h at one
process at a time (~0.25 h at two).
"""

import functools
import sys

if __name__ == '__main__' and not __package__:   # `python configs/sweeps/optimizers.py` from anywhere
  import os as _os
  import sys as _sys
  _sys.path.insert(0, _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))))

from configs.sweeps import isoflop_v2 as v2
from configs.sweeps._common import CPU_RUN, resolved

NAME = 'optimizers'
WIDTHS = (32, 48, 80, 128)
QUICK_WIDTHS = (32, 48)
QUICK_ARMS, QUICK_ADAMW_FRACTIONS, QUICK_STEPS = (0.5, 1.0, 2.0), (0.5, 1.0, 2.0), 100
TOKENS_PER_PARAM = 20
BATCH, SEQ_LEN = v2.BATCH, v2.SEQ_LEN
TOKENS_PER_STEP = BATCH * SEQ_LEN
ADAMW_FRACTIONS = (0.5, 0.7, 1.0, 1.4, 2.0)    # AdamW's branches, in units of the reference tokens
MUON_FRACTIONS = (0.5, 1.0)
SEED_FRACTIONS = (0.5, 1.0)
ADAMW_ARMS = tuple(float(f'{2 ** (k / 2):.3g}') for k in range(-2, 3))   # 0.5 .. 2
MUON_ARMS = tuple(float(f'{2 ** (k / 2):.3g}') for k in range(-3, 4))    # 0.354 .. 2.83
EXTRA_ARMS: dict = {}                           # (optimizer, width) -> extra multipliers, after an edge optimum
MUON_LR = 0.01                                  # Muon's centre at the horizon reference (module docstring)
ADAM_SIDE_LR_KEY = 'train.muon_adam_lr'         # the AdamW part's peak lr under optimizer='muon' (0: train.lr)
MUON_ADAM_SIDE = 'rule'                         # 'rule': ADAM_SIDE_LR_KEY = adamw_centre; 'shared': train.lr
SEED = 1                                        # the noise-floor seed (the grid is seed 0)
B2 = 0.95
DECAY_FRACTION, DECAY_SHAPE, MIN_LR_RATIO = v2.DECAY_FRACTION, v2.DECAY_SHAPE, v2.MIN_LR_RATIO
MIN_STEPS = 250                                 # the shortest branch (0.5x at width 32) trains more than this
STEPTIME_STEPS, STEPTIME_REPEATS = 300, 3
V1_KN, V1_A = v2.V1_KN, v2.V1_A
RUN_OVERHEAD_S, TWO_AT_ONCE = v2.RUN_OVERHEAD_S, v2.TWO_AT_ONCE
OPTIMIZERS = ('adamw', 'muon')


def get_config(arg=None):
  return v2.get_config(arg)


def adam_side_supported() -> bool:
  """Whether the engine's config has ADAM_SIDE_LR_KEY (module docstring: Muon's AdamW part)."""
  section, field = ADAM_SIDE_LR_KEY.split('.')
  return field in get_config()[section]


@functools.lru_cache(maxsize=None)
def size(width: int) -> dict:
  """One width's arithmetic: N, FLOPs per token (model; Muon's Newton-Schulz per token), reference tokens."""
  from scaling.config.load import fill_vocab
  from scaling.model.accounting import count_params, flops_per_token, optimizer_flops_per_step
  m = fill_vocab(resolved(get_config(), {**v2.shape(width), **v2._data()})).model
  c = count_params(m)
  n, fpt = float(c['total']), float(flops_per_token(m))
  steps = int(round(TOKENS_PER_PARAM * n / TOKENS_PER_STEP))
  c_opt = (n / V1_KN) ** (1 / V1_A)   # v1's law inverted: the budget whose optimum is this N
  return {'width': width, 'N': n, 'N_ne': float(c['non_embedding']), 'flops_per_token': fpt,
          'ns_per_token': optimizer_flops_per_step(m, 'muon') / TOKENS_PER_STEP, 'steps': steps,
          'tokens': steps * TOKENS_PER_STEP, 'v1_tokens_per_param': c_opt / fpt / n}


def steps_at(s: dict, fraction: float) -> int:
  return int(round(fraction * s['steps']))


def warmup(s: dict) -> int:
  """A tenth of the shortest branch, within 10..100 (isoflop_v2's rule)."""
  return max(10, min(100, steps_at(s, min(ADAMW_FRACTIONS + MUON_FRACTIONS)) // 10))


def horizon_prior(s: dict) -> float:
  return (s['steps'] / v2.LR_HORIZON_REF) ** v2.LR_HORIZON_EXP


def adamw_centre(s: dict) -> float:
  """The AdamW rule at this size: v1's width law times the horizon prior at the reference steps."""
  return v2.centre_lr(s['width'], s['steps'])


def muon_centre(s: dict) -> float:
  return float(f'{MUON_LR * horizon_prior(s):.3g}')


def centre(opt: str, s: dict) -> float:
  return adamw_centre(s) if opt == 'adamw' else muon_centre(s)


def arms(opt: str, width: int) -> tuple:
  base = ADAMW_ARMS if opt == 'adamw' else MUON_ARMS
  return tuple(sorted(set(base) | set(EXTRA_ARMS.get((opt, width), ()))))


def fractions(opt: str) -> tuple:
  return ADAMW_FRACTIONS if opt == 'adamw' else MUON_FRACTIONS


def lr_of(opt: str, s: dict, mult: float) -> float:
  return float(f'{centre(opt, s) * mult:.3g}')


def tokens_per_s(opt: str, s: dict) -> float:
  """isoflop_v2's throughput model, Muon's FLOPs per token including its Newton-Schulz matmuls."""
  return v2.tokens_per_s(s['flops_per_token'] + (s['ns_per_token'] if opt == 'muon' else 0.0))


def check(s: dict) -> None:
  """Every run long enough and under one epoch (ValueError naming the size otherwise)."""
  shortest = steps_at(s, min(ADAMW_FRACTIONS + MUON_FRACTIONS + SEED_FRACTIONS))
  longest = steps_at(s, max(ADAMW_FRACTIONS + MUON_FRACTIONS)) * TOKENS_PER_STEP
  if shortest < MIN_STEPS:
    raise ValueError(f'width {s["width"]}: the shortest branch trains {shortest} steps (< {MIN_STEPS})')
  if longest > v2.MAX_TOKENS:
    raise ValueError(f'width {s["width"]}: the longest branch reads {longest:.3g} tokens (> {v2.MAX_TOKENS:.3g}, '
                     'one epoch with a margin)')


def _base(opt: str, s: dict, quick: bool = False) -> dict:
  out = {**CPU_RUN, **v2.shape(s['width']), **v2._data(), 'train.batch_size': BATCH, 'model.seq_len': SEQ_LEN,
         'train.warmup_steps': 5 if quick else warmup(s), 'train.min_lr_ratio': MIN_LR_RATIO, 'train.b2': B2,
         'train.optimizer': opt}
  if quick:
    out |= {'train.log_every': 5, 'train.eval_batches': 4}
  if opt == 'muon' and MUON_ADAM_SIDE == 'rule' and adam_side_supported():
    out[ADAM_SIDE_LR_KEY] = adamw_centre(s)
  return out


def _group(opt: str, s: dict, lrs: list, fracs: tuple, extra: dict, quick: bool = False) -> list[dict]:
  """One constant-lr parent per lr, with a cooldown branch at each fraction of the reference (names NAME)."""
  from scaling.launch.sweep import branches
  return branches([{**_base(opt, s, quick), **extra, 'train.lr': lr} for lr in lrs],
                  [steps_at(s, f) for f in fracs], decay_fraction=DECAY_FRACTION, decay_shape=DECAY_SHAPE,
                  parent={'name': f'{NAME}-parent'}, branch={'name': NAME})


def size_runs(s: dict, quick: bool = False) -> list[dict]:
  """A size's grid (both optimizers, every arm) and its seed-1 centre runs."""
  out = []
  for opt in OPTIMIZERS:
    mults = QUICK_ARMS if quick else arms(opt, s['width'])
    fracs = QUICK_ADAMW_FRACTIONS if quick and opt == 'adamw' else fractions(opt)
    out += _group(opt, s, [lr_of(opt, s, m) for m in mults], fracs, {}, quick)
  for opt in OPTIMIZERS:
    out += _group(opt, s, [centre(opt, s)], SEED_FRACTIONS, {'train.seed': SEED}, quick)
  return out


def quick_size(width: int) -> dict:
  """The smoke arm's size: the width's shape at QUICK_STEPS reference steps."""
  return {**size(width), 'steps': QUICK_STEPS, 'tokens': QUICK_STEPS * TOKENS_PER_STEP}


def steptime_runs(widths=WIDTHS, steps: int = STEPTIME_STEPS, repeats: int = STEPTIME_REPEATS) -> list[dict]:
  """Per size and repeat an AdamW and a Muon run of `steps` steps, adjacent (the pair's order alternates)."""
  out = []
  for w in sorted(widths, reverse=True):
    s = size(w)
    for r in range(repeats):
      pair = []
      for opt in OPTIMIZERS:
        pair.append({**_base(opt, s), 'name': f'{NAME}-steptime', 'train.lr': centre(opt, s),
                     'train.schedule': 'constant', 'train.steps': steps, 'train.warmup_steps': 10,
                     'train.log_every': 10, 'train.eval_batches': 2, 'train.seed': r})
      out += pair if r % 2 == 0 else pair[::-1]
  return out


def study_sizes() -> list[dict]:
  out = [size(w) for w in WIDTHS]
  for s in out:
    check(s)
  return out


def get_sweep(arg=None):
  if arg == 'quick':
    return [r for w in QUICK_WIDTHS for r in size_runs(quick_size(w), quick=True)]
  if arg == 'steptime':
    return steptime_runs()
  if arg not in (None, ''):
    raise ValueError(f'optimizers: unknown argument {arg!r}; use none, quick or steptime')
  if MUON_ADAM_SIDE == 'rule' and not adam_side_supported():
    raise ValueError(f'optimizers: the engine has no {ADAM_SIDE_LR_KEY} (the lr of Muon\'s AdamW part: embeddings, '
                     'head, norms), so Muon\'s arms would move the embeddings\' lr too. Add the field, or set '
                     "MUON_ADAM_SIDE = 'shared' in configs/sweeps/optimizers.py to run with one lr for both parts")
  # the largest size first: its parents are the longest chains, so they start while the small sizes fill in
  return [r for s in sorted(study_sizes(), key=lambda s: -s['N']) for r in size_runs(s)]


def get_resources(arg=None):
  if arg == 'steptime':
    return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '00:30:00', 'pack_max_members': 1}
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '04:00:00', 'pack_max_members': 8}


def _group_cost(opt: str, s: dict, n_arms: int, fracs: tuple) -> dict:
  """One group of arms (a parent per arm to the last fork, a branch per fraction): tokens, FLOPs, wall, processes.
  Packed arms train one after another on about one core (BENCHMARKS.md): the wall is the members' sum."""
  decays = [max(int(round(DECAY_FRACTION * steps_at(s, f))), 1) for f in fracs]
  last_fork = max(steps_at(s, f) - d for f, d in zip(fracs, decays))
  tps = tokens_per_s(opt, s)
  parent = n_arms * last_fork * TOKENS_PER_STEP
  branch = [n_arms * d * TOKENS_PER_STEP for d in decays]
  tokens = parent + sum(branch)
  chain = parent / tps + max(branch) / tps + 2 * RUN_OVERHEAD_S   # the parent, then its longest branch group
  return {'runs': n_arms * (1 + len(fracs)), 'processes': 1 + len(fracs), 'tokens': tokens,
          'flops': tokens * s['flops_per_token'], 'wall_s': tokens / tps + (1 + len(fracs)) * RUN_OVERHEAD_S,
          'chain_s': chain}


def size_cost(s: dict) -> dict:
  parts = []
  for opt in OPTIMIZERS:
    parts.append(_group_cost(opt, s, len(arms(opt, s['width'])), fractions(opt)))
    parts.append(_group_cost(opt, s, 1, SEED_FRACTIONS))
  out = {k: sum(p[k] for p in parts) for k in ('runs', 'processes', 'tokens', 'flops', 'wall_s')}
  out['chain_s'] = max(p['chain_s'] for p in parts)
  return out


def cost(sizes: list[dict]) -> dict:
  """The study's totals; wall at --max-parallel 2: the sum at TWO_AT_ONCE x one process's rate, or the longest
  chain at half that rate each (two processes share the cores), whichever is longer."""
  per = [size_cost(s) for s in sizes]
  out = {k: sum(p[k] for p in per) for k in ('runs', 'processes', 'tokens', 'flops', 'wall_s')}
  out['chain_s'] = max(p['chain_s'] for p in per)
  out['wall2_s'] = max(out['wall_s'] / TWO_AT_ONCE, out['chain_s'] / (TWO_AT_ONCE / 2))
  return out


def steptime_cost(widths=WIDTHS) -> dict:
  wall = flops = 0.0
  for w in widths:
    s = size(w)
    for opt in OPTIMIZERS:
      tokens = STEPTIME_REPEATS * STEPTIME_STEPS * TOKENS_PER_STEP
      flops += tokens * s['flops_per_token']
      wall += tokens / tokens_per_s(opt, s) + STEPTIME_REPEATS * RUN_OVERHEAD_S
  return {'runs': 2 * STEPTIME_REPEATS * len(widths), 'flops': flops, 'wall_s': wall}


def main(arg=None):
  if arg == 'steptime':
    for r in steptime_runs():
      print(r['model.d_model'], r['train.optimizer'], r['train.seed'], r['train.steps'], r['train.lr'])
    c = steptime_cost()
    print(f'{c["runs"]} runs, {c["flops"]:.3g} FLOPs, estimated {c["wall_s"] / 3600:.2f} h at one process at a time')
    return
  if arg == 'quick':
    rows = get_sweep('quick')
    print(f'quick: {len(rows)} runs (widths {QUICK_WIDTHS}, {QUICK_STEPS} reference steps, lr arms x{QUICK_ARMS}, '
          f'AdamW branches at {QUICK_ADAMW_FRACTIONS}, Muon at {MUON_FRACTIONS}, seed {SEED} at {SEED_FRACTIONS})')
    return
  sizes = study_sizes()
  print('width  N(total)  N(non-emb)  FLOPs/tok  NS/tok  ref tokens  tok/N  v1 D/N  steps(0.5x..2x)  max epochs  '
        'warmup')
  for s in sizes:
    st = ' '.join(str(steps_at(s, f)) for f in ADAMW_FRACTIONS)
    ep = steps_at(s, max(ADAMW_FRACTIONS)) * TOKENS_PER_STEP / ((1 - v2.VAL_FRACTION) * v2.CORPUS_TOKENS)
    print(f'{s["width"]:5d}  {s["N"]:8.3g}  {s["N_ne"]:9.3g}  {s["flops_per_token"]:9.3g}  {s["ns_per_token"]:6.2g}  '
          f'{s["tokens"]:10.3g}  {s["tokens"] / s["N"]:5.1f}  {s["v1_tokens_per_param"]:6.1f}  {st:>16s}  '
          f'{ep:10.2f}  {warmup(s):6d}')
  print(f'sizes span {sizes[-1]["N"] / sizes[0]["N"]:.1f}x in total N, '
        f'{sizes[-1]["N_ne"] / sizes[0]["N_ne"]:.1f}x in non-embedding N')
  for opt in OPTIMIZERS:
    print(f'{opt} lr arms (width: centre; arms):')
    for s in sizes:
      print(f'  {s["width"]:4d}: {centre(opt, s):.3g}; ' +
            ' '.join(f'{lr_of(opt, s, m):.3g}' for m in arms(opt, s['width'])))
  side = ('per size = the AdamW centre: ' + ', '.join(f'{adamw_centre(s):.3g}' for s in sizes)
          if MUON_ADAM_SIDE == 'rule' else 'train.lr (shared)')
  print(f'Muon\'s AdamW part: {side}; engine field {ADAM_SIDE_LR_KEY}: '
        f'{"present" if adam_side_supported() else "MISSING (the study refuses until it exists)"}')
  c = cost(sizes)
  for s in sizes:
    sc = size_cost(s)
    print(f'  width {s["width"]}: {sc["runs"]} runs, {sc["processes"]} processes, {sc["flops"]:.3g} FLOPs, '
          f'{sc["wall_s"] / 3600:.2f} h at one process at a time; Muon/AdamW step time predicted '
          f'{1 + s["ns_per_token"] / s["flops_per_token"]:.2f} (FLOPs), '
          f'{tokens_per_s("adamw", s) / tokens_per_s("muon", s):.2f} (throughput model)')
  print(f'study: {c["runs"]} runs in {c["processes"]} processes; {c["flops"]:.3g} FLOPs trained; estimated '
        f'{c["wall_s"] / 3600:.2f} h at one process at a time, {c["wall2_s"] / 3600:.2f} h with --max-parallel 2 '
        f'(longest chain {c["chain_s"] / 3600:.2f} h)')
  st = steptime_cost()
  print(f'steptime: {st["runs"]} runs of {STEPTIME_STEPS} steps, {st["flops"]:.3g} FLOPs, estimated '
        f'{st["wall_s"] / 3600:.2f} h at one process at a time')


if __name__ == '__main__':
  main(*sys.argv[1:2])
