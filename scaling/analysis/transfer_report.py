"""The report of a learning-rate transfer study across width and depth (configs/sweeps/transfer.py, issue #36).

`scaling report --root ROOT` hands a sweep named 'transfer*' (or one whose rows vary the learning rate and the
depth, or include completep among several parametrizations: `is_transfer`) to write_report here. From
ROOT/results.jsonl it reads curves of eval/loss against train.lr, one per (parametrization, width, depth, steps),
the seeds of a curve averaged point by point, and:

  - the optimal lr of every curve read off three defensible ways (METHODS): the vertex of the parabola in
    x = log2(lr) through the best point and its two grid neighbours ('parabola3'), the least-squares parabola
    through every point within WINDOW grid steps of the best ('window'), and the best measured lr ('best');
  - its interval (INTERVAL, 5-95%): the union over the methods of a parametric bootstrap (B draws) that adds
    to every point normal noise of the run-to-run sd sigma / sqrt(seeds at that point), sigma pooled from the
    curves trained with two or more seeds (the centre shapes; points within NEAR nats of their curve's best),
    else PRIOR_SIGMA_REL x the loss (the seed study's measured sd, stated as assumed); the read-offs of each
    seed's own curve join the interval. A best point at either end of a curve's grid makes its optimum a bound,
    not a value: the interval is open on that side (and the loss at the optimum an upper bound);
  - the optimum's movement across the widths (at the width arm's depth) and across the depths (at the depth
    arm's width): max/min of the optimal lrs and last/first, as ratios with intervals (per draw and method);
  - the loss at the optimum per width and depth, and the step-by-step difference with its interval;
  - the must-show checks, measured (PASS / FAIL / NOT DECIDED, each with its reason): under each transfer
    parametrization the optimum moves <= 2x across the width range (>= 8x) and the depth range (>= 4x), the loss
    at the optimum improves at every step, the loss at the transferred lr (the base curve's optimum, carried to
    every width or depth) improves at every step (a test on each difference's interval, not on overlap), SP's
    optimum moves more (a test on the difference of the log ranges), and the transferred lr at the longer horizon
    is still optimal against its 0.5x and 2x neighbours; plus the pre-check (SP's best loss drops with width by
    more than the noise margin, `precheck`) and the base shape's identity (every parametrization the same model).

Writes ROOT/REPORT.md, ROOT/transfer.json and ROOT/transfer.png (loss against lr per width, one panel per
parametrization; a second row per depth).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from scaling.analysis.lr_report import _num  # the same rows: a finite float from a number or a string, else None
from scaling.base.files import atomic_write_json, atomic_write_text

PAR_KEY, WIDTH_KEY, DEPTH_KEY, LR_KEY = 'model.parametrization', 'model.d_model', 'model.num_layers', 'train.lr'
SEED_KEY, STEPS_KEY = 'train.seed', 'train.steps'
METHODS = ('parabola3', 'window', 'best')
WINDOW, NEAR, DRAWS, INTERVAL = 2.0, 0.5, 400, (0.05, 0.95)
PRIOR_SIGMA_REL = 0.00455        # sd of log loss over seeds, the seed study (docs/results/batch/README.md)
GOAL_RATIO, WIDTH_SPAN, DEPTH_SPAN = 2.0, 8.0, 4.0
PRECHECK_Z = 1.645
PASS, FAIL, UNDECIDED = 'PASS', 'FAIL', 'NOT DECIDED'


def is_transfer(rows: list[dict]) -> bool:
  """Rows of configs/sweeps/transfer.py (named 'transfer*'), or of any sweep over lr x parametrization that
  varies the depth or includes completep."""
  ov = [r.get('overrides') or {} for r in rows]
  if not any(LR_KEY in o for o in ov):
    return False
  if any(str(r.get('name') or '').startswith('transfer') for r in rows):
    return True
  pars = {o[PAR_KEY] for o in ov if PAR_KEY in o}
  vary = lambda k: len({str(o[k]) for o in ov if k in o}) >= 2
  return vary(LR_KEY) and len(pars) >= 2 and ('completep' in pars or vary(DEPTH_KEY))


def curves(rows: list[dict], metric: str = 'eval/loss') -> dict:
  """(parametrization, width, depth, steps) -> seed -> {lr: loss} of the finished rows with a finite metric."""
  out: dict = {}
  for r in rows:
    o = r.get('overrides') or {}
    loss, lr = _num(r.get(metric)), _num(o.get(LR_KEY))
    if r.get('state', 'done') != 'done' or loss is None or lr is None or WIDTH_KEY not in o:
      continue
    key = (str(o.get(PAR_KEY, 'sp')), int(o[WIDTH_KEY]), int(o.get(DEPTH_KEY) or 0), int(o.get(STEPS_KEY) or 0))
    out.setdefault(key, {}).setdefault(int(o.get(SEED_KEY) or 0), {})[lr] = loss
  return out


# ------------------------------------------------------------------------------------------------ read-offs


def _quad(xs, Ys, lo, hi, fallback):
  """Least-squares parabola in x through the columns of Ys (rows: draws) -> (vertex x, loss there), the vertex
  clipped to [lo, hi]; a draw whose parabola opens downwards keeps `fallback` (the best point)."""
  u0 = xs.mean()
  V = np.stack([(xs - u0) ** 2, xs - u0, np.ones_like(xs)], axis=1)
  (a, b, c), *_ = np.linalg.lstsq(V, Ys.T, rcond=None)
  ok = a > 1e-12
  u = np.clip(np.where(ok, -b / (2 * np.where(ok, a, 1.0)), 0.0), lo - u0, hi - u0)
  xv = np.where(ok, u + u0, fallback[0])
  yv = np.where(ok, a * u * u + b * u + c, fallback[1])
  return xv, yv


def read_off(x, Y, window: float = WINDOW) -> dict:
  """method -> (x_opt, loss at it), arrays over the rows of Y (draws), of curves on the log2-lr grid x (sorted)."""
  x = np.asarray(x, float)
  Y = np.atleast_2d(np.asarray(Y, float))
  n = len(x)
  ib = np.argmin(Y, axis=1)
  best = (x[ib], Y[np.arange(len(Y)), ib])
  out = {'best': best, 'parabola3': (best[0].copy(), best[1].copy()), 'window': (best[0].copy(), best[1].copy())}
  if n < 3:
    return out
  step = float(np.median(np.diff(x)))
  for i in np.unique(ib):
    rows = ib == i
    fb = (best[0][rows], best[1][rows])
    j = min(max(int(i), 1), n - 2)
    sel = np.arange(j - 1, j + 2)
    for m, idx in (('parabola3', sel), ('window', np.nonzero(np.abs(x - x[i]) <= window * step + 1e-9)[0])):
      if len(idx) >= 3:
        xs = x[idx]
        xv, yv = _quad(xs, Y[rows][:, idx], xs[0] - step / 2, xs[-1] + step / 2, fb)
        out[m][0][rows], out[m][1][rows] = xv, yv
  return out


def interp(x, Y, xq) -> np.ndarray:
  """The loss of each row of Y at its own xq (log2 lr): the parabola through the 3 grid points nearest xq
  (NaN where xq lies more than half a grid step outside the grid)."""
  x = np.asarray(x, float)
  Y = np.atleast_2d(np.asarray(Y, float))
  xq = np.broadcast_to(np.asarray(xq, float), (len(Y),))
  out = np.full(len(Y), np.nan)
  if len(x) < 3:
    return out
  step = float(np.median(np.diff(x)))
  inside = np.isfinite(xq) & (xq >= x[0] - step / 2) & (xq <= x[-1] + step / 2)
  centre = np.clip(np.argmin(np.abs(x[None, :] - np.where(inside, xq, x[0])[:, None]), axis=1), 1, len(x) - 2)
  for j in np.unique(centre[inside]):
    rows = inside & (centre == j)
    x1, x2, x3 = x[j - 1:j + 2]
    y = Y[rows][:, j - 1:j + 2]
    t = xq[rows]
    out[rows] = (y[:, 0] * (t - x2) * (t - x3) / ((x1 - x2) * (x1 - x3)) + y[:, 1] * (t - x1) * (t - x3) /
                 ((x2 - x1) * (x2 - x3)) + y[:, 2] * (t - x1) * (t - x2) / ((x3 - x1) * (x3 - x2)))
  return out


# ------------------------------------------------------------------------------------------ quantities, verdicts


@dataclasses.dataclass
class Q:
  """A measured quantity: draws[method, draw], extra points (seed read-offs) and open ends (bounds)."""
  draws: np.ndarray
  lo_open: bool = False
  hi_open: bool = False
  points: tuple = ()

  def __sub__(self, other: Q) -> Q:
    return Q(self.draws - other.draws, self.lo_open or other.hi_open, self.hi_open or other.lo_open)

  def interval(self) -> tuple[float, float]:
    vals = [np.nanquantile(d, INTERVAL) for d in self.draws if np.isfinite(d).any()]
    if not vals:
      return (math.nan, math.nan)
    lo = min([v[0] for v in vals] + [p for p in self.points if math.isfinite(p)])
    hi = max([v[1] for v in vals] + [p for p in self.points if math.isfinite(p)])
    return (-math.inf if self.lo_open else float(lo), math.inf if self.hi_open else float(hi))


def verdict(q: Q, threshold: float, want: str, inclusive: bool = False) -> tuple[str, tuple]:
  """PASS when the interval lies wholly on the wanted side ('below' or 'above') of threshold (or on it, when
  inclusive: 'at most 2x'), FAIL when wholly on the other, else NOT DECIDED."""
  lo, hi = q.interval()
  if math.isnan(lo):
    return UNDECIDED, (lo, hi)
  tol = 1e-9 if inclusive else 0.0
  if want == 'below':
    ok, bad = hi < threshold + tol, lo > threshold
  else:
    ok, bad = lo > threshold - tol, hi < threshold
  return (PASS if ok else FAIL if bad else UNDECIDED), (lo, hi)


def _all(verdicts: list[str]) -> str:
  if verdicts and all(v == PASS for v in verdicts):
    return PASS
  return FAIL if FAIL in verdicts else UNDECIDED


# --------------------------------------------------------------------------------------------------- noise


def noise(cv: dict) -> dict:
  """The run-to-run sd: pooled over every lr trained with >= 2 seeds whose mean lies within NEAR nats of its
  curve's best mean, else assumed PRIOR_SIGMA_REL x the median loss."""
  ss = dof = 0.0
  pairs = 0
  for by_seed in cv.values():
    if len(by_seed) < 2:
      continue
    lrs = set().union(*by_seed.values())
    means = {lr: np.mean([c[lr] for c in by_seed.values() if lr in c]) for lr in lrs}
    floor = min(means.values())
    for lr in lrs:
      v = np.array([c[lr] for c in by_seed.values() if lr in c])
      if len(v) >= 2 and means[lr] <= floor + NEAR:
        ss, dof, pairs = ss + float(((v - v.mean()) ** 2).sum()), dof + len(v) - 1, pairs + 1
  if dof:
    return {'sigma': math.sqrt(ss / dof), 'source': f'measured: pooled over {pairs} lrs trained with 2+ seeds '
            f'({int(dof)} degrees of freedom)', 'measured': True}
  losses = [v for by_seed in cv.values() for c in by_seed.values() for v in c.values()]
  sigma = PRIOR_SIGMA_REL * float(np.median(losses)) if losses else math.nan
  return {'sigma': sigma, 'source': f'assumed: no lr was trained with two seeds; {PRIOR_SIGMA_REL:g} x the median '
          'loss (the seed study\'s run-to-run sd)', 'measured': False}


