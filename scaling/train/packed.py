"""K members in one step: the pure packed step and its state (the loop that drives it: packed_loop.py).

Members share the model's shapes, the batch and the schedule's shape (scaling/config/pack.py) and differ in
per-member scalars (pack.STEP_SCALARS: lr, min_lr_ratio, b1, b2, eps, weight_decay) and the init seed.
Every leaf of the state carries a leading members axis K:

    params, opt_state: [K, ...]   step: [K]   alive: [K] bool
    scalars: {name: [K] float32}  (the optimizer is built inside the vmapped step from a member's scalars)
    batch: shared by every member (not vmapped)

One `jax.vmap` of step.make_train_step over the members turns K small matmuls into one batched matmul. A
member whose loss or gradient norm is not finite is frozen (its state stays that of the step before) and
`alive` goes false; the others train on. The members axis is replicated, or sharded over one mesh axis
(`members_axis`), with each member's own data/fsdp/tensor sharding inside.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from scaling.config import pack
from scaling.model.transformer import Transformer
from scaling.train import sharding
from scaling.train.optim import make_optimizer
from scaling.train.step import Setup, make_train_step


class _Scalars:
  """A train config whose step scalars are replaced by (traced) numbers; every other field reads through."""

  def __init__(self, cfg, values: dict):
    self._cfg, self._values = cfg, values

  def __getattr__(self, name):
    if name.startswith('_'):
      raise AttributeError(name)
    return self._values[name] if name in self._values else getattr(self._cfg, name)

  def __getitem__(self, name):
    return self.__getattr__(name)

  def get(self, name, default=None):
    return self._values[name] if name in self._values else self._cfg.get(name, default)


def member_optimizer(setup: Setup, scalars: dict):
  """The optimizer of one member: make_optimizer with that member's scalars (floats or traced)."""
  return make_optimizer(_Scalars(setup.cfg.train, scalars), setup.total_steps, setup.dims)[0]


def member_schedule(setup: Setup, cfg):
  """The learning-rate schedule of one member (its own config, plain floats) for its metrics rows."""
  return make_optimizer(cfg.train, setup.total_steps, setup.dims)[1]


LAYOUTS = ('vmap', 'loop')


