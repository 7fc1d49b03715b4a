"""A known scaling law for simulated studies: Hoffmann et al. 2022's approach-3 fit, its loss and its exact
compute-optimal N under C = 6 N D (bounded numeric minimisation, independent of the code under test)."""

import math

from scipy import optimize

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28   # Hoffmann et al. 2022, approach 3


def law(n, d):
  return E + A / n ** ALPHA + B / d ** BETA


def law_n_opt(c):
  res = optimize.minimize_scalar(lambda x: law(math.exp(x), c / (6 * math.exp(x))),
                                 bounds=(math.log(1e5), math.log(1e14)), method='bounded', options={'xatol': 1e-10})
  return math.exp(res.x)