# --------------------------------------------------------------------------------------------- one curve


def analyse_curve(by_seed: dict, sigma: float, rng, draws: int = DRAWS) -> dict:
  """Optimum, loss at it, intervals and draws of one curve (seed -> {lr: loss})."""
  lrs = sorted(set().union(*by_seed.values()))
  x = np.log2(lrs)
  n = np.array([sum(lr in c for c in by_seed.values()) for lr in lrs])
  y = np.array([np.mean([c[lr] for c in by_seed.values() if lr in c]) for lr in lrs])
  Y = y[None, :] + rng.standard_normal((draws, len(x))) * (sigma / np.sqrt(n))[None, :]
  point, boot = read_off(x, y), read_off(x, Y)
  ib = int(np.argmin(y))
  edge = 'low' if ib == 0 else 'high' if ib == len(x) - 1 else None
  seed_x, seed_l = [], []
  for c in by_seed.values():
    if len(by_seed) > 1 and len(c) >= 3:
      sx = sorted(c)
      r = read_off(np.log2(sx), [c[v] for v in sx])
      seed_x += [float(r[m][0][0]) for m in METHODS]
      seed_l += [float(r[m][1][0]) for m in METHODS]
  xq = Q(np.stack([boot[m][0] for m in METHODS]), edge == 'low', edge == 'high',
         tuple(seed_x) + tuple(float(point[m][0][0]) for m in METHODS))
  lq = Q(np.stack([boot[m][1] for m in METHODS]), edge is not None, False,
         tuple(seed_l) + tuple(float(point[m][1][0]) for m in METHODS))
  return {'lrs': lrs, 'x': x, 'loss': y, 'n_seeds': n, 'Y': Y, 'edge': edge, 'xq': xq, 'lq': lq,
          'seeds': sorted(by_seed), 'per_seed': {s: dict(c) for s, c in by_seed.items()},
          'seed_lr': [2.0 ** v for v in seed_x[::len(METHODS)]],
          'methods': {m: (2.0 ** float(point[m][0][0]), float(point[m][1][0])) for m in METHODS},
          'lr': 2.0 ** float(point['parabola3'][0][0]), 'loss_opt': float(point['parabola3'][1][0])}


