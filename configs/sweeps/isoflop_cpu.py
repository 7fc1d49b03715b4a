"""isoflop_cpu: an IsoFLOP study (Chinchilla approaches 2 and 3) sized for 2 CPU cores and the prose corpus.

  scaling sweep --config configs/sweeps/isoflop_cpu.py --backend local --root sweeps/isoflop_cpu
  scaling sweep collect --root sweeps/isoflop_cpu
  scaling fit --results sweeps/isoflop_cpu/results.jsonl --params total
  scaling report --root sweeps/isoflop_cpu --params total

  # the learning-rate check (separate root, so its off-optimum runs never enter the fit):
  scaling sweep --config configs/sweeps/isoflop_cpu.py:lrcheck --backend local --root sweeps/isoflop_cpu_lrcheck

`python configs/sweeps/isoflop_cpu.py` prints the plan below (every run's shape, N, tokens, steps,
epochs, lr and estimated wall time) from the same code that builds the sweep. Re-submitting the sweep
continues it (run directories are keyed by config hash), so it can run in several parts.

Design, and why
---------------
* Budgets: 4e12, 1.2e13, 4e13, 1.2e14 training FLOPs (4 budgets, 30x, half a decade apart: the fitted
  N_opt ~ C^a has 4 points over 1.5 decades, and the held-out check refits on 3). The top is set by
  wall time (~2 h of a 2-core machine at the measured FLOP rate below) and by the corpus (every run
  reads under one epoch, MAX_TOKENS).
* N is the total parameter count, embeddings included (Hoffmann et al. 2022's convention; `scaling fit
  --params total`). At these sizes the tied embedding is 20-50% of every model and its LM head a large
  share of the FLOPs per token, so Kaplan's non-embedding N would treat most of a small model as free.
* Vocabulary: BPE 1024 (character_coverage 0.9995: the prose corpus has 2,584 distinct characters; the
  rarest 0.05% are spelled in bytes). A first design at BPE-4096 (centred on non-embedding N) found the
  smallest budget's lowest loss at its smallest model: a 4096 x d table made even 1-layer d_model 64
  models ~300k parameters, above that budget's compute-optimal size. A 1024 vocabulary lets the grid
  reach below the optimum of every budget.
* Sizes: one ladder of shapes N_k ~ MIN_N 1.7^k, and per budget 5 consecutive rungs (8x, evenly
  spaced in log N; a narrower bracket than 16x also reduces the parabola's bias, which the synthetic
  check of the first design showed), centred on D = 20 N (Hoffmann et al.'s rule of thumb, with D =
  C / flops_per_token(N)); their fitted law E + 406.4/N^0.34 + 410.7/D^0.28, which prefers 1.5-1.8x
  larger models here, lies inside every grid (the plan prints where both guesses fall). Neighbouring
  budgets share 4 of their 5 rungs, so one size's runs at several budgets are cooldown branches of one
  stable run (below). Where a grid would break a constraint it is shifted by whole rungs (never
  squeezed): up when its smallest model would read more than MAX_TOKENS (the top budget: +1 rung),
  down when its largest would train fewer than MIN_STEPS steps. The report flags every budget whose
  lowest loss is at an end; then add a rung beyond that end and resubmit (only the new runs train).
* FLOPs count everything scaling.model.accounting.flops_per_token counts (the tied LM head and causal
  attention included), which is what `scaling sweep collect` writes as `flops`. So every run of a
  budget costs C (to within the rounding of its step count, < 0.3%) and reads D = C / flops_per_token.
* Shapes: LLaMA-style blocks of scaling/model/ladder.py (RMSNorm, RoPE, SwiGLU with d_ff = 8/3 d,
  grouped-query attention with half as many KV heads, tied embeddings, context 256); at least 2 layers
  (one layer cannot form induction heads: a different model class, and the first design's 1-layer
  models broke the loss-vs-N curve); d_model a multiple of 32, head_dim 64 (d_model >= 384, a multiple
  of 128), else 32 (a multiple of 64), else 16; the (layers, d_model) minimising |log(N / target)| +
  ASPECT_WEIGHT |log(d_model / layers / 64)|.
* Steps: batch 8 x 256 = 2048 tokens per step (batch 16 could not give the smallest budget's largest
  model MIN_STEPS steps); every run has at least MIN_STEPS = 250 steps (the micro_ladder's 32-128
  steps measured the schedule, not the model).
* Schedule: WSD (warmup, constant lr, a linear decay over the last 20% of the steps to 0.1 lr),
  the same for every run. WSD matches or beats cosine at equal steps here
  (docs/results/cooldown: 2.8% better at 150 steps, 0.4% at 1200), and it makes token budgets
  cheap: for a size in more than one of the three larger budgets, one stable parent (constant lr)
  trains to its last fork and each budget is a decay branch forked from it (scaling/launch/sweep.py
  branches(), train.ckpt_steps keeps the fork checkpoints; a branch equals the from-scratch WSD run,
  tests/test_branch.py). That trains ~85% of the FLOPs separate runs would. The smallest budget's runs
  (and any size in a single budget) train from scratch, listed first, so the first budget's bracket is
  known within minutes of the start. Warmup is a tenth of the size's shortest run, 10 to 100 steps.
* Learning rate per size, from the LR-transfer study (docs/results/lr_transfer): its standard-
  parametrization optima at d_model 32, 64, 128 (all bracketed) fall as lr* = 7.24e-3
  (d_model/32)^-0.80 (d_model 256's optimum, at the grid edge, lies below the line, as expected for
  a bound). That study's muP arm transferred its optimum (1.5x across 8x width) but its best loss
  at the largest width was 0.19 nats worse than SP's, so a muP IsoFLOP study would handicap the
  larger models; SP with the measured per-width rate is used. The transfer study ran 300 steps of
  8 x 64 tokens of Shakespeare, not 8 x 256 of prose, so the rate is checked here: `:lrcheck`
  trains the smallest budget's smallest, middle and largest sizes at 0.5x and 2x their rate (the
  report states whether the used rate was the best of the three).
* Corpus: `data.corpus = 'prose'` (scaling/data/prose.py, docs/corpus.md); at BPE-1024 it is 59.76M
  training and 3.38M validation tokens (2.18 bytes/token), prepared in 49 s.

Wall time (estimate)
--------------------
Measured CPU throughput (float32, 2 quiet cores, batch 8 x 256): 3 x 256 trains at 7.5k tokens/s,
FLOP_RATE = 1.45e11 training FLOP/s; tiny models are overhead-bound, capped at MAX_TOKENS_PER_S
(1 x 64: 49k tokens/s). Estimated wall = own tokens / tokens_per_s + RUN_OVERHEAD_S per run (a branch
trains only its decay). `python configs/sweeps/isoflop_cpu.py` prints the sum.
"""

