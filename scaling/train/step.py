"""The pure training step and what it needs before any data: dims, mesh, optimizer, sharded state.

    model_loss -> make_train_step (microbatched loss/grad under lax.scan -> AdamW; donated state)
    build_setup(cfg) -> Setup (abstract state and its shardings) -> init_state / jit_train_step / jit_eval_step

Parameters and Adam moments are float32; the forward runs in the compute dtype with float32 matmul
accumulation, and the loss is computed in float32. The loop (loop.py) and the AOT compile (aot.py) both
build their step here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from scaling.config.load import train_steps
from scaling.model.transformer import ModelDims, Transformer, abstract_model
from scaling.train import sharding
from scaling.train.loss import cross_entropy, fused_cross_entropy
from scaling.train.optim import make_optimizer


# ----------------------------------------------------------------------------- loss
def model_loss(graphdef, params, batch, z_loss: float = 0.0, loss_chunk: int = 0):
  """(loss, (sum_nll, count)) of a batch; loss_chunk > 0: the fused chunked head+loss (scaling/train/loss.py).
  A batch with 'source' (a data mixture's rows, one-hot [B, S]) also gives each source's sums (loss.py)."""
  model = nnx.merge(graphdef, params)
  if loss_chunk:
    x_BTD, _ = model.hidden(batch['inputs'], segment_ids_BT=batch.get('segment_ids'))
    return fused_cross_entropy(x_BTD, model.head_weights(), batch['targets'], batch.get('mask'), z_loss,
                               chunk_rows=loss_chunk, dtype=model.dims.compute_dtype, source_BS=batch.get('source'))
  logits = model(batch['inputs'], segment_ids_BT=batch.get('segment_ids'))
  return cross_entropy(logits, batch['targets'], batch.get('mask'), z_loss, source_BS=batch.get('source'))


# ----------------------------------------------------------------------------- step
def make_train_step(graphdef, tx, train_cfg):
  """The pure step: (state, batch) -> (state, metrics). Gradient accumulation over microbatches."""
  M = train_cfg.microbatches
  z = train_cfg.z_loss
  chunk = train_cfg.get('loss_chunk', 0)

  def grad_fn(params, batch):
    (loss, aux), grads = jax.value_and_grad(lambda p: model_loss(graphdef, p, batch, z, chunk), has_aux=True)(params)
    return loss, grads, aux[2:]   # a mixture's per-source (nll_S, count_S) sums; () without 'source'

  def step(state, batch):
    params = state['params']
    if M == 1:
      loss, grads, src = grad_fn(params, batch)
    else:
      # microbatch m = rows m, m + M, m + 2M, ...: every device's contiguous slice of the batch
      # holds rows of every microbatch, so each microbatch stays split over all data-parallel devices
      # (a plain reshape to [M, B/M] puts a microbatch on B/M rows' devices and XLA all-gathers)
      micro = jax.tree.map(lambda x: x.reshape((x.shape[0] // M, M) + x.shape[1:]).swapaxes(0, 1), batch)

      def body(carry, mb):
        loss_acc, g_acc, s_acc = carry
        loss, g, s = grad_fn(params, mb)
        return (loss_acc + loss, jax.tree.map(jnp.add, g_acc, g), tuple(a + b for a, b in zip(s_acc, s))), None
      zeros = jax.tree.map(jnp.zeros_like, params)
      src0 = (jnp.zeros(batch['source'].shape[-1:], jnp.float32),) * 2 if 'source' in batch else ()
      (loss, grads, src), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros, src0), micro)
      loss, grads = loss / M, jax.tree.map(lambda g: g / M, grads)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    params = optax.apply_updates(params, updates)
    new_state = dict(params=params, opt_state=opt_state, step=state['step'] + 1)
    per_source = {'source_nll': src[0], 'source_count': src[1]} if src else {}
    return new_state, dict(loss=loss, grad_norm=grad_norm, **per_source)

  return step


def make_eval_step(graphdef, loss_chunk: int = 0):
  def step(params, batch):
    _, (sum_nll, count) = model_loss(graphdef, params, batch, loss_chunk=loss_chunk)
    return sum_nll, count
  return step


# ----------------------------------------------------------------------------- setup
@dataclasses.dataclass
class Setup:
  cfg: Any
  dims: ModelDims
  mesh: Any
  graphdef: Any
  tx: Any
  schedule: Any
  total_steps: int
  state_sharding: Any
  param_sharding: Any


def resolve_dims(cfg, vocab_size: int | None = None) -> ModelDims:
  m = cfg.model
  if vocab_size is not None and m.vocab_size == 0:
    with m.unlocked():
      m.vocab_size = vocab_size
  return ModelDims.from_config(m)


def build_setup(cfg, mesh=None) -> Setup:
  """Everything that needs no data: dims, mesh, optimizer, abstract state and its shardings."""
  dims = resolve_dims(cfg)
  mesh = mesh or sharding.make_mesh(cfg.mesh)
  sharding.check_batch(cfg.train.batch_size, cfg.train.microbatches, mesh)
  from scaling.train.batch_schedule import check_mesh
  check_mesh(cfg, mesh, jax.process_count())   # every batch of train.batch_schedule, naming its step
  total = train_steps(cfg)
  tx, sched = make_optimizer(cfg.train, total, dims)   # dims: per-role learning rates under μP
  abstract = abstract_model(dims)
  graphdef, abs_state = nnx.split(abstract)
  param_sh = nnx.to_pure_dict(sharding.param_shardings(abs_state, mesh))
  abs_params = nnx.to_pure_dict(abs_state)
  abs_opt = jax.eval_shape(tx.init, abs_params)
  rep = sharding.replicated(mesh)
  state_sh = dict(params=param_sh, opt_state=opt_state_shardings(abs_opt, abs_params, param_sh, rep), step=rep)
  return Setup(cfg, dims, mesh, graphdef, tx, sched, total, state_sh, param_sh)


def opt_state_shardings(abs_opt, abs_params, param_sh, rep):
  """The optimizer state's shardings: a leaf that holds a copy of a parameter (a moment: its key path ends in
  the parameter's, with its shape) is sharded as the parameter, every other leaf (counts, Muon's coefficients)
  replicated. Unlike optax.tree_map_params it reads the paths, so states of partitioned optimizers (Muon's
  masked subtrees, scaling/train/muon.py) map too."""
  def keys(path):
    return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
  flat_p = {keys(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(abs_params)}
  flat_sh = {keys(p): s for p, s in jax.tree_util.tree_leaves_with_path(param_sh)}

  def one(path, x):
    k = keys(path)
    for n in range(len(k), 0, -1):
      if flat_p.get(k[-n:]) == x.shape:
        return flat_sh[k[-n:]]
    return rep
  return jax.tree_util.tree_map_with_path(one, abs_opt)


def init_state(setup: Setup, seed: int):
  """Initialises params directly into their shardings (no host copy of a large model)."""
  dims, tx = setup.dims, setup.tx

  def init():
    model = Transformer(dims, rngs=nnx.Rngs(params=seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))
  return jax.jit(init, out_shardings=setup.state_sharding)()


def jit_train_step(setup: Setup, batch_keys):
  step = make_train_step(setup.graphdef, setup.tx, setup.cfg.train)
  bsh = {k: sharding.batch_sharding(setup.mesh) for k in batch_keys}
  rep = sharding.replicated(setup.mesh)
  return jax.jit(step, in_shardings=(setup.state_sharding, bsh), out_shardings=(setup.state_sharding, rep),
                 donate_argnums=(0,))


def jit_eval_step(setup: Setup):
  # the batch arrives already sharded over (data, fsdp) by sharding.global_batch
  return jax.jit(make_eval_step(setup.graphdef, setup.cfg.train.get('loss_chunk', 0)))