# -------------------------------------------------------------------------------------- families and checks


def families(cv: dict) -> dict:
  """The width arm (curves at the depth with the most widths) and the depth arm (at the width with the most
  depths), at the main horizon (the most common steps); the longer-horizon curves apart."""
  steps = [k[3] for k in cv]
  main = max(set(steps), key=lambda s: (steps.count(s), -s)) if steps else 0
  at = [k for k in cv if k[3] == main]
  out = {'steps': main, 'horizon': sorted(k for k in cv if k[3] > main)}
  for axis, fixed in (('width', 2), ('depth', 1)):
    moving = 1 if axis == 'width' else 2
    count: dict = {}
    for k in at:
      count.setdefault(k[fixed], set()).add(k[moving])
    best = max(count, key=lambda f: (len(count[f]), -f), default=None)
    if best is None or len(count[best]) < 2:
      out[axis] = None
      continue
    out[axis] = {'fixed': best, 'values': sorted(count[best]),
                 'keys': {p: {k[moving]: k for k in at if k[0] == p and k[fixed] == best}
                          for p in sorted({k[0] for k in at})}}
  return out


def analyse_family(fam: dict, res: dict) -> dict:
  """Per parametrization: movement (range, last/first) and loss steps, with Q's (log2 units for lr)."""
  out = {}
  for par, keys in fam['keys'].items():
    vals = sorted(keys)
    cs = [res[keys[v]] for v in vals]
    if len(cs) < 2:
      continue
    X = np.stack([c['xq'].draws for c in cs])            # [curve, method, draw]
    opened = any(c['edge'] for c in cs)
    rng_q = Q(X.max(axis=0) - X.min(axis=0), False, opened)
    end_q = cs[-1]['xq'] - cs[0]['xq']
    steps = [cs[i + 1]['lq'] - cs[i]['lq'] for i in range(len(cs) - 1)]
    base = cs[0]
    at_t = [Q(np.stack([interp(c['x'], c['Y'], base['xq'].draws[m]) for m in range(len(METHODS))])) for c in cs]
    t_steps = [at_t[i + 1] - at_t[i] for i in range(len(cs) - 1)]
    for q in t_steps:   # a transferred lr that is a bound, or falls off a curve's grid: not a measured difference
      q.lo_open = q.hi_open = base['edge'] is not None or float(np.isnan(q.draws).mean()) > 0.05
    out[par] = {'values': vals, 'range': rng_q, 'end': end_q, 'loss_steps': steps, 'transfer_steps': t_steps,
                'span': vals[-1] / vals[0], 'edges': [v for v, c in zip(vals, cs) if c['edge']]}
  return out


