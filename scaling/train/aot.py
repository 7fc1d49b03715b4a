"""Will it fit, and how fast? The real train step compiled ahead of time for a TPU slice, on any machine.

    `scaling compile --config scaling/model/ladder.py:1b --topology v5p-8 [--num_slices 2] [--max_batch] [--json]`

`libtpu` (the `tpu-aot` extra) compiles for a TPU topology with no TPU attached:
`jax.experimental.topologies.get_topology_desc` returns compile-only devices of the slice, and
the step built by scaling/train/loop.py (same model, optimizer, shardings and donation as `scaling
train`) is lowered with abstract inputs (ShapeDtypeStructs carrying their shardings) and compiled.
What comes back, per chip:

- bytes: `compiled.memory_analysis()`: arguments + outputs - aliased (donated state reused for
  the new state) + temporaries + generated code, against the chip's HBM.
- FLOPs: the dot FLOPs of the step's HLO, with every while loop (scan over layers, the chunked
  loss, microbatches) counted trip-count times. XLA's `cost_analysis()` counts a loop body once,
  so its raw figure (also reported) undercounts scanned models several-fold.
- time: an estimate only: executed FLOPs per chip at the chip's bf16 peak (compute-bound; it
  ignores memory-bound ops, communication and kernel efficiency), and the MFU it implies for the
  model FLOPs of scaling/model/accounting.py, i.e. an upper bound set by remat and masked attention.

Accelerator names follow Cloud TPU: for v4 and v5p the number counts TensorCores (v5p-8 = 4
chips, 2x2x1), for v5e (`v5litepod-N`, also `v5e-N`) and v6e it counts chips. A raw topology
`v5p:2x2x4` is accepted too. Multi-slice (`num_slices` > 1) puts a data-parallel factor over
the slices (DCN): see sharding.make_multislice_mesh.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import re
import time

GiB = 1 << 30


class AotError(ValueError):
  """A target or config that cannot be compiled; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Chip:
  generation: str       # the topology prefix libtpu knows: v4, v5p, v5e, v6e
  device_kind: str      # as JAX reports it
  hbm_bytes: int
  peak_flops: float     # dense bf16 FLOP/s
  counts_cores: bool    # the accelerator name counts TensorCores (2 per chip), not chips
  ndim: int             # torus dimensions
  platform: str = 'tpu'


CHIPS = {
    'v4': Chip('v4', 'TPU v4', 32 * GiB, 275e12, True, 3),
    'v5p': Chip('v5p', 'TPU v5', 95 * GiB, 459e12, True, 3),
    'v5e': Chip('v5e', 'TPU v5 lite', 16 * GiB, 197e12, False, 2),
    'v6e': Chip('v6e', 'TPU v6 lite', 32 * GiB, 918e12, False, 2),
}
# chips -> physical shape, as Cloud TPU lays out the standard slices
SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
             256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}
SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
ALIASES = {'v5litepod': 'v5e'}
# GPUs: `h100-N`/`h200-N` = N GPUs, 8 per node (default 8). The CUDA PJRT plugin compiles without a GPU
# when given the GPU's description (a GpuTargetConfigProto, as in XLA's gpu_specs) and a topology
# 'slices x nodes x GPUs per node'; memory_analysis() works, cost_analysis() gives nothing.
GPUS = {
    'h100': Chip('h100', 'NVIDIA H100 80GB HBM3', 85520809984, 989e12, False, 1, 'cuda'),
    'h200': Chip('h200', 'NVIDIA H200', 150754820096, 989e12, False, 1, 'cuda'),
}
_GPU_SPEC = dict(core_count=132, clock_rate_ghz=1.98, l2_cache_size=52428800,
                 memory_bandwidth={'h100': 3352320000000, 'h200': 4800000000000})
GPU_NAMES = ('a100', 'b200', 'gb200', 'l4')
GPU_UNSUPPORTED = ('scaling compile knows the GPUs {known} (with jax-cuda13-plugin and jax-cuda13-pjrt '
                   'installed); add this GPU to scaling/train/aot.py GPUS with its description')


