"""`scaling plot --workdir W | --root R`: a run's train/eval loss and lr against tokens (W/loss.png), or every run
of a sweep root (R/curves.png); scaling/analysis/run_plot.py draws them (matplotlib; no jax)."""

from __future__ import annotations

import json


def add_args(p) -> None:
  g = p.add_mutually_exclusive_group(required=True)
  g.add_argument('--workdir', help="a run's workdir: loss and lr against tokens -> W/loss.png")
  g.add_argument('--root', help='a sweep root (or a directory of workdirs): every run\'s loss -> R/curves.png')
  p.add_argument('--out', default=None, help='the PNG to write (default W/loss.png or R/curves.png)')
  p.add_argument('--json', action='store_true', help='also print what was drawn (each line\'s label and points)')


def run(args) -> int:
  from scaling.analysis.run_plot import plot_run, plot_sweep
  r = plot_run(args.workdir, args.out) if args.workdir else plot_sweep(args.root, args.out)
  if args.json:
    print(json.dumps(r))
  else:
    lines = sum(len(a['lines']) for a in r['axes'])
    extra = f' ({len(r["runs"])} runs' + (f', {len(r["skipped"])} without a loss yet)' if r['skipped'] else ')') \
        if 'runs' in r else f' (lr: {r["lr_source"] or "none"})'
    print(f'wrote {r["out"]}: {lines} line(s){extra}')
  return 0
