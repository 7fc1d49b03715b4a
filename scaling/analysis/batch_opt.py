"""The optimal batch against data (issue #37, arm (b) of configs/sweeps/batch.py): B_opt per (size, budget) and
B_opt(D) = k D^b.

Input: the rows of a sweep's results.jsonl (`scaling sweep collect`): each a run with `overrides`
(train.batch_size, train.lr, model.d_model, model.seq_len), its whole training's `tokens` (D) and `flops` (C),
`params` (N) and the final loss (`eval/loss` by default). Rows named GRID_NAME (the grid's cooldown branches) are
the grid; a (size, budget) is every row of one N whose D agree within `budget_tol` (the step rounding at each batch
moves D by a fraction of a percent).

Per (size, budget), a cell:
  * per batch the best loss over the lr arms (a batch whose best lr is the lowest or highest arm is flagged: its
    lr optimum is not bracketed either);
  * B_opt at the vertex of a parabola in log2 B of those per-batch bests: through the best batch and its two
    neighbours (`fit='three'`, the design's; exact), or least squares over every batch (`fit='all'`). When the
    lowest loss is at the first or last batch of the grid (or, with 'all', the parabola is concave or its vertex
    falls outside the grid) the minimum is **not bracketed**: B_opt is only a bound (<= the smallest batch, or >=
    the largest), never a number;
  * an interval from a parametric bootstrap that redraws seed noise: every draw adds N(0, sigma^2 / n) to each
    (batch, lr) loss (n: the seed repeats averaged there), takes the best lr per batch again and the vertex again.
    A draw whose minimum is at an edge counts as an open end (-inf or +inf in log B), never dropped, so an
    interval end can be open ('<= 8', '>= 64'). sigma is the pooled SD of seed repeats when the grid has them
    (rows that differ only in a `*seed` override), else the value passed in, else the stated assumption
    DEFAULT_NOISE_REL x the median loss (the seed study's sd of log eval/bpb, docs/results/seed_upgrades).

Across budgets: log2 B_opt = log2 k + b log2 D by least squares, per size and pooled over sizes, over the cells
whose point estimate is bracketed (the others are listed with their bound). The same bootstrap draws give each
fit's draw; a draw in which a fitted cell falls to an edge moves the coefficient in a known direction (the sign
of that cell's weight in the least-squares solution times the side of the edge): it counts as -inf or +inf, and a
draw whose open cells pull both ways counts as -inf for the lower end and +inf for the upper one. Whether B_opt
depends on N at equal D: the joint fit log2 B = c + b log2 D + g log2 N (one exponent), g's interval and a
two-sided bootstrap p-value for g = 0; and per pair of sizes, the difference of their fitted log2 B_opt at one D
(the geometric middle of their D ranges; flagged when that D is outside either), paired by draw.

Budgets of one (batch, lr) arm branch from one parent and share its seed, so their noise is correlated by an
amount a grid without seed repeats at several budgets cannot measure. Every quantity across cells is therefore
bootstrapped twice, at the two ends: independent noise per cell (`draws`) and one draw per (size, batch, lr) arm
shared by all of that size's budgets (`draws_corr`, fully correlated); its interval is the envelope of the two and
its p-value the larger. A cell's own interval is the same under both (its noise has the same law).

jax-free (numpy).
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

GRID_NAME = 'batch-grid'
DEFAULT_METRIC = 'eval/loss'
DEFAULT_NOISE_REL = 0.00455   # sd of log eval/bpb over seeds (docs/results/seed_upgrades/REPORT.md, base n=3)
DEFAULT_DRAWS = 2000
LEVEL = 0.9
DEEPSEEK = (0.292, 0.327)     # DeepSeek LLM 2024: B_opt (tokens) = 0.292 C^0.327
POWER_LINES_EXP = 0.4         # Bergsma et al. 2025 ("Power Lines"): B_opt ~ D^~0.4, nearly independent of N


class BatchOptError(ValueError):
  """A grid that cannot give an optimum; the message says why."""


# ----------------------------------------------------------------------------- reading the grid
def _seeds(ov) -> list:
  if isinstance(ov, dict):
    return [(k, v) for k, v in sorted(ov.items()) if str(k).rsplit('.', 1)[-1] == 'seed'] + \
        [s for k, v in sorted(ov.items()) for s in _seeds(v)]
  return []


def _without_seeds(ov):
  if isinstance(ov, dict):
    return {k: _without_seeds(v) for k, v in ov.items() if str(k).rsplit('.', 1)[-1] != 'seed'}
  return ov


def grid_rows(rows: Sequence[dict], metric: str = DEFAULT_METRIC, name: str = GRID_NAME) -> list[dict]:
  """The grid's finished rows as {'N', 'width', 'D', 'C', 'batch', 'seq_len', 'lr', 'loss', 'key', 'seed'}."""
  out = []
  for r in rows:
    ov = r.get('overrides') or {}
    if (r.get('name') or ov.get('name')) != name or r.get('state', 'done') not in ('done', None):
      continue
    loss = r.get(metric)
    if not isinstance(loss, (int, float)) or not math.isfinite(loss) or not r.get('tokens'):
      continue
    out.append({'N': float(r['params']), 'width': ov.get('model.d_model'), 'D': float(r['tokens']),
                'C': float(r.get('flops') or 0), 'batch': int(ov['train.batch_size']),
                'seq_len': int(ov.get('model.seq_len', 256)), 'lr': float(ov['train.lr']), 'loss': float(loss),
                'key': json.dumps([_without_seeds(ov), r['params'], r['tokens']], sort_keys=True, default=str),
                'seed': json.dumps(_seeds(ov), default=str)})
  return out


