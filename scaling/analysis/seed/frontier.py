"""The tokenizer claim's compute multiplier: per BPE budget, and only inside the slower arm's measured frontier.

An arm's frontier is, per compute budget (runs grouped by training FLOPs), the best bpb over its sizes, each
size's bpb the geometric mean over its seeds. For a BPE budget C_b with frontier bpb L_b, the slower arm
(char or byte) needs compute C_s(L_b) to reach the same bpb; the multiplier is C_s(L_b) / C_b.

  * inside: L_b within [min, max] of the slower frontier's bpb. C_s is read off the frontier by local
    linear interpolation in (log C, log bpb) between the two budgets that bracket L_b (the first crossing
    in increasing C: the least compute that reaches it);
  * outside: "not decided" (an extrapolation: the slower arm was not run far enough), naming the side;
  * the interval: a parametric bootstrap (every run's bpb times exp(N(0, sd)), sd drawn from the pooled
    noise's own chi-square uncertainty; frontiers and the interpolation redone per draw), its 5-95%
    quantiles widened on each side, on the log scale, by the model-form term |log C_pl - log C_lin|: the
    spread between the local interpolation and a power law fitted through all the slower frontier's points.
    When more than 5% of the draws put L_b outside the drawn frontier, the interval itself would need an
    extrapolation: "not decided" too.

Everything is jax-free numpy (scaling report loads it).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from scaling.analysis.seed import claims as C


class Layout:
  """One arm's runs as arrays: log values per run, the averaging of replicates into configurations, and which
  configurations make each budget. `frontier(logv_DR)` -> log frontier bpb [draws, budgets]."""

  def __init__(self, rows: Sequence[dict], key: str):
    self.rows = [r for r in rows if C.positive([r.get(key)]) and C.positive([r.get('flops')])]
    self.logv = np.log([float(r[key]) for r in self.rows]) if self.rows else np.zeros(0)
    cfgs: dict[str, list[int]] = {}
    for i, r in enumerate(self.rows):
      cfgs.setdefault(C.config_key(r), []).append(i)
    members = list(cfgs.values())
    self.mean = np.zeros((len(members), len(self.rows)))
    for j, idx in enumerate(members):
      self.mean[j, idx] = 1.0 / len(idx)
    flops = [float(np.exp(np.mean(np.log([self.rows[i]['flops'] for i in idx])))) for idx in members]
    grouped = C.budget_groups([{'flops': f, 'cfg': j} for j, f in enumerate(flops)])
    self.budgets = np.array([c for c, _ in grouped])
    self.cfgs = [[g['cfg'] for g in members_] for _, members_ in grouped]

  def frontier(self, logv_DR: np.ndarray) -> np.ndarray:
    cfg = logv_DR @ self.mean.T
    return np.stack([cfg[:, idx].min(axis=1) for idx in self.cfgs], axis=1) if self.cfgs else \
        np.zeros((logv_DR.shape[0], 0))

  def points(self) -> list[tuple[float, float]]:
    """(C, frontier bpb) per budget, smallest C first."""
    if not self.cfgs:
      return []
    f = self.frontier(self.logv[None])[0]
    return [(float(c), float(math.exp(v))) for c, v in zip(self.budgets, f)]


def reach(logC: np.ndarray, F_DB: np.ndarray, t_D: np.ndarray) -> np.ndarray:
  """log C at which each draw's frontier (log bpb F_DB at budgets logC, increasing) first reaches log bpb
  t_D, by linear interpolation between bracketing budgets; NaN where t lies outside the frontier's range."""
  out = np.full(t_D.shape, np.nan)
  for k in range(len(logC) - 1):
    a, b = F_DB[:, k], F_DB[:, k + 1]
    inside = (np.minimum(a, b) <= t_D) & (t_D <= np.maximum(a, b)) & np.isnan(out)
    flat = a == b
    frac = np.where(flat, 0.0, (t_D - a) / np.where(flat, 1.0, b - a))
    out = np.where(inside, logC[k] + frac * (logC[k + 1] - logC[k]), out)
  return out


