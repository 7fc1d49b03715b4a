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
"""

from __future__ import annotations

import json
import pathlib

import jax
import orbax.checkpoint as ocp

CKPT_DIR = 'checkpoints'
TOKENIZER_DIR = 'tokenizer'
ITEMS = ('params', 'opt_state', 'meta', 'data')
IMPORTED_DIR = 'imported_params'   # params written by `scaling import`; training starts from them


class CheckpointError(ValueError):
  pass


def manager(workdir, *, keep: int = 2, save_every: int = 1, async_save: bool = True) -> ocp.CheckpointManager:
  path = pathlib.Path(workdir).absolute() / CKPT_DIR
  opts = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=1, create=True,
                                      enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(path, options=opts, item_names=ITEMS)


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
          'position', 'mlp', 'tied_embeddings')
  diff = [f'{k}: checkpoint {saved.get(k)!r} vs config {dims_dict.get(k)!r}' for k in keys
          if k in saved and saved.get(k) != dims_dict.get(k)]
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


def load_for_inference(workdir, step: int | None = None):
  """(model, cfg, tokenizer) from a workdir: the latest (or given) checkpoint's params, on one device.

  tokenizer is None when the workdir has none (an imported checkpoint without a tokenizer).
  """
  from flax import nnx

  from scaling.config import from_json
  from scaling.model import abstract_model
  from scaling.tokenizer import load_tokenizer

  workdir = pathlib.Path(workdir)
  cfg_path = workdir / 'config.json'
  if not cfg_path.exists():
    raise CheckpointError(f'{workdir} is not a training workdir: {cfg_path} is missing')
  cfg = from_json(cfg_path)
  abstract = abstract_model(cfg.model)
  graphdef, abs_state = nnx.split(abstract)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        nnx.to_pure_dict(abs_state))
  mgr = ocp.CheckpointManager((workdir / CKPT_DIR).absolute(), item_names=ITEMS)
  steps = mgr.all_steps()
  if not steps and step is None and (workdir / IMPORTED_DIR).exists():
    params = load_imported_params(workdir, target)
  else:
    if not steps:
      raise CheckpointError(f'no checkpoint in {workdir / CKPT_DIR}; train first (scaling train --workdir {workdir})')
    step = max(steps) if step is None else step
    if step not in steps:
      raise CheckpointError(f'no checkpoint for step {step} in {workdir}; available: {sorted(steps)}')
    params = mgr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))['params']
  mgr.close()
  model = nnx.merge(graphdef, params)
  tok_dir = workdir / TOKENIZER_DIR
  tokenizer = load_tokenizer(str(tok_dir)) if tok_dir.exists() else None   # None: imported weights only
  return model, cfg, tokenizer


def save_imported(workdir, cfg, model, tokenizer=None) -> None:
  """Writes a workdir from given params (e.g. an imported checkpoint) that `scaling train` resumes from.

  Only params are saved (step 0); training starts a fresh optimizer state from them.
  """
  from flax import nnx

  from scaling.config import to_dict
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
