"""Checkpoints with orbax: asynchronous saves, keep-last-k, restore onto any mesh.

Layout of a workdir::

    config.json                 the resolved config of the run
    tokenizer/                  the tokenizer (tokenizer.json + model file), for sample/eval/export
    checkpoints/<step>/
        params/                 float32 master weights (orbax, sharded arrays)
        opt_state/              optimizer state (Adam moments, counters)
        meta/                   JSON: step, rng seed, model dims, tokens seen
        data/                   JSON: the data iterator's state (resume gives the same next batches)

Params and optimizer state are separate items so inference restores only the
params. Restoring takes an abstract target (shapes, dtypes, shardings), so a
checkpoint written on one mesh restores onto another (orbax reshards), and by
any number of processes. A save interrupted midway is never listed: orbax
finalises a step directory atomically, and incomplete ones are ignored.

A committed step can still be damaged later (a truncated copy, a lost file, a
full disk when a metadata file was rewritten, flipped bytes): every step gets a
manifest, ``<step>/checksums.json`` (the sha256 and size of every file of the
step, relative paths), written once orbax has committed it (see `seal`). Before
a step is used (`check_step`: train's resume, a branch's source, eval/sample/
export) its files are checked against it; a step saved before checksums existed
(no manifest) is checked as before: every item read back. `select_resume_step`
(train) walks back to the newest intact step, moving each damaged one to
``checkpoints-damaged/`` (kept, outside orbax's directory); inference skips it.

orbax reports a failed save by logging its traceback from each thread it passes
through (~330 lines for a full disk) before raising it: those logged copies are
dropped here (`_OrbaxNoise`); the exception itself becomes one CheckpointError line.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys

import jax
import orbax.checkpoint as ocp

from scaling.base.files import atomic_write_json, is_temp_name, sha256_file
from scaling.config.load import position_rows

CKPT_DIR = 'checkpoints'
TOKENIZER_DIR = 'tokenizer'
ITEMS = ('params', 'opt_state', 'meta', 'data')
IMPORTED_DIR = 'imported_params'   # params written by `scaling import`; training starts from them


class CheckpointError(ValueError):
  pass


# ----------------------------------------------------------------------------- orbax's logging
_ORBAX_DIR = str(pathlib.Path(ocp.__file__).parent)


class _OrbaxNoise(logging.Filter):
  """Drops orbax's log records below WARNING and every one that carries a traceback.

  A failed save is logged by orbax with its traceback from each thread it passes through, then raised: the
  raise reaches Manager (save, wait_until_finished, check_pending_save), which says it in one line (save_failed).
  Its warnings and errors without a traceback still show. Records of other libraries are untouched.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    if not record.pathname.startswith(_ORBAX_DIR):
      return True
    return record.levelno >= logging.WARNING and not record.exc_info


def _drop_closed_loop_noise(hook):
  """sys.unraisablehook that drops 'Event loop is closed' (tensorstore's callbacks into an asyncio loop that
  a failed orbax write has closed: printed once per pending write); everything else goes to `hook`."""
  def unraisable(u):
    if not (u.exc_type is RuntimeError and str(u.exc_value) == 'Event loop is closed'):
      hook(u)
  unraisable.scaling_quiet = True
  return unraisable


def quiet_orbax() -> None:
  """Installs _OrbaxNoise on absl's logger (orbax logs through absl) and the unraisable hook; idempotent."""
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _OrbaxNoise) for f in absl_logger.filters):
    absl_logger.addFilter(_OrbaxNoise())
  if not getattr(sys.unraisablehook, 'scaling_quiet', False):
    sys.unraisablehook = _drop_closed_loop_noise(sys.unraisablehook)


quiet_orbax()   # this module is the project's one door to orbax: from its import on


