"""The eight claims of the seed guide, each from the arms that can decide it (configs/sweeps/seed_upgrades.py).

`evaluate(rows, steptimes, fit_result)` -> one dict per claim: key, title, the guide's words, parts
(label, Effect, verdict), facts (side effects stated with numbers) and the combined verdict. The
effects and verdict rules are scaling/analysis/seed/claims.py's; the arm names and measurement keys are the sweep's
and scaling/analysis/seed/measure.py's:

  base (seeds 0-4)       BPE-4096, RMSNorm, RoPE, SwiGLU, context 256, D tokens: every other arm flips one switch
  layernorm, learned, learned-1024, nopos, bf16, ctx64, ctx1024, size-half, size-2x, size-4x, rep4, rep16
                         equal tokens (learned-1024: learned positions with a 1024-row table, trained at 256)
  tok-bpe, tok-char, tok-byte   each tokenizer's sizes at >= 3 compute budgets (the frontier)

Every between-run interval uses the metric's noise pooled over all configurations with >= 2 seeds
(scaling/analysis/seed/noise.py).
"""

from __future__ import annotations

import math
from typing import Sequence

from scaling.analysis.seed import claims as C
from scaling.analysis.seed import decoding as D
from scaling.analysis.seed import frontier as F
from scaling.analysis.seed import noise as N

BPB = 'eval/bpb'
TPS = 'throughput/tokens_per_s'
LENGTHS = (256, 512, 1024)           # evaluation lengths: 1x, 2x, 4x the baseline's context
BUCKETS = ((0, 64), (64, 256), (256, 1024))
SAMPLE_MODES = D.MODES
BPE_CLAIMED = 10.0                   # "10-100x efficiency": the lower end
SPAN_BPB = 'claims/span_bpb'         # the same validation bytes for every tokenizer (scaling/analysis/seed/span.py)
LEARNED_LONG = 'learned-1024'        # learned positions with a table of 1024 rows, trained at 256
PENDING = 'configs/sweeps/seed_upgrades.py:pending'


def len_key(L: int) -> str:
  return f'claims/len@{L}'


def pos_key(a: int, b: int) -> str:
  return f'claims/pos@{a}-{b}'


def sample_key(mode: str, stat: str) -> str:
  return f'claims/sample/{mode}/{stat}'


def _part(label: str, e: C.Effect, short: str = '') -> dict:
  """A part of a claim: its label, effect and verdict; `short` names it in the verdict table."""
  return {'label': label, 'effect': e, 'verdict': C.verdict(e), 'short': short or label}


def _claim(key, title, quote, parts, facts=(), **extra) -> dict:
  return {'key': key, 'title': title, 'quote': quote, 'parts': parts, 'facts': list(facts),
          'verdict': C.combine([p['verdict'] for p in parts]) if parts else C.NOT_MEASURED, **extra}


def _all(A) -> list[dict]:
  return [r for rows in A.values() for r in rows]


def _cmp(A, arm, key, *, side='less', base='base', label=None, hint='', **kw) -> dict:
  """arm / base of one metric; the interval from that metric's noise pooled over every configuration of the
  study with >= 2 seeds (noise.pooled)."""
  a, b = A.get(arm, []), A.get(base, [])
  miss = [n for n, rows in ((arm, a), (base, b)) if not C.vals(rows, key)]
  if miss:
    e = C.missing(f'no finished {" or ".join(repr(m) for m in miss)} run with {key}{hint}', side=side, **kw)
  else:
    e = C.log_ratio(C.vals(a, key), C.vals(b, key), N.pooled(_all(A), key), side=side, **kw)
  return _part(label or f'{key}: {arm} / {base}', e)


def _fact(p: dict) -> str:
  return f'{p["label"]}: {p["effect"].text()} ({p["verdict"]})'


def _mean(rows, key):
  """The mean of a column over rows (zeros included: a rate of 0 is a value), None without one."""
  v = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
       and math.isfinite(r[key])]
  return sum(v) / len(v) if v else None


