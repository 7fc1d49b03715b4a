"""The seed study's run-to-run noise model: pooled over every configuration run with two or more seeds.

Per metric, each configuration (the run's overrides without train.seed: scaling/analysis/seed/claims.py
config_key) with n >= 2 seed replicates gives a sum of squares of log values about its own mean with n - 1
degrees of freedom; the pooled variance is the summed squares over the summed degrees of freedom

    sd^2 = sum_g sum_i (log x_gi - mean_g)^2 / sum_g (n_g - 1),    df = sum_g (n_g - 1)

(the one-way ANOVA within-group variance). It assumes one log-scale noise for every configuration that is
compared; the configurations it pools, each with its own sd, are kept in Noise.groups so the report can
show how far they agree. A configuration with one seed adds nothing.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from scaling.analysis.seed import claims as C


def groups(rows: Sequence[dict], key: str) -> list[tuple[str, list[float]]]:
  """(label, the positive values of `key`) per configuration of the finished study rows, in row order; the
  label is the arm and, where the arm has several configurations, the run hash of its first replicate."""
  by_cfg: dict[str, list[dict]] = {}
  for r in rows:
    if C.arm_of(r) is not None and r.get('state', 'done') == 'done' and C.positive([r.get(key)]):
      by_cfg.setdefault(C.config_key(r), []).append(r)
  arms: dict[str, int] = {}
  for g in by_cfg.values():
    arms[C.arm_of(g[0])] = arms.get(C.arm_of(g[0]), 0) + 1
  out = []
  for g in by_cfg.values():
    arm = C.arm_of(g[0])
    label = arm if arms[arm] == 1 else f'{arm} ({g[0].get("run", "?")})'
    out.append((label, [float(r[key]) for r in g]))
  return out


def pooled(rows: Sequence[dict], key: str) -> C.Noise | None:
  """The pooled log-scale noise of `key` (module docstring); None when no configuration has two seeds."""
  ss, df, kept = 0.0, 0, []
  for label, v in groups(rows, key):
    if len(v) < 2:
      continue
    lv = np.log(v)
    ss += float(np.sum((lv - lv.mean()) ** 2))
    df += len(v) - 1
    kept.append((label, len(v), float(np.std(lv, ddof=1))))
  if df == 0:
    return None
  return C.Noise(math.sqrt(ss / df), df, tuple(kept))


def bartlett_p(noise: C.Noise) -> float | None:
  """p-value of Bartlett's test that the pooled configurations share one variance, from their (n, sd); None
  with fewer than two configurations or a configuration of zero spread."""
  from scipy import stats
  g = [(n, sd) for _, n, sd in noise.groups]
  if len(g) < 2 or any(sd <= 0 for _, sd in g):
    return None
  k, dfs = len(g), [n - 1 for n, _ in g]
  df = sum(dfs)
  num = df * math.log(noise.sd ** 2) - sum(d * math.log(sd ** 2) for d, (_, sd) in zip(dfs, g))
  den = 1 + (sum(1 / d for d in dfs) - 1 / df) / (3 * (k - 1))
  return float(stats.chi2.sf(num / den, k - 1))


def describe(noise: C.Noise | None, key: str) -> str:
  """One line: the pooled sd, its df, the configurations it came from and whether they agree."""
  if noise is None:
    return f'{key}: no configuration has two seeds: no noise estimate'
  parts = ', '.join(f'{label} n={n} sd={sd:.3g}' for label, n, sd in noise.groups)
  out = f'{key}: sd of log {noise.sd:.3g} with {noise.df} df, pooled over {len(noise.groups)} configuration(s) ' \
        f'({parts})'
  p = bartlett_p(noise)
  if p is not None:
    out += f'; Bartlett p = {p:.2g}' + (' (the configurations\' sds differ beyond chance: the pooled sd understates '
                                       'the noisier ones)' if p < 0.05 else '')
  return out
