"""isoflop_v2: an IsoFLOP study whose exponent the data can identify: one shape family, a learning rate
tuned at every (size, budget) point, a measured noise floor, and a beta2 chosen for this batch.

  python configs/sweeps/isoflop_v2.py                  # the plan: every run, its FLOPs and estimated wall
  python configs/sweeps/isoflop_v2.py beta2            # the beta2 pre-check's plan
  python configs/sweeps/isoflop_v2.py beta2 sweeps/isoflop_v2_beta2/results.jsonl   # its winner, by the rule
  # 1. the beta2 pre-check (its own root: off-optimum runs never enter the fit); then set BETA2 below
  scaling sweep --config configs/sweeps/isoflop_v2.py:beta2 --backend local --root sweeps/isoflop_v2_beta2
  # 2. the study (resumable: re-submitting continues it; the three LR arms of a size pack into one process)
  scaling sweep --config configs/sweeps/isoflop_v2.py --backend local --root sweeps/isoflop_v2 --max-parallel 2
  scaling sweep collect --root sweeps/isoflop_v2
  scaling report --root sweeps/isoflop_v2 --params total

Why a second design
-------------------
The first study (configs/sweeps/isoflop_cpu.py, docs/results/isoflop_cpu) gave a = 0.55, but its sizes
changed depth (2 -> 5 layers) and head dim (16 -> 32) inside a budget, so a shape effect is mixed into every
N profile (3 -> 5 layers at width 192 gained 0.053 bpb on 37% fewer tokens); its learning rates came from a
300-step study on another corpus; and defensible analyses gave a from 0.50 to 0.77. This design removes the
confounds one by one:

* **One shape family.** Every size has NUM_LAYERS = 3 layers, head dim HEAD_DIM = 16, full multi-head
  attention (kv heads = heads), SwiGLU with d_ff = 8/3 d_model rounded to a multiple of 8 (the ratio stays
  2.63-2.75; the default's rounding to 64 would give 4.0 at width 32 and 2.7 at 96), tied embeddings,
  RMSNorm, RoPE, context 256. Only the width changes, in steps of 16 (every width is then a whole number of
  16-wide heads). Grouped-query attention with half the heads would force widths in steps of 32, which
  leaves 3x and 2x gaps in N at the small end; the family is full multi-head instead (at these sizes the
  K/V projections are < 17% of a layer's parameters).
* **Same data and tokenizer as v1** (prose at BPE-1024, character_coverage 0.9995), batch 8 x 256, so the
  two families can be compared on one axis: v1's runs enter the report as a second family.
* **Budgets** 4e12, 1.2e13, 4e13, 1.2e14 training FLOPs (v1's). A 5th at 4e14 would cost about 3x
  everything else together on this machine (`python configs/sweeps/isoflop_v2.py` prints it as
  EXTRA_BUDGET); it is left as the next step.
* **6 sizes per budget**, rungs of a ladder spaced SIZE_STEP = 1.45x in N (the width nearest each target),
  centred on v1's fitted N_opt(C) = 0.0211 C^0.551 (total N): 2.5 rungs (2.5x) on each side, so a minimum
  up to a rung away from v1's still has 2 sizes on each side. The report checks that every budget's minimum
  has 2 sizes on each side; where one does not, add a rung beyond that end (EXTRA_RUNGS) and re-submit
  (only the new runs train).
* **A learning rate for every point.** Each size trains three LR arms, LR_ARMS = 0.5, 1, 2 times its
  centre rate. Each arm is one constant-LR parent (warmup, then constant) that saves a checkpoint at every
  fork, and each budget the size appears in is a cooldown branch of that parent: 1-sqrt decay (Hagele et al.
  2024) over the last DECAY_FRACTION = 20% of the budget's steps to 0.1 lr. A point's loss is its best arm
  (the report also fits the parabola in log lr through the arms, a specification of the fit); the arms at
  all budgets together give the LR law LR_opt(N, D). The centre rate is v1's law, 7.24e-3 (d/32)^-0.80,
  times (T/1000)^-0.125 for a horizon of T steps (the geometric middle of the size's budgets): longer runs
  prefer lower rates (v1's check at 4e12: the 4,072-step run preferred half its rate), and -0.125 is
  DeepSeek LLM 2024's eta_opt ~ C^-0.125 used as a prior only; the arms span 4x, so the centre needs to be
  right within 2x. Where the best arm of a point is an end arm, the report says so; `:extend` adds the arm
  beyond that end for that size (0.25x or 4x): `python configs/sweeps/isoflop_v2.py extend RESULTS` applies
  that rule to the collected results and records the added arms in isoflop_v2_arms.json beside this file
  (committed), then re-submitting the sweep trains only the new arms.
* **beta2 for this batch**: the pre-check (`:beta2`) trains the second budget's (1.2e13) second and fifth
  sizes (1,000-4,000 steps: the study's middle horizons; beta2 0.999 averages over ~1,000 steps, so a
  shorter check would judge the transient) at their centre rate with beta2 0.95, 0.99, 0.999 (Porian et al.
  2024 found the default 0.95 costs small batches; 2,048 tokens per step is small). The winner (`beta2_choice`: the lowest mean log eval/bpb over the
  two sizes, with its margin against the seed study's run-to-run noise) is set as BETA2 below with the check's
  numbers; until then the study refuses to start. **The check (2026-12-08, sweeps/isoflop_v2_beta2, 6 runs,
  1.1 h):** final eval/bpb at width 64 (3,744 steps) 0.95: 2.2615, 0.99: 2.2354, 0.999: 2.2526; at width 128
  (1,187 steps) 2.3633, 2.3411, 2.3356. 0.99 has the lowest mean log bpb (the rule) but the sizes disagree on
  the best (0.999 is 0.24% better at width 128); 0.95 is the worst at both (+1.2% and +0.9% against 0.99), about
  twice the seed study's run-to-run sd of log bpb (0.49%). BETA2 = 0.99: the margin between 0.99 and 0.999 is
  within noise, the cost of 0.95 is not.
* **Noise floor**: the central two sizes of the smallest budget also train from scratch at the centre rate
  with train.seed 0, 1, 2 (data order and init), as their own runs named `isoflop_v2-noise` (not fit points:
  the report's --noise_floor is their pooled SD). Seed 0 repeats the branch point exactly (a branch equals
  the from-scratch WSD run, tests/test_branch.py), which is itself a check.
* **Weight decay** 0.1 and Adam's beta1 0.9 stay fixed (the batch study of issue #37 and the transfer study
  own those axes); the report says so.

Wall time: estimated from measured throughput by size, tokens_per_s() below (fitted to the throughput of
v1's runs on this machine kind). The plan (2026-12-07): 24 points x 3 arms, 2.52e15 FLOPs trained in 32 packed
processes, 7.4 h at one process at a time, ~4.7 h with two at once (--max-parallel 2; two processes make ~1.6x
one's rate here), plus 0.3 h for the beta2 check and the noise seeds: within the ~6 hours the study may take.
"""