# ----------------------------------------------------------------------------- 1. subword tokens
TOK_ARMS = ('tok-bpe', 'tok-char', 'tok-byte')


def _multiplier_parts(A, key: str, noise) -> tuple[list[dict], dict]:
  """One part per (slower arm, BPE budget): the compute multiplier, inside the measured frontier only."""
  parts, info = [], {}
  for slow in TOK_ARMS[1:]:
    per = F.budget_multipliers(A.get(slow, []), A.get('tok-bpe', []), noise, key, slow=slow[4:],
                               threshold=BPE_CLAIMED)
    info[slow] = per
    for m in per:
      where = f'at the BPE budget C = {m["budget"]:.3g} (bpb {m["bpb"]:.4g})' if m['budget'] else ''
      spread = ''
      if m.get('power_law') is not None:
        spread = f'; local interpolation {m["linear"]:.3g}x, power law {m["power_law"]:.3g}x'
      parts.append(_part(f'compute multiplier {where}: the {slow[4:]} arm needs this much more compute than BPE '
                         f'for the same bpb{spread}', m['effect'],
                         f'{slow[4:]} / BPE at C = {m["budget"]:.2g}' if m['budget'] else ''))
  return parts, info


def _span_problem(A) -> str:
  """Why the same-bytes bpb cannot decide yet ('' when it can)."""
  rows = [r for arm in TOK_ARMS for r in A.get(arm, [])]
  if not any(C.positive([r.get(SPAN_BPB)]) for r in rows):
    return (f'{SPAN_BPB} (every tokenizer arm scored on the same validation bytes) is not measured: the '
            f'tokenizer arms\' checkpoints are needed; train {PENDING} and run claims_measure')
  spans = {r.get('claims/span_digest') for r in rows if C.positive([r.get(SPAN_BPB)])}
  if len(spans) > 1:
    return f'the tokenizer arms were scored on {len(spans)} different spans of text: re-measure them'
  return ''


def tokenizer(A, **_) -> dict:
  facts = []
  why = _span_problem(A)
  if why:
    kw = dict(null=1.0, side='greater', threshold=BPE_CLAIMED)
    parts = [_part(f'compute multiplier of the {slow[4:]} arm over BPE at the same bpb (per BPE budget)',
                   C.missing(why, **kw)) for slow in TOK_ARMS[1:]]
    info = {}
  else:
    parts, info = _multiplier_parts(A, SPAN_BPB, N.pooled(_all(A), SPAN_BPB))
    facts.append('noise: ' + N.describe(N.pooled(_all(A), SPAN_BPB), SPAN_BPB))
  old, _ = _multiplier_parts(A, BPB, N.pooled(_all(A), BPB))
  facts += [f'on eval/bpb, not deciding (each arm scored on its own validation slice: 49k bytes for char and '
            f'byte, 124k for BPE), {p["short"]}: {p["effect"].text()}' for p in old]
  for arm in TOK_ARMS:
    rows = A.get(arm, [])
    bpt, T = _mean(rows, 'claims/bytes_per_token'), _mean(rows, 'claims/seq_len')
    if bpt and T:
      facts.append(f'{arm[4:]}: {1 / bpt:.3g} tokens/byte; a context of {T:.0f} tokens holds {T * bpt:.0f} bytes')
    unk = _mean(rows, 'claims/span_unk')
    if unk:
      facts.append(f'{arm[4:]}: {unk:.0f} <unk> tokens in the span on average (characters unseen in training '
                   'cost the char arm less than their bytes would)')
  return _claim('tokenizer', 'Subword tokens (BPE) instead of characters',
                '"10-100x improvement" / "10-100x efficiency"', parts, facts, frontiers=info)


