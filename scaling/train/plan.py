"""`scaling plan`: the fastest setting of the knobs that change memory and speed but not the math, for a config
on a target (a TPU slice, several slices, N GPUs), found by compiling candidates ahead of time on this machine.

The knobs (Knobs): the mesh axis sizes (data, fsdp, tensor), model.remat, train.microbatches,
train.loss_chunk and, where the attention kernel takes one, model.attention_block_size. Each candidate is
the real train step compiled for the target by scaling/train/aot.py; what a compile yields (bytes per chip,
FLOPs, HBM traffic, collective bytes) is cached on disk under a key of the candidate's step fields, the
target and the jax/libtpu versions, so a re-run compiles nothing.

The step-time model (`estimate`), per chip, from the compiled program:

- compute: the step's executed FLOPs (hlo dots, loops x trip count, plus kernels) / chips / bf16 peak;
- memory: HBM bytes (XLA cost_analysis 'bytes accessed', scaled by hlo.memory_traffic's loop factor) /
  the chip's HBM bandwidth;
- collectives: the bytes each chip sends in the step's collectives (hlo.collective_bytes: ring algorithm)
  over ICI / NVLink at half the table's bidirectional figure (one direction), plus those crossing slices
  or nodes over the chip's DCN share;
- step = max(compute, memory) + collectives: compute and HBM traffic overlap (a roofline), collectives
  are counted as not overlapped (a pessimistic bound; XLA overlaps some), so the ranking favours settings
  that move fewer bytes between chips. MFU = the accounting's model FLOPs / (step x chips x peak).

The search (Planner.run) is pruned: per mesh it starts from the configured remat at one microbatch; a
setting that fits tries less recomputation, one that does not tries more remat and as many microbatches as
its memory curve (a + b / microbatches, fitted on two compiles) says are needed; meshes go from the most
fsdp (least memory) towards data parallelism and stop when a mesh no longer fits or gets slower, tensor
parallelism grows while it helps. The winner's loss_chunk and attention block size are refined last.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

from scaling.base import files
from scaling.base.hardware import GiB
from scaling.train import aot

REMATS = ('none', 'dots', 'dots_except_mlp', 'full')   # least recomputation first
PLAN_VERSION = 'plan-v1'
KNOB_FIELDS = {'data': 'mesh.data', 'fsdp': 'mesh.fsdp', 'tensor': 'mesh.tensor', 'remat': 'model.remat',
               'microbatches': 'train.microbatches', 'loss_chunk': 'train.loss_chunk',
               'block_size': 'model.attention_block_size'}
# train fields that change no compiled figure (traced scalars, schedule lengths, logging): left out of the key
_NOT_STEP = ('lr', 'min_lr_ratio', 'b1', 'b2', 'eps', 'weight_decay', 'init_seed', 'seed', 'steps', 'tokens',
             'warmup_steps', 'decay_steps', 'log_every', 'eval_every', 'eval_batches', 'ckpt_every',
             'keep_checkpoints', 'ckpt_steps', 'init_from', 'peak_flops')


@dataclasses.dataclass(frozen=True)
class Knobs:
  data: int
  fsdp: int
  tensor: int
  remat: str
  microbatches: int
  loss_chunk: int
  block_size: int

  def overrides(self) -> dict:
    return {field: getattr(self, k) for k, field in KNOB_FIELDS.items()}

  def label(self) -> str:
    return (f'd{self.data} f{self.fsdp} t{self.tensor} remat={self.remat} mb={self.microbatches} '
            f'chunk={self.loss_chunk} block={self.block_size}')


def knobs_of(cfg, t: aot.Target) -> Knobs:
  """The knobs as cfg sets them (mesh -1 filled for the slice)."""
  from scaling.train import sharding
  data, fsdp, tensor = sharding.mesh_shape(cfg.mesh, t.chips_per_slice)
  return Knobs(data, fsdp, tensor, cfg.model.remat, cfg.train.microbatches, cfg.train.get('loss_chunk', 0),
               cfg.model.attention_block_size)


def apply_knobs(cfg, k: Knobs):
  """A target_config copy of cfg with the knobs set."""
  import copy
  cfg = copy.deepcopy(cfg)
  with cfg.unlocked():
    for name, field in KNOB_FIELDS.items():
      section, key = field.split('.')
      cfg[section][key] = getattr(k, name)
  return aot.target_config(cfg)


# ----------------------------------------------------------------------------- the step-time model
def estimate(fig: dict, t: aot.Target) -> dict:
  """Seconds per step of a compiled candidate and its parts (see the module docstring); None parts when
  the compiler refused the step (no program to read)."""
  chip = t.chip
  compute = fig['flops'] / t.chips / chip.peak_flops
  if fig.get('hbm_bytes') is None:
    return dict(compute_s=compute, memory_s=None, ici_s=None, dcn_s=None, collective_s=None, step_s=None, mfu=None)
  memory = fig['hbm_bytes'] / chip.hbm_bandwidth if chip.hbm_bandwidth else 0.0
  ici = fig['ici_wire_bytes'] / (chip.ici_bandwidth / 2) if chip.ici_bandwidth else 0.0
  dcn = fig['dcn_wire_bytes'] / chip.dcn_bandwidth if chip.dcn_bandwidth else 0.0
  step = max(compute, memory) + ici + dcn
  mfu = fig['accounting_flops'] / (step * t.chips * chip.peak_flops) if step else None
  return dict(compute_s=compute, memory_s=memory, ici_s=ici, dcn_s=dcn, collective_s=ici + dcn, step_s=step, mfu=mfu)


# ----------------------------------------------------------------------------- one candidate, compiled or cached
def versions() -> dict:
  import importlib.metadata

  import jax
  try:
    libtpu = importlib.metadata.version('libtpu')
  except importlib.metadata.PackageNotFoundError:
    libtpu = ''
  return dict(jax=jax.__version__, libtpu=libtpu)


def step_fields(cfg) -> dict:
  """What of a resolved config the compiled step depends on: model, mesh, train less _NOT_STEP, the masking."""
  from scaling.config.load import to_dict
  d = to_dict(cfg)
  train = {k: v for k, v in d.get('train', {}).items() if k not in _NOT_STEP}
  return dict(model=d['model'], mesh=d['mesh'], train=train,
              document_masking=d.get('data', {}).get('document_masking', False))


def candidate_key(cfg, t: aot.Target) -> str:
  blob = json.dumps([step_fields(cfg), t.topology, t.num_slices, aot._host_chips(t), versions(), PLAN_VERSION],
                    sort_keys=True, default=str)
  return files.sha256_bytes(blob.encode())[:32]


def compile_figures(cfg, t: aot.Target, devices=None) -> dict:
  """What `estimate` and the fit need, of cfg (already a target_config) compiled for t; {'error': ...} when
  the step cannot be built for the target (a mesh or block size it refuses)."""
  from scaling.config.load import ConfigError
  try:
    c = aot.compile_step(cfg, t, devices)
  except (aot.AotError, ConfigError) as e:
    return dict(error=str(e)[:300])
  r = aot.report(c, cfg, t)
  fig = dict(bytes=r['bytes_per_chip']['total'], hbm=r['hbm_bytes_per_chip'], refused=c.memory is None,
             flops=r['xla_flops_per_step'], accounting_flops=r['accounting_flops_per_step'],
             compile_s=c.compile_s, note=r['note'], hbm_bytes=None, ici_wire_bytes=None, dcn_wire_bytes=None,
             aot_cached=c.cached)
  if c.traffic:
    fig.update({k: c.traffic[k] for k in ('hbm_bytes', 'bytes_accessed_xla', 'loop_factor', 'ici_wire_bytes',
                                          'dcn_wire_bytes', 'collectives')})
  return fig


class Cache:
  """Candidates' figures on disk (one JSON file each), keyed by candidate_key."""

  def __init__(self, path: str | None):
    self.path = path
    if path:
      os.makedirs(path, exist_ok=True)

  def get(self, key: str) -> dict | None:
    if not self.path:
      return None
    try:
      with open(os.path.join(self.path, key + '.json')) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def put(self, key: str, fig: dict) -> None:
    if self.path:
      files.atomic_write_json(os.path.join(self.path, key + '.json'), fig)