def make_packed_step(setup: Setup, layout: str = 'vmap'):
  """(state, scalars, batch) -> (state, metrics {loss, grad_norm, ok: [K]}); see the module docstring.

  layout 'vmap': one jax.vmap over the members (batched matmuls: what accelerators want). 'loop': the
  members' steps written one after another into the same program (XLA schedules them; each matmul is a
  plain one), for backends whose batched matmuls are slow (XLA:CPU; measured in bench/packed.py).
  Both compute the same per-member step; the compile of 'loop' grows with K.
  """
  graphdef, train_cfg = setup.graphdef, setup.cfg.train
  if layout not in LAYOUTS:
    raise ValueError(f'packed layout {layout!r} is unknown; choose one of {", ".join(LAYOUTS)}')

  def member(state, scalars, batch):
    tx = member_optimizer(setup, scalars)
    inner = dict(params=state['params'], opt_state=state['opt_state'], step=state['step'])
    new, metrics = make_train_step(graphdef, tx, train_cfg)(inner, batch)
    ok = state['alive'] & jnp.isfinite(metrics['loss']) & jnp.isfinite(metrics['grad_norm'])
    new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, inner)
    return dict(new, alive=ok), dict(metrics, ok=ok)

  if layout == 'vmap':
    return jax.vmap(member, in_axes=(0, 0, None))

  def loop(state, scalars, batch):
    K = state['alive'].shape[0]
    outs = [member(jax.tree.map(lambda x: x[i], state), {k: v[i] for k, v in scalars.items()}, batch)
            for i in range(K)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return loop


# ----------------------------------------------------------------------------- state and its shardings
@dataclasses.dataclass
class Packed:
  """The packed state's shardings and the jitted init/step of K members on `setup`'s mesh."""
  setup: Setup
  K: int
  members_axis: str | None
  state_sharding: Any
  member_sharding: Any   # one member's state (setup.state_sharding)
  scalar_sharding: Any
  slicer: Any = None     # the jitted member_state slicer, built on first use


def _lead(sh: NamedSharding, axis) -> NamedSharding:
  return NamedSharding(sh.mesh, P(axis, *sh.spec))


def build_packed(setup: Setup, K: int, members_axis: str | None = None) -> Packed:
  """Shardings of K members: each member's own (setup.state_sharding) under a leading members axis,
  replicated (None) or split over the mesh axis `members_axis` (K must divide by its size)."""
  mesh = setup.mesh
  if members_axis is not None:
    if members_axis not in mesh.shape:
      raise ValueError(f'members axis {members_axis!r} is not a mesh axis ({", ".join(mesh.shape)})')
    if K % mesh.shape[members_axis]:
      raise ValueError(f'{K} members do not split over mesh axis {members_axis!r} of size '
                       f'{mesh.shape[members_axis]}: use a multiple of it, or replicate the members axis')
    used = {a for sh in jax.tree.leaves(setup.state_sharding) for part in sh.spec if part
            for a in ((part,) if isinstance(part, str) else part)}
    if members_axis in used:
      raise ValueError(f'mesh axis {members_axis!r} already shards the parameters; split the members over '
                       f'another axis (usually data)')
  inner = dict(setup.state_sharding)
  state_sh = jax.tree.map(lambda s: _lead(s, members_axis), inner)
  state_sh['alive'] = NamedSharding(mesh, P(members_axis))
  vec = NamedSharding(mesh, P(members_axis))
  return Packed(setup, K, members_axis, state_sh, inner, {k: vec for k in pack.STEP_SCALARS})


def init_packed(packed: Packed, seeds) -> dict:
  """The K members' initial state, member i initialised exactly as a single run with seed seeds[i]."""
  setup = packed.setup
  if len(seeds) != packed.K:
    raise ValueError(f'{len(seeds)} seeds for {packed.K} members')

  def one(seed):
    model = Transformer(setup.dims, rngs=nnx.Rngs(params=jax.random.key(seed)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(params=params, opt_state=setup.tx.init(params), step=jnp.zeros((), jnp.int32),
                alive=jnp.ones((), bool))
  return jax.jit(jax.vmap(one), out_shardings=packed.state_sharding)(jnp.asarray(seeds, jnp.uint32))


def scalars_array(packed: Packed, cfgs) -> dict:
  """pack.STEP_SCALARS -> [K] float32 on the mesh."""
  vals = pack.member_scalars(cfgs)
  return {k: jax.device_put(np.asarray(v, np.float32), packed.scalar_sharding[k]) for k, v in vals.items()}


def jit_packed_step(packed: Packed, batch_keys, layout: str = 'vmap'):
  setup = packed.setup
  bsh = {k: sharding.batch_sharding(setup.mesh) for k in batch_keys}
  vec = NamedSharding(setup.mesh, P(packed.members_axis))
  return jax.jit(make_packed_step(setup, layout), in_shardings=(packed.state_sharding, packed.scalar_sharding, bsh),
                 out_shardings=(packed.state_sharding, dict(loss=vec, grad_norm=vec, ok=vec)),
                 donate_argnums=(0,))


def member_state(packed: Packed, state: dict, i: int) -> dict:
  """Member i's params and opt_state (as a single run's), on its own sharding. One compiled slicer for every
  member (the index is an argument, not a constant: K members would otherwise cost K compiles per save)."""
  if packed.slicer is None:
    sh = dict(params=packed.member_sharding['params'], opt_state=packed.member_sharding['opt_state'])
    packed.slicer = jax.jit(lambda s, j: jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, j, keepdims=False), s),
                            out_shardings=sh)
  inner = dict(params=state['params'], opt_state=state['opt_state'])
  return packed.slicer(inner, jnp.int32(i))


def stack_members(packed: Packed, members: list[dict], step: int, alive) -> dict:
  """The packed state of K single-run states (params, opt_state), e.g. restored from their checkpoints."""
  sh = {k: packed.state_sharding[k] for k in ('params', 'opt_state')}
  stacked = jax.jit(lambda ms: jax.tree.map(lambda *xs: jnp.stack(xs), *ms), out_shardings=sh)(members)
  mesh = packed.setup.mesh
  stacked['step'] = jax.device_put(np.full(packed.K, step, np.int32), packed.state_sharding['step'])
  stacked['alive'] = jax.device_put(np.asarray(alive, bool), NamedSharding(mesh, P(packed.members_axis)))
  return stacked
