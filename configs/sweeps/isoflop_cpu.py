"""isoflop_cpu: an IsoFLOP study (Chinchilla approach 2) sized for 2 CPU cores and the prose corpus.

  scaling sweep --config configs/sweeps/isoflop_cpu.py --backend local --root sweeps/isoflop_cpu
  scaling sweep collect --root sweeps/isoflop_cpu
  scaling report --root sweeps/isoflop_cpu

`python configs/sweeps/isoflop_cpu.py` prints the plan below (every run's shape, N, tokens, steps,
epochs and estimated wall time) from the same code that builds the sweep. Re-submitting the sweep
continues it (run directories are keyed by config hash), so it can run in several parts.

Design, and why
---------------
* Budgets: 1e13, 3e13, 1e14, 3e14 training FLOPs (4 budgets, 30x; half a decade apart, so the
  fitted N_opt ~ C^a has 4 points over 1.5 decades, and the held-out check refits on 3). The top
  is set by wall time (below) and by the corpus: at 3e14 the 20-tokens-per-parameter run already
  reads ~23M tokens, so the grid can reach only ~2x below that guess before a run would read
  more than one epoch; there the grid is shifted up (x1.33).
* Sizes: 5 per budget, spaced evenly in log N by a factor of 2 (16x from smallest to largest),
  centred on the geometric mean of two published guesses of N_opt(C), both computed with this
  study's FLOPs accounting (D = C / flops_per_token(N)): D = 20 N (Hoffmann et al. 2022's rule of
  thumb) and the minimum of their fitted law E + 406.4/N^0.34 + 410.7/D^0.28, which at these
  sizes prefers ~2x larger models (2-3 tokens per non-embedding parameter, because the tied LM
  head makes small models' tokens expensive). `python configs/sweeps/isoflop_cpu.py` prints both
  guesses per budget and where the sizes lie relative to them (0.26x-7x of the first and
  0.12x-3.9x of the second). A 16x bracket puts the minimum inside unless the true optimum is
  outside both guesses by ~2x; the report flags every budget whose lowest loss is at an end (then
  add a size beyond that end and resubmit: only the new run is trained). Where the grid would
  break a constraint it is shifted whole (never squeezed), and the plan says so: up when its
  smallest model would read more than one epoch or fall below MIN_N = 4e4 non-embedding
  parameters (one layer of d_model ~64: smaller models are mostly embedding table and
  overhead-bound), down when its largest would train for fewer than MIN_STEPS steps (at 1e13:
  x0.62, so there the law's guess sits between the two largest sizes).
  A check of the design on synthetic rows from Hoffmann's law (0.3% noise, this plan's N and
  tokens) through `scaling fit`: 1e13's minimum came out at the top end; over the 16x bracket
  the parabola in log N puts N_opt ~30% below the law's (its profile is skewed at these sizes),
  so approach 2's a came out below approach 3's and the report flagged the disagreement. Treat a
  disagreement on the real runs with that in mind (a narrower bracket around the minimum, added
  later, reduces the bias).
* N is the non-embedding parameter count (what `scaling fit` uses); FLOPs also count the tied LM
  head (V d per token) and attention, exactly as scaling.accounting.flops_per_token, which is what
  `scaling sweep collect` writes as `flops`. So every run of a budget costs the same training
  FLOPs C and reads D = C / flops_per_token(model) tokens (roughly C / (6 (N + V d))).
* Shapes: LLaMA-style blocks of configs/ladder.py (RMSNorm, RoPE, SwiGLU with d_ff = 8/3 d,
  grouped-query attention with half as many KV heads, tied embeddings, vocab 4096, context 256);
  d_model a multiple of 32, head_dim 64 (d_model >= 384, a multiple of 128), else 32 (a multiple
  of 64), else 16, so the head count is even and the KV heads are half of it; the (layers,
  d_model) minimising |log(N / target)| + ASPECT_WEIGHT |log(d_model / layers / 64)|: one aspect
  ratio across the study as far as the small sizes allow (depth and width should not change the
  loss on their own from size to size), at the price of sizes only roughly even in log N at the
  smallest sizes (neighbour ratios 1.6-2.4 instead of 2; the fit uses the actual N).
* Steps: batch 16 x 256 = 4096 tokens per step; every run has at least MIN_STEPS = 250 steps
  (enough for warmup plus a decay; fewer steps measure the schedule, not the model: the
  micro_ladder's 32-128 steps made larger models worse at every budget). Warmup is a tenth of the
  steps, at most 100.
* One epoch at most: every run reads at most MAX_TOKENS tokens, under one epoch of the prose
  corpus's training split. CORPUS_TOKENS is the estimate from scaling/data/prose.py ("about 30x
  the Shakespeare default" of 1.6M tokens); TODO(corpus): replace it with the measured token count
  of docs/corpus.md once the corpus is prepared with this tokenizer.
* Learning rate: one constant for every size, LR_PLACEHOLDER, the ladder's CPU-rung rate.
  TODO(muP): take the rate per size from the muP LR-transfer study once it exists (an untuned,
  size-independent rate biases the IsoFLOP minima toward the sizes it suits; the report of this
  study must say which rates were used). No study result is assumed here.
* Token budgets by WSD cooldown branches would share one stable phase per size across budgets;
  TODO(cooldown): switch to launch.sweep.branches once the cooldown branches are available. Here
  every run is trained from scratch with the cosine schedule.
* Corpus: `data.corpus = 'prose'` (scaling/data/prose.py), hooked up in data loading by the lead;
  the tokenizer is BPE 4096 trained on it (the default tokenizer settings).

Wall time (estimate)
--------------------
Measured CPU throughput: the default 4M-parameter model (4 x 256) trains at ~10k tokens/s in
float32 on 2 quiet cores, i.e. FLOP_RATE = 10k x flops_per_token(default) ~ 2.8e11 training FLOP/s;
models below ~0.5M non-embedding parameters are overhead-bound, so their tokens/s is capped at
that of a 0.5M model. Estimated wall = tokens / tokens_per_s + RUN_OVERHEAD_S (compile, final
eval, checkpoint) per run. The sum is printed by `python configs/sweeps/isoflop_cpu.py`: 2.2e15
training FLOPs, about 2.9 hours for the 20 runs (the 3e14 budget is 101 min of it, ~58%; wall
time is ~5 x sum(C) / FLOP_RATE, so each budget costs in proportion to its FLOPs). Every run
reads at most 0.83 epochs (the 3e14 budget's smallest size, 38M tokens) and trains at least 307
steps (the 1e13 budget's largest size). Loaded machines are slower: the
micro_ladder's committed runs logged 2-5x lower tokens/s than the quiet-machine figure, so plan
for the sweep to take longer than the estimate and to run it in parts.
"""

