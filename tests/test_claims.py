"""Tests of the seed study's verdict logic (scaling/analysis/seed/claims.py, claims_study.py) on synthetic rows, and of its
measurements (evaluate.window_nll / bucket_bpb, sample_stats, data.subset) against independent references."""

import json
import math
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from scaling.analysis.seed import claims as C
from scaling.analysis.seed import study as S


# ----------------------------------------------------------------------------- verdict rules
@pytest.mark.parametrize('effect, expected', [
    (C.Effect(1.02, 0.97, 1.08, side='less'), C.NO_DIFFERENCE),            # interval around the null
    (C.Effect(1.0, 0.5, 2.0, side='greater', threshold=10), C.NO_DIFFERENCE),   # a multiplier around 1
    (C.Effect(0.9, 0.85, 0.95, side='less'), C.CONFIRMED),
    (C.Effect(1.1, 1.05, 1.2, side='less'), C.REFUTED),                    # the other side of the null
    (C.Effect(20, 12, 30, side='greater', threshold=10), C.CONFIRMED),     # reaches the claimed size
    (C.Effect(4, 3, 5, side='greater', threshold=10), C.REFUTED),          # real, but smaller than claimed
    (C.Effect(9, 5, 20, side='greater', threshold=10), C.INCONCLUSIVE),    # straddles the claimed size
    (C.Effect(0.5, 0.4, 0.6, side='greater', threshold=10), C.REFUTED),
    (C.Effect(0.5, 0.4, 0.6, side='less', threshold=0.8), C.CONFIRMED),
    (C.Effect(0.7, 0.6, 0.9, side='less', threshold=0.8), C.INCONCLUSIVE),
    (C.Effect(None, missing='no run'), C.NOT_MEASURED),
    (C.Effect(1.5), C.NOT_MEASURED),                                       # a value without an interval
    (C.Effect(1.5, missing='one seed: no interval'), C.NOT_MEASURED),
    (C.Effect(None, impossible='learned positions'), C.NOT_MEASURABLE),
])
def test_verdict_rules(effect, expected):
  assert C.verdict(effect) == expected


# Rule 6 of claims.RULES worked out by hand for each case: (part verdicts, the claim's verdict, what the measured
# parts show by themselves). CF confirmed, RF refuted, ND no difference, IN inconclusive; NM not measured, NH not
# measurable here, DX not decided (extrapolation).
CF, RF, ND, IN = C.CONFIRMED, C.REFUTED, C.NO_DIFFERENCE, C.INCONCLUSIVE
NM, NH, DX = C.NOT_MEASURED, C.NOT_MEASURABLE, C.NOT_DECIDED
COMBINE_TABLE = [
    ([], NM, None),                      # a claim without parts has nothing measured
    ([CF], CF, CF),
    ([CF, CF, CF], CF, CF),              # every part confirmed
    ([CF, RF], RF, RF),                  # all measured, one refuted: the conjunction is refuted
    ([RF, IN, ND], RF, RF),
    ([CF, ND], ND, ND),                  # all measured, none refuted, not all confirmed, none inconclusive
    ([ND, IN], IN, IN),
    ([CF, IN, ND], IN, IN),
    ([CF, NH], C.PARTLY_MEASURED, CF),   # the precision claim: a GPU part this machine cannot measure
    ([RF, RF, NH, NH], C.PARTLY_MEASURED, RF),   # the old RoPE claim: never "refuted" on the measured parts alone
    ([CF, NM], C.PARTLY_MEASURED, CF),
    ([RF, DX, DX], C.PARTLY_MEASURED, RF),       # a multiplier measured at one budget, extrapolated at two
    ([NM], NM, None),
    ([NM, NM], NM, None),
    ([NH, NH], NH, None),                # every part impossible here
    ([DX], DX, None),
    ([NM, NH], NM, None),                # no part measured, kinds mixed
    ([DX, NH, NM], NM, None),
]


@pytest.mark.parametrize('parts, claim, measured', COMBINE_TABLE)
def test_combine_follows_the_printed_rule(parts, claim, measured):
  assert C.combine(parts) == claim
  assert C.measured_verdict(parts) == measured


def test_combine_rejects_an_unknown_verdict():
  with pytest.raises(ValueError, match='unknown part verdict'):
    C.combine([C.CONFIRMED, 'not confirmed'])


def test_the_printed_rule_names_partly_measured():
  rule = C.RULES[5]
  assert 'partly measured' in rule and 'not as the claim\'s verdict' in rule
  assert 'not decided' in C.RULES[1] and 'pooled' in C.RULES[0]


