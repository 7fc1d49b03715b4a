"""`scaling runs DIR`: the runs under a directory (a sweep root, a workdir, any tree of workdirs), one line each:
state, step of total, final train and eval loss, tokens, wall time (scaling/analysis/runs_table.py; jax-free)."""

from __future__ import annotations

import json
import sys


def add_args(p) -> None:
  p.add_argument('dir', metavar='DIR', help='a sweep root, a workdir, or a directory holding workdirs')
  p.add_argument('--json', action='store_true', help='one JSON object per run (JSON lines) instead of the table')


def run(args) -> int:
  from scaling.analysis.runs_table import format_rows, runs_rows
  progress = lambda n: print(f'runs: searched {n} directories ...', file=sys.stderr, flush=True)  # noqa: E731
  rows = runs_rows(args.dir, progress)
  if not rows:
    print(f'error: no runs under {args.dir}: a run is a directory with config.json (a workdir `scaling train` '
          f'wrote) or run.json (a sweep\'s run); give a sweep root, a workdir or a directory holding them',
          file=sys.stderr)
    return 1
  if args.json:
    for r in rows:
      print(json.dumps(r))
  else:
    print(format_rows(rows))
  return 0
