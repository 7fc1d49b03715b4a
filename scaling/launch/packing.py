"""Packing a sweep's runs: runs that differ only in packable scalars train together in one process.

`scaling train-packed --members FILE.json` (scaling/train/packed_loop.py) trains K runs whose configs
differ only in the fields of `scaling.config.pack.PACKABLE` (name, lr, min_lr_ratio, Adam's b1/b2/eps,
weight decay, init seed) in one vmapped step; each member's workdir ends up exactly like a single run's.
The local backend groups a sweep's runs with `group_runs` and starts each group of two or more as one
such process (scaling/launch/local.py); `scaling sweep --no-pack` turns it off.

Grouping. Runs are grouped when their resolved configs have the same `pack_key` (all the runs of a sweep
share its resources), in sweep order, into groups of at most `member_limit` runs; a group of one is a normal
run. Cooldown branches (scaling/launch/sweep.py `branches`) group with the branches that fork at the same step
with the same decay, each from its own parent (pack_key holds train.init_from's fork step, not the parent's
hash): the IsoFLOP study's learning-rate arms, whose constant-lr parents pack together, give one group of
branches per budget. A group of branches starts once every member's parent has its checkpoint of the fork
step (scaling/launch/local.py `_pop_ready`); a branch whose init_from names no step trains alone. The limit is
resources['pack_max_members'] (default 8), further capped by memory: K members take K times one run's
training memory (scaling/model/accounting.py train_step_memory_bytes: float32 params, gradients and
Adam moments, plus the activations of a step), which must stay under half the host's memory.

Files. A group that starts writes ROOT/packs/<id>.json (the members: {"workdir", "config", "overrides"},
the `--config SPEC --config.k=v` each would get from `scaling train`) and its output goes to
ROOT/packs/<id>.log; each member's train.log gets a line pointing there. <id> is a hash of the members'
run hashes, so the same group started again writes the same files.

The command: $SCALING_TRAIN_PACKED_CMD; else $SCALING_TRAIN_CMD with its last word `train` read as
`train-packed` (a $SCALING_TRAIN_CMD that does not end in `train` turns packing off: that trainer may not
know how); else `python -m scaling train-packed`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys

from scaling.base.files import sha256_bytes
from scaling.base.names import EXIT_DIVERGED
from scaling.launch.record import outcome_of_exit
from scaling.launch.sweep import LaunchError

DEFAULT_MAX_MEMBERS = 8
PACKS_DIR = 'packs'     # ROOT/packs/<id>.json (members) and <id>.log (the process's output)


@dataclasses.dataclass
class Pack:
  """Runs of a sweep that train together in one `scaling train-packed` process."""
  runs: list             # sweep.Run, in sweep order
  limit: int = 0         # the member limit that applied
  why: str = ''          # where that limit came from (for --dry-run)

  @property
  def id(self) -> str:
    return 'pack-' + sha256_bytes(','.join(r.hash for r in self.runs).encode())[:12]

  @property
  def hashes(self) -> list[str]:
    return [r.hash for r in self.runs]

  @property
  def fork_step(self) -> int | None:
    """The step its cooldown branches fork at (None: no branches)."""
    return self.runs[0].fork_step if getattr(self.runs[0], 'parent', None) is not None else None

  @property
  def label(self) -> str:
    return f'{len(self.runs)} runs: ' + ', '.join(f'{r.hash} ({r.label})' for r in self.runs)


# --------------------------------------------------------------------------------------------------
# Grouping (jax-free, no file is touched).


def host_memory_bytes() -> int | None:
  """This machine's physical memory (None where sysconf cannot tell)."""
  try:
    return int(os.sysconf('SC_PAGE_SIZE')) * int(os.sysconf('SC_PHYS_PAGES'))
  except (ValueError, OSError, AttributeError):
    return None


def max_members(resources: dict) -> int:
  """resources['pack_max_members'] (default 8), checked: an integer >= 1."""
  k = resources.get('pack_max_members', DEFAULT_MAX_MEMBERS)
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise LaunchError(f"resources['pack_max_members'] must be an integer >= 1 (1: never pack), got {k!r}; set it "
                      f"in get_resources() or with --resource pack_max_members=N")
  return k


def _size(n: float) -> str:
  for unit, scale in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
    if n >= scale:
      return f'{n / scale:.3g} {unit}'
  return f'{int(n)} B'


