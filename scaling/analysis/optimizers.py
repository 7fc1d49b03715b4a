"""Muon's compute multiplier over AdamW per size (issue #36; configs/sweeps/optimizers.py): REPORT.md,
optimizers.json and optimizers.png.

    python -m scaling.analysis.optimizers --root ROOT [--steptime STEPTIME_ROOT] [--out DIR]

Input: ROOT/results.jsonl (`scaling sweep collect`). Rows named NAME are the grid: cooldown branches by width
(model.d_model), optimizer (train.optimizer, default adamw), lr and seed (train.seed, default 0), each with its
whole training's compute (`flops`, the parent's steps included), `params` and final loss (`eval/loss` by default);
rows named STEPTIME_NAME (--steptime's root, else ROOT) give the step time. Only finished, finite rows count.

Per size and optimizer, at every compute point (a branch length), an lr's loss is the mean over its seeds, and the
**tuned loss** is `best`, the best arm's (the design's), or `parabola`, the minimum of the parabola in log lr
through the best arm and its neighbours (the best arm's loss at a grid end, which is flagged, or where not convex).
**AdamW's loss against compute** is its tuned loss at each compute point, tuned at each (`envelope`, the design's)
or at the lr best at the reference held along its branches (`fixed_lr`). **C_AdamW(L)** inverts that curve:
`powerlaw` (the design's), L = E + A C^-alpha fitted per size (least squares, alpha on the grid ALPHAS),
extrapolating beyond the measured points; or `monotone`, the points made non-increasing (isotonic least squares)
and L interpolated linearly in log C, stopping at the end points. The **multiplier** M = C_AdamW(L_Muon) / C_Muon,
L_Muon Muon's tuned loss at its reference point (tokens per parameter nearest `ref_tpp`, 20), and at Muon's other
branch lengths. L_Muon below every point of AdamW's curve makes M a **lower bound** (>= C_AdamW,max / C_Muon),
above every point an **upper bound**.

Intervals: a parametric bootstrap redraws every (compute, lr) loss from N(measured, sd^2 / n), n its seeds, sd the
optimizer's pooled seed spread (seed 0 / seed 1 pairs at one width, lr and compute: sd^2 = mean(d^2) / 2; without
pairs the other optimizer's, else `noise`, else batch_opt's DEFAULT_NOISE_REL x the median loss, said so), and
re-picks the best lr, refits and re-inverts in every draw. Branches of one arm share a parent, so their noise is
correlated by an amount the design cannot measure: draws independent per point and draws shared along each arm
(batch_opt's two ends), an interval the envelope of both (90%: 5th-95th percentiles of log M). The 8 analysis
choices (tuned x curve x inversion) give the **systematic** range; **combined** is the hull of every choice's
interval. The **trend** is the least-squares slope of log M on log N over the sizes, with intervals from the same
draws; "shrinks with scale" needs the combined interval below 0 ("grows": above). Wen et al. 2025's ~1.4x at 0.1B
and ~1.1x at 1.2B is a slope of -0.097, printed beside it.

Learning rates: per size and optimizer the optimum at the reference budget (parabola vertex; a grid end flagged
with the arm to add) and the width exponent of the optima with an interval, against the grids' own (the design's
rule); where Muon's rows carry its AdamW part's lr (ADAM_SIDE_KEY), its ratio to AdamW's measured optimum. Step
time: Muon's over AdamW's per size, the ratio of the STEPTIME_NAME runs' median tokens/s (a bootstrap over repeats),
beside the FLOP model's; M per wall-clock second is M over it, M counting Newton-Schulz FLOPs M x C / (C + C_NS).

jax-free (numpy; matplotlib for the plot).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import pathlib
import sys

import numpy as np

NAME, STEPTIME_NAME = 'optimizers', 'optimizers-steptime'
DEFAULT_METRIC, DEFAULT_DRAWS, REF_TPP = 'eval/loss', 400, 20.0
TUNED, CURVES, INVERSIONS = ('best', 'parabola'), ('envelope', 'fixed_lr'), ('powerlaw', 'monotone')
PRIMARY, CHOICES = ('best', 'envelope', 'powerlaw'), tuple(itertools.product(TUNED, CURVES, INVERSIONS))
ALPHAS = np.geomspace(0.02, 3.0, 120)
LOG_CLIP, WEN = math.log(1e3), {'N': (1e8, 1.2e9), 'M': (1.4, 1.1)}   # |log M| beyond LOG_CLIP: an open end
WEN_SLOPE = math.log(WEN['M'][1] / WEN['M'][0]) / math.log(WEN['N'][1] / WEN['N'][0])
RULE_EXPONENT = {'adamw': -0.80, 'muon': 0.0}   # the width exponents the design assumes (before its horizon prior)
ADAM_SIDE_KEY = 'train.muon_adam_lr'     # the lr of Muon's AdamW part (configs/sweeps/optimizers.py), where set


class OptimizerStudyError(ValueError):
  """The results cannot give a multiplier; the message says what is missing."""


@dataclasses.dataclass
class Grid:
  """One (width, optimizer): losses by compute point (rows) and lr (columns), averaged over seeds."""
  width: int
  opt: str
  N: float
  C: np.ndarray          # (J,) compute of each point, ascending
  tokens: np.ndarray     # (J,)
  lrs: np.ndarray        # (I,) ascending
  L: np.ndarray          # (J, I) mean loss (nan: not trained)
  n: np.ndarray          # (J, I) seeds averaged
  ns_per_step: float = 0.0
  tokens_per_step: float = 0.0
  adam_side_lr: float | None = None


# ----------------------------------------------------------------------------- reading rows
def _ok(r: dict, metric: str) -> bool:
  v = r.get(metric)
  return r.get('state') == 'done' and isinstance(v, (int, float)) and math.isfinite(v)


def _ns_per_step(ov: dict) -> float:
  """Muon's Newton-Schulz matmul FLOPs per step of the row's shape (scaling/model/accounting.py)."""
  from scaling.model.accounting import newton_schulz_flops
  d, h, f = (int(ov.get(k, 0) or 0) for k in ('model.d_model', 'model.num_heads', 'model.d_ff'))
  if not d or not f or not h:
    return 0.0
  g, k = int(ov.get('model.num_kv_heads', h) or h), d // h
  shapes = [(d, h * k), (d, g * k), (d, g * k), (h * k, d), (d, f), (d, f), (f, d)]
  steps = int(ov.get('train.muon_ns_steps', 5))
  return float(int(ov.get('model.num_layers', 1)) * sum(newton_schulz_flops(a, b, steps) for a, b in shapes))


def grids(rows: list[dict], metric: str = DEFAULT_METRIC) -> dict:
  """(width, optimizer) -> Grid from the rows named NAME."""
  cells: dict = {}
  for r in rows:
    if r.get('name') != NAME or not _ok(r, metric):
      continue
    ov = r.get('overrides') or {}
    key = (int(ov['model.d_model']), ov.get('train.optimizer', 'adamw'))
    c = cells.setdefault(key, {'N': float(r['params']), 'pts': {}, 'ov': ov})
    c['pts'].setdefault((float(r['tokens']), float(r['flops'])), {}).setdefault(float(ov['train.lr']), []).append(
        float(r[metric]))
  out = {}
  for (w, opt), c in cells.items():
    comp = sorted(c['pts'])
    lrs = sorted({lr for p in c['pts'].values() for lr in p})
    vals = [[c['pts'][key].get(lr, []) for lr in lrs] for key in comp]
    L = np.array([[np.mean(v) if v else np.nan for v in row] for row in vals])
    n = np.array([[len(v) for v in row] for row in vals], dtype=float)
    ov = c['ov']
    side = ov.get(ADAM_SIDE_KEY) if opt == 'muon' else None
    out[(w, opt)] = Grid(w, opt, c['N'], np.array([k[1] for k in comp]), np.array([k[0] for k in comp]),
                         np.array(lrs), L, n, _ns_per_step(ov) if opt == 'muon' else 0.0,
                         float(ov.get('train.batch_size', 0)) * float(ov.get('model.seq_len', 0)),
                         float(side) if side else None)
  return out


def seed_noise(rows: list[dict], metric: str = DEFAULT_METRIC, noise: float | None = None) -> dict:
  """optimizer -> {'sd', 'pairs', 'source'}: the pooled spread of seed pairs (module docstring)."""
  by: dict = {}
  for r in rows:
    if r.get('name') != NAME or not _ok(r, metric):
      continue
    ov = r.get('overrides') or {}
    key = (ov.get('train.optimizer', 'adamw'), ov['model.d_model'], float(ov['train.lr']), float(r['tokens']))
    by.setdefault(key, {})[int(ov.get('train.seed', 0))] = float(r[metric])
  diffs: dict = {'adamw': [], 'muon': []}
  for key, seeds in by.items():
    if 0 in seeds and len(seeds) > 1:
      diffs.setdefault(key[0], []).extend(v - seeds[0] for s, v in seeds.items() if s != 0)
  out = {opt: {'sd': math.sqrt(np.mean(np.square(d)) / 2), 'pairs': len(d), 'source': 'seed pairs'}
         for opt, d in diffs.items() if d}
  from scaling.analysis.batch_opt import DEFAULT_NOISE_REL
  med = float(np.median([r[metric] for r in rows if r.get('name') == NAME and _ok(r, metric)] or [1.0]))
  fallback = ({'sd': float(noise), 'pairs': 0, 'source': 'given (--noise)'} if noise is not None else
              {'sd': DEFAULT_NOISE_REL * med, 'pairs': 0,
               'source': f'assumed: {DEFAULT_NOISE_REL} x the median loss (no seed pairs)'})
  other = next(iter(out.values()), None)
  return {opt: out.get(opt) or (dict(other, source='the other optimizer\'s seed pairs') if other else fallback)
          for opt in ('adamw', 'muon')}


# ----------------------------------------------------------------------------- the numerics (vectorized over draws)
def tuned(L: np.ndarray, lrs: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """L (..., I) -> (tuned loss, log lr at the optimum, at_edge) over the last axis (module docstring)."""
  x = np.log(lrs)
  Lf = np.where(np.isnan(L), np.inf, L)
  k = np.argmin(Lf, axis=-1)
  best = np.take_along_axis(Lf, k[..., None], -1)[..., 0]
  edge = (k == 0) | (k == len(lrs) - 1)
  if how == 'best' or len(lrs) < 3:
    return best, x[k], edge
  kk = np.clip(k, 1, len(lrs) - 2)
  y0, y1, y2 = (np.take_along_axis(Lf, (kk + d)[..., None], -1)[..., 0] for d in (-1, 0, 1))
  x0, x1, x2 = x[kk - 1], x[kk], x[kk + 1]
  with np.errstate(invalid='ignore', divide='ignore'):
    f01, f12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    a = (f12 - f01) / (x2 - x0)
    xv = (x0 + x1) / 2 - f01 / (2 * a)
    yv = y0 + f01 * (xv - x0) + a * (xv - x0) * (xv - x1)
  ok = ~edge & np.isfinite(yv) & (a > 0)
  return np.where(ok, yv, best), np.where(ok, xv, x[k]), edge


def fit_powerlaw(logc: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """L = E + A exp(-alpha logc) per row of y (B, J): (E, A, alpha), least squares with alpha on ALPHAS and A > 0
  (for each alpha, E and A are a straight-line fit in u = exp(-alpha logc): A = S_uy / S_uu, SSE = S_yy - A S_uy)."""
  y = np.atleast_2d(y)
  u = np.exp(-ALPHAS[:, None] * logc[None])                       # (K, J)
  uc = u - u.mean(axis=1, keepdims=True)
  yc = y - y.mean(axis=1, keepdims=True)
  s_uy = yc @ uc.T                                                 # (B, K)
  A = s_uy / np.sum(uc ** 2, axis=1)
  sse = np.where(A > 0, np.sum(yc ** 2, axis=1, keepdims=True) - A * s_uy, np.inf)
  k = np.argmin(sse, axis=1)
  A = np.maximum(np.take_along_axis(A, k[:, None], 1)[:, 0], 0.0)
  E = y.mean(axis=1) - A * u.mean(axis=1)[k]
  return E, A, ALPHAS[k]


def decreasing_fit(y: np.ndarray) -> np.ndarray:
  """The non-increasing least-squares fit to each row of y (B, J): fit_j = min over i <= j of max over k >= j of
  mean(y_i..y_k) (the min-max form of isotonic regression, vectorized over rows)."""
  y = np.atleast_2d(y)
  J = y.shape[1]
  cs = np.concatenate([np.zeros((len(y), 1)), np.cumsum(y, axis=1)], axis=1)
  i, k = np.meshgrid(np.arange(J), np.arange(J), indexing='ij')
  with np.errstate(invalid='ignore', divide='ignore'):
    avg = (cs[:, k + 1] - cs[:, i]) / (k - i + 1)               # (B, i, k); only k >= i is used
  out = np.empty_like(y, dtype=float)
  for j in range(J):
    out[:, j] = np.min(np.max(avg[:, :j + 1, j:], axis=2), axis=1)
  return out


def invert(logc: np.ndarray, curve: np.ndarray, target: np.ndarray, how: str) -> np.ndarray:
  """log C at which each draw's curve (B, J) reaches its target (B,): powerlaw or monotone (module docstring);
  +inf where the curve never gets that low, -inf where it starts below it."""
  curve, target = np.atleast_2d(curve), np.atleast_1d(target)
  if how == 'powerlaw':   # fitted in log C about its mean (conditioning)
    E, A, al = fit_powerlaw(logc - logc.mean(), curve)
    with np.errstate(invalid='ignore', divide='ignore'):
      out = logc.mean() + np.log(A / (target - E)) / al
    return np.where(target > E, out, np.inf)
  m = decreasing_fit(curve)
  j = np.clip(np.argmax(m <= target[:, None], axis=1), 1, len(logc) - 1)   # the first point at or below the target
  hi, lo = m[np.arange(len(m)), j - 1], m[np.arange(len(m)), j]
  with np.errstate(invalid='ignore', divide='ignore'):
    f = np.where(hi > lo, (hi - target) / (hi - lo), 0.0)
  out = logc[j - 1] + f * (logc[j] - logc[j - 1])
  out = np.where(target < m[:, -1], np.inf, np.where(target > m[:, 0], -np.inf, out))
  return np.where(target == m[:, 0], logc[0], out)


def bracket_logm(logc: np.ndarray, curve: np.ndarray, target: np.ndarray, log_ref: float, how: str) -> np.ndarray:
  """log M per draw; beyond AdamW's measured points the monotone inversion stops at the end point (a bound)."""
  lc = invert(logc, curve, target, how)
  if how == 'monotone':
    lc = np.where(np.isneginf(lc), logc[0], np.where(np.isposinf(lc), logc[-1], lc))
  return np.clip(lc - log_ref, -LOG_CLIP, LOG_CLIP)


