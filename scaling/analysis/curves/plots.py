"""The PNG of `scaling predict`: the observed curves, the law fitted through them, and each predicted curve with
its 5-95% band and its final loss with the prediction interval (matplotlib, imported only here; Agg backend, as
scaling/analysis/fit/plots.py). The file is drawn beside its name and renamed into place, so a plot that raises
leaves no partial PNG."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from scaling.analysis.curves.fitting import Fit
from scaling.analysis.curves.forecast import final_update, predict_curve


def _offset(fit: Fit) -> int:
  """step = updates behind the loss + 1 for train/loss rows (scaling/analysis/curves/runs.py), + 0 for eval."""
  return 1 if fit.metric.startswith('train/') else 0


def _draw(plt, fit: Fit, targets: Sequence[tuple[object, dict]], title: str, observed: Sequence = ()):
  fig, ax = plt.subplots(figsize=(8, 5))
  colors = plt.cm.tab10.colors
  for j, c in enumerate(observed):
    color = colors[(len(fit.points) + j) % len(colors)]
    ax.plot(c.t + _offset(fit), c.loss, 'x', ms=3, alpha=0.5, color=color, label=f'held out: {c.name}')
  for i, p in enumerate(fit.points):
    c = p.curve
    color = colors[i % len(colors)]
    ax.plot(c.t + _offset(fit), c.loss, '.', ms=2.5, alpha=0.35, color=color)
    ax.plot(p.t + _offset(fit), p.y, '.', ms=4, color=color,
            label=f'fitted: {c.name}')
    band = predict_curve(fit, c.schedule)
    ax.plot(band['t'] + _offset(fit), band['point'], '-', lw=1.2, color=color)
  for j, (sched, pred) in enumerate(targets):
    color = colors[(len(fit.points) + j) % len(colors)]
    band = predict_curve(fit, sched)
    x = band['t'] + _offset(fit)
    if pred.get('state') != 'predicted':
      ax.plot([], [], ' ', label=f'{sched.label}: cannot predict')
      continue
    ax.plot(x, band['point'], '--', lw=1.5, color=color, label=f'predicted: {sched.label}')
    if band['lo'] is not None:
      ax.fill_between(x, band['lo'], band['hi'], color=color, alpha=0.15, lw=0)
    end = final_update(fit.metric, sched) + _offset(fit)
    lo, hi = pred['pi']
    ax.errorbar([end], [pred['point']], yerr=[[pred['point'] - lo], [hi - pred['point']]], fmt='o', color=color,
                capsize=4, ms=5)
  ys = np.concatenate([p.y for p in fit.points] + [c.loss[c.t > c.schedule.warmup] for c in observed]
                      + [np.array(pred['pi']) for _, pred in targets if pred.get('state') == 'predicted'])
  lo, hi = ys.min(), np.percentile(ys, 95)
  ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
  ax.set_xlabel('step')
  ax.set_ylabel(fit.metric)
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=7)
  fig.tight_layout()
  return fig


def plot_prediction(path: str, fit: Fit, targets: Sequence[tuple[object, dict]], title: str,
                    observed: Sequence = ()) -> str:
  """Writes the PNG to `path` (renamed into place once drawn); targets: (Schedule, prediction) pairs, drawn in the
  colours of `observed` (measured curves of those runs, when known: validation)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  tmp = f'{path}.tmp{os.getpid()}.png'
  fig = _draw(plt, fit, targets, title, observed)
  try:
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
  finally:
    plt.close(fig)
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