import math

from configs.sweeps._common import CPU_RUN, load_config_file, resolved

BUDGETS = (1e13, 3e13, 1e14, 3e14)   # training FLOPs
SIZES_PER_BUDGET = 5
SIZE_STEP = 2.0                      # ratio of neighbouring sizes (even spacing in log N)
TOKENS_PER_PARAM = 20.0              # one of the two guesses the grid is centred between
BATCH, SEQ_LEN = 16, 256             # 4096 tokens per step
MIN_STEPS = 250
MIN_N = 4e4                          # smallest non-embedding N: 1 layer of d_model ~64
CORPUS_TOKENS = 48e6                 # TODO(corpus): the measured size from docs/corpus.md
VAL_FRACTION = 0.05                  # data.val_fraction (by document)
MAX_TOKENS = 0.85 * (1 - VAL_FRACTION) * CORPUS_TOKENS   # under one epoch, with a margin
LR_PLACEHOLDER = 3e-3                # TODO(muP): per-size rates from the LR-transfer study
CORPUS = 'prose'
TOKENS_PER_S_DEFAULT = 1e4           # measured: default model, float32, 2 quiet cores
OVERHEAD_BOUND_N = 5e5               # below this non-embedding N, tokens/s stops rising
RUN_OVERHEAD_S = 40.0                # compile + final eval + checkpoint, per run
ASPECT_WEIGHT = 0.15                 # shape choice: 1% in N is worth 1/0.15 % in aspect ratio


def get_config(arg=None):
  return load_config_file('ladder', arg or 'nano')