# ----------------------------------------------------------------------------- per size
def _draws(g: Grid, sd: float, B: int, mode: str, rng) -> np.ndarray:
  """(B, J, I) loss draws: independent per point, or one shift per lr arm shared along its branches."""
  scale = sd / np.sqrt(np.maximum(g.n, 1))
  shape = (B, 1, g.L.shape[1]) if mode == 'correlated' else (B,) + g.L.shape
  return g.L[None] + rng.standard_normal(shape) * scale[None]


def _curve(LA: np.ndarray, lrs: np.ndarray, j_ref: int, tune: str, curve: str) -> np.ndarray:
  """AdamW's loss at each compute point per draw (B, J): tuned at each (envelope), or the arm best at j_ref."""
  if curve == 'envelope':
    return tuned(LA, lrs, tune)[0]
  k = np.argmin(np.where(np.isnan(LA[:, j_ref]), np.inf, LA[:, j_ref]), axis=-1)
  return np.take_along_axis(LA, k[:, None, None], 2)[..., 0]


def _logm(LA: np.ndarray, LM: np.ndarray, a: Grid, m: Grid, jm: int, choice: tuple) -> tuple:
  """(log M, Muon's tuned loss, AdamW's curve), per draw, at Muon's compute point jm under one analysis choice."""
  tune, curve, how = choice
  j_ref = int(np.argmin(np.abs(np.log(a.C / m.C[jm]))))
  target = tuned(LM[:, jm], m.lrs, tune)[0]
  ca = _curve(LA, a.lrs, j_ref, tune, curve)
  return bracket_logm(np.log(a.C), ca, target, math.log(m.C[jm]), how), target, ca


