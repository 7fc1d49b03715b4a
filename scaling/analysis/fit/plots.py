"""The PNGs of `scaling fit` (matplotlib, imported only when plotting): loss against compute, IsoFLOP profiles,
parity and residuals.

render_plots draws every PNG into a new temporary directory inside out_dir (`.plots.<12 hex>.tmp`, a name
scaling/base/files.py's is_temp_name knows) and deletes it if any drawing fails; install_plots renames the PNGs
into out_dir and removes the directory, discard_plots deletes them. So a failed fit, or a plot that raises,
leaves the PNGs already in out_dir as they were. make_plots does render + install.
"""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Sequence

import numpy as np

from scaling.analysis.fit.laws import _flops_per_token, _group_budgets, chinchilla_loss


def budget_minima(rows: Sequence[dict], budget_tol: float = 0.1) -> list[int]:
  """Per compute budget (grouped as approach 2 groups them) the index of its lowest-loss run. Only these are
  marked in the loss-vs-compute plot, unjoined: a line through the lowest point of each vertical stack of runs
  reads as a frontier that the design did not sample (each stack is one budget's sizes, not a scan of C)."""
  groups, _ = _group_budgets(rows, budget_tol)
  return [min(idx, key=lambda i: rows[i]['L']) for _, idx in groups]


def parametric_frontier(chin: dict, rows: Sequence[dict], flops: np.ndarray) -> np.ndarray:
  """The fitted law's lowest loss at each training-FLOPs value where there is data, with
  D = C / flops_per_token(N) as in the rows (not C = 6 N D): min of L(N, C / fpt(N)) over the
  N in [min N, max N] whose D lies in [min D, max D]; NaN where no such N exists."""
  n, c, d = (np.array([r[k] for r in rows]) for k in ('N', 'C', 'D'))
  fpt = _flops_per_token(n, c, d)
  grid = np.geomspace(n.min(), n.max(), 400)
  out = []
  for f in flops:
    dg = f / fpt(grid)
    ok = (dg >= d.min() * (1 - 1e-9)) & (dg <= d.max() * (1 + 1e-9))
    out.append(np.min(chinchilla_loss(chin, grid[ok], dg[ok])) if ok.any() else np.nan)
  return np.array(out)


def _plot_loss_vs_compute(plt, rows, result, chin, iso, path):
  """Runs against compute with the parametric law drawn through them: its compute-optimal
  frontier (D = C / FLOPs per token of the rows) and, for a grid of few sizes, one curve per size; each budget's
  lowest run and parabola minimum as markers only (budget_minima)."""
  metric = result['inputs']['metric']
  c, l, n, d = (np.array([r[k] for r in rows]) for k in ('C', 'L', 'N', 'D'))
  fig, ax = plt.subplots(figsize=(7.5, 5))
  sizes = np.unique(n)
  norm = plt.Normalize(np.log10(sizes.min()), np.log10(sizes.max()) + 1e-9)
  sc = ax.scatter(c, l, c=np.log10(n), cmap='viridis', norm=norm, s=25, zorder=3, label='runs')
  fig.colorbar(sc, ax=ax, label='log10 N')
  if chin is not None and len(sizes) <= 8:
    for size in sizes:
      m = n == size
      per_token = float(np.median(c[m] / d[m]))
      cl = np.geomspace(c[m].min() / 2, c[m].max() * 2, 50)
      ax.plot(cl, chinchilla_loss(chin, size, cl / per_token), color=plt.cm.viridis(
          norm(np.log10(size))), lw=0.8, alpha=0.8)
  best = budget_minima(rows, (result.get('inputs', {}).get('options') or {}).get('budget_tol') or 0.1)
  ax.plot(c[best], l[best], 'kv', mfc='none', ms=9, ls='none', label='lowest observed loss per budget (not joined)')
  if chin is not None:
    cl = np.geomspace(c.min() / 2, c.max() * 2, 80)
    ax.plot(cl, parametric_frontier(chin, rows, cl), 'r-', lw=1.5,
            label='parametric fit: lowest loss at C within the sampled N and D' + (
                '' if len(sizes) > 8 else ' (thin: per size)'))
  if iso is not None:
    ax.plot([b['flops'] for b in iso['budgets']], [b['L_opt'] for b in iso['budgets']], 'ks',
            mfc='none', ms=8, ls='none', label='per-budget parabola minima (IsoFLOP)')
  ax.set_xscale('log')
  ax.set_xlabel('training FLOPs C')
  ax.set_ylabel(metric)
  if chin is not None and not chin.get('identified', True):
    ax.set_title('Loss against compute: parametric fit NOT identified (see warnings)', color='red')
  else:
    ax.set_title('Loss against compute')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _band(iso: dict, cl: np.ndarray, k: str, e: str) -> tuple | None:
  s = iso.get('bootstrap', {}).get('samples')
  if not s or len(s[e]) < 2:
    return None
  lines = np.array(s[k])[:, None] * cl[None, :] ** np.array(s[e])[:, None]
  return np.percentile(lines, 5, axis=0), np.percentile(lines, 95, axis=0)