# ----------------------------------------------------------------------------- 2. RMSNorm
def _steptime_part(steptimes, pair, slow, fast, backend, label) -> dict:
  rows = [s for s in steptimes if s.get('pair') == pair and s.get('backend') == backend]
  if not rows:
    return _part(label, C.missing(f'no {backend} step-time measurement of {pair!r}', side='greater'))
  t = rows[-1]['times']
  if slow not in t or fast not in t:
    return _part(label, C.missing(f'step times lack {slow!r} or {fast!r}', side='greater'))
  return _part(label, C.rounds_ratio(t[slow], t[fast], side='greater'))


def rmsnorm(A, steptimes=(), **_) -> dict:
  parts = [_steptime_part(steptimes, 'norm', 'layernorm', 'base', 'cpu',
                          'step time LayerNorm / RMSNorm at equal dims (CPU): > 1 means RMSNorm is faster')]
  loss = _cmp(A, 'base', BPB, base='layernorm', label='bpb at equal steps, RMSNorm / LayerNorm (a side '
              'effect: the claim is about speed)')
  facts = [f'{loss["label"]}: {loss["effect"].text()} ({loss["verdict"]})']
  for backend in sorted({s.get('backend') for s in steptimes if s.get('pair') == 'norm'} - {'cpu'}):
    p = _steptime_part(steptimes, 'norm', 'layernorm', 'base', backend, f'step time ratio on {backend}')
    facts.append(f'{p["label"]}: {p["effect"].text()} ({p["verdict"]})')
  b, ln = A.get('base', []), A.get('layernorm', [])
  if b and ln:
    facts.append(f'parameters: RMSNorm {b[0].get("params")}, LayerNorm {ln[0].get("params")} (the bias terms)')
  return _claim('rmsnorm', 'RMSNorm instead of LayerNorm', '"simpler and faster"', parts, facts,
                side_effects=[loss])


# ----------------------------------------------------------------------------- 3. RoPE
def rope(A, **_) -> dict:
  """Decided by RoPE against learned positions (a table of 1024 rows, trained at 256) and against no positions,
  at 2x and 4x the training length; RoPE against itself (512 or 1024 vs 256) is a reported fact."""
  base = A.get('base', [])
  parts, facts = [], []
  hint = (f' (the arm {LEARNED_LONG!r}: learned positions with a table of 1024 rows trained at 256; train '
          f'{PENDING})')
  for L in LENGTHS[1:]:
    parts.append(_cmp(A, 'base', len_key(L), base=LEARNED_LONG, hint=hint,
                      label=f'bpb at {L} ({L // LENGTHS[0]}x the training length): RoPE / learned positions '
                            '(1024-row table)'))
    parts[-1]['short'] = f'RoPE / learned at {L}'
    parts.append(_cmp(A, 'base', len_key(L), base='nopos',
                      label=f'bpb at {L} ({L // LENGTHS[0]}x the training length): RoPE / no positions'))
    parts[-1]['short'] = f'RoPE / none at {L}'
  for L in LENGTHS[1:]:
    pairs = [(r.get(len_key(L)), r.get(len_key(LENGTHS[0]))) for r in base]
    p = _part(f'RoPE against itself, bpb at {L} / at {LENGTHS[0]} on the same tokens (< 1: it uses the longer '
              'window; > 1: it degrades past its training length)', C.paired_ratio(pairs, side='less'))
    facts.append(_fact(p))
  for arm in (LEARNED_LONG, 'learned'):
    p = _cmp(A, 'base', len_key(LENGTHS[0]), base=arm, label=f'bpb at {LENGTHS[0]} (the training length): '
             f'RoPE / {arm}')
    facts.append(_fact(p))
  facts += ['the learned arm with a 256-row table (its training length) has no position past 256: it is '
            'compared at 256 only',
            'the literature: RoPE is known not to extrapolate well past its training length unless its '
            'frequencies are rescaled (Press et al. 2022, ALiBi; Chen et al. 2023, position interpolation)']
  for key in (len_key(L) for L in LENGTHS[1:]):
    facts.append('noise: ' + N.describe(N.pooled(_all(A), key), key))
  return _claim('rope', 'RoPE instead of learned positions', '"better generalization to longer sequences"',
                parts, facts)


