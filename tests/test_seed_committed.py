"""The committed seed study (docs/results/seed_upgrades, both rounds merged) under the new rules: the verdict
table's deciding numbers of three claims worked out by hand from results.jsonl and claims.jsonl (the pooled noise
included), and the verdicts the rules give from the parts."""

import json
import math
import pathlib
import statistics

import pytest
from scipy import stats

from scaling.analysis.seed import claims as C
from scaling.analysis.seed import render as R
from scaling.analysis.seed import study as S

ROOT = pathlib.Path(__file__).resolve().parent.parent / 'docs' / 'results' / 'seed_upgrades'


@pytest.fixture(scope='module')
def data():
  with open(ROOT / 'results.jsonl', encoding='utf-8') as f:
    rows = [json.loads(x) for x in f if x.strip()]
  per_run, other = C.read_measurements(str(ROOT))
  rows = C.merged(rows, per_run)
  claims = {c['key']: c for c in S.evaluate(rows, [o for o in other if o.get('kind') == 'steptime'])}
  by_arm = {}
  for r in rows:
    by_arm.setdefault(r['name'].split(':', 1)[1], []).append(r)
  return rows, other, claims, by_arm


def _pooled(rows, key):
  """The pooled log-scale noise of `key` by hand: every configuration (overrides without train.seed) with two or
  more seeds gives its squares about its own mean; sd^2 = their sum over the summed degrees of freedom."""
  groups = {}
  for r in rows:
    v = r.get(key)
    if isinstance(v, float) and v > 0:
      ov = {k: x for k, x in r['overrides'].items() if k != 'train.seed'}
      groups.setdefault(json.dumps(ov, sort_keys=True), []).append(math.log(v))
  ss = sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups.values() if len(g) > 1)
  df = sum(len(g) - 1 for g in groups.values() if len(g) > 1)
  return math.sqrt(ss / df), df


def _t_interval(arm_vals, base_vals, sd, df):
  """Geometric-mean ratio with the Student-t interval of the pooled noise, by hand."""
  d = statistics.fmean(math.log(v) for v in arm_vals) - statistics.fmean(math.log(v) for v in base_vals)
  half = stats.t.ppf(0.95, df) * sd * math.sqrt(1 / len(arm_vals) + 1 / len(base_vals))
  return math.exp(d), math.exp(d - half), math.exp(d + half)


def _cell(v, lo, hi):
  return f'{v:.4g} [{lo:.4g}, {hi:.4g}]'


def test_dataset_deciding_number_by_hand(data):
  rows, _, claims, A = data
  sd, df = _pooled(rows, 'eval/bpb')
  assert df == 17                                            # 12 configurations with 2-5 seeds (REPORT.md)
  v, lo, hi = _t_interval([A['rep16'][0]['eval/bpb']], [r['eval/bpb'] for r in A['base']], sd, df)
  c = claims['dataset']
  e = c['parts'][0]['effect']
  assert (e.value, e.lo, e.hi) == (pytest.approx(v), pytest.approx(lo), pytest.approx(hi))
  assert lo > 1 and c['verdict'] == C.CONFIRMED               # rule 5: the interval lies above 1, the claimed side
  assert R.deciding(c)['effect'].text() == _cell(v, lo, hi) == '1.207 [1.169, 1.248]'


def test_rope_deciding_number_by_hand(data):
  rows, _, claims, A = data
  c = claims['rope']
  by = {p['short']: p for p in c['parts']}
  for L in (512, 1024):
    key = f'claims/len@{L}'
    sd, df = _pooled(rows, key)
    base = [r[key] for r in A['base']]
    for other, short in (('nopos', 'none'), ('learned-1024', 'learned')):
      v, lo, hi = _t_interval(base, [r[key] for r in A[other]], sd, df)
      e = by[f'RoPE / {short} at {L}']['effect']
      assert (e.value, e.lo, e.hi) == (pytest.approx(v), pytest.approx(lo), pytest.approx(hi))
  # by the rules: at 512 both intervals lie below 1 (confirmed); at 1024 against no positions the interval lies
  # above 1 (refuted), against learned-1024 it holds 1 (no difference); one refuted part refutes the claim
  assert [by[f'RoPE / {s} at 512']['verdict'] for s in ('none', 'learned')] == [C.CONFIRMED] * 2
  assert by['RoPE / none at 1024']['verdict'] == C.REFUTED
  assert by['RoPE / learned at 1024']['verdict'] == C.NO_DIFFERENCE
  assert c['verdict'] == C.REFUTED
  sd, df = _pooled(rows, 'claims/len@1024')   # the deciding part: the refuted one, RoPE / none at 1024
  base = [r['claims/len@1024'] for r in A['base']]
  by_hand = _cell(*_t_interval(base, [r['claims/len@1024'] for r in A['nopos']], sd, df))
  assert R.deciding(c)['effect'].text() == by_hand == '1.034 [1.012, 1.056]'
  assert not any('against itself' in p['label'] for p in c['parts'])   # RoPE against itself is a fact
  assert any('against itself' in f for f in c['facts'])


def test_precision_is_partly_measured_by_hand(data):
  _, other, claims, _ = data
  t = next(o for o in other if o.get('pair') == 'precision')['times']
  r = [math.log(a / b) for a, b in zip(t['base'], t['bf16'])]
  half = stats.t.ppf(0.95, len(r) - 1) * statistics.stdev(r) / math.sqrt(len(r))
  e = claims['precision']['parts'][0]['effect']
  assert e.value == pytest.approx(math.exp(statistics.fmean(r)))
  assert e.lo == pytest.approx(math.exp(statistics.fmean(r) - half)) and e.lo > 1   # bf16 faster on this CPU
  assert claims['precision']['verdict'] == C.PARTLY_MEASURED                      # the GPU part: not measurable here
  assert 'by themselves show: confirmed' in R.verdict_cell(claims['precision'])


def test_tokenizer_is_partly_measured_and_names_its_undecided_parts(data):
  _, _, claims, _ = data
  c = claims['tokenizer']
  verdicts = [p['verdict'] for p in c['parts']]
  assert len(verdicts) == 6 and verdicts.count(C.NOT_DECIDED) == 3       # 2 budgets the frontiers do not reach
  measured = [p for p in c['parts'] if p['verdict'] != C.NOT_DECIDED]
  # rule 5: "10-100x" needs the interval to reach 10; every measured multiplier's upper end is below 10
  assert all(p['effect'].hi < 10 for p in measured)
  assert c['verdict'] == C.PARTLY_MEASURED and 'by themselves show: refuted' in R.verdict_cell(c)


def test_every_claim_has_its_deciding_measurement(data):
  _, _, claims, _ = data
  assert claims['sampling']['verdict'] == C.NO_DIFFERENCE
  assert not any(c['verdict'] == C.NOT_MEASURED for c in claims.values())
