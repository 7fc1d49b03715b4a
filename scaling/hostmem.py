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
  it first thing; a script or notebook can too (`from scaling import hostmem;
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


def cpu_only_host() -> bool:
  """Whether JAX will compute on the CPU, judged without starting JAX: JAX_PLATFORMS if set, else no
  accelerator plugin (CUDA, ROCm, TPU) installed."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip().lower()
  if platforms:
    return platforms.split(',')[0] == 'cpu'
  plugins = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin', 'jax_rocm7_plugin', 'libtpu')
  return not any(importlib.util.find_spec(m) is not None for m in plugins)


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
