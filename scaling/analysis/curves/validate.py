"""The validation study of the curve laws, given only finished runs: fit on a constant-lr parent and at most one of
its cooldown branches, predict every other run of that model size (the other branches, a cosine run, ...), and
score each prediction against what the run measured and against two naive baselines fitted on the same curves.

Per held-out run (a row of validation.md / validation.json):
  measured       the run's last logged value of the metric (train/loss: one batch; eval/loss: the eval set);
  predicted      the law's final loss, with its prediction interval (pi: includes one point's noise) and whether
                 the interval covers the measured value;
  error %        100 (predicted - measured) / measured;
  baselines      'parent': the parent's smoothed loss at that step (the geometric mean of its SMOOTH_ROWS logged
                 values nearest the step; its last ones when the parent stops earlier: "no schedule effect");
                 'power law': L(t) = E + A t^(-a) in steps, fitted (Huber on log loss) to the same points as the law;
  skill          |error of the law| / |error of the baseline|: below 1 the law beats that baseline.
The summary: median |error %| of the law and of each baseline, the interval coverage, and the median skill.

Default choice of the fitted runs (fit_on=None): the one parent among the runs (a plain constant-lr run that some
given branch forks from) and its shortest branch. Runs of another model size or optimizer setting are skipped.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Sequence

import numpy as np

from scaling.analysis.curves.fitting import bootstrap, fit_curves, huber_delta
from scaling.analysis.curves.forecast import final_update, fit_record, predict_final
from scaling.analysis.curves.laws import make_law
from scaling.analysis.curves.runs import (
  Curve,
  differences,
  load_curve,
  load_sources,
  parent_of,
  read_config,
  total_steps,
)
from scaling.analysis.curves.schedules import CurveError

SMOOTH_ROWS = 5


def choose_fit_on(run_dirs: Sequence[str]) -> list[str]:
  """The default fitted runs: the single parent of the given branches and its shortest branch."""
  paths = {str(pathlib.Path(d).resolve()): d for d in run_dirs}
  kids = {}
  for p, d in paths.items():
    par = parent_of(read_config(d), d)
    if par is not None and par[0] in paths:
      kids.setdefault(par[0], []).append(d)
  if len(kids) != 1:
    raise CurveError(f'{"no" if not kids else len(kids)} parent runs among the given runs (a parent is a run that a '
                     f'given cooldown branch forks from): name the runs to fit with --fit_on')
  parent, branches = next(iter(kids.items()))
  shortest = min(branches, key=lambda d: (total_steps(read_config(d)), str(d)))
  return [paths[parent], shortest]


def smoothed_at(curve: Curve, step_t: int, rows: int = SMOOTH_ROWS) -> float:
  """The geometric mean of the `rows` values of the curve nearest to t (its last ones past its end)."""
  idx = np.argsort(np.abs(curve.t - step_t), kind='stable')[:rows]
  return float(np.exp(np.mean(np.log(curve.loss[idx]))))


def power_law_in_steps(points, delta: float):
  """E + A t^(-a) fitted to the fit's points (Huber on log loss, scipy least_squares); returns a callable of t."""
  from scipy.optimize import least_squares
  t = np.concatenate([p.t for p in points]).astype(np.float64)
  y = np.concatenate([p.y for p in points])

  def resid(x):
    return np.log(np.maximum(x[0] + np.exp(x[1]) * t ** (-x[2]), 1e-9)) - np.log(y)
  best = None
  for a in (0.2, 0.5, 1.0):
    f = t ** (-a)
    A = max(np.polyfit(f, y, 1)[0], 1e-6)
    r = least_squares(resid, [max(y.min() - A * f.min(), 0.0), np.log(A), a], loss='huber', f_scale=delta,
                      bounds=([0.0, -30.0, 1e-3], [np.inf, 30.0, 5.0]))
    if best is None or r.cost < best.cost:
      best = r
  E, A, a = best.x[0], np.exp(best.x[1]), best.x[2]
  return lambda tt: E + A * np.asarray(tt, dtype=np.float64) ** (-a)


def _row(fit, curve: Curve, parent: Curve, power, seed: int) -> dict:
  pred = predict_final(fit, curve.schedule, seed=seed)
  t_end = final_update(fit.metric, curve.schedule)
  measured = float(curve.loss[-1])
  row = {'run': curve.name, 'path': curve.path, 'schedule': curve.schedule.label, 'steps': curve.schedule.total,
         'measured': measured, 'state': pred['state'], 'reason': pred.get('reason', ''), 'notes': pred.get('notes'),
         'predicted': pred['point'], 'pi': pred['pi'], 'ci': pred['ci']}
  if curve.final_step != curve.schedule.total:
    row.update(state='unfinished', reason=f'the run logged up to step {curve.final_step} of {curve.schedule.total}')
    return row
  base = {'parent': smoothed_at(parent, t_end), 'power law': float(power(max(t_end, 1)))}
  row['baselines'] = {k: {'predicted': v, 'error_pct': 100 * (v - measured) / measured} for k, v in base.items()}
  if pred['state'] == 'predicted':
    err = pred['point'] - measured
    row.update(error_pct=100 * err / measured, covered=bool(pred['pi'][0] <= measured <= pred['pi'][1]),
               skill={k: abs(err) / abs(v - measured) if v != measured else None for k, v in base.items()})
  return row