# orbax saves a replicated array replica-parallel: each of its R replicas writes 1/R of it, cut out on its
# device by an eager slice, which XLA compiles once per array shape and device at a process's first save (64
# compiles, ~3 CPU-s, for a 2-layer model on 8 CPU devices: a fifth of a test's tiny `scaling train`). A slice
# under this many bytes gains nothing from that: such an array is written whole by one replica (orbax's
# min_slice_bytes_for_replica_parallel), larger ones are still split. The values saved are the same; only the
# chunking of the small arrays' files differs, which restore reads either way.
REPLICA_PARALLEL_MIN_BYTES = 1 << 20


def _set_replica_parallel_min_bytes() -> None:
  """Sets REPLICA_PARALLEL_MIN_BYTES on orbax's registered jax.Array handler (its constructor argument; a new
  handler would log a warning when registered). tests/test_checkpoint.py checks that a save of small
  replicated arrays compiles nothing."""
  ocp.type_handlers.get_type_handler(jax.Array)._min_slice_bytes_for_replica_parallel = REPLICA_PARALLEL_MIN_BYTES


_set_replica_parallel_min_bytes()


def manager(workdir, *, keep: int = 2, keep_steps=(), save_every: int = 1,
            async_save: bool = True) -> ocp.CheckpointManager:
  """`keep`: the newest checkpoints kept; `keep_steps`: steps kept besides them (cooldown branches' forks)."""
  path = pathlib.Path(workdir).absolute() / CKPT_DIR
  kept = dict(max_to_keep=keep)
  if keep_steps:
    from orbax.checkpoint import checkpoint_managers as cms
    kept = dict(preservation_policy=cms.AnyPreservationPolicy(
        [cms.LatestN(keep), cms.CustomSteps(sorted(int(s) for s in keep_steps))]))
  opts = ocp.CheckpointManagerOptions(**kept, save_interval_steps=1, create=True,
                                      enable_async_checkpointing=async_save)
  return Manager(path, options=opts, item_names=ITEMS, keep=keep)


class Manager(ocp.CheckpointManager):
  """orbax's CheckpointManager whose failed saves raise one clear CheckpointError.

  An asynchronous save that fails (a full disk, a lost mount) fails in a background thread; orbax
  raises its error at the next save, wait_until_finished, check_for_errors or close, as a long
  tensorstore message. Here it says which step was not saved, why, which complete checkpoint the
  run can resume from, and (for a full disk) how much room a save needs.
  """

  def __init__(self, *args, keep: int = 2, **kwargs):
    super().__init__(*args, **kwargs)
    self.keep = keep

  def _finalize(self, step: int, steps_to_remove):
    """orbax's last act of a save (asynchronous saves: in its finalize thread, so the hashing overlaps
    training), after the step is committed: the manifest of its files (process 0 writes it). An error here
    fails the save as any other does. A private method of orbax (0.12): were it renamed, no manifest would be
    written and tests/test_checksums.py::test_every_file_of_a_saved_step_is_in_its_manifest fails."""
    super()._finalize(step, steps_to_remove)
    step_dir = pathlib.Path(self.directory) / str(step)
    if jax.process_index() == 0 and (step_dir / COMMIT_MARKER).is_file():
      seal(step_dir)

  def pending_step(self) -> int | None:
    """The step of the last asynchronous save whose finalize thread orbax still holds (running or ended)."""
    t = self._finalize_thread.get()
    return t.step() if t is not None else None

  def save(self, step: int, *args, **kwargs) -> bool:
    try:
      return super().save(step, *args, **kwargs)
    except CheckpointError:
      raise
    except Exception as e:   # noqa: BLE001 -- any failure of a save is reported the same way
      raise save_failed(self, e, step) from e

  def wait_until_finished(self):
    step = self.pending_step()
    try:
      return super().wait_until_finished()
    except CheckpointError:
      raise
    except Exception as e:   # noqa: BLE001
      raise save_failed(self, e, step) from e

  def check_for_errors(self):
    try:
      return super().check_for_errors()
    except CheckpointError:
      raise
    except Exception as e:   # noqa: BLE001
      raise save_failed(self, e) from e