def gpu_target_config(chip: Chip) -> str:
  """The GpuTargetConfigProto text the CUDA plugin compiles for (H100/H200 SXM: compute capability 9.0)."""
  return f'''gpu_device_info {{
  cuda_compute_capability {{ major: 9 minor: 0 }}
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448 shared_memory_per_core: 233472 threads_per_core_limit: 2048
  core_count: {_GPU_SPEC["core_count"]} fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: {_GPU_SPEC["memory_bandwidth"][chip.generation]} l2_cache_size: {_GPU_SPEC["l2_cache_size"]}
  clock_rate_ghz: {_GPU_SPEC["clock_rate_ghz"]} device_memory_size: {chip.hbm_bytes}
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 patch: 0 }}
device_description_str: "{chip.device_kind}"
'''


@dataclasses.dataclass(frozen=True)
class Target:
  name: str             # as given: v5p-8
  chip: Chip
  shape: tuple          # chips per torus dimension
  num_slices: int = 1

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.shape)

  @property
  def chips(self) -> int:
    return self.chips_per_slice * self.num_slices

  @property
  def topology(self) -> str:
    if self.chip.platform == 'cuda':   # slices x nodes x GPUs per node
      return f'{self.num_slices}x{max(1, self.chips_per_slice // 8)}x{min(8, self.chips_per_slice)}'
    return f'{self.chip.generation}:{"x".join(map(str, self.shape))}'

  @property
  def hosts(self) -> int:
    return self.num_slices * max(1, self.chips_per_slice // _host_chips(self))

  def describe(self) -> str:
    s = f'{self.name} ({self.chip.device_kind}, {self.topology}, {self.chips_per_slice} chips, ' \
        f'{max(1, self.chips_per_slice // _host_chips(self))} host(s))'
    return s if self.num_slices == 1 else f'{self.num_slices} x {s}'


def known_targets() -> list[str]:
  names = []
  for gen, chip in CHIPS.items():
    shapes = SHAPES_3D if chip.ndim == 3 else SHAPES_2D
    mult = 2 if chip.counts_cores else 1
    prefix = 'v5litepod' if gen == 'v5e' else gen
    names += [f'{prefix}-{n * mult}' for n in shapes]
  return names + [f'{g}-N' for g in GPUS]


def _unknown(name: str, why: str = '') -> AotError:
  return AotError(f'unknown TPU topology {name!r}{why}. Known: {", ".join(known_targets())} '
                  f'(v5e-N = v5litepod-N; or a raw topology such as v5p:2x2x4)')


def parse_target(name: str, num_slices: int = 1) -> Target:
  """`v5p-8`, `v5litepod-16`, `v6e-8`, `v4-32` or `v5p:2x2x4` -> Target. No libtpu needed."""
  low = name.strip().lower()
  if num_slices < 1:
    raise AotError(f'--num_slices must be >= 1, got {num_slices}')
  if low.split('-')[0] in GPU_NAMES:
    raise AotError(f'{name}: ' + GPU_UNSUPPORTED.format(known=', '.join(GPUS)))
  g = re.fullmatch(r'(h100|h200)(?:-(\d+))?', low)
  if g:
    n = int(g.group(2) or 8)
    if n < 1 or (n > 8 and n % 8) or num_slices != 1:
      raise AotError(f'{name}: N GPUs with N <= 8 or a multiple of 8 (8 per node), one slice')
    return Target(name, GPUS[g.group(1)], (n,))
  if ':' in low:   # raw topology
    gen, _, dims = low.partition(':')
    gen = ALIASES.get(gen, gen)
    try:
      shape = tuple(int(d) for d in dims.split('x'))
    except ValueError:
      raise _unknown(name) from None
    if gen not in CHIPS or len(shape) != CHIPS[gen].ndim or min(shape) < 1:
      raise _unknown(name, ' (a raw topology is GEN:AxB for v5e/v6e or GEN:AxBxC for v4/v5p)')
    return Target(name, CHIPS[gen], shape, num_slices)
  m = re.fullmatch(r'([a-z0-9]+)-(\d+)', low)
  gen = ALIASES.get(m.group(1), m.group(1)) if m else None
  if gen not in CHIPS:
    raise _unknown(name)
  chip, n = CHIPS[gen], int(m.group(2))
  if chip.counts_cores:
    if n % 2:
      raise _unknown(name, f' ({gen}-N counts TensorCores, 2 per chip: N is even)')
    n //= 2
  shapes = SHAPES_3D if chip.ndim == 3 else SHAPES_2D
  if n not in shapes:
    raise _unknown(name)
  return Target(name, chip, shapes[n], num_slices)


def _host_chips(t: Target) -> int:
  if t.chip.platform == 'cuda':
    return min(8, t.chips_per_slice)
  # v5e/v6e slices of up to 8 chips are one host; otherwise 4 chips (2x2) per host
  return t.chips_per_slice if (t.chip.ndim == 2 and t.chips_per_slice <= 8) else min(4, t.chips_per_slice)


def target_devices(t: Target) -> list:
  """The compile-only devices of the slice(s) (needs libtpu)."""
  # other processes on this machine (a test suite, a CPU training run) may have loaded libtpu while
  # looking for a TPU; its single-process lock would refuse this compile-only use
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  if t.chip.platform == 'cuda':
    return _gpu_devices(t)
  try:
    from jax.experimental import topologies
    kwargs = dict(num_slices=t.num_slices)
    shape3 = tuple(t.shape) + (1,) * (3 - len(t.shape))
    if t.chip.ndim == 2 and t.chips_per_slice <= 8:
      kwargs['chips_per_host_bounds'] = shape3
    else:
      kwargs['chips_per_host_bounds'] = (min(2, shape3[0]), min(2, shape3[1]), 1)
    if t.chip.counts_cores:
      kwargs['chip_config_name'] = 'megacore'   # one JAX device per chip, as on a real v4/v5p
    if t.chip.ndim == 3 and all(d % 4 == 0 for d in t.shape):
      kwargs['wrap'] = (True, True, True)     # full cubes have wraparound links
    return list(topologies.get_topology_desc(topology_name=t.topology, platform='tpu', **kwargs).devices)
  except RuntimeError as e:
    if 'TPU support not installed' in str(e):
      raise AotError('compiling for a TPU topology needs libtpu: pip install -e ".[tpu-aot]"') from None
    raise


def _gpu_devices(t: Target) -> list:
  import importlib.util
  if not any(importlib.util.find_spec(m) for m in ('jax_cuda13_plugin', 'jax_cuda12_plugin')):
    raise AotError(f'{t.name}: compiling for a GPU without one needs the CUDA plugin: '
                   f'pip install jax-cuda13-plugin jax-cuda13-pjrt (no GPU or CUDA libraries are needed to compile)')
  from jax.experimental import topologies
  return list(topologies.get_topology_desc(topology_name='', platform='cuda', target_config=gpu_target_config(t.chip),
                                           topology=t.topology).devices)


def libtpu_available() -> bool:
  import importlib.util
  return importlib.util.find_spec('libtpu') is not None


# ----------------------------------------------------------------------------- building the step
@contextlib.contextmanager
def target_backend(platform: str):
  """Attention's 'auto' choice (and its checks) as on `platform` while the step is traced here."""
  from scaling.model import attention
  old = attention._default_backend
  attention._default_backend = lambda: platform
  try:
    yield
  finally:
    attention._default_backend = old


def target_config(cfg, batch_size: int | None = None, mesh: dict | None = None, microbatches: int | None = None):
  """A copy of cfg as `scaling train` would resolve it on a TPU: dtype auto -> bfloat16, vocab from the data."""
  cfg = copy.deepcopy(cfg)
  with cfg.unlocked():
    if cfg.model.dtype == 'auto':
      cfg.model.dtype = 'bfloat16'
    if cfg.model.vocab_size == 0:
      if cfg.data.tokenizer not in ('bpe', 'unigram'):
        raise AotError(f'model.vocab_size=0 with data.tokenizer={cfg.data.tokenizer!r}: the vocabulary is only '
                       f'known after preparing the data; set --config.model.vocab_size=N')
      cfg.model.vocab_size = cfg.data.vocab_size
    if batch_size is not None:
      cfg.train.batch_size = int(batch_size)
    if microbatches is not None:
      cfg.train.microbatches = int(microbatches)
    for k, v in (mesh or {}).items():
      cfg.mesh[k] = int(v)
  from scaling.config.load import validate_config
  validate_config(cfg)
  return cfg


def target_mesh(cfg, t: Target, devices=None):
  from scaling.train import sharding
  devices = devices if devices is not None else target_devices(t)
  if t.num_slices > 1:
    return sharding.make_multislice_mesh(cfg.mesh, devices)
  return sharding.make_mesh(cfg.mesh, devices)


def abstract_inputs(setup, cfg):
  """(state, batch) as ShapeDtypeStructs with the shardings `scaling train` gives the real arrays."""
  import jax
  import jax.numpy as jnp

  from scaling.train import sharding
  from scaling.train.step import init_state
  shapes = jax.eval_shape(lambda: init_state(setup, 0))
  state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), shapes,
                       setup.state_sharding)
  keys = ['inputs', 'targets'] + (['segment_ids'] if cfg.data.document_masking else [])
  bsh = sharding.batch_sharding(setup.mesh)
  B, T = cfg.train.batch_size, cfg.model.seq_len
  batch = {k: jax.ShapeDtypeStruct((B, T), jnp.int32, sharding=bsh) for k in sorted(keys)}
  return state, batch


