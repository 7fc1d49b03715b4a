"""A data-mixing law (Ye et al. 2024, "Data Mixing Laws"), fitted on some mixtures and scored on a held-out one.

For validation domain i and training proportions r = (r_1 .. r_M) (summing to 1):

    L_i(r) = c_i + k_i exp(sum_j t_ij r_j)

On the simplex one t_ij is redundant (sum_j r_j = 1 moves into k_i), so the fit uses r_1 .. r_{M-1}:
L_i = c_i + exp(a_i + sum_{j<M} t_ij r_j), k_i = exp(a_i) > 0, M + 1 parameters per domain (3 for two
training domains). `fit_law` minimises the squared error (scipy's least_squares, several starts of c_i below the
smallest loss); `predict_held_out` fits on every mixture but one and predicts that one, with

  - an interval: a parametric bootstrap (the fitted curve plus Gaussian noise of the fit's residual scale, or of
    `noise` when the fit has no residual degrees of freedom, refitted `draws` times; the 5th-95th percentile of
    the predictions, widened by that noise: where a new measurement should fall);
  - a naive baseline: linear interpolation of the fitted mixtures' losses (two domains: along r_1 between the
    neighbouring mixtures, the end segments extended; more: the least-squares plane in r).

Rows come from a sweep's results.jsonl (`scaling sweep collect`): each run's data.mixture_weights (its overrides,
else its config) and eval/<domain>/bpb for the domains asked for. `write_section` writes a markdown section and
a PNG (loss against r_1 per domain: the runs, the law fitted on the others, its prediction and interval, the
baseline). jax-free.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np

from scaling.data.mixture_spec import parse_weights


@dataclasses.dataclass
class Law:
  c: float
  k: float
  t: np.ndarray   # [M - 1]: the exponent's weights of r_1 .. r_{M-1}
  rmse: float

  def __call__(self, R) -> np.ndarray:
    R = np.atleast_2d(np.asarray(R, float))
    return self.c + self.k * np.exp(R[:, :len(self.t)] @ self.t)

  def params(self) -> dict:
    return {'c': self.c, 'k': self.k, 't': [float(x) for x in self.t], 'rmse': self.rmse}


def fit_law(R, y, *, starts: int = 8, init: Law | None = None) -> Law:
  """The least-squares law of one domain's losses `y` [N] over mixtures `R` [N, M] (rows summing to 1); `init`:
  one start from that law instead (the bootstrap's refits)."""
  from scipy.optimize import least_squares
  R, y = np.asarray(R, float), np.asarray(y, float)
  X = R[:, :R.shape[1] - 1]
  best = None
  lo = float(y.min())
  span = max(float(y.max() - y.min()), 1e-3)
  firsts = [np.r_[init.c, math.log(init.k), init.t]] if init is not None else []
  for s in range(0 if firsts else starts):
    c0 = lo - span * (0.05 + 2.0 * s / max(starts - 1, 1))   # from just below the best loss to well below it
    z = np.log(np.maximum(y - c0, 1e-9))
    A = np.c_[np.ones(len(y)), X]
    coef = np.linalg.lstsq(A, z, rcond=None)[0]   # log-linear start for (a, t)

    firsts.append(np.r_[c0, coef])

  def resid(p):
    return p[0] + np.exp(p[1] + X @ p[2:]) - y
  for p0 in firsts:
    r = least_squares(resid, p0, method='lm' if len(y) >= len(p0) else 'trf')
    if best is None or r.cost < best.cost:
      best = r
  p = best.x
  rmse = float(np.sqrt(np.mean(best.fun ** 2)))
  return Law(float(p[0]), float(np.exp(p[1])), np.asarray(p[2:], float), rmse)


def linear_baseline(R_fit, y_fit, R_new) -> np.ndarray:
  """The naive prediction: linear interpolation of the fitted mixtures' losses (module docstring)."""
  R_fit, R_new = np.atleast_2d(np.asarray(R_fit, float)), np.atleast_2d(np.asarray(R_new, float))
  y_fit = np.asarray(y_fit, float)
  if R_fit.shape[1] == 2:
    x, order = R_fit[:, 0], np.argsort(R_fit[:, 0])
    x, y = x[order], y_fit[order]
    out = []
    for q in R_new[:, 0]:
      i = int(np.clip(np.searchsorted(x, q) - 1, 0, len(x) - 2))
      out.append(y[i] + (y[i + 1] - y[i]) * (q - x[i]) / (x[i + 1] - x[i]))
    return np.asarray(out)
  A = np.c_[np.ones(len(y_fit)), R_fit[:, :-1]]
  coef = np.linalg.lstsq(A, y_fit, rcond=None)[0]
  return np.c_[np.ones(len(R_new)), R_new[:, :-1]] @ coef


def predict_held_out(R, y, held: int, *, noise: float = 0.01, draws: int = 200, seed: int = 0) -> dict:
  """Fit on every mixture but `held`, predict it: {predicted, low, high, actual, error, baseline,
  baseline_error, law, sigma}."""
  R, y = np.asarray(R, float), np.asarray(y, float)
  keep = np.arange(len(y)) != held
  law = fit_law(R[keep], y[keep])
  dof = int(keep.sum()) - (R.shape[1] + 1)
  sigma = law.rmse * math.sqrt(keep.sum() / dof) if dof > 0 else 0.0
  sigma = max(sigma, noise)
  rng = np.random.default_rng(seed)
  fitted = law(R[keep])
  preds = []
  for _ in range(draws):
    try:
      preds.append(float(fit_law(R[keep], fitted + rng.normal(0, sigma, fitted.shape), init=law)(R[held])[0]))
    except (ValueError, RuntimeError, FloatingPointError):
      continue
  preds = np.asarray(preds) + rng.normal(0, sigma, len(preds))   # a new measurement's noise too
  low, high = (float(np.percentile(preds, q)) for q in (5, 95)) if len(preds) else (math.nan, math.nan)
  predicted = float(law(R[held])[0])
  base = float(linear_baseline(R[keep], y[keep], R[held:held + 1])[0])
  return {'predicted': predicted, 'low': low, 'high': high,
          'actual': float(y[held]), 'error': predicted - float(y[held]), 'baseline': base,
          'baseline_error': base - float(y[held]), 'law': law.params(), 'sigma': sigma}


# ----------------------------------------------------------------------------- a sweep's rows
def mixture_rows(results, domains: list[str], metric: str = 'bpb') -> tuple[list[str], np.ndarray, dict, list]:
  """(the training sources, R [N, M], {domain: losses [N]}, the rows) of the finished runs of a results.jsonl
  (or a list of its rows) that have a data.mixture_weights and eval/<domain>/<metric> for every domain."""
  if isinstance(results, (str, pathlib.Path)):
    rows = [json.loads(line) for line in pathlib.Path(results).read_text().splitlines() if line.strip()]
  else:
    rows = list(results)
  keep, weights = [], []
  names = None
  for row in rows:
    text = (row.get('overrides') or {}).get('data.mixture_weights')
    if not text or row.get('state') not in ('done', None):
      continue
    if any(not isinstance(row.get(f'eval/{d}/{metric}'), (int, float)) for d in domains):
      continue
    these = [item.partition('=')[0].strip() for item in text.split(',')]
    names = names or sorted(these)
    w = parse_weights(text, names)
    weights.append([float(w[n]) for n in names])
    keep.append(row)
  R = np.asarray(weights, float)
  Y = {d: np.asarray([r[f'eval/{d}/{metric}'] for r in keep], float) for d in domains}
  return names or [], R, Y, keep


def study(R, Y: dict, held: int, *, noise: float = 0.01) -> dict:
  """predict_held_out for every domain, plus leave-one-out over every mixture (errors of law and baseline)."""
  out = {'held': int(held), 'domains': {}}
  for d, y in Y.items():
    one = predict_held_out(R, y, held, noise=noise)
    loo = [predict_held_out(R, y, i, noise=noise, draws=0 if i != held else 200) for i in range(len(y))]
    one['loo_mae'] = float(np.mean([abs(x['error']) for x in loo]))
    one['loo_baseline_mae'] = float(np.mean([abs(x['baseline_error']) for x in loo]))
    out['domains'][d] = one
  return out


def write_section(out_dir, names: list[str], R, Y: dict, result: dict, *, metric: str = 'bpb') -> str:
  """The markdown section (returned and written to out_dir/mixing.md) and out_dir/mixing.png."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  held = result['held']
  mix = ', '.join(f'{n}={R[held, j]:.3g}' for j, n in enumerate(names))
  lines = [f'## Data-mixing law: predicting the held-out mixture ({mix})', '',
           f'L_i(r) = c_i + k_i exp(sum_j t_ij r_j) (Ye et al. 2024), fitted per domain on {len(R) - 1} mixtures of '
           f'{", ".join(names)}; eval/<domain>/{metric} of the held-out one predicted. Interval: 5-95% of a parametric '
           'bootstrap. Baseline: linear interpolation of the fitted mixtures. LOO: mean absolute error when each '
           'mixture in turn is held out.', '',
           '| domain | actual | law | 90% interval | error | baseline | baseline error | LOO law | LOO baseline |',
           '|---|---|---|---|---|---|---|---|---|']
  for d, r in result['domains'].items():
    lines.append(f'| {d} | {r["actual"]:.4f} | {r["predicted"]:.4f} | [{r["low"]:.4f}, {r["high"]:.4f}] | '
                 f'{r["error"]:+.4f} | {r["baseline"]:.4f} | {r["baseline_error"]:+.4f} | {r["loo_mae"]:.4f} | '
                 f'{r["loo_baseline_mae"]:.4f} |')
  lines += ['', '![mixing law](mixing.png)', '']
  _plot(out / 'mixing.png', names, R, Y, result, metric)
  text = '\n'.join(lines)
  (out / 'mixing.md').write_text(text)
  return text


def _plot(path, names, R, Y, result, metric) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  held = result['held']
  keep = np.arange(len(R)) != held
  fig, axes = plt.subplots(1, len(Y), figsize=(4.2 * len(Y), 3.4), squeeze=False)
  for ax, (d, y) in zip(axes[0], Y.items()):
    r = result['domains'][d]
    law = Law(r['law']['c'], r['law']['k'], np.asarray(r['law']['t']), r['law']['rmse'])
    x = R[:, 0]
    grid = np.linspace(min(x.min(), 0), max(x.max(), 1), 101)
    G = np.c_[grid, 1 - grid] if R.shape[1] == 2 else None
    if G is not None:
      ax.plot(grid, law(G), '-', label='law (fitted)')
      ax.plot(grid, linear_baseline(R[keep], y[keep], G), ':', label='linear interpolation')
    ax.plot(x[keep], y[keep], 'o', label='fitted runs')
    ax.errorbar([x[held]], [r['predicted']], yerr=[[r['predicted'] - r['low']], [r['high'] - r['predicted']]],
                fmt='s', capsize=3, label='prediction (90%)')
    ax.plot([x[held]], [r['actual']], 'x', ms=9, label='held-out run')
    ax.set_xlabel(f'r_{names[0]}')
    ax.set_ylabel(f'eval/{d}/{metric}')
    ax.set_title(d)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  """python -m scaling.analysis.mixing --root SWEEP_ROOT --domains a,b[,c] [--held I] [--out DIR]"""
  import argparse
  p = argparse.ArgumentParser(description=main.__doc__)
  p.add_argument('--root', required=True)
  p.add_argument('--domains', required=True)
  p.add_argument('--held', type=int, default=-1, help='index of the held-out mixture (-1: the middle one in r_1)')
  p.add_argument('--noise', type=float, default=0.01, help='the noise floor of one measurement (bpb)')
  p.add_argument('--out', default='')
  a = p.parse_args(argv)
  domains = [d.strip() for d in a.domains.split(',') if d.strip()]
  names, R, Y, _ = mixture_rows(pathlib.Path(a.root) / 'results.jsonl', domains)
  if len(R) < 5:
    raise SystemExit(f'{a.root}: {len(R)} finished mixture runs with eval/<domain>/bpb; the study needs 5')
  held = a.held if a.held >= 0 else int(np.argsort(R[:, 0])[len(R) // 2])
  result = study(R, Y, held, noise=a.noise)
  print(write_section(a.out or a.root, names, R, Y, result))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