def group_cells(grid: list[dict], budget_tol: float = 0.1) -> list[dict]:
  """(size, budget) cells: rows of one N whose D lie within budget_tol of the group's smallest, sorted by N, D."""
  cells = []
  for n in sorted({g['N'] for g in grid}):
    mine = sorted((g for g in grid if g['N'] == n), key=lambda g: g['D'])
    groups: list[list[dict]] = []
    for g in mine:
      if groups and g['D'] <= groups[-1][0]['D'] * (1 + budget_tol):
        groups[-1].append(g)
      else:
        groups.append([g])
    for rows in groups:
      cells.append(_cell(rows))
  return cells


def _cell(rows: list[dict]) -> dict:
  batches = sorted({r['batch'] for r in rows})
  lrs = {b: sorted({r['lr'] for r in rows if r['batch'] == b}) for b in batches}
  loss = {b: [float(np.mean([r['loss'] for r in rows if r['batch'] == b and r['lr'] == lr])) for lr in lrs[b]]
          for b in batches}
  reps = {b: [sum(1 for r in rows if r['batch'] == b and r['lr'] == lr) for lr in lrs[b]] for b in batches}
  d = float(np.exp(np.mean(np.log([r['D'] for r in rows]))))
  c = float(np.exp(np.mean(np.log([max(r['C'], 1e-300) for r in rows]))))
  return {'N': rows[0]['N'], 'width': rows[0]['width'], 'D': d, 'C': c, 'seq_len': rows[0]['seq_len'],
          'batches': batches, 'lrs': lrs, 'loss': loss, 'reps': reps}


def seed_noise(grid: list[dict]) -> dict | None:
  """The pooled within-group SD of the loss over rows that differ only in a `*seed` override; None without."""
  groups: dict = {}
  for g in grid:
    groups.setdefault(g['key'], []).append(g)
  groups = {k: v for k, v in groups.items() if len(v) >= 2 and len({g['seed'] for g in v}) >= 2}
  if not groups:
    return None
  ss = sum(float(np.sum((x - x.mean()) ** 2)) for x in (np.array([g['loss'] for g in v]) for v in groups.values()))
  dof = sum(len(v) - 1 for v in groups.values())
  return {'value': math.sqrt(ss / dof), 'dof': dof, 'source': f'seed repeats ({len(groups)} groups, {dof} dof)'}


