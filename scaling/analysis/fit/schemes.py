"""The IsoFLOP resampling schemes, each an interval of a and b that counts every resample.

  seed_noise  every run's loss plus Gaussian noise of sd sigma (default: the pooled residual sd of the
              budgets' parabolas, drawn per resample from its chi-square uncertainty, sigma sqrt(dof / chi2_dof),
              so that an sd estimated from few residuals widens the interval as a t distribution would; or a
              measured seed-noise floor, `scaling fit --noise_floor`, taken as exact). The headline statistical
              interval: on 1000 simulated studies of this project's shape its 90% interval covers the true a in
              90.1-91.0% of them at noise sd 0.005 and 0.01 (tests/test_fit_calibration.py), and the sizes stay
              those that were run.
  residual    per budget the parabola's fitted values plus its residuals (rescaled by sqrt(n / (n - 3))),
              resampled within the budget. Reported beside; with 5 sizes a budget it under-covers (~82% in a
              300-study check).
  row         the rows resampled with replacement within each budget (the former bootstrap, now
              unconditional): a resample that draws fewer than 3 sizes of a budget has no parabola and counts
              with an unknown side. With 5 rows a budget about 1 in 10 budget resamples does, so this interval
              is open on both ends unless budgets have many more sizes.
  jackknife   per budget drop one size (every size of every budget in turn): the range of a and the jackknife
              standard error sqrt((n - 1) / n sum (a_i - mean)^2) over the n leave-one-outs.

Draws start at `draws` and double until the Monte-Carlo error of every finite end of the 5-95% intervals
of a and b is below mc_error (units of a), or max_draws is reached (fit.json: mc.met). Each scheme draws
from its own numpy stream, np.random.default_rng([seed, stream]), recorded beside it.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from scaling.analysis.fit.arms import arm_matrix, best_of_draws
from scaling.analysis.fit.intervals import honest_interval, with_state
from scaling.analysis.fit.resample import (
  UNKNOWN,
  exponents,
  failure_counts,
  parabola_fits,
  row_weights,
)

STREAMS = {'seed_noise': 1, 'residual': 2, 'row': 3}


def budget_data(rows: Sequence[dict], groups: Sequence[Sequence[int]], flops: Sequence[float],
                n_key: str = 'N') -> list[dict]:
  """Per budget: flops, row indices, x = log10 N (n_key), yD = log10 D, L; arm_L (n, A) every learning-rate
  arm's loss of each point when the rows were reduced from arms (scaling/analysis/fit/arms.py), else None."""
  out = []
  for c, idx in zip(flops, groups):
    idx = list(idx)
    out.append({'flops': float(c), 'idx': idx,
                'x': np.log10([rows[i][n_key] for i in idx]),
                'yD': np.log10([rows[i]['D'] for i in idx]),
                'L': np.array([rows[i]['L'] for i in idx], dtype=np.float64),
                'arm_L': arm_matrix([rows[i] for i in idx])})
  return out


def pooled_sd(budgets: Sequence[dict]) -> tuple[float | None, int]:
  """(sd, dof): the pooled residual sd of the budgets' parabolas (loss units); None without residual dof."""
  ssr, dof = 0.0, 0
  for b in budgets:
    if len(b['x']) > 3 and len(np.unique(b['x'])) >= 3:
      c = np.polyfit(b['x'], b['L'], 2)
      ssr += float(np.sum((b['L'] - np.polyval(c, b['x'])) ** 2))
      dof += len(b['x']) - 3
  return (math.sqrt(ssr / dof), dof) if dof else (None, 0)


