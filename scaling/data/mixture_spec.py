"""The syntax and arithmetic of a data mixture (data.mixture, data.mixture_weights, data.mixture_stages): no I/O.

    data.mixture          {'linux': 'prose:linux', 'kjv': 'prose:kjv'}   name -> corpus spec (any data.corpus form)
    data.mixture_weights  'linux=0.7,kjv=0.3'                            every source once; >= 0; sum 1 (1e-6)
    data.mixture_stages   '600:linux=0.2,kjv=0.8;900:linux=0.5,kjv=0.5'  the weights from step 600 on, from 900 on

Weights are exact rationals (`fractions.Fraction` of the decimal text; '1/3' is allowed), normalised to sum to
exactly 1, so the sampler's arithmetic is exact.

Rows per global batch (`batch_counts`): each source's credit grows by w_s x B per batch; it takes floor(credit)
rows, and the rows left go to the largest fractional credits (ties: the earlier source). So a batch holds
exactly w_s x B rows of source s where that is an integer, and otherwise within one row of it, with the count
after any number of batches of one stage within one row of w_s x rows (the credit stays in (-1, 1)).

Errors are `MixtureError` (a ValueError) naming the field and the fix; the config layer turns them into
ConfigError at load time (scaling/config/mixture.py).
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction

NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_\-]*$')
SUM_TOLERANCE = Fraction(1, 10**6)


class MixtureError(ValueError):
  """A mixture setting that cannot work; the message names the field and the fix."""


def check_sources(mixture) -> dict[str, str]:
  """data.mixture as {name: spec} (its order kept); MixtureError for a bad name or spec."""
  if not hasattr(mixture, 'items'):
    raise MixtureError(f"data.mixture must map source names to corpus specs, e.g. {{'linux': 'prose:linux', "
                       f"'kjv': 'prose:kjv'}}, got {mixture!r}")
  out = {}
  for name, spec in mixture.items():
    if not NAME_RE.match(str(name)):
      raise MixtureError(f'data.mixture: source name {name!r} must be letters, digits, "_" or "-" (it names the '
                         f'metrics train/<name>/loss and eval/<name>/bpb)')
    if not isinstance(spec, str) or not spec.strip() or spec.strip().endswith('?'):
      raise MixtureError(f"data.mixture.{name} must be a corpus spec (any data.corpus form: 'prose:linux', "
                         f"'/data/web/*.jsonl', 'hf:NAME'), got {spec!r}")
    out[str(name)] = spec.strip()
  if len(out) < 1:
    raise MixtureError('data.mixture is empty')
  return out


def _number(text: str, field: str, name: str) -> Fraction:
  try:
    w = Fraction(text.strip())
  except (ValueError, ZeroDivisionError):
    raise MixtureError(f'{field}: the weight of {name!r} is {text!r}, not a number (write name=0.25 or '
                       f'name=1/3)') from None
  if w < 0:
    raise MixtureError(f'{field}: the weight of {name!r} is {text.strip()}, below 0; weights are proportions '
                       f'in [0, 1] (0 leaves the source out)')
  return w


def parse_weights(text: str, names, field: str = 'data.mixture_weights') -> dict[str, Fraction]:
  """'a=0.7,b=0.3' -> {name: Fraction} in the order of `names`, summing to exactly 1.

  Every source of `names` must be given once; an unknown name, a weight below 0, or a sum off 1 by more than
  1e-6 is a MixtureError naming the fix. The weights are then divided by their sum (exactly 1)."""
  names = list(names)
  example = ','.join(f'{n}={Fraction(1, len(names)) if len(names) != 2 else "0.5"}' for n in names)
  if not isinstance(text, str) or not text.strip():
    raise MixtureError(f'{field} is empty: give one weight per source of data.mixture, e.g. {field}={example}')
  got: dict[str, Fraction] = {}
  for item in text.split(','):
    name, eq, value = item.partition('=')
    name = name.strip()
    if not eq or not name:
      raise MixtureError(f'{field}={text!r}: each item is name=weight, e.g. {example}')
    if name not in names:
      raise MixtureError(f'{field}: unknown source {name!r}; the sources of data.mixture are '
                         f'{", ".join(names)} (add it to data.mixture, or fix the name)')
    if name in got:
      raise MixtureError(f'{field}: source {name!r} is given twice')
    got[name] = _number(value, field, name)
  missing = [n for n in names if n not in got]
  if missing:
    raise MixtureError(f'{field} gives no weight for {", ".join(missing)}: give every source of data.mixture a '
                       f'weight (0 leaves one out), e.g. {example}')
  total = sum(got.values())
  if abs(total - 1) > SUM_TOLERANCE:
    raise MixtureError(f'{field}={text!r} sums to {float(total):.6g}, not 1: make the weights sum to 1 '
                       f'(e.g. {example}; fractions such as 1/3 are exact)')
  return {n: got[n] / total for n in names}


@dataclasses.dataclass(frozen=True)
class Plan:
  """The weights of every step: `base` from step 0, then each stage's from its step on."""
  names: tuple[str, ...]
  base: dict
  stages: tuple = ()   # ((step, weights), ...), steps increasing

  def weights_at(self, step: int) -> dict[str, Fraction]:
    w = self.base
    for start, weights in self.stages:
      if start <= step:
        w = weights
    return w

  def stage_steps(self) -> tuple[int, ...]:
    return tuple(s for s, _ in self.stages)


