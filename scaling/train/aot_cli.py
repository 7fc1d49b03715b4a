"""What uses scaling/train/aot.py: the `scaling compile` command, `scaling table --topology`, the sweeps' preflight.

    `scaling compile --config scaling/model/ladder.py:1b --topology v5p-8 [--num_slices 2] [--max_batch] [--json]`

`scaling table --topology v5p-32` adds to each rung whether it fits the slice (and, when not, the setting
that does), and the tpu-vm and gke sweep backends refuse a sweep whose runs do not fit before reserving
anything (`sweep_fit_problems`, handed to the launcher by scaling/cli/main.py). Every compile goes through
the `aot` module's names (aot.compile_report, aot.target_devices, ...), so a test patches them there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

from scaling.train import aot
from scaling.train.aot import human_bytes


# ----------------------------------------------------------------------------- the report
def format_report(r: dict) -> str:
  b = r['bytes_per_chip']
  slices = f' x {r["num_slices"]} slices' if r['num_slices'] > 1 else ''
  lines = [
      f'{r["topology"]} ({r["device_kind"]}, {r["topology_string"]}{slices}, {r["chips"]} chips), '
      f'mesh {r["mesh"]}, batch {r["batch_size"]} x {r["seq_len"]} tokens, microbatches {r["microbatches"]}, '
      f'{r["dtype"]}, remat {r["remat"]}; compiled in {r["compile_s"]:.1f}s'
      f'{" (figures from the cache)" if r.get("from_cache") else ""}',
      'memory per chip (compiled.memory_analysis()):' if b['output'] is not None else
      f'memory per chip: {r["note"]}',
      (f'  arguments {human_bytes(b["argument"])} + outputs {human_bytes(b["output"])} '
       f'- aliased (donated) {human_bytes(b["alias"])} + temporaries {human_bytes(b["temp"])} '
       f'+ code {human_bytes(b["generated_code"])}' if b['output'] is not None else
       f'  arguments {human_bytes(b["argument"])} (from the shardings) + temporaries (compiler) '
       f'{human_bytes(b["temp"] or 0)}') + f' = {human_bytes(b["total"])} of {human_bytes(r["hbm_bytes_per_chip"])} HBM',
      ('  fits' if r['fits'] else f'  DOES NOT FIT: {human_bytes(r["shortfall_bytes"])} over; try a larger '
       f'fsdp axis, train.microbatches, model.remat=full, or a larger slice') +
      f' ({100 * b["total"] / r["hbm_bytes_per_chip"]:.0f}% of HBM)',
      'FLOPs per step: XLA (dots of the step HLO, loops x trip count'
      + (f'; {r["kernel_flops_per_step"]:.4g} of them in the attention kernels'
         if r.get('kernel_flops_per_step') else '') + f') {r["xla_flops_per_step"]:.4g}, '
      f'accounting (6N + attention) {r["accounting_flops_per_step"]:.4g}, '
      f'ratio {r["xla_flops_per_step"] / r["accounting_flops_per_step"]:.3f}',
      f'ESTIMATE (compute-bound at {r["peak_flops_per_chip"] / 1e12:.0f} TFLOP/s bf16 per chip; ignores memory-bound '
      f'ops, communication and kernel efficiency): step {r["estimated_step_s"] * 1e3:.3g} ms, '
      f'MFU <= {100 * r["estimated_mfu"]:.0f}%',
  ]
  if r['loops_of_unknown_trip_count']:
    lines.append(f'note: {r["loops_of_unknown_trip_count"]} loop(s) of unknown trip count were counted once')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- the ladder on a slice
def fitting_alternative(cfg, t: aot.Target, devices) -> tuple[str, dict | None]:
  """When cfg does not fit: fsdp over all chips, then (same mesh) one sequence per chip per microbatch.

  (description, its report or None). At most two compiles: the second setting is the least memory
  the batch can take on this slice without remat or model changes, so if it does not fit, nothing
  of this kind will.
  """
  per_slice = t.chips_per_slice
  fsdp = dict(data=1, fsdp=-1, tensor=1)
  tries = []
  if (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) not in ((1, -1, 1), (1, per_slice, 1)):
    tries.append(cfg.train.microbatches)
  dp = per_slice * t.num_slices
  if cfg.train.batch_size % dp == 0 and cfg.train.batch_size // dp > cfg.train.microbatches:
    tries.append(cfg.train.batch_size // dp)
  for m in tries:
    try:
      r = aot.compile_report(aot.target_config(cfg, mesh=fsdp, microbatches=m), t, devices)
    except aot.AotError:
      continue
    if r['fits']:
      return f'fits with mesh fsdp={per_slice}, train.microbatches={m}', r
  return 'does not fit with fsdp over all chips, even at 1 sequence per chip per microbatch', None


def topology_rows(named_cfgs, topology: str, num_slices: int = 1, *, log=lambda *a: None) -> list[dict]:
  """Per (name, cfg): the columns `scaling table --topology` adds (fits, HBM per chip, estimated step)."""
  t = aot.parse_target(topology, num_slices)
  devices = aot.target_devices(t)
  out = []
  for name, cfg in named_cfgs:
    cfg = aot.target_config(cfg)
    try:
      r = aot.compile_report(cfg, t, devices)
    except aot.AotError as e:
      out.append(dict(topology=t.name, fits=None, note=str(e).split(': ', 1)[-1][:100]))
      continue
    row = dict(topology=t.name, fits=r['fits'], hbm_bytes_per_chip=r['bytes_per_chip']['total'],
               estimated_step_s=r['estimated_step_s'], estimated_mfu=r['estimated_mfu'], compile_s=r['compile_s'],
               mesh=r['mesh'], note='')
    if not r['fits']:
      row['note'], alt = fitting_alternative(cfg, t, devices)
      if alt:
        row['alt_hbm_bytes_per_chip'] = alt['bytes_per_chip']['total']
        row['alt_estimated_step_s'] = alt['estimated_step_s']
        row['alt_compile_s'] = alt['compile_s']
        row['note'] += f' ({human_bytes(alt["bytes_per_chip"]["total"])} per chip)'
    log(f'{name}: {"fits" if r["fits"] else "does not fit"} ({r["compile_s"]:.0f}s)')
    out.append(row)
  return out


def _prepare_compile(cache_dir: str | None = None, platform: str = 'tpu') -> None:
  if platform == 'tpu' and not aot.libtpu_available():
    raise aot.AotError('compiling for a TPU topology needs libtpu: pip install -e ".[tpu-aot]"')
  import jax
  from jax._src import xla_bridge
  if not xla_bridge.backends_are_initialized():
    jax.config.update('jax_platforms', 'cpu')   # compile-only devices; no TPU runtime is started
  aot.enable_compile_cache(cache_dir)


def _tpu_attached() -> bool | None:
  """Whether this machine has TPU chips (None: could not tell)."""
  try:
    from jax._src import hardware_utils
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:  # pylint: disable=broad-except  (a private jax module: may move)
    return None


def quiet_libtpu(t: aot.Target) -> None:
  """Compile-only use on a machine without TPUs: libtpu's start-up error lines, silenced at their cause.

  Without a TPU VM's metadata, libtpu reads the worker hostnames and the accelerator type from the
  environment and, finding neither, logs five lines at start-up ("Failed to find host bounds for
  accelerator type", "unexpected worker hostname", ...). Compile-only devices need neither: a lone worker
  (localhost) and the target's own accelerator name give the same devices (coords, cores, slices;
  measured on v5litepod-1, v4-8, v5p-8 x 2, v5p-32, v6e-16 x 2) and no lines. Only for processes
  that compile and nothing else (`scaling compile`, `scaling table --topology`), only when no TPU is
  attached, and only where a variable is not set already; libtpu's other messages still show.
  """
  if t.chip.platform != 'tpu' or _tpu_attached() is not False:
    return
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  if ':' not in t.name:   # an accelerator name (v5p-8), not a raw topology (v5p:2x2x2)
    os.environ.setdefault('TPU_ACCELERATOR_TYPE', t.name)


@contextlib.contextmanager
def libtpu_quieted(t: aot.Target):
  """quiet_libtpu for the duration of a compile, then the environment as it was: left set, TPU_WORKER_HOSTNAMES
  would make a later `jax.distributed` auto-detection in the same process (scaling/train/distributed.py) take this
  machine for a TPU pod worker. libtpu reads the variables when its backend starts, inside the block."""
  keys = ('TPU_WORKER_HOSTNAMES', 'TPU_ACCELERATOR_TYPE')
  before = {k: os.environ.get(k) for k in keys}
  quiet_libtpu(t)
  try:
    yield
  finally:
    for k, v in before.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


@contextlib.contextmanager
def heartbeat(what: str, every: float = 15.0, stream=None, clock=time.monotonic):
  """A line when `what` starts, one every `every` s from a thread while it runs ("compiling ... 45 s"), and
  its elapsed time when done: a first compile takes minutes and prints nothing of its own. On stderr."""
  stream = stream or sys.stderr
  t0, done = clock(), threading.Event()
  print(f'{what} ...', file=stream, flush=True)

  def beat():
    while not done.wait(every):
      print(f'{what} ... {clock() - t0:.0f} s', file=stream, flush=True)
  thread = threading.Thread(target=beat, name='compile-heartbeat', daemon=True)
  thread.start()
  ok = False
  try:
    yield
    ok = True
  finally:
    done.set()
    thread.join()
    print(f'{what}: {"done in" if ok else "stopped after"} {clock() - t0:.1f} s', file=stream, flush=True)


def add_topology_columns(rows: list[dict], named_cfgs, topology, num_slices: int = 1) -> None:
  """`scaling table --topology`: adds topology/fits/HBM per chip/estimated step (and a note) to each row.
  topology: one name for every row, or a list of one per row (`--topology auto`: each rung on its ladder target,
  the note then naming it)."""
  per_row = [topology] * len(rows) if isinstance(topology, str) else list(topology)
  targets = {name: aot.parse_target(name, num_slices) for name in dict.fromkeys(per_row)}   # bad names fail first
  log = lambda *a: print(*a, file=sys.stderr, flush=True)   # noqa: E731
  cols = [None] * len(rows)
  for name, t in targets.items():
    idx = [i for i, n in enumerate(per_row) if n == name]
    with libtpu_quieted(t if len(targets) == 1 else _raw(t)):
      _prepare_compile(platform=t.chip.platform)
      for i, extra in zip(idx, topology_rows([named_cfgs[i] for i in idx], name, num_slices, log=log)):
        cols[i] = extra
  for row, extra in zip(rows, cols):
    if not isinstance(topology, str):
      extra['note'] = f'on {extra["topology"]}' + (f': {extra["note"]}' if extra.get('note') else '')
    row.update(extra)


def _raw(t: aot.Target) -> aot.Target:
  """t named by its raw topology: quiet_libtpu then leaves TPU_ACCELERATOR_TYPE alone (libtpu reads it once per
  process, so one accelerator name must not stand for several targets)."""
  import dataclasses
  return dataclasses.replace(t, name=t.topology) if t.chip.platform == 'tpu' else t


def add_target_columns(rows: list[dict], named_cfgs, targets, args) -> list[dict]:
  """`scaling table --targets`: per rung, the smallest of the targets its plan fits (scaling/train/plan_targets.py),
  each row the accounting row with the target's fields (rung, target, overrides, bytes per chip, estimate, tried)."""
  from scaling.base.hardware import GiB
  from scaling.train import plan as plan_lib
  from scaling.train import plan_targets
  ts = plan_targets.ordered_targets(targets, args.num_slices)   # a bad name fails before any compile
  cache = args.cache_dir or plan_lib.default_cache_dir()
  log = lambda *a: print(*a, file=sys.stderr, flush=True)   # noqa: E731
  platforms = {t.chip.platform for t in ts}
  with libtpu_quieted(ts[0] if len(ts) == 1 else _raw(ts[0])):
    for platform in sorted(platforms):
      _prepare_compile(os.path.join(os.path.dirname(cache.rstrip('/')), 'aot') if args.cache_dir is None
                       else os.path.join(cache, 'aot'), platform)
    found = plan_targets.target_rows(named_cfgs, [t.name for t in ts], num_slices=args.num_slices, cache_dir=cache,
                                     max_candidates=args.max_candidates, refine=not args.no_refine,
                                     hbm=int(args.hbm_gib * GiB) or None, log=log)
  return [{**row, **extra} for row, extra in zip(rows, found)]