def summary(rows: Sequence[dict]) -> dict:
  done = [r for r in rows if r.get('error_pct') is not None]
  def med(v):
    return float(np.median(v)) if len(v) else None
  out = {'held_out': len(rows), 'predicted': len(done), 'coverage': (sum(r['covered'] for r in done) / len(done))
         if done else None, 'median_abs_error_pct': {'law': med([abs(r['error_pct']) for r in done])}}
  for k in ('parent', 'power law'):
    out['median_abs_error_pct'][k] = med([abs(r['baselines'][k]['error_pct']) for r in done])
    s = [r['skill'][k] for r in done if r['skill'].get(k) is not None]
    out[f'median_skill_vs_{k.replace(" ", "_")}'] = med(s)
  return out


def _fmt(v, spec='.4f'):
  return '-' if v is None else format(v, spec)


def table_markdown(rows: Sequence[dict], summ: dict, title: str) -> str:
  lines = [f'# {title}', '', '| held-out run | schedule | measured | predicted (90% PI) | error % | covered | '
           'parent baseline error % | power-law baseline error % | skill vs parent | skill vs power law |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    if r.get('error_pct') is None:
      lines.append(f'| {r["run"]} | {r["schedule"]} | {_fmt(r["measured"])} | {r["state"]}: {r["reason"]} '
                   f'| | | | | | |')
      continue
    b, s = r['baselines'], r['skill']
    lines.append(f'| {r["run"]} | {r["schedule"]} | {r["measured"]:.4f} | {r["predicted"]:.4f} '
                 f'({r["pi"][0]:.4f}-{r["pi"][1]:.4f}) | {r["error_pct"]:+.2f} | {"yes" if r["covered"] else "no"} '
                 f'| {b["parent"]["error_pct"]:+.2f} | {b["power law"]["error_pct"]:+.2f} | {_fmt(s["parent"], ".2f")} '
                 f'| {_fmt(s["power law"], ".2f")} |')
  m = summ['median_abs_error_pct']
  lines += ['', f'{summ["predicted"]} of {summ["held_out"]} held-out runs predicted; interval coverage '
            f'{_fmt(summ["coverage"], ".2f")} (nominal 0.90); median |error| law {_fmt(m["law"], ".2f")}%, parent '
            f'baseline {_fmt(m["parent"], ".2f")}%, power law {_fmt(m["power law"], ".2f")}%; median skill '
            f'{_fmt(summ["median_skill_vs_parent"], ".2f")} vs parent, '
            f'{_fmt(summ["median_skill_vs_power_law"], ".2f")} vs power law (below 1: the law is better).', '']
  return '\n'.join(lines)


def validate(run_dirs: Sequence[str], out_dir: str, *, fit_on: Sequence[str] | None = None, law: str = 'multipower',
             metric: str = 'train/loss', draws: int = 100, seed: int = 0, plot: bool = True, log=print) -> dict:
  """Fits, predicts every held-out run, writes validation.json, validation.md (and validation.png); returns the
  JSON record."""
  from scaling.base.files import atomic_write_text
  fit_on = list(fit_on) if fit_on else choose_fit_on(run_dirs)
  sources = load_sources(fit_on, metric)
  fit = bootstrap(fit_curves(make_law(law), sources), draws=draws, seed=seed)
  parent = next((c for c in sources if c.parent is None), sources[0])
  power = power_law_in_steps(fit.points, huber_delta(sources))
  fitted = {str(pathlib.Path(d).resolve()) for d in fit_on}
  rows, held, skipped = [], [], []
  for d in run_dirs:
    if str(pathlib.Path(d).resolve()) in fitted:
      continue
    diff = differences(sources[0].config, read_config(d))
    if diff:
      skipped.append({'run': str(d), 'reason': '; '.join(diff)})
      continue
    curve = load_curve(d, metric, with_parent=False)
    held.append(curve)
    rows.append(_row(fit, curve, parent, power, seed))
  summ = summary(rows)
  record = {'fit': fit_record(fit), 'rows': rows, 'skipped': skipped, 'summary': summ}
  os.makedirs(out_dir, exist_ok=True)
  atomic_write_text(os.path.join(out_dir, 'validation.json'), json.dumps(record, indent=1, default=float) + '\n')
  title = f'{law} law fitted on {", ".join(c.name for c in sources)} ({metric})'
  atomic_write_text(os.path.join(out_dir, 'validation.md'), table_markdown(rows, summ, title))
  if plot:
    from scaling.analysis.curves.plots import plot_prediction
    targets = [(c.schedule, predict_final(fit, c.schedule, seed=seed)) for c in held]
    plot_prediction(os.path.join(out_dir, 'validation.png'), fit, targets, title, observed=held)
  log(table_markdown(rows, summ, title))
  return record
