"""Will it fit, and how fast? The real train step compiled ahead of time for a TPU slice, on any machine.

The targets, their compile-only devices, the step lowered and compiled for them, its figures (and a cache
of them on disk) and the largest batch that fits. Its users, `scaling compile`, `scaling table --topology`
and the launchers' preflight, are in scaling/train/aot_cli.py; the HLO parser in scaling/train/hlo.py; the
chips' facts (HBM, peak, torus) in scaling/base/hardware.py.

`libtpu` (the `tpu-aot` extra) compiles for a TPU topology with no TPU attached:
`jax.experimental.topologies.get_topology_desc` returns compile-only devices of the slice, and
the step built by scaling/train/loop.py (same model, optimizer, shardings and donation as `scaling
train`) is lowered with abstract inputs (ShapeDtypeStructs carrying their shardings) and compiled.
What comes back, per chip:

- bytes: `compiled.memory_analysis()`: arguments + outputs - aliased (donated state reused for
  the new state) + temporaries + generated code, against the chip's HBM.
- FLOPs: the dot FLOPs of the step's HLO, with every while loop (scan over layers, the chunked
  loss, microbatches) counted trip-count times, plus the splash attention kernels' matmuls (custom
  calls, counted from their shapes by scaling/model/splash.py kernel_flops). XLA's `cost_analysis()`
  counts a loop body once, so its raw figure (also reported) undercounts scanned models several-fold.
- time: an estimate only: executed FLOPs per chip at the chip's bf16 peak (compute-bound; it
  ignores memory-bound ops, communication and kernel efficiency), and the MFU it implies for the
  model FLOPs of scaling/model/accounting.py, i.e. an upper bound set by remat and masked attention.

GPUs (`h100-N`, `h200-N`: N GPUs, 8 per node) are compiled the same way through the CUDA plugin (the
`cuda-aot` extra), whose compile-only devices take a GpuTargetConfigProto (gpu_target_config) instead of
a GPU. cuDNN flash attention (`model.attention=cudnn`, and `auto` on a GPU) also needs the cuDNN library
from that extra, though no GPU or driver: JAX reads its version while tracing
(jax/_src/cudnn/fused_attention_stablehlo.py check_cudnn_version). Without a device XLA skips its cuDNN
passes (GpuCompiler::RunBackend runs them only with a StreamExecutor), so the cuDNN graphs are built on
the first run: their workspace is not in the bytes, and a shape cuDNN has no engine for fails only there.

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

from scaling.base import files
from scaling.base.hardware import ALIASES, GPU_SPEC, GPUS, SHAPES_2D, SHAPES_3D, TPUS, Chip, GiB
from scaling.train.hlo import HloError, hlo_dot_flops


class AotError(ValueError):
  """A target or config that cannot be compiled; the message names the fix."""


GPU_NAMES = ('a100', 'b200', 'gb200', 'l4')
# what compiles for a GPU without one (pyproject.toml): the CUDA plugin (jax[cuda13-local]: jax-cuda13-plugin and
# jax-cuda13-pjrt of the installed jax) and cuDNN (nvidia-cudnn-cu13), which cuDNN attention's tracing reads
CUDA_AOT_INSTALL = 'pip install -e ".[cuda-aot]"'
GPU_UNSUPPORTED = ('scaling compile knows the GPUs {known} (with the CUDA plugin: ' + CUDA_AOT_INSTALL + '); '
                   'add this GPU to scaling/base/hardware.py CHIPS with its description')


def gpu_target_config(chip: Chip) -> str:
  """The GpuTargetConfigProto text the CUDA plugin compiles for (H100/H200 SXM: compute capability 9.0)."""
  return f'''gpu_device_info {{
  cuda_compute_capability {{ major: 9 minor: 0 }}
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448 shared_memory_per_core: 233472 threads_per_core_limit: 2048
  core_count: {GPU_SPEC["core_count"]} fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: {GPU_SPEC["memory_bandwidth"][chip.generation]} l2_cache_size: {GPU_SPEC["l2_cache_size"]}
  clock_rate_ghz: {GPU_SPEC["clock_rate_ghz"]} device_memory_size: {chip.hbm_bytes}
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
  for gen, chip in TPUS.items():
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
    if gen not in TPUS or len(shape) != TPUS[gen].ndim or min(shape) < 1:
      raise _unknown(name, ' (a raw topology is GEN:AxB for v5e/v6e or GEN:AxBxC for v4/v5p)')
    return Target(name, TPUS[gen], shape, num_slices)
  m = re.fullmatch(r'([a-z0-9]+)-(\d+)', low)
  gen = ALIASES.get(m.group(1), m.group(1)) if m else None
  if gen not in TPUS:
    raise _unknown(name)
  chip, n = TPUS[gen], int(m.group(2))
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


def cuda_plugin_available() -> bool:
  import importlib.util
  return any(importlib.util.find_spec(m) for m in ('jax_cuda13_plugin', 'jax_cuda12_plugin'))


def _gpu_devices(t: Target) -> list:
  if not cuda_plugin_available():
    raise AotError(f'{t.name}: compiling for a GPU without one needs the CUDA plugin and cuDNN: {CUDA_AOT_INSTALL} '
                   f'(jax-cuda13-plugin, jax-cuda13-pjrt and nvidia-cudnn-cu13; no GPU or driver is needed)')
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
  except RuntimeError as e:
    # jax's cuDNN attention reads the library's version while tracing: 'cuDNN not found.' (the plugin's loader),
    # 'cuDNN is not detected.' (no plugin); the library is needed, a GPU is not
    if 'cuDNN' not in str(e) or not re.search(r'not (found|detected)', str(e)):
      raise
    raise AotError(f'model.attention={cfg.model.attention!r} on {t.name} traces cuDNN flash attention, which needs '
                   f'the cuDNN library (no GPU): {CUDA_AOT_INSTALL} (nvidia-cudnn-cu13); or compile with '
                   f'--config.model.attention=xla (or blockwise). JAX said: {str(e).strip()}') from None
  except NotImplementedError as e:
    if 'Mosaic kernels cannot be automatically partitioned' not in str(e):
      raise
    # scaling/model/splash.py runs the kernel under shard_map over the arrays' mesh: this means it found none
    raise AotError(f'model.attention={cfg.model.attention!r}: a Pallas kernel reached XLA unpartitioned over the '
                   f'{t.chips}-chip mesh (no mesh on its inputs). Compile with --config.model.attention=blockwise '
                   f'(or xla), and report it') from None
  return lowered, setup


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
  import importlib.metadata

  import jax
  try:
    libtpu = importlib.metadata.version('libtpu')
  except importlib.metadata.PackageNotFoundError:
    libtpu = ''
  # custom_partitioning (cuDNN attention) names its partitioner by a Python object id, new in every process
  hlo = re.sub(r'backend_config="\d+"', 'backend_config=""', hlo)
  where = t.topology if t.chip.platform == 'tpu' else f'{t.chip.device_kind} {t.topology}'   # h100-8, h200-8: 1x1x8
  blob = '\n'.join([hlo, where, str(t.num_slices), str(_host_chips(t)), jax.__version__, libtpu, 'v1'])
  return files.sha256_bytes(blob.encode())[:32]


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
  if not _CACHE['dir']:
    return
  path = os.path.join(_CACHE['dir'], key + '.json')
  files.atomic_write_json(path, entry)


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
  hlo_flops: float     # dot (and attention kernel) FLOPs of the whole step (all chips), loops x trip count
  unknown_loops: int
  compile_s: float     # of the compile that produced the figures (also when read from the cache)
  argument_bytes: int  # per chip, from the input shardings
  memory: dict | None  # memory_bytes() of the compiled step; None when the compiler refused it
  cost_flops: float    # XLA's cost_analysis() flops per chip (loop bodies counted once)
  oom: dict | None = None   # the compiler's out-of-memory figures (see parse_oom)
  cached: bool = False
  kernel_flops: float = 0.0  # the part of hlo_flops computed by attention kernels (splash, cuDNN), all chips
  traffic: dict | None = None   # per chip, of the compiled program: traffic_figures() (scaling/train/plan.py reads it)


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
  try:
    flops, kernel, unknown_loops = step_flops(hlo, setup)
  except HloError as e:
    raise AotError(str(e)) from None
  arg_bytes = per_chip_bytes(abstract_inputs(setup, cfg))
  key = _cache_key(hlo, t)
  entry = _cache_read(key)
  if entry is not None and 'traffic' in entry:   # (entries written before `traffic` was kept: compiled again)
    return Compiled(None, setup, flops, unknown_loops, entry['compile_s'], arg_bytes, entry['memory'],
                    entry['cost_flops'], entry['oom'], cached=True, kernel_flops=kernel, traffic=entry['traffic'])
  compiled, memory, cost_flops, oom, traffic = None, None, 0.0, None, None
  # JAX's persistent cache (if $JAX_COMPILATION_CACHE_DIR is set) would store a compile-only executable it
  # cannot read back (a warning on the next identical compile): this compile stays out of it
  was = jax.config.jax_enable_compilation_cache
  jax.config.update('jax_enable_compilation_cache', False)
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    oom = parse_oom(str(e)) if 'RESOURCE_EXHAUSTED' in str(e) else None
    if oom is None:
      raise
    oom['message'] = str(e).split('\n')[0][:300]
  finally:
    jax.config.update('jax_enable_compilation_cache', was)
  if compiled is not None:
    memory = memory_bytes(compiled.memory_analysis())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    cost_flops = float(cost.get('flops', 0.0))
    try:
      traffic = traffic_figures(compiled.as_text(), float(cost.get('bytes accessed', 0.0)), setup.mesh, t)
    except HloError:   # an HLO this parser cannot read: no traffic figures (scaling plan ranks by compute alone)
      traffic = {}
  compile_s = time.time() - t0
  _cache_write(key, dict(compile_s=compile_s, memory=memory, cost_flops=cost_flops, oom=oom, traffic=traffic))
  return Compiled(compiled, setup, flops, unknown_loops, compile_s, arg_bytes, memory, cost_flops, oom,
                  kernel_flops=kernel, traffic=traffic)


def slice_of(mesh, t: Target) -> list[int]:
  """The slice (TPU) or node (GPU, 8 per node) of each logical device of the mesh, flattened: what crosses
  them goes over DCN."""
  devs = list(mesh.devices.flat)
  if t.chip.platform == 'cuda':
    return [i // 8 for i in range(len(devs))]
  return [getattr(d, 'slice_index', 0) or 0 for d in devs]


def traffic_figures(text: str, bytes_accessed: float, mesh, t: Target) -> dict:
  """Per chip and step, from the compiled program: HBM bytes (XLA's cost_analysis 'bytes accessed', which
  counts a loop body once, times the loop factor of hlo.memory_traffic) and the bytes each chip sends in
  collectives over ICI and DCN (hlo.collective_bytes: a ring's bytes per device), with the parts by op."""
  from scaling.train import hlo
  weighted, once = hlo.memory_traffic(text)
  factor = weighted / once if once else 1.0
  by_op = hlo.collective_bytes(text, slice_of(mesh, t))
  wire = {'ici': 0.0, 'dcn': 0.0}
  for (op, link), v in by_op.items():
    wire[link] += v['wire_bytes']
  return dict(bytes_accessed_xla=bytes_accessed, loop_factor=factor, hbm_bytes=bytes_accessed * factor,
              ici_wire_bytes=wire['ici'], dcn_wire_bytes=wire['dcn'],
              collectives={f'{op}/{link}': v for (op, link), v in sorted(by_op.items())})


def step_flops(hlo: str, setup) -> tuple[float, float, int]:
  """(FLOPs of the step: its dots and its attention kernels; those of the kernels alone; loops of unknown count).

  The attention kernels' matmuls are no dots of the HLO: scaling/model/splash.py kernel_flops (splash, TPU)
  and scaling/model/attention.py cudnn_kernel_flops (cuDNN, GPU) count them from each kernel call's shapes;
  the shard_map bodies the splash kernels sit in run on every device of the mesh.
  """
  from scaling.model import attention, splash
  devices = setup.mesh.size
  dots, unknown = hlo_dot_flops(hlo, devices=devices)
  window = setup.dims.sliding_window

  def count(target, outs, operands):
    return (splash.kernel_flops(target, outs, operands, block_size=setup.dims.attention_block_size, window=window)
            + attention.cudnn_kernel_flops(target, outs, operands, window=window))

  total, _ = hlo_dot_flops(hlo, count, devices=devices)
  return total, total - dots, unknown


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
      xla_flops_per_step=flops, kernel_flops_per_step=c.kernel_flops, accounting_flops_per_step=acct,
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

