"""Fitting a curve law to the curves of a few runs: a robust loss, several starts, and a bootstrap.

The loss: Huber on the log of the loss (mean over points of huber_delta(log pred - log L) / delta), minimised with
L-BFGS-B (scipy) on the laws' analytic gradients, from the best few of a grid of the nonlinear parameters (at each
grid point the linear ones, L0, A and B or C, are solved by bounded least squares). Points in the warmup (t <= w)
are not fitted; a curve with more than `max_points` points is thinned evenly. delta is 'auto' by default: HUBER_K =
1.345 times a model-free noise scale of the log loss (the MAD of its first differences), the classical choice that
keeps 95% of least squares' efficiency under normal noise and bounds a spike's pull. A fixed delta = 1e-3 (Hoffmann
et al. 2022, for final losses with almost no noise) makes the fit an L1 fit on per-step train losses (noise ~2% on
this repo's runs): kinked, so refits from the best parameters barely move and the bootstrap intervals come out too
narrow (seen on synthetic curves).

What the data must hold, else CannotPredict says what is missing (no number is fitted):
  * at least MIN_POINTS points after warmup in all;
  * a forward area (the lr sum) that grows at least MIN_SPAN-fold from the first fitted point to the last: a shorter
    curve cannot tell L0 from A;
  * for the annealing term: a source whose lr falls after warmup by more than 10% of its peak, with at least
    MIN_ANNEAL_POINTS points after the fall began. Without that the law is fitted `reduced` (no annealing term),
    which scaling/analysis/curves/forecast.py lets predict only schedules that do not anneal.

Intervals come from a bootstrap: 'blocks' (moving blocks of the log residuals of each curve added back to the
fitted curve, and refitted: the points keep their steps, neighbouring residuals stay together), or 'runs' (the
source runs drawn with replacement; the default with RUNS_BOOTSTRAP_MIN = 6 or more runs: with 3, one draw in 27
holds no annealing run and on synthetic curves the intervals came out open). Every draw counts: a refit that fails, or a
run draw without the annealing the fit needs, is a NaN that opens the interval honestly
(scaling/analysis/fit/intervals.py honest_interval).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import optimize  # here, not inside one_blas_thread(): a BLAS loaded inside it would not be limited

from scaling.analysis.curves.laws import Law
from scaling.analysis.curves.runs import Curve
from scaling.analysis.curves.schedules import CurveError, anneals, first_drop

MIN_POINTS = 20
MIN_SPAN = 3.0
MIN_ANNEAL_POINTS = 5
HUBER_DELTA = 1e-3     # the smallest delta: Hoffmann et al. 2022's, for points with almost no noise
REFIT_MAXITER = 1000     # a refit cut short stays near the best fit: at 200, multi-power intervals were ~20% narrower
RUNS_BOOTSTRAP_MIN = 6   # fewer runs drawn with replacement too often miss every annealing run (1 in 27 of 3)
HUBER_K = 1.345        # Huber's constant: 95% of least squares' efficiency under normal noise, robust to spikes


def one_blas_thread():
  """L-BFGS-B and the laws' small matrix products call BLAS: on a busy host its threads only contend (the fit's
  L-BFGS-B steps ran ~100x slower beside a training run; scaling/analysis/fit/laws.py does the same)."""
  try:
    from threadpoolctl import threadpool_limits
  except ImportError:  # pragma: no cover - optional dependency
    return contextlib.nullcontext()
  return threadpool_limits(1)


class CannotPredict(CurveError):
  """The data cannot support the fit or the prediction asked for; the message says what is missing."""


@dataclasses.dataclass
class Points:
  """One curve's fitted points and the law's features there."""
  curve: Curve
  t: np.ndarray
  y: np.ndarray
  feats: dict


@dataclasses.dataclass
class Fit:
  law: Law
  theta: np.ndarray
  reduced: bool
  reduced_reason: str
  unit: float
  metric: str
  points: list[Points]
  objective: float
  delta: float
  boot: np.ndarray | None = None          # [R, p] refitted parameters, NaN rows: failed draws
  boot_info: dict = dataclasses.field(default_factory=dict)
  starts: list = dataclasses.field(default_factory=list)   # the grid starts of the fit (refits try them too)
  residuals: np.ndarray | None = None     # pooled log residuals of the fit

  def predict(self, sched, t, theta=None) -> np.ndarray:
    f = self.law.features(sched, np.asarray(t), self.unit)
    return self.law.value(self.theta if theta is None else theta, f, self.reduced)

  @property
  def max_area(self) -> float:
    """The largest forward area (lr sum, in units) among the fitted points."""
    return float(max(np.exp(p.feats['log_u']).max() for p in self.points))


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
  """(huber(r) / delta, its derivative)."""
  a = np.abs(r)
  small = a <= delta
  return np.where(small, 0.5 * r * r / delta, a - 0.5 * delta), np.where(small, r / delta, np.sign(r))


def objective(theta, law: Law, pts: Sequence[Points], ys: Sequence[np.ndarray], reduced: bool, delta: float):
  """(mean Huber of the log residuals, its gradient) at theta."""
  n = sum(len(y) for y in ys)
  f, g = 0.0, np.zeros(len(theta))
  for p, y in zip(pts, ys):
    pred, J = law.value(theta, p.feats, reduced, jac=True)
    bad = pred <= 0
    pc = np.where(bad, 1e-6, pred)
    h, dh = _huber(np.log(pc) - np.log(y), delta)
    f += h.sum() + 1e3 * np.sum(np.where(bad, 1e-6 - pred, 0.0))
    w = np.where(bad, -1e3, dh / pc)
    g += J.T @ w
  return f / n, g / n


def _free(law: Law, reduced: bool) -> int:
  return law.n_reduced if reduced else len(law.params)


def minimise(law: Law, pts, ys, starts, reduced: bool, delta: float, maxiter: int = 500) -> tuple[np.ndarray, float]:
  """The best L-BFGS-B solution from each start (only the reduced parameters move when reduced)."""
  k = _free(law, reduced)
  bounds = list(zip(law.lower[:k], law.upper[:k]))
  best, best_f = None, math.inf
  for s in starts:
    s = np.array(s, dtype=np.float64)
    x0 = np.clip(s[:k], law.lower[:k], law.upper[:k])

    def fun(x, s=s):
      th = np.concatenate([x, s[k:]])
      fv, gv = objective(th, law, pts, ys, reduced, delta)
      return fv, gv[:k]
    with np.errstate(over='ignore', invalid='ignore', divide='ignore'):
      r = optimize.minimize(fun, x0, jac=True, method='L-BFGS-B', bounds=bounds,
                   options={'maxiter': maxiter, 'ftol': 1e-13, 'gtol': 1e-10})
    if np.isfinite(r.fun) and r.fun < best_f:
      best, best_f = np.concatenate([r.x, s[k:]]), float(r.fun)
  if best is None:
    raise CannotPredict('the fit found no finite solution from any start')
  return best, best_f


def grid_starts(law: Law, pts, ys, reduced: bool, delta: float, n_best: int = 4) -> list[np.ndarray]:
  """The n_best grid points of lowest objective, each with its linear parameters solved (bounded lstsq)."""
  grid = sorted({g[:1] for g in law.start_grid()}) if reduced else law.start_grid()
  filler = law.start_grid()[0]
  scored = []
  for g in grid:
    nl = tuple(g) + tuple(filler[len(g):])
    X = np.concatenate([law.linear_design(nl, p.feats) for p in pts])
    if reduced:
      X = X[:, :2]
    y = np.concatenate(ys)
    with np.errstate(over='ignore', invalid='ignore'):
      if not np.all(np.isfinite(X)):
        continue
      coef = optimize.lsq_linear(X, y, bounds=(0.0, np.inf)).x
    theta = law.from_linear(nl, np.concatenate([coef, [1e-8] * (3 - len(coef))]))
    theta = np.clip(theta, law.lower, law.upper)
    fv, _ = objective(theta, law, pts, ys, reduced, delta)
    if np.isfinite(fv):
      scored.append((fv, len(scored), theta))
  scored.sort(key=lambda s: (s[0], s[1]))
  return [s[2] for s in scored[:n_best]]


def _points(law: Law, curves: Sequence[Curve], unit: float, max_points: int) -> list[Points]:
  out = []
  for c in curves:
    keep = np.flatnonzero((c.t > c.schedule.warmup) & (c.t <= c.schedule.total))
    if len(keep) > max_points:
      keep = keep[np.unique(np.round(np.linspace(0, len(keep) - 1, max_points)).astype(int))]
    if len(keep):
      t = c.t[keep]
      out.append(Points(curve=c, t=t, y=c.loss[keep], feats=law.features(c.schedule, t, unit)))
  return out


def check_data(pts: Sequence[Points]) -> None:
  """CannotPredict unless there are enough points over a long enough stretch of the curve (module docstring)."""
  n = sum(len(p.t) for p in pts)
  if n < MIN_POINTS:
    raise CannotPredict(f'too few points: {n} after warmup in all the source runs (need at least {MIN_POINTS}). '
                        f'Log more often (train.log_every) or give longer runs')
  u = np.concatenate([np.exp(p.feats['log_u']) for p in pts])
  if u.max() < MIN_SPAN * u.min():
    raise CannotPredict(f'too short a curve: the lr sum grows only {u.max() / u.min():.2f}x from the first point '
                        f'after warmup to the last (need {MIN_SPAN:g}x to tell the asymptote from the power law). '
                        f'Give runs that train longer past their warmup')


def annealing_reason(pts: Sequence[Points]) -> str:
  """'' when the sources identify the annealing term, else why not."""
  n_after, any_anneal = 0, False
  for p in pts:
    if anneals(p.curve.schedule, upto=int(p.t.max())):
      any_anneal = True
      k = first_drop(p.curve.schedule)
      n_after += int(np.sum(p.t >= k)) if k is not None else 0
  if not any_anneal:
    return ('the source runs never decay the lr after warmup, so the annealing term is not identified; add a run '
            'that decays (a cosine run, or a cooldown branch of the constant-lr parent)')
  if n_after < MIN_ANNEAL_POINTS:
    return (f'only {n_after} points were logged after the lr began to fall (need {MIN_ANNEAL_POINTS}): the '
            f'annealing term is not identified; log more often during the decay')
  return ''


def noise_scale(curves: Sequence[Curve]) -> float:
  """A model-free robust sd of one point's log loss: the MAD of the first differences of log loss (after warmup),
  / 0.6745 (the MAD of a normal sd 1) / sqrt(2) (a difference holds two points' noise)."""
  d = np.concatenate([np.diff(np.log(c.loss[c.t > c.schedule.warmup])) for c in curves])
  d = d[np.isfinite(d)]
  return float(np.median(np.abs(d - np.median(d))) / 0.6745 / math.sqrt(2)) if d.size else 0.0


def huber_delta(curves: Sequence[Curve], delta: float | str = 'auto') -> float:
  """'auto': HUBER_K times the noise scale (at least HUBER_DELTA), else the number given."""
  if delta == 'auto':
    return max(HUBER_K * noise_scale(curves), HUBER_DELTA)
  delta = float(delta)
  if not delta > 0:
    raise CurveError(f'the Huber delta must be > 0, got {delta}')
  return delta


def fit_curves(law: Law, curves: Sequence[Curve], *, delta: float | str = 'auto', max_points: int = 256,
               n_starts: int = 4) -> Fit:
  """The law fitted to the curves (one model size); CannotPredict when the data cannot support a fit."""
  if not curves:
    raise CurveError('no curves to fit')
  unit = max(c.schedule.peak for c in curves)
  if not unit > 0:
    raise CannotPredict('the source runs trained at lr 0')
  pts = _points(law, curves, unit, max_points)
  check_data(pts)
  delta = huber_delta(curves, delta)
  why = annealing_reason(pts)
  reduced = bool(why)
  ys = [p.y for p in pts]
  with one_blas_thread():
    starts = grid_starts(law, pts, ys, reduced, delta, n_starts)
    if not starts:
      raise CannotPredict('no start of the fit gave a finite loss')
    theta, fval = minimise(law, pts, ys, starts, reduced, delta)
  fit = Fit(law=law, theta=theta, reduced=reduced, reduced_reason=why, unit=unit, metric=curves[0].metric,
            points=pts, objective=fval, delta=delta, starts=starts)
  fit.residuals = np.concatenate([np.log(p.y) - np.log(law.value(theta, p.feats, reduced)) for p in pts])
  return fit


def _block_resample(r: np.ndarray, rng, block: int | None) -> np.ndarray:
  n = len(r)
  b = min(n, block or max(2, int(round(n ** (1 / 3)))))
  starts = rng.integers(0, n - b + 1, size=-(-n // b))
  return np.concatenate([r[s:s + b] for s in starts])[:n]


def bootstrap(fit: Fit, draws: int = 100, seed: int = 0, mode: str = 'auto', block: int | None = None) -> Fit:
  """fit.boot: [draws, p] refitted parameters (module docstring); mode 'auto' is 'runs' with RUNS_BOOTSTRAP_MIN
  or more source runs, else 'blocks'."""
  if mode == 'auto':
    mode = 'runs' if len(fit.points) >= RUNS_BOOTSTRAP_MIN else 'blocks'
  if mode not in ('runs', 'blocks'):
    raise ValueError(f'bootstrap mode {mode!r}: choose auto, runs or blocks')
  rng = np.random.default_rng(seed)
  law, pts = fit.law, fit.points
  base = [law.value(fit.theta, p.feats, fit.reduced) for p in pts]
  out = np.full((draws, len(fit.theta)), np.nan)
  failed = {}
  with one_blas_thread():
    _draw_all(fit, mode, rng, base, block, out, failed)
  fit.boot = out
  fit.boot_info = {'draws': draws, 'mode': mode, 'seed': seed, 'failed': failed,
                   'succeeded': int(np.isfinite(out[:, 0]).sum())}
  return fit


def _draw_all(fit: Fit, mode: str, rng, base, block, out: np.ndarray, failed: dict) -> None:
  law, pts = fit.law, fit.points
  for i in range(len(out)):
    if mode == 'blocks':
      sub = pts
      ys = [np.exp(np.log(np.maximum(b, 1e-6)) + _block_resample(np.log(p.y) - np.log(np.maximum(b, 1e-6)), rng,
                                                                   block)) for p, b in zip(pts, base)]
    else:
      sub = [pts[j] for j in rng.integers(0, len(pts), size=len(pts))]
      ys = [p.y for p in sub]
      if not fit.reduced and annealing_reason(sub):
        failed['no_annealing_run_drawn'] = failed.get('no_annealing_run_drawn', 0) + 1
        continue
    try:
      th, _ = minimise(law, sub, ys, [fit.theta], fit.reduced, fit.delta, maxiter=REFIT_MAXITER)
    except CannotPredict:
      failed['no_finite_solution'] = failed.get('no_finite_solution', 0) + 1
      continue
    out[i] = th


def parameter_table(fit: Fit) -> dict:
  """{name: {value, ci, at_bound}} of the law's public parameters (intervals from fit.boot when drawn)."""
  from scaling.analysis.fit.intervals import finite_or_none, honest_interval
  law = fit.law
  best = law.public(fit.theta, fit.reduced)
  k = _free(law, fit.reduced)
  names = [n for n in law.params[:k]]
  at = {n for n, v, lo, hi in zip(names, fit.theta, law.lower, law.upper)
        if abs(v - lo) <= 1e-6 * max(1.0, abs(lo)) or abs(v - hi) <= 1e-6 * max(1.0, abs(hi))}
  out = {}
  for name, v in best.items():
    rec = {'value': v}
    if v is not None and fit.boot is not None and name != 'lambda':
      vals = np.array([law.public(th, fit.reduced)[name] if np.all(np.isfinite(th)) else np.nan
                       for th in fit.boot], dtype=np.float64)
      rec['ci'] = [finite_or_none(x) for x in honest_interval(vals)['ci']]   # an open end: null
    internal = {'A': 'log_A', 'B': 'log_B', 'C': 'log_C'}.get(name, name)
    rec['at_bound'] = internal in at
    out[name] = rec
  return out