def lower_step(cfg, t: Target, devices=None):
  """(lowered step, setup): the jitted train step of scaling/train/loop.py lowered for the target."""
  from scaling.train import sharding
  from scaling.train.step import build_setup, jit_train_step
  mesh = target_mesh(cfg, t, devices)
  try:
    setup = build_setup(cfg, mesh=mesh)
  except sharding.MeshError as e:
    raise AotError(f'{t.describe()}: {e}') from None
  state, batch = abstract_inputs(setup, cfg)
  try:
    with target_backend(t.chip.platform):
      lowered = jit_train_step(setup, tuple(batch)).lower(state, batch)
  except NotImplementedError as e:
    if 'Mosaic kernels cannot be automatically partitioned' not in str(e):
      raise
    raise AotError(f'model.attention={cfg.model.attention!r} uses the splash kernel on TPU, which '
                   f'scaling/model/attention.py calls without shard_map, so XLA cannot partition it over the '
                   f'{t.chips}-chip mesh (`scaling train` would fail the same way on this slice). Compile with '
                   f'--config.model.attention=blockwise (or xla) until the kernel is wrapped in shard_map') from None
  return lowered, setup


# ----------------------------------------------------------------------------- HLO: FLOPs and collectives
_COMP_RE = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_INSTR_RE = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$')
_ARRAY_RE = re.compile(r'([a-z]\w*)\[([\d,]*)\]')