def _pct(v: np.ndarray) -> list[float]:
  return [float(x) for x in np.percentile(v, (5, 95))]


def _point(a: Grid, m: Grid, jm: int, sims: dict) -> dict:
  """M at Muon's compute point jm: every choice's estimate, bound flag and interval (envelope of the modes)."""
  per, kept = {}, {}
  for ch in CHOICES:
    lm0, t0, c0 = (v[0] for v in _logm(a.L[None], m.L[None], a, m, jm, ch))
    flag = 'lower bound' if t0 < np.min(c0) else 'upper bound' if t0 > np.max(c0) else None
    ivs = []
    for mode, (la, lmu) in sims.items():
      kept[(ch, mode)] = _logm(la, lmu, a, m, jm, ch)[0]
      ivs.append(_pct(kept[(ch, mode)]))
    per['/'.join(ch)] = {'M': math.exp(lm0), 'flag': flag, 'muon_loss': float(t0),
                         'log_interval': [min(i[0] for i in ivs), max(i[1] for i in ivs)]}
  prim = per['/'.join(PRIMARY)]
  logs = [math.log(c['M']) for c in per.values()]
  curve = tuned(a.L, a.lrs, PRIMARY[0])[0]
  fpt = m.C[jm] / m.tokens[jm]
  return {'tokens': float(m.tokens[jm]), 'C_muon': float(m.C[jm]), 'tokens_per_param': float(m.tokens[jm] / m.N),
          'M': prim['M'], 'flag': prim['flag'], 'muon_loss': prim['muon_loss'],
          'interval': [math.exp(x) for x in prim['log_interval']],
          'systematic': [math.exp(min(logs)), math.exp(max(logs))],
          'combined': [math.exp(min(c['log_interval'][0] for c in per.values())),
                       math.exp(max(c['log_interval'][1] for c in per.values()))],
          'adamw_range': {'C': [float(a.C[0]), float(a.C[-1])], 'loss': [float(curve.max()), float(curve.min())]},
          'bound_value': (float(a.C[-1] / m.C[jm]) if prim['flag'] == 'lower bound' else
                          float(a.C[0] / m.C[jm]) if prim['flag'] == 'upper bound' else None),
          'ns_fraction': float(m.ns_per_step / (m.tokens_per_step * fpt)) if m.tokens_per_step else 0.0,
          'choices': per, '_draws': kept}