# ----------------------------------------------------------------------------- launchers
def check_runs_fit(configs, topology: str, num_slices: int = 1) -> list[str]:
  """Problems (empty: all fit) of compiling each distinct config's step for the topology.

  configs: ConfigDicts or (label, ConfigDict) pairs.

  For launchers, before they reserve anything: each problem names the run, its bytes per chip and
  the shortfall. Configs that are equal up to non-model fields compile once (compile cache).
  """
  t = aot.parse_target(topology, num_slices)
  devices = aot.target_devices(t)
  problems, seen = [], {}
  for item in configs:
    label, cfg = item if isinstance(item, tuple) else (None, item)
    cfg = aot.target_config(cfg)
    key = (cfg.model.to_json_best_effort(), cfg.mesh.to_json_best_effort(), cfg.train.batch_size,
           cfg.train.microbatches, cfg.train.get('loss_chunk', 0))
    label = label or cfg.get('name') or f'{cfg.model.num_layers}L d={cfg.model.d_model}'
    if key not in seen:
      try:
        seen[key] = aot.compile_report(cfg, t, devices)
      except aot.AotError as e:
        seen[key] = str(e)
    r = seen[key]
    if isinstance(r, str):
      problems.append(f'{label}: {r}')
    elif not r['fits']:
      problems.append(f'{label}: needs {human_bytes(r["bytes_per_chip"]["total"])} per chip on {t.describe()}, '
                      f'{human_bytes(r["shortfall_bytes"])} more than the {human_bytes(r["hbm_bytes_per_chip"])} '
                      f'of HBM; use a larger fsdp axis, train.microbatches or a larger slice')
  return problems