def default_cache_dir() -> str:
  return os.path.join(os.environ.get('SCALING_CACHE', os.path.expanduser('~/.cache/scaling')), 'plan')


def compiling_evaluator(cfg, t: aot.Target, cache: Cache, devices=None):
  """evaluate(knobs) -> (figures, from_cache): the candidate's figures from the cache, else compiled (and kept)."""
  state = {'devices': devices}

  def evaluate(k: Knobs) -> tuple[dict, bool]:
    try:
      ck = apply_knobs(cfg, k)
    except ValueError as e:   # ConfigError: a setting the config refuses
      return dict(error=str(e)[:300]), False
    key = candidate_key(ck, t)
    fig = cache.get(key)
    if fig is not None:
      return fig, True
    if state['devices'] is None:
      state['devices'] = aot.target_devices(t)
    fig = compile_figures(ck, t, state['devices'])
    cache.put(key, fig)
    return fig, bool(fig.get('aot_cached'))   # figures `scaling compile` had kept: lowered, not compiled
  return evaluate


# ----------------------------------------------------------------------------- the search
class _Budget(Exception):
  """The candidate budget is spent."""


def _pow2_divisors(n: int) -> list[int]:
  return [d for d in (1 << i for i in range(n.bit_length())) if n % d == 0]


class Planner:
  """The pruned search over one config's knobs on one target (see the module docstring).

  evaluate(knobs) -> (figures, from_cache) compiles (or reads) a candidate; hbm overrides the chip's HBM
  (bytes) as the fit's limit. After run(): rows (every candidate with its figures, estimate and verdict)
  and winner (the fastest that fits, or None)."""

  def __init__(self, cfg, t: aot.Target, evaluate, *, hbm: int | None = None, max_candidates: int = 24,
               refine: bool = True, log=lambda *a: None):
    self.cfg, self.t, self.evaluate, self.log = cfg, t, evaluate, log
    self.base = knobs_of(cfg, t)
    self.hbm, self.max_candidates, self.refine_knobs = hbm, max_candidates, refine
    self.batch = cfg.train.batch_size
    self.rows: dict = {}
    self.compiled, self.compile_s, self.t0 = 0, 0.0, time.time()
    self.stopped = ''

  # --- one candidate
  def limit(self, fig: dict) -> int:
    return self.hbm or fig['hbm']

  def fits(self, row: dict | None) -> bool:
    return bool(row) and row['verdict'] == 'fits'

  def valid(self, k: Knobs) -> bool:
    m = self.cfg.model
    dp = k.data * k.fsdp * self.t.num_slices
    return (k.data * k.fsdp * k.tensor == self.t.chips_per_slice and self.batch % (dp * k.microbatches) == 0
            and m.num_kv_heads % k.tensor == 0 and m.num_heads % k.tensor == 0
            and m.seq_len % min(k.block_size, m.seq_len) == 0)

  def try_(self, k: Knobs) -> dict | None:
    """The candidate's row (compiled or cached now, or seen before); None when the knobs are invalid."""
    if k in self.rows:
      return self.rows[k]
    if not self.valid(k):
      return None
    if len(self.rows) >= self.max_candidates:
      raise _Budget
    fig, cached = self.evaluate(k)
    if 'error' in fig:
      row = dict(knobs=k, fig=fig, est={}, verdict='error', cached=cached)
    else:
      est = estimate(fig, self.t)
      ok = not fig.get('refused') and fig['bytes'] <= self.limit(fig)
      row = dict(knobs=k, fig=fig, est=est, verdict='fits' if ok else 'too big', cached=cached)
    self.rows[k] = row
    if not cached and 'compile_s' in fig:
      self.compiled += 1
      self.compile_s += fig['compile_s']
    self.progress(row)
    return row

  def progress(self, row: dict) -> None:
    i, n = len(self.rows), self.max_candidates
    per = self.compile_s / self.compiled if self.compiled else 0.0
    rate = 60 * i / max(time.time() - self.t0, 1e-9)
    fig = row['fig']
    what = (f'error: {fig["error"][:80]}' if row['verdict'] == 'error' else
            f'{fig["bytes"] / GiB:.2f} of {self.limit(fig) / GiB:.1f} GiB, {row["verdict"]}' +
            (f', est {row["est"]["step_s"] * 1e3:.4g} ms' if row['est'].get('step_s') else ''))
    self.log(f'[plan] candidate {i} of <={n}: {row["knobs"].label()}: {what}'
             f' ({"cached" if row["cached"] else "compiled"}; {rate:.2g}/min, ETA <= {(n - i) * per / 60:.0f} min)')

  @staticmethod
  def speed(row: dict | None) -> float:
    """The estimated step (compute alone where the program's traffic could not be read); inf unless it fits."""
    if not row or row['verdict'] != 'fits':
      return math.inf
    return row['est'].get('step_s') or row['est'].get('compute_s') or math.inf

  def best(self, rows) -> dict | None:
    rows = [r for r in rows if r is not None and self.fits(r)]
    return min(rows, key=self.speed) if rows else None

  # --- the search
  def run(self) -> dict | None:
    try:
      self.try_(self.base)
      self.search_meshes()
      if self.refine_knobs:
        self.refine()
    except _Budget:
      self.stopped = f'stopped at the budget of {self.max_candidates} candidates (--max_candidates)'
    return self.winner

  @property
  def winner(self) -> dict | None:
    return self.best(self.rows.values())

  def meshes(self, tensor: int) -> list[tuple[int, int, int]]:
    """(data, fsdp, tensor) for this tensor size, the most fsdp (least memory per chip) first."""
    rest = self.t.chips_per_slice // tensor
    return [(rest // f, f, tensor) for f in sorted(_pow2_divisors(rest), reverse=True)]

  def search_meshes(self) -> None:
    prev_best = None
    for tensor in _pow2_divisors(self.t.chips_per_slice):
      best_t = None
      for data, fsdp, _ in self.meshes(tensor):
        k = dataclasses.replace(self.base, data=data, fsdp=fsdp, tensor=tensor)
        if not self.valid(dataclasses.replace(k, microbatches=1)):
          continue
        r = self.best_for_mesh(k)
        if r is None:     # less fsdp only holds more per chip
          break
        if best_t is not None and self.speed(r) >= self.speed(best_t):
          break           # moving parameters from fsdp to data made it slower
        best_t = r
      if best_t is None and prev_best is not None:
        break
      if prev_best is not None and self.speed(best_t) >= self.speed(prev_best):
        break             # more tensor parallelism did not help
      prev_best = best_t if best_t is not None else prev_best

  def best_for_mesh(self, k: Knobs) -> dict | None:
    """The fastest fitting setting of remat and microbatches on k's mesh (None: none found)."""
    r0 = self.base.remat if self.base.remat in REMATS else 'none'
    i0 = REMATS.index(r0)
    first = self.try_(dataclasses.replace(k, remat=r0, microbatches=1))
    if first is None or first['verdict'] == 'error':
      return None
    if self.fits(first):   # fits: less recomputation while it still fits
      best = first
      for r in reversed(REMATS[:i0]):
        row = self.try_(dataclasses.replace(k, remat=r, microbatches=1))
        if not self.fits(row):
          break
        best = self.best([best, row])
      return best
    found = []
    for r in REMATS[i0 + 1:]:   # more remat at one microbatch, until one fits
      row = self.try_(dataclasses.replace(k, remat=r, microbatches=1))
      if self.fits(row):
        found.append(row)
        break
    mb = self.fit_microbatches(dataclasses.replace(k, remat=r0), first)
    if mb is None and not found and r0 != 'full':
      mb = self.fit_microbatches(dataclasses.replace(k, remat='full'),
                                 self.try_(dataclasses.replace(k, remat='full', microbatches=1)))
    return self.best(found + [mb])

  def fit_microbatches(self, k: Knobs, first: dict | None) -> dict | None:
    """The fewest microbatches that fit on k's mesh and remat: two compiles fit bytes(m) = a + b / m, then the
    predicted m (rounded up to a divisor of the per-device batch) and, if it still does not fit, doublings."""
    if first is None or first['verdict'] == 'error':
      return None
    most = self.batch // (k.data * k.fsdp * self.t.num_slices)
    options = [m for m in _pow2_divisors(most) if m > 1]
    if not options:
      return None
    second = self.try_(dataclasses.replace(k, microbatches=options[0]))
    if second is None or second['verdict'] == 'error' or self.fits(second):
      return second if self.fits(second) else None
    limit = self.limit(second['fig'])
    b = (first['fig']['bytes'] - second['fig']['bytes']) * options[0] / (options[0] - 1)
    a = first['fig']['bytes'] - b
    if b <= 0 or a >= limit:
      return None   # more microbatches do not shrink it below the HBM
    need = b / (limit - a)
    for m in (m for m in options[1:] if m >= need or m == options[-1]):
      row = self.try_(dataclasses.replace(k, microbatches=m))
      if self.fits(row):
        return row
    return None

  def refine(self) -> None:
    """The winner's loss_chunk (x4, /4) and attention block size (x2, /2 where the kernel takes one)."""
    w = self.winner
    if w is None:
      return
    k, m = w['knobs'], self.cfg.model
    if k.loss_chunk:
      for c in (k.loss_chunk * 4, k.loss_chunk // 4):
        self.try_(dataclasses.replace(k, loss_chunk=c))
    if takes_block_size(self.cfg, self.t):
      for bs in (k.block_size * 2, k.block_size // 2):
        if 128 <= bs <= m.seq_len:
          self.try_(dataclasses.replace(self.winner['knobs'], block_size=bs))

  def table_rows(self) -> list[dict]:
    """Every candidate, the fitting ones fastest first, then the rest by bytes per chip."""
    rows = list(self.rows.values())
    return (sorted([r for r in rows if self.fits(r)], key=self.speed)
            + sorted([r for r in rows if r['verdict'] == 'too big'], key=lambda r: r['fig']['bytes'])
            + [r for r in rows if r['verdict'] == 'error'])

  def closest(self) -> dict | None:
    big = [r for r in self.rows.values() if r['verdict'] == 'too big']
    return min(big, key=lambda r: r['fig']['bytes'] / self.limit(r['fig'])) if big else None


def takes_block_size(cfg, t: aot.Target) -> bool:
  """Whether the attention kernel the step runs on t reads model.attention_block_size."""
  a = cfg.model.attention
  return a in ('blockwise', 'splash') or (a == 'auto' and t.chip.platform == 'tpu' and cfg.model.seq_len >= 128)


def plan(cfg, t: aot.Target, *, cache_dir: str | None = None, hbm: int | None = None, max_candidates: int = 24,
         refine: bool = True, log=lambda *a: None, devices=None) -> Planner:
  """Plans cfg (a loaded config) on t with real compiles; the Planner holds the rows and the winner."""
  cfg = aot.target_config(cfg)
  evaluate = compiling_evaluator(cfg, t, Cache(cache_dir or default_cache_dir()), devices)
  p = Planner(cfg, t, evaluate, hbm=hbm, max_candidates=max_candidates, refine=refine, log=log)
  p.run()
  return p
