"""Shared test setup: 8 fake CPU devices, tiny model configs, fast model builds.

Fixtures (session-scoped factories): `tiny_cfg(**model_overrides)` -> validated
ConfigDict with the TINY_MODEL dims; `make_model(model_cfg=None, *, seed, std,
**model_overrides)` -> Transformer with numpy-random parameters.

XLA_FLAGS must be set before jax is first imported, so it is done at the very
top of this file (pytest imports conftest.py before any test module). The 8
fake host devices let multi-device tests (sharding, meshes) run on one CPU;
single-device code keeps using device 0 and is not slowed down measurably.
"""

import os

_DEVICE_FLAG = '--xla_force_host_platform_device_count=8'
if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _DEVICE_FLAG).strip()

# The suite is mostly compiles of tiny programs: without LLVM's backend optimizations XLA:CPU compiles them
# ~40% faster (CPU seconds of tests/test_model.py: 69 -> 40) and runs them a little slower, which tiny
# programs do not notice. Numbers are unchanged in kind (every comparison in the suite is between programs
# compiled the same way, or against a tolerance). Subprocesses inherit it. XLA_FLAGS that already name an
# optimization level keep theirs (SCALING_TEST_XLA_OPT=1 leaves XLA's default).
if 'xla_backend_optimization_level' not in os.environ['XLA_FLAGS'] and os.environ.get('SCALING_TEST_XLA_OPT') != '1':
  os.environ['XLA_FLAGS'] += ' --xla_backend_optimization_level=0'

# The malloc tuning of the `scaling` command (scaling/base/hostmem.py) trades ~30% slower compiles for faster
# steps; the suite is mostly compiles, so it runs without it. tests/test_loss.py tests it explicitly.
os.environ.setdefault('SCALING_MALLOC_TUNING', '0')

# The suite is a CPU suite. Where libtpu is installed (the tpu-aot extra: compile-only TPU tests), JAX would
# also probe for a TPU in every process (and scaling/base/hostmem.py would take this host for a TPU host), and
# the tpu-vm/gke launcher tests would compile each run for its slice before the stub gcloud/xpk run
# (tests/test_aot.py turns that check on where it tests it). Subprocesses inherit both settings.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('SCALING_AOT_CHECK', '0')

# One JAX compile cache for the whole test run, shared with every subprocess a test starts and every pytest-xdist
# worker (they inherit the environment of the process that loaded this file first): the same tiny step is compiled once per run, not once per module or per `scaling train` child.
# Compiles under 1 s are not kept (writing every small jit cost ~7% of test_model.py's time and saved nothing).
# JAX reads these variables when it is imported. $SCALING_TEST_COMPILE_CACHE names a directory to keep
# between runs (the executables are keyed by the program, the devices and the JAX version); otherwise a
# temporary one is made for this run and removed at its end.
import atexit  # noqa: E402
import contextlib  # noqa: E402
import fcntl  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

if os.environ.get('SCALING_TEST_COMPILE_CACHE'):
  COMPILE_CACHE = os.environ['SCALING_TEST_COMPILE_CACHE']
else:
  COMPILE_CACHE = os.environ['SCALING_TEST_COMPILE_CACHE'] = tempfile.mkdtemp(prefix='scaling-test-jax-cache-')
  atexit.register(shutil.rmtree, COMPILE_CACHE, ignore_errors=True)
os.environ['JAX_COMPILATION_CACHE_DIR'] = COMPILE_CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '1'
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'

import pathlib  # noqa: E402
import sys  # noqa: E402

# Import `scaling` from this checkout even when the package is not installed.
_REPO_ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from scaling.config import load as config_lib  # noqa: E402
from scaling.model import transformer as model_lib  # noqa: E402

# A model small enough that every test compiles in well under a second:
# D 32, 2 layers, 4 query heads sharing 2 kv heads (K 8), F 64, V 97, T 16.
TINY_MODEL = dict(
    vocab_size=97, seq_len=16, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
    head_dim=0, d_ff=64, dtype='float32', attention='reference', remat='none',
    scan_layers=True, sliding_window=0,
)


def xla_flags(devices: int) -> str:
  """This run's XLA_FLAGS (the optimization level above included) with `devices` fake CPU devices: for the
  environment of a child process that needs its own device count."""
  import re
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', os.environ.get('XLA_FLAGS', '')).split()
  return ' '.join([f'--xla_force_host_platform_device_count={devices}', *flags])


def tiny_config(**model_overrides):
  """The default config with the TINY_MODEL dims (plus `model_overrides`), validated."""
  overrides = {f'model.{k}': v for k, v in {**TINY_MODEL, **model_overrides}.items()}
  return config_lib.load_config('default.py', overrides)


def random_params_model(model_cfg, *, seed: int = 0, std: float = 0.1):
  """The model with numpy-random parameters, built without running its initializers.

  The abstract model (nnx.eval_shape) gives the parameter tree; every leaf is
  filled from a numpy generator: matrices ~ N(0, std), norm scales ~ 1 + N(0, std)
  and biases ~ N(0, std) (non-trivial, so tests see them). This avoids compiling
  the random initializers for every new shape (seconds per config on 2 cores),
  and the larger-than-default std makes the tests sensitive to wiring mistakes.
  """
  graphdef, state = nnx.split(model_lib.abstract_model(model_cfg))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
    values = rng.normal(0.0, std, leaf.shape).astype(np.float32)
    if name == 'scale':
      values += 1.0
    return jnp.asarray(values, dtype=leaf.dtype)

  state = jax.tree_util.tree_map_with_path(fill, state)
  return nnx.merge(graphdef, state)


