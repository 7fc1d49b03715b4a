"""seed_upgrades: the seed guide's eight claims, each by the comparison that can decide it (issue #19).

  scaling sweep --config configs/sweeps/seed_upgrades.py --backend local --root sweeps/seed_upgrades
  python -m scaling.analysis.seed.measure --root sweeps/seed_upgrades     # long-document evals, samples, step times
  scaling sweep collect --root sweeps/seed_upgrades
  scaling report --root sweeps/seed_upgrades

  # ~2.5 h estimated on 2 quiet cores (41 runs, 1.98 h of training + ~30 min of data preparation and
  # claims_measure; `python configs/sweeps/seed_upgrades.py` prints the arithmetic)

  # the smoke variant (tiny models, Shakespeare; measured 18 min of sweep + 3.4 min of claims_measure on 2
  # cores shared with a running study): the same pipeline into /tmp
  scaling sweep --config configs/sweeps/seed_upgrades.py:quick --backend local --root /tmp/seed_quick
  python -m scaling.analysis.seed.measure --root /tmp/seed_quick --config configs/sweeps/seed_upgrades.py:quick
  scaling sweep collect --root /tmp/seed_quick && scaling report --root /tmp/seed_quick

`python configs/sweeps/seed_upgrades.py [quick]` prints the plan (every run: arm, shape, N, FLOPs/token,
tokens, steps, lr, estimated wall) and the total. The sweep is resumable: re-submitting it skips finished
runs (run directories are keyed by config hash), and so does claims_measure (it skips runs it measured).
Runs are ordered so that the cheapest claims can be decided first: the baseline and the one-switch arms
of the norm, precision and position claims, then the seeds, context, dataset and size arms, then the
tokenizer frontiers (smallest budgets first).

Design (one switch per arm; the verdict rules are scaling/analysis/seed/claims.py's and are printed in the report)
------------------------------------------------------------------------------------------------------
* Baseline `base`: the modern recipe on the prose corpus: BPE-4096, RMSNorm, RoPE, SwiGLU, grouped-query
  attention, tied embeddings, context 256, 2 layers of d_model 128 (0.39M non-embedding parameters),
  batch 16 x 256, D = 2^22 tokens (1024 steps, ~11 tokens per parameter: past the transient, well under
  one epoch of prose), WSD (20% linear decay to 0.1 lr), lr 7.24e-3 (d_model/32)^-0.80 (the SP optima
  of docs/results/lr_transfer, as the IsoFLOP study). Three seeds: their spread is the run-to-run noise
  of every metric, and so every interval of an equal-token comparison.
* Equal-token arms (same D, same steps; lr by width): `layernorm` (RMSNorm claim; step times are
  measured separately, interleaved: scaling/analysis/seed/steptime.py), `learned`, `nopos` (RoPE claim: bpb on the
  same long-document tokens scored with windows of 256, 512 and 1024), `bf16` (model.dtype), `ctx64`,
  `ctx1024` (batch x context = 4096 tokens per step; bpb per document-position bucket 0-64, 64-256,
  256-1024 of long validation documents, the first bucket a control), `size-half`, `size-2x`,
  `size-4x` (0.5-4x the non-embedding parameters at equal tokens: capacity), `rep4`, `rep16`
  (data.train_tokens = D/4, D/16: a fixed slice of prose seen 4x / 16x against the corpus seen once; at
  D/16 = 262k tokens the slice is 1/6 of Shakespeare's size; same tokenizer and validation split).
* Tokenizer frontiers `tok-bpe`, `tok-char`, `tok-byte`: budgets 2e12, 6.3e12, 2e13 FLOPs (10x), 3
  sizes per budget from one ladder, centred on D = 20 N with each tokenizer's own FLOPs per token
  (char: 2355 symbols in prose, measured; byte: 259), batch 8 x 256 tokens (a context of 256 tokens
  holds ~645 bytes with BPE, 256 with bytes). The multiplier is read off the char (byte) frontier's
  power law at the BPE frontier's bpb; the BPE frontier is also the study's IsoFLOP fit (`scaling fit`
  keeps only those rows), for the size claim's compute-optimal part.
* Sampling: the three base seeds sample 32 validation prompts x 128 tokens greedily, top-k 40, top-p 0.9
  and untruncated (T = 1); repetition (rep-4), distinct-2/3, and bits per byte under `size-4x` (the
  judge, trained on the same corpus): scaling/analysis/seed/measure.py.

Wall time (estimate, printed by the plan): training throughput min(FLOP_RATE / FLOPs per token,
MAX_TOKENS_PER_S) (configs/sweeps/isoflop_cpu.py's measurements: 1.45e11 FLOP/s, 49k tokens/s cap for tiny
models) + RUN_OVERHEAD_S per run, bf16 on CPU x BF16_CPU_SLOWDOWN (XLA's CPU bf16 matmuls are emulated;
an assumption until measured); plus PREP_S for preparing prose with the char and byte tokenizers and
the slices, and MEASURE_S for claims_measure.
"""

