"""Sweep files: a base config, a list of overrides, and the resources to use.

A sweep file is a config file (`get_config(arg)` returning a ConfigDict, as for
`scaling train`) that also defines

  get_sweep(arg) -> list[dict]      one dict of overrides per run: dotted config
                                    key -> value, e.g. {'train.lr': 1e-3}.
  get_resources(arg) -> dict        optional: where and how big each run is
                                    (see RESOURCE_KEYS; unknown keys are an error).

Each of these may also take no argument. `arg` is the part after ':' in
`--config sweeps/x.py:arg`.

The special override key 'rung' names the base config of that run: a rung of
the model ladder (`'rung': 'nano'` -> `scaling/model/ladder.py:nano`) or any config
spec `'path/to/file.py[:arg]'`. Runs without 'rung' start from the sweep file's
own `get_config(arg)`. All other keys are applied on top with
`scaling.config.load.apply_override`, exactly as `--config.KEY=VALUE` flags would be
(they are passed to `scaling train` as such flags), so an unknown key fails here,
for every run, before anything is written or submitted.

Building the list: `product` (every combination), `zip_` (element-wise) and
`concat` (one after the other) compose axes and whole sub-sweeps; dotted keys
are given in a dict or as keyword arguments with `__` standing for '.':

  product(rung=['nano', '2m'], train__lr=[1e-3, 3e-3])          # 4 runs
  zip_({'rung': ['nano', '2m'], 'train.steps': [200, 400]})     # 2 runs
  concat(product(rung=['nano'], train__seed=[0, 1]), [{'rung': '5m'}])

Cooldown branches: `branches(sizes, budgets, decay_fraction=0.2)` expands into one stable parent
per size (constant lr, checkpoints kept at every fork step) and one WSD decay branch per budget,
each a row with the key 'branch_of' = {'parent': <the parent's overrides>, 'step': <fork step>}.
Loading resolves it to `train.init_from='../<parent hash>:<step>'` (scaling/train/branch.py), so a
branch's hash includes its parent's hash and step; the backends start a branch only once that
checkpoint exists (local/tpu-vm: by waiting; slurm: --dependency on the parent's job; gke: a
later round).

Each run's identity is the hash of its resolved config (`config_hash`): its
directory is ROOT/runs/<hash>, so re-submitting the same sweep finds the same
runs, and editing the sweep only adds runs whose config changed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
from typing import Any, Callable, Iterable, Mapping

from scaling.config import load as config_lib

RUNG_KEY = 'rung'
BRANCH_KEY = 'branch_of'   # {'parent': <the parent run's overrides>, 'step': <fork step>} (see branches())

# What a sweep's get_resources() may set. Backends read the keys they know.
RESOURCE_KEYS = {
    # SLURM
    'nodes': 'number of nodes per run (slurm; default 1)',
    'gpus_per_node': 'GPUs per node (slurm --gpus-per-node; default 0)',
    'processes_per_node': 'processes per node (slurm srun --ntasks-per-node; default 1, or gpus_per_node)',
    'cpus_per_task': 'CPUs per process (slurm --cpus-per-task; default 1)',
    'mem': 'memory per node, e.g. "16G" (slurm --mem)',
    'time': 'time limit, e.g. "01:00:00" (slurm --time)',
    'partition': 'slurm --partition',
    'account': 'slurm --account',
    'qos': 'slurm --qos',
    'constraint': 'slurm --constraint',
    'signal_seconds': 'seconds before the time limit at which SIGTERM asks the run to checkpoint (default 120)',
    'sbatch_args': 'extra sbatch arguments (list of strings)',
    'setup': 'shell lines run before training on every backend (e.g. "module load cuda")',
    # Cloud TPU
    'tpu_type': 'TPU accelerator type, e.g. "v5litepod-16" (tpu-vm, gke)',
    'zone': 'GCP zone (tpu-vm, gke)',
    'project': 'GCP project (tpu-vm, gke)',
    'runtime_version': 'TPU VM image (tpu-vm; default tpu-ubuntu2204-base)',
    'tpu_name': 'TPU VM name prefix (tpu-vm; default scaling-<sweep>)',
    'queued': 'create TPU VMs through queued resources (tpu-vm; default False)',
    'spot': 'spot capacity (tpu-vm)',
    'keep_tpu': 'leave the TPU VMs up after the sweep (tpu-vm; default False)',
    'remote_repo': 'checkout of this repo on the worker (tpu-vm default ~/scaling, gke default /app)',
    'repo_url': 'git URL the TPU VMs clone the project from (tpu-vm; default this checkout\'s remote origin)',
    'repo_commit': 'commit the TPU VMs install (tpu-vm; default this checkout\'s HEAD)',
    'remote_root': 'sweep root as the workers see it (default: the local root path)',
    'train_cmd': 'training command on the workers (tpu-vm, gke; default "python3 -m scaling train")',
    'cluster': 'GKE cluster (gke)',
    'docker_image': 'image with this repo installed (gke)',
    'num_slices': 'TPU slices per run (gke; default 1)',
    'max_restarts': 'xpk --max-restarts: restarts after preemption (gke; default 3)',
    'priority': 'xpk --priority (gke)',
    # Packing (scaling/launch/packing.py)
    'pack_max_members': ('most runs trained together in one `scaling train-packed` process (local; default 8, '
                         '1: never pack); also capped so that the members fit in half the host memory'),
}


class LaunchError(ValueError):
  """Bad sweep input or a missing tool: the message names the problem and the fix."""


# --------------------------------------------------------------------------------------------------
# Building override lists.


def _axes(args: tuple, kwargs: dict) -> list[list[dict]]:
  """Turns positional sub-sweeps / axis dicts and keyword axes into lists of override dicts."""
  groups = []
  for a in args:
    if isinstance(a, Mapping):
      for k, values in a.items():
        groups.append(axis(k, values))
    elif isinstance(a, (list, tuple)):
      rows = list(a)
      for r in rows:
        if not isinstance(r, Mapping):
          raise LaunchError(f'a sub-sweep must be a list of override dicts, got an element {r!r}')
      groups.append([dict(r) for r in rows])
    else:
      raise LaunchError(f'expected a dict of axes or a list of override dicts, got {a!r}')
  for k, values in kwargs.items():
    groups.append(axis(k.replace('__', '.'), values))
  return groups


def axis(key: str, values: Iterable) -> list[dict]:
  """One axis: [{key: v} for v in values]."""
  if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
    raise LaunchError(f'axis {key!r} needs a list of values, got {values!r} (wrap a single value in a list)')
  return [{key: v} for v in values]


def _merge(rows: Iterable[dict]) -> dict:
  out = {}
  for r in rows:
    for k, v in r.items():
      if k in out and out[k] != v:
        raise LaunchError(f'key {k!r} is set twice in one run ({out[k]!r} and {v!r}); '
                          f'each axis of a product/zip must name different keys')
      out[k] = v
  return out


def product(*args, **kwargs) -> list[dict]:
  """Every combination of the axes/sub-sweeps (the first varies slowest)."""
  groups = _axes(args, kwargs)
  return [_merge(combo) for combo in itertools.product(*groups)]


def zip_(*args, **kwargs) -> list[dict]:
  """Element-wise combination; all axes/sub-sweeps must have the same length."""
  groups = _axes(args, kwargs)
  lengths = {len(g) for g in groups}
  if len(lengths) > 1:
    raise LaunchError(f'zip_ needs axes of equal length, got lengths {[len(g) for g in groups]}')
  return [_merge(combo) for combo in zip(*groups)]


def concat(*sweeps: Iterable[dict]) -> list[dict]:
  """The runs of each sub-sweep, one after the other."""
  return [dict(r) for s in sweeps for r in s]


def branches(sizes: Iterable, budgets: Iterable[int], *, decay_fraction: float = 0.2, decay_shape: str = 'linear',
             size_key: str = RUNG_KEY, parent: Mapping | None = None, branch: Mapping | None = None) -> list[dict]:
  """WSD cooldown branches: per size one stable parent, and per budget one decay branch forked from it.

  `sizes`: values of `size_key` (ladder rungs by default) or override dicts; `budgets`: total steps of
  each branch. A budget B decays for d = round(decay_fraction * B) steps from the fork step B - d of the
  parent, which trains at constant lr (train.schedule='constant', the same warmup) up to the last fork
  step, saving a checkpoint at every fork step and keeping all of them (train.ckpt_steps), besides its
  periodic ones (train.ckpt_every, the newest train.keep_checkpoints kept). Each branch is a WSD run of B steps (train.decay_steps = d, decay_shape),
  which starts from the parent's checkpoint (train.init_from, set when the sweep is loaded from the
  parent's hash: '../<parent hash>:<fork step>') and equals a from-scratch WSD run of B steps with the
  same decay. `parent` / `branch` add overrides to the parent rows / branch rows.
  """
  budgets = [int(b) for b in budgets]
  if not budgets or any(b < 2 for b in budgets) or len(set(budgets)) != len(budgets):
    raise LaunchError(f'branches() needs distinct budgets of at least 2 steps, got {budgets}')
  if not 0 < decay_fraction < 1:
    raise LaunchError(f'branches(): decay_fraction must be in (0, 1), got {decay_fraction}')
  decays = {b: max(int(round(decay_fraction * b)), 1) for b in budgets}
  forks = {b: b - decays[b] for b in budgets}
  if min(forks.values()) < 1:
    raise LaunchError(f'branches(): decay_fraction={decay_fraction} leaves no stable steps for budget '
                      f'{min(forks, key=forks.get)}')
  last = max(forks.values())
  rows = []
  for size in sizes:
    base = dict(size) if isinstance(size, Mapping) else {size_key: size}
    p = {**base, 'train.schedule': 'constant', 'train.steps': last,
         'train.ckpt_steps': tuple(sorted(forks.values())), **dict(parent or {})}
    rows.append(p)
    for b in budgets:
      rows.append({**base, 'train.schedule': 'wsd', 'train.steps': b, 'train.decay_steps': decays[b],
                   'train.decay_shape': decay_shape, **dict(branch or {}),
                   BRANCH_KEY: {'parent': dict(p), 'step': forks[b]}})
  return rows


# --------------------------------------------------------------------------------------------------
# Resolving a sweep file into runs.


def format_value(v: Any) -> str:
  """An override value as the text of a `--config.k=TEXT` flag (parsed back by scaling.config.load)."""
  if isinstance(v, bool):
    return 'true' if v else 'false'
  if isinstance(v, (int, float)):
    return repr(v)
  if isinstance(v, (list, tuple)):
    return repr(tuple(v))
  if isinstance(v, str):
    return v
  raise LaunchError(f'override value {v!r} has type {type(v).__name__}; use bool, int, float, str or a tuple')


def _jsonable(v):
  return list(v) if isinstance(v, tuple) else v


@dataclasses.dataclass
class Run:
  """One run of a sweep, resolved: what to train and where its directory is."""
  index: int
  overrides: dict        # as written in the sweep (incl. 'rung'), JSON-able
  spec: str              # config spec given to `scaling train --config` (absolute path[:arg])
  flags: dict            # dotted key -> text, given as --config.KEY=TEXT
  config: Any            # the resolved ConfigDict
  hash: str              # config_hash(config): the run directory's name

  label: str = ''        # short description from the keys that vary across the sweep
  parent: str | None = None      # a cooldown branch: its parent run's hash (train.init_from='../<hash>:<step>')
  fork_step: int | None = None   # ... and the parent's step it starts from

  def flag_list(self) -> list[str]:
    return [f'--config.{k}={v}' for k, v in self.flags.items()]

  def spec_relative(self) -> str:
    """The spec relative to the repo root when inside it (for workers with their own checkout)."""
    path, _, arg = self.spec.partition(':')
    try:
      rel = str(pathlib.Path(path).resolve().relative_to(config_lib.REPO_ROOT))
    except ValueError:
      rel = path
    return rel + (f':{arg}' if arg else '')


@dataclasses.dataclass
class Sweep:
  path: pathlib.Path
  arg: str | None
  runs: list[Run]
  resources: dict

  @property
  def name(self) -> str:
    return self.path.stem + (f'-{self.arg}' if self.arg else '')

  def adopt_existing(self, exists: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Runs with no directory under their hash whose directory exists under their legacy hash (named
    before config.HASH_NEUTRAL, by a version of the code with fewer config fields) take that name, so
    re-submitting continues them; a branch of an adopted parent forks from the parent's directory.
    Returns (hash, adopted legacy hash) pairs."""
    renamed, out = {}, []
    for run in sorted(self.runs, key=lambda r: r.parent is not None):   # parents first
      if run.parent in renamed:
        run.parent = renamed[run.parent]
        run.flags['train.init_from'] = f'../{run.parent}:{run.fork_step}'
        run.config = config_lib.load_config(run.spec, run.flags)
        run.hash = config_lib.config_hash(run.config)
      if exists(run.hash):
        continue
      legacy = config_lib.config_hash(run.config, legacy=True)
      if legacy != run.hash and exists(legacy):
        renamed[run.hash] = legacy
        out.append((run.hash, legacy))
        run.hash = legacy
    return out