def check_pending_save(mgr) -> None:
  """Raises (as save_failed's one CheckpointError) the error of an asynchronous save that failed in the background;
  returns at once when it is still running, succeeded, or there is none. Non-blocking and cheap (a thread's state):
  the trainer calls it after every step, so a failed save stops the run at the first step after it failed instead
  of at the next save (up to 2 x ckpt_every steps later). What is lost: the steps since the last complete save."""
  t = mgr._finalize_thread.get() if isinstance(mgr, Manager) else None   # noqa: SLF001 -- orbax keeps it there
  if t is not None and not t.is_alive() and t.exception is not None:
    mgr.wait_until_finished()   # raises it (and orbax forgets the failed step)


def _tree_bytes(path: pathlib.Path) -> int:
  return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def save_failed(mgr: Manager, e: BaseException, step: int | None = None) -> CheckpointError:
  """The error for a save that failed: the step, the cause, what is kept, and what to do."""
  import errno
  import re
  import shutil

  ckpt_dir = pathlib.Path(mgr.directory)
  text = str(e)
  m = re.search(r'/(\d+)\.orbax-checkpoint-tmp', text)
  step = int(m.group(1)) if m else step
  what = f'step {step}' if step is not None else 'a step'
  full = (getattr(e, 'errno', None) == errno.ENOSPC or 'No space left on device' in text
          or "os_error_code='28'" in text)
  steps = _committed_steps(ckpt_dir)
  kept = (f'the last complete checkpoint, step {steps[0]} ({ckpt_dir / str(steps[0])}), is intact'
          if steps else 'no complete checkpoint was written yet')
  if full:
    free = shutil.disk_usage(ckpt_dir).free if ckpt_dir.exists() else 0
    size = _tree_bytes(ckpt_dir / str(steps[0])) if steps else 0
    need = f'; one checkpoint takes {size / 1e6:.1f} MB and a save needs room for {mgr.keep + 1}' if size else ''
    why = f'the disk is full ({free / 1e6:.1f} MB free in {ckpt_dir}{need})'
    fix = 'free space (cut-off saves, *.orbax-checkpoint-tmp*, can be deleted) or lower train.keep_checkpoints'
  else:
    why, fix = _error_line(e), 'fix the cause'
  return CheckpointError(f'saving the checkpoint of {what} failed: {why}. The steps trained since the last '
                         f'complete checkpoint are lost; {kept}. To resume from it, {fix}, then re-run the '
                         f'same command.')


def save(mgr: ocp.CheckpointManager, step: int, *, params, opt_state, meta: dict, data_state: dict | None,
         force: bool = False) -> bool:
  args = ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      opt_state=ocp.args.StandardSave(opt_state),
      meta=ocp.args.JsonSave(meta),
      data=ocp.args.JsonSave(data_state or {}),
  )
  return mgr.save(step, args=args, force=force)


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)), tree)


def read_meta(mgr: ocp.CheckpointManager, step: int, item: str = 'meta') -> dict:
  """A JSON item of a checkpoint: 'meta' (step, seed, model dims) or 'data' (the iterator state)."""
  return mgr.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]


def check_data_state(saved: dict, now: dict, workdir) -> None:
  """The data iterator resumes only with the loader settings it was saved with (else other batches)."""
  diff = [f'{k}: checkpoint {saved[k]!r} vs config {v!r}' for k, v in now.items() if k in saved and saved[k] != v]
  if diff:
    raise CheckpointError(f'{workdir} holds a run whose data iterator cannot resume with this config '
                          f'({"; ".join(diff)}). Keep the original settings, or use another --workdir.')


def restore(mgr: ocp.CheckpointManager, step: int, *, params_target, opt_target=None):
  """Restores params (and optimizer state, meta, data state) onto the shardings of the targets."""
  items = dict(params=ocp.args.StandardRestore(_abstract(params_target)), meta=ocp.args.JsonRestore(),
               data=ocp.args.JsonRestore())
  if opt_target is not None:
    items['opt_state'] = ocp.args.StandardRestore(_abstract(opt_target))
  out = mgr.restore(step, args=ocp.args.Composite(**items))
  return {k: out[k] for k in items}


