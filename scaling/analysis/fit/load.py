"""Reading a sweep's `results.jsonl` into fit rows, and the loss metric and parameter-count conventions.

Each row of a finished run becomes {line, run, N, D, C, L, budget, raw}: N from the params column that
--params chooses (PARAM_COLUMNS), L from the metric column (METRICS or a tagged eval set's column).
FitError, raised by every module of the fit, lives here at the bottom of the package.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Callable


class FitError(ValueError):
  """The data cannot support the requested fit, or a results row is malformed."""


METRICS = ('eval/bpb', 'eval/loss', 'train/loss')


def is_metric(name: str) -> bool:
  """One of METRICS, or eval/<tag>/bpb | eval/<tag>/loss of a tagged eval set (scaling/train/evalsets.py)."""
  parts = str(name).split('/')
  return name in METRICS or (len(parts) == 3 and parts[0] == 'eval' and bool(parts[1]) and parts[2] in ('bpb', 'loss'))


PARAM_COLUMNS = {'non_embedding': 'non_embedding_params', 'total': 'params'}
BUDGET_KEYS = ('budget', 'flops_budget', 'compute_budget')


def override_value(overrides: dict, key: str) -> Any:
  """A config value ('model.d_model') from a results row's overrides: the dotted key (also under any prefix,
  '<...>.model.d_model') or nested ({'model': {'d_model': ...}}); None when the row does not set it."""
  for k, v in overrides.items():
    if k == key or str(k).endswith(f'.{key}'):
      return v
  section, name = key.split('.', 1)
  sub = overrides.get(section)
  return sub.get(name) if isinstance(sub, dict) else None


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _find_budget(row: dict) -> Any:
  """An explicit compute budget: a top-level column or an overrides key (dotted or not)."""
  for k in BUDGET_KEYS:
    if k in row and row[k] is not None:
      return k, row[k]
  overrides = row.get('overrides')
  if isinstance(overrides, dict):
    for k, v in overrides.items():
      if str(k).rsplit('.', 1)[-1] in BUDGET_KEYS and v is not None:
        return f'overrides[{k!r}]', v
  return None, None


def _check_positive(lineno: int, column: str, v: Any) -> float:
  if v is None:
    raise FitError(f'line {lineno}: column {column!r} is null; the run has no value for it')
  if not _is_number(v):
    raise FitError(f'line {lineno}: column {column!r} is not a number (got {v!r})')
  v = float(v)
  if math.isnan(v):
    raise FitError(f'line {lineno}: column {column!r} is NaN (diverged or unfinished run?)')
  if math.isinf(v):
    raise FitError(f'line {lineno}: column {column!r} is infinite')
  if v <= 0:
    raise FitError(f'line {lineno}: column {column!r} must be > 0 (got {v!r})')
  return v


def _parse_row(lineno: int, raw: dict, metric: str, n_column: str) -> dict:
  for column in (n_column, 'tokens', 'flops', metric):
    if column not in raw:
      raise FitError(f'line {lineno}: missing column {column!r} (run {raw.get("run")!r}); '
                     'rerun `scaling sweep collect` or pass --skip_bad')
  row = {
      'line': lineno,
      'run': str(raw.get('run', f'line{lineno}')),
      'N': _check_positive(lineno, n_column, raw[n_column]),
      'D': _check_positive(lineno, 'tokens', raw['tokens']),
      'C': _check_positive(lineno, 'flops', raw['flops']),
      'L': _check_positive(lineno, metric, raw[metric]),
      'budget': None,
      'raw': raw,
  }
  key, budget = _find_budget(raw)
  if key is not None:
    row['budget'] = _check_positive(lineno, key, budget)
  return row


def load_results(path: str, metric: str = 'eval/bpb', *, params: str = 'non_embedding',
                 skip_bad: bool = False, notes: list[str] | None = None,
                 keep: Callable[[dict], bool] | None = None) -> list[dict]:
  """Reads `results.jsonl` into rows {line, run, N, D, C, L, budget, raw} of finished runs.

  Rows whose 'state' is not 'done' are left out with a note. A malformed row (bad JSON,
  missing column, NaN loss, non-positive N/D/C) raises FitError naming its line and column;
  with skip_bad=True it is left out with a warning instead.
  """
  if params not in PARAM_COLUMNS:
    raise FitError(f'params must be one of {sorted(PARAM_COLUMNS)}, got {params!r}')
  n_column = PARAM_COLUMNS[params]
  notes = [] if notes is None else notes
  if not os.path.isfile(path):
    raise FitError(f'results file not found: {path}; run `scaling sweep collect` first')
  rows, not_done, bad = [], {}, []
  n_dropped = 0
  with open(path, encoding='utf-8') as f:
    for lineno, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        try:
          raw = json.loads(text)
        except json.JSONDecodeError as e:
          raise FitError(f'line {lineno}: not valid JSON ({e.msg} at column {e.colno})') from None
        if not isinstance(raw, dict):
          raise FitError(f'line {lineno}: expected a JSON object, got {type(raw).__name__}')
        if keep is not None and not keep(raw):
          n_dropped += 1
          continue
        if 'state' not in raw:
          raise FitError(f'line {lineno}: missing column \'state\' (run {raw.get("run")!r})')
        if raw['state'] != 'done':
          not_done.setdefault(str(raw['state']), []).append(str(raw.get('run', lineno)))
          continue
        rows.append(_parse_row(lineno, raw, metric, n_column))
      except FitError as e:
        if not skip_bad:
          raise FitError(f'{path}: {e}') from None
        bad.append(str(e))
        warnings.warn(f'{path}: skipping bad row: {e}', stacklevel=2)
  if n_dropped:
    notes.append(f'left out {n_dropped} row(s) not selected for the fit')
  for state, runs in sorted(not_done.items()):
    shown = ', '.join(runs[:5]) + (', ...' if len(runs) > 5 else '')
    notes.append(f'ignored {len(runs)} row(s) with state {state!r}: {shown}')
  for msg in bad:
    notes.append(f'skipped bad row: {msg}')
  return rows