def test_log_ratio_interval_by_hand():
  base = [2.00, 2.02, 1.98]
  arm = [1.80]
  sd = statistics.stdev([math.log(v) for v in base])
  d = math.log(1.80) - statistics.fmean(math.log(v) for v in base)
  half = stats.t.ppf(0.95, 2) * sd * math.sqrt(1 + 1 / 3)
  e = C.log_ratio(arm, base, C.noise_of(base))
  assert e.value == pytest.approx(math.exp(d))
  assert (e.lo, e.hi) == (pytest.approx(math.exp(d - half)), pytest.approx(math.exp(d + half)))
  assert C.log_ratio(arm, base, None).missing   # no seeds: the value, no interval, not measured


def test_paired_difference_by_hand():
  pairs = [(0.05, 0.6), (0.0, 0.7), (0.1, 0.65)]
  d = [a - b for a, b in pairs]
  half = stats.t.ppf(0.95, 2) * statistics.stdev(d) / math.sqrt(3)
  e = C.paired_difference(pairs, side='less')
  assert (e.value, e.lo, e.hi) == (pytest.approx(statistics.fmean(d)), pytest.approx(statistics.fmean(d) - half),
                                   pytest.approx(statistics.fmean(d) + half))
  assert e.null == 0 and C.verdict(e) == C.CONFIRMED     # a zero rate is a value, not a missing one


def test_paired_ratio_by_hand():
  pairs = [(1.0, 2.0), (1.2, 2.0), (0.9, 2.1)]
  r = [math.log(a / b) for a, b in pairs]
  half = stats.t.ppf(0.95, 2) * statistics.stdev(r) / math.sqrt(3)
  e = C.paired_ratio(pairs)
  assert e.value == pytest.approx(math.exp(statistics.fmean(r)))
  assert e.hi == pytest.approx(math.exp(statistics.fmean(r) + half))


# ----------------------------------------------------------------------------- synthetic study rows
SPAN = S.SPAN_BPB


def _row(arm, bpb, *, seed=0, flops=1e13, n=4e5, **extra):
  """A finished study row; its overrides name its configuration (arm, budget, size) and seed."""
  return {'run': f'{arm}-{seed}-{flops:g}-{n:g}', 'state': 'done', 'name': f'{C.PREFIX}{arm}', 'eval/bpb': bpb,
          'flops': flops, 'non_embedding_params': n,
          'overrides': {'name': f'{C.PREFIX}{arm}', 'flops': flops, 'n': n, 'train.seed': seed}, **extra}


def _frontier(arm, law, budgets=(1e12, 3e12, 1e13, 3e13), sizes=(1e5, 3e5, 1e6)):
  """Runs whose best size at C has bpb law(C) (eval/bpb and the same-bytes bpb alike); the other sizes 5% worse."""
  rows = []
  for c in budgets:
    for i, n in enumerate(sizes):
      v = law(c) * (1.0 if i == 1 else 1.05)
      rows.append(_row(arm, v, flops=c, n=n, **{SPAN: v, 'claims/span_digest': 'same'}))
  return rows


BASE_SEEDS = [_row('base', v, seed=s, **{SPAN: v}) for s, v in enumerate((1.000, 1.002, 0.998))]


def _claim(rows, key, steptimes=()):
  return next(c for c in S.evaluate(rows, steptimes) if c['key'] == key)


def test_multiplier_per_budget_inside_the_frontier_only():
  bpe = lambda c: 3.0 * c ** -0.1
  char = lambda c: bpe(c / 4)       # char needs exactly 4x the compute for any bpb
  byte = lambda c: bpe(c / 30)      # byte 30x
  rows = BASE_SEEDS + _frontier('tok-bpe', bpe, budgets=(1e12, 3e12, 1e13)) + _frontier('tok-char', char) + \
      _frontier('tok-byte', byte, budgets=(1e12, 3e12, 1e13, 3e13, 1e14))
  c = _claim(rows, 'tokenizer')
  by = {p['short']: p for p in c['parts']}
  # char reaches BPE's bpb at 4 C: inside its frontier (1e12..3e13) for C = 1e12, 3e12; 4e13 is past it
  for cb in ('1e+12', '3e+12'):
    e = by[f'char / BPE at C = {cb}']['effect']
    assert e.value == pytest.approx(4.0, rel=1e-9) and e.lo < 4.0 < e.hi
    assert by[f'char / BPE at C = {cb}']['verdict'] == C.REFUTED        # real, short of "10-100x"
    e = by[f'byte / BPE at C = {cb}']['effect']
    assert e.value == pytest.approx(30.0, rel=1e-9)
    assert by[f'byte / BPE at C = {cb}']['verdict'] == C.CONFIRMED      # reaches 10x
  for arm in ('char', 'byte'):
    part = by[f'{arm} / BPE at C = 1e+13']
    assert part['verdict'] == C.NOT_DECIDED and 'needs a larger budget' in part['effect'].extrapolated
  assert c['verdict'] == C.PARTLY_MEASURED                              # never refuted on the measured parts alone
  assert C.measured_verdict([p['verdict'] for p in c['parts']]) == C.REFUTED