def size_result(a: Grid, m: Grid, noise: dict, draws: int, ref_tpp: float, rng) -> dict:
  """One size: M at each of Muon's compute points (module docstring); the reference is nearest ref_tpp. AdamW's
  compute points that miss an lr arm (a study in progress) are left out, and counted."""
  keep = ~np.isnan(a.L).any(axis=1)
  a, dropped = dataclasses.replace(a, C=a.C[keep], tokens=a.tokens[keep], L=a.L[keep], n=a.n[keep]), int((~keep).sum())
  if len(a.C) < 2:
    raise OptimizerStudyError(f'width {a.width}: AdamW has {len(a.C)} complete compute point(s); a curve needs 2')
  jref = int(np.argmin([abs(math.log(t / m.N / ref_tpp)) for t in m.tokens]))
  sims = {mode: (_draws(a, noise['adamw']['sd'], draws, mode, rng), _draws(m, noise['muon']['sd'], draws, mode, rng))
          for mode in ('independent', 'correlated')}
  points = [_point(a, m, jm, sims) for jm in range(len(m.C))]
  for j, p in enumerate(points):
    p['reference'] = j == jref
  curve = tuned(a.L, a.lrs, PRIMARY[0])[0]
  E, A, al = (float(v[0]) for v in fit_powerlaw(np.log(a.C / m.C[jref]), curve))   # plotted against C / C_ref
  return {'width': a.width, 'N': a.N, 'points': points, 'reference': points[jref], 'adamw_points_dropped': dropped,
          'adamw_curve': {'C': a.C.tolist(), 'loss': curve.tolist(), 'E': E, 'A': A, 'alpha': al,
                          'C_ref': float(m.C[jref])},
          'muon_curve': {'C': m.C.tolist(), 'loss': tuned(m.L, m.lrs, PRIMARY[0])[0].tolist()},
          '_sims': sims, '_grids': (a, m), '_jref': jref}


