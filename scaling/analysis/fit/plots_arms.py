"""lr_arms.png: the learning rate tuned at every point (fit.json `lr_arms`, scaling/analysis/fit/arms.py).

Left: each point's best arm (filled: interior; x: at an end of the arms tried) and its log-lr parabola optimum
(open) against N, one colour per budget, with the fitted LR law at each point (line). Right: every arm's loss
above its point's best against lr / best lr: how sharp the optimum is, and whether the arms bracket it.
"""

from __future__ import annotations

import numpy as np


def plot_arms(plt, rec: dict, path: str) -> None:
  points = rec['points']
  budgets = sorted({round(p['C'], -8) for p in points})
  colors = dict(zip(budgets, plt.cm.viridis(np.linspace(0, 0.85, max(1, len(budgets))))))
  law = rec.get('law') or {}
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
  for c in budgets:
    mine = sorted((p for p in points if round(p['C'], -8) == c), key=lambda p: p['N'])
    color = colors[c]
    n = np.array([p['N'] for p in mine])
    best = np.array([p['best_lr'] for p in mine])
    edge = np.array([p['edge'] is not None for p in mine])
    ax.scatter(n[~edge], best[~edge], color=color, s=25, label=f'C={c:.2g}')
    ax.scatter(n[edge], best[edge], color=color, marker='x', s=40)
    opt = [(p['N'], p['lr_opt']) for p in mine if p['lr_opt']]
    if opt:
      ax.scatter(*zip(*opt), facecolors='none', edgecolors=color, s=60)
    if 'alpha' in law:
      pred = 10 ** (law['c'] + law['alpha'] * np.log10(n) + law['beta'] * np.log10([p['D'] for p in mine]))
      ax.plot(n, pred, color=color, lw=1)
    for p in mine:
      rel = np.array(p['arms']) / p['best_lr']
      ax2.plot(rel, np.array(p['arm_L']) - min(p['arm_L']), '-o', color=color, ms=3, lw=0.7, alpha=0.7)
  for a in (ax, ax2):
    a.set_xscale('log')
  ax2.xaxis.set_minor_formatter(plt.NullFormatter())
  ax.set_yscale('log')
  ax.set_xlabel('N')
  ax.set_ylabel('learning rate')
  title = 'best arm (x: at an end), log-lr parabola optimum (o)'
  if 'alpha' in law:
    title += f'\nline: lr_opt ∝ N^{law["alpha"]:.2f} D^{law["beta"]:.2f}'
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  ax2.set_xlabel('lr / best arm lr')
  ax2.set_ylabel('loss above the best arm')
  ax2.set_title('every point\'s arms', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