import math
import sys

from configs.sweeps._common import CPU_RUN, load_config_file, resolved

STUDY = 'seed_upgrades'
LR_AT_32, LR_EXPONENT = 7.24e-3, -0.80
FLOP_RATE, MAX_TOKENS_PER_S, RUN_OVERHEAD_S = 1.45e11, 4.9e4, 40.0
BF16_CPU_SLOWDOWN = 2.0
PREP_S, MEASURE_S = 900.0, 900.0
VOCAB = {'bpe': 4096, 'byte': 259, 'char': {'prose': 2355, 'shakespeare': 86}}   # char: + <unk>, <eos>, measured
LADDER = ((1, 64), (2, 96), (2, 128), (3, 160), (4, 192), (4, 256), (5, 320))

FULL = dict(corpus='prose', shape=(2, 128), seq=256, batch=16, tokens=2 ** 22, seeds=(0, 1, 2),
            sizes={'size-half': (2, 96), 'size-2x': (3, 160), 'size-4x': (4, 192)},
            budgets=(2e12, 6.3e12, 2e13), sizes_per_budget=3, frontier_batch=8, eval_batches=24)
QUICK = dict(corpus='shakespeare', shape=(1, 64), seq=256, batch=8, tokens=8 * 256 * 60, seeds=(0, 1),
             sizes={'size-2x': (2, 64)}, budgets=(1e11, 3e11, 1e12), sizes_per_budget=1, frontier_batch=8,
             eval_batches=4)


def get_config(arg=None):
  del arg
  return load_config_file('default', None)


def design(arg=None) -> dict:
  if arg in (None, '', 'full'):
    return FULL
  if arg == 'quick':
    return QUICK
  raise ValueError(f'seed_upgrades: unknown argument {arg!r}; use none (the study) or quick (the smoke test)')


def lr_for(d_model: int) -> float:
  return float(f'{LR_AT_32 * (d_model / 32) ** LR_EXPONENT:.3g}')