# ----------------------------------------------------------------------------- across sizes
def _slope(logn: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Least-squares slope of each row of y (B, S) on logn (S,)."""
  return (y - y.mean(axis=-1, keepdims=True)) @ (logn - logn.mean()) / np.sum((logn - logn.mean()) ** 2)


def trend(sizes: list[dict]) -> dict | None:
  """The slope of log M on log N at the reference points: primary, per choice, combined, and the verdict."""
  if len(sizes) < 2:
    return None
  logn, per = np.log([s['N'] for s in sizes]), {}
  for ch in CHOICES:
    key = '/'.join(ch)
    est = float(_slope(logn, np.array([[math.log(s['reference']['choices'][key]['M']) for s in sizes]]))[0])
    ivs = [_pct(_slope(logn, np.stack([s['reference']['_draws'][(ch, mode)] for s in sizes], axis=1)))
           for mode in ('independent', 'correlated')]
    per[key] = {'slope': est, 'interval': [min(i[0] for i in ivs), max(i[1] for i in ivs)]}
  prim = per['/'.join(PRIMARY)]
  comb = [min(p['interval'][0] for p in per.values()), max(p['interval'][1] for p in per.values())]
  verdict = 'shrinks with scale' if comb[1] < 0 else 'grows with scale' if comb[0] > 0 else 'not decided'
  return {'slope': prim['slope'], 'interval': prim['interval'], 'combined': comb,
          'systematic': [min(p['slope'] for p in per.values()), max(p['slope'] for p in per.values())],
          'verdict': verdict, 'bounded_widths': [s['width'] for s in sizes if s['reference']['flag']],
          'wen_slope': WEN_SLOPE,
          'wen_inside': comb[0] <= WEN_SLOPE <= comb[1], 'choices': per}


def lr_optima(sizes: list[dict]) -> dict:
  """Per optimizer: the lr optimum at each size's reference budget (parabola vertex; grid ends flagged, with the
  arm to add), and the width exponent of the optima with an interval (independent draws)."""
  out = {}
  for oi, opt in enumerate(('adamw', 'muon')):
    rows, draws = [], []
    for s in sizes:
      g = s['_grids'][oi]
      j = int(np.argmin(np.abs(np.log(g.C / s['adamw_curve']['C_ref']))))
      _, x, edge = tuned(g.L[j], g.lrs, 'parabola')
      xs = tuned(s['_sims']['independent'][oi][:, j], g.lrs, 'parabola')[1]
      step = (g.lrs[1] / g.lrs[0]) if len(g.lrs) > 1 else 2.0
      add = None if not edge else float(g.lrs[0] / step if x <= math.log(g.lrs[0]) else g.lrs[-1] * step)
      row = {'width': g.width, 'lr_opt': math.exp(float(x)), 'edge': bool(edge), 'add_arm': add,
             'lrs': g.lrs.tolist(), 'edges_any_budget': [float(g.C[k] / s['adamw_curve']['C_ref'])
                                                         for k in range(len(g.C)) if tuned(g.L[k], g.lrs, 'best')[2]]}
      if opt == 'muon' and g.adam_side_lr:
        row['adam_side_lr'] = g.adam_side_lr
      rows.append(row)
      draws.append(xs)
    res = {'sizes': rows, 'rule_exponent': RULE_EXPONENT[opt]}
    if len(rows) > 1:   # the grids' centres (median lr) carry the design's rule, its horizon prior included
      logw = np.log([r['width'] for r in rows])
      res['exponent'] = float(_slope(logw, np.log([[r['lr_opt'] for r in rows]]))[0])
      res['interval'] = _pct(_slope(logw, np.stack(draws, axis=1)))
      res['grid_exponent'] = float(_slope(logw, np.log([[np.median(r['lrs']) for r in rows]]))[0])
      res['rule_inside'] = res['interval'][0] <= res['grid_exponent'] <= res['interval'][1]
    out[opt] = res
  for r, s in zip(out['muon']['sizes'], out['adamw']['sizes']):
    if 'adam_side_lr' in r:
      r['adam_side_over_adamw_opt'] = r['adam_side_lr'] / s['lr_opt']
  return out


def steptime(rows: list[dict], rng, draws: int = 2000) -> list[dict]:
  """Per width: Muon's step time over AdamW's from the STEPTIME_NAME runs' median tokens/s (module docstring)."""
  by: dict = {}
  for r in rows:
    tps, ov = r.get('throughput/tokens_per_s'), r.get('overrides') or {}
    if r.get('name') != STEPTIME_NAME or r.get('state') != 'done' or not isinstance(tps, (int, float)) or tps <= 0:
      continue
    by.setdefault(int(ov['model.d_model']), {'ov': ov, 'fpt': float(r['flops']) / float(r['tokens'])}).setdefault(
        ov.get('train.optimizer', 'adamw'), []).append(float(tps))
  out = []
  for w, d in sorted(by.items()):
    if not d.get('adamw') or not d.get('muon'):
      continue
    A, M = np.array(d['adamw']), np.array(d['muon'])
    boot = np.median(rng.choice(A, (draws, len(A))), axis=1) / np.median(rng.choice(M, (draws, len(M))), axis=1)
    per_step = float(d['ov'].get('train.batch_size', 0)) * float(d['ov'].get('model.seq_len', 0))
    pred = 1 + _ns_per_step(d['ov']) / (per_step * d['fpt']) if per_step else None
    out.append({'width': w, 'ratio': float(np.median(A) / np.median(M)), 'interval': _pct(boot),
                'repeats': [len(A), len(M)], 'flop_prediction': pred})
  return out