import functools
import json
import math
import os
import sys

if __name__ == '__main__' and not __package__:   # `python configs/sweeps/isoflop_v2.py` from anywhere
  import os as _os
  import sys as _sys
  _sys.path.insert(0, _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))))

from configs.sweeps._common import CPU_RUN, load_config_file, resolved

BUDGETS = (4e12, 1.2e13, 4e13, 1.2e14)   # training FLOPs
EXTRA_BUDGET = 4e14                      # the next step (priced by the plan, not run)
SIZES_PER_BUDGET = 6
SIZE_STEP = 1.45                         # ratio of neighbouring rungs' N (even spacing in log N)
V1_KN, V1_A = 0.021055, 0.55084          # v1's fitted N_opt = kN C^a (total N; docs/results/isoflop_cpu/fit.json)
NUM_LAYERS, HEAD_DIM = 3, 16
WIDTH_STEP, MIN_WIDTH, MAX_WIDTH = 16, 32, 512
BATCH, SEQ_LEN = 8, 256                  # 2048 tokens per step (v1's)
MIN_STEPS = 250
VOCAB, COVERAGE, CORPUS = 1024, 0.9995, 'prose'
CORPUS_TOKENS = 63.1e6                   # measured at BPE-1024: 59.76M train + 3.38M validation tokens
VAL_FRACTION = 0.05
MAX_TOKENS = 0.85 * (1 - VAL_FRACTION) * CORPUS_TOKENS   # every run under one epoch, with a margin
DECAY_FRACTION, DECAY_SHAPE = 0.2, '1-sqrt'
MIN_LR_RATIO = 0.1
LR_AT_32, LR_WIDTH_EXP = 7.24e-3, -0.80  # v1's law (docs/results/lr_transfer)
LR_HORIZON_EXP, LR_HORIZON_REF = -0.125, 1000.0
LR_ARMS = (0.5, 1.0, 2.0)
BETA2_CHECK = (0.95, 0.99, 0.999)
BETA2 = 0.99                             # the :beta2 pre-check's winner (module docstring: its numbers)
NOISE_SEEDS = (0, 1, 2)
EXTRA_RUNGS = {}                         # budget -> extra rungs beyond its 6 (negative: below), set from results
# throughput (tokens/s) = 1 / (PER_TOKEN_S + flops_per_token / FLOP_RATE): fitted to v1's runs on this machine
# kind (64k params 116k tokens/s, 748k 19k, 1.41M 10k, 3.95M 5.9k; shared machine), conservative in between
FLOP_RATE, PER_TOKEN_S = 1.1e11, 5e-6
RUN_OVERHEAD_S = 40.0                    # start, compile, final eval, checkpoint: per process
TWO_AT_ONCE = 1.6                        # aggregate rate of two processes at once over one (BENCHMARKS.md: packed)
NAME = 'isoflop_v2'


