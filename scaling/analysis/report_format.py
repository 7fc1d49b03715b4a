"""Cell formatting for the REPORT.md writers (scaling/analysis/report.py and report_fit.py): numbers, SI suffixes,
wall times, intervals, markdown tables."""

from __future__ import annotations

import math
from typing import Any, Sequence


def _num(v: Any) -> float | None:
  """A finite float, or None for missing / null / NaN / non-numbers."""
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return None
  return float(v) if math.isfinite(v) else None


def _si(v: Any) -> str:
  v = _num(v)
  if v is None:
    return '—'
  v = float(f'{v:.3g}')   # 999,988 -> 1e6 -> '1M', not '1e+03k'
  for div, suffix in ((1e12, 'T'), (1e9, 'B'), (1e6, 'M'), (1e3, 'k')):
    if abs(v) >= div:
      return f'{v / div:.3g}{suffix}'
  return f'{v:.3g}'


def _g(v: Any, spec: str = '.4g') -> str:
  v = _num(v)
  return '—' if v is None else format(v, spec)


def _wall(v: Any) -> str:
  v = _num(v)
  if v is None:
    return '—'
  if v < 120:
    return f'{v:.0f} s'
  if v < 7200:
    return f'{v / 60:.1f} min'
  return f'{v / 3600:.1f} h'


def _cell(v: Any) -> str:
  return str(v).replace('|', '\\|').replace('\n', ' ')


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_cell(c) for c in r) + ' |' for r in rows]
  return lines


def _rng(ci) -> str:
  return f'({ci[0]:.3g} – {ci[1]:.3g})' if ci and None not in ci else '(no interval)'


def as_interval(v: Any) -> list[float] | None:
  """[lo, hi] from a fit.json interval in any of its spellings: a 2-list, {lo, hi} / {low, high}, or a dict holding
  one under ci / interval; None when there is none."""
  if isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) is not None for x in v):
    return [float(v[0]), float(v[1])]
  if isinstance(v, dict):
    for lo, hi in (('lo', 'hi'), ('low', 'high'), ('lower', 'upper')):
      if _num(v.get(lo)) is not None and _num(v.get(hi)) is not None:
        return [float(v[lo]), float(v[hi])]
    for k in ('ci', 'interval'):
      if k in v:
        return as_interval(v[k])
  return None


def pick(d: Any, *names: str) -> Any:
  """The first of `names` that d (a dict) holds with a value that is not None; None otherwise."""
  if not isinstance(d, dict):
    return None
  for n in names:
    if d.get(n) is not None:
      return d[n]
  return None


def interval_text(v) -> str | None:
  """An interval as 'lo – hi' from any of its spellings (as_interval's, or a 2-list whose open end is null or
  infinite: '−∞' / '+∞'), with its state when a record gives one that is not 'identified'; None without one."""
  raw = v
  if isinstance(v, dict):
    raw = v.get('ci', v.get('interval'))
    raw = as_interval(v) if raw is None else raw
  if not isinstance(raw, (list, tuple)) or len(raw) != 2 or not all(
      x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in raw):
    return None
  lo, hi = (_num(x) for x in raw)
  text = f'{"−∞" if lo is None else format(lo, ".3g")} – {"+∞" if hi is None else format(hi, ".3g")}'
  state = v.get('state') if isinstance(v, dict) else None
  return text + (f' ({state})' if state and state != 'identified' else '')