def _fmt_ratio(iv) -> str:
  lo, hi = iv
  f = lambda v: '0' if v == -math.inf else 'inf' if v == math.inf else f'{2.0 ** v:.3g}x'
  return f'[{f(lo)}, {f(hi)}]'


def _fmt_d(iv) -> str:
  return '[' + ', '.join('-inf' if v == -math.inf else 'inf' if v == math.inf else f'{v:+.4f}' for v in iv) + ']'


def checks(fams: dict, arms: dict, horizon: list, pre: dict) -> list[dict]:
  """The must-show checks as measured: one dict per check (name, parametrization, verdict, interval, reason)."""
  out = [dict(pre, name='pre-check: SP best loss improves with width', par='sp')]
  for axis, span_goal in (('width', WIDTH_SPAN), ('depth', DEPTH_SPAN)):
    fam = arms.get(axis) or {}
    sp = fam.get('sp')
    for par, a in fam.items():
      if par == 'sp':
        continue
      short = a['span'] < span_goal - 1e-9
      why_short = f'the {axis}s span {a["span"]:g}x, under the {span_goal:g}x asked' if short else ''
      v, iv = verdict(a['range'], math.log2(GOAL_RATIO), 'below', inclusive=True)
      out.append(dict(name=f'{axis}: optimum moves <= {GOAL_RATIO:g}x (max/min)', par=par,
                      verdict=UNDECIDED if short else v, interval=_fmt_ratio(iv),
                      reason=why_short or _edge_note(a, v)))
      for label, qs in (('loss at the optimum improves', a['loss_steps']),
                        ('loss at the transferred lr improves', a['transfer_steps'])):
        vs = [verdict(q, 0.0, 'below') for q in qs]
        steps = '; '.join(f'{x}->{y}: {_fmt_d(iv)}' for (_, iv), x, y in zip(vs, a['values'], a['values'][1:]))
        out.append(dict(name=f'{axis}: {label} at every step', par=par, verdict=_all([v for v, _ in vs]),
                        interval=steps, reason=why_short or 'each step\'s difference (larger minus smaller) must '
                        'lie below 0'))
      if sp is not None:
        v, iv = verdict(sp['range'] - a['range'], 0.0, 'above')
        out.append(dict(name=f'{axis}: SP\'s optimum moves more', par=par, verdict=v, interval=_fmt_ratio(iv),
                        reason='ratio of SP\'s max/min to this parametrization\'s; must lie above 1x'))
  for h in horizon:
    out.append(dict(h, name=f'horizon: transferred lr still optimal at {h["mult"]:g}x steps', par=h['par']))
  return out