def test_missing_arms_are_not_measured_never_not_confirmed():
  for rows in ([], BASE_SEEDS, [_row('layernorm', 1.0)]):
    for c in S.evaluate(rows):
      assert c['verdict'] in (C.NOT_MEASURED, C.NOT_MEASURABLE), (c['key'], c['verdict'])
      assert c['verdict'] != 'not confirmed'
  # a frontier with two budgets has no model-form term: not measured
  rows = BASE_SEEDS + _frontier('tok-bpe', lambda c: c ** -0.1, budgets=(1e12, 1e13)) + \
      _frontier('tok-char', lambda c: c ** -0.1, budgets=(1e12, 1e13)) + \
      _frontier('tok-byte', lambda c: c ** -0.1, budgets=(1e12, 1e13))
  assert _claim(rows, 'tokenizer')['parts'][0]['verdict'] == C.NOT_MEASURED
  # eval/bpb alone (each arm its own validation slice) decides nothing
  rows = [{k: v for k, v in r.items() if k != SPAN} for r in rows]
  c = _claim(rows, 'tokenizer')
  assert c['verdict'] == C.NOT_MEASURED and 'claims/span_bpb' in c['parts'][0]['effect'].missing


def test_equal_token_claims_follow_the_numbers():
  rows = BASE_SEEDS + [_row('size-half', 1.10), _row('size-2x', 0.95), _row('size-4x', 1.0005),
                       _row('rep16', 1.08), _row('rep4', 1.001), _row('bf16', 1.0)]
  size = _claim(rows, 'size')
  verdicts = {p['label'].split(': ')[-1]: p['verdict'] for p in size['parts'][:3]}
  assert verdicts == {'base / size-half': C.CONFIRMED, 'size-2x / base': C.CONFIRMED,
                      'size-4x / base': C.NO_DIFFERENCE}
  assert _claim(rows, 'dataset')['verdict'] == C.CONFIRMED     # repeated 16x is worse
  prec = _claim(rows, 'precision')
  assert prec['verdict'] == C.NOT_MEASURED                     # no step times
  times = [{'kind': 'steptime', 'pair': 'precision', 'backend': 'cpu',
            'times': {'base': [0.10, 0.11, 0.10, 0.12], 'bf16': [0.21, 0.23, 0.20, 0.25]}}]
  prec = _claim(rows, 'precision', times)      # bf16 2x slower on this CPU; no GPU part here: partly measured
  assert prec['verdict'] == C.PARTLY_MEASURED and C.measured_verdict([p['verdict'] for p in prec['parts']]) == C.REFUTED


def test_an_isoflop_fit_without_a_real_interval_is_a_fact_not_a_part():
  rows = BASE_SEEDS + [_row('size-half', 1.10), _row('size-2x', 0.95), _row('size-4x', 0.9)]
  label = 'compute-optimal N grows with compute'
  good = {'isoflop': {'a': 0.5, 'ci': {'a': [0.42, 0.61]}}, 'warnings': []}
  c = next(c for c in S.evaluate(rows, (), good) if c['key'] == 'size')
  (part,) = [p for p in c['parts'] if p['label'].startswith(label)]
  assert part['verdict'] == C.CONFIRMED and part['effect'].lo == 0.42
  # 3 sizes a budget: exact parabolas, a bootstrap of one value; or the fit's own warnings
  for fit, why in (({'isoflop': {'a': 0.519, 'ci': {'a': [0.5194452828, 0.5194452829]}}, 'warnings': []}, 'no width'),
                   ({'isoflop': {'a': 0.5, 'ci': {'a': [0.42, 0.61]}},
                     'warnings': ['design: the lowest loss of budget(s) C=2e+12 is at an end of their sizes']},
                    'at an end of their sizes')):
    c = next(c for c in S.evaluate(rows, (), fit) if c['key'] == 'size')
    assert not [p for p in c['parts'] if p['label'].startswith(label)]
    assert any('not a result and not counted' in f and why in f for f in c['facts'])


