"""The seed guide's claims (configs/sweeps/seed_upgrades.py): effects with intervals, and the verdict rules.

An effect is a number with a 90% interval, a null (1 for a ratio) and the side the claim says it lies on.
`verdict(effect)` applies the rules stated at the top of every report (RULES), in this order:

  1. a missing number (an arm not run or not finished, a measurement not taken) is "not measured",
     never "not confirmed"; a number the design makes impossible is "not measurable here", with the
     reason; a number the measured range gives only by extrapolation (a compute multiplier at a bpb
     outside the slower tokenizer's measured frontier) is "not decided";
  2. an interval that contains the null is "no difference";
  3. an interval entirely on the other side of the null is "refuted";
  4. an interval entirely on the claimed side is "confirmed", unless the claim names a size (the
     guide's "10-100x"): then the interval must reach that size ("confirmed"), lie short of it
     ("refuted: smaller than claimed"), or straddle it ("inconclusive");
  5. a claim holds only if each of its parts does. `combine` (rule 6 of RULES): with every part measured
     (rules 2-4), refuted if a part is refuted, confirmed if every part is, else inconclusive if a part is,
     else no difference; with some parts measured and some not (not measured / not decided / not
     measurable here), "partly measured": the report names the parts that are not measured and states
     what the measured ones show (`measured_verdict`), which is not the claim's verdict; with no part
     measured, "not measured" (or the one unmeasured verdict every part shares).

Intervals. Run-to-run noise is pooled over every configuration the study ran with two or more seeds
(scaling/analysis/seed/noise.py): per metric, the sd of its log within each configuration, pooled with the
degrees of freedom summed, and a Student-t interval on the log ratio of two arms' means. A within-model
comparison (one model, two ways of measuring it) uses the per-seed log ratios. Fitted quantities (the
tokenizer's compute multiplier, scaling/analysis/seed/frontier.py) come from a parametric bootstrap with
that noise plus a model-form term; the sampling claim's from a bootstrap over seeds and prompts
(scaling/analysis/seed/decoding.py).

Rows are results.jsonl rows (scaling/launch/rundir.py collect_rows) merged with the measurements of
`python -m scaling.analysis.seed.measure` (ROOT/claims.jsonl, keys 'claims/...'); a row's arm is its config
name 'seed_upgrades:<arm>'. Rendering and plots: scaling/analysis/seed/render.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

import numpy as np

STUDY = 'seed_upgrades'
PREFIX = STUDY + ':'
LEVEL = 0.90
MEASUREMENTS = 'claims.jsonl'

CONFIRMED, REFUTED, NO_DIFFERENCE = 'confirmed', 'refuted', 'no difference'
INCONCLUSIVE, NOT_MEASURED, NOT_MEASURABLE = 'inconclusive', 'not measured', 'not measurable here'
NOT_DECIDED, PARTLY_MEASURED = 'not decided', 'partly measured'
MEASURED = (CONFIRMED, REFUTED, NO_DIFFERENCE, INCONCLUSIVE)       # verdicts of rules 3-5
UNMEASURED = (NOT_MEASURED, NOT_DECIDED, NOT_MEASURABLE)           # verdicts of rule 2

RULES = (
    'Every effect is a number with a 90% interval. Run-to-run noise is pooled over every configuration run '
    'with two or more seeds (per metric, the sd of its log within each configuration, pooled with the degrees '
    'of freedom summed; a Student-t interval on the log ratio); fitted quantities from a parametric bootstrap '
    'with that noise plus a model-form term; the sampling comparisons from a bootstrap over seeds and prompts.',
    'A missing arm or measurement is **not measured** (what is missing is named), never "not confirmed"; '
    'a number the design cannot have is **not measurable here**; a number the measured range gives only by '
    'extrapolation (a compute multiplier at a bpb outside the slower frontier\'s measured range) is **not '
    'decided**.',
    'An interval that contains the null (ratio 1, difference 0) is **no difference**.',
    'An interval entirely on the other side of the null is **refuted**.',
    'An interval entirely on the claimed side is **confirmed**; where the guide names a size ("10-100x") '
    'the interval must reach it: short of it is **refuted** (smaller than claimed), across it **inconclusive**.',
    'A claim holds only if each of its parts does. With every part measured (rules 3-5): **refuted** if any '
    'part is refuted, **confirmed** if every part is confirmed, else **inconclusive** if any part is, else '
    '**no difference**. With some parts not measured / not decided / not measurable here, the claim is '
    '**partly measured**: those parts are named, and what the measured parts show (by the same rule) is '
    'stated beside it, not as the claim\'s verdict. With no part measured: **not measured** (or the one of '
    'not decided / not measurable here that every part shares).',
)


# ----------------------------------------------------------------------------- effects and verdicts
@dataclasses.dataclass(frozen=True)
class Effect:
  """A measured quantity: value and LEVEL interval [lo, hi]; the claim says it lies on `side` of `null`."""
  value: float | None
  lo: float | None = None
  hi: float | None = None
  null: float = 1.0
  side: str = 'less'               # 'less' | 'greater': where the claim puts it, relative to the null
  threshold: float | None = None   # the size the claim names, on the claimed side of the null
  missing: str = ''                # why it is not measured (non-empty: not measured)
  impossible: str = ''             # why the design cannot have it (non-empty: not measurable here)
  extrapolated: str = ''           # why only an extrapolation would give it (non-empty: not decided)

  def text(self, digits: int = 4) -> str:
    if self.impossible:
      return f'not measurable ({self.impossible})'
    g = f'.{digits}g'
    if self.extrapolated:
      return f'not decided ({self.extrapolated})'
    if self.missing or self.value is None:
      return f'not measured ({self.missing or "no value"})'
    return (f'{self.value:{g}}' + (f' [{self.lo:{g}}, {self.hi:{g}}]' if self.lo is not None and
                                   self.hi is not None else ' (no interval)'))


def missing(why: str, **kw) -> Effect:
  return Effect(None, missing=why, **kw)


def verdict(e: Effect) -> str:
  """The verdict of one effect by the rules of the module docstring."""
  if e.impossible:
    return NOT_MEASURABLE
  if e.extrapolated:
    return NOT_DECIDED
  if e.missing or None in (e.value, e.lo, e.hi) or not math.isfinite(e.value) or math.isnan(e.lo) or \
     math.isnan(e.hi):   # an infinite bound is an open interval (the slower arm may never get there)
    return NOT_MEASURED
  if e.side not in ('less', 'greater'):
    raise ValueError(f"Effect.side must be 'less' or 'greater', got {e.side!r}")
  if e.lo <= e.null <= e.hi:
    return NO_DIFFERENCE
  towards = e.lo > e.null if e.side == 'greater' else e.hi < e.null
  if not towards:
    return REFUTED
  if e.threshold is None:
    return CONFIRMED
  if e.side == 'greater':
    return CONFIRMED if e.lo >= e.threshold else (REFUTED if e.hi < e.threshold else INCONCLUSIVE)
  return CONFIRMED if e.hi <= e.threshold else (REFUTED if e.lo > e.threshold else INCONCLUSIVE)


def _check_verdicts(verdicts: Sequence[str]) -> None:
  bad = [v for v in verdicts if v not in MEASURED + UNMEASURED]
  if bad:
    raise ValueError(f'unknown part verdict(s) {bad}: a part is one of {", ".join(MEASURED + UNMEASURED)}')


def measured_verdict(verdicts: Sequence[str]) -> str | None:
  """Rule 6 over the measured parts only (None without one): refuted if any is refuted, confirmed if all are
  confirmed, else inconclusive if any is, else no difference. Alone it is a claim's verdict only when every
  part is measured (`combine`)."""
  _check_verdicts(verdicts)
  vs = [v for v in verdicts if v in MEASURED]
  if not vs:
    return None
  if REFUTED in vs:
    return REFUTED
  if all(v == CONFIRMED for v in vs):
    return CONFIRMED
  return INCONCLUSIVE if INCONCLUSIVE in vs else NO_DIFFERENCE


def combine(verdicts: Sequence[str]) -> str:
  """A claim's verdict from its parts' (RULES[5]): partly measured when some parts are not measured."""
  _check_verdicts(verdicts)
  if not verdicts:
    return NOT_MEASURED
  unmeasured = [v for v in verdicts if v in UNMEASURED]
  if not unmeasured:
    return measured_verdict(verdicts)
  if len(unmeasured) < len(verdicts):
    return PARTLY_MEASURED
  return unmeasured[0] if len(set(unmeasured)) == 1 else NOT_MEASURED


# ----------------------------------------------------------------------------- noise and intervals
@dataclasses.dataclass(frozen=True)
class Noise:
  """Run-to-run noise of a metric: sd of its log with df degrees of freedom; `groups` the configurations it
  was pooled from, (label, replicates, their own sd) each (scaling/analysis/seed/noise.py)."""
  sd: float
  df: int
  groups: tuple = ()


def t_quantile(df: int, level: float = LEVEL) -> float:
  from scipy import stats
  return float(stats.t.ppf(0.5 + level / 2, df))


def positive(values) -> list[float]:
  out = []
  for v in values:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
      out.append(float(v))
  return out


def noise_of(values) -> Noise | None:
  """The log-scale noise of a metric from one configuration's seed replicates; None with fewer than 2."""
  v = positive(values)
  if len(v) < 2:
    return None
  return Noise(float(np.std(np.log(v), ddof=1)), len(v) - 1)