@pytest.fixture(scope='session')
def tiny_cfg():
  """Factory: tiny_cfg(**model_overrides) -> a validated ConfigDict with tiny model dims."""
  return tiny_config


@pytest.fixture(scope='session')
def make_model():
  """Factory: make_model(model_cfg=None, *, seed=0, std=0.1, **model_overrides) -> Transformer.

  Parameters are numpy-random (see random_params_model); without `model_cfg` the
  model is tiny_config(**model_overrides).model.
  """

  def make(model_cfg=None, *, seed: int = 0, std: float = 0.1, **model_overrides):
    if model_cfg is None:
      model_cfg = tiny_config(**model_overrides).model
    return random_params_model(model_cfg, seed=seed, std=std)

  return make


@pytest.fixture(scope='session')
def compile_cache():
  """The run's one JAX compile cache directory (COMPILE_CACHE above; in-process and subprocesses use it)."""
  return pathlib.Path(COMPILE_CACHE)


# ----------------------------------------------------------------------------- made once per test run
def run_root(tmp_path_factory) -> pathlib.Path:
  """A directory of this test run that every pytest-xdist worker sees (each worker's base temp is a folder in
  it); without xdist, the base temp."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


@contextlib.contextmanager
def locked(path: pathlib.Path):
  """An exclusive lock on `path` while in the block: the pytest-xdist workers take turns."""
  with open(path, 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


# `scaling train` flags of a tiny model (byte tokenizer) for the tests that go through the command
TINY_CLI = {'model.vocab_size': 259, 'model.seq_len': 32, 'model.num_layers': 2, 'model.d_model': 32,
            'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64, 'data.tokenizer': 'byte',
            'train.batch_size': 8, 'train.lr': 1e-2, 'train.warmup_steps': 5, 'train.log_every': 1,
            'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': 10, 'train.peak_flops': 1e12}


@pytest.fixture(scope='session')
def tiny_cli_run(tmp_path_factory):
  """(workdir, flags): a finished 20-step `scaling train` run with TINY_CLI (checkpoints 10 and 20) on a small
  word corpus, and its flags (--no_sample and the config; without train.steps). Made once per test run, in the
  pytest process that asks first (the other workers wait for it): tests/test_ckpt_damage.py and
  tests/test_checksums.py damage copies of it, never the run itself, and train new runs on its prepared data."""
  from scaling.cli import main as cli
  root = run_root(tmp_path_factory) / 'tiny_cli_run'
  over = dict(TINY_CLI, **{'data.corpus': str(root / 'corpus' / '*.txt'), 'data.data_dir': str(root / 'prepared')})
  args = ['--no_sample', *[f'--config.{k}={v}' for k, v in over.items()]]
  with locked(run_root(tmp_path_factory) / 'tiny_cli_run.lock'):
    if not (root / 'ready').exists():
      shutil.rmtree(root, ignore_errors=True)   # what a failed attempt left: start over
      (root / 'corpus').mkdir(parents=True)
      rng = np.random.default_rng(3)
      words = 'one two three four five six seven eight nine ten , and or .'.split()
      for i in range(4):
        (root / 'corpus' / f'doc{i}.txt').write_text(' '.join(words[j] for j in rng.integers(0, len(words), 1500)))
      assert cli.main(['train', '--workdir', str(root / 'run'), *args, '--config.train.steps=20']) == 0
      (root / 'ready').touch()
  return root / 'run', args


# $SCALING_TEST_CPU_LOG=FILE: one JSON line per test phase with its wall seconds and the CPU seconds of this
# worker and of the child processes it waited for, to see which tests wait (sleeps, polls, other
# processes' barriers) rather than compute: those are the ones more workers than cores would hide.
_CPU_LOG = os.environ.get('SCALING_TEST_CPU_LOG')
if _CPU_LOG:
  import json as _json
  import resource as _resource
  import time as _time

  def _usage():
    s, c = _resource.getrusage(_resource.RUSAGE_SELF), _resource.getrusage(_resource.RUSAGE_CHILDREN)
    return _time.time(), s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_protocol(item, nextitem):
    t0, s0, c0 = _usage()
    yield
    t1, s1, c1 = _usage()
    with open(_CPU_LOG, 'a') as f:
      f.write(_json.dumps({'test': item.nodeid, 'wall': t1 - t0, 'cpu_self': s1 - s0, 'cpu_children': c1 - c0})
              + '\n')


def pytest_collection_modifyitems(session, config, items):
  """Files holding `slow` tests (the multi-process and end-to-end scenarios) run first; the tests of each file
  keep their order. pytest-xdist (--dist loadfile) hands files to workers in this order, so the long ones start
  early and the many short files fill the end, instead of one worker finishing a long file alone."""
  heavy = {item.path for item in items if item.get_closest_marker('slow')}
  items.sort(key=lambda item: item.path not in heavy)   # stable: the order within each group is kept