import functools
import math

if __name__ == '__main__' and not __package__:   # `python configs/sweeps/isoflop_cpu.py` from anywhere
  import os as _os
  import sys as _sys
  _sys.path.insert(0, _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))))

from configs.sweeps._common import CPU_RUN, load_config_file, resolved

BUDGETS = (4e12, 1.2e13, 4e13, 1.2e14)   # training FLOPs
SIZES_PER_BUDGET = 5
SIZE_STEP = 1.7                      # ratio of neighbouring rungs (even spacing in log N)
TOKENS_PER_PARAM = 20.0              # one of the two guesses the grid is centred between
BATCH, SEQ_LEN = 8, 256              # 2048 tokens per step
MIN_STEPS = 250
MIN_N = 5.5e4                        # the smallest rung's N (total parameters): 2 layers of d_model 32
MIN_LAYERS = 2                       # one layer cannot form induction heads: a different model class
VOCAB = 1024                         # BPE vocabulary (data.vocab_size): see 'Vocabulary' above
COVERAGE = 0.9995                    # data.character_coverage: prose has 2,584 distinct characters
CORPUS_TOKENS = 63.1e6               # measured at BPE-1024: 59.76M train + 3.38M validation tokens
VAL_FRACTION = 0.05                  # data.val_fraction (by document)
MAX_TOKENS = 0.85 * (1 - VAL_FRACTION) * CORPUS_TOKENS   # under one epoch, with a margin
DECAY_FRACTION = 0.2                 # WSD: the last 20% of each run's steps decay
LR_AT_32, LR_EXPONENT = 7.24e-3, -0.80   # docs/results/lr_transfer, SP optima at d_model 32/64/128
LR_CHECK = (0.5, 2.0)                # :lrcheck multiplies the rate by these
CORPUS = 'prose'
FLOP_RATE = 1.45e11                  # training FLOP/s, measured: 3 x 256, batch 8 x 256, float32, 2 quiet cores
MAX_TOKENS_PER_S = 4.9e4             # measured: 1 x 64 (overhead-bound), same settings
RUN_OVERHEAD_S = 40.0                # compile + final eval + checkpoint, per run
ASPECT_WEIGHT = 0.15                 # shape choice: 1% in N is worth 1/0.15 % in aspect ratio
RUNGS = 12