# ----------------------------------------------------------------------------- 4. longer context
def net_key(a: int, b: int) -> str:
  return f'claims/net@{a}-{b}'


def _with_net(A) -> dict:
  """Each row with claims/net@a-b = bpb at positions [a, b) / bpb at the first bucket: the within-model gain
  of a later position. Two models' net ratio (a difference in differences on the log scale) is the effect of
  the context they see there, with what makes one model better or worse everywhere (its training: batch
  shape, positions seen) divided out by the first bucket, where both see the same tokens of context."""
  (a0, b0) = BUCKETS[0]
  out = {}
  for arm, rows in A.items():
    new = []
    for r in rows:
      r = dict(r)
      near = r.get(pos_key(a0, b0))
      for a, b in BUCKETS[1:]:
        far = r.get(pos_key(a, b))
        if C.positive([near]) and C.positive([far]):
          r[net_key(a, b)] = far / near
      new.append(r)
    out[arm] = new
  return out


def context(A, **_) -> dict:
  A = _with_net(A)
  (a0, b0), (a1, b1), (a2, b2) = BUCKETS
  parts = [
      _cmp(A, 'ctx1024', net_key(a2, b2), label=f'bpb at document positions {a2}-{b2}, net of the {a0}-{b0} '
           'control: context 1024 / 256 (where only the longer context sees more)'),
      _cmp(A, 'base', net_key(a1, b1), base='ctx64', label=f'bpb at positions {a1}-{b1}, net of the {a0}-{b0} '
           'control: context 256 / 64')]
  facts = []
  for arm, base, (a, b) in (('ctx1024', 'base', (a2, b2)), ('base', 'ctx64', (a1, b1))):
    raw = _cmp(A, arm, pos_key(a, b), base=base, label=f'raw bpb at positions {a}-{b}: {arm} / {base}')
    ctl = _cmp(A, arm, pos_key(a0, b0), base=base, label=f'control, positions {a0}-{b0} (equal context): '
               f'{arm} / {base}')
    facts.append(f'{raw["label"]}: {raw["effect"].text()}; {ctl["label"]}: {ctl["effect"].text()} (a '
                 'difference in the control is training, not context; the deciding ratio divides it out)')
  for arm in ('ctx64', 'base', 'ctx1024'):
    rows = A.get(arm, [])
    per_tok = [{'f': r['flops'] / r['tokens']} for r in rows if C.positive([r.get('flops')])
               and C.positive([r.get('tokens')])]
    fpt, tps, T = _mean(per_tok, 'f'), _mean(rows, TPS), _mean(rows, 'claims/seq_len')
    if fpt:
      facts.append(f'context {T:.0f}: {fpt:.3g} training FLOPs/token, {tps or float("nan"):.3g} tokens/s '
                   'measured in its run' if T else f'{arm}: {fpt:.3g} training FLOPs/token')
  return _claim('context', 'Longer context', '"better understanding"', parts, facts)