def _plot_isoflop(plt, rows, result, iso, path):
  """Left: loss against N per budget with the parabola (dashed: a budget the profile checks flag) and its
  minimum (open marker: minimum not interior). Right: N_opt and D_opt against C with the fitted lines and 5-95% bands."""
  metric = result['inputs']['metric']
  n, l = np.array([r['N'] for r in rows]), np.array([r['L'] for r in rows])
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
  colors = plt.cm.plasma(np.linspace(0, 0.85, max(1, len(iso['budgets']))))
  for color, b in zip(colors, iso['budgets']):
    idx = [i for i, r in enumerate(rows) if r['run'] in set(b['runs'])]
    ax.scatter(n[idx], l[idx], color=color, s=20)
    x = np.linspace(np.log10(n[idx]).min() - 0.2, np.log10(n[idx]).max() + 0.2, 100)
    flag = '' if b['interior'] else ' (min at an end)'
    flagged = any(abs(f / b['flops'] - 1) < 1e-6 for f in (result.get('profiles') or {}).get('flagged') or [])
    ax.plot(10 ** x, np.polyval(b['parabola_log10N'], x), color=color, lw=1, ls='--' if flagged else '-',
            label=f'C={b["flops"]:.2g}{flag}' + (' FLAGGED (see report)' if flagged else ''))
    ax.plot(b['N_opt'], b['L_opt'], 'o' if b['interior'] else 'x', color=color, ms=9, mew=2,
            mfc='none')
  ax.set_xscale('log')
  ax.set_xlabel('N')
  ax.set_ylabel(metric)
  ax.set_title('IsoFLOP profiles (o: fitted minimum; x: not interior)')
  ax.legend(fontsize=7)
  used = [b for b in iso['budgets'] if b['inside_range']]
  cb = np.array([b['flops'] for b in used])
  cl = np.geomspace(cb.min() / 2, cb.max() * 2, 50)
  for key, k, e, color in (('N_opt', 'kN', 'a', 'C0'), ('D_opt', 'kD', 'b', 'C1')):
    fit = iso[f'{key}_vs_C']
    ax2.scatter(cb, [b[key] for b in used], color=color)
    ci = iso.get('ci', {}).get(e)
    label = f'{key} ~ C^{fit["exponent"]:.3f}' + (f' [{ci[0]:.2f}, {ci[1]:.2f}]' if ci else '')
    ax2.plot(cl, fit['k'] * cl ** fit['exponent'], '-', color=color, label=label)
    band = _band(iso, cl, k, e)
    if band is not None:
      ax2.fill_between(cl, *band, color=color, alpha=0.2, lw=0)
  ax2.set_xscale('log')
  ax2.set_yscale('log')
  ax2.set_xlabel('training FLOPs C')
  ax2.set_title('Compute-optimal N and D (band: 5-95% bootstrap)')
  ax2.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot_parity_residuals(plt, rows, result, chin, iso, out_dir):
  metric = result['inputs']['metric']
  c, l, n, d = (np.array([r[k] for r in rows]) for k in ('C', 'L', 'N', 'D'))
  written = []
  if chin is not None:
    pred = chinchilla_loss(chin, n, d)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(pred, l, s=20)
    lo, hi = min(pred.min(), l.min()), max(pred.max(), l.max())
    ax.plot([lo, hi], [lo, hi], 'k--', lw=1, label='y = x')
    ax.set_xlabel(f'fitted {metric}  (E + A/N^alpha + B/D^beta)')
    ax.set_ylabel(f'observed {metric}')
    ax.set_title(f'Parity: rmse(log) = {chin["rmse_log"]:.2e}')
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'parity.png'), dpi=110)
    plt.close(fig)
    written.append('parity.png')
  if chin is None and iso is None:
    return written
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  if chin is not None:
    sc = axes[0].scatter(c, 100 * (l / chinchilla_loss(chin, n, d) - 1), c=np.log10(n), s=20)
    fig.colorbar(sc, ax=axes[0], label='log10 N')
  axes[0].axhline(0, color='k', lw=0.8)
  axes[0].set_xscale('log')
  axes[0].set_xlabel('training FLOPs C')
  axes[0].set_ylabel('observed / parametric fit - 1 (%)')
  axes[0].set_title('Parametric L(N, D) residuals' if chin is not None else 'no parametric fit')
  for b in (iso or {}).get('budgets', []):
    idx = [i for i, r in enumerate(rows) if r['run'] in set(b['runs'])]
    axes[1].plot(n[idx], l[idx] - np.polyval(b['parabola_log10N'], np.log10(n[idx])), 'o',
                 ms=4, label=f'C={b["flops"]:.2g}')
  axes[1].axhline(0, color='k', lw=0.8)
  axes[1].set_xscale('log')
  axes[1].set_xlabel('N')
  axes[1].set_ylabel(f'observed - parabola ({metric})')
  axes[1].set_title('IsoFLOP parabola residuals' if iso is not None else 'no IsoFLOP fit')
  if iso is not None:
    axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, 'residuals.png'), dpi=110)
  plt.close(fig)
  written.append('residuals.png')
  return written


