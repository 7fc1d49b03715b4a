"""The coordinate check's PNGs (the rows of scaling/analysis/coordcheck.py), per sweep (width, depth):

    coordcheck_<sweep>.png          RMS of each activation kind against the swept axis, a line per recorded step
    coordcheck_<sweep>_updates.png  its one-step update relative to it (rel), the same layout
    coordcheck_<sweep>_weights.png  the relative weight update per parameter (spectral and Frobenius), the median
                                    over the recorded steps after the first update, a line per parameter

one row of panels per parametrization (sp, mup, completep), log-log axes.
"""

from __future__ import annotations

import pathlib

import numpy as np

from scaling.analysis.coordcheck_table import AXIS, HIDDEN, KINDS, STAT_TEXT, _pars, kind_curves


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _axes(plt, nrows, ncols):
  return plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False)


def plot_kinds(rows: list[dict], path, stat: str, sweep: str) -> None:
  """One panel per activation kind (columns) and parametrization (rows): `stat` against the axis, a line per step."""
  plt = _plt()
  pars = _pars(rows)
  fig, axes = _axes(plt, len(pars), len(KINDS))
  last = max(r['step'] for r in rows)
  cmap = plt.get_cmap('viridis')
  for i, par in enumerate(pars):
    curves = kind_curves([r for r in rows if r['parametrization'] == par], stat, sweep)
    for j, kind in enumerate(KINDS):
      ax = axes[i][j]
      for t, by_x in curves.get((par, kind), {}).items():
        xs = sorted(by_x)
        ax.plot(xs, [by_x[x] for x in xs], marker='o', ms=3, color=cmap(t / max(last, 1)), label=f't={t}')
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_title(f'{par}: {kind}', fontsize=9)
      ax.set_xlabel(sweep)
      if j == 0:
        ax.set_ylabel(STAT_TEXT[stat], fontsize=8)
  axes[0][-1].legend(fontsize=5, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_weights(rows: list[dict], path, sweep: str) -> None:
  """Per parametrization (rows), dw_spec and dw (columns): the median over steps >= 1 against the axis, a line
  per parameter (the hidden matrices solid, the rest dashed)."""
  plt = _plt()
  pars = _pars(rows)
  fig, axes = _axes(plt, len(pars), 2)
  for i, par in enumerate(pars):
    for j, stat in enumerate(('dw_spec', 'dw')):
      ax = axes[i][j]
      for (p, param), by_t in sorted(kind_curves([r for r in rows if r['parametrization'] == par], stat,
                                                 sweep).items()):
        xs = sorted({x for t, by_x in by_t.items() if t >= 1 for x in by_x})
        ys = [np.median([by_x[x] for t, by_x in by_t.items() if t >= 1 and x in by_x]) for x in xs]
        if xs and param not in KINDS:
          ax.plot(xs, ys, marker='o', ms=3, ls='-' if param in HIDDEN else '--', label=param)
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_title(f'{par}: {STAT_TEXT[stat]}', fontsize=8)
      ax.set_xlabel(sweep)
  axes[0][-1].legend(fontsize=5, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_all(rows: list[dict], out_dir) -> dict:
  """Writes the PNGs of every sweep in the rows; name -> path."""
  out, paths = pathlib.Path(out_dir), {}
  for sweep in AXIS:
    sub = [r for r in rows if r.get('sweep', 'width') == sweep]
    if not sub:
      continue
    paths[f'{sweep}_png'] = out / f'coordcheck_{sweep}.png'
    paths[f'{sweep}_updates_png'] = out / f'coordcheck_{sweep}_updates.png'
    plot_kinds(sub, paths[f'{sweep}_png'], 'rms', sweep)
    plot_kinds(sub, paths[f'{sweep}_updates_png'], 'rel', sweep)
    if any(r['kind'] == 'weight' for r in sub):
      paths[f'{sweep}_weights_png'] = out / f'coordcheck_{sweep}_weights.png'
      plot_weights(sub, paths[f'{sweep}_weights_png'], sweep)
  return paths