def get_config(arg=None):
  del arg
  return load_config_file('ladder', 'nano')


def shape(width: int) -> dict:
  """The family's overrides at one width."""
  heads = width // HEAD_DIM
  return {'model.num_layers': NUM_LAYERS, 'model.d_model': width, 'model.num_heads': heads,
          'model.num_kv_heads': heads, 'model.d_ff': 8 * round(width / 3)}


def _data() -> dict:
  return {'data.corpus': CORPUS, 'data.vocab_size': VOCAB, 'data.character_coverage': COVERAGE}


@functools.lru_cache(maxsize=None)
def family() -> tuple:
  """(width, N total, N non-embedding, FLOPs per token) of every width of the family."""
  from scaling.config.load import fill_vocab
  from scaling.model.accounting import count_params, flops_per_token
  out = []
  for w in range(MIN_WIDTH, MAX_WIDTH + 1, WIDTH_STEP):
    m = fill_vocab(resolved(get_config(), {**shape(w), **_data()})).model
    c = count_params(m)
    out.append((w, float(c['total']), float(c['non_embedding']), float(flops_per_token(m))))
  return tuple(out)


def ladder() -> list[tuple]:
  """Rung k: the width whose N is nearest N_0 SIZE_STEP^k, N_0 the smallest width's (distinct widths)."""
  fam = family()
  out, k = [], 0
  while True:
    target = fam[0][1] * SIZE_STEP ** k
    if target > fam[-1][1] * 1.2:
      return out
    f = min(fam, key=lambda f: abs(math.log(f[1] / target)))
    if not out or f[0] != out[-1][0]:
      out.append(f)
    k += 1


def v1_n_opt(c: float) -> float:
  return V1_KN * c ** V1_A


def steps_for(c: float, fpt: float) -> int:
  return int(round(c / fpt / (BATCH * SEQ_LEN)))


def tokens_per_s(fpt: float) -> float:
  return 1.0 / (PER_TOKEN_S + fpt / FLOP_RATE)


def rungs_of(c: float, lad: list) -> list[int]:
  """The budget's rungs: SIZES_PER_BUDGET consecutive ones centred (in log N) on v1's N_opt, plus EXTRA_RUNGS."""
  x = math.log(v1_n_opt(c))
  best = min(range(len(lad) - SIZES_PER_BUDGET + 1),
             key=lambda s: abs((math.log(lad[s][1]) + math.log(lad[s + SIZES_PER_BUDGET - 1][1])) / 2 - x))
  ks = list(range(best, best + SIZES_PER_BUDGET))
  extra = EXTRA_RUNGS.get(c, 0)
  ks += list(range(ks[-1] + 1, ks[-1] + 1 + extra)) if extra > 0 else list(range(ks[0] + extra, ks[0]))
  if min(ks) < 0 or max(ks) >= len(lad):
    raise ValueError(f'budget {c:.3g}: rungs {min(ks)}..{max(ks)} leave the ladder (0..{len(lad) - 1}); '
                     'raise MAX_WIDTH or lower MIN_WIDTH')
  return sorted(ks)


def centre_lr(width: int, horizon_steps: float) -> float:
  """v1's width law times the horizon prior (module docstring), 3 significant digits."""
  lr = LR_AT_32 * (width / 32) ** LR_WIDTH_EXP * (horizon_steps / LR_HORIZON_REF) ** LR_HORIZON_EXP
  return float(f'{lr:.3g}')


def _arm_lr(centre: float, mult: float) -> float:
  return float(f'{centre * mult:.3g}')