def noise_of(grid: list[dict], noise: float | None) -> dict:
  """sigma: the caller's value, else the seed repeats' pooled SD, else the stated assumption."""
  if noise is not None:
    return {'value': float(noise), 'dof': None, 'source': 'given (--noise)'}
  got = seed_noise(grid)
  if got:
    return got
  med = float(np.median([g['loss'] for g in grid]))
  return {'value': DEFAULT_NOISE_REL * med, 'dof': None,
          'source': f'assumed: {DEFAULT_NOISE_REL} x the median loss {med:.4g} (the seed study\'s sd of log eval/bpb '
                    f'over 3 seeds; this grid has no seed repeats)'}


# ----------------------------------------------------------------------------- one cell's vertex
def vertices(x: np.ndarray, y: np.ndarray, fit: str = 'three') -> tuple[np.ndarray, np.ndarray]:
  """Vertices of parabolas in x through rows of y (draws, len(x)): (vertex x, side): side 0 bracketed (vertex is
  a number), -1 the minimum at or below the first x, +1 at or above the last (vertex then nan)."""
  y = np.atleast_2d(y)
  n = len(x)
  arg = np.argmin(y, axis=1)
  side = np.where(arg == 0, -1, np.where(arg == n - 1, 1, 0))
  v = np.full(len(y), np.nan)
  if n < 3:
    return v, side
  if fit == 'three':
    i = np.clip(arg, 1, n - 2)
    x0, x1, x2 = x[i - 1], x[i], x[i + 1]
    rows = np.arange(len(y))
    y0, y1, y2 = y[rows, i - 1], y[rows, i], y[rows, i + 1]
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    with np.errstate(divide='ignore', invalid='ignore'):
      v = x1 - 0.5 * num / den
  elif fit == 'all':
    coef = y @ np.linalg.pinv(np.vander(x, 3)).T          # (draws, 3): c2, c1, c0
    with np.errstate(divide='ignore', invalid='ignore'):
      v = -coef[:, 1] / (2 * coef[:, 0])
    lower_end = np.where(y[:, 0] <= y[:, -1], -1, 1)   # a concave parabola: the side of the lower end
    out = np.where(coef[:, 0] <= 0, lower_end, np.where(v <= x[0], -1, np.where(v >= x[-1], 1, 0)))
    side = np.where(side != 0, side, out)
  else:
    raise BatchOptError(f'fit must be "three" or "all", got {fit!r}')
  return np.where(side == 0, v, np.nan), side


def _best_over_lr(loss: dict, batches: list[int]) -> tuple[np.ndarray, list[int], list[str]]:
  best, arg, flags = [], [], []
  for b in batches:
    ls = np.asarray(loss[b])
    i = int(np.argmin(ls))
    best.append(float(ls[i]))
    arg.append(i)
    flags.append('' if len(ls) < 3 or 0 < i < len(ls) - 1 else ('lowest lr' if i == 0 else 'highest lr'))
  return np.array(best), arg, flags


