"""Two model families, one question: does the compute-optimal exponent differ between them?

IsoFLOP v2 (one shape family: fixed depth and head dim) is compared with v1 (depth and head dim changing with
size) on the same data and tokenizer. Each fit.json keeps its headline scheme's draws (isoflop.bootstrap: the
finite draws of a and b, and how many draws escaped low / high / to an unknown side). The two studies are
independent, so their draws pair at random: a_1 - a_2 per pair, where a draw without a finite estimate enters on
its side (an escape of a to +inf makes the difference +inf when the other side is finite or escapes the other
way; anything else unknown). The 5-95% interval of the difference, every pair counted, decides by
intervals.difference_verdict: 'differ' (excludes 0), 'consistent' (contains 0, both sides identified), 'not
identified', 'degenerate', 'not decidable'.
"""

from __future__ import annotations

import numpy as np

from scaling.analysis.fit.intervals import UNKNOWN, difference_verdict, honest_interval, with_state
from scaling.analysis.fit.load import FitError


def draws_of(fit: dict, key: str = 'a') -> tuple[np.ndarray, np.ndarray]:
  """(values, sides) of every stored draw of the fit's headline IsoFLOP scheme: finite draws with side 0, then
  the escaped ones as NaN with side -1 / +1 / UNKNOWN (for b the sides flip: D_opt = C / fpt(N_opt))."""
  boot = (fit.get('isoflop') or {}).get('bootstrap') or {}
  samples = (boot.get('samples') or {}).get(key)
  if not samples:
    raise FitError(f'the fit has no stored IsoFLOP draws of {key!r} (isoflop.bootstrap.samples): refit with '
                   '--bootstrap > 0')
  esc = boot.get('escaped') or {}
  flip = -1 if key == 'b' else 1
  sides = [0] * len(samples) + [-flip] * esc.get('low', 0) + [flip] * esc.get('high', 0) + \
          [UNKNOWN] * esc.get('unknown_side', 0)
  values = list(samples) + [np.nan] * (len(sides) - len(samples))
  return np.array(values, dtype=np.float64), np.array(sides)


def _difference_sides(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
  """The side of v1 - v2 from each side's: +1 when v1 escapes up or v2 down (and the other does not oppose)."""
  up = ((s1 == 1) & np.isin(s2, (0, -1))) | ((s2 == -1) & (s1 == 0))
  down = ((s1 == -1) & np.isin(s2, (0, 1))) | ((s2 == 1) & (s1 == 0))
  return np.where(up, 1, np.where(down, -1, np.where((s1 == 0) & (s2 == 0), 0, UNKNOWN)))


def compare_families(fit1: dict, fit2: dict, *, labels=('this', 'other'), seed: int = 0) -> dict:
  """{a, b: {value_1, value_2, difference, ci, state, verdict}} for two independent studies' fits."""
  rng = np.random.default_rng([seed, 6])
  out: dict = {'labels': list(labels), 'test': 'independent draws paired at random; every draw counted',
               'seed': [seed, 6]}
  for key in ('a', 'b'):
    v1, s1 = draws_of(fit1, key)
    v2, s2 = draws_of(fit2, key)
    R = min(len(v1), len(v2))
    i1, i2 = rng.permutation(len(v1))[:R], rng.permutation(len(v2))[:R]
    side = _difference_sides(s1[i1], s2[i2])
    diff = np.where(side == 0, v1[i1] - v2[i2], np.nan)
    rec = with_state(honest_interval(diff, side))
    states = [((f.get('isoflop') or {}).get('ci_state') or {}).get(key) for f in (fit1, fit2)]
    value_1, value_2 = fit1['isoflop'][key], fit2['isoflop'][key]
    out[key] = {'value_1': value_1, 'value_2': value_2, 'difference': value_1 - value_2, **rec,
                'side_states': states, 'verdict': difference_verdict(rec['ci'], states, rec.get('distinct'))}
  return out
