"""The report of a learning-rate transfer sweep (configs/sweeps/lr_transfer.py): does the optimal
learning rate stay put as the model gets wider, under SP and under μP?

`scaling report --root ROOT` hands a sweep whose runs vary model.parametrization, model.d_model and
train.lr (is_lr_transfer) to write_report here. From ROOT/results.jsonl (`scaling sweep collect`):

  - per parametrization and width, the loss (eval/loss by default) against the learning rate;
  - the optimal lr per width: the vertex of the parabola in log2(lr) through the best three
    points (the best and its two neighbours, `optimum`), flagged when the best point is at the edge of the grid (not bracketed:
    the vertex is then an extrapolation and the true optimum may lie further out);
  - how far the optimum moves across the widths: max/min of the optimal lrs;
  - the loss at the optimum per width (the parabola's minimum, and the best measured loss);
  - the goal of issue 16 checked as measured: μP's optimum moves by at most 2x across the widths
    while μP's best loss at the largest width is no worse than SP's.

Writes ROOT/REPORT.md and ROOT/lr_transfer.png (loss against lr, one curve per width, an SP and a
μP panel, the optima marked).
"""

from __future__ import annotations

import json
import math
import os

PAR_KEY, WIDTH_KEY, LR_KEY = 'model.parametrization', 'model.d_model', 'train.lr'
GOAL_RATIO = 2.0


def _num(v):
  try:
    v = float(v)
  except (TypeError, ValueError):
    return None
  return v if math.isfinite(v) else None


def is_lr_transfer(rows: list[dict]) -> bool:
  """Rows of a sweep over parametrization x width x lr (at least two of each)."""
  ov = [r.get('overrides') or {} for r in rows]
  return all(len({o.get(k) for o in ov if k in o}) >= 2 for k in (PAR_KEY, WIDTH_KEY, LR_KEY))


def points(rows: list[dict], metric: str = 'eval/loss') -> dict:
  """parametrization -> width -> {lr: loss} of the finished rows with a finite metric."""
  out: dict = {}
  for r in rows:
    o = r.get('overrides') or {}
    loss, lr = _num(r.get(metric)), _num(o.get(LR_KEY))
    if r.get('state', 'done') != 'done' or loss is None or lr is None or PAR_KEY not in o or WIDTH_KEY not in o:
      continue
    out.setdefault(o[PAR_KEY], {}).setdefault(int(o[WIDTH_KEY]), {})[lr] = loss
  return out


def optimum(curve: dict) -> dict:
  """The optimal lr of one {lr: loss} curve: the vertex of the parabola in x = log2(lr) through the
  best three points: the lowest-loss lr and its two neighbours on the measured grid (the two nearest
  measured lrs at an end of the grid). Around an interior best point the vertex lies between the
  neighbours; at an end it is an extrapolation (`bracketed` False). With fewer than three points, or
  a parabola that opens downwards, the best point. (The three lowest losses need not bracket the
  best point: on a curve with a cliff past the optimum they can all lie on one side, and their
  vertex is then an extrapolation far from the data.)"""
  lrs = sorted(curve)
  best = min(lrs, key=curve.get)
  out = dict(lr=best, loss=curve[best], best_lr=best, best_loss=curve[best], n=len(lrs),
             bracketed=lrs[0] < best < lrs[-1], method='best point')
  if len(lrs) < 3:
    return out
  i = min(max(lrs.index(best), 1), len(lrs) - 2)
  three = lrs[i - 1:i + 2]
  (x1, x2, x3), (y1, y2, y3) = [math.log2(v) for v in three], [curve[v] for v in three]
  # Lagrange form: y = a x^2 + b x + c through the three points
  d = (x1 - x2) * (x1 - x3) * (x2 - x3)
  a = (x3 * (y2 - y1) + x2 * (y1 - y3) + x1 * (y3 - y2)) / d
  b = (x3 * x3 * (y1 - y2) + x2 * x2 * (y3 - y1) + x1 * x1 * (y2 - y3)) / d
  if a <= 0:
    return out
  c = y1 - a * x1 * x1 - b * x1
  xv = -b / (2 * a)
  out.update(lr=2.0 ** xv, loss=c - b * b / (4 * a), method='parabola')
  return out


def summarize(pts: dict) -> dict:
  """parametrization -> {'widths': {width: optimum(...)}, 'ratio': max/min optimal lr, 'all_bracketed'}."""
  out = {}
  for par, by_w in pts.items():
    opts = {w: optimum(c) for w, c in sorted(by_w.items())}
    lrs = [o['lr'] for o in opts.values()]
    out[par] = dict(widths=opts, ratio=max(lrs) / min(lrs) if lrs else None,
                    all_bracketed=all(o['bracketed'] for o in opts.values()))
  return out


def goal(summary: dict) -> dict:
  """The issue's goal, as measured: μP's optimum moves <= GOAL_RATIO x across the widths (all optima
  bracketed) and μP's best loss at the largest width is <= SP's (keeps or improves)."""
  sp, mup = summary.get('sp'), summary.get('mup')
  if not sp or not mup:
    return dict(measured=False, why='needs both sp and mup rows')
  wide = max(set(sp['widths']) & set(mup['widths']), default=None)
  if wide is None:
    return dict(measured=False, why='sp and mup share no width')
  sp_best, mup_best = sp['widths'][wide]['best_loss'], mup['widths'][wide]['best_loss']
  return dict(measured=True, width=wide, mup_ratio=mup['ratio'], sp_ratio=sp['ratio'],
              ratio_ok=mup['ratio'] <= GOAL_RATIO and mup['all_bracketed'],
              loss_ok=mup_best <= sp_best, sp_best=sp_best, mup_best=mup_best)