def study(rows: list[dict], metric: str = DEFAULT_METRIC, noise: float | None = None, draws: int = DEFAULT_DRAWS,
          ref_tpp: float = REF_TPP, steptime_rows: list[dict] | None = None, seed: int = 0) -> dict:
  """Everything of the module docstring from collect rows (steptime_rows default: the same rows)."""
  rng = np.random.default_rng(seed)
  gs = grids(rows, metric)
  widths = sorted({w for w, _ in gs})
  both = [w for w in widths if (w, 'adamw') in gs and (w, 'muon') in gs]
  if not both:
    raise OptimizerStudyError(f'no width has finished {NAME!r} rows of both optimizers (widths seen: {widths})')
  nz, sizes, skipped = seed_noise(rows, metric, noise), [], []
  for w in both:
    try:
      sizes.append(size_result(gs[(w, 'adamw')], gs[(w, 'muon')], nz, draws, ref_tpp, rng))
    except OptimizerStudyError as e:
      skipped.append(str(e))
  if not sizes:
    raise OptimizerStudyError('; '.join(skipped))
  st = steptime(rows if steptime_rows is None else steptime_rows, rng)
  ratio = {s['width']: s for s in st}
  for s in sizes:
    for p in s['points']:
      p['M_with_ns_flops'], r = p['M'] / (1 + p['ns_fraction']), ratio.get(s['width'])
      p['M_per_wall'] = p['M'] / r['ratio'] if r else None
  return {'metric': metric, 'draws': draws, 'ref_tokens_per_param': ref_tpp, 'noise': nz, 'sizes': sizes,
          'widths_missing_an_optimizer': [w for w in widths if w not in both], 'skipped': skipped,
          'trend': trend(sizes),
          'lr': lr_optima(sizes), 'steptime': st}


def jsonable(o):
  """The result without the draws and grids (keys starting with '_'), numpy as plain numbers."""
  if isinstance(o, dict):
    return {k: jsonable(v) for k, v in o.items() if not str(k).startswith('_')}
  if isinstance(o, (list, tuple)):
    return [jsonable(v) for v in o]
  return o.item() if isinstance(o, (np.floating, np.integer, np.bool_)) else o


# ----------------------------------------------------------------------------- report
def _m(p: dict) -> str:
  sign = {'lower bound': '>= ', 'upper bound': '<= '}.get(p['flag'])
  return f'{sign}{p["bound_value"]:.2f} (power law {p["M"]:.2f})' if sign else f'{p["M"]:.2f}'


def _iv(v, fmt='.2f') -> str:
  return f'{v[0]:{fmt}} to {v[1]:{fmt}}'


def _ivm(v) -> str:
  """An interval of M; an end at the clip (a draw where AdamW's fit never reaches Muon's loss) is open."""
  return ' to '.join('open' if abs(math.log(x)) >= LOG_CLIP - 1e-6 else f'{x:.2f}' for x in v)