def _dims(shape: str) -> list[int]:
  m = _ARRAY_RE.search(shape)
  return [int(d) for d in m.group(2).split(',') if d] if m else []


def parse_hlo(text: str) -> dict:
  """{computation: [(name, shape, op, rest of line)]} of an HLO module's text."""
  comps, cur = {}, None
  for line in text.splitlines():
    if cur is None or not line.startswith(' '):
      m = _COMP_RE.match(line)
      if m:
        cur = comps.setdefault(m.group(1), [])
      continue
    m = _INSTR_RE.match(line)
    if m:
      cur.append(m.groups())
  return comps


def _trip_count(cond: list) -> int | None:
  """The trip count of a scan's while loop: its condition is `i < constant(N)` with i from 0."""
  consts = {}
  for name, _, op, rest in cond:
    if op == 'constant':
      consts[name] = rest.split(')')[0]
  for name, _, op, rest in cond:
    if op == 'compare' and 'direction=LT' in rest:
      args = [a.strip().lstrip('%') for a in rest.split(')')[0].split(',')]
      if len(args) == 2 and args[1] in consts:
        return int(consts[args[1]])
  return None


def hlo_dot_flops(text: str) -> tuple[float, int]:
  """(FLOPs of every dot in the module, while loops counted trip-count times; loops of unknown count).

  A dot's FLOPs are 2 x output elements x contracted size. The pre-optimization HLO (global
  shapes, before SPMD partitioning) is the intended input: its dots are the step's matmuls,
  including any recomputation that remat inserted.
  """
  comps = parse_hlo(text)
  unknown = [0]
  memo: dict = {}

  def flops(comp_name: str) -> float:
    if comp_name in memo:
      return memo[comp_name]
    memo[comp_name] = 0.0   # guards recursion
    instrs = comps.get(comp_name, [])
    shapes = {name: shape for name, shape, _, _ in instrs}
    total = 0.0
    for name, shape, op, rest in instrs:
      if op == 'dot':
        lhs = rest.split(')')[0].split(',')[0].strip().lstrip('%')
        lhs_dims = _dims(shapes.get(lhs, ''))
        m = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', rest)
        contracted = math.prod(lhs_dims[int(d)] for d in m.group(1).split(',') if d) if m and lhs_dims else 0
        total += 2.0 * math.prod(_dims(shape)) * contracted
      elif op == 'while':
        body = re.search(r'body=%?([\w.\-]+)', rest).group(1)
        cond = re.search(r'condition=%?([\w.\-]+)', rest).group(1)
        n = _trip_count(comps.get(cond, []))
        if n is None:
          unknown[0] += 1
          n = 1
        total += n * flops(body)
      elif op == 'call':
        m = re.search(r'to_apply=%?([\w.\-]+)', rest)
        total += flops(m.group(1)) if m else 0.0
      elif op == 'conditional':
        m = re.search(r'branch_computations=\{([^}]*)\}', rest)
        if m:
          total += max(flops(b.strip().lstrip('%')) for b in m.group(1).split(','))
    memo[comp_name] = total
    return total

  entry = next((m.group(1) for line in text.splitlines() if line.startswith('ENTRY')
                for m in [_COMP_RE.match(line)] if m), None)
  if entry is None:
    raise AotError('no ENTRY computation in the HLO text')
  return flops(entry), unknown[0]


COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')


def _groups(rest: str, n_devices: int) -> list[list[int]]:
  m = re.search(r'replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?', rest)
  if m:   # iota form: [groups, size] <= [reshape] T(perm)
    import numpy as np
    out = [int(x) for x in m.group(1).split(',')]
    ids = np.arange(math.prod(int(x) for x in m.group(2).split(','))).reshape(
        [int(x) for x in m.group(2).split(',')])
    if m.group(3):
      ids = ids.transpose([int(x) for x in m.group(3).split(',')])
    return ids.reshape(out).tolist()
  m = re.search(r'(?:replica_groups|source_target_pairs)=\{((?:\{[\d,]*\},?)*)\}', rest)
  if m and m.group(1):
    return [[int(x) for x in g.split(',') if x] for g in re.findall(r'\{([\d,]*)\}', m.group(1))]
  return [list(range(n_devices))]   # empty groups: all devices


def collectives(text: str, slice_of: list[int]) -> list[dict]:
  """The collectives of a compiled (partitioned) HLO module, each with `cross_slice`.

  A multi-slice TPU program keeps ICI collectives (replica groups within a slice) and sends what
  crosses slices over DCN as host transfers: `send` ops tagged `_xla_megascale_transfer_type`
  (ALL_REDUCE, ALL_GATHER, ...). slice_of[i] is the slice of logical device i (the mesh, flattened).
  """
  out = []
  for comp in parse_hlo(text).values():
    for name, shape, op, rest in comp:
      dcn = re.search(r'_xla_megascale_transfer_type="(\w+)"', rest)
      if dcn and op == 'send':
        elems = math.prod(int(d) for d in _ARRAY_RE.search(shape).group(2).split(',') if d)
        out.append(dict(name=name, op=dcn.group(1).lower().replace('_', '-'), cross_slice=True, elements=elems,
                        group_size=None, op_name=''))
        continue
      base = op[:-len('-start')] if op.endswith('-start') else op
      if base not in COLLECTIVES:
        continue
      groups = _groups(rest, len(slice_of))
      cross = any(len({slice_of[d] for d in g}) > 1 for g in groups)
      elems = sum(math.prod(int(d) for d in dims.split(',') if d) for _, dims in _ARRAY_RE.findall(shape))
      meta = re.search(r'op_name="([^"]*)"', rest)
      out.append(dict(name=name, op=base, cross_slice=cross, elements=elems, group_size=len(groups[0]),
                      op_name=meta.group(1) if meta else ''))
  return out


# ----------------------------------------------------------------------------- compile and report
_CACHE = {'dir': None}


def enable_compile_cache(path: str | None = None) -> str:
  """Where compiled figures are kept on disk (default $SCALING_CACHE/aot, else ~/.cache/scaling/aot).

  JAX's persistent compilation cache writes compile-only TPU executables but cannot read them back
  (jax 0.10.2: 'PjRtCompiler must be constructed with a Client'), so this cache keeps what a compile
  yields instead (memory analysis, cost analysis, the compiler's out-of-memory figures), keyed by
  the step's HLO, the target and the jax and libtpu versions.
  """
  path = path or os.path.join(os.environ.get('SCALING_CACHE', os.path.expanduser('~/.cache/scaling')), 'aot')
  os.makedirs(path, exist_ok=True)
  _CACHE['dir'] = path
  return path