def test_refuted_by_a_real_effect_short_of_the_claimed_size_says_so():
  from scaling.analysis.seed.render import verdict_cell
  short = {'verdict': C.REFUTED, 'parts': [
      {'verdict': C.REFUTED, 'effect': C.Effect(4.0, 3.5, 4.8, side='greater', threshold=10)}]}
  assert verdict_cell(short) == '**refuted** (a real effect, smaller than claimed)'
  other_side = {'verdict': C.REFUTED, 'parts': [
      {'verdict': C.REFUTED, 'effect': C.Effect(0.5, 0.4, 0.6, side='greater', threshold=10)}]}
  assert verdict_cell(other_side) == '**refuted**'


def test_rope_and_context_parts():
  lk = S.len_key
  rope_seed = lambda s, r: _row('base', 1.0, seed=s, **{lk(256): 1.0 + r, lk(512): 1.05 + r, lk(1024): 1.10 + r})
  learned = lambda s, r: _row(S.LEARNED_LONG, 1.02, seed=s, **{lk(256): 1.02 + r, lk(512): 1.5 + r, lk(1024): 2.0 + r})
  rows = [rope_seed(0, 0.0), rope_seed(1, 0.002), rope_seed(2, -0.002),
          _row('nopos', 1.1, **{lk(256): 1.1, lk(512): 1.2, lk(1024): 1.4}), _row('learned', 1.02, **{lk(256): 1.02})]
  c = _claim(rows, 'rope')
  by = {p['short']: p['verdict'] for p in c['parts']}
  assert by == {'RoPE / learned at 512': C.NOT_MEASURED, 'RoPE / learned at 1024': C.NOT_MEASURED,
                'RoPE / none at 512': C.CONFIRMED, 'RoPE / none at 1024': C.CONFIRMED}
  assert c['verdict'] == C.PARTLY_MEASURED
  # RoPE degrading past its training length (1.05, 1.10 against itself) is a fact, not a deciding part
  assert any(f.startswith('RoPE against itself, bpb at 512') and '(refuted)' in f for f in c['facts'])
  rows += [learned(s, r) for s, r in enumerate((0.0, 0.01, -0.01))]
  c = _claim(rows, 'rope')
  assert [p['verdict'] for p in c['parts']] == [C.CONFIRMED] * 4 and c['verdict'] == C.CONFIRMED
  # the noise of claims/len@512 is pooled over base and learned-1024 (3 seeds each): df 4, by hand
  e = c['parts'][0]['effect']
  base_l = [math.log(1.05 + r) for r in (0.0, 0.002, -0.002)]
  lrn_l = [math.log(1.5 + r) for r in (0.0, 0.01, -0.01)]
  ss = sum((x - statistics.fmean(base_l)) ** 2 for x in base_l) + sum((x - statistics.fmean(lrn_l)) ** 2 for x in lrn_l)
  d = statistics.fmean(base_l) - statistics.fmean(lrn_l)
  half = stats.t.ppf(0.95, 4) * math.sqrt(ss / 4) * math.sqrt(2 / 3)
  assert (e.value, e.lo, e.hi) == (pytest.approx(math.exp(d)), pytest.approx(math.exp(d - half)),
                                   pytest.approx(math.exp(d + half)))
  pk = S.pos_key
  ctx = lambda arm, s, v: _row(arm, 1.0, seed=s, **{pk(0, 64): 1.2 + v, pk(64, 256): 1.0 + v, pk(256, 1024): 0.98 + v})
  rows = [ctx('base', s, v) for s, v in enumerate((0.0, 0.001, -0.001))] + [
      _row('ctx1024', 1.0, **{pk(0, 64): 1.2, pk(64, 256): 1.0, pk(256, 1024): 0.90})]
  c = _claim(rows, 'context')
  assert c['parts'][0]['verdict'] == C.CONFIRMED
  # the net ratio by hand: (0.90 / 1.2) / geometric mean over the seeds of (0.98 + v) / (1.2 + v)
  base_net = [(0.98 + v) / (1.2 + v) for v in (0.0, 0.001, -0.001)]
  want = (0.90 / 1.2) / math.exp(statistics.mean(math.log(x) for x in base_net))
  assert c['parts'][0]['effect'].value == pytest.approx(want, rel=1e-12)
  assert c['parts'][1]['verdict'] == C.NOT_MEASURED   # no ctx64 arm
  assert c['verdict'] == C.PARTLY_MEASURED
  # a longer-context arm better everywhere by its training (the control bucket too) gains nothing net
  rows = [ctx('base', s, v) for s, v in enumerate((0.0, 0.001, -0.001))] + [
      _row('ctx1024', 1.0, **{pk(0, 64): 1.2 * 0.9, pk(64, 256): 1.0 * 0.9, pk(256, 1024): 0.98 * 0.9})]
  c = _claim(rows, 'context')
  assert c['parts'][0]['effect'].value == pytest.approx(1.0, abs=2e-3)
  assert c['parts'][0]['verdict'] == C.NO_DIFFERENCE
  assert any('raw bpb at positions 256-1024' in f for f in c['facts'])