def check_compatible(meta: dict, dims_dict: dict, workdir) -> None:
  """A checkpoint from another model must not be trained on (or overwritten) silently."""
  saved = meta.get('model') or {}
  keys = ('vocab_size', 'num_layers', 'd_model', 'num_heads', 'num_kv_heads', 'head_dim', 'd_ff', 'norm',
          'position', 'mlp', 'tied_embeddings', 'parametrization')
  if {'mup', 'completep'} & {saved.get('parametrization'), dims_dict.get('parametrization')}:   # the base shape
    keys += ('mup_base_width', 'mup_base_head_dim', 'mup_base_depth')   # scales the forward and the lr (sp: unused)
  diff = [f'{k}: checkpoint {saved.get(k)!r} vs config {dims_dict.get(k)!r}' for k in keys
          if k in saved and saved.get(k) != dims_dict.get(k)]
  if 'seq_len' in saved and saved.get('position') == dims_dict.get('position') == 'learned':
    rows = position_rows(saved), position_rows(dims_dict)   # checkpoints from before position_table: seq_len
    if rows[0] != rows[1]:
      diff.append(f'learned-position table rows (model.position_table, 0 = seq_len): checkpoint {rows[0]} vs '
                  f'config {rows[1]}')
  if diff:
    raise CheckpointError(f'{workdir} holds a checkpoint of an incompatible model ({"; ".join(diff)}). '
                          f'Use another --workdir, or delete {pathlib.Path(workdir) / CKPT_DIR} to start over.')


def latest_step(workdir) -> int | None:
  path = pathlib.Path(workdir) / CKPT_DIR
  if not path.exists():
    return None
  mgr = ocp.CheckpointManager(path.absolute(), item_names=ITEMS)
  step = mgr.latest_step()
  mgr.close()
  return step


# ----------------------------------------------------------------------------- choosing the step to resume from
DAMAGED_DIR = 'checkpoints-damaged'   # beside CKPT_DIR, so orbax never lists what is moved there
COMMIT_MARKER = 'commit_success.txt'   # written by orbax into a step (and each item) just before it is committed
ARRAY_ITEMS = ('params', 'opt_state')
JSON_ITEMS = ('meta', 'data')
VERIFY_BATCH_BYTES = 1 << 30   # arrays are read to host this many bytes at a time, then dropped


def _error_line(e: BaseException) -> str:
  lines = [s for s in str(e).strip().splitlines() if s.strip()]
  text = lines[-1] if lines else ''
  text = f'{type(e).__name__}: {text}' if text else type(e).__name__
  return text if len(text) <= 240 else text[:237] + '...'


def _open_array(item_dir: pathlib.Path, name: str, ctx):
  """The tensorstore of one saved array: orbax's zarr layout, inside OCDBT (the default) or plain files."""
  import tensorstore as ts
  if (item_dir / 'manifest.ocdbt').exists():
    kvstore = {'driver': 'ocdbt', 'base': f'file://{item_dir}', 'path': name}
  else:
    kvstore = {'driver': 'file', 'path': str(item_dir / name)}
  try:
    return ts.open({'driver': 'zarr', 'kvstore': kvstore}, open=True, read=True, context=ctx).result()
  except ValueError as e:   # written as zarr v3 (orbax's use_zarr3)?
    try:
      return ts.open({'driver': 'zarr3', 'kvstore': kvstore}, open=True, read=True, context=ctx).result()
    except ValueError:
      raise e from None


