"""`scaling table`: the scale table of the ladder (parameters, FLOPs, tokens, memory, time); jax only with --topology
or --targets.

    scaling table [--rungs 125m,1b] [--json]
    scaling table --topology v5p-32          # each rung compiled as configured on the slice (fits, bytes, est. step)
    scaling table --topology auto            # each rung as configured on its recommended target (ladder TARGETS)
    scaling table --targets v5p-8,v5p-16,v5p-32 [--max_candidates 24]
                                             # per rung: the smallest of these on which `scaling plan` finds a fit,
                                             # its planned knobs, GiB per chip of the HBM, est. step and MFU
    scaling table --targets ladder           # the same over the ladder's TARGET_SLICES
"""

from __future__ import annotations

import json

HELP = 'print the scale table (parameters, FLOPs, tokens, memory, time)'


def add_args(p) -> None:
  p.add_argument('--json', action='store_true', help='a JSON list of row objects instead of a table')
  p.add_argument('--mfu', type=float, default=0.4, help='assumed MFU for the wall-clock estimate')
  p.add_argument('--rungs', default='', help='comma-separated ladder rungs (default: all)')
  p.add_argument('--topology', default='', help='also compile each rung for this TPU slice (see `scaling compile`); '
                 "'auto': each rung on its recommended target (scaling/model/ladder.py TARGETS)")
  p.add_argument('--num_slices', type=int, default=1, help='with --topology / --targets: number of slices')
  p.add_argument('--targets', default='', help='per rung, plan (`scaling plan`, cached) on these slices smallest '
                 "first until one fits: comma-separated (v5p-8,v5p-16,v5p-32) or 'ladder' (the ladder's TARGET_SLICES)")
  p.add_argument('--max_candidates', type=int, default=24, help='with --targets: at most this many per plan')
  p.add_argument('--no_refine', action='store_true', help="with --targets: skip the winners' loss_chunk / block "
                 'size variants')
  p.add_argument('--hbm_gib', type=float, default=0.0, help="with --targets: fit against this many GiB per chip")
  p.add_argument('--cache_dir', default=None, help='with --targets: cache of plan candidates '
                 '(default ~/.cache/scaling/plan)')


def _ladder(rungs: str):
  from scaling.config.load import load_module, split_spec
  path, _ = split_spec('ladder.py')
  mod = load_module(path)
  return path, mod, (rungs.split(',') if rungs else list(mod.RUNGS))


def run(args, overrides) -> int:
  from scaling.config.load import ConfigError, load_config
  from scaling.model import accounting
  mod = None
  if args.config:
    named = [(args.config, load_config(args.config, overrides))]
  else:
    path, mod, names = _ladder(args.rungs)
    named = [(r, load_config(f'{path}:{r}', overrides)) for r in names]
  rows = [accounting.table_row(name, cfg.model, mfu=args.mfu) for name, cfg in named]
  if args.topology and args.targets:
    raise ConfigError('--topology and --targets: choose one')
  if args.targets:   # plan each rung on the listed slices (scaling/train/plan_targets.py)
    from scaling.train import aot_cli
    targets = args.targets
    if targets == 'ladder':
      targets = list((mod or _ladder('')[1]).TARGET_SLICES)
    rows = aot_cli.add_target_columns(rows, named, targets, args)
    if args.json:
      print(json.dumps(rows, indent=1))
    else:
      from scaling.train.plan_targets import format_target_table
      print(format_target_table(rows))
    return 0 if all(r['fits'] for r in rows) else 1   # 1: a rung fits none of the targets
  elif args.topology:   # compile each rung for the slice (scaling/train/aot_cli.py)
    from scaling.train.aot_cli import add_topology_columns
    topology = args.topology
    if topology == 'auto':
      if mod is None:
        raise ConfigError('--topology auto: the recommended targets are the ladder\'s; leave out --config')
      missing = [name for name, _ in named if name not in mod.TARGETS]
      if missing:
        raise ConfigError(f'--topology auto: no recommended target for {", ".join(missing)} '
                          f'(scaling/model/ladder.py TARGETS has {", ".join(mod.TARGETS)})')
      topology = [mod.TARGETS[name] for name, _ in named]
    add_topology_columns(rows, named, topology, args.num_slices)
  if args.json:
    print(json.dumps(rows, indent=1))
  elif args.topology == 'auto':   # one target per rung, named in its note: the header says "fits target"
    print(accounting.format_table([dict(r, topology='target') for r in rows]))
  else:
    print(accounting.format_table(rows))
  return 0