def member_limit(cfg, resources: dict, host_bytes: int | None) -> tuple[int, str]:
  """(the most members of one group of runs like `cfg`, why): pack_max_members, capped by half the host memory."""
  from scaling.model.accounting import train_step_memory_bytes
  k = max_members(resources)
  why = f'pack_max_members={k}' + ('' if 'pack_max_members' in resources else ' (default)')
  if not host_bytes:
    return k, why + '; host memory unknown, not capped by it'
  per = train_step_memory_bytes(cfg)['total']
  fit = max(int(host_bytes // 2 // max(per, 1)), 1)
  mem = f'half of the {_size(host_bytes)} host memory holds {fit} member(s) of {_size(per)}'
  if fit < k:
    return fit, f'memory: {mem} (pack_max_members={k})'
  return k, f'{why}; {mem}'


def unpackable(run) -> str | None:
  """Why `run` trains alone whatever the others are (None: it may be packed)."""
  from scaling.config.pack import fork_step
  if fork_step(run.config.train.get('init_from', '')) == -1:
    return "a cooldown branch from its parent's latest checkpoint (train.init_from names no step)"
  if len(run.config.data.get('mixture', None) or {}):
    return 'a data mixture (data.mixture: its own loader and per-source metrics)'
  if (run.config.train.get('batch_schedule', '') or '').strip():
    return 'a batch schedule (train.batch_schedule: the batch changes during the run)'
  return None


def group_runs(runs: list, resources: dict, host_bytes: int | None = None) -> list:
  """The runs as units to start, in sweep order: a Pack for each group of two or more, else the Run itself.

  A unit stands where its first run stood in the sweep. See the module docstring for the rule.
  """
  from scaling.config.pack import pack_key
  open_groups: dict[str, Pack] = {}
  units: list = []
  for run in runs:
    if unpackable(run):
      units.append(run)
      continue
    key = pack_key(run.config)
    g = open_groups.get(key)
    if g is None or len(g.runs) >= g.limit:
      limit, why = member_limit(run.config, resources, host_bytes)
      g = open_groups[key] = Pack([], limit, why)
      units.append(g)
    g.runs.append(run)
  return [u.runs[0] if isinstance(u, Pack) and len(u.runs) == 1 else u for u in units]


# --------------------------------------------------------------------------------------------------
# Starting a group and reading its members' outcomes.


def packed_prefix() -> tuple[list[str] | None, str]:
  """(the `scaling train-packed` command prefix, '') or (None, why packing is off); see the module docstring."""
  env = os.environ.get('SCALING_TRAIN_PACKED_CMD', '').strip()
  if env:
    return shlex.split(env), ''
  train = os.environ.get('SCALING_TRAIN_CMD', '').strip()
  if not train:
    return [sys.executable, '-m', 'scaling', 'train-packed'], ''
  words = shlex.split(train)
  if words and words[-1] == 'train':
    return words[:-1] + ['train-packed'], ''
  return None, ('$SCALING_TRAIN_CMD does not end in `train`, so its train-packed command is unknown; set '
                '$SCALING_TRAIN_PACKED_CMD to pack')


def members_json(pack: Pack, root) -> list[dict]:
  """The --members list of `scaling train-packed`: what `scaling train` of each run would get."""
  from scaling.launch.rundir import RunDir
  return [{'workdir': str(RunDir(root, r.hash).path), 'config': r.spec, 'overrides': dict(r.flags)}
          for r in pack.runs]


def members_text(pack: Pack, root) -> str:
  """members_json as the text of ROOT/packs/<id>.json (one member a line)."""
  return '[\n' + ',\n'.join(json.dumps(m, sort_keys=True) for m in members_json(pack, root)) + '\n]\n'


def member_outcome(rd, rc: int, since: float) -> tuple[str, int | None]:
  """(outcome, exit code) of one member of a group that exited with `rc`: its own summary.json when there is
  one (done: done; diverged, written since `since` (epoch seconds): failed with exit 3), else the group's code
  (75: preempted, every member checkpointed; anything else: failed)."""
  if rd.summary() is not None:
    return 'done', 0
  try:
    p = rd.path / 'summary.json'
    summ = json.loads(p.read_text())
    if summ.get('state') == 'diverged' and p.stat().st_mtime >= since - 1:
      return 'failed', int(summ.get('exit_code') or EXIT_DIVERGED)
  except (OSError, ValueError, AttributeError):
    pass
  return outcome_of_exit(rc, False), rc