def sweep_fit_problems(sweep, resources: dict, log=lambda *a: None) -> list[str]:
  """The launchers' preflight (tpu-vm, gke): every run of the sweep compiled for resources['tpu_type']
  (x resources['num_slices']) before anything is created or reserved. [] when all fit, and also when
  the check is off: libtpu not installed, or resources['aot_check'] (else $SCALING_AOT_CHECK) is
  '0', 'false', 'no' or 'off'."""
  flag = str(resources.get('aot_check', os.environ.get('SCALING_AOT_CHECK', '1'))).lower()
  if flag in ('0', 'false', 'no', 'off') or not aot.libtpu_available():
    return []
  topology, slices = str(resources['tpu_type']), int(resources.get('num_slices', 1) or 1)
  _prepare_compile(resources.get('aot_cache_dir'))
  if str(resources.get('plan', '')).lower() in ('auto', '1', 'true', 'yes'):
    return plan_runs(sweep, topology, slices, log)
  log(f'[sweep] compiling {len(sweep.runs)} run(s) for {topology}' + (f' x {slices} slices' if slices > 1 else '')
      + ' to check that they fit (--resource aot_check=0 skips this)')
  return check_runs_fit([(run.label or run.hash, run.config) for run in sweep.runs], topology, slices)


def plan_runs(sweep, topology: str, num_slices: int = 1, log=lambda *a: None) -> list[str]:
  """resources plan=auto (tpu-vm, gke): each distinct run config is planned for the slice (scaling/train/plan.py;
  cached, so a re-submit compiles nothing) and its run takes the winner's knobs as --config.* flags (its config
  and hash follow; a cooldown branch, planned after its parent, forks from the parent's planned directory).
  Problems: the runs for which nothing fits, with the closest candidate."""
  from scaling.config.load import config_hash, load_config
  from scaling.train import plan as plan_lib
  t = aot.parse_target(topology, num_slices)
  problems, seen, renamed = [], {}, {}
  for run in sorted(sweep.runs, key=lambda r: getattr(r, 'parent', None) is not None):   # parents first
    if getattr(run, 'parent', None) in renamed:   # a branch forks from its parent's directory: the planned one
      run.parent = renamed[run.parent]
      run.flags['train.init_from'] = f'../{run.parent}:{run.fork_step}'
      run.config = load_config(run.spec, run.flags)
      run.hash = config_hash(run.config)
    key = plan_lib.candidate_key(aot.target_config(run.config), t)
    if key not in seen:
      log(f'[sweep] planning {run.label or run.hash} on {t.describe()}')
      seen[key] = plan_lib.plan(run.config, t, log=log)
    p, label = seen[key], run.label or run.hash
    if p.winner is None:
      c = p.closest()
      problems.append(f'{label}: nothing fits on {t.describe()} (scaling plan)' + (
          f'; closest {c["knobs"].label()} at {human_bytes(c["fig"]["bytes"])} per chip' if c else ''))
      continue
    old = run.hash
    run.flags.update({k: str(v) for k, v in p.winner['knobs'].overrides().items()})
    run.config = load_config(run.spec, run.flags)
    run.hash = config_hash(run.config)
    renamed[old] = run.hash
  return problems


