"""Intervals that count every resample, their Monte-Carlo error, their state, and verdicts on differences.

honest_interval: the 5-95% interval of R resamples where some have no finite estimate. A failed resample
enters the percentiles as +inf or -inf on the side it escaped to (side +1 / -1), or, when that side is
unknown (side UNKNOWN), as -inf for the lower percentile and +inf for the upper one. So when more than the
tail mass (5%) of resamples fail towards one side, that end is open (+-inf, null in fit.json), never
silently narrower. Percentiles are order statistics with floor(q R) draws beyond each end (the
(floor(0.05 R) + 1)-th smallest and the ceil(0.95 R)-th), so an end opens when MORE than 5% fail towards it.

Monte-Carlo error (mc_error): the standard error of each percentile from R draws, estimated from the
order statistics k +- sqrt(R q (1 - q)) around the percentile's rank k (the binomial spread of the rank):
half their distance. None (infinite) when one of them is infinite.

interval_state: 'identified' (finite, width <= INFORMATIVE_WIDTH), 'not identified' (wider), 'open' (one
end infinite), 'unconstrained' (both), 'degenerate' (zero width: hi - lo within DEGENERATE_TOL of the
value, or fewer than 2 distinct values) and None without an interval. A degenerate interval is never
called constrained: it means the resampling cannot move the estimate (e.g. 3 sizes a budget make every
parabola exact), not that the estimate is certain.

difference_verdict: a test on the difference of two exponents, never interval overlap:
'consistent' (its 5-95% interval contains 0 and both sides are identified), 'differ' (it excludes 0),
'not identified' (a side or the difference is wider than INFORMATIVE_WIDTH or open), 'degenerate',
'not decidable' (an interval is missing).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

UNKNOWN = 2   # as scaling/analysis/fit/resample.py: a failed resample whose side is unknown
TAILS = (0.05, 0.95)
# An interval of a (N_opt ~ C^a) wider than this is not identified: Kaplan et al. 2020 (a = 0.73) and
# Hoffmann et al. 2022 (a = 0.50) are 0.23 apart, and an interval that could hold both answers the field
# had to tell apart discriminates nothing, so nothing is said to agree with it.
INFORMATIVE_WIDTH = 0.2
DEGENERATE_TOL = 1e-9


def _rank(q: float, R: int) -> int:
  """1-based rank of the q-th percentile: floor(q R) + 1 below the median, ceil(q R) above it, so that
  exactly floor(q R) draws lie beyond either end (both tails hold the same count)."""
  k = math.floor(q * R + 1e-9) + 1 if q < 0.5 else math.ceil(q * R - 1e-9)
  return min(max(k, 1), R)


def order_stat(sorted_v: np.ndarray, q: float) -> tuple[float, float | None]:
  """(the q-th percentile as an order statistic, its Monte-Carlo standard error or None)."""
  R = len(sorted_v)
  k = _rank(q, R)
  h = math.sqrt(R * q * (1 - q))
  lo, hi = sorted_v[max(math.floor(k - h), 1) - 1], sorted_v[min(math.ceil(k + h), R) - 1]
  err = (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else None
  return float(sorted_v[k - 1]), (float(err) if err is not None else None)


def honest_interval(values: np.ndarray, side: np.ndarray | None = None,
                    tails: Sequence[float] = TAILS) -> dict:
  """{ci [lo, hi], mc_error [lo, hi], draws, failed} of resample values (NaN: no finite estimate),
  a failure's side from `side` (+1 / -1 / UNKNOWN; None: every failure UNKNOWN)."""
  v = np.asarray(values, dtype=np.float64).ravel()
  failed = ~np.isfinite(v)
  s = np.full(len(v), UNKNOWN) if side is None else np.asarray(side).ravel()
  if not len(v):
    return {'ci': None, 'mc_error': None, 'draws': 0, 'failed': 0}
  low = np.sort(np.where(failed, np.where(s == 1, np.inf, -np.inf), v))
  high = np.sort(np.where(failed, np.where(s == -1, -np.inf, np.inf), v))
  (lo, e_lo), (hi, e_hi) = order_stat(low, tails[0]), order_stat(high, tails[1])
  return {'ci': [lo, hi], 'mc_error': [e_lo, e_hi], 'draws': int(len(v)), 'failed': int(failed.sum()),
          'distinct': int(len(np.unique(v[~failed])))}


def is_degenerate(lo: float, hi: float, distinct: int | None = None) -> bool:
  if distinct is not None and distinct < 2:
    return True
  return bool(math.isfinite(lo) and math.isfinite(hi) and
              hi - lo <= DEGENERATE_TOL * max(1.0, abs(lo), abs(hi)))


def interval_state(ci: Sequence[float] | None, distinct: int | None = None,
                   width: float = INFORMATIVE_WIDTH) -> str | None:
  """The state of an exponent's interval (see the module docstring); None without one."""
  if not ci or ci[0] is None or ci[1] is None:
    return None
  lo, hi = float(ci[0]), float(ci[1])
  if math.isnan(lo) or math.isnan(hi):
    return None
  if not math.isfinite(lo) and not math.isfinite(hi):
    return 'unconstrained'
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return 'open'
  if is_degenerate(lo, hi, distinct):
    return 'degenerate'
  return 'identified' if hi - lo <= width else 'not identified'


def with_state(rec: dict) -> dict:
  """honest_interval's record plus its state."""
  rec['state'] = interval_state(rec['ci'], rec.get('distinct'))
  return rec


def difference_verdict(diff_ci, side_states: Sequence[str | None], diff_distinct: int | None = None) -> str:
  """The verdict on a difference of exponents (module docstring): diff_ci its 5-95% interval,
  side_states the states of the two sides' own intervals ('identified' for an exact published value)."""
  state = interval_state(diff_ci, diff_distinct)
  if state is None or None in side_states:
    return 'not decidable'
  if state == 'degenerate' or 'degenerate' in side_states:
    return 'degenerate'
  lo, hi = float(diff_ci[0]), float(diff_ci[1])
  if lo > 0 or hi < 0:
    return 'differ'
  if state != 'identified' or any(s != 'identified' for s in side_states):
    return 'not identified'
  return 'consistent'


def finite_or_none(v):
  """A float for fit.json: +-inf and NaN become None (the JSON writer does the same)."""
  return float(v) if v is not None and math.isfinite(v) else None