def power_law_reach(points: Sequence[tuple[float, float]], bpb: float) -> float | None:
  """log C at which the least-squares power law bpb = e^k C^-b through the points reaches `bpb`; None when
  the points do not fall with compute (b <= 0)."""
  x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
  slope, k = np.polyfit(x, y, 1)
  if slope >= 0:
    return None
  return float((math.log(bpb) - k) / slope)


def _outside(points, bpb: float, slow: str) -> str:
  lo, hi = min(p[1] for p in points), max(p[1] for p in points)
  side = (f'below its best, {lo:.4g} at C={points[-1][0]:.3g}: it needs a larger budget' if bpb < lo else
          f'above its worst, {hi:.4g}: it needs a smaller budget')
  return f'the BPE bpb {bpb:.4g} lies outside the {slow} frontier\'s measured range ({side})'


def budget_multipliers(slow_rows, fast_rows, noise: C.Noise | None, key: str, *, slow: str = 'slower',
                       threshold: float | None = None, draws: int = 2000, seed: int = 0) -> list[dict]:
  """Per budget of the fast (BPE) arm: {'budget', 'bpb', 'effect' (the multiplier, module docstring),
  'linear', 'power_law', 'form'}; one entry {'budget': None, 'effect': missing} when nothing can be read."""
  kw = dict(null=1.0, side='greater', threshold=threshold)
  ls, lf = Layout(slow_rows, key), Layout(fast_rows, key)
  ps, pf = ls.points(), lf.points()
  if len(ps) < 3 or not pf:   # two points make the power law and the interpolation one line: no model-form term
    why = f'needs >= 3 budgets of the {slow} frontier (has {len(ps)}) and one of BPE ({len(pf)}) with {key}'
    return [{'budget': None, 'bpb': None, 'effect': C.missing(why, **kw)}]
  logC = np.log(ls.budgets)
  rng = np.random.default_rng(seed)
  boot = None
  if noise is not None:
    sd = noise.sd * np.sqrt(noise.df / rng.chisquare(noise.df, size=draws))
    jig = lambda lay: lay.frontier(lay.logv[None] + rng.normal(size=(draws, len(lay.logv))) * sd[:, None])
    boot = jig(ls), jig(lf)
  out = []
  for j, (cb, lb) in enumerate(pf):
    entry = {'budget': cb, 'bpb': lb}
    lin = reach(logC, ls.frontier(ls.logv[None]), np.array([math.log(lb)]))[0]
    if np.isnan(lin):
      out.append({**entry, 'effect': C.Effect(None, extrapolated=_outside(ps, lb, slow), **kw)})
      continue
    pl = power_law_reach(ps, lb)
    entry.update(linear=math.exp(lin - math.log(cb)), power_law=None if pl is None else math.exp(pl - math.log(cb)))
    value = math.exp(lin - math.log(cb))
    if pl is None:
      e = C.Effect(value, missing=f'the {slow} frontier does not fall with compute: no power law for the '
                   'model-form term', **kw)
    elif boot is None:
      e = C.Effect(value, missing='no seed replicates: no noise estimate', **kw)
    else:
      entry['form'] = form = abs(pl - lin)
      r = reach(logC, boot[0], boot[1][:, j])
      bad = float(np.mean(np.isnan(r)))
      entry['outside_draws'] = bad
      if bad > (1 - C.LEVEL) / 2:
        e = C.Effect(value, extrapolated=f'in {100 * bad:.0f}% of the bootstrap draws the BPE bpb falls outside '
                     f'the {slow} frontier: its interval would be an extrapolation', **kw)
      else:
        q = np.quantile(r[~np.isnan(r)] - math.log(cb), [(1 - C.LEVEL) / 2, (1 + C.LEVEL) / 2])
        e = C.Effect(value, math.exp(q[0] - form), math.exp(q[1] + form), **kw)
    out.append({**entry, 'effect': e})
  return out