def shape(layers: int, d: int) -> dict:
  """configs/sweeps/isoflop_cpu.py's rule: head_dim 32 (d a multiple of 64) else 16, half as many KV heads."""
  head_dim = 32 if d % 64 == 0 else 16
  heads = d // head_dim
  return {'model.num_layers': layers, 'model.d_model': d, 'model.num_heads': heads,
          'model.num_kv_heads': max(1, heads // 2), 'model.d_ff': 0, 'train.lr': lr_for(d)}


def _model(ov: dict):
  cfg = resolved(get_config, {k: v for k, v in ov.items() if k.startswith(('model.', 'data.'))})
  if cfg.model.vocab_size == 0:
    with cfg.model.unlocked():
      v = VOCAB[str(cfg.data.tokenizer)]
      cfg.model.vocab_size = v[str(cfg.data.corpus)] if isinstance(v, dict) else v
  return cfg.model


def _run(d: dict, arm: str, ov: dict, tokens: int, batch: int, seq: int) -> dict:
  steps = max(tokens // (batch * seq), 1)
  return {**CPU_RUN, 'data.corpus': d['corpus'], 'model.seq_len': seq, 'train.batch_size': batch,
          'train.eval_batches': d['eval_batches'], 'train.schedule': 'wsd', 'train.min_lr_ratio': 0.1,
          'train.steps': steps, 'train.warmup_steps': max(10, min(100, steps // 10)), **ov,
          'name': f'{STUDY}:{arm}'}


def equal_token_runs(d: dict) -> list[dict]:
  """The baseline (seed 0 first), the one-switch arms, the other seeds, context, data, size."""
  base = shape(*d['shape'])
  D, B, T = d['tokens'], d['batch'], d['seq']
  arms = [('base', {}), ('layernorm', {'model.norm': 'layernorm'}), ('bf16', {'model.dtype': 'bfloat16'}),
          ('learned', {'model.position': 'learned'}), ('nopos', {'model.position': 'none'})]
  runs = [_run(d, arm, {**base, **ov}, D, B, T) for arm, ov in arms]
  runs += [_run(d, 'base', {**base, 'train.seed': s}, D, B, T) for s in d['seeds'][1:]]
  runs += [_run(d, f'ctx{t}', base, D, max(1, B * T // t), t) for t in (64, 1024)]
  runs += [_run(d, f'rep{k}', {**base, 'data.train_tokens': D // k}, D, B, T) for k in (4, 16)]
  runs += [_run(d, arm, shape(*s), D, B, T) for arm, s in d['sizes'].items()]
  return runs


def _fpt(ov: dict) -> float:
  from scaling.model.accounting import flops_per_token
  return float(flops_per_token(_model(ov)))


def frontier_runs(d: dict) -> list[dict]:
  """Per tokenizer and budget, sizes_per_budget consecutive ladder rungs around D = 20 N."""
  from scaling.model.accounting import count_params
  runs = []
  B, T = d['frontier_batch'], d['seq']
  for c in d['budgets']:
    for tok in ('bpe', 'char', 'byte'):
      data = {'data.corpus': d['corpus'], 'data.tokenizer': tok, **({'data.vocab_size': 4096} if tok == 'bpe' else {})}
      cands = []
      for rung in LADDER:
        ov = {**shape(*rung), **data}
        n = count_params(_model(ov))['non_embedding']
        cands.append((abs(math.log(c / _fpt(ov) / (20 * n))), ov))
      mid = min(range(len(cands)), key=lambda i: cands[i][0])
      k = d['sizes_per_budget']
      lo = min(max(0, mid - k // 2), len(cands) - k)
      for _, ov in cands[lo:lo + k]:
        tokens = int(c / _fpt(ov))
        runs.append(_run(d, f'tok-{tok}', ov, tokens, B, T))
  return runs


def get_sweep(arg=None):
  d = design(arg)
  return equal_token_runs(d) + frontier_runs(d)


def steptime_pairs(arg=None) -> dict:
  """scaling/analysis/seed/steptime.py's comparisons: {pair: {name: config}} at the baseline's dims and batch."""
  from scaling.config.load import fill_vocab
  d = design(arg)
  base = {k: v for k, v in _run(d, 'base', shape(*d['shape']), d['tokens'], d['batch'], d['seq']).items()
          if k != 'name'}
  mk = lambda ov: fill_vocab(resolved(get_config, {**base, **ov}))
  return {'norm': {'base': mk({}), 'layernorm': mk({'model.norm': 'layernorm'})},
          'precision': {'base': mk({}), 'bf16': mk({'model.dtype': 'bfloat16'})}}


def get_resources(arg=None):
  del arg
  return {'nodes': 1, 'processes_per_node': 1, 'cpus_per_task': 2, 'time': '00:30:00'}


def estimate_s(run: dict) -> float:
  fpt = _fpt(run)
  tokens = run['train.steps'] * run['train.batch_size'] * run['model.seq_len']
  tps = min(FLOP_RATE / fpt, MAX_TOKENS_PER_S)
  if run.get('model.dtype') == 'bfloat16':
    tps /= BF16_CPU_SLOWDOWN
  return tokens / tps + RUN_OVERHEAD_S


def main(argv=None):
  from scaling.model.accounting import count_params
  arg = (argv or sys.argv[1:] or [None])[0]
  runs = get_sweep(arg)
  print(f'{"arm":10s} {"seed":>4s} {"L":>2s} {"d":>4s} {"N(non-emb)":>10s} {"FLOPs/tok":>9s} {"T":>5s} '
        f'{"tokens":>9s} {"steps":>5s} {"FLOPs":>8s} {"lr":>8s} {"est":>7s}')
  total = 0.0
  for r in runs:
    m = _model(r)
    w = estimate_s(r)
    total += w
    tokens = r['train.steps'] * r['train.batch_size'] * r['model.seq_len']
    print(f'{r["name"][len(STUDY) + 1:]:10s} {r.get("train.seed", 0):4d} {m.num_layers:2d} {m.d_model:4d} '
          f'{count_params(m)["non_embedding"]:10.3g} {_fpt(r):9.3g} {m.seq_len:5d} {tokens:9.3g} '
          f'{r["train.steps"]:5d} {tokens * _fpt(r):8.2g} {r["train.lr"]:8.3g} {w / 60:5.1f} min')
  extra = (PREP_S + MEASURE_S) if design(arg) is FULL else 0.3 * (PREP_S + MEASURE_S)
  print(f'{len(runs)} runs: {total / 3600:.2f} h of training + {extra / 60:.0f} min of data preparation and '
        f'claims_measure = {(total + extra) / 3600:.2f} h estimated on 2 quiet cores')


if __name__ == '__main__':
  main()