def describe(res: dict) -> list[str]:
  nz, tr = res['noise'], res['trend']
  out = [f'Not yet measurable: {"; ".join(res["skipped"])}.', ''] if res['skipped'] else []
  out += ['## Noise floor', '', *(f'* {o}: sd {v["sd"]:.4f} ({v["source"]}, {v["pairs"]} pairs)' for o, v in nz.items()),
         '', '## Muon\'s compute multiplier over AdamW per size', '',
         f'M = C_AdamW(L_Muon) / C_Muon at Muon\'s reference budget (~{res["ref_tokens_per_param"]:g} tokens/param); '
         f'primary choice {"/".join(PRIMARY)}; 90% intervals: statistical (primary), systematic (the {len(CHOICES)} '
         'choices\' estimates), combined (hull of every choice\'s interval).', '',
         '| width | N | tokens/N | L_Muon | AdamW loss range | M | 90% stat | systematic | combined | M with NS FLOPs '
         '| M per wall-s |', '|---|---|---|---|---|---|---|---|---|---|---|']
  for s in res['sizes']:
    for p in s['points']:
      ar = p['adamw_range']['loss']
      wall = f'{p["M_per_wall"]:.2f}' if p['M_per_wall'] else 'no step time'
      out.append(f'| {s["width"]}{" (ref)" if p["reference"] else ""} | {s["N"]:.3g} | {p["tokens_per_param"]:.1f} | '
                 f'{p["muon_loss"]:.4f} | {ar[0]:.4f}-{ar[1]:.4f} | {_m(p)} | {_ivm(p["interval"])} | '
                 f'{_ivm(p["systematic"])} | {_ivm(p["combined"])} | {p["M_with_ns_flops"]:.2f} | {wall} |')
  flagged = [s['width'] for s in res['sizes'] if any(p['flag'] for p in s['points'])]
  if flagged:
    out += ['', f'Bounds at widths {flagged}: Muon\'s loss lies outside AdamW\'s measured curve; add AdamW branches '
            'beyond it (ADAMW_FRACTIONS) to turn the bound into a number.']
  out += ['', '## Does the multiplier shrink with scale?', '']
  if tr is None:
    out += ['One size only: no trend.']
  else:
    out += [f'Slope of log M on log N: {tr["slope"]:+.3f} (90% {_iv(tr["interval"], "+.3f")}; systematic '
            f'{_iv(tr["systematic"], "+.3f")}; combined {_iv(tr["combined"], "+.3f")}): **{tr["verdict"]}** '
            '("shrinks" needs the combined interval below 0).',
            f'Wen et al. 2025 (~1.4x at 0.1B, ~1.1x at 1.2B) is a slope of {tr["wen_slope"]:+.3f}: '
            f'{"inside" if tr["wen_inside"] else "outside"} the combined interval.']
    if tr['bounded_widths']:
      out.append(f'The slope uses bounds at widths {tr["bounded_widths"]} as values: read it with that caveat.')
  return out + describe_lr(res['lr']) + describe_steptime(res['steptime'])


def describe_lr(lr: dict) -> list[str]:
  out = ['', '## Learning rates', '', '| optimizer | width | lr optimum (reference budget) | grid | edge |',
         '|---|---|---|---|---|']
  for opt, r in lr.items():
    for s in r['sizes']:
      edge = (f'yes: add lr {s["add_arm"]:.3g}' if s['edge'] else
              f'at compute x{", ".join(f"{c:.2g}" for c in s["edges_any_budget"])}' if s['edges_any_budget'] else 'no')
      out.append(f'| {opt} | {s["width"]} | {s["lr_opt"]:.3g} | {s["lrs"][0]:.3g}-{s["lrs"][-1]:.3g} | {edge} |')
  for opt, r in lr.items():
    if 'exponent' in r:
      out.append(f'\n{opt}: lr_opt ~ width^{r["exponent"]:+.2f} (90% {_iv(r["interval"], "+.2f")}); the design\'s '
                 f'rule (width exponent {r["rule_exponent"]:+.2f}, with its horizon prior {r["grid_exponent"]:+.2f} '
                 f'across these sizes) is {"inside" if r["rule_inside"] else "outside"} it.')
  side = [s for s in lr['muon']['sizes'] if 'adam_side_over_adamw_opt' in s]
  if side:
    out.append('\nMuon\'s AdamW part (embeddings, head, norms) over AdamW\'s measured optimum: ' + ', '.join(
        f'width {s["width"]} x{s["adam_side_over_adamw_opt"]:.2f}' for s in side) + '.')
  return out


def describe_steptime(st: list[dict]) -> list[str]:
  out = ['', '## Step time, Muon / AdamW', '']
  if not st:
    return out + [f'No finished {STEPTIME_NAME!r} pair: run the `:steptime` arm.']
  return out + ['| width | ratio | 90% | repeats (AdamW, Muon) | FLOP model |', '|---|---|---|---|---|'] + [
      f'| {s["width"]} | {s["ratio"]:.3f} | {_iv(s["interval"], ".3f")} | {s["repeats"]} | '
      f'{s["flop_prediction"] or float("nan"):.2f} |' for s in st]


