"""The seed study's pooled noise model (scaling/analysis/seed/noise.py) against the formula by hand and scipy."""

import math
import statistics

import pytest
from scipy import stats

from scaling.analysis.seed import claims as C
from scaling.analysis.seed import noise as N


def _row(arm, v, seed, **ov):
  return {'run': f'{arm}-{seed}-{sorted(ov.items())}', 'state': 'done', 'name': f'{C.PREFIX}{arm}', 'm': v,
          'overrides': {'name': f'{C.PREFIX}{arm}', **ov, 'train.seed': seed}}


ROWS = ([_row('base', v, s) for s, v in enumerate((2.00, 2.02, 1.98, 2.01, 2.03))] +
        [_row('nopos', v, s) for s, v in enumerate((2.50, 2.40, 2.45))] +
        [_row('tok-bpe', v, s, d=64) for s, v in enumerate((3.0, 3.1))] +
        [_row('tok-bpe', 2.8, 0, d=96)] +                                     # one seed: adds nothing
        [_row('layernorm', 2.0, 0), {**_row('base', 9.0, 5), 'state': 'failed'}])   # not finished: left out


def test_pooled_sd_and_df_by_hand():
  groups = [(2.00, 2.02, 1.98, 2.01, 2.03), (2.50, 2.40, 2.45), (3.0, 3.1)]
  ss = sum(sum((math.log(x) - statistics.fmean(map(math.log, g))) ** 2 for x in g) for g in groups)
  df = sum(len(g) - 1 for g in groups)
  noise = N.pooled(ROWS, 'm')
  assert noise.df == df == 7
  assert noise.sd == pytest.approx(math.sqrt(ss / df), rel=1e-12)
  assert [(label.split(' ')[0], n) for label, n, _ in noise.groups] == [('base', 5), ('nopos', 3), ('tok-bpe', 2)]
  assert noise.groups[1][2] == pytest.approx(statistics.stdev(map(math.log, groups[1])))
  assert N.pooled([_row('base', 2.0, 0), _row('nopos', 2.1, 0)], 'm') is None   # one seed each: no estimate


def test_bartlett_from_the_group_sds_matches_scipy_on_the_values():
  groups = [(2.00, 2.02, 1.98, 2.01, 2.03), (2.50, 2.40, 2.45), (3.0, 3.1)]
  want = stats.bartlett(*[[math.log(x) for x in g] for g in groups]).pvalue
  assert N.bartlett_p(N.pooled(ROWS, 'm')) == pytest.approx(want, rel=1e-9)
  line = N.describe(N.pooled(ROWS, 'm'), 'm')
  assert 'with 7 df' in line and 'Bartlett p' in line
  assert 'no noise estimate' in N.describe(None, 'm')


def test_a_comparison_uses_the_pooled_noise():
  noise = N.pooled(ROWS, 'm')
  e = C.log_ratio([2.45], [2.00, 2.02, 1.98, 2.01, 2.03], noise)
  half = stats.t.ppf(0.95, 7) * noise.sd * math.sqrt(1 + 1 / 5)
  d = math.log(2.45) - statistics.fmean(math.log(x) for x in (2.00, 2.02, 1.98, 2.01, 2.03))
  assert (e.lo, e.hi) == (pytest.approx(math.exp(d - half)), pytest.approx(math.exp(d + half)))
