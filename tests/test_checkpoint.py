"""Checkpoints: restore onto other meshes, keep-last-k, compatibility checks, inference loading.

A training state (params + AdamW moments) filled with random numbers is laid
out on one mesh, saved, and restored onto targets with other shardings; the
reference is the numpy copy the state was made from (restores must be exact).
No compiled training step is needed, so the file runs in seconds.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.config import load as config_lib
from scaling.data.tokenizer import ByteTokenizer
from scaling.inference import run as run_lib
from scaling.model import transformer as model_lib
from scaling.train import checkpoint, sharding
from scaling.train import loop as train_lib

MODEL = {'model.vocab_size': 259, 'model.seq_len': 32, 'model.num_layers': 2, 'model.d_model': 32,
         'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64}


def make_cfg(**overrides):
  return config_lib.load_config('default.py', {**MODEL, **{k.replace('__', '.'): v for k, v in overrides.items()}})


def setup_on(mesh_sizes=None, devices=None, **overrides):
  """train.build_setup for the tiny model on a mesh {'data','fsdp','tensor'} of `devices`."""
  sizes = mesh_sizes or dict(data=-1, fsdp=1, tensor=1)
  cfg = make_cfg(**{f'mesh__{k}': v for k, v in sizes.items()}, **overrides)
  return train_lib.build_setup(cfg, mesh=sharding.make_mesh(cfg.mesh, devices=devices))


def random_state(setup, seed=0):
  """A numpy training state with the structure of `setup`'s (random values, Adam count 7)."""
  def init():
    model = model_lib.Transformer(setup.dims, rngs=nnx.Rngs(params=0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(params=params, opt_state=setup.tx.init(params), step=jnp.zeros((), jnp.int32))
  abstract = jax.eval_shape(init)
  rng = np.random.default_rng(seed)

  def fill(s):
    if jnp.issubdtype(s.dtype, jnp.integer):
      return np.full(s.shape, 7, s.dtype)
    return rng.normal(size=s.shape).astype(s.dtype)
  return jax.tree.map(fill, abstract)


def save_state(workdir, setup, state_np, step, **kw):
  state = jax.device_put(state_np, setup.state_sharding)
  mgr = checkpoint.manager(workdir, **kw)
  meta = dict(step=step, seed=0, model=dataclasses.asdict(setup.dims), tokens_seen=step * 256)
  data_state = {'grain': {'next_index': 8 * step}, 'batch_size': 8, 'seq_len': 32}
  checkpoint.save(mgr, step, params=state['params'], opt_state=state['opt_state'], meta=meta, data_state=data_state)
  mgr.wait_until_finished()
  return mgr, meta, data_state


def assert_tree_equal(a, b):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for (path, x), y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('target', ['2x2x2', 'one_device'])
def test_restore_onto_another_mesh(tmp_path, target):
  """Written on an (8, 1, 1) mesh; restored onto (2, 2, 2) or a single device: identical values,
  laid out in the target's shardings."""
  src = setup_on()
  assert dict(src.mesh.shape) == {'data': 8, 'fsdp': 1, 'tensor': 1}
  state_np = random_state(src)
  mgr, meta, data_state = save_state(tmp_path, src, state_np, step=5)
  mgr.close()

  dst = (setup_on(dict(data=2, fsdp=2, tensor=2)) if target == '2x2x2'
         else setup_on(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1]))
  zeros = jax.tree.map(np.zeros_like, state_np)
  target_state = jax.device_put(zeros, dst.state_sharding)
  mgr = checkpoint.manager(tmp_path)
  out = checkpoint.restore(mgr, 5, params_target=target_state['params'], opt_target=target_state['opt_state'])
  mgr.close()
  assert_tree_equal(out['params'], state_np['params'])
  assert_tree_equal(out['opt_state'], state_np['opt_state'])
  for got, want in zip(jax.tree.leaves(out['params']), jax.tree.leaves(dst.param_sharding)):
    assert got.sharding.is_equivalent_to(want, got.ndim)
  if target == '2x2x2':   # really resharded: the q projection [L, D, H, K] split over fsdp and tensor
    wq = out['params']['blocks']['wq_DHK']
    assert wq.addressable_shards[0].data.shape == (2, 16, 2, 8)
  else:
    assert {d for x in jax.tree.leaves(out['params']) for d in x.devices()} == {jax.devices()[0]}
  assert out['meta'] == meta and out['data'] == data_state


def test_restore_params_only(tmp_path):
  """Inference restores the params item alone (no optimizer target needed)."""
  src = setup_on()
  state_np = random_state(src, seed=1)
  save_state(tmp_path, src, state_np, step=3)[0].close()
  mgr = checkpoint.manager(tmp_path)
  out = checkpoint.restore(mgr, 3, params_target=jax.device_put(state_np['params'], src.param_sharding))
  mgr.close()
  assert set(out) == {'params', 'meta', 'data'}
  assert_tree_equal(out['params'], state_np['params'])


def test_keep_last_k_and_latest_step(tmp_path):
  src = setup_on()
  state_np = random_state(src)
  assert checkpoint.latest_step(tmp_path) is None
  state = jax.device_put(state_np, src.state_sharding)
  mgr = checkpoint.manager(tmp_path, keep=2)
  for step in (10, 20, 30):
    checkpoint.save(mgr, step, params=state['params'], opt_state=state['opt_state'], meta=dict(step=step),
                    data_state=None)
  mgr.wait_until_finished()
  mgr.close()
  assert checkpoint.latest_step(tmp_path) == 30
  assert sorted(p.name for p in (tmp_path / checkpoint.CKPT_DIR).iterdir() if p.name.isdigit()) == ['20', '30']
  mgr = checkpoint.manager(tmp_path)
  assert checkpoint.read_meta(mgr, 20) == {'step': 20}
  assert checkpoint.read_meta(mgr, 20, 'data') == {}
  mgr.close()


def test_check_compatible_names_the_differences(tmp_path):
  a = dataclasses.asdict(setup_on().dims)
  b = dict(a, d_model=64, num_layers=3)
  checkpoint.check_compatible({'model': a}, a, tmp_path)   # same model: no error
  checkpoint.check_compatible({}, b, tmp_path)             # old checkpoints without dims: not refused
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.check_compatible({'model': a}, b, tmp_path)
  msg = str(e.value)
  assert 'num_layers: checkpoint 2 vs config 3' in msg and 'd_model: checkpoint 32 vs config 64' in msg
  assert str(tmp_path) in msg and '--workdir' in msg
  # dims that do not change the parameters (dtype, attention kernel, remat) may change on resume
  checkpoint.check_compatible({'model': a}, dict(a, dtype='bfloat16', attention='xla', remat='full'), tmp_path)


def test_check_compatible_compares_learned_position_table_rows(tmp_path):
  """A learned table's rows are model.position_table, else seq_len (meta from before the field has none): a
  checkpoint with another number of rows is refused; the same rows however written are not."""
  old = dict(position='learned', seq_len=32, d_model=32)                 # a checkpoint from before the field
  checkpoint.check_compatible({'model': old}, dict(old, position_table=0), tmp_path)
  checkpoint.check_compatible({'model': old}, dict(old, position_table=32), tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match=r'table rows .*checkpoint 32 vs config 128'):
    checkpoint.check_compatible({'model': old}, dict(old, position_table=128), tmp_path)
  long = dict(old, position_table=128)
  checkpoint.check_compatible({'model': long}, dict(long), tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match=r'checkpoint 128 vs config 64'):
    checkpoint.check_compatible({'model': long}, dict(long, seq_len=64, position_table=0), tmp_path)
  rope = dict(position='rope', seq_len=32, position_table=0)             # no table: seq_len may change
  checkpoint.check_compatible({'model': rope}, dict(rope, seq_len=128), tmp_path)


def test_check_data_state(tmp_path):
  saved = {'grain': {'next_index': 3}, 'seq_len': 32, 'batch_size': 8, 'seed': 0}
  checkpoint.check_data_state(saved, dict(seq_len=32, batch_size=8, seed=0), tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match='batch_size: checkpoint 8 vs config 4'):
    checkpoint.check_data_state(saved, dict(seq_len=32, batch_size=4, seed=0), tmp_path)


def test_load_for_inference(tmp_path):
  """config.json + tokenizer + the latest checkpoint -> a single-device model with the saved params."""
  src = setup_on()
  state_np = random_state(src, seed=2)
  save_state(tmp_path, src, state_np, step=1)[0].close()
  state_np2 = random_state(src, seed=3)
  save_state(tmp_path, src, state_np2, step=2)[0].close()
  with pytest.raises(checkpoint.CheckpointError, match='config.json is missing'):
    run_lib.load_for_inference(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps(config_lib.to_dict(src.cfg)))
  ByteTokenizer().save(str(tmp_path / checkpoint.TOKENIZER_DIR))
  model, cfg, tok = run_lib.load_for_inference(tmp_path)
  assert cfg.model.d_model == 32 and tok.vocab_size == 259
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  assert_tree_equal(params, state_np2['params'])
  assert {d for x in jax.tree.leaves(params) for d in x.devices()} == {jax.devices()[0]}
  model1, _, _ = run_lib.load_for_inference(tmp_path, step=1)
  assert_tree_equal(nnx.to_pure_dict(nnx.state(model1, nnx.Param)), state_np['params'])
  with pytest.raises(checkpoint.CheckpointError, match=r'no checkpoint for step 7.*available: \[1, 2\]'):
    run_lib.load_for_inference(tmp_path, step=7)


def test_small_replicated_arrays_are_saved_without_compiling(tmp_path):
  """Arrays replicated over the 8 devices whose 1/8 would be under REPLICA_PARALLEL_MIN_BYTES are written whole
  by one replica: the save compiles nothing (orbax's replica-parallel save compiles a slice per shape and device:
  16 here). Shapes no other test saves, so no slice compiled earlier in this process hides one."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  assert mesh.size == 8
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rng = np.random.default_rng(0)
  state_np = {'w': rng.normal(size=(40, 24)).astype(np.float32), 'b': rng.normal(size=(24,)).astype(np.float32)}
  state = jax.device_put(state_np, rep)
  compiles = []

  def listen(event, seconds, **kw):
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(event)
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    mgr = checkpoint.manager(tmp_path)
    checkpoint.save(mgr, 1, params=state, opt_state={'mu': state}, meta=dict(step=1), data_state=None)
    mgr.wait_until_finished()
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert compiles == []
  out = checkpoint.restore(mgr, 1, params_target=state, opt_target={'mu': state})
  mgr.close()
  assert_tree_equal(out['params'], state_np)
  assert_tree_equal(out['opt_state']['mu'], state_np)