def test_report_renders_the_study(tmp_path):
  from scaling.analysis import report
  bpe = lambda c: 3.0 * c ** -0.1
  rows = BASE_SEEDS + _frontier('tok-bpe', bpe) + _frontier('tok-char', lambda c: bpe(c / 4)) + [
      _row('layernorm', 1.01)]
  with open(tmp_path / 'results.jsonl', 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in rows)
  with open(tmp_path / 'claims.jsonl', 'w') as f:
    f.write(json.dumps({'kind': 'steptime', 'pair': 'norm', 'backend': 'cpu',
                        'times': {'base': [1.0, 1.1, 1.0], 'layernorm': [1.2, 1.3, 1.25]}}) + '\n')
    f.write(json.dumps({'kind': 'meta', 'wall_s': 600}) + '\n')
  text = open(report.write_report(str(tmp_path), fit=False)).read()
  assert 'Verdict rules' in text and text.index('Verdict rules') < text.index('| Subword tokens')
  assert '| RMSNorm instead of LayerNorm | "simpler and faster" | **confirmed** |' in text
  assert 'Total wall time' in text and '10.0 min of claims_measure' in text
  # no part of the precision claim measured (no bf16 step times; the GPU part impossible here): not measured
  assert '| Mixed precision (bfloat16) | "faster training" | **not measured** |' in text
  assert 'Noise model' in text and 'eval/bpb: sd of log' in text
  assert os.path.isfile(tmp_path / 'claim_tokenizer.png')