def _edge_note(a: dict, v: str) -> str:
  if a['edges']:
    return f'optimum at the grid edge (a bound) at {", ".join(map(str, a["edges"]))}: the range is open above'
  return 'max/min of the optimal lrs; its interval must lie below the goal' if v != FAIL else 'decidedly above 2x'


def precheck(res: dict, fam: dict | None, sigma: dict) -> dict:
  """SP's best observed loss at every width of the width arm must drop at every step by more than
  PRECHECK_Z sqrt(2) sigma (sigma measured, else assumed relative to the loss)."""
  keys = (fam or {}).get('keys', {}).get('sp', {})
  if len(keys) < 2:
    return dict(verdict=UNDECIDED, interval='', reason='needs SP curves at two or more widths')
  ws = sorted(keys)
  best = [float(res[keys[w]]['loss'].min()) for w in ws]
  verdicts, parts = [], []
  for i in range(len(ws) - 1):
    s = sigma['sigma'] if sigma['measured'] else PRIOR_SIGMA_REL * best[i]
    margin, d = PRECHECK_Z * math.sqrt(2) * s, best[i + 1] - best[i]
    v = PASS if d < -margin else FAIL if d > margin else UNDECIDED
    if v == PASS and res[keys[ws[i]]]['edge']:
      v = UNDECIDED   # the narrower width's best is at its grid's end: its own best may be lower still
    verdicts.append(v)
    parts.append(f'{ws[i]}->{ws[i + 1]}: {d:+.4f} (margin {margin:.4f})')
  return dict(verdict=_all(verdicts), interval='; '.join(parts),
              reason=f'every step must drop by more than {PRECHECK_Z} sqrt(2) sigma ({sigma["source"]})')


def horizon_checks(cv: dict, fams: dict, res: dict) -> list[dict]:
  """The longer-horizon curves (3 lrs: the transferred lr and 0.5x, 2x): both neighbours must be decidedly worse."""
  out = []
  for key in fams['horizon']:
    c = res[key]
    if len(c['lrs']) < 3:
      continue
    mid = len(c['lrs']) // 2
    lo_q = Q(c['Y'][None, :, mid - 1] - c['Y'][None, :, mid])
    hi_q = Q(c['Y'][None, :, mid + 1] - c['Y'][None, :, mid])
    (v1, i1), (v2, i2) = verdict(lo_q, 0.0, 'above'), verdict(hi_q, 0.0, 'above')
    short = res.get((key[0], key[1], key[2], fams['steps']))
    then = f'; at {fams["steps"]} steps its optimum was {short["lr"]:.3g}' if short else ''
    out.append(dict(par=key[0], width=key[1], depth=key[2], steps=key[3], mult=key[3] / max(fams['steps'], 1),
                    lr=c['lrs'][mid], verdict=_all([v1, v2]),
                    interval=f'{c["lrs"][mid - 1]:.3g}: {_fmt_d(i1)}; {c["lrs"][mid + 1]:.3g}: {_fmt_d(i2)}',
                    reason=f'the neighbours\' loss minus the transferred lr\'s must lie above 0; the 3-point vertex '
                    f'is {c["lr"]:.3g} ({c["lr"] / c["lrs"][mid]:.2f}x){then}'))
  return out