def plot(pts: dict, summary: dict, path: str, metric: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  pars = [p for p in ('sp', 'mup') if p in pts] + sorted(set(pts) - {'sp', 'mup'})
  fig, axes = plt.subplots(1, len(pars), figsize=(5.5 * len(pars), 4), sharey=True, squeeze=False)
  widths = sorted({w for by_w in pts.values() for w in by_w})
  cmap = plt.get_cmap('viridis')
  for ax, par in zip(axes[0], pars):
    for i, w in enumerate(widths):
      curve = pts[par].get(w)
      if not curve:
        continue
      color = cmap(i / max(len(widths) - 1, 1))
      lrs = sorted(curve)
      ax.plot(lrs, [curve[v] for v in lrs], marker='o', color=color, label=f'd_model {w}')
      o = summary[par]['widths'][w]
      ax.plot([o['lr']], [o['loss']], marker='*', ms=12, color=color, mec='k', mew=0.5)
    ax.set_xscale('log', base=2)
    ax.set_xlabel('learning rate')
    r = summary[par]['ratio']
    ax.set_title(f'{par}: optimum moves {r:.2f}x across widths' if r else par)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel(f'{metric} (final)')
  axes[0][-1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def render(pts: dict, summary: dict, g: dict, *, metric: str, n_rows: int, n_used: int, results_name: str,
           png: str | None) -> str:
  lines = ['# LR transfer: SP vs μP', '',
           f'Source: `{results_name}` ({n_used} finished runs with a finite `{metric}` of {n_rows} rows). '
           f'Optimal lr per width: vertex of the parabola in log2(lr) through the best point and its two '
           f'neighbours on the lr grid '
           f'(scaling/analysis/lr_report.py `optimum`); "edge" marks a best point at the end of the lr grid (the '
           'optimum is not bracketed there and the vertex is an extrapolation).', '']
  if png:
    lines += [f'![loss against lr]({png})', '']
  if g.get('measured'):
    lines += ['## Result', '',
              f'- Optimum moves across widths (max/min of the optimal lr): **SP {g["sp_ratio"]:.2f}x**, '
              f'**μP {g["mup_ratio"]:.2f}x**.',
              f'- Best measured {metric} at the largest width (d_model {g["width"]}): SP {g["sp_best"]:.4f}, '
              f'μP {g["mup_best"]:.4f}.',
              f'- Goal (μP optimum within {GOAL_RATIO:g}x, every optimum bracketed): '
              f'{"met" if g["ratio_ok"] else "not met"}; μP keeps or improves the best loss at the largest '
              f'width: {"yes" if g["loss_ok"] else "no"}.', '']
  else:
    lines += [f'Goal not measured: {g.get("why")}.', '']
  for par in [p for p in ('sp', 'mup') if p in summary]:
    s = summary[par]
    lines += [f'## {par}', '', '| d_model | optimal lr | loss at optimum | best lr | best loss | runs | note |',
              '|---|---|---|---|---|---|---|']
    for w, o in s['widths'].items():
      note = ('' if o['bracketed'] else 'edge') + ('' if o['method'] == 'parabola' else ' best point')
      lines.append(f'| {w} | {o["lr"]:.3g} | {o["loss"]:.4f} | {o["best_lr"]:.3g} | {o["best_loss"]:.4f} | '
                   f'{o["n"]} | {note.strip()} |')
    lines += ['', f'Optimum max/min across widths: {s["ratio"]:.2f}x.', '']
  lrs = sorted({lr for by_w in pts.values() for c in by_w.values() for lr in c})
  lines += ['## All runs', '', f'{metric} per parametrization and width (rows) and lr (columns).', '',
            '| parametrization | d_model | ' + ' | '.join(f'{v:.3g}' for v in lrs) + ' |',
            '|---|---|' + '---|' * len(lrs)]
  for par in [p for p in ('sp', 'mup') if p in pts]:
    for w, c in sorted(pts[par].items()):
      lines.append(f'| {par} | {w} | ' + ' | '.join(f'{c[v]:.4f}' if v in c else '-' for v in lrs) + ' |')
  return '\n'.join(lines) + '\n'


def write_report(root: str, rows: list[dict], results: str, metric: str = 'eval/loss') -> str:
  """ROOT/REPORT.md and ROOT/lr_transfer.png of an lr-transfer sweep; returns the report's path."""
  pts = points(rows, metric)
  summary = summarize(pts)
  png = None
  if pts:
    png = 'lr_transfer.png'
    plot(pts, summary, os.path.join(root, png), metric)
  text = render(pts, summary, goal(summary), metric=metric, n_rows=len(rows),
                n_used=sum(len(c) for by_w in pts.values() for c in by_w.values()),
                results_name=os.path.relpath(results, root), png=png)
  path = os.path.join(root, 'REPORT.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  with open(os.path.join(root, 'lr_transfer.json'), 'w') as f:
    json.dump({'metric': metric, 'summary': {p: {**s, 'widths': {str(w): o for w, o in s['widths'].items()}}
                                             for p, s in summary.items()}, 'goal': goal(summary)}, f, indent=1)
  return path