# ----------------------------------------------------------------------------- the command
def add_compile_args(p) -> None:
  p.add_argument('--topology', required=True,
                 help='Cloud TPU accelerator name: v5p-8 (v4/v5p count TensorCores: v5p-8 = 4 chips), '
                      'v5litepod-8 or v5e-8, v6e-8 (chips), or a raw topology such as v5p:2x2x4')
  p.add_argument('--num_slices', type=int, default=1, help='multi-slice: data parallelism over N slices (DCN)')
  p.add_argument('--max_batch', action='store_true', help='find the largest global batch that fits (bisection)')
  p.add_argument('--json', action='store_true', help='one JSON object instead of the text report')
  p.add_argument('--cache_dir', default=None, help='cache of compiled figures (default ~/.cache/scaling/aot)')


def run_compile(args, overrides) -> int:
  """`scaling compile`: 0 if the step fits (with --max_batch: if any batch fits), 1 if not."""
  import json

  t = aot.parse_target(args.topology, args.num_slices)   # a bad name fails here, before any compile
  from scaling.config.load import load_config
  cfg = aot.target_config(load_config(args.config, overrides))
  log = (lambda *a: print(*a, flush=True)) if not args.json else (lambda *a: None)
  with libtpu_quieted(t), heartbeat(f'compiling the train step for {t.name}' + (' (largest batch)' if args.max_batch else '')):
    _prepare_compile(args.cache_dir, t.chip.platform)
    if args.max_batch:
      log(f'largest global batch on {t.describe()}:')
      best, r, _ = aot.find_max_batch(cfg, t, log=log)
      if r is None:
        r = aot.compile_report(aot.target_config(cfg, batch_size=aot.data_parallel_unit(cfg, t)), t)
      r['max_batch'] = best
    else:
      r = aot.compile_report(cfg, t)
  if args.json:
    print(json.dumps(r, indent=1))
  else:
    print(format_report(r))
    if args.max_batch:
      print(f'largest global batch that fits: {r["max_batch"] or "none (not even one sequence per data-parallel device)"}')
  return 0 if (r.get('max_batch') if args.max_batch else r['fits']) else 1