def base_identity(cv: dict, fams: dict) -> str:
  """At the smallest width and depth every parametrization is the same model: the largest difference of loss."""
  fw = fams.get('width')
  if not fw:
    return ''
  w0 = fw['values'][0]
  keys = [k for k in cv if k[1] == w0 and k[2] == fw['fixed'] and k[3] == fams['steps']]
  if len({k[0] for k in keys}) < 2:
    return ''
  diffs = [abs(cv[a][s][lr] - cv[b][s][lr]) for a in keys for b in keys if a < b
           for s in set(cv[a]) & set(cv[b]) for lr in set(cv[a][s]) & set(cv[b][s])]
  return (f'Base shape (width {w0}, depth {fw["fixed"]}): {", ".join(sorted(k[0] for k in keys))} are the same model '
          f'there; largest difference of loss between them at a shared lr and seed: {max(diffs, default=0):.3g}.')


def analyse(rows: list[dict], metric: str = 'eval/loss', draws: int = DRAWS, seed: int = 0) -> dict:
  cv = curves(rows, metric)
  sig = noise(cv)
  rng = np.random.default_rng(seed)
  res = {k: analyse_curve(cv[k], sig['sigma'], rng, draws) for k in sorted(cv)}
  fams = families(cv)
  arms = {ax: analyse_family(fams[ax], res) for ax in ('width', 'depth') if fams.get(ax)}
  pre = precheck(res, fams.get('width'), sig)
  hz = horizon_checks(cv, fams, res)
  return {'curves': cv, 'results': res, 'families': fams, 'arms': arms, 'sigma': sig,
          'checks': checks(fams, arms, hz, pre), 'identity': base_identity(cv, fams), 'metric': metric,
          'transferred': _transferred(fams, res)}


def _transferred(fams: dict, res: dict) -> dict:
  """The base curve's optimum of each transfer parametrization: the lr the horizon arm holds."""
  fw = fams.get('width')
  if not fw:
    return {}
  return {p: {'lr': res[keys[min(keys)]]['lr'], 'edge': res[keys[min(keys)]]['edge']}
          for p, keys in fw['keys'].items() if keys and p != 'sp'}


# ------------------------------------------------------------------------------------------------- writing

PAR_ORDER = ('sp', 'mup', 'completep')


def _pars(keys) -> list[str]:
  return [p for p in PAR_ORDER if p in keys] + sorted(set(keys) - set(PAR_ORDER))


def _lr_iv(q: Q) -> str:
  lo, hi = q.interval()
  f = lambda v, open_: 'open' if open_ else f'{2.0 ** v:.3g}'
  return f'[{f(lo, lo == -math.inf)}, {f(hi, hi == math.inf)}]'


def _loss_iv(q: Q) -> str:
  lo, hi = q.interval()
  return f'[{"open" if lo == -math.inf else f"{lo:.4f}"}, {"open" if hi == math.inf else f"{hi:.4f}"}]'


