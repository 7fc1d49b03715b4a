"""The plot of a transfer sweep's report (scaling/analysis/transfer_report.py): loss against lr, a row per axis
(width, depth), a panel per parametrization, each curve's optimum (star) and its interval (bar)."""

from __future__ import annotations


def plot(an: dict, path: str, pars: list[str]) -> None:
  """`pars`: the parametrizations in panel order."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fams, res = an['families'], an['results']
  axes_ = [a for a in ('width', 'depth') if fams.get(a)]
  fig, axes = plt.subplots(len(axes_), len(pars), figsize=(5 * len(pars), 3.8 * len(axes_)), squeeze=False)
  for row, axis in zip(axes, axes_):
    fam = fams[axis]
    cmap = plt.get_cmap('viridis')
    for ax, par in zip(row, pars):
      keys = fam['keys'].get(par, {})
      floor = min((float(res[k]['loss'].min()) for k in keys.values()), default=0.0)
      for i, v in enumerate(sorted(keys)):
        c, color = res[keys[v]], cmap(i / max(len(fam['values']) - 1, 1))
        ax.plot(c['lrs'], c['loss'], marker='o', color=color, label=f'{axis} {v}')
        for s in c['per_seed'].values():
          if len(c['seeds']) > 1:
            ax.plot(sorted(s), [s[x] for x in sorted(s)], ls='none', marker='.', color=color, alpha=0.5)
        lo, hi = c['xq'].interval()
        span = [2.0 ** max(lo, c['x'][0] - 1), 2.0 ** min(hi, c['x'][-1] + 1)]
        ax.plot(span, [c['loss_opt']] * 2, color=color, lw=3, alpha=0.5)
        ax.plot([c['lr']], [c['loss_opt']], marker='*', ms=12, color=color, mec='k', mew=0.5)
      ax.set_xscale('log', base=2)
      ax.set_ylim(floor - 0.05, floor + 1.0)
      ax.set_xlabel('learning rate')
      ax.set_title(f'{par}: {axis}s at {"depth" if axis == "width" else "width"} {fam["fixed"]}')
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    row[0].set_ylabel(f'{an["metric"]} (final)')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