def get_config(arg=None):
  del arg
  return load_config_file('ladder', 'nano')


def lr_for(d_model: int) -> float:
  """The per-width rate of the LR-transfer study's SP fit, rounded to 3 significant digits."""
  return float(f'{LR_AT_32 * (d_model / 32) ** LR_EXPONENT:.3g}')


def _shape(layers: int, d: int) -> dict:
  head_dim = 64 if d >= 384 and d % 128 == 0 else (32 if d % 64 == 0 else 16)
  heads = d // head_dim   # even for every d_model that is a multiple of 32
  return {'model.num_layers': layers, 'model.d_model': d, 'model.num_heads': heads,
          'model.num_kv_heads': max(1, heads // 2), 'model.d_ff': 0}


def _model(shape: dict):
  from scaling.config.load import fill_vocab
  cfg = resolved(get_config(), {**shape, 'data.corpus': CORPUS, 'data.vocab_size': VOCAB,
                                 'data.character_coverage': COVERAGE})
  return fill_vocab(cfg).model


@functools.lru_cache(maxsize=None)   # 341 configs resolved: once per process, not per plan() call
def _family() -> list[tuple[float, float, dict]]:
  """(N = total parameters, FLOPs per token, overrides) of every candidate shape."""
  from scaling.model.accounting import count_params, flops_per_token
  out = []
  for layers in range(MIN_LAYERS, 13):
    for d in range(32, 1025, 32):
      shape = _shape(layers, d)
      m = _model(shape)
      out.append((float(count_params(m)['total']), float(flops_per_token(m)), shape))
  return out


def _nearest(family, target: float) -> tuple[float, float, dict]:
  """The shape minimising |log(N / target)| + ASPECT_WEIGHT |log(d_model / layers / 64)|."""
  def cost(f):
    aspect = f[2]['model.d_model'] / f[2]['model.num_layers']
    return abs(math.log(f[0] / target)) + ASPECT_WEIGHT * abs(math.log(aspect / 64))
  return min(family, key=cost)


def _fpt_law(family):
  """FLOPs per token as a smooth function of N: a line in log-log through the shape family."""
  ln = [math.log(n) for n, _, _ in family]
  lf = [math.log(f) for _, f, _ in family]
  k = len(ln)
  mx, my = sum(ln) / k, sum(lf) / k
  slope = sum((x - mx) * (y - my) for x, y in zip(ln, lf)) / sum((x - mx) ** 2 for x in ln)
  return lambda n: math.exp(my + slope * (math.log(n) - mx))


def _argmin_log(f, lo=1e4, hi=1e9) -> float:
  """The N in [lo, hi] minimising f(N) (golden-section search in log N; f unimodal here)."""
  a, b = math.log(lo), math.log(hi)
  g = (math.sqrt(5) - 1) / 2
  for _ in range(100):
    x1, x2 = b - g * (b - a), a + g * (b - a)
    a, b = (a, x2) if f(math.exp(x1)) < f(math.exp(x2)) else (x1, b)
  return math.exp((a + b) / 2)


def guesses(family, c: float) -> tuple[float, float]:
  """Two published guesses of N_opt at C, with D = C / flops_per_token(N): D = 20 N, and the
  minimum of Hoffmann et al.'s fitted law E + A/N^0.34 + B/D^0.28 (A 406.4, B 410.7)."""
  fpt = _fpt_law(family)
  n20 = _argmin_log(lambda n: abs(math.log(c / fpt(n) / (TOKENS_PER_PARAM * n))))
  n_law = _argmin_log(lambda n: 406.4 / n ** 0.34 + 410.7 / (c / fpt(n)) ** 0.28)
  return n20, n_law


def _centre(family, c: float) -> float:
  """The grid centre: D = 20 N (total parameters). Hoffmann et al.'s fitted law, which puts N_opt 1.5-1.8x
  higher here, stays inside every grid (the plan prints where); a first design centred between the two, at
  BPE-4096, found the smallest budget's minimum below its smallest size."""
  return guesses(family, c)[0]


def _tokens_per_s(fpt: float) -> float:
  return min(MAX_TOKENS_PER_S, FLOP_RATE / fpt)


def _ladder(family) -> list[tuple[float, float, dict]]:
  """Rung k: the shape nearest MIN_N 2^k (distinct shapes only)."""
  out = []
  for k in range(RUNGS):
    f = _nearest(family, MIN_N * SIZE_STEP ** k)
    if not out or f[2] != out[-1][2]:
      out.append(f)
  return out


def _steps(c: float, fpt: float) -> int:
  return int(round(c / fpt / (BATCH * SEQ_LEN)))


def _grid(ladder, family, c: float) -> tuple[int, int]:
  """The first rung of budget c's 5 and the shift (in rungs) from the centred choice."""
  centre = _centre(family, c)
  mid = min(range(len(ladder)), key=lambda k: abs(math.log(ladder[k][0] / centre)))
  start0 = start = max(0, mid - SIZES_PER_BUDGET // 2)
  for _ in range(len(ladder)):
    lo, hi = ladder[start], ladder[start + SIZES_PER_BUDGET - 1]
    if _steps(c, lo[1]) * BATCH * SEQ_LEN > MAX_TOKENS:
      start += 1
    elif _steps(c, hi[1]) < MIN_STEPS and start > 0:
      start -= 1
    else:
      break
  if _steps(c, ladder[start + SIZES_PER_BUDGET - 1][1]) < MIN_STEPS:
    raise ValueError(f'budget {c:.3g}: no {SIZES_PER_BUDGET} rungs fit {MIN_STEPS} steps')
  return start, start - start0


def plan() -> list[dict]:
  """Every run with its arithmetic: shape, N, FLOPs/token, steps, epochs, lr, role, est. wall."""
  family = _family()
  ladder = _ladder(family)
  runs = []
  for bi, c in enumerate(BUDGETS):
    start, shift = _grid(ladder, family, c)
    for k in range(start, start + SIZES_PER_BUDGET):
      n, fpt, shape = ladder[k]
      steps = _steps(c, fpt)
      runs.append({'budget': c, 'budget_index': bi, 'rung': k, 'N': n, 'flops_per_token': fpt,
                   'shape': shape, 'steps': steps, 'tokens': steps * BATCH * SEQ_LEN,
                   'flops': steps * BATCH * SEQ_LEN * fpt, 'shift': shift,
                   'lr': lr_for(shape['model.d_model']),
                   'epochs': steps * BATCH * SEQ_LEN / ((1 - VAL_FRACTION) * CORPUS_TOKENS),
                   'tps': _tokens_per_s(fpt)})
  # a rung in more than one of the larger budgets: one stable parent and decay branches
  for r in runs:
    mates = [x for x in runs if x['rung'] == r['rung'] and x['budget_index'] > 0]
    r['branched'] = r['budget_index'] > 0 and len(mates) > 1
    r['warmup'] = max(10, min(100, min(x['steps'] for x in runs if x['rung'] == r['rung']) // 10))
    decay = max(int(round(DECAY_FRACTION * r['steps'])), 1)
    r['decay'] = decay
    own = decay if r['branched'] else r['steps']
    r['wall_s'] = own * BATCH * SEQ_LEN / r['tps'] + RUN_OVERHEAD_S
  for k in sorted({r['rung'] for r in runs if r['branched']}):
    mates = [r for r in runs if r['rung'] == k and r['branched']]
    last = max(r['steps'] - r['decay'] for r in mates)
    runs.append({**mates[0], 'budget': None, 'role': 'parent', 'steps': last, 'tokens': last * BATCH * SEQ_LEN,
                 'flops': last * BATCH * SEQ_LEN * mates[0]['flops_per_token'],
                 'epochs': last * BATCH * SEQ_LEN / ((1 - VAL_FRACTION) * CORPUS_TOKENS),
                 'wall_s': last * BATCH * SEQ_LEN / mates[0]['tps'] + RUN_OVERHEAD_S})
  return runs


def _base(r: dict) -> dict:
  return {**CPU_RUN, **r['shape'], 'data.corpus': CORPUS, 'data.vocab_size': VOCAB,
          'data.character_coverage': COVERAGE, 'train.lr': r['lr'],
          'train.batch_size': BATCH,
          'model.seq_len': SEQ_LEN, 'train.warmup_steps': r['warmup'], 'train.min_lr_ratio': 0.1}


def _scratch(r: dict, name: str, lr_mult: float = 1.0) -> dict:
  return {**_base(r), 'name': name, 'train.lr': float(f'{r["lr"] * lr_mult:.3g}'), 'train.schedule': 'wsd',
          'train.steps': r['steps'], 'train.decay_steps': r['decay']}


def get_sweep(arg=None):
  from scaling.launch.sweep import branches
  runs = plan()
  if arg == 'lrcheck':   # the smallest budget's smallest, middle and largest sizes at 0.5x and 2x their rate
    first = [r for r in runs if r['budget_index'] == 0]
    picks = (first[0], first[len(first) // 2], first[-1])
    return [_scratch(r, 'isoflop_cpu-lrcheck', m) for r in picks for m in LR_CHECK]
  if arg:
    raise ValueError(f'isoflop_cpu: unknown argument {arg!r}; use none or lrcheck')
  # the smallest budget first (its bracket is known within minutes), then each rung's parent and its
  # branches, then the other from-scratch runs
  mains = [r for r in runs if r.get('role') != 'parent']
  out = [_scratch(r, 'isoflop_cpu') for r in mains if r['budget_index'] == 0]
  for k in sorted({r['rung'] for r in mains if r['branched']}):
    mates = [r for r in mains if r['rung'] == k and r['branched']]
    out += branches([_base(mates[0])], [r['steps'] for r in mates], decay_fraction=DECAY_FRACTION,
                    parent={'name': 'isoflop_cpu-parent'}, branch={'name': 'isoflop_cpu'})
  return out + [_scratch(r, 'isoflop_cpu') for r in mains if r['budget_index'] > 0 and not r['branched']]


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '01:00:00'}


def main():
  runs = plan()
  print('budget   rung layers d_model  N(total)    FLOPs/token  tokens      steps  epochs  tokens/N  lr       '
        'how      est. wall')
  for r in runs:
    s = r['shape']
    how = 'parent' if r.get('role') == 'parent' else ('branch' if r['branched'] else 'scratch')
    b = f'{r["budget"]:.1e}' if r['budget'] else '  -    '
    print(f'{b}  {r["rung"]:4d} {s["model.num_layers"]:6d} {s["model.d_model"]:7d}  '
          f'{r["N"]:10.3g}  {r["flops_per_token"]:11.3g}  {r["tokens"]:10.3g}  {r["steps"]:5d}  '
          f'{r["epochs"]:6.2f}  {r["tokens"] / r["N"]:8.1f}  {r["lr"]:.3g}  {how:7s}  {r["wall_s"] / 60:6.1f} min')
  family = _family()
  for c in BUDGETS:
    sizes = [x['N'] for x in runs if x['budget'] == c]
    shift = next(x['shift'] for x in runs if x['budget'] == c)
    n20, n_law = guesses(family, c)
    print(f'budget {c:.1e}: guesses N_opt {n20:.3g} (D = {TOKENS_PER_PARAM:g} N) and {n_law:.3g} '
          f'(Hoffmann law); grid shifted {shift:+d} rungs; sizes span {sizes[0] / n20:.2g}x-{sizes[-1] / n20:.2g}x '
          f'and {sizes[0] / n_law:.2g}x-{sizes[-1] / n_law:.2g}x of the guesses')
  mains = [r for r in runs if r.get('role') != 'parent']
  trained = sum(r['flops'] if not r['branched'] else r['decay'] * BATCH * SEQ_LEN * r['flops_per_token']
                for r in mains) + sum(r['flops'] for r in runs if r.get('role') == 'parent')
  total = sum(r['wall_s'] for r in runs)
  print(f'{len(mains)} fit points in {len(runs)} runs; {trained:.3g} FLOPs trained (separate runs: '
        f'{sum(r["flops"] for r in mains):.3g}); estimated {total / 3600:.2f} h on 2 quiet cores; '
        f'max {max(r["epochs"] for r in runs):.2f} epochs, min {min(r["steps"] for r in mains)} steps')


if __name__ == '__main__':
  main()
