"""The sampling claim (scaling/analysis/seed/decoding.py, study.sampling): each decoding's distance to human text,
against values worked out by hand and a slow reference bootstrap; the per-continuation statistics of samples.py."""

import numpy as np
import pytest

from scaling.analysis.seed import claims as C
from scaling.analysis.seed import decoding as D
from scaling.analysis.seed import study as S


def _stats(P, rep4, d2, d3, bits, nbytes):
  return {'rep4': [rep4] * P, 'distinct2': [d2] * P, 'distinct3': [d3] * P, 'bits': [bits] * P, 'bytes': [nbytes] * P}


def _base(seed, stats):
  return {'run': f'base-{seed}', 'state': 'done', 'name': f'{C.PREFIX}base', 'eval/bpb': 2.0,
          'overrides': {'name': f'{C.PREFIX}base', 'train.seed': seed},
          D.SAMPLES: {'judge': 'j', 'stats': stats}}


CONSTANT = {'human': _stats(4, 0.05, 0.80, 0.95, 600.0, 300),       # 2.0 bits per byte
            'greedy': _stats(4, 0.60, 0.20, 0.25, 300.0, 300),      # 1.0
            'topk40': _stats(4, 0.06, 0.75, 0.93, 660.0, 300),      # 2.2
            'topp0.9': _stats(4, 0.04, 0.78, 0.94, 690.0, 300),     # 2.3
            'pure': _stats(4, 0.02, 0.90, 0.99, 900.0, 300)}        # 3.0


def test_distances_by_hand_on_constant_statistics():
  rows = [_base(s, CONSTANT) for s in range(3)]
  c = next(c for c in S.evaluate(rows) if c['key'] == 'sampling')
  by = {p['short']: p for p in c['parts']}
  # |0.06 - 0.05| - |0.60 - 0.05|; every draw gives the same number: the interval is that point
  e = by['rep4: topk40 vs greedy']['effect']
  assert e.value == pytest.approx(0.01 - 0.55) and e.lo == pytest.approx(e.value) and e.hi == pytest.approx(e.value)
  assert by['rep4: topk40 vs greedy']['verdict'] == C.CONFIRMED
  # judge bpb: |2.2 - 2.0| - |3.0 - 2.0| (pure is farther) and |2.3 - 2.0| - |1.0 - 2.0| (greedy is farther)
  assert by['judge_bpb: topk40 vs pure']['effect'].value == pytest.approx(0.2 - 1.0)
  assert by['judge_bpb: topp0.9 vs greedy']['effect'].value == pytest.approx(0.3 - 1.0)
  # distinct-2: pure (0.90) sits 0.10 from human, top-p (0.78) 0.02: top-p closer; top-k (0.75) 0.05
  assert by['distinct2: topk40 vs pure']['effect'].value == pytest.approx(0.05 - 0.10)
  assert c['verdict'] == C.CONFIRMED
  # a mode farther from human text than the alternative refutes that part
  farther = {**CONSTANT, 'topk40': _stats(4, 0.06, 0.75, 0.93, 1200.0, 300)}   # 4.0 bits per byte
  c = next(c for c in S.evaluate([_base(s, farther) for s in range(3)]) if c['key'] == 'sampling')
  by = {p['short']: p['verdict'] for p in c['parts']}
  assert by['judge_bpb: topk40 vs pure'] == C.REFUTED and c['verdict'] == C.REFUTED


def test_equal_modes_are_no_difference_and_one_seed_has_no_interval():
  same = {**CONSTANT, 'topk40': CONSTANT['greedy']}
  c = next(c for c in S.evaluate([_base(s, same) for s in range(2)]) if c['key'] == 'sampling')
  assert {p['verdict'] for p in c['parts'] if p['short'].endswith('topk40 vs greedy')} == {C.NO_DIFFERENCE}
  c = next(c for c in S.evaluate([_base(0, CONSTANT)]) if c['key'] == 'sampling')
  assert c['verdict'] == C.NOT_MEASURED and 'one seed' in c['parts'][0]['effect'].missing


def test_missing_samples_are_not_measured_with_the_runs_to_train():
  rows = [{**_base(s, CONSTANT), D.SAMPLES: None, S.sample_key('greedy', 'rep4'): 0.6} for s in range(3)]
  c = next(c for c in S.evaluate(rows) if c['key'] == 'sampling')
  assert c['verdict'] == C.NOT_MEASURED and 'seed_upgrades.py:pending' in c['parts'][0]['effect'].missing
  assert any(f.startswith('earlier measurement, not deciding') for f in c['facts'])


def _slow_bootstrap(X, metric, draws, rng):
  """A loop implementation of the hierarchical bootstrap of one mode's statistic (seeds, then prompts)."""
  S_, P = X['rep4'].shape
  out = []
  for _ in range(draws):
    picks = [(s, p) for s in rng.integers(0, S_, S_) for p in rng.integers(0, P, P)]
    if metric == 'judge_bpb':
      out.append(sum(X['bits'][s, p] for s, p in picks) / sum(X['bytes'][s, p] for s, p in picks))
    else:
      out.append(np.mean([X[metric][s, p] for s, p in picks]))
  return np.quantile(out, [0.05, 0.95])


@pytest.mark.parametrize('metric', ['rep4', 'judge_bpb'])
def test_bootstrap_interval_matches_a_slow_reference(metric):
  rng = np.random.default_rng(1)
  X = {col: rng.uniform(0.1, 1.0, (4, 16)) for col in ('rep4', 'distinct2', 'distinct3', 'bits')}
  X['bytes'] = rng.uniform(200, 400, (4, 16))
  allx = {name: X for name in D.MODES + (D.HUMAN,)}
  point, boot = D.distances(allx, draws=4000, seed=0)
  got = np.quantile(boot[('greedy', metric, 'stat')], [0.05, 0.95])
  want = _slow_bootstrap(X, metric, 4000, np.random.default_rng(7))
  width = want[1] - want[0]
  assert abs(got[0] - want[0]) < 0.1 * width and abs(got[1] - want[1]) < 0.1 * width


def test_per_continuation_statistics_by_hand():
  from scaling.analysis.seed.samples import document_prompts, text_stats
  s = text_stats([[1, 2, 3, 1, 2, 3, 1, 2], [5, 6, 7, 8]])
  assert s['rep4'] == [pytest.approx(1 - 3 / 5), 0.0]           # 4-grams 1231 2312 3123 1231 2312
  assert s['distinct2'] == [pytest.approx(3 / 7), 1.0]          # bigrams 12 23 31 12 23 31 12
  assert s['distinct3'][1] == 1.0
  # documents [0, 10), [10, 13), [13, 30) of a token stream (EOS last): prompt 2 + continuation 3 need 5 + EOS
  tokens = np.arange(30)
  prompts, human = document_prompts([0, 10, 13, 30], tokens, n=2, prompt_len=2, new_tokens=3)
  np.testing.assert_array_equal(prompts, [[0, 1], [13, 14]])
  np.testing.assert_array_equal(human, [[2, 3, 4], [15, 16, 17]])
  with pytest.raises(ValueError, match='only 2 validation documents'):
    document_prompts([0, 10, 13, 30], tokens, n=3, prompt_len=2, new_tokens=3)