def parse_stages(text: str, names, total_steps: int | None = None) -> tuple:
  """'600:a=0.2,b=0.8;900:a=0.5,b=0.5' -> ((600, weights), (900, weights)); '' -> ().

  Steps must be increasing integers >= 1 (and below the run's total steps when given)."""
  if not text or not str(text).strip():
    return ()
  out, last = [], 0
  for part in str(text).split(';'):
    if not part.strip():
      continue
    step_text, colon, weights = part.partition(':')
    field = f'data.mixture_stages (stage {step_text.strip()!r})'
    if not colon or not step_text.strip().isdigit():
      raise MixtureError(f'data.mixture_stages={text!r}: each stage is STEP:name=weight,..., stages separated by '
                         f"';', e.g. '600:{','.join(f'{n}=...' for n in names)}'")
    step = int(step_text)
    if step <= last:
      raise MixtureError(f'data.mixture_stages: stage steps must increase and be >= 1 (the weights of step 0 are '
                         f'data.mixture_weights); got {step} after {last}')
    if total_steps is not None and step >= total_steps:
      raise MixtureError(f'data.mixture_stages: a stage at step {step} never starts (the run has {total_steps} '
                         f'steps); move it below {total_steps} or lengthen the run')
    out.append((step, parse_weights(weights, names, field)))
    last = step
  return tuple(out)


def make_plan(mixture, weights: str, stages: str = '', total_steps: int | None = None) -> Plan:
  names = tuple(check_sources(mixture))
  return Plan(names, parse_weights(weights, names), parse_stages(stages, names, total_steps))


def batch_counts(weights: dict[str, Fraction], rows: int, credit: dict[str, Fraction]) -> tuple[dict, dict]:
  """(rows per source of one global batch of `rows` rows, the credit after it); see the module docstring."""
  names = list(weights)
  c = {n: credit.get(n, Fraction(0)) + weights[n] * rows for n in names}
  counts = {n: int(c[n] // 1) for n in names}
  left = rows - sum(counts.values())
  order = sorted(names, key=lambda n: (-(c[n] - counts[n]), names.index(n)))
  for n in order[:max(left, 0)]:
    counts[n] += 1
  return counts, {n: c[n] - counts[n] for n in names}


def demand(plan: Plan, rows: int, start: int, end: int, credit: dict | None = None,
           weights_now: dict | None = None) -> dict[str, int]:
  """The most rows each source can give to the batches of steps [start, end): per stretch of n steps under one
  set of weights, ceil(w x rows x n) (the count is w x rows x n minus a credit in (-1, 1)), plus one for a credit
  carried in (a resume in the middle of a stage)."""
  total = {n: 0 for n in plan.names}
  bounds = sorted({start, end, *(s for s in plan.stage_steps() if start < s < end)})
  for a, b in zip(bounds, bounds[1:]):
    w = plan.weights_at(a)
    carried = credit if (a == start and credit and w == weights_now) else {}
    for n in plan.names:
      x = w[n] * rows * (b - a) + max(carried.get(n, Fraction(0)), Fraction(0))
      total[n] += -(-x.numerator // x.denominator)
  return total


def format_weights(weights: dict) -> str:
  """{'a': Fraction(7, 10), ...} -> 'a=0.7,b=0.3' (exact fractions where the decimal would not be)."""
  def one(w):
    w = Fraction(w)
    f = float(w)
    return repr(f) if Fraction(repr(f)) == w else f'{w.numerator}/{w.denominator}'
  return ','.join(f'{n}={one(w)}' for n, w in weights.items())
