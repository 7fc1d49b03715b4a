"""Host memory: keep XLA:CPU's per-step buffers mapped instead of faulting them in every step.

XLA:CPU allocates each step's temporaries and outputs with malloc. glibc serves
large blocks with mmap (and per-thread arenas can only serve big blocks that
way) and unmaps them on free, so every step touches hundreds of MB of fresh
pages: on the 2-core CI machine the default model's step took ~120,000 minor
page faults (490 MB) and 0.2 s of kernel time per step, 20% of all its CPU time.

Two glibc settings (mallopt) fix it, applied in two phases:

- `tune_malloc()`, on CPU-only hosts: one malloc arena for all threads, so every block can come
  from the main heap. It must run before the threads that allocate exist, i.e.
  before JAX's CPU backend starts: the `scaling` command and the benchmarks call
  it first thing; a script or notebook can too (`from scaling.base import hostmem;
  hostmem.tune_malloc()` before any JAX computation).
- `hold_heap()`, once the step is compiled and has run (the training loop and
  the benchmarks call it), and only when JAX computes on the CPU: no mmap and no
  trimming, so the blocks a step frees stay mapped and the next step reuses
  them. Holding only after compilation keeps the compiler's transient peak out
  of the retained heap; skipping it on accelerator hosts keeps checkpoint and
  transfer copies (host blocks of many GB) returning to the OS.

Result: 0 page faults per step and the float32 train step 1.2-1.3x faster
(BENCHMARKS.md). The costs: the process keeps its steady-state heap (about 1.5x
the untuned resident memory for the default model) instead of handing freed
blocks back to the OS after every step, and XLA compiles ~30% slower (its
parallel LLVM codegen threads share the one arena). That is why it is not done
on `import scaling`: the test suite, all compiles and short steps, runs faster
without it. SCALING_MALLOC_TUNING=0 leaves malloc alone. No effect (and no
error) off glibc Linux.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import platform
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

_state: dict = {}


def _libc():
  if 'libc' not in _state:
    libc = None
    if os.environ.get('SCALING_MALLOC_TUNING', '1') != '0' and platform.system() == 'Linux' \
        and platform.libc_ver()[0] == 'glibc':
      try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        libc.mallopt  # noqa: B018 - raises AttributeError if missing
      except (OSError, AttributeError):
        libc = None
    _state['libc'] = libc
  return _state['libc']


def _set(key: str, settings) -> bool:
  if key not in _state:
    libc = _libc()
    _state[key] = libc is not None and all(libc.mallopt(opt, val) == 1 for opt, val in settings)
  return _state[key]


GPU_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin', 'jax_rocm7_plugin')
TPU_DEVICE_GLOBS = ('/dev/accel*', '/dev/vfio/[0-9]*')   # how TPU VMs expose their chips (v2-v5e / v5p, v6e)


def _installed(module: str) -> bool:
  return importlib.util.find_spec(module) is not None


TPU_ENV = ('TPU_ACCELERATOR_TYPE', 'TPU_WORKER_HOSTNAMES', 'TPU_NAME')   # set where a TPU is meant (libtpu reads them)


def tpu_present() -> bool:
  """A TPU chip on this host (its device files), or TPU settings in the environment (the user means a TPU),
  judged without starting JAX or libtpu."""
  return any(os.environ.get(v) for v in TPU_ENV) or any(glob.glob(g) for g in TPU_DEVICE_GLOBS)


def cpu_only_host() -> bool:
  """Whether JAX will compute on the CPU, judged without starting JAX: JAX_PLATFORMS if set, else no GPU
  plugin (CUDA, ROCm) installed and no TPU (libtpu installed only to compile for one counts as none)."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip().lower()
  if platforms:
    return platforms.split(',')[0] == 'cpu'
  return not any(_installed(m) for m in GPU_PLUGINS) and not (_installed('libtpu') and tpu_present())


def skip_absent_tpu() -> bool:
  """JAX_PLATFORMS=cpu when libtpu is installed (the tpu-aot extra: `scaling compile` for a TPU slice) on a
  host with no TPU and no GPU plugin, unless JAX_PLATFORMS is set: JAX would otherwise start the TPU
  runtime at its first use, which prints a screen of warnings about a missing TPU before every command.
  True if it set JAX_PLATFORMS."""
  if os.environ.get('JAX_PLATFORMS', '').strip() or not _installed('libtpu') or not cpu_only_host():
    return False
  os.environ['JAX_PLATFORMS'] = 'cpu'
  return True


def _jax_started() -> bool:
  if 'jax' not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return True   # cannot tell: assume too late


def tune_malloc() -> bool:
  """One malloc arena, on CPU-only hosts, if JAX has not started its threads yet. True if applied."""
  if 'arena' not in _state and (not cpu_only_host() or _jax_started()):
    _state['arena'] = False   # accelerator host (it would only slow the compiler down) or too late
  return _set('arena', ((M_ARENA_MAX, 1),))


def hold_heap() -> bool:
  """From now on freed blocks stay mapped for reuse (no mmap, no trim). Only when JAX computes on the CPU:
  on an accelerator host the big host blocks are checkpoint and transfer copies, which must go back to the
  OS. True if applied."""
  if not _state.get('arena'):   # without the one arena, big blocks would still be mmap'd: nothing to gain
    return False
  import jax
  if jax.default_backend() != 'cpu':
    return False
  return _set('hold', ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2 ** 31 - 1)))