def _cache_key(hlo: str, t: Target) -> str:
  import hashlib
  import importlib.metadata

  import jax
  try:
    libtpu = importlib.metadata.version('libtpu')
  except importlib.metadata.PackageNotFoundError:
    libtpu = ''
  blob = '\n'.join([hlo, t.topology, str(t.num_slices), str(_host_chips(t)), jax.__version__, libtpu, 'v1'])
  return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _cache_read(key: str) -> dict | None:
  import json
  if not _CACHE['dir']:
    return None
  try:
    with open(os.path.join(_CACHE['dir'], key + '.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _cache_write(key: str, entry: dict) -> None:
  import json
  if not _CACHE['dir']:
    return
  path = os.path.join(_CACHE['dir'], key + '.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(entry, f)
  os.replace(path + '.tmp', path)


def memory_bytes(mem) -> dict:
  """Per-chip bytes of `compiled.memory_analysis()`; total = arguments + outputs - aliased + temporaries + code."""
  parts = dict(argument=int(mem.argument_size_in_bytes), output=int(mem.output_size_in_bytes),
               alias=int(mem.alias_size_in_bytes), temp=int(mem.temp_size_in_bytes),
               generated_code=int(mem.generated_code_size_in_bytes))
  parts['total'] = parts['argument'] + parts['output'] - parts['alias'] + parts['temp'] + parts['generated_code']
  return parts


@dataclasses.dataclass
class Compiled:
  compiled: object     # jax.stages.Compiled; None when read from the cache or refused by the compiler
  setup: object        # scaling.train.step.Setup (its mesh holds the target devices)
  hlo_flops: float     # dot FLOPs of the whole step (all chips), loops x trip count
  unknown_loops: int
  compile_s: float     # of the compile that produced the figures (also when read from the cache)
  argument_bytes: int  # per chip, from the input shardings
  memory: dict | None  # memory_bytes() of the compiled step; None when the compiler refused it
  cost_flops: float    # XLA's cost_analysis() flops per chip (loop bodies counted once)
  oom: dict | None = None   # the compiler's out-of-memory figures (see parse_oom)
  cached: bool = False


_UNITS = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}


def parse_oom(message: str) -> dict | None:
  """The TPU compiler's 'Ran out of memory' figures: {'temp' or 'total': bytes, 'available': bytes}."""
  num = r'([\d.]+)([KMGT]?)B?'
  m = re.search(r'memory required for HLO temporaries \(' + num + r'\) exceeds available HBM \(' + num + r'\)',
                message)
  if m:
    return dict(temp=int(float(m.group(1)) * _UNITS[m.group(2)]), available=int(float(m.group(3)) * _UNITS[m.group(4)]))
  m = re.search(r'Used ' + num + r' of ' + num + r' hbm', message)
  if m:
    return dict(total=int(float(m.group(1)) * _UNITS[m.group(2)]),
                available=int(float(m.group(3)) * _UNITS[m.group(4)]))
  return None


def per_chip_bytes(tree) -> int:
  """Bytes one chip holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  import jax
  import numpy as np
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def compile_step(cfg, t: Target, devices=None) -> Compiled:
  """Lowers and compiles the train step of `cfg` (already a target_config) for `t` (or reads the cache)."""
  import jax
  t0 = time.time()
  lowered, setup = lower_step(cfg, t, devices)
  hlo = lowered.as_text(dialect='hlo')
  flops, unknown_loops = hlo_dot_flops(hlo)
  arg_bytes = per_chip_bytes(abstract_inputs(setup, cfg))
  key = _cache_key(hlo, t)
  entry = _cache_read(key)
  if entry is not None:
    return Compiled(None, setup, flops, unknown_loops, entry['compile_s'], arg_bytes, entry['memory'],
                    entry['cost_flops'], entry['oom'], cached=True)
  compiled, memory, cost_flops, oom = None, None, 0.0, None
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    oom = parse_oom(str(e)) if 'RESOURCE_EXHAUSTED' in str(e) else None
    if oom is None:
      raise
    oom['message'] = str(e).split('\n')[0][:300]
  if compiled is not None:
    memory = memory_bytes(compiled.memory_analysis())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    cost_flops = float(cost.get('flops', 0.0))
  compile_s = time.time() - t0
  _cache_write(key, dict(compile_s=compile_s, memory=memory, cost_flops=cost_flops, oom=oom))
  return Compiled(compiled, setup, flops, unknown_loops, compile_s, arg_bytes, memory, cost_flops, oom)


def compile_report(cfg, t: Target, devices=None) -> dict:
  """Compiles the train step of `cfg` (already a target_config) for `t`; the figures of `scaling compile`."""
  return report(compile_step(cfg, t, devices), cfg, t)


def report(c: Compiled, cfg, t: Target) -> dict:
  """The figures of `scaling compile` (field names in README.md) of a compiled step."""
  from scaling.model import accounting
  setup, flops = c.setup, c.hlo_flops
  hbm = t.chip.hbm_bytes
  if c.memory is not None:
    parts = dict(c.memory)
    fits, note = parts['total'] <= hbm, ''
  else:   # refused by the compiler: its figure, plus the arguments when it counts temporaries only
    fits = False
    hbm = c.oom['available']
    total = c.oom.get('total') or c.argument_bytes + c.oom['temp']
    parts = dict(argument=c.argument_bytes, output=None, alias=None, temp=c.oom.get('temp'), generated_code=None,
                 total=total)
    note = f'the TPU compiler refused the step: {c.oom["message"]}'
  B, T = cfg.train.batch_size, cfg.model.seq_len
  acct = accounting.flops_per_token(setup.dims) * B * T
  step_s = flops / t.chips / t.chip.peak_flops
  return dict(
      topology=t.name, topology_string=t.topology, num_slices=t.num_slices, chips=t.chips,
      device_kind=t.chip.device_kind, mesh=dict(setup.mesh.shape), batch_size=B, seq_len=T,
      microbatches=cfg.train.microbatches, dtype=setup.dims.dtype, remat=setup.dims.remat,
      fits=fits, hbm_bytes_per_chip=hbm, bytes_per_chip=parts, shortfall_bytes=max(0, parts['total'] - hbm),
      xla_flops_per_step=flops, accounting_flops_per_step=acct,
      cost_analysis_flops_per_chip=c.cost_flops, loops_of_unknown_trip_count=c.unknown_loops,
      peak_flops_per_chip=t.chip.peak_flops, estimated_step_s=step_s,
      estimated_mfu=acct / (step_s * t.chips * t.chip.peak_flops) if step_s else None,
      estimate_note='compute-bound at the chip bf16 peak: ignores memory-bound ops, communication, kernel efficiency',
      compile_s=c.compile_s, from_cache=c.cached, note=note)


def data_parallel_unit(cfg, t: Target, devices=None) -> int:
  """The global batch must be a multiple of this: data-parallel devices x microbatches."""
  from scaling.train import sharding
  mesh = target_mesh(cfg, t, devices)
  return sharding.data_parallel_size(mesh) * cfg.train.microbatches


def find_max_batch(cfg, t: Target, devices=None, *, log=lambda *a: None, limit_units: int = 1 << 16):
  """(largest fitting global batch or 0, its report or None, the reports probed), by doubling then bisection."""
  devices = devices if devices is not None else target_devices(t)
  unit = data_parallel_unit(cfg, t, devices)
  probed = {}

  def fits(k: int) -> bool:
    if k not in probed:
      probed[k] = compile_report(target_config(cfg, batch_size=k * unit), t, devices)
      r = probed[k]
      log(f'  batch {k * unit}: {human_bytes(r["bytes_per_chip"]["total"])} per chip, '
          f'{"fits" if r["fits"] else "does not fit"} ({r["compile_s"]:.0f}s)')
    return probed[k]['fits']

  k = max(1, cfg.train.batch_size // unit)
  if fits(k):
    lo, hi = k, None
    while hi is None and lo < limit_units:
      hi = None if fits(2 * lo) else 2 * lo
      lo = 2 * lo if hi is None else lo
    if hi is None:
      return lo * unit, probed[lo], probed
  else:
    hi = k
    while hi > 1 and not fits(hi // 2):
      hi //= 2
    if hi == 1:
      return 0, None, probed
    lo = hi // 2
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo * unit, probed[lo], probed


def human_bytes(n: float) -> str:
  return f'{n / GiB:.2f} GiB' if abs(n) >= GiB / 10 else f'{n / (1 << 20):.1f} MiB'


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
      f'FLOPs per step: XLA (dots of the step HLO, loops x trip count) {r["xla_flops_per_step"]:.4g}, '
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
def fitting_alternative(cfg, t: Target, devices) -> tuple[str, dict | None]:
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
      r = compile_report(target_config(cfg, mesh=fsdp, microbatches=m), t, devices)
    except AotError:
      continue
    if r['fits']:
      return f'fits with mesh fsdp={per_slice}, train.microbatches={m}', r
  return 'does not fit with fsdp over all chips, even at 1 sequence per chip per microbatch', None


def topology_rows(named_cfgs, topology: str, num_slices: int = 1, *, log=lambda *a: None) -> list[dict]:
  """Per (name, cfg): the columns `scaling table --topology` adds (fits, HBM per chip, estimated step)."""
  t = parse_target(topology, num_slices)
  devices = target_devices(t)
  out = []
  for name, cfg in named_cfgs:
    cfg = target_config(cfg)
    try:
      r = compile_report(cfg, t, devices)
    except AotError as e:
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
  if platform == 'tpu' and not libtpu_available():
    raise AotError('compiling for a TPU topology needs libtpu: pip install -e ".[tpu-aot]"')
  import jax
  from jax._src import xla_bridge
  if not xla_bridge.backends_are_initialized():
    jax.config.update('jax_platforms', 'cpu')   # compile-only devices; no TPU runtime is started
  enable_compile_cache(cache_dir)


def add_topology_columns(rows: list[dict], named_cfgs, topology: str, num_slices: int = 1) -> None:
  """`scaling table --topology`: adds topology/fits/HBM per chip/estimated step (and a note) to each row."""
  t = parse_target(topology, num_slices)   # a bad name fails before any compile
  _prepare_compile(platform=t.chip.platform)
  import sys
  cols = topology_rows(named_cfgs, topology, num_slices, log=lambda *a: print(*a, file=sys.stderr, flush=True))
  for row, extra in zip(rows, cols):
    row.update(extra)


# ----------------------------------------------------------------------------- launchers
def check_runs_fit(configs, topology: str, num_slices: int = 1) -> list[str]:
  """Problems (empty: all fit) of compiling each distinct config's step for the topology.

  configs: ConfigDicts or (label, ConfigDict) pairs.

  For launchers, before they reserve anything: each problem names the run, its bytes per chip and
  the shortfall. Configs that are equal up to non-model fields compile once (compile cache).
  """
  t = parse_target(topology, num_slices)
  devices = target_devices(t)
  problems, seen = [], {}
  for item in configs:
    label, cfg = item if isinstance(item, tuple) else (None, item)
    cfg = target_config(cfg)
    key = (cfg.model.to_json_best_effort(), cfg.mesh.to_json_best_effort(), cfg.train.batch_size,
           cfg.train.microbatches, cfg.train.get('loss_chunk', 0))
    label = label or cfg.get('name') or f'{cfg.model.num_layers}L d={cfg.model.d_model}'
    if key not in seen:
      try:
        seen[key] = compile_report(cfg, t, devices)
      except AotError as e:
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
  if flag in ('0', 'false', 'no', 'off') or not libtpu_available():
    return []
  topology, slices = str(resources['tpu_type']), int(resources.get('num_slices', 1) or 1)
  _prepare_compile(resources.get('aot_cache_dir'))
  log(f'[sweep] compiling {len(sweep.runs)} run(s) for {topology}' + (f' x {slices} slices' if slices > 1 else '')
      + ' to check that they fit (--resource aot_check=0 skips this)')
  return check_runs_fit([(run.label or run.hash, run.config) for run in sweep.runs], topology, slices)


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

  t = parse_target(args.topology, args.num_slices)   # a bad name fails here, before any compile
  from scaling.config.load import load_config
  cfg = target_config(load_config(args.config, overrides))
  _prepare_compile(args.cache_dir, t.chip.platform)
  log = (lambda *a: print(*a, flush=True)) if not args.json else (lambda *a: None)
  if args.max_batch:
    log(f'largest global batch on {t.describe()}:')
    best, r, _ = find_max_batch(cfg, t, log=log)
    if r is None:
      r = compile_report(target_config(cfg, batch_size=data_parallel_unit(cfg, t)), t)
    r['max_batch'] = best
  else:
    r = compile_report(cfg, t)
  if args.json:
    print(json.dumps(r, indent=1))
  else:
    print(format_report(r))
    if args.max_batch:
      print(f'largest global batch that fits: {r["max_batch"] or "none (not even one sequence per data-parallel device)"}')
  return 0 if (r.get('max_batch') if args.max_batch else r['fits']) else 1
