"""`scaling table`: the scale table of the ladder (parameters, FLOPs, tokens, memory, time); jax only with --topology."""

from __future__ import annotations

import json

HELP = 'print the scale table (parameters, FLOPs, tokens, memory, time)'


def add_args(p) -> None:
  p.add_argument('--json', action='store_true', help='a JSON list of row objects instead of a table')
  p.add_argument('--mfu', type=float, default=0.4, help='assumed MFU for the wall-clock estimate')
  p.add_argument('--rungs', default='', help='comma-separated ladder rungs (default: all)')
  p.add_argument('--topology', default='', help='also compile each rung for this TPU slice (see `scaling compile`)')
  p.add_argument('--num_slices', type=int, default=1, help='with --topology: number of slices')


def run(args, overrides) -> int:
  from scaling.config.load import load_config, load_module, split_spec
  from scaling.model import accounting
  if args.config:
    named = [(args.config, load_config(args.config, overrides))]
  else:
    path, _ = split_spec('ladder.py')
    mod = load_module(path)
    names = args.rungs.split(',') if args.rungs else list(mod.RUNGS)
    named = [(r, load_config(f'{path}:{r}', overrides)) for r in names]
  rows = [accounting.table_row(name, cfg.model, mfu=args.mfu) for name, cfg in named]
  if args.topology:   # compile each rung for the slice (scaling/train/aot_cli.py)
    from scaling.train.aot_cli import add_topology_columns
    add_topology_columns(rows, named, args.topology, args.num_slices)
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    print(accounting.format_table(rows))
  return 0