def plot(res: dict, out) -> pathlib.Path:
  """Loss against compute per size, M against N (with Wen et al.'s two points), the step-time ratio by width."""
  from scaling.analysis.run_plot import _pyplot, save_closed
  plt = _pyplot()
  fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4.2))
  for s in res['sizes']:
    ac, mc = s['adamw_curve'], s['muon_curve']
    line = ax0.plot(ac['C'], ac['loss'], 'o', label=f'AdamW, width {s["width"]}')[0]
    cs = np.geomspace(min(ac['C']) / 1.3, max(ac['C']) * 1.3, 50)
    ax0.plot(cs, ac['E'] + ac['A'] * (cs / ac['C_ref']) ** -ac['alpha'], '-', color=line.get_color(), lw=0.8)
    ax0.plot(mc['C'], mc['loss'], '*', ms=11, color=line.get_color(), label=f'Muon, width {s["width"]}')
  ax0.set(xscale='log', xlabel='training FLOPs', ylabel=f'tuned {res["metric"]}', title='loss against compute')
  ax0.legend(fontsize=6)
  ns, ref = [s['N'] for s in res['sizes']], [s['reference'] for s in res['sizes']]
  ms = np.array([p['M'] for p in ref])
  for key, lw, cap in (('combined', 0.8, 2), ('interval', 2.0, 4)):
    ax1.errorbar(ns, ms, yerr=[ms - [p[key][0] for p in ref], [p[key][1] for p in ref] - ms], fmt='o', lw=lw,
                 capsize=cap, color='C0', label='M (90%: thick statistical, thin combined)' if lw > 1 else None)
  ax1.plot(WEN['N'], WEN['M'], 's--', color='C3', label='Wen et al. 2025')
  if res['trend']:
    xs, g = np.geomspace(min(ns), WEN['N'][1], 20), math.exp(np.mean(np.log(ns)))
    ax1.plot(xs, math.exp(np.mean(np.log(ms))) * (xs / g) ** res['trend']['slope'], ':', color='C0',
             label='fitted trend, extended')
  ax1.axhline(1, color='grey', lw=0.6)
  ax1.set(xscale='log', yscale='log', xlabel='parameters N', ylabel='M = C_AdamW(L_Muon) / C_Muon',
          title='Muon\'s compute multiplier')
  ax1.legend(fontsize=7)
  st = res['steptime']
  if st:
    w, r = [s['width'] for s in st], np.array([s['ratio'] for s in st])
    ax2.errorbar(w, r, yerr=[r - [s['interval'][0] for s in st], [s['interval'][1] for s in st] - r], fmt='o',
                 capsize=3, label='measured')
    ax2.plot(w, [s['flop_prediction'] or np.nan for s in st], 'x', label='FLOP model')
    ax2.legend(fontsize=7)
  ax2.set(xscale='log', xlabel='width', ylabel='step time Muon / AdamW', title='step time ratio')
  fig.tight_layout()
  return save_closed(plt, fig, out)


def read_results(root) -> list[dict]:
  from scaling.base.layout import RESULTS
  if not (p := pathlib.Path(root) / RESULTS).is_file():
    raise OptimizerStudyError(f'{p} does not exist: run `scaling sweep collect --root {root}` first')
  return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def report(root, out_dir=None, steptime_root=None, **kw) -> dict:
  """REPORT.md, optimizers.json and optimizers.png under out_dir (default the root)."""
  from scaling.base.files import atomic_write_json, atomic_write_text
  res = study(read_results(root), steptime_rows=read_results(steptime_root) if steptime_root else None, **kw)
  out_dir = pathlib.Path(out_dir or root)
  out_dir.mkdir(parents=True, exist_ok=True)
  lines = ['# Muon against AdamW: compute multiplier by size (issue #36)', '',
           f'From `{root}`' + (f' and `{steptime_root}` (step time)' if steptime_root else '') +
           '; design: configs/sweeps/optimizers.py; method: scaling/analysis/optimizers.py.', '',
           '![loss against compute, M against N, step time](optimizers.png)', ''] + describe(res)
  plot(res, out_dir / 'optimizers.png')
  atomic_write_json(out_dir / 'optimizers.json', jsonable(res), indent=1)
  atomic_write_text(out_dir / 'REPORT.md', '\n'.join(lines) + '\n')
  return res


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog='python -m scaling.analysis.optimizers', description=__doc__.split('\n')[0])
  ap.add_argument('--root', required=True, help='the study\'s sweep root (ROOT/results.jsonl)')
  ap.add_argument('--out', default=None, help='output folder (default ROOT)')
  ap.add_argument('--steptime', default=None, help='the :steptime arm\'s root (default: its rows in ROOT)')
  ap.add_argument('--metric', default=DEFAULT_METRIC)
  ap.add_argument('--noise', type=float, default=None, help='seed sd where the rows have no seed pairs')
  ap.add_argument('--draws', type=int, default=DEFAULT_DRAWS)
  ap.add_argument('--ref-tokens-per-param', type=float, default=REF_TPP)
  a = ap.parse_args(argv)
  try:
    report(a.root, a.out, a.steptime, metric=a.metric, noise=a.noise, draws=a.draws, ref_tpp=a.ref_tokens_per_param)
  except OptimizerStudyError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {pathlib.Path(a.out or a.root) / "REPORT.md"}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
