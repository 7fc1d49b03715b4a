"""The tokenizer claim's compute multiplier (scaling/analysis/seed/frontier.py): interpolation inside the measured
frontier, "not decided" outside it, and the model-form term, against values worked out by hand."""

import math
import statistics

import numpy as np
import pytest

from scaling.analysis.seed import claims as C
from scaling.analysis.seed import frontier as F

KEY = 'claims/span_bpb'


def _rows(arm, points, seeds=(0,), jitter=0.0):
  """One run per (C, bpb) point and seed; the seeds' values bpb * (1 + jitter * (s - mean seed))."""
  mid = statistics.fmean(seeds)
  return [{'run': f'{arm}-{c:g}-{s}', 'state': 'done', 'name': f'{C.PREFIX}{arm}', 'flops': c,
           KEY: v * (1 + jitter * (s - mid)), 'overrides': {'name': f'{C.PREFIX}{arm}', 'c': c, 'train.seed': s}}
          for c, v in points for s in seeds]


def test_local_interpolation_and_the_model_form_term_by_hand():
  slow = [(1e12, 3.0), (1e13, 2.5), (1e14, 2.3)]          # a curved frontier: no power law fits it exactly
  fast = [(2e12, 2.7)]
  tiny = C.Noise(1e-9, 1000)                               # noise negligible: the interval is the model-form term
  (m,) = F.budget_multipliers(_rows('tok-char', slow), _rows('tok-bpe', fast), tiny, KEY, draws=200)
  # local: between 1e12 (3.0) and 1e13 (2.5) in log-log
  t = math.log(2.7 / 3.0) / math.log(2.5 / 3.0)
  log_c = math.log(1e12) + t * math.log(10)
  want = math.exp(log_c) / 2e12
  assert m['effect'].value == pytest.approx(want, rel=1e-9)
  # power law: least squares of log bpb on log C through the three points
  fit = statistics.linear_regression([math.log(c) for c, _ in slow], [math.log(v) for _, v in slow])
  log_pl = (math.log(2.7) - fit.intercept) / fit.slope
  assert m['power_law'] == pytest.approx(math.exp(log_pl) / 2e12, rel=1e-9)
  form = abs(log_pl - log_c)
  assert form > 0.05                                        # the two readings differ here
  assert m['effect'].lo == pytest.approx(want * math.exp(-form), rel=1e-5)
  assert m['effect'].hi == pytest.approx(want * math.exp(form), rel=1e-5)


def test_a_bpb_outside_the_measured_range_is_not_decided():
  slow = [(1e12, 3.0), (1e13, 2.5), (1e14, 2.3)]
  noise = C.Noise(0.002, 20)
  above, below = F.budget_multipliers(_rows('tok-char', slow), _rows('tok-bpe', [(1e12, 2.2), (1e10, 3.3)]), noise,
                                      KEY, slow='char')
  assert C.verdict(below['effect']) == C.NOT_DECIDED and 'needs a larger budget' in below['effect'].extrapolated
  assert C.verdict(above['effect']) == C.NOT_DECIDED and 'needs a smaller budget' in above['effect'].extrapolated
  # at the edge of the range, half the bootstrap draws fall outside: the interval would extrapolate
  (edge,) = F.budget_multipliers(_rows('tok-char', slow), _rows('tok-bpe', [(1e12, 2.3)]), noise, KEY)
  assert C.verdict(edge['effect']) == C.NOT_DECIDED and 'bootstrap draws' in edge['effect'].extrapolated
  assert edge['outside_draws'] > 0.05


def test_noise_widens_the_interval_and_replicates_are_averaged_first():
  law = lambda c: 3.0 * (c / 4) ** -0.1
  slow = [(c, law(c)) for c in (1e12, 1e13, 1e14)]
  fast = [(3e12, 3.0 * 3e12 ** -0.1)]
  quiet = F.budget_multipliers(_rows('tok-char', slow, seeds=(0, 1), jitter=1e-6), _rows('tok-bpe', fast), C.Noise(
      1e-6, 50), KEY)[0]['effect']
  loud = F.budget_multipliers(_rows('tok-char', slow, seeds=(0, 1), jitter=1e-6), _rows('tok-bpe', fast), C.Noise(
      0.01, 50), KEY)[0]['effect']
  assert quiet.value == pytest.approx(4.0, rel=1e-5) and loud.value == quiet.value   # a power law: form term 0
  assert quiet.hi / quiet.lo < 1.001 < loud.hi / loud.lo
  assert loud.lo < 4.0 < loud.hi
  # a bpb change of 1% moves the reach by 0.01 / 0.1 in log C: the loud interval is of that order
  assert 1.05 < loud.hi / 4.0 < 1.6


def test_reach_takes_the_first_crossing_and_nan_outside():
  logC = np.log([1e12, 1e13, 1e14])
  F_ = np.log([[3.0, 2.5, 2.6]])                          # not monotone: 2.55 is crossed twice
  r = F.reach(logC, F_, np.log([2.55]))
  t = math.log(2.55 / 3.0) / math.log(2.5 / 3.0)
  assert r[0] == pytest.approx(math.log(1e12) + t * math.log(10))
  assert np.isnan(F.reach(logC, F_, np.log([2.4]))[0])


def test_too_few_budgets_or_no_noise_is_not_measured():
  slow = [(1e12, 3.0), (1e13, 2.5)]
  (m,) = F.budget_multipliers(_rows('tok-char', slow), _rows('tok-bpe', [(2e12, 2.7)]), C.Noise(0.01, 5), KEY)
  assert C.verdict(m['effect']) == C.NOT_MEASURED and '>= 3 budgets' in m['effect'].missing
  slow = [(1e12, 3.0), (1e13, 2.5), (1e14, 2.3)]
  (m,) = F.budget_multipliers(_rows('tok-char', slow), _rows('tok-bpe', [(2e12, 2.7)]), None, KEY)
  assert C.verdict(m['effect']) == C.NOT_MEASURED and 'no seed replicates' in m['effect'].missing
