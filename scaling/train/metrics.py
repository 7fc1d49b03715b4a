"""Metrics: metrics.jsonl, TensorBoard events, the progress bar, and the device peak for MFU.

Only process 0 writes or prints; the other processes get a no-op writer.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from scaling.base import files, hardware


class MetricsWriter:
  """metrics.jsonl and TensorBoard events of a run that starts (or resumes) after `start_step`.

  Rows of a previous attempt past start_step (logged after the checkpoint the run resumes from)
  are dropped from metrics.jsonl, and TensorBoard is told to purge its events from start_step + 1
  on, so the step numbers of both never go backwards. start_step=None appends (no truncation).
  With `config` whose logging.wandb_project is set, every row also goes to Weights & Biases
  (scaling/train/tracking.py), with the config.
  """

  def __init__(self, workdir, *, enabled: bool = True, tensorboard: bool = True, start_step: int | None = None,
               config=None):
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / 'metrics.jsonl'
    self._tb = self._tracker = None
    if enabled:
      from scaling.train.tracking import make_tracker
      self._tracker = make_tracker(config, workdir)
      self.path.parent.mkdir(parents=True, exist_ok=True)
      if start_step is not None:
        truncate_metrics(self.path, start_step)
      self._f = open(self.path, 'a', buffering=1)
      if tensorboard:
        try:
          summary_writer = tensorboard_writer_class()
          purge = None if start_step is None else start_step + 1
          self._tb = summary_writer(str(pathlib.Path(workdir) / 'tb'), purge_step=purge)
        except ImportError:  # optional
          self._tb = None

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {'step': int(step)}
    for k, v in metrics.items():
      v = float(v) if isinstance(v, (np.floating, np.integer, jax.Array, float, int)) else v
      row[k] = v
    self._f.write(json.dumps(row) + '\n')
    if self._tb is not None:
      for k, v in row.items():
        if k != 'step' and isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(k, v, step)
    if self._tracker is not None:
      self._tracker.log(step, row)

  def close(self):
    if self.enabled:
      self._f.close()
      if self._tb is not None:
        self._tb.close()
      if self._tracker is not None:
        self._tracker.finish()


def tensorboard_writer_class():
  """tensorboardX's SummaryWriter, imported without importing torch.

  tensorboardX imports torch at import time where it is installed (only to accept torch tensors, which the
  scalars written here never are): 2-3.5 CPU-s in every training process. While it is imported, `import torch`
  raises ImportError (a None entry in sys.modules), which tensorboardX catches; the entry is removed again, so
  a later `import torch` elsewhere works as usual. Where torch is already imported, nothing changes.
  """
  if 'torch' in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules['torch'] = None   # type: ignore[assignment]
  try:
    from tensorboardX import SummaryWriter
  finally:
    if 'torch' in sys.modules and sys.modules['torch'] is None:
      del sys.modules['torch']
  return SummaryWriter


def truncate_metrics(path: pathlib.Path, last_step: int) -> int:
  """Keeps the rows of metrics.jsonl with step <= last_step (atomically); returns how many were dropped."""
  if not path.exists():
    return 0
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  keep = []
  for line in lines:
    try:
      if json.loads(line).get('step', 0) <= last_step:
        keep.append(line if line.endswith('\n') else line + '\n')
    except ValueError:   # a line cut off by a kill mid-write: dropped
      pass
  if len(keep) == len(lines):
    return 0
  files.atomic_write_text(path, ''.join(keep))
  return len(lines) - len(keep)


def read_metrics(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """A tqdm bar on a terminal; periodic plain lines (with rate and ETA) when output is a file."""

  def __init__(self, total: int, initial: int = 0, enabled: bool = True):
    self.enabled = enabled
    self.total, self.n = total, initial
    self.t0, self.n0 = time.time(), initial
    self._bar = None
    self._last_line = 0.0
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=initial, dynamic_ncols=True, desc='train')

  def start_timing(self, n: int) -> None:
    """Rate and ETA count from step n on (call after the compile step: compile time is not step time)."""
    self.t0, self.n0 = time.time(), n
    if self._bar is not None:   # tqdm's own rate: from here, not from its creation
      bar, now = self._bar, self._bar._time()
      bar.start_t = bar.last_print_t = now
      bar.initial = bar.last_print_n = n

  def update(self, n: int, postfix: dict) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.update(n - self.n)
      self._bar.set_postfix(postfix, refresh=False)
    else:
      now = time.time()
      if now - self._last_line >= 10 or n == self.total:
        rate = (n - self.n0) / max(now - self.t0, 1e-9)
        eta = f'{(self.total - n) / rate:.0f}s' if rate > 0 else '-'   # '-': no timed step yet
        fields = ' '.join(f'{k}={v}' for k, v in postfix.items())
        print(f'step {n}/{self.total} {fields} eta={eta}', flush=True)
        self._last_line = now
    self.n = n

  def write(self, msg: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(msg)
    else:
      print(msg, flush=True)

  def close(self):
    if self._bar is not None:
      self._bar.close()


_MEASURED: dict = {}


def measure_matmul_peak(dtype=jnp.float32, n: int = 2048, reps: int = 3) -> float:
  """FLOP/s of a large jitted matmul on the default device (float32 accumulation)."""
  key = (str(jnp.dtype(dtype)), n)
  if key in _MEASURED:
    return _MEASURED[key]
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  f(a, a).block_until_ready()
  best = float('inf')
  for _ in range(reps):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  _MEASURED[key] = 2 * n ** 3 / best
  return _MEASURED[key]


def _same_host_processes() -> bool:
  """Whether every process runs on this host (started by `--local_processes`, scaling/train/distributed.py)."""
  return bool(os.environ.get('SCALING_LAUNCHER_PID'))


def mfu(flops_per_token: float, tokens_per_s: float, peak_per_device: float,
        devices: int) -> tuple[float | None, bool]:
  """(model FLOPs utilisation capped at 1, whether it was capped: the peak was an underestimate).
  (None, False) when the peak is unknown (0: device_peak_flops found no row): MFU is then not reported."""
  if not peak_per_device > 0:
    return None, False
  raw = flops_per_token * tokens_per_s / (peak_per_device * devices)
  return min(raw, 1.0), raw > 1.0


_WARNED: set = set()


def device_peak_flops(dtype: str, override: float = 0.0) -> tuple[float, str]:
  """(peak FLOP/s per device, where it came from): config override, the table, or a measurement.

  A device kind the table (scaling/base/hardware.py) does not know gives (0.0, 'unknown ...') and a
  one-line warning: MFU is then left out rather than computed against another chip's peak.
  """
  if override > 0:
    return override, 'config'
  dev = jax.devices()[0]
  kind = getattr(dev, 'device_kind', '')
  chip = hardware.chip_of(kind) if dev.platform != 'cpu' else None
  if chip is not None:
    return chip.peaks.get(dtype, chip.peaks['bfloat16']), f'table ({chip.row})'
  if dev.platform == 'cpu':
    # fake CPU devices share the same cores: the peak of the host is split between them, and between
    # the processes `--local_processes` started on this one host
    share = max(jax.local_device_count(), 1) * (jax.process_count() if _same_host_processes() else 1)
    return measure_matmul_peak(jnp.dtype(dtype)) / share, 'measured'
  if kind not in _WARNED and jax.process_index() == 0:
    _WARNED.add(kind)
    print(f'warning: device kind {kind!r} ({dev.platform}) is not in scaling/base/hardware.py CHIPS: MFU is not '
          f'reported; set --config.train.peak_flops=<dense FLOP/s per device> (or add the chip to the table)',
          file=sys.stderr, flush=True)
  return 0.0, f'unknown device kind {kind!r}'