def _arm_lines(axis: str, fam: dict, arm: dict, res: dict) -> list[str]:
  other = 'depth' if axis == 'width' else 'width'
  lines = [f'## {axis.capitalize()} arm ({other} {fam["fixed"]})', '']
  for par in _pars(fam['keys']):
    keys = fam['keys'][par]
    lines += [f'### {par}', '', f'| {axis} | optimal lr | 90% interval | parabola3 / window / best | seeds (each\'s '
              'parabola3) | loss at optimum | 90% interval | note |', '|---|---|---|---|---|---|---|---|']
    for v in sorted(keys):
      c = res[keys[v]]
      note = {'low': 'edge: optimum <= lowest lr (a bound)', 'high': 'edge: optimum >= highest lr (a bound)'}
      lines.append(f'| {v} | {c["lr"]:.3g} | {_lr_iv(c["xq"])} | '
                   + ' / '.join(f'{c["methods"][m][0]:.3g}' for m in METHODS)
                   + f' | {len(c["seeds"])}' + ''.join(f' {v:.3g}' for v in c['seed_lr'])
                   + f' | {c["loss_opt"]:.4f} | {_loss_iv(c["lq"])} | {note.get(c["edge"], "")} |')
    a = arm.get(par)
    if a:
      xs = [math.log2(res[keys[v]]['lr']) for v in a['values']]
      lines += ['', f'- Movement across {a["span"]:g}x {axis}: max/min {2.0 ** (max(xs) - min(xs)):.3g}x, 90% '
                f'{_fmt_ratio(a["range"].interval())}; last/first {2.0 ** (xs[-1] - xs[0]):.3g}x, 90% '
                f'{_fmt_ratio(a["end"].interval())}.',
                '- Loss at the optimum, step by step (larger minus smaller, 90%): ' + '; '.join(
                    f'{x}->{y} {_fmt_d(q.interval())}' for q, x, y in zip(a['loss_steps'], a['values'],
                                                                        a['values'][1:])) + '.',
                '- Loss at the transferred lr (this parametrization\'s optimum at the smallest ' + axis + '): ' +
                '; '.join(f'{x}->{y} {_fmt_d(q.interval())}' for q, x, y in
                          zip(a['transfer_steps'], a['values'], a['values'][1:])) + '.']
    lines.append('')
  return lines


def _summary_lines(an: dict) -> list[str]:
  lines = []
  for par in [p for p in _pars({c['par'] for c in an['checks']}) if p != 'sp']:
    mine = [c for c in an['checks'] if c['par'] == par]
    bad = [c['name'] for c in mine if c['verdict'] == FAIL]
    open_ = [c['name'] for c in mine if c['verdict'] == UNDECIDED]
    if not bad and not open_:
      lines.append(f'- **{par}: every check passes**: the evidence shows the must-show under {par}.')
    else:
      lines.append(f'- **{par}: not shown.** ' + (f'Failed: {"; ".join(bad)}. ' if bad else '') +
                   (f'Not decided: {"; ".join(open_)} (each reason below: an optimum at the grid edge, a range '
                    'short of the one asked, or an interval that straddles the goal).' if open_ else ''))
  pre = an['checks'][0]
  lines.append(f'- Pre-check (SP\'s best loss improves with width at this horizon): **{pre["verdict"]}**.' + (
      '' if pre['verdict'] == PASS else ' So width does not measurably help SP at this horizon, and a transfer '
      'verdict here is not about a regime where width matters: lengthen the runs (configs/sweeps/transfer.py STEPS).'))
  return lines


def render(an: dict, *, n_rows: int, results_name: str, png: str | None) -> str:
  cv, res, fams, sig = an['curves'], an['results'], an['families'], an['sigma']
  n_used = sum(len(c) for s in cv.values() for c in s.values())
  lines = ['# Learning-rate transfer across width and depth: SP, μP, CompleteP', '',
           f'Source: `{results_name}` ({n_used} finished runs with a finite `{an["metric"]}` of {n_rows} rows); main '
           f'horizon {fams["steps"]} steps. Run-to-run sd sigma = {sig["sigma"]:.4f} nats ({sig["source"]}).', '',
           'Optimal lr of each curve (the seeds averaged per lr) read off three ways: the parabola in log2(lr) '
           'through the best point and its grid neighbours (parabola3, the value shown), the least-squares '
           f'parabola through every point within {WINDOW:g} grid steps of the best (window), the best measured lr '
           f'(best). Intervals (5-95%): the union over the three methods of a parametric bootstrap ({DRAWS} draws of '
           'every point with noise sigma / sqrt(its seeds)) and of each seed\'s own read-offs. "open": the optimum '
           'is at the end of the lr grid, a bound, not a value. Checks test each difference\'s interval (not '
           'the overlap of two intervals): PASS when it lies wholly on the wanted side, FAIL when wholly on the '
           'other, NOT DECIDED otherwise. scaling/analysis/transfer_report.py.', '', '## Verdict', '']
  lines += _summary_lines(an) + ['']
  if an['transferred']:
    lines += ['Transferred lr (the base curve\'s optimum, parabola3; set configs/sweeps/transfer.py HORIZON_LR from '
              'it): ' + ', '.join(f'{p} {t["lr"]:.3g}' + (' (a bound: grid edge)' if t['edge'] else '')
                                   for p, t in an['transferred'].items()) + '.', '']
  if an['identity']:
    lines += [an['identity'], '']
  lines += ['## Checks (as measured)', '', '| check | parametrization | verdict | interval / steps | reason |',
            '|---|---|---|---|---|']
  lines += [f'| {c["name"]} | {c["par"]} | **{c["verdict"]}** | {c["interval"]} | {c["reason"]} |'
            for c in an['checks']]
  lines.append('')
  if png:
    lines += [f'![loss against lr]({png})', '']
  for axis in ('width', 'depth'):
    if fams.get(axis):
      lines += _arm_lines(axis, fams[axis], an['arms'].get(axis, {}), res)
    else:
      lines += [f'## {axis.capitalize()} arm', '', f'No curves at two or more {axis}s.', '']
  lrs = sorted({lr for s in cv.values() for c in s.values() for lr in c})
  lines += ['## All runs', '', f'{an["metric"]} per curve and seed (rows) and lr (columns).', '',
            '| parametrization | width | depth | steps | seed | ' + ' | '.join(f'{v:.3g}' for v in lrs) + ' |',
            '|---|---|---|---|---|' + '---|' * len(lrs)]
  for k in sorted(cv, key=lambda k: (k[3], PAR_ORDER.index(k[0]) if k[0] in PAR_ORDER else 9, k[0], k[1], k[2])):
    for s, c in sorted(cv[k].items()):
      lines.append(f'| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {s} | ' +
                   ' | '.join(f'{c[v]:.4f}' if v in c else '-' for v in lrs) + ' |')
  return '\n'.join(lines) + '\n'