def cell_optimum(cell: dict, sigma: float, draws: int = DEFAULT_DRAWS, fit: str = 'three', seed: int = 0,
                 shared: dict | None = None) -> dict:
  """The cell's B_opt (sequences), its side, its interval and the bootstrap's vertices (log2 B, +-inf at edges):
  `draws` from noise of its own, `draws_corr` from `shared`'s standard normals per (batch, lr) (drawn on demand;
  pass one dict to every budget of a size so an arm's noise is the same in each)."""
  batches = cell['batches']
  x = np.log2(np.array(batches, float))
  best, arg, flags = _best_over_lr(cell['loss'], batches)
  v, side = vertices(x, best[None], fit)
  rng = np.random.default_rng(seed)
  width = max(len(cell['loss'][b]) for b in batches)
  mean = np.full((len(batches), width), np.inf)
  sd = np.zeros((len(batches), width))
  for j, b in enumerate(batches):
    mean[j, :len(cell['loss'][b])] = cell['loss'][b]
    sd[j, :len(cell['loss'][b])] = sigma / np.sqrt(np.asarray(cell['reps'][b], float))
  drawn = (mean[None] + rng.standard_normal((draws,) + mean.shape) * sd[None]).min(axis=2)
  dv, dside = vertices(x, drawn, fit)
  logb = np.where(dside == 0, dv, np.where(dside < 0, -np.inf, np.inf))
  lo, hi = interval(logb)
  shared = {} if shared is None else shared
  z = np.zeros((draws,) + mean.shape)
  for j, b in enumerate(batches):
    for k, lr in enumerate(cell['lrs'][b]):
      key = (b, lr)
      if key not in shared:
        shared[key] = np.random.default_rng([seed, 7919, len(shared)]).standard_normal(draws)
      z[:, j, k] = shared[key][:draws]
  cv, cside = vertices(x, (mean[None] + z * sd[None]).min(axis=2), fit)
  ex = _excess(best, batches)
  i = int(np.clip(np.argmin(best), 1, len(x) - 2)) if len(x) >= 3 else 0
  sel = slice(i - 1, i + 2) if fit == 'three' else slice(None)
  par = np.polyfit(x[sel], best[sel], 2).tolist() if len(x) >= 3 else None
  return {**{k: cell[k] for k in ('N', 'width', 'D', 'C', 'seq_len', 'batches')},
          'best_loss': best.tolist(), 'best_lr': [cell['lrs'][b][i] for b, i in zip(batches, arg)],
          'lr_edge': flags, 'side': int(side[0]), 'bracketed': bool(side[0] == 0),
          'b_opt': float(2 ** v[0]) if side[0] == 0 else None, 'log2_b_opt': float(v[0]) if side[0] == 0 else None,
          'interval': [float(2 ** lo), float(2 ** hi)], 'open_draws': {'low': float(np.mean(dside < 0)),
                                                                     'high': float(np.mean(dside > 0))},
          'excess_at': ex, 'parabola_log2B': par, 'parabola_x': [float(x[sel][0]), float(x[sel][-1])] if par else None,
          'draws': logb, 'draws_corr': np.where(cside == 0, cv, np.where(cside < 0, -np.inf, np.inf))}


def _excess(best: np.ndarray, batches: list[int]) -> dict:
  """Each batch's best loss above the lowest of the cell's (measured, not fitted)."""
  return {int(b): float(best[j] - best.min()) for j, b in enumerate(batches)}


