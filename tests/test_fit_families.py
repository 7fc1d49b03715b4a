"""Comparing the exponent of two independent studies (scaling/analysis/fit/families.py) by a test on the
difference, against hand-built draws whose difference distribution is known."""

import numpy as np
import pytest

from scaling.analysis.fit import families, intervals


def fake_fit(a_draws, *, low=0, high=0, unknown=0, a=None, state='identified'):
  a_draws = list(a_draws)
  return {'isoflop': {'a': float(np.mean(a_draws)) if a is None else a, 'b': 1 - float(np.mean(a_draws)),
                      'ci_state': {'a': state, 'b': state},
                      'bootstrap': {'samples': {'a': a_draws, 'b': [1 - x for x in a_draws]},
                                    'escaped': {'low': low, 'high': high, 'unknown_side': unknown}}}}


def test_two_normal_families_differ_by_the_right_amount():
  rng = np.random.default_rng(0)
  f1 = fake_fit(rng.normal(0.55, 0.02, 4000))
  f2 = fake_fit(rng.normal(0.45, 0.02, 4000))
  out = families.compare_families(f1, f2)
  # a1 - a2 ~ N(0.10, 0.02 sqrt 2): 5-95% = 0.10 -+ 1.645 * 0.0283
  lo, hi = out['a']['ci']
  assert lo == pytest.approx(0.10 - 1.645 * 0.02 * 2 ** 0.5, abs=0.006)
  assert hi == pytest.approx(0.10 + 1.645 * 0.02 * 2 ** 0.5, abs=0.006)
  assert out['a']['verdict'] == 'differ'
  assert out['b']['verdict'] == 'differ' and out['b']['ci'][1] < 0


def test_equal_families_are_consistent_and_a_wide_side_is_not_identified():
  rng = np.random.default_rng(1)
  out = families.compare_families(fake_fit(rng.normal(0.5, 0.02, 4000)), fake_fit(rng.normal(0.5, 0.02, 4000)))
  assert out['a']['verdict'] == 'consistent'
  wide = fake_fit(rng.normal(0.5, 0.2, 4000), state='not identified')
  out = families.compare_families(fake_fit(rng.normal(0.5, 0.02, 4000)), wide)
  assert out['a']['verdict'] == 'not identified'


def test_escaped_draws_open_the_difference_on_their_side():
  rng = np.random.default_rng(2)
  # 20% of the first study's draws escape high (a -> +inf): the difference's upper end must be open
  f1 = fake_fit(rng.normal(0.5, 0.02, 3200), high=800, state='open')
  f2 = fake_fit(rng.normal(0.5, 0.02, 4000))
  out = families.compare_families(f1, f2)
  assert out['a']['ci'][1] == np.inf and np.isfinite(out['a']['ci'][0])
  assert out['a']['draws'] == 4000
  assert out['a']['verdict'] == 'not identified'
  assert intervals.interval_state(out['a']['ci']) == 'open'


def test_difference_sides_by_hand():
  s1 = np.array([0, 1, -1, 0, 0, 1, 2])
  s2 = np.array([0, 0, 0, 1, -1, 1, 0])
  assert families._difference_sides(s1, s2).tolist() == [0, 1, -1, -1, 1, 2, 2]


def test_a_fit_without_draws_is_refused():
  with pytest.raises(families.FitError, match='--bootstrap'):
    families.draws_of({'isoflop': {'bootstrap': {'resamples': 0}}})


def test_report_section_against_another_fit(tmp_path):
  """The same study compared with its own fit: difference 0 in value, never 'differ'."""
  import json
  import sys
  sys.path.insert(0, str(__import__('pathlib').Path(__file__).parent))
  from test_fit_arms import simulate

  from scaling.analysis import report
  (tmp_path / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n'
                                                  for r in simulate(np.random.default_rng(8), sd=0.002)))
  opts = dict(params='total', bootstrap=200, fits='isoflop', held_out=False, plots=False, max_draws=2000,
              mc_error=0.05)
  report.write_report(str(tmp_path), **opts)
  other = tmp_path / 'other'
  other.mkdir()
  (other / 'fit.json').write_text((tmp_path / 'fit.json').read_text())
  text = open(report.write_report(str(tmp_path), compare=str(other / 'fit.json'), compare_label='v1', **opts)).read()
  section = text[text.index('## A second family: v1'):]
  row_a = next(line for line in section.splitlines() if line.startswith('| a |'))
  assert '+0.000' in row_a and 'differ' not in row_a
