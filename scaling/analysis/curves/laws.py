"""Two laws of the whole loss curve against the learning-rate schedule, with their derivatives.

Notation: eta_k is the lr of update k (scaling/analysis/curves/schedules.py), measured in units of `unit` (the
source runs' peak lr, so the fitted constants do not depend on the lr's scale); w is the number of warmup updates;
t the number of updates behind a loss. The post-warmup lr decreases are Delta_k = eta_{k-1} - eta_k for k > w + 1
(the laws' eta_0 is the lr where the post-warmup phase starts; schedules.post_warmup_drops). Both laws hold after
warmup: points with t <= w are not fitted.

multipower  Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate Schedules"
            (ICLR 2025, arXiv:2503.12811), their eq. for L(t):
              L(t) = L0 + A (S1(t) + S_W)^(-alpha) - LD(t),
              LD(t) = B sum_{k=1}^{t} (eta_{k-1} - eta_k) G(eta_k^(-gamma) S_k(t)),  G(x) = 1 - (C x + 1)^(-beta),
              S_k(t) = sum_{tau=k}^{t} eta_tau,
            S1(t) the lr sum after warmup and S_W the warmup's, so S1 + S_W is the sum over all t updates.
            Parameters L0, A, alpha, B, C, beta, gamma (fitted as L0, log A, alpha, log B, log C, beta, gamma).
tissue      Tissue et al. 2024, "Scaling Law with Learning Rate Annealing" (arXiv:2408.11029):
              L(s) = L0 + A S1^(-alpha) - C S2,  S1 = sum_{i<=s} eta_i (the forward area, warmup included),
              S2 = sum_{i<=s} m_i,  m_i = lambda m_{i-1} + (eta_{i-1} - eta_i)  (the annealing area with momentum,
              lambda = 0.999 as the paper's default; the sum runs over the post-warmup updates).
            Parameters L0, A, alpha, C (fitted as L0, log A, alpha, log C).

Without annealing in the data the annealing term is not identified: a law is then fitted `reduced` (L0, A, alpha
only, the term set to 0), which can predict only schedules that do not anneal either (scaling/analysis/curves/
fitting.py decides). LD's sum over k is exact up to K_MAX distinct lr changes (every decay of up to 1024 steps); a
longer one is summed in K_MAX contiguous bins (each bin's total Delta at its |Delta|-weighted centre): on a 4000-step
cosine the binned law is within 1e-4 of the exact one at the reference parameters (tests/test_curves.py), far below
a point's noise, but the annealing parameters are so weakly identified that even this shifts them visibly in a
noise-free fit (at 256 bins a 470-step cosine moved B by 13%).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from scaling.analysis.curves.schedules import Schedule, post_warmup_drops

K_MAX = 1024          # distinct lr changes summed exactly in LD; more are binned (module docstring)
TISSUE_LAMBDA = 0.999
_TINY = 1e-12


def _cum(sched: Schedule, unit: float) -> np.ndarray:
  """[N + 1] cum[t] = sum of eta_1..eta_t (in units)."""
  return np.concatenate([[0.0], np.cumsum(sched.eta / unit)])


def _bins(k: np.ndarray, delta: np.ndarray, kmax: int) -> tuple[np.ndarray, np.ndarray]:
  """Contiguous bins of the changes at updates k: (each bin's representative update, its summed Delta)."""
  if len(k) <= kmax:
    return k, delta
  groups = np.array_split(np.arange(len(k)), kmax)
  rep = np.array([int(round(np.average(k[g], weights=np.abs(delta[g]) + _TINY))) for g in groups])
  return rep, np.array([delta[g].sum() for g in groups])


class Law:
  """A curve law: features of (schedule, t) computed once, then values and Jacobians for any parameters."""
  name = ''
  params: tuple[str, ...] = ()
  n_reduced = 3                       # L0, log A, alpha: the law without its annealing term
  lower: tuple[float, ...] = ()
  upper: tuple[float, ...] = ()

  def features(self, sched: Schedule, t: np.ndarray, unit: float) -> dict:
    raise NotImplementedError

  def anneal_term(self, theta, f, jac: bool):
    """(the annealing term's loss reduction [n], its derivatives [n, p - 3] or None)."""
    raise NotImplementedError

  def linear_design(self, nonlinear, f) -> np.ndarray:
    raise NotImplementedError

  def value(self, theta, f: dict, reduced: bool = False, jac: bool = False):
    """The law at the features' points: pred [n] (and d pred / d theta [n, p] when jac)."""
    L0, logA, alpha = theta[0], theta[1], theta[2]
    A = math.exp(logA)
    lu = f['log_u']
    f1 = np.exp(-alpha * lu)
    pred = L0 + A * f1
    J = None
    if jac:
      J = np.zeros((len(lu), len(self.params)))
      J[:, 0], J[:, 1], J[:, 2] = 1.0, A * f1, -A * f1 * lu
    if not reduced:
      red, dred = self.anneal_term(theta, f, jac)
      pred = pred - red
      if jac:
        J[:, 3:] = -dred
    return (pred, J) if jac else pred

  def public(self, theta, reduced: bool = False) -> dict:
    """The parameters by their papers' names (A, B, C not logged); the annealing ones None when reduced."""
    raise NotImplementedError

  def start_grid(self) -> list[tuple]:
    """Values of the nonlinear parameters to try; the linear ones (L0, A and B or C) are solved at each."""
    raise NotImplementedError

  def from_linear(self, nonlinear, coef) -> np.ndarray:
    raise NotImplementedError


class MultiPower(Law):
  name = 'multipower'
  params = ('L0', 'log_A', 'alpha', 'log_B', 'log_C', 'beta', 'gamma')
  lower = (0.0, -15.0, 0.01, -15.0, -18.0, 0.01, 0.0)
  upper = (50.0, 15.0, 3.0, 15.0, 8.0, 5.0, 1.5)

  def features(self, sched: Schedule, t: np.ndarray, unit: float) -> dict:
    """log (S1 + S_W) at each t, and LD's terms packed: one entry per (point j, change k <= t_j) with its S_k(t_j),
    point index, Delta_k and log eta_k (a point's sum over k is a bincount over its entries)."""
    t = np.asarray(t, dtype=np.int64)
    cum = _cum(sched, unit)
    drops = post_warmup_drops(sched) / unit
    k = np.flatnonzero(np.abs(drops) > _TINY) + 1               # 1-based updates that change the lr
    k = k[k <= (t.max() if t.size else 0)]
    k, delta = _bins(k, drops[k - 1], K_MAX)
    log_e = np.log(np.maximum(sched.eta[k - 1] / unit, 1e-9)) if k.size else np.zeros(0)
    row, col = np.nonzero(k[None, :] <= t[:, None])
    S = np.maximum(cum[t[row]] - cum[k[col] - 1], 0.0)         # S_k(t) = sum_{tau=k}^{t} eta_tau
    return {'log_u': np.log(np.maximum(cum[t], _TINY)), 'n': len(t), 'S': S, 'row': row,
            'delta': delta[col], 'log_e': log_e[col]}

  def anneal_term(self, theta, f, jac: bool):
    B, C, beta, gamma = math.exp(theta[3]), math.exp(theta[4]), theta[5], theta[6]
    n, row, delta, log_e = f['n'], f['row'], f['delta'], f['log_e']
    if not row.size:
      return np.zeros(n), (np.zeros((n, 4)) if jac else None)
    CX = C * f['S'] * np.exp(-gamma * log_e)
    lg = np.log1p(CX)
    P = np.exp(-beta * lg)

    def total(w):
      return np.bincount(row, weights=w, minlength=n)
    LD = B * total(delta * (1.0 - P))
    if not jac:
      return LD, None
    dQ = delta * beta * P * CX / (1.0 + CX)
    d = np.empty((n, 4))
    d[:, 0] = LD                                   # d LD / d log B
    d[:, 1] = B * total(dQ)                        # d LD / d log C
    d[:, 2] = B * total(delta * P * lg)            # d LD / d beta
    d[:, 3] = -B * total(dQ * log_e)               # d LD / d gamma
    return LD, d

  def public(self, theta, reduced: bool = False) -> dict:
    out = {'L0': float(theta[0]), 'A': math.exp(theta[1]), 'alpha': float(theta[2])}
    an = {'B': math.exp(theta[3]), 'C': math.exp(theta[4]), 'beta': float(theta[5]), 'gamma': float(theta[6])}
    return out | {k: (None if reduced else v) for k, v in an.items()}

  def start_grid(self) -> list[tuple]:
    return [(a, lc, b, g) for a in (0.2, 0.45, 0.8) for lc in (-6.0, -4.0, -2.0, 0.0)
            for b in (0.4, 1.0) for g in (0.3, 0.6)]

  def linear_design(self, nonlinear, f) -> np.ndarray:
    alpha, logC, beta, gamma = nonlinear
    g, _ = self.anneal_term(np.array([0, 0, alpha, 0.0, logC, beta, gamma]), f, False)
    return np.stack([np.ones_like(f['log_u']), np.exp(-alpha * f['log_u']), -g], axis=1)

  def from_linear(self, nonlinear, coef) -> np.ndarray:
    alpha, logC, beta, gamma = nonlinear
    return np.array([coef[0], math.log(max(coef[1], 1e-8)), alpha, math.log(max(coef[2], 1e-8)), logC, beta,
                     gamma])


class Tissue(Law):
  name = 'tissue'
  params = ('L0', 'log_A', 'alpha', 'log_C')
  lower = (0.0, -15.0, 0.01, -25.0)
  upper = (50.0, 15.0, 3.0, 10.0)

  def __init__(self, lam: float = TISSUE_LAMBDA):
    if not 0.0 <= lam < 1.0:
      raise ValueError(f'the annealing momentum lambda must be in [0, 1), got {lam}')
    self.lam = lam

  def features(self, sched: Schedule, t: np.ndarray, unit: float) -> dict:
    t = np.asarray(t, dtype=np.int64)
    cum = _cum(sched, unit)
    m = lfilter([1.0], [1.0, -self.lam], post_warmup_drops(sched) / unit)   # m_i = lambda m_{i-1} + Delta_i
    s2 = np.concatenate([[0.0], np.cumsum(m)])
    return {'log_u': np.log(np.maximum(cum[t], _TINY)), 'S2': s2[t]}

  def anneal_term(self, theta, f, jac: bool):
    C = math.exp(theta[3])
    red = C * f['S2']
    return red, (red[:, None] if jac else None)

  def public(self, theta, reduced: bool = False) -> dict:
    return {'L0': float(theta[0]), 'A': math.exp(theta[1]), 'alpha': float(theta[2]),
            'C': None if reduced else math.exp(theta[3]), 'lambda': self.lam}

  def start_grid(self) -> list[tuple]:
    return [(a,) for a in (0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.5)]

  def linear_design(self, nonlinear, f) -> np.ndarray:
    (alpha,) = nonlinear
    return np.stack([np.ones_like(f['log_u']), np.exp(-alpha * f['log_u']), -f['S2']], axis=1)

  def from_linear(self, nonlinear, coef) -> np.ndarray:
    return np.array([coef[0], math.log(max(coef[1], 1e-8)), nonlinear[0], math.log(max(coef[2], 1e-10))])


LAWS = {'multipower': MultiPower, 'tissue': Tissue}


def make_law(name: str, **kw) -> Law:
  if name not in LAWS:
    raise ValueError(f'unknown law {name!r}; choose one of {", ".join(LAWS)}')
  return LAWS[name](**kw)
