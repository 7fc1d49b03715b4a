"""`scaling train-packed`: train K runs that differ only in packable scalars as one packed run.

    scaling train-packed --members members.json [--members_axis data]
    scaling train-packed --config SPEC --workdir ROOT --vary train.lr=1e-3,2e-3,4e-3 [--vary train.init_seed=0,1]

members.json is a list of {"workdir": DIR, "config": SPEC, "overrides": {"train.lr": "0.002", ...}} (what
`scaling sweep` writes for a group it packs). With --vary, the members are every combination of the values
given, in ROOT/member-<i> (their overrides in ROOT/members.json, so the same command resumes them). Each
member's workdir is a complete run: `scaling eval/sample/export --workdir` open it. Cooldown branches pack when
they fork at one step: each member's train.init_from names its own parent ('../<parent>:STEP', taken from the
member's workdir), and each starts from that parent's checkpoint as `scaling train` would start it.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import sys

HELP = 'train runs that differ only in lr, Adam scalars, weight decay or init seed as one packed run'


def add_args(p) -> None:
  p.add_argument('--members', default=None, help='JSON list of {"workdir", "config", "overrides"}')
  p.add_argument('--workdir', default=None, help='with --vary: the root of the members\' workdirs')
  p.add_argument('--vary', action='append', default=[],
                 help='FIELD=v1,v2,...: members over these values (repeat for a grid); packable fields only')
  p.add_argument('--members_axis', default=None,
                 help='mesh axis to split the members over (e.g. data); default: every device holds every member')
  p.add_argument('--layout', default='vmap', choices=('vmap', 'loop'),
                 help='vmap: one batched step; loop: the members one after another in one program (on 2 CPU '
                      'cores -6%% to +23%% tokens/s per member at d_model 32-128, and a compile that grows with K: '
                      'BENCHMARKS.md)')


def _from_vary(args, overrides) -> list[dict]:
  from scaling.config.pack import PACKABLE
  if not args.workdir:
    raise SystemExit('error: --vary needs --workdir ROOT (the members go into ROOT/member-<i>)')
  axes = []
  for spec in args.vary:
    key, sep, values = spec.partition('=')
    if not sep or not values:
      raise SystemExit(f'error: --vary {spec!r}: write FIELD=v1,v2,... (e.g. train.lr=1e-3,2e-3)')
    if key not in PACKABLE:
      raise SystemExit(f'error: --vary {key}: not packable; the packable fields are {", ".join(PACKABLE)}')
    axes.append([(key, v) for v in values.split(',')])
  root = pathlib.Path(args.workdir)
  members = []
  for i, combo in enumerate(itertools.product(*axes)):
    members.append(dict(workdir=str(root / f'member-{i}'), config=args.config, overrides=dict(overrides, **dict(combo))))
  return members


def run(args, overrides) -> int:
  from scaling.config.load import ConfigError, load_config
  if bool(args.members) == bool(args.vary):
    print('error: give --members FILE or --vary FIELD=v1,v2 (with --config and --workdir)', file=sys.stderr)
    return 2
  if args.members:
    members = json.loads(pathlib.Path(args.members).read_text())
  else:
    members = _from_vary(args, overrides)
  try:
    cfgs = [load_config(m.get('config'), {k: str(v) for k, v in (m.get('overrides') or {}).items()}) for m in members]
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.vary:
    root = pathlib.Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    (root / 'members.json').write_text(json.dumps(members, indent=1) + '\n')
  from scaling.train.packed_loop import train_packed
  try:
    result = train_packed(cfgs, [m['workdir'] for m in members], members_axis=args.members_axis,
                          layout=args.layout)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for m, r in zip(members, result['members']):
    print(f'member {m["workdir"]}: {r.get("state")} at step {r.get("step")}, eval bpb {r.get("eval/bpb")}')
  return result['exit_code']