def log_ratio(a, b, noise: Noise | None, *, what: str = '', **kw) -> Effect:
  """mean(a) / mean(b) (geometric), interval from the metric's seed noise (t on the log ratio)."""
  a, b = positive(a), positive(b)
  if not a or not b:
    return missing(what or 'an arm has no value', **kw)
  d = float(np.mean(np.log(a)) - np.mean(np.log(b)))
  if noise is None:
    return Effect(math.exp(d), missing='no seed replicates: no noise estimate', **kw)
  half = t_quantile(noise.df) * noise.sd * math.sqrt(1 / len(a) + 1 / len(b))
  return Effect(math.exp(d), math.exp(d - half), math.exp(d + half), **kw)


def paired_ratio(pairs, *, what: str = '', **kw) -> Effect:
  """Within-model ratios a_i / b_i (one pair per seed): geometric mean, t interval over the pairs."""
  ok = [(a, b) for a, b in pairs if positive([a]) and positive([b])]
  if not ok:
    return missing(what or 'no paired values', **kw)
  r = np.log([a / b for a, b in ok])
  if len(r) < 2:
    return Effect(float(np.exp(r[0])), missing='one seed: no interval', **kw)
  half = t_quantile(len(r) - 1) * float(np.std(r, ddof=1)) / math.sqrt(len(r))
  m = float(np.mean(r))
  return Effect(math.exp(m), math.exp(m - half), math.exp(m + half), **kw)


