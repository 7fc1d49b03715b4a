"""Device mesh, logical-axis rules, and the shardings of parameters and batches.

The mesh has three axes: `data` (pure data parallelism: params replicated),
`fsdp` (data parallelism with parameters and optimizer state sharded, ZeRO-3
style) and `tensor` (Megatron-style: heads and MLP columns split). Sizes come
from `config.mesh`; -1 fills the remaining devices.

Parameters name their axes logically (see scaling/model/transformer.py); RULES maps each
logical name to a mesh axis (or None = replicated). A logical axis whose size
does not divide by its mesh axis is replicated instead, so every
mesh that divides the device count works.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('data', 'fsdp')   # the batch dimension is split over both data-parallel axes

# logical axis -> mesh axis
RULES = {
    'vocab': 'tensor',
    'embed': 'fsdp',
    'heads': 'tensor',
    'kv_heads': 'tensor',
    'head_dim': None,
    'mlp': 'tensor',
    'layers': None,
    'seq': None,
}


class MeshError(ValueError):
  pass


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise MeshError(f'mesh {dict(zip(MESH_AXES, sizes))}: the fixed axes multiply to {known}, which does not '
                      f'divide the {num_devices} devices; pick sizes whose product divides {num_devices}')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise MeshError(f'mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {math.prod(sizes)} devices, '
                    f'but {num_devices} are available; make the product equal {num_devices} (or use -1 on one axis)')
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  devices = devices if devices is not None else jax.devices()
  if num_slices(devices) > 1:
    return make_multislice_mesh(mesh_cfg, devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  try:
    dev = jax.experimental.mesh_utils.create_device_mesh(shape, devices=devices)
  except Exception:  # noqa: BLE001 - fake CPU devices or odd topologies: plain order
    dev = np.asarray(devices).reshape(shape)
  return Mesh(dev, MESH_AXES)


def num_slices(devices) -> int:
  """How many TPU slices the devices span (their `slice_index`; 1 for devices without one)."""
  return len({getattr(d, 'slice_index', None) or 0 for d in devices})


def make_multislice_mesh(mesh_cfg, devices) -> Mesh:
  """A mesh over several slices: the `data` axis crosses slices (DCN), everything else stays in a slice (ICI).

  mesh_cfg sizes are per slice; the data axis is multiplied by the number of slices, so the only
  traffic between slices is the data-parallel gradient reduction. The logical rules are unchanged.
  """
  from jax.experimental import mesh_utils
  n = num_slices(devices)
  if len(devices) % n:
    raise MeshError(f'{len(devices)} devices do not split evenly over {n} slices')
  try:
    ici = mesh_shape(mesh_cfg, len(devices) // n)
  except MeshError as e:
    raise MeshError(f'{e} (mesh sizes are per slice: {n} slices of {len(devices) // n} devices)') from None
  dev = mesh_utils.create_hybrid_device_mesh(ici, (n, 1, 1), devices=devices)
  return Mesh(dev, MESH_AXES)


def logical_to_spec(axes: tuple, shape: tuple, mesh: Mesh) -> P:
  """PartitionSpec for a parameter from its logical axes, replicating axes that do not divide."""
  spec = []
  used = set()
  for name, size in zip(axes, shape):
    mesh_axis = RULES.get(name)
    if mesh_axis is None or mesh_axis in used or size % mesh.shape[mesh_axis]:
      spec.append(None)
    else:
      spec.append(mesh_axis)
      used.add(mesh_axis)
  return P(*spec)


def param_shardings(abstract_state, mesh: Mesh):
  """NamedShardings for an nnx.State of Params (leaves are Variables with `axes` metadata)."""
  from flax import nnx

  def one(v):
    if isinstance(v, nnx.Variable):
      axes = v.get_metadata().get('axes') or (None,) * len(v.shape)
      return v.replace(NamedSharding(mesh, logical_to_spec(axes, v.shape, mesh)))
    return NamedSharding(mesh, P())
  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape['data'] * mesh.shape['fsdp']


def check_batch(batch_size: int, microbatches: int, mesh: Mesh) -> None:
  dp = data_parallel_size(mesh)
  micro = batch_size // microbatches
  if micro % dp:
    raise MeshError(f'the microbatch of {micro} sequences (train.batch_size={batch_size} / '
                    f'train.microbatches={microbatches}) does not split over the data-parallel size {dp} '
                    f'(mesh data={mesh.shape["data"]} x fsdp={mesh.shape["fsdp"]}); make batch_size / microbatches '
                    f'a multiple of {dp}')
  if batch_size % jax.process_count():
    raise MeshError(f'train.batch_size={batch_size} does not split over {jax.process_count()} processes')


def global_batch(local: dict, mesh: Mesh) -> dict:
  """Assembles per-process numpy pieces into globally sharded jax.Arrays (batch over data x fsdp)."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v) for k, v in local.items()}


def describe(tree) -> list[str]:
  """Lines 'path shape dtype sharding' for every array leaf (used by --debug)."""
  lines = []
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    sh = getattr(x, 'sharding', None)
    spec = getattr(sh, 'spec', sh)
    lines.append(f'{jax.tree_util.keystr(path):60s} {str(tuple(x.shape)):22s} {str(x.dtype):9s} {spec}')
  return lines