def _call(fn, arg):
  """Calls fn(arg), or fn() when it takes no argument."""
  import inspect
  try:
    n = len(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    n = 1
  return fn(arg) if n else fn()


def rung_spec(rung: str) -> str:
  """'nano' -> '<repo>/scaling/model/ladder.py:nano'; a 'file.py[:arg]' spec is resolved as a path."""
  if not isinstance(rung, str) or not rung:
    raise LaunchError(f"'rung' must be a ladder rung name or a config spec 'file.py[:arg]', got {rung!r}")
  name, _, arg = rung.partition(':')
  if name.endswith('.py'):
    path, arg = config_lib.split_spec(rung)
    return str(path.resolve()) + (f':{arg}' if arg else '')
  path, _ = config_lib.split_spec('ladder.py')
  ladder = config_lib.load_module(path)
  names = list(getattr(ladder, 'RUNGS', {}))
  if names and rung not in names:
    raise LaunchError(f'unknown ladder rung {rung!r}; choose one of {", ".join(names)} '
                      f'(or give a config spec such as scaling/config/default.py)')
  return f'{path.resolve()}:{rung}'


def load_sweep(spec: str, extra_overrides: Mapping[str, Any] | None = None) -> Sweep:
  """Loads a sweep file and resolves and validates every run's config.

  Raises LaunchError (or scaling.config.load.ConfigError) naming the run and the
  problem before anything is written. `extra_overrides` (e.g. from
  `--config.train.steps=20` on the sweep command line) apply to every run.
  """
  path, arg = config_lib.split_spec(spec)
  path = path.resolve()
  mod = config_lib.load_module(path)
  if not hasattr(mod, 'get_sweep'):
    raise LaunchError(f'{path} has no get_sweep() function: a sweep file defines get_config(arg) and '
                      f'get_sweep(arg) -> list of override dicts (see scaling/launch/sweep.py)')
  rows = _call(mod.get_sweep, arg)
  if not isinstance(rows, (list, tuple)) or not rows:
    raise LaunchError(f'{path}: get_sweep() must return a non-empty list of override dicts, got {rows!r}')
  resources = dict(_call(mod.get_resources, arg)) if hasattr(mod, 'get_resources') else {}
  unknown = sorted(set(resources) - set(RESOURCE_KEYS))
  if unknown:
    raise LaunchError(f'{path}: unknown resource key(s) {", ".join(unknown)} in get_resources(); '
                      f'known: {", ".join(RESOURCE_KEYS)}')
  own_spec = str(path) + (f':{arg}' if arg else '')

  for i, row in enumerate(rows):
    if not isinstance(row, Mapping):
      raise LaunchError(f'{path}: run {i} of get_sweep() is {row!r}, not a dict of overrides')
  rows = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
  resolved, seen, by_row = {}, {}, {}
  # parents (plain runs) first, then branches, whose train.init_from names their parent's hash
  for i in sorted(range(len(rows)), key=lambda i: BRANCH_KEY in rows[i]):
    run = _resolve_run(path, i, rows[i], own_spec, extra_overrides, by_row)
    if run.hash in seen:
      raise LaunchError(f'{path}: runs {seen[run.hash]} and {i} resolve to the same config ({rows[i]}); '
                        f'remove the duplicate or make them differ (e.g. train.seed)')
    seen[run.hash] = i
    resolved[i] = run
    by_row.setdefault(_row_key(rows[i]), run)
  runs = [resolved[i] for i in range(len(rows))]
  varying = [k for k in dict.fromkeys(k for r in runs for k in r.overrides)
             if len({json.dumps(r.overrides.get(k), sort_keys=True) for r in runs}) > 1]
  for r in runs:
    r.label = make_label(r.overrides, varying if len(runs) > 1 else list(r.overrides))
  return Sweep(path=path, arg=arg, runs=runs, resources=resources)


def _row_key(row: Mapping) -> str:
  return json.dumps({k: _jsonable(v) for k, v in row.items()}, sort_keys=True, default=str)


def _resolve_run(path, i: int, row: dict, own_spec: str, extra_overrides, by_row: dict) -> Run:
  """One row of get_sweep() resolved into a Run; a branch row's parent must be among `by_row` (resolved)."""
  parent = step = None
  try:
    run_spec = rung_spec(row[RUNG_KEY]) if RUNG_KEY in row else own_spec
    flags = {k: format_value(v) for k, v in row.items() if k not in (RUNG_KEY, BRANCH_KEY)}
    if BRANCH_KEY in row:
      parent, step = _branch_parent(row[BRANCH_KEY], by_row)
      flags['train.init_from'] = f'../{parent}:{step}'
    for k, v in (extra_overrides or {}).items():
      flags[k] = format_value(v)
    cfg = config_lib.load_config(run_spec, flags)
  except (config_lib.ConfigError, LaunchError, ValueError) as e:
    raise LaunchError(f'{path}: run {i} {row}: {e}') from None
  return Run(index=i, overrides=row, spec=run_spec, flags=flags, config=cfg, hash=config_lib.config_hash(cfg),
             parent=parent, fork_step=step)


def _branch_parent(spec, by_row: dict) -> tuple[str, int]:
  """(parent hash, fork step) of a branch row's {'parent': overrides, 'step': n}."""
  if not isinstance(spec, Mapping) or set(spec) != {'parent', 'step'} or not isinstance(spec['parent'], Mapping):
    raise LaunchError(f"{BRANCH_KEY!r} must be {{'parent': <the parent run's overrides>, 'step': <fork step>}} "
                      f"(see scaling.launch.sweep.branches), got {spec!r}")
  step = spec['step']
  if isinstance(step, bool) or not isinstance(step, int) or step < 1:
    raise LaunchError(f'{BRANCH_KEY!r}: the fork step must be an integer >= 1, got {step!r}')
  if BRANCH_KEY in spec['parent']:
    raise LaunchError(f'{BRANCH_KEY!r}: the parent is itself a branch; fork branches from a plain run')
  run = by_row.get(_row_key(spec['parent']))
  if run is None:
    raise LaunchError(f'{BRANCH_KEY!r}: the parent {dict(spec["parent"])} is not a run of this sweep; add it '
                      f'(branches() lists each parent before its branches)')
  steps = config_lib.train_steps(run.config)
  if step > steps:
    raise LaunchError(f'{BRANCH_KEY!r}: fork step {step} is past the end of the parent ({steps} steps)')
  return run.hash, step


def make_label(overrides: dict, keys: list[str]) -> str:
  """'nano lr=0.001 seed=1' from the given keys of a run's overrides (last part of dotted keys)."""
  parts = []
  for k in keys:
    if k not in overrides:
      continue
    if k == RUNG_KEY:
      parts.append(str(overrides[k]))
    elif k == BRANCH_KEY:
      parts.append(f'from={overrides[k].get("step")}' if isinstance(overrides[k], Mapping) else 'branch')
    else:
      parts.append(f'{k.rsplit(".", 1)[-1]}={format_value(overrides[k])}')
  return ' '.join(parts) or '(base)'