def paired_difference(pairs, *, what: str = '', **kw) -> Effect:
  """Within-model differences a_i - b_i (one pair per seed; for rates that can be 0): mean, t interval."""
  ok = [(float(a), float(b)) for a, b in pairs if isinstance(a, (int, float)) and isinstance(b, (int, float))
        and math.isfinite(a) and math.isfinite(b)]
  kw.setdefault('null', 0.0)
  if not ok:
    return missing(what or 'no paired values', **kw)
  d = [a - b for a, b in ok]
  m = float(np.mean(d))
  if len(d) < 2:
    return Effect(m, missing='one seed: no interval', **kw)
  half = t_quantile(len(d) - 1) * float(np.std(d, ddof=1)) / math.sqrt(len(d))
  return Effect(m, m - half, m + half, **kw)


def rounds_ratio(a_times, b_times, **kw) -> Effect:
  """Step-time ratio a / b from interleaved rounds (round i of a beside round i of b): paired_ratio."""
  return paired_ratio(list(zip(a_times, b_times)), what='no step-time rounds', **kw)


# ----------------------------------------------------------------------------- rows
def arm_of(row: dict) -> str | None:
  name = row.get('name') or (row.get('overrides') or {}).get('name')
  return name[len(PREFIX):] if isinstance(name, str) and name.startswith(PREFIX) else None


def is_study(rows: Sequence[dict]) -> bool:
  return any(arm_of(r) is not None for r in rows)


def fit_keep(row: dict) -> bool:
  """The rows `scaling fit` may use in this study: the BPE frontier (one architecture, one tokenizer)."""
  return arm_of(row) == 'tok-bpe'


def seed_of(row: dict) -> int:
  return int((row.get('overrides') or {}).get('train.seed', 0))


def config_key(row: dict) -> str:
  """The run's configuration without its seed (rows of one key are seed replicates of one configuration)."""
  ov = {k: v for k, v in (row.get('overrides') or {}).items() if k != 'train.seed'}
  if not ov:
    return json.dumps({'run': row.get('run')})   # a row without overrides is its own configuration
  return json.dumps(ov, sort_keys=True, default=str)


def read_measurements(root: str) -> tuple[dict[str, dict], list[dict]]:
  """ROOT/claims.jsonl: ({run hash: measurements}, the other rows: step times, meta)."""
  per_run, other = {}, []
  path = os.path.join(root, MEASUREMENTS)
  if not os.path.isfile(path):
    return per_run, other
  with open(path, encoding='utf-8') as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        (per_run.__setitem__(row['run'], row) if row.get('kind') == 'run' else other.append(row))
  return per_run, other


def merged(rows: Sequence[dict], per_run: dict[str, dict]) -> list[dict]:
  return [{**r, **{k: v for k, v in per_run.get(r.get('run'), {}).items() if k.startswith('claims/')}}
          for r in rows]


def by_arm(rows: Sequence[dict]) -> dict[str, list[dict]]:
  out: dict[str, list[dict]] = {}
  for r in rows:
    arm = arm_of(r)
    if arm is not None and r.get('state') == 'done':
      out.setdefault(arm, []).append(r)
  return out


def vals(rows: Sequence[dict], key: str) -> list[float]:
  return positive(r.get(key) for r in rows)


def budget_groups(rows: Sequence[dict], tol: float = 0.1) -> list[tuple[float, list[dict]]]:
  """Rows grouped by training FLOPs within `tol` (one group per planned budget), smallest first."""
  groups: list[tuple[float, list[dict]]] = []
  for r in sorted((r for r in rows if positive([r.get('flops')])), key=lambda r: r['flops']):
    if groups and r['flops'] <= groups[-1][0] * (1 + tol):
      groups[-1][1].append(r)
    else:
      groups.append((r['flops'], [r]))
  return [(float(np.exp(np.mean(np.log([x['flops'] for x in g])))), g) for _, g in groups]


def config_means(rows: Sequence[dict], key: str) -> list[dict]:
  """One row per configuration: its first row with `key` replaced by the geometric mean over its seeds
  (rows without a positive `key` left out), and 'values' = the seeds' values."""
  groups: dict[str, list[dict]] = {}
  for r in rows:
    if positive([r.get(key)]):
      groups.setdefault(config_key(r), []).append(r)
  return [{**g[0], key: float(np.exp(np.mean(np.log([x[key] for x in g])))), 'values': [x[key] for x in g]}
          for g in groups.values()]
