"""Predictions from a fitted curve law: the final loss of a run under a schedule, with its intervals, and the
whole predicted curve with a band (for the plots).

A prediction is a dict:
  state      'predicted', or 'cannot predict' (then `reason` says why and what would fix it, and no number is given);
  point      the law at the run's last loss (train/loss: after steps - 1 updates; eval/loss: after steps);
  ci         5-95% interval of the law's value there over the bootstrap refits (every draw counts: a failed refit
             opens an end; scaling/analysis/fit/intervals.py honest_interval);
  pi         the same with one point's noise added to each draw (a log residual of the fit drawn at random): the
             interval a measured final loss should fall in, and the one scored against measurements;
  notes      what makes it an extrapolation: a forward area (lr sum) past the fitted curves', another peak lr.
An open interval (more than 5% of the refits failed towards an end) is 'cannot predict': the data do not
constrain the prediction.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from scaling.analysis.curves.fitting import CannotPredict, Fit, bootstrap, fit_curves
from scaling.analysis.curves.laws import make_law
from scaling.analysis.curves.runs import Curve, updates_behind
from scaling.analysis.curves.schedules import Schedule, anneals

EXTRAPOLATION_NOTE = 1.05     # a target's lr sum this much past the fitted curves' largest is noted


def final_update(metric: str, sched: Schedule) -> int:
  """The number of updates behind the run's last loss of `metric` (its final step's row)."""
  return int(updates_behind(metric, np.array([sched.total]))[0])


def _boot_values(fit: Fit, sched: Schedule, t: np.ndarray) -> np.ndarray:
  """[R, len(t)] the law at t for each bootstrap draw (NaN rows where the draw failed)."""
  f = fit.law.features(sched, t, fit.unit)
  out = np.full((len(fit.boot), len(t)), np.nan)
  for i, th in enumerate(fit.boot):
    if np.all(np.isfinite(th)):
      with np.errstate(over='ignore', invalid='ignore'):
        out[i] = fit.law.value(th, f, fit.reduced)
  return out


def cannot(reason: str, **extra) -> dict:
  return {'state': 'cannot predict', 'reason': reason, 'point': None, 'ci': None, 'pi': None, **extra}


def _notes(fit: Fit, sched: Schedule, t_end: int) -> list[str]:
  notes = []
  area = float(np.sum(sched.eta[:t_end]) / fit.unit)
  if area > EXTRAPOLATION_NOTE * fit.max_area:
    notes.append(f'extrapolates: the lr sum at the end is {area / fit.max_area:.2f}x the largest fitted')
  if abs(sched.peak - fit.unit) > 1e-6 * fit.unit:
    notes.append(f'peak lr {sched.peak:.4g} differs from the fitted runs\' {fit.unit:.4g}: the law is fitted at '
                 f'one peak lr; treat this as an extrapolation')
  return notes


def predict_final(fit: Fit, sched: Schedule, seed: int = 0) -> dict:
  """The prediction (module docstring) of the final loss of a run with schedule `sched`."""
  from scaling.analysis.fit.intervals import honest_interval
  base = {'steps': sched.total, 'schedule': sched.label, 'metric': fit.metric, 'law': fit.law.name}
  t_end = final_update(fit.metric, sched)
  if t_end <= sched.warmup:
    return cannot(f'a run of {sched.total} steps ends inside its warmup ({sched.warmup} steps), where the laws do '
                  f'not hold', **base)
  if fit.reduced and anneals(sched, upto=t_end):
    return cannot(f'the schedule anneals but {fit.reduced_reason}', **base)
  if fit.boot is None or not len(fit.boot):
    return cannot('no bootstrap draws: an interval needs them (--bootstrap > 0)', **base)
  point = float(fit.predict(sched, np.array([t_end]))[0])
  vals = _boot_values(fit, sched, np.array([t_end]))[:, 0]
  ci = honest_interval(vals)
  rng = np.random.default_rng(seed + 1)
  noise = np.exp(rng.choice(fit.residuals, size=len(vals)))
  pi = honest_interval(vals * noise)
  out = {'state': 'predicted', 'reason': '', 'point': point, 'ci': ci['ci'], 'pi': pi['ci'],
         'draws': ci['draws'], 'failed_draws': ci['failed'], 'notes': _notes(fit, sched, t_end), **base}
  if not all(np.isfinite(ci['ci'])):
    failed = ci['failed']
    return cannot(f'the data do not constrain it: {failed} of {ci["draws"]} bootstrap refits failed, so the '
                  f'5-95% interval is open ({fit.boot_info.get("failed")}); give more or longer source runs',
                  **base, draws=ci['draws'], failed_draws=failed)
  return out


def predict_curve(fit: Fit, sched: Schedule, n: int = 200) -> dict:
  """{t, point, lo, hi}: the law along the run after warmup at up to n updates, with its 5-95% band."""
  t_end = final_update(fit.metric, sched)
  t = np.unique(np.linspace(sched.warmup + 1, max(t_end, sched.warmup + 1), n).round().astype(np.int64))
  point = fit.predict(sched, t)
  if fit.boot is None:
    return {'t': t, 'point': point, 'lo': None, 'hi': None}
  vals = _boot_values(fit, sched, t)
  ok = np.all(np.isfinite(vals), axis=1)
  if ok.sum() < 2:
    return {'t': t, 'point': point, 'lo': None, 'hi': None}
  lo, hi = np.percentile(vals[ok], [5, 95], axis=0)
  return {'t': t, 'point': point, 'lo': lo, 'hi': hi}


def infer_warmup(eta: np.ndarray) -> int:
  """The warmup of a schedule given only its lr per update: the updates before the lr first reaches its peak."""
  peak = float(np.max(eta)) if len(eta) else 0.0
  return int(np.argmax(eta >= peak * (1 - 1e-6))) if peak > 0 else 0


def predict_during_training(steps: Sequence[int], losses: Sequence[float], schedule_fn: Callable,
                            total_steps: int, *, law: str = 'multipower', metric: str = 'train/loss',
                            warmup: int | None = None, draws: int = 40, seed: int = 0) -> dict:
  """For a trainer's progress line: the final loss of the run in progress, predicted from its own curve so far.

  steps / losses: the logged steps and their `metric` values so far; schedule_fn: the run's lr at an optimizer
  count (the optax schedule of scaling/train/optim.py works, as does any callable taking an array of counts);
  total_steps: the run's length. Returns a prediction dict (module docstring): 'cannot predict' with the reason
  until the curve is long enough (and, for a law with an annealing term, until the lr has started to fall).
  """
  eta = np.asarray(schedule_fn(np.arange(int(total_steps))), dtype=np.float64).reshape(-1)
  if eta.shape != (int(total_steps),):
    raise ValueError(f'schedule_fn gave {eta.shape[0]} values for {total_steps} counts')
  sched = Schedule(eta=eta, warmup=infer_warmup(eta) if warmup is None else int(warmup), label='this run')
  s = np.asarray(steps, dtype=np.int64)
  curve = Curve(name='this run', path='', metric=metric, t=updates_behind(metric, s),
                loss=np.asarray(losses, dtype=np.float64), schedule=sched, config={})
  try:
    fit = bootstrap(fit_curves(make_law(law), [curve]), draws=draws, seed=seed)
  except CannotPredict as e:
    return cannot(str(e), steps=int(total_steps), metric=metric, law=law)
  return predict_final(fit, sched, seed=seed)


def fit_record(fit: Fit) -> dict:
  """The fit as JSON: law, metric, reduced (and why), the lr unit, the Huber delta, the parameters with their
  bootstrap intervals and bound flags, the bootstrap's draws and failures, the residual sd, the source curves."""
  from scaling.analysis.curves.fitting import parameter_table
  return {'law': fit.law.name, 'metric': fit.metric, 'reduced': fit.reduced, 'reduced_reason': fit.reduced_reason,
          'lr_unit': fit.unit, 'huber_delta': fit.delta, 'objective': fit.objective,
          'residual_sd': float(np.std(fit.residuals)) if fit.residuals is not None else None,
          'params': parameter_table(fit), 'bootstrap': fit.boot_info,
          'sources': [{'run': p.curve.name, 'path': p.curve.path, 'schedule': p.curve.schedule.label,
                       'points_fitted': int(len(p.t)), 'last_step': p.curve.final_step,
                       'branch_of': p.curve.parent, 'fork': p.curve.fork} for p in fit.points]}
