"""Opening a trained run for inference: its config, the newest intact (or a given) checkpoint's params on one
device, and its tokenizer. Read-only: a damaged newer step is skipped, never moved (`scaling train` does that)."""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp
from flax import nnx

from scaling.config.load import from_json
from scaling.data.tokenizer import load_tokenizer
from scaling.model.transformer import abstract_model
from scaling.train.checkpoint import (
    CKPT_DIR,
    IMPORTED_DIR,
    ITEMS,
    TOKENIZER_DIR,
    CheckpointError,
    load_imported_params,
    restore_params,
)


def load_for_inference(workdir, step: int | None = None, *, with_step: bool = False):
  """(model, cfg, tokenizer) from a workdir: the newest intact (or the given) checkpoint's params, on one
  device; with_step=True appends the step loaded (None for imported weights).

  tokenizer is None when the workdir has none (an imported checkpoint without a tokenizer).

  Single-process only: orbax's reads are collective (each waits in a barrier for every process), so one process
  of a multi-process run opening a checkpoint alone would wait forever; that is refused with a CheckpointError.
  """
  workdir = pathlib.Path(workdir)
  if jax.process_count() > 1:
    raise CheckpointError(f'cannot open {workdir} for inference in process {jax.process_index()} of a '
                          f'{jax.process_count()}-process run: its checkpoint reads wait for every process (a '
                          f'deadlock when one calls it). Run eval/sample/export as one process (not under the '
                          f'multi-process launcher), or take the model from train(..., final_model=True)')
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
    if step is not None and step not in steps:
      raise CheckpointError(f'no checkpoint for step {step} in {workdir}; available: {sorted(steps)}')
    step, params = restore_params(mgr, workdir, sorted(steps, reverse=True) if step is None else [step], target)
  mgr.close()
  model = nnx.merge(graphdef, params)
  tok_dir = workdir / TOKENIZER_DIR
  tokenizer = load_tokenizer(str(tok_dir)) if tok_dir.exists() else None   # None: imported weights only
  return (model, cfg, tokenizer, step) if with_step else (model, cfg, tokenizer)