def _clean(v):
  """JSON-ready: numpy scalars as Python numbers, an open end (inf) or nan as null."""
  if isinstance(v, (dict, list, tuple)):
    return {str(k): _clean(x) for k, x in v.items()} if isinstance(v, dict) else [_clean(x) for x in v]
  if isinstance(v, (np.floating, float)):
    return float(v) if math.isfinite(v) else None
  return int(v) if isinstance(v, np.integer) else v


def to_json(an: dict) -> dict:
  curves_ = {f'{k[0]}/w{k[1]}/d{k[2]}/s{k[3]}': {
      'lrs': c['lrs'], 'loss': c['loss'].tolist(), 'n_seeds': c['n_seeds'].tolist(), 'edge': c['edge'],
      'lr': c['lr'], 'loss_at_optimum': c['loss_opt'], 'methods': c['methods'],
      'lr_interval': [2.0 ** v for v in c['xq'].interval()], 'loss_interval': list(c['lq'].interval())}
      for k, c in an['results'].items()}
  arms = {ax: {p: {'values': a['values'], 'range_ratio_interval': [2.0 ** v for v in a['range'].interval()],
                   'end_ratio_interval': [2.0 ** v for v in a['end'].interval()],
                   'loss_step_intervals': [list(q.interval()) for q in a['loss_steps']],
                   'transfer_step_intervals': [list(q.interval()) for q in a['transfer_steps']]}
               for p, a in arm.items()} for ax, arm in an['arms'].items()}
  fams = {ax: {'fixed': f['fixed'], 'values': f['values']} for ax, f in an['families'].items()
          if ax in ('width', 'depth') and f}
  return _clean({'metric': an['metric'], 'sigma': an['sigma'], 'steps': an['families']['steps'], 'families': fams,
                 'curves': curves_, 'arms': arms, 'checks': an['checks'], 'transferred': an['transferred'],
                 'identity': an['identity']})


def write_report(root: str, rows: list[dict], results: str, metric: str = 'eval/loss', draws: int = DRAWS) -> str:
  """ROOT/REPORT.md, ROOT/transfer.json and ROOT/transfer.png of a transfer sweep; returns the report's path."""
  an = analyse(rows, metric, draws)
  png = None
  if an['results'] and (an['families'].get('width') or an['families'].get('depth')):
    png = 'transfer.png'
    from scaling.analysis.transfer_plots import plot
    axes_ = [a for a in ('width', 'depth') if an['families'].get(a)]
    plot(an, os.path.join(root, png), _pars({p for a in axes_ for p in an['families'][a]['keys']}))
  path = os.path.join(root, 'REPORT.md')
  atomic_write_text(path, render(an, n_rows=len(rows), results_name=os.path.relpath(results, root), png=png))
  atomic_write_json(os.path.join(root, 'transfer.json'), to_json(an), indent=1)
  return path