def points(budgets=BUDGETS) -> list[dict]:
  """Every (budget, size) point with its arithmetic."""
  lad = ladder()
  out = []
  for bi, c in enumerate(budgets):
    for k in rungs_of(c, lad):
      w, n, n_ne, fpt = lad[k]
      steps = steps_for(c, fpt)
      if steps < MIN_STEPS:
        raise ValueError(f'budget {c:.3g}: width {w} trains {steps} steps (< {MIN_STEPS}); shift the rungs down')
      tokens = steps * BATCH * SEQ_LEN
      if tokens > MAX_TOKENS:
        raise ValueError(f'budget {c:.3g}: width {w} reads {tokens:.3g} tokens (> {MAX_TOKENS:.3g}, one epoch)')
      out.append({'budget': c, 'budget_index': bi, 'rung': k, 'width': w, 'N': n, 'N_ne': n_ne,
                  'flops_per_token': fpt, 'steps': steps, 'tokens': tokens, 'flops': tokens * fpt,
                  'decay': max(int(round(DECAY_FRACTION * steps)), 1)})
  for p in out:
    mine = [q['steps'] for q in out if q['rung'] == p['rung']]
    p['horizon'] = math.exp(sum(math.log(s) for s in mine) / len(mine))
    p['centre_lr'] = centre_lr(p['width'], p['horizon'])
    p['warmup'] = max(10, min(100, min(mine) // 10))
  return out


def _base(p: dict) -> dict:
  return {**CPU_RUN, **shape(p['width']), **_data(), 'train.batch_size': BATCH, 'model.seq_len': SEQ_LEN,
          'train.warmup_steps': p['warmup'], 'train.min_lr_ratio': MIN_LR_RATIO,
          'train.b2': BETA2 if BETA2 is not None else BETA2_CHECK[0]}


def _scratch(p: dict, lr: float, name: str, **extra) -> dict:
  return {**_base(p), 'name': name, 'train.lr': lr, 'train.schedule': 'wsd', 'train.steps': p['steps'],
          'train.decay_steps': p['decay'], 'train.decay_shape': DECAY_SHAPE, **extra}


def _arms_of(rung: int, pts: list[dict]) -> list[float]:
  del rung
  extra = _extra_arms().get(str(pts[0]['width']), []) if pts else []
  return sorted(set(LR_ARMS) | set(extra))


def study_runs(pts: list[dict]) -> list[dict]:
  """Per size and arm: one constant-LR parent and a cooldown branch per budget (a size in one budget: one
  from-scratch WSD run per arm, the same schedule)."""
  from scaling.launch.sweep import branches
  out = []
  for k in sorted({p['rung'] for p in pts}):
    mine = [p for p in pts if p['rung'] == k]
    for mult in _arms_of(k, mine):
      lr = _arm_lr(mine[0]['centre_lr'], mult)
      if len(mine) == 1:
        out.append(_scratch(mine[0], lr, NAME))
        continue
      out += branches([{**_base(mine[0]), 'train.lr': lr}], [p['steps'] for p in mine],
                      decay_fraction=DECAY_FRACTION, decay_shape=DECAY_SHAPE,
                      parent={'name': f'{NAME}-parent'}, branch={'name': NAME})
  return out


def noise_runs(pts: list[dict]) -> list[dict]:
  first = [p for p in pts if p['budget_index'] == 0]
  mid = len(first) // 2
  return [_scratch(p, p['centre_lr'], f'{NAME}-noise', **{'train.seed': s})
          for p in first[mid - 1:mid + 1] for s in NOISE_SEEDS]


def beta2_runs(pts: list[dict]) -> list[dict]:
  second = [p for p in pts if p['budget_index'] == 1]
  return [_scratch(p, p['centre_lr'], f'{NAME}-beta2', **{'train.b2': b2})
          for p in (second[1], second[4]) for b2 in BETA2_CHECK]


ARMS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'isoflop_v2_arms.json')


def _extra_arms() -> dict:
  """width (str) -> extra LR multipliers chosen by `extend` from the collected results (ARMS_FILE; {} before)."""
  if not os.path.exists(ARMS_FILE):
    return {}
  with open(ARMS_FILE, encoding='utf-8') as f:
    return json.load(f)


def extend(results: str) -> dict:
  """The stated rule for a second stage of arms: a width any of whose points has its best arm at the low end of
  the arms tried gains the arm half the lowest; at the high end, twice the highest. Reads a results.jsonl,
  writes ARMS_FILE (merged with what is there), returns the additions."""
  by_point: dict = {}
  with open(results, encoding='utf-8') as f:
    for line in f:
      r = json.loads(line)
      if r.get('state') != 'done' or r.get('name') != NAME:
        continue
      ov = r['overrides']
      key = (ov['model.d_model'], ov['train.steps'])
      by_point.setdefault(key, []).append((ov['train.lr'], r['eval/bpb']))
  centre = {p['width']: p['centre_lr'] for p in points()}
  extra = _extra_arms()
  added: dict = {}
  for (width, _), arms in sorted(by_point.items()):
    lrs = sorted({lr for lr, _ in arms})
    best = min(arms, key=lambda a: a[1])[0]
    if len(lrs) < 2 or lrs[0] < best < lrs[-1]:
      continue
    # the arm beyond the end that won, as a multiplier of the width's centre rate (an arm added but not yet
    # trained is not tried: applying the rule again before it trains adds nothing)
    new = float(f'{best / centre.get(width, best) * (0.5 if best == lrs[0] else 2.0):.3g}')
    if new not in extra.get(str(width), []) and new not in LR_ARMS:
      extra.setdefault(str(width), []).append(new)
      added.setdefault(str(width), []).append(new)
  with open(ARMS_FILE, 'w', encoding='utf-8') as f:
    json.dump(extra, f, indent=1, sort_keys=True)
    f.write('\n')
  return added


BETA2_NOISE_SD = 0.0049   # sd of log eval/bpb between seeds of one configuration (docs/results/seed_upgrades, base n=5)


def beta2_choice(results: str) -> dict:
  """The stated rule for BETA2 (written before the check's results): per size, each beta2's final eval/bpb; the
  winner minimises the mean over the two sizes of log eval/bpb. The arms of one size are packed members (same
  init and data order), so their differences are paired; the yardstick for "beyond noise" is the seed study's
  run-to-run sd of log bpb (BETA2_NOISE_SD, an upper bound for paired arms). Returns {'table': {width: {b2:
  bpb}}, 'winner': b2, 'margin': {width: log(runner-up / winner)}, 'agree': both sizes rank the winner first,
  'beyond_noise': every size's margin > 2 BETA2_NOISE_SD}."""
  table: dict = {}
  with open(results, encoding='utf-8') as f:
    for line in f:
      r = json.loads(line)
      if r.get('state') == 'done' and r.get('name') == f'{NAME}-beta2' and r.get('eval/bpb'):
        table.setdefault(r['overrides']['model.d_model'], {})[float(r['overrides']['train.b2'])] = r['eval/bpb']
  full = {w: t for w, t in table.items() if set(t) == set(BETA2_CHECK)}
  if len(full) < 2:
    raise ValueError(f'{results}: the beta2 check is not finished ({len(full)} of 2 sizes have every beta2 of '
                     f'{BETA2_CHECK}); re-submit its sweep')
  mean_log = {b: sum(math.log(t[b]) for t in full.values()) / len(full) for b in BETA2_CHECK}
  winner = min(BETA2_CHECK, key=lambda b: mean_log[b])
  margin = {w: min(math.log(t[b] / t[winner]) for b in BETA2_CHECK if b != winner) for w, t in full.items()}
  return {'table': full, 'winner': winner, 'margin': margin,
          'agree': all(min(t, key=t.get) == winner for t in full.values()),
          'beyond_noise': all(m > 2 * BETA2_NOISE_SD for m in margin.values())}


def get_sweep(arg=None):
  pts = points()
  if arg == 'beta2':
    return beta2_runs(pts)
  if arg not in (None, ''):
    raise ValueError(f'isoflop_v2: unknown argument {arg!r}; use none or beta2')
  if BETA2 is None:
    raise ValueError('isoflop_v2: BETA2 is not set: run the beta2 pre-check first (`scaling sweep --config '
                     'configs/sweeps/isoflop_v2.py:beta2 --backend local --root sweeps/isoflop_v2_beta2`), '
                     'then set BETA2 in configs/sweeps/isoflop_v2.py to its winner')
  return noise_runs(pts) + study_runs(pts)


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '02:00:00', 'pack_max_members': 4}