def _draw(rows: Sequence[dict], result: dict, out_dir: str) -> list[str]:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  chin = result.get('chinchilla') if 'skipped' not in result.get('chinchilla', {}) else None
  iso = result.get('isoflop') if 'skipped' not in result.get('isoflop', {}) else None
  _plot_loss_vs_compute(plt, rows, result, chin, iso, os.path.join(out_dir, 'loss_vs_compute.png'))
  written = ['loss_vs_compute.png']
  if iso is not None:
    _plot_isoflop(plt, rows, result, iso, os.path.join(out_dir, 'isoflop.png'))
    written.append('isoflop.png')
  if result.get('lr_arms'):
    from scaling.analysis.fit.plots_arms import plot_arms
    plot_arms(plt, result['lr_arms'], os.path.join(out_dir, 'lr_arms.png'))
    written.append('lr_arms.png')
  return written + _plot_parity_residuals(plt, rows, result, chin, iso, out_dir)


def render_plots(rows: Sequence[dict], result: dict, out_dir: str) -> dict[str, str]:
  """Draws the PNGs into a new temporary directory in out_dir; returns {file name: its temporary path}, in
  drawing order. Nothing is left behind when a plot raises (the error surfaces unchanged)."""
  while True:
    tmp_dir = os.path.join(out_dir, f'.plots.{secrets.token_hex(6)}.tmp')
    try:
      os.mkdir(tmp_dir)
      break
    except FileExistsError:
      continue
  try:
    staged = {name: os.path.join(tmp_dir, name) for name in _draw(rows, result, tmp_dir)}
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  if not staged:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  return staged


def install_plots(staged: dict[str, str], out_dir: str) -> list[str]:
  """Renames the rendered PNGs onto their names in out_dir and removes the temporary directory; the names."""
  for name, tmp in staged.items():
    os.replace(tmp, os.path.join(out_dir, name))
  discard_plots(staged)
  return list(staged)


def discard_plots(staged: dict[str, str]) -> None:
  """Deletes the temporary directory of render_plots with the PNGs not installed (none: nothing to do)."""
  for tmp_dir in {os.path.dirname(p) for p in staged.values()}:
    shutil.rmtree(tmp_dir, ignore_errors=True)


def make_plots(rows: Sequence[dict], result: dict, out_dir: str) -> list[str]:
  """Writes the PNGs (all of them or, when a plot raises, none); returns their file names (relative to
  out_dir)."""
  return install_plots(render_plots(rows, result, out_dir), out_dir)