# ----------------------------------------------------------------------------- measurements
@pytest.mark.slow
def test_window_nll_and_buckets_against_a_token_loop(make_model):
  from scaling.analysis.seed.positions import bucket_bpb, window_nll
  model = make_model(seq_len=16)
  rng = np.random.default_rng(0)
  docs = rng.integers(0, 97, (3, 8 + 1)).astype(np.int32)
  got = window_nll(model, docs, 4, batch_size=4)
  ref = np.zeros((3, 8))
  for n in range(3):
    for p in range(8):
      start = (p // 4) * 4
      ctx = jnp.asarray(docs[n, start:p + 1][None])
      logp = jax.nn.log_softmax(model(ctx)[0, -1].astype(jnp.float32))
      ref[n, p] = -float(logp[docs[n, p + 1]])
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
  b = bucket_bpb(got, ((0, 2), (2, 8), (8, 16)), bytes_per_token=2.0)
  assert set(b) == {(0, 2), (2, 8)}    # a bucket past the scored length is left out
  assert b[(2, 8)] == pytest.approx(ref[:, 2:8].mean() / math.log(2) / 2.0, rel=1e-4)


def test_window_nll_refuses_learned_positions_past_the_table(make_model):
  from scaling.analysis.seed.positions import window_nll
  from scaling.train.evaluate import PositionsError
  model = make_model(seq_len=4, position='learned')
  with pytest.raises(PositionsError):
    window_nll(model, np.zeros((1, 9), np.int32), 8)


def test_rep_and_distinct_n_by_hand():
  from scaling.analysis.seed.sample_stats import distinct_n, rep_n
  assert rep_n([1, 2, 3, 1, 2, 3], 2) == pytest.approx(1 - 3 / 5)   # bigrams 12 23 31 12 23
  assert rep_n([1, 2, 3, 4], 4) == 0.0
  assert rep_n([5, 5, 5, 5, 5], 1) == pytest.approx(1 - 1 / 5)
  assert rep_n([1, 2], 4) is None
  assert distinct_n([[1, 2, 1, 2], [1, 2, 3]], 2) == pytest.approx(3 / 5)   # 12 21 12 | 12 23
  assert distinct_n([[7]], 2) is None


def test_continuation_nll_against_a_loop(make_model):
  from scaling.analysis.seed.sample_stats import bits_per_byte, continuation_nll
  model = make_model()
  prompts, conts = [[3, 4, 5], [6]], [[7, 8], [9, 10, 11]]
  got = continuation_nll(model, prompts, conts)
  for p, c, g in zip(prompts, conts, got):
    seq = p + c
    ref = 0.0
    for i in range(len(p), len(seq)):
      logp = jax.nn.log_softmax(model(jnp.asarray([seq[:i]]))[0, -1].astype(jnp.float32))
      ref -= float(logp[seq[i]])
    assert g == pytest.approx(ref, rel=1e-4)
  assert bits_per_byte([2 * math.log(2)], ['ab']) == pytest.approx(1.0)


def test_train_subset_keeps_tokenizer_and_validation(tmp_path):
  import ml_collections

  from scaling.data.prepare import prepare
  from scaling.data.subset import document_order
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  rng = np.random.default_rng(0)
  for i in range(30):
    (corpus / f'd{i:02d}.txt').write_text(' '.join(f'w{rng.integers(50)}' for _ in range(40 + 7 * i)))
  cfg = ml_collections.ConfigDict(dict(corpus=str(corpus / '*.txt'), text_field='text', tokenizer='byte',
                                       vocab_size=4096, data_dir=str(tmp_path / 'data'), val_fraction=0.2,
                                       document_masking=False, num_workers=0, train_tokens=0))
  full = prepare(cfg, verbose=False)
  cfg.train_tokens = 1000
  sub = prepare(cfg, verbose=False)
  assert sub['data_dir'] != full['data_dir'] and sub['train_tokens'] == 1000
  for name in ('val.bin', 'tokenizer.json', 'split.json'):
    assert open(os.path.join(sub['data_dir'], name), 'rb').read() == open(os.path.join(full['data_dir'], name),
                                                                           'rb').read()
  from scaling.data.shards import open_split
  f_tr, s_tr = open_split(full['data_dir'], 'train'), open_split(sub['data_dir'], 'train')   # crc checked
  off = np.asarray(f_tr.doc_offsets)
  ref = np.concatenate([np.asarray(f_tr.tokens[off[d]:off[d + 1]]) for d in document_order(len(off) - 1)])[:1000]
  np.testing.assert_array_equal(np.asarray(s_tr.tokens), ref)
  assert prepare(cfg, verbose=False)['data_dir'] == sub['data_dir']   # a second call reuses it
  cfg.train_tokens = 10 ** 9
  with pytest.raises(ValueError, match='exceeds the training split'):
    prepare(cfg, verbose=False)


@pytest.mark.slow
def test_steptime_compare_returns_paired_rounds(tiny_cfg):
  from scaling.analysis.seed import steptime
  cfg = tiny_cfg()
  with cfg.unlocked():
    cfg.train.batch_size = 8
  out = steptime.compare({'a': cfg, 'b': cfg}, rounds=2, steps=1)
  assert set(out['times']) == {'a', 'b'} and all(len(v) == 2 and min(v) > 0 for v in out['times'].values())
  with pytest.raises(ValueError):
    steptime.compare({'a': cfg}, rounds=1)


# ----------------------------------------------------------------------------- the sweep's design
def test_sweep_design():
  from scaling.config.load import load_module
  mod = load_module('configs/sweeps/seed_upgrades.py')
  for arg in (None, 'quick'):
    runs = mod.get_sweep(arg)
    arms = {r['name'].split(':', 1)[1] for r in runs}
    assert {'base', 'layernorm', 'learned', 'nopos', 'bf16', 'ctx64', 'ctx1024', 'rep4', 'rep16',
            'tok-bpe', 'tok-char', 'tok-byte'} <= arms
    equal = [r for r in runs if not r['name'].endswith(('tok-bpe', 'tok-char', 'tok-byte'))]
    tokens = {r['train.steps'] * r['train.batch_size'] * r['model.seq_len'] for r in equal}
    assert len(tokens) == 1     # every equal-token arm reads the same tokens
    assert all(mod.estimate_s(r) > 0 for r in runs)
  d = mod.design(None)
  assert d['budgets'][-1] / d['budgets'][0] >= 10 and len(d['budgets']) >= 3
  with pytest.raises(ValueError, match='unknown argument'):
    mod.get_sweep('nope')