def cost(pts: list[dict]) -> dict:
  """FLOPs trained and estimated wall: parents to their last fork, branches their decay, scratch runs whole."""
  flops = wall = 0.0
  procs = 0
  for k in sorted({p['rung'] for p in pts}):
    mine = [p for p in pts if p['rung'] == k]
    arms = len(_arms_of(k, mine))
    tps = tokens_per_s(mine[0]['flops_per_token'])
    if len(mine) == 1:
      own = [mine[0]['tokens']]
    else:
      last = max(p['steps'] - p['decay'] for p in mine)
      own = [last * BATCH * SEQ_LEN] + [p['decay'] * BATCH * SEQ_LEN for p in mine]
    flops += arms * sum(own) * mine[0]['flops_per_token']
    wall += arms * sum(t / tps for t in own)
    procs += len(own)   # the arms of one parent (or branch) pack into one process
  return {'flops': flops, 'wall_s': wall + procs * RUN_OVERHEAD_S, 'processes': procs}


def main(arg=None, *rest):
  if arg == 'extend':
    print('added arms (width: multipliers of the centre rate):', extend(rest[0]) if rest else
          'give the results.jsonl: python configs/sweeps/isoflop_v2.py extend sweeps/isoflop_v2/results.jsonl')
    return
  pts = points()
  if arg == 'beta2' and rest:
    c = beta2_choice(rest[0])
    for w, t in sorted(c['table'].items()):
      print(f'width {w}: ' + '  '.join(f'b2 {b}: {t[b]:.4f}' for b in BETA2_CHECK) +
            f'  (the nearest other arm against the winner: {100 * c["margin"][w]:+.2f}%)')
    print(f'winner b2 = {c["winner"]}; both sizes rank it first: {c["agree"]}; margin beyond 2 x the seed noise '
          f'({200 * BETA2_NOISE_SD:.2f}%) at both sizes: {c["beyond_noise"]}')
    return
  if arg == 'beta2':
    for r in beta2_runs(pts):
      print(r['model.d_model'], r['train.steps'], r['train.lr'], r['train.b2'])
    return
  print('budget    rung width  N(total)  N(non-emb)  FLOPs/tok   steps   tokens   tokens/N  epochs  '
        'centre lr  arms')
  for p in pts:
    arms = ' '.join(f'{_arm_lr(p["centre_lr"], m):.3g}' for m in _arms_of(p['rung'], [p]))
    print(f'{p["budget"]:.1e}  {p["rung"]:4d} {p["width"]:5d}  {p["N"]:9.3g}  {p["N_ne"]:9.3g}  '
          f'{p["flops_per_token"]:9.3g}  {p["steps"]:6d}  {p["tokens"]:8.3g}  {p["tokens"] / p["N"]:8.1f}  '
          f'{p["tokens"] / ((1 - VAL_FRACTION) * CORPUS_TOKENS):6.2f}  {p["centre_lr"]:.3g}  {arms}')
  for c in BUDGETS:
    ns = [p['N'] for p in pts if p['budget'] == c]
    print(f'budget {c:.1e}: v1 N_opt {v1_n_opt(c):.3g}; sizes {ns[0]:.3g}-{ns[-1]:.3g} '
          f'({ns[0] / v1_n_opt(c):.2f}x-{ns[-1] / v1_n_opt(c):.2f}x)')
  study = cost(pts)
  first = [p for p in pts if p['budget_index'] == 0]
  second = [p for p in pts if p['budget_index'] == 1]
  aux = first[len(first) // 2 - 1:len(first) // 2 + 1] * len(NOISE_SEEDS) + [second[1], second[4]] * len(BETA2_CHECK)
  aux_flops = sum(p['flops'] for p in aux)
  aux_wall = sum(p['tokens'] / tokens_per_s(p['flops_per_token']) + RUN_OVERHEAD_S for p in aux)
  print(f'study: {len(pts)} points x {len(LR_ARMS)} arms; {study["flops"]:.3g} FLOPs trained; '
        f'{study["processes"]} packed processes; estimated {study["wall_s"] / 3600:.2f} h at one process at a time, '
        f'{study["wall_s"] / 3600 / TWO_AT_ONCE:.2f} h with --max-parallel 2')
  print(f'noise + beta2 runs: {len(aux)} runs, {aux_flops:.3g} FLOPs, estimated {aux_wall / 3600:.2f} h')
  try:
    extra = cost(points(BUDGETS + (EXTRA_BUDGET,)))
    print(f'with the 5th budget {EXTRA_BUDGET:.0e}: {extra["flops"]:.3g} FLOPs, estimated '
          f'{extra["wall_s"] / 3600:.2f} h (not planned)')
  except ValueError as e:
    print(f'a 5th budget {EXTRA_BUDGET:.0e} does not fit this corpus and batch: {e}')


if __name__ == '__main__':
  main(*sys.argv[1:])