# ----------------------------------------------------------------------------- 5. model size
def size(A, fit_result=None, **_) -> dict:
  parts = [_cmp(A, arm, BPB, label=f'bpb at equal tokens: {arm} / base') for arm in ('size-2x', 'size-4x')]
  parts.insert(0, _cmp(A, 'base', BPB, base='size-half', label='bpb at equal tokens: base / size-half'))
  facts = []
  noise = N.pooled(_all(A), BPB)
  interior = []
  for c, g in C.budget_groups(C.config_means(A.get('tok-bpe', []), BPB)):
    g = sorted((r for r in g if r.get('non_embedding_params')), key=lambda r: r['non_embedding_params'])
    if len(g) >= 3:
      best = min(range(len(g)), key=lambda i: g[i][BPB])
      big = C.log_ratio(g[-1]['values'], g[best]['values'], noise, side='greater')
      interior.append(_part(f'C = {c:.3g}: bpb of the largest size ({g[-1]["non_embedding_params"]:.3g}) / the '
                            f'best ({g[best]["non_embedding_params"]:.3g})', big))
  if interior:
    facts += [f'{p["label"]}: {p["effect"].text()} ({p["verdict"]})' for p in interior]
    worse = [p for p in interior if p['verdict'] == C.CONFIRMED]
    e = C.Effect(float(len(worse)), float(len(worse)), float(len(worse)), null=0.0, side='greater')
    parts.append(_part('"up to a point": budgets of the BPE frontier where the largest size is worse than a '
                       'smaller one beyond noise', e))
  else:
    parts.append(_part('"up to a point" (the frontier)', C.missing('no BPE frontier budget with >= 3 sizes',
                                                                    null=0.0, side='greater')))
  iso = (fit_result or {}).get('isoflop', {})
  why = isoflop_unconstrained(fit_result)
  if iso.get('a') is not None and not why:
    ci = iso['ci']['a']
    parts.append(_part('compute-optimal N grows with compute: a of N_opt ~ C^a (IsoFLOP fit of the BPE frontier)',
                       C.Effect(iso['a'], ci[0], ci[1], null=0.0, side='greater')))
  elif iso.get('a') is not None:
    facts.append(f'IsoFLOP fit of the BPE frontier: a = {iso["a"]:.3g}, not a result and not counted: {why}. '
                 'The IsoFLOP study (docs/results/isoflop_cpu/REPORT.md: the same corpus, 4 budgets x 5 sizes, every '
                 'minimum interior) is the design that measures it')
  else:
    facts.append('IsoFLOP fit of the BPE frontier: ' + (iso.get('skipped') or 'not run'))
  return _claim('size', 'Scale model size', '"bigger models = better performance (up to a point)"', parts, facts)


def isoflop_unconstrained(fit_result) -> str:
  """Why the fit's IsoFLOP exponent decides nothing ('' when it can): no interval, an interval of no width
  (3 sizes a budget make each parabola exact, and the bootstrap then returns one value), or the fit's own
  warnings about the IsoFLOP profiles and the design."""
  iso = (fit_result or {}).get('isoflop', {})
  ci = (iso.get('ci') or {}).get('a')
  if not ci or None in ci:
    return 'it has no interval'
  warns = [w for w in (fit_result or {}).get('warnings', []) if w.startswith(('isoflop:', 'design:'))]
  if not ci[1] - ci[0] > 1e-6 * max(abs(iso['a']), 1e-12):
    warns.insert(0, f'its bootstrap interval [{ci[0]:.6g}, {ci[1]:.6g}] has no width')
  return '; '.join(warns)


# ----------------------------------------------------------------------------- 6. larger dataset
def dataset(A, **_) -> dict:
  def rep(arm):
    return _cmp(A, arm, BPB, side='greater', label=f'bpb at equal tokens: {arm} (a slice of the corpus seen '
                f'{arm[3:]}x) / base (the corpus seen once)')
  r4 = rep('rep4')
  facts = [f'{r4["label"]}: {r4["effect"].text()} ({r4["verdict"]}; Muennighoff et al. 2023 found up to ~4 '
           'epochs nearly free, with unique sets of 100M tokens and more; whether the cost here follows from '
           'the small unique set is not measured)']
  return _claim('dataset', 'Larger dataset', '"more data"', [rep('rep16')], facts)


# ----------------------------------------------------------------------------- 7. sampling
SAMPLE_PAIRS = tuple((a, b) for a in ('topk40', 'topp0.9') for b in ('greedy', 'pure'))


def _sampling_label(a: str, b: str, metric: str) -> str:
  return f'{metric}: distance to human text, {a} minus {b} (< 0: {a} is closer)'