def _read_arrays(item_dir: pathlib.Path, batch_bytes: int) -> None:
  """Reads every array of a pytree item to host memory, at most `batch_bytes` at a time, and drops it.

  The list of arrays (names, shapes, dtypes) comes from the item's own metadata, so no model or mesh is
  needed. The arrays are read with tensorstore directly, one at a time and synchronously: no orbax
  Checkpointer (whose restore is a cross-process barrier, so one process can check while the others
  wait) and no asyncio loop (whose in-flight reads print "Event loop is closed" after a failure).
  """
  import numpy as np
  import tensorstore as ts
  from etils import epath

  tree = ocp.PyTreeCheckpointHandler().metadata(epath.Path(item_dir)).tree
  ctx = ts.Context()
  for m in jax.tree.leaves(tree):
    store = _open_array(item_dir, m.name, ctx)
    if tuple(store.shape) != tuple(m.shape):
      raise CheckpointError(f'{m.name} has shape {tuple(store.shape)}, its metadata says {tuple(m.shape)}')
    row_bytes = int(np.prod(m.shape[1:])) * np.dtype(store.dtype.numpy_dtype).itemsize
    rows = max(1, batch_bytes // max(row_bytes, 1)) if m.shape else 1
    for start in range(0, m.shape[0], rows) if m.shape else [None]:
      (store if start is None else store[start:min(start + rows, m.shape[0])]).read().result()


# ----------------------------------------------------------------------------- checksums
MANIFEST = 'checksums.json'   # in each step directory, beside orbax's files (orbax reads only its items)


def _file_sums(step_dir: pathlib.Path) -> dict:
  """{relative path: {'bytes', 'sha256'}} of every file under step_dir but the manifest and temporary files."""
  out = {}
  for p in sorted(step_dir.rglob('*')):
    if p.is_file() and p.name != MANIFEST and not is_temp_name(p.name):
      out[p.relative_to(step_dir).as_posix()] = {'bytes': p.stat().st_size, 'sha256': sha256_file(p)}
  return out


def seal(step_dir) -> None:
  """Writes the manifest of a committed step (atomically: a reader sees none or all of it). Called by
  Manager once orbax has committed the step; nothing in the step changes after that."""
  step_dir = pathlib.Path(step_dir)
  atomic_write_json(step_dir / MANIFEST, {'algorithm': 'sha256', 'files': _file_sums(step_dir)}, indent=0)


def _bad_file(rel: str, detail: str) -> tuple[str, str]:
  item = rel.split('/', 1)[0]
  return (f'bad-{item}' if item in ITEMS else 'bad-step'), f'{rel} {detail}'


def verify_sums(step_dir) -> tuple[str, str] | None:
  """(reason, detail naming the file) for the first file of a sealed step that is missing, of another size or
  other bytes than when it was saved; None when all match. A step without a manifest (saved before checksums
  existed, or cut off between orbax's commit and the manifest) is None here: check_step reads it back instead."""
  step_dir = pathlib.Path(step_dir)
  path = step_dir / MANIFEST
  if not path.is_file():
    return None
  try:
    files = json.loads(path.read_text())['files']
    want = {str(rel): (int(v['bytes']), str(v['sha256'])) for rel, v in files.items()}
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    return 'bad-checksums', f'{MANIFEST} unreadable ({_error_line(e)}), so its files cannot be checked'
  for rel, (size, _) in want.items():   # sizes first: a truncated or lost file is found without reading any
    try:
      now = (step_dir / rel).stat().st_size
    except FileNotFoundError:
      return _bad_file(rel, f'is missing (listed in {MANIFEST})')
    if now != size:
      return _bad_file(rel, f'has {now} bytes, {size} when saved ({"truncated" if now < size else "grown"})')
  for rel, (_, digest) in want.items():
    if sha256_file(step_dir / rel) != digest:
      return _bad_file(rel, f'does not match its sha256 in {MANIFEST} (bytes changed since the save)')
  return None


def check_step(step_dir, *, batch_bytes: int = VERIFY_BATCH_BYTES) -> tuple[str, str] | None:
  """None if the committed step `step_dir` restores completely, else (short reason, one-line detail).

  Complete = orbax's commit marker in the step and in each item; every file as its manifest says (verify_sums);
  the JSON items parsed (meta's step matching the directory name). A step without a manifest (saved before
  checksums existed) is accepted with the checks of then: every array of params and opt_state read back (which
  finds a truncated or lost file, not flipped bytes). A sealed step is not read back: its sums cover every byte.
  """
  step_dir = pathlib.Path(step_dir).absolute()   # tensorstore and orbax take absolute paths only
  if not (step_dir / COMMIT_MARKER).is_file():
    return 'uncommitted', f'no {COMMIT_MARKER}: the save did not finish'
  for item in ITEMS:
    if not (step_dir / item).is_dir():
      return f'no-{item}', f'the {item} item is missing'
    if not (step_dir / item / COMMIT_MARKER).is_file():
      return f'uncommitted-{item}', f'no {COMMIT_MARKER} in {item}: its save did not finish'
  sealed = (step_dir / MANIFEST).is_file()
  if sealed and (bad := verify_sums(step_dir)) is not None:
    return bad
  for item in JSON_ITEMS:
    try:
      value = ocp.JsonCheckpointHandler().restore(step_dir / item)
    except Exception as e:   # noqa: BLE001 -- anything that stops the read is damage
      return f'bad-{item}', f'{item} unreadable ({_error_line(e)})'
    if not isinstance(value, dict):
      return f'bad-{item}', f'{item} is not a JSON object'
    if item == 'meta' and 'step' in value and str(value['step']) != step_dir.name:
      return 'bad-meta', f'meta says step {value["step"]}'
  for item in ARRAY_ITEMS if not sealed else ():
    try:
      _read_arrays(step_dir / item, batch_bytes)
    except MemoryError:
      raise
    except Exception as e:   # noqa: BLE001
      return f'bad-{item}', f'{item} unreadable ({_error_line(e)})'
  return None


def first_intact(ckpt_dir, candidates) -> tuple[int | None, list[tuple[int, str, str]]]:
  """(the first of `candidates` (steps, in the order to try) that check_step finds intact, or None;
  [(step, reason, detail)] of those before it that are damaged). Reads only: the one fallback of every caller
  (train's resume, a branch's source, eval/sample/export)."""
  damaged = []
  for step in candidates:
    bad = check_step(pathlib.Path(ckpt_dir) / str(step))
    if bad is None:
      return step, damaged
    damaged.append((step, *bad))
  return None, damaged


def _committed_steps(ckpt_dir: pathlib.Path) -> list[int]:
  """Step directories orbax would list (all-digit names), newest first; tmp dirs of cut-off saves are not."""
  if not ckpt_dir.is_dir():
    return []
  return sorted((int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit() and p.is_dir()), reverse=True)


def _scan(workdir: pathlib.Path, log) -> tuple[int | None, list[tuple[int, str, str]]]:
  """(newest intact step or None, [(step, reason, detail)] of the newer damaged ones); nothing is changed."""
  ckpt_dir = workdir / CKPT_DIR
  steps = _committed_steps(ckpt_dir)
  newest = steps[0] if steps else -1
  for p in sorted(ckpt_dir.glob('*.orbax-checkpoint-tmp*')) if ckpt_dir.is_dir() else []:
    step = p.name.split('.')[0]
    if step.isdigit() and int(step) > newest:
      log(f'checkpoint step {step} was cut off while saving ({p.name}): ignored')
  return first_intact(ckpt_dir, steps)


def _move_aside(workdir: pathlib.Path, step: int, reason: str, detail: str) -> pathlib.Path:
  """Moves a damaged step to DAMAGED_DIR/<step>-<reason> (a new name if taken), with the detail beside it."""
  out = workdir / DAMAGED_DIR
  out.mkdir(exist_ok=True)
  name, n = f'{step}-{reason}', 1
  while (out / name).exists() or (out / f'{name}.txt').exists():
    n += 1
    name = f'{step}-{reason}-{n}'
  (workdir / CKPT_DIR / str(step)).rename(out / name)
  (out / f'{name}.txt').write_text(f'step {step}: {detail}\n')
  return out / name


def select_resume_step(workdir, log=print) -> int | None:
  """The step to resume from: the newest checkpoint that restores completely (None: no checkpoints).

  Walks back from the newest step; each newer one that is damaged (see check_step) is reported in one
  line and moved to <workdir>/checkpoints-damaged/<step>-<reason> (kept, not deleted; outside the
  checkpoint directory, so orbax never lists it and the run can save that step again). If checkpoints
  exist but none is intact, raises CheckpointError naming each step and why, and changes nothing.
  Cut-off saves (orbax tmp dirs) are never candidates.

  Every process calls it: process 0 checks and moves, the others wait for its answer (a broadcast),
  then all sync, so every process returns the same step.
  """
  import numpy as np
  workdir = pathlib.Path(workdir)
  main, multi = jax.process_index() == 0, jax.process_count() > 1
  step, damaged, error = None, [], None
  if main:
    step, damaged = _scan(workdir, log)
    if step is None and damaged:
      tried = '; '.join(f'step {s}: {detail}' for s, _, detail in damaged)
      error = (f'no intact checkpoint in {workdir / CKPT_DIR} ({tried}). Nothing was changed. Restore the '
               f'files, or move those steps away (or use another --workdir) to start from scratch.')
  if multi:
    from jax.experimental import multihost_utils
    code = -2 if error else (-1 if step is None else step)
    code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
    if code == -2 and not main:
      error = f'no intact checkpoint in {workdir / CKPT_DIR} (process 0 says why)'
    step = None if code < 0 else code
  if error:
    raise CheckpointError(error)
  if main:
    for s, reason, detail in damaged:
      dest = _move_aside(workdir, s, reason, detail)
      log(f'checkpoint step {s} skipped: {detail}; moved to {dest}')
  if multi:
    multihost_utils.sync_global_devices('scaling.train.checkpoint.select_resume_step')
  return step


def restore_params(mgr, workdir: pathlib.Path, candidates: list[int], target):
  """(step, params) of the first candidate step that check_step finds intact; a newer damaged one is skipped
  with a note on stderr. Read-only: inference never moves a checkpoint (`scaling train` does, see
  select_resume_step). The check reads the step once before orbax does (from the page cache then): orbax's
  own failure on a damaged array is a screen of asyncio tracebacks, not an error line."""
  s, damaged = first_intact(workdir / CKPT_DIR, candidates)
  tried = [f'step {d}: {detail}' for d, _, detail in damaged]
  if s is not None:
    if tried:
      print(f'note: using checkpoint step {s} of {workdir}; newer damaged step(s) skipped: {"; ".join(tried)}',
            file=sys.stderr, flush=True)
    return s, mgr.restore(s, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))['params']
  which = ' (every checkpoint was tried)' if len(candidates) > 1 else ''
  other = '' if len(candidates) > 1 else f' (available: {sorted(mgr.all_steps())})'
  raise CheckpointError(f'checkpoint(s) in {workdir / CKPT_DIR} do not restore{which}: {"; ".join(tried)}. Restore '
                        f'the files, or pick another step with --step{other}')


def save_imported(workdir, cfg, model, tokenizer=None) -> None:
  """Writes a workdir from given params (e.g. an imported checkpoint) that `scaling train` resumes from.

  Only params are saved (step 0); training starts a fresh optimizer state from them.
  """
  from flax import nnx

  from scaling.config.load import to_dict
  workdir = pathlib.Path(workdir)
  if (workdir / CKPT_DIR).exists() or (workdir / IMPORTED_DIR).exists():
    raise CheckpointError(f'{workdir} already holds checkpoints; import into an empty workdir')
  workdir.mkdir(parents=True, exist_ok=True)
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  path = (workdir / IMPORTED_DIR).absolute()
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(path, params)
  ckptr.wait_until_finished()
  if tokenizer is not None:
    tokenizer.save(str(workdir / TOKENIZER_DIR))
  with open(workdir / 'config.json', 'w') as f:
    json.dump(to_dict(cfg), f, indent=1)


def load_imported_params(workdir, target):
  path = (pathlib.Path(workdir) / IMPORTED_DIR).absolute()
  if not path.exists():
    return None
  return ocp.StandardCheckpointer().restore(path, _abstract(target))