def d_at(x: np.ndarray, yD: np.ndarray, x_opt: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
  """log10 D at x_opt from each draw's (weighted) least-squares line of log10 D against log10 N."""
  W = np.ones((len(x_opt), len(x))) if W is None else W
  sw = W.sum(axis=1)
  mx, my = W @ x / sw, W @ yD / sw
  sxx = W @ (x * x) / sw - mx * mx
  with np.errstate(all='ignore'):
    k1 = np.where(sxx > 0, (W @ (x * yD) / sw - mx * my) / np.where(sxx > 0, sxx, 1.0), 0.0)
  return my + k1 * (x_opt - mx)


def evaluate(budgets: Sequence[dict], Ys: Sequence[np.ndarray], Ws: Sequence[np.ndarray] | None = None) -> dict:
  """Every draw's parabola minima, a, b and their escape sides; l_opt (R, J) for the loss line."""
  xs, ys, ls, codes = [], [], [], []
  for j, b in enumerate(budgets):
    W = None if Ws is None else Ws[j]
    f = parabola_fits(b['x'], Ys[j], W)
    xs.append(f['x_opt'])
    ys.append(d_at(b['x'], b['yD'], f['x_opt'], W))
    ls.append(f['l_opt'])
    codes.append(f['code'])
  lc = np.log10([b['flops'] for b in budgets])
  X, Yd, C = np.stack(xs, 1), np.stack(ys, 1), np.stack(codes, 1)
  ev = exponents(lc, X, Yd, C)
  ev.update(codes=C, l_opt=np.stack(ls, 1), x_opt=X)
  return ev


def _concat(a: dict, b: dict) -> dict:
  return {k: np.concatenate([a[k], b[k]]) for k in a}


def record(ev: dict) -> dict:
  """A scheme's fit.json record from its evaluated draws: intervals of a and b, failures."""
  out = {'draws': int(len(ev['a']))}
  for k in ('a', 'b'):
    v = np.where(ev['side_a'] == 0, ev[k], np.nan)
    out[k] = with_state(honest_interval(v, ev[f'side_{k}']))
  out['failures'] = failure_counts(ev['codes'], ev['side_a'])
  return out


def _precise(rec: dict, target: float) -> bool:
  errs = [e for k in ('a', 'b') for e in rec[k]['mc_error'] or []]
  ends = [v for k in ('a', 'b') for v in rec[k]['ci'] or []]
  return all(e is None or e <= target or not math.isfinite(v) for e, v in zip(errs, ends))


def until_precise(draw: Callable[[np.random.Generator, int], tuple[dict, dict]], seed: int, stream: int,
                  draws: int, max_draws: int, mc_error: float) -> tuple[dict, dict, dict]:
  """Runs draw(rng, R) -> (evaluated draws, raw draws) in doubling batches until the intervals' MC error
  is below mc_error or max_draws is reached; returns (ev, raw, mc record)."""
  rng = np.random.default_rng([seed, stream])
  ev, raw = draw(rng, draws)
  rec = record(ev)
  while not _precise(rec, mc_error) and len(ev['a']) < max_draws:
    more, more_raw = draw(rng, min(len(ev['a']), max_draws - len(ev['a'])))
    ev, raw = _concat(ev, more), {k: [np.concatenate([u, w]) for u, w in zip(raw[k], more_raw[k])]
                                  for k in raw}
    rec = record(ev)
  return ev, raw, {'target': mc_error, 'draws': len(ev['a']), 'max_draws': max_draws,
                   'met': _precise(rec, mc_error), 'seed': [seed, stream]}


def seed_noise_draw(budgets: Sequence[dict], sigma: float, dof: int) -> Callable:
  """draw(rng, R): each run's loss plus N(0, sigma_r^2), sigma_r = sigma sqrt(dof / chi2_dof) (dof 0:
  sigma itself). A point reduced from learning-rate arms redraws every arm and takes the best again."""
  def draw(rng, R):
    s = sigma * np.sqrt(dof / rng.chisquare(dof, R)) if dof else np.full(R, sigma)
    Ys = [b['L'][None, :] + s[:, None] * rng.standard_normal((R, len(b['L']))) if b.get('arm_L') is None
          else best_of_draws(b['arm_L'], s, rng) for b in budgets]
    return evaluate(budgets, Ys), {'Ys': Ys}
  return draw


def residual_draw(budgets: Sequence[dict]) -> Callable:
  fitted, resid = [], []
  for b in budgets:
    c = np.polyfit(b['x'], b['L'], 2)
    f = np.polyval(c, b['x'])
    n = len(b['x'])
    fitted.append(f)
    resid.append((b['L'] - f) * (math.sqrt(n / (n - 3)) if n > 3 else 0.0))

  def draw(rng, R):
    Ys = [f[None, :] + r[rng.integers(0, len(r), size=(R, len(r)))] for f, r in zip(fitted, resid)]
    return evaluate(budgets, Ys), {'Ys': Ys}
  return draw


def row_draw(budgets: Sequence[dict]) -> Callable:
  def draw(rng, R):
    Ws = [row_weights(rng, len(b['x']), R) for b in budgets]
    return evaluate(budgets, [b['L'] for b in budgets], Ws), {'Ws': Ws}
  return draw


def jackknife(budgets: Sequence[dict]) -> dict:
  """Leave one size of one budget out, for every size of every budget."""
  a, sides, codes = [], [], []
  for j, b in enumerate(budgets):
    for size in np.unique(b['x']):
      keep = b['x'] != size
      sub = [dict(bb, x=bb['x'][keep], yD=bb['yD'][keep], L=bb['L'][keep]) if i == j else bb
             for i, bb in enumerate(budgets)]
      ev = evaluate(sub, [bb['L'] for bb in sub])
      a.append(float(ev['a'][0]) if ev['side_a'][0] == 0 else math.nan)
      sides.append(int(ev['side_a'][0]))
      codes.append(ev['codes'][0])
  a_arr = np.array(a)
  finite = a_arr[np.isfinite(a_arr)]
  n = len(a_arr)
  out = {'leave_outs': n, 'failed': int(n - len(finite)),
         'failures': failure_counts(np.array(codes), np.array(sides)),
         'range': [float(finite.min()), float(finite.max())] if len(finite) else None,
         'se': None, 'values': a}
  if len(finite) == n and n >= 2:
    out['se'] = float(math.sqrt((n - 1) / n * np.sum((finite - finite.mean()) ** 2)))
  return out


def isoflop_resampling(budgets: Sequence[dict], *, draws: int, seed: int, mc_error: float, max_draws: int,
                       noise_sd: float | None = None) -> dict:
  """Every scheme's record; 'seed_noise' also returns its draws (key '_draws', removed before fit.json)."""
  out: dict = {}
  sigma, dof = (float(noise_sd), 0) if noise_sd else pooled_sd(budgets)
  if sigma is None:
    out['seed_noise'] = {'skipped': 'every budget has 3 sizes (exact parabolas): no residual to estimate '
                                    'the noise; pass --noise_floor (a measured seed-noise sd)'}
  else:
    ev, raw, mc = until_precise(seed_noise_draw(budgets, sigma, dof), seed, STREAMS['seed_noise'], draws,
                                max_draws, mc_error)
    out['seed_noise'] = {**record(ev), 'sigma': sigma, 'sigma_dof': dof,
                         'sigma_source': 'noise_floor (given, exact)' if noise_sd else
                         'pooled parabola residual sd, drawn from its chi-square', 'mc': mc,
                         '_draws': {'ev': ev, 'Ys': raw['Ys'], 'sigma': sigma, 'dof': dof}}
  for name, make in (('residual', residual_draw), ('row', row_draw)):
    ev, _, mc = until_precise(make(budgets), seed, STREAMS[name], draws, max_draws, mc_error)
    out[name] = {**record(ev), 'mc': mc}
  out['jackknife'] = jackknife(budgets)
  return out


def samples_of(ev: dict, budgets: Sequence[dict], keep: int, line_fit: Callable) -> dict:
  """The first `keep` draws as fit.json's bootstrap.samples (finite draws only, a, kN, b, kD, and the loss
  line L_E, L_a, L_b of each by line_fit), with how many of them failed and to which side."""
  n = min(keep, len(ev['a']))
  ok = np.nonzero(ev['side_a'][:n] == 0)[0]
  c = np.array([b['flops'] for b in budgets])
  lines = []
  for r in ok:
    try:
      lines.append(line_fit(c, ev['l_opt'][r]))
    except (ValueError, ArithmeticError):   # FitError: a loss line that cannot be fitted
      lines.append((math.nan, math.nan, math.nan))
  lines = np.array(lines).reshape(-1, 3)
  side = ev['side_a'][:n]
  return {'resamples': n, 'succeeded': int(len(ok)),
          'escaped': {'low': int((side == -1).sum()), 'high': int((side == 1).sum()),
                      'unknown_side': int((side == UNKNOWN).sum())},
          'samples': {'a': ev['a'][ok].tolist(), 'kN': (10.0 ** ev['log10_kN'][ok]).tolist(),
                      'b': ev['b'][ok].tolist(), 'kD': (10.0 ** ev['log10_kD'][ok]).tolist(),
                      'L_E': lines[:, 0].tolist(), 'L_a': lines[:, 1].tolist(), 'L_b': lines[:, 2].tolist()}}