def _judge_facts(A, rows) -> list[str]:
  judge = rows[0][D.SAMPLES].get('judge')
  row = next((r for r in _all(A) if r.get('run') == judge), None)
  if row is None:
    return [f'the judge: run {judge} (not among the rows)']
  p = _cmp(A, C.arm_of(row), BPB, base='base', label=f'the judge ({C.arm_of(row)}, run {judge}) / the generator '
           '(base), validation bpb')
  return [f'{_fact(p)}: the judge is the strongest model the study trains with the base\'s tokenizer']


def sampling(A, **_) -> dict:
  base = A.get('base', [])
  got = D.arrays(base)
  facts = []
  if isinstance(got, str):
    why = f'{got}: train the base seeds and the judge ({PENDING}) and run claims_measure'
    parts = [_part(_sampling_label(a, b, ', '.join(D.METRICS)), C.missing(why, null=0.0, side='less'), f'{a} vs {b}')
             for a, b in SAMPLE_PAIRS]
    for mode in SAMPLE_MODES:
      cells = [f'{stat} {_mean(base, sample_key(mode, stat)):.3g}' for stat in ('rep4', 'distinct2', 'distinct3',
                                                                                'judge_bpb')
               if _mean(base, sample_key(mode, stat)) is not None]
      if cells:
        facts.append(f'earlier measurement, not deciding (no human reference; means over the seeds): {mode}: '
                     + ', '.join(cells))
    return _claim('sampling', 'Top-k / top-p sampling', '"better sampling"', parts, facts)
  X, rows = got
  point, boot = D.distances(X)
  parts = [_part(_sampling_label(a, b, m), D.closer(point, boot, a, b, m, len(rows)), f'{m}: {a} vs {b}')
           for a, b in SAMPLE_PAIRS for m in D.METRICS]
  for name in (D.HUMAN,) + SAMPLE_MODES:
    facts.append(f'{name}: ' + '; '.join(f'{m} {D.stat_effect(point, boot, name, m).text(3)}' for m in D.METRICS))
  facts.append(f'{len(rows)} seed(s) x {X[D.HUMAN]["rep4"].shape[1]} prompts; intervals: bootstrap over seeds, '
               'then prompts')
  facts += _judge_facts(A, rows)
  return _claim('sampling', 'Top-k / top-p sampling', '"better sampling"', parts, facts,
                distances={k: v for k, v in point.items() if len(k) == 2})


# ----------------------------------------------------------------------------- 8. mixed precision
def precision(A, steptimes=(), **_) -> dict:
  parts = [_steptime_part(steptimes, 'precision', 'base', 'bf16', 'cpu',
                          'step time float32 / bfloat16 (CPU): > 1 means bf16 is faster')]
  facts = []
  backends = sorted({s.get('backend') for s in steptimes if s.get('pair') == 'precision'} - {'cpu'})
  for backend in backends:
    parts.append(_steptime_part(steptimes, 'precision', 'base', 'bf16', backend,
                                f'step time float32 / bfloat16 ({backend})'))
  if not backends:
    parts.append(_part('step time float32 / bfloat16 on a GPU/TPU', C.Effect(
        None, impossible='no accelerator was lent to this study: run bench/seed_claims_accelerator.sh on one'),
        'step time on a GPU/TPU'))
  loss = _cmp(A, 'bf16', BPB, side='less', label='bpb at equal steps, bf16 / float32 (a side effect)')
  facts.append(f'{loss["label"]}: {loss["effect"].text()} ({loss["verdict"]})')
  return _claim('precision', 'Mixed precision (bfloat16)', '"faster training"', parts, facts, side_effects=[loss])


CLAIMS = (tokenizer, rmsnorm, rope, context, size, dataset, sampling, precision)


def evaluate(rows: Sequence[dict], steptimes: Sequence[dict] = (), fit_result: dict | None = None) -> list[dict]:
  """Every claim's parts, facts and verdict from the (measurement-merged) rows."""
  A = C.by_arm(rows)
  return [f(A, steptimes=list(steptimes), fit_result=fit_result) for f in CLAIMS]