def _shape(layers: int, d: int) -> dict:
  head_dim = 64 if d >= 384 and d % 128 == 0 else (32 if d % 64 == 0 else 16)
  heads = d // head_dim   # even for every d_model that is a multiple of 32
  return {'model.num_layers': layers, 'model.d_model': d, 'model.num_heads': heads,
          'model.num_kv_heads': max(1, heads // 2), 'model.d_ff': 0}


def _model(shape: dict):
  from scaling.config import fill_vocab
  cfg = resolved(get_config(), {**shape, 'data.corpus': CORPUS})
  return fill_vocab(cfg).model


def _family() -> list[tuple[float, float, dict]]:
  """(non-embedding N, FLOPs per token, overrides) of every candidate shape."""
  from scaling.accounting import count_params, flops_per_token
  out = []
  for layers in range(1, 13):
    for d in range(64, 1025, 32):
      shape = _shape(layers, d)
      m = _model(shape)
      out.append((float(count_params(m)['non_embedding']), float(flops_per_token(m)), shape))
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
  """The grid centre: the geometric mean of the two guesses (they differ ~3x at these sizes)."""
  n20, n_law = guesses(family, c)
  return math.sqrt(n20 * n_law)


def _tokens_per_s(n: float, fpt: float, fpt_default: float, fpt_floor: float) -> float:
  rate = TOKENS_PER_S_DEFAULT * fpt_default   # training FLOP/s
  return rate / max(fpt, fpt_floor) if n < OVERHEAD_BOUND_N else rate / fpt


def plan() -> list[dict]:
  """Every run with its arithmetic: shape, N, FLOPs/token, tokens, steps, epochs, est. wall."""
  from scaling.accounting import flops_per_token
  family = _family()
  fpt_default = float(flops_per_token(_model(_shape(4, 256))))
  fpt_floor = _nearest(family, OVERHEAD_BOUND_N)[1]
  runs = []
  for c in BUDGETS:
    centre, shift = _centre(family, c), 1.0
    offsets = [SIZE_STEP ** (i - (SIZES_PER_BUDGET - 1) / 2) for i in range(SIZES_PER_BUDGET)]
    for _ in range(20):   # shift the whole grid until both ends fit
      sizes = [_nearest(family, centre * shift * o) for o in offsets]
      if c / sizes[0][1] > MAX_TOKENS or centre * shift * offsets[0] < MIN_N * 0.95:
        shift *= 1.1
      elif c / sizes[-1][1] < MIN_STEPS * BATCH * SEQ_LEN:
        shift /= 1.1
      else:
        break
    else:
      raise ValueError(f'budget {c:.3g}: no grid of {SIZES_PER_BUDGET} sizes x{SIZE_STEP} fits '
                       f'both {MIN_STEPS} steps and {MAX_TOKENS:.3g} tokens')
    for n, fpt, shape in sizes:
      steps = int(c / fpt) // (BATCH * SEQ_LEN)
      tokens = steps * BATCH * SEQ_LEN
      tps = _tokens_per_s(n, fpt, fpt_default, fpt_floor)
      runs.append({'budget': c, 'N': n, 'flops_per_token': fpt, 'shape': shape, 'steps': steps,
                   'tokens': tokens, 'flops': tokens * fpt, 'centre': centre, 'shift': shift,
                   'epochs': tokens / ((1 - VAL_FRACTION) * CORPUS_TOKENS),
                   'wall_s': tokens / tps + RUN_OVERHEAD_S})
  return runs


def get_sweep(arg=None):
  del arg
  out = []
  for r in plan():
    out.append({**CPU_RUN, **r['shape'], 'name': f'isoflop_cpu-{r["budget"]:.0e}',
                'data.corpus': CORPUS, 'train.lr': LR_PLACEHOLDER, 'train.batch_size': BATCH,
                'model.seq_len': SEQ_LEN, 'train.tokens': r['tokens'],
                'train.warmup_steps': max(10, min(100, r['steps'] // 10))})
  return out


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '01:00:00'}


def main():
  runs = plan()
  print('budget   layers d_model  N(non-emb)  FLOPs/token  tokens      steps  epochs  tokens/N  '
        'est. wall')
  for r in runs:
    s = r['shape']
    print(f'{r["budget"]:.0e}  {s["model.num_layers"]:6d} {s["model.d_model"]:7d}  '
          f'{r["N"]:10.3g}  {r["flops_per_token"]:11.3g}  {r["tokens"]:10.3g}  {r["steps"]:5d}  '
          f'{r["epochs"]:6.2f}  {r["tokens"] / r["N"]:8.1f}  {r["wall_s"] / 60:6.1f} min')
  for c in BUDGETS:
    r = next(x for x in runs if x['budget'] == c)
    n20, n_law = guesses(_family(), c)
    sizes = [x['N'] for x in runs if x['budget'] == c]
    print(f'budget {c:.0e}: guesses N_opt {n20:.3g} (D = {TOKENS_PER_PARAM:g} N) and {n_law:.3g} '
          f'(Hoffmann law); centre {r["centre"]:.3g}, grid shifted x{r["shift"]:.3g}; sizes span '
          f'{sizes[0] / n20:.2g}x-{sizes[-1] / n20:.2g}x and {sizes[0] / n_law:.2g}x-'
          f'{sizes[-1] / n_law:.2g}x of the guesses')
  total = sum(r['wall_s'] for r in runs)
  print(f'{len(runs)} runs, {sum(r["flops"] for r in runs):.3g} training FLOPs, estimated '
        f'{total / 3600:.2f} h on 2 quiet cores; max {max(r["epochs"] for r in runs):.2f} epochs, '
        f'min {min(r["steps"] for r in runs)} steps')


if __name__ == '__main__':
  main()