def interval(vals: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
  """Percentile interval over every draw: +-inf count as open ends; nan (undetermined) widens both ends."""
  a = (1 - level) / 2
  lo = np.quantile(np.where(np.isnan(vals), -np.inf, vals), a, method='lower')
  hi = np.quantile(np.where(np.isnan(vals), np.inf, vals), 1 - a, method='higher')
  return float(lo), float(hi)


# ----------------------------------------------------------------------------- fits across budgets
def linear_draws(w: np.ndarray, y_point: np.ndarray, y_draws: np.ndarray) -> tuple[float, np.ndarray]:
  """A linear functional w . y of the fitted cells' log2 B_opt: its point value and its value per draw, where a
  draw with an open cell (+-inf) gets the sign of sum(side x w) as +-inf, or nan when open cells pull both ways."""
  point = float(w @ y_point)
  fin = np.isfinite(y_draws)
  vals = np.where(fin, y_draws, 0.0) @ w
  pull = np.where(fin, 0.0, np.sign(y_draws)) * np.sign(w)[None]
  up, down = (pull > 0).any(axis=1), (pull < 0).any(axis=1)
  vals = np.where(up & ~down, np.inf, np.where(down & ~up, -np.inf, np.where(up & down, np.nan, vals)))
  # an open cell whose weight is zero does not move the functional
  return point, vals


def _lsq(X: np.ndarray) -> np.ndarray:
  return np.linalg.pinv(X)       # (params, cells): coefficient = P @ y


def _summ(point: float, vals: np.ndarray) -> dict:
  lo, hi = interval(vals)
  return {'value': point, 'interval': [lo, hi], 'open': float(np.mean(~np.isfinite(vals)))}


def _stack(use: list[dict], key: str, shift=None) -> np.ndarray:
  return np.stack([c[key] + (0.0 if shift is None else shift[i]) for i, c in enumerate(use)], axis=1)


def _lin(w: np.ndarray, y: np.ndarray, use: list[dict], shift=None) -> tuple[dict, list[np.ndarray]]:
  """w . y with its interval: the envelope of the independent and the fully correlated budgets' draws (module
  docstring); also each one's per-draw values."""
  runs = [linear_draws(w, y, _stack(use, k, shift)) for k in ('draws', 'draws_corr')]
  a, b = (_summ(*r) for r in runs)
  env = {'value': a['value'], 'interval': [min(a['interval'][0], b['interval'][0]),
                                           max(a['interval'][1], b['interval'][1])],
         'open': max(a['open'], b['open']), 'independent': a['interval'], 'correlated': b['interval']}
  return env, [r[1] for r in runs]


def fit_law(cells: list[dict]) -> dict | None:
  """log2 B_opt (tokens) = log2 k + b log2 D over bracketed cells (>= 2 distinct D): b and k with intervals."""
  use = [c for c in cells if c['bracketed']]
  xd = np.log2([c['D'] for c in use])
  if len(use) < 2 or np.ptp(xd) == 0:
    return None
  y = np.array([c['log2_b_opt'] + math.log2(c['seq_len']) for c in use])
  shift = [math.log2(c['seq_len']) for c in use]
  P = _lsq(np.stack([np.ones_like(xd), xd], axis=1))
  b, _ = _lin(P[1], y, use, shift)
  a, _ = _lin(P[0], y, use, shift)
  res = y - np.stack([np.ones_like(xd), xd], axis=1) @ (P @ y)
  return {'b': b, 'log2_k': a, 'k': 2 ** a['value'], 'cells': len(use), 'D_range': [float(2 ** xd.min()),
                                                                                   float(2 ** xd.max())],
          'rmse_log2': float(np.sqrt(np.mean(res ** 2))),
          'left_out': [_bound(c) for c in cells if not c['bracketed']]}


def _bound(c: dict) -> str:
  edge = c['batches'][0] if c['side'] < 0 else c['batches'][-1]
  return f'N {c["N"]:.3g}, D {c["D"]:.3g}: B_opt {"<=" if c["side"] < 0 else ">="} {edge} (not bracketed)'


def size_test(cells: list[dict]) -> dict | None:
  """Does B_opt depend on N at equal D? The joint fit log2 B = c + b log2 D + g log2 N over bracketed cells of
  >= 2 sizes: g with its interval and a bootstrap p-value for g = 0; pairwise differences at a common D."""
  use = [c for c in cells if c['bracketed']]
  sizes = sorted({c['N'] for c in use})
  if len(sizes) < 2 or len(use) < 4:
    return None
  xd, xn = np.log2([c['D'] for c in use]), np.log2([c['N'] for c in use])
  y = np.array([c['log2_b_opt'] for c in use])
  X = np.stack([np.ones_like(xd), xd, xn], axis=1)
  if np.linalg.matrix_rank(X) < 3:
    return None
  P = _lsq(X)
  g, g_runs = _lin(P[2], y, use)
  b, _ = _lin(P[1], y, use)
  p = 0.0
  for g_vals in g_runs:   # the larger p-value of the two noise structures
    below = np.mean(np.where(np.isnan(g_vals), True, g_vals <= 0))
    above = np.mean(np.where(np.isnan(g_vals), True, g_vals >= 0))
    p = max(p, float(min(1.0, 2 * min(below, above))))
  pairs = []
  for i, n1 in enumerate(sizes):
    for n2 in sizes[i + 1:]:
      pairs.append(_pair(use, y, n1, n2))
  return {'g': g, 'b_common': b, 'p_value': p, 'depends_on_N': bool(g['interval'][0] > 0 or g['interval'][1] < 0),
          'pairs': [q for q in pairs if q]}


def _pair(use, y, n1, n2) -> dict | None:
  """log2 B_opt(size n2) - log2 B_opt(size n1) at D0, each from its own line, paired by draw."""
  ws = []
  ranges = []
  for n in (n1, n2):
    idx = [i for i, c in enumerate(use) if c['N'] == n]
    xd = np.log2([use[i]['D'] for i in idx])
    if len(idx) < 2 or np.ptp(xd) == 0:
      return None
    ranges.append((xd.min(), xd.max()))
    ws.append((idx, _lsq(np.stack([np.ones_like(xd), xd], axis=1))))
  x0 = (min(r[0] for r in ranges) + max(r[1] for r in ranges)) / 2
  w = np.zeros(len(use))
  for sgn, (idx, P) in zip((-1, 1), ws):
    w[idx] += sgn * (P[0] + x0 * P[1])
  d, _ = _lin(w, y, use)
  inside = all(r[0] <= x0 <= r[1] for r in ranges)
  return {'N': [n1, n2], 'D': float(2 ** x0), 'diff_log2': d, 'extrapolated': not inside,
          'differs': bool(d['interval'][0] > 0 or d['interval'][1] < 0)}


def predict(law: dict, cells: list[dict], d: float) -> dict:
  """The pooled law's B_opt (tokens) at D = d with its interval (the same draws)."""
  use = [c for c in cells if c['bracketed']]
  xd = np.log2([c['D'] for c in use])
  y = np.array([c['log2_b_opt'] + math.log2(c['seq_len']) for c in use])
  P = _lsq(np.stack([np.ones_like(xd), xd], axis=1))
  s, _ = _lin(P[0] + math.log2(d) * P[1], y, use, [math.log2(c['seq_len']) for c in use])
  return {'D': d, 'tokens': 2 ** s['value'], 'interval': [2 ** s['interval'][0], 2 ** s['interval'][1]],
          'extrapolated': not law['D_range'][0] <= d <= law['D_range'][1]}


# ----------------------------------------------------------------------------- the study
def study(rows: Sequence[dict], metric: str = DEFAULT_METRIC, noise: float | None = None, fit: str = 'three',
          draws: int = DEFAULT_DRAWS, seed: int = 0, name: str = GRID_NAME, budget_tol: float = 0.1) -> dict:
  """Every cell's optimum, the per-size and pooled B_opt(D) laws, the size test."""
  grid = grid_rows(rows, metric, name)
  if not grid:
    raise BatchOptError(f'no finished rows named {name!r} with a finite {metric!r} (run the sweep, then '
                        f'`scaling sweep collect`)')
  sigma = noise_of(grid, noise)
  shared: dict = {}   # per size: one standard normal per (batch, lr) arm, shared by the size's budgets
  cells = [cell_optimum(c, sigma['value'], draws, fit, seed + i, shared.setdefault(c['N'], {}))
           for i, c in enumerate(group_cells(grid, budget_tol))]
  per_size = {}
  for n in sorted({c['N'] for c in cells}):
    law = fit_law([c for c in cells if c['N'] == n])
    per_size[n] = law
  return {'metric': metric, 'fit': fit, 'draws': draws, 'level': LEVEL, 'noise': sigma, 'cells': cells,
          'per_size': per_size, 'pooled': fit_law(cells), 'size_test': size_test(cells)}


def implications(res: dict, targets: Sequence[dict], fixed_tokens: float) -> list[dict]:
  """Per target ({'budget' C, 'tokens' D, 'width'?}): the pooled law's B_opt at D and DeepSeek's at C beside the
  fixed batch (tokens a step)."""
  out = []
  for t in targets:
    row = {'budget': t.get('budget'), 'width': t.get('width'), 'D': t['tokens'], 'fixed': fixed_tokens}
    if res['pooled']:
      p = predict(res['pooled'], res['cells'], t['tokens'])
      lo, hi = p['interval']
      row |= {'b_opt': p['tokens'], 'interval': p['interval'], 'extrapolated': p['extrapolated'],
              'verdict': 'inside' if lo <= fixed_tokens <= hi else 'fixed below B_opt' if fixed_tokens < lo
              else 'fixed above B_opt'}
    if t.get('budget'):
      row['deepseek'] = DEEPSEEK[0] * t['budget'] ** DEEPSEEK[1]
    out.append(row)
  return out


def jsonable(res: dict) -> dict:
  """The study without the per-draw arrays (for batch_opt.json)."""
  def clean(o):
    if isinstance(o, dict):
      return {str(k): clean(v) for k, v in o.items() if k not in ('draws', 'draws_corr')}
    if isinstance(o, (list, tuple)):
      return [clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
      return str(o)
    if isinstance(o, (np.floating, np.integer)):
      return clean(o.item())
    return o
  return clean(res)
