"""scaling/train/aot.py: the real train step compiled for a TPU slice on this CPU machine (libtpu, compile-only).

Reference figures are worked out independently of the code under test: parameter counts times bytes per
parameter for the arguments, the matmul FLOP formula for the step's FLOPs, Cloud TPU's naming rules for
the topologies, a hand-made memory curve for the batch bisection.
"""

import json

import pytest

from scaling.config.load import load_config
from scaling.model import accounting
from scaling.train import aot, aot_cli
from scaling.train import hlo as hlo_lib

needs_libtpu = pytest.mark.skipif(not aot.libtpu_available(), reason='libtpu not installed (pip install -e ".[tpu-aot]")')


# ----------------------------------------------------------------------------- names (no libtpu needed)
@pytest.mark.parametrize('name, shape, chips, hosts', [
    ('v5p-8', (2, 2, 1), 4, 1),          # v5p counts TensorCores: 8 cores = 4 chips, one host
    ('v5p-32', (2, 2, 4), 16, 4),
    ('v4-32', (2, 2, 4), 16, 4),
    ('v5p-128', (4, 4, 4), 64, 16),
    ('v5litepod-8', (2, 4), 8, 1),       # v5e counts chips; 8 chips is one host
    ('v5e-16', (4, 4), 16, 4),
    ('v5litepod-1', (1, 1), 1, 1),
    ('v6e-256', (16, 16), 256, 64),
    ('v5p:2x2x4', (2, 2, 4), 16, 4),
])
def test_accelerator_names_map_to_topologies(name, shape, chips, hosts):
  t = aot.parse_target(name)
  assert (t.shape, t.chips, t.hosts) == (shape, chips, hosts)
  assert t.topology.split(':')[1] == 'x'.join(map(str, shape))


def test_unknown_topology_lists_the_known_ones():
  for bad in ('v9-8', 'v5p-7', 'v5p-6', 'tpu', 'v5e:2x2x2'):
    with pytest.raises(aot.AotError) as e:
      aot.parse_target(bad)
    assert 'unknown TPU topology' in str(e.value) and 'v5p-8' in str(e.value) and 'v5litepod-8' in str(e.value)


def test_unknown_topology_fails_before_any_compile(monkeypatch, capsys):
  from scaling.cli import main as cli

  def no_compile(*a, **k):
    raise AssertionError('compiled despite a bad topology')
  monkeypatch.setattr(aot, 'compile_step', no_compile)
  monkeypatch.setattr(aot, 'target_devices', no_compile)
  assert cli.main(['compile', '--topology', 'v5p-9000']) == 2
  assert 'Known: v4-8' in capsys.readouterr().err


def test_unknown_gpu_names_say_which_gpus_are_known():
  for name in ('a100', 'b200-8'):
    with pytest.raises(aot.AotError, match='h100, h200'):
      aot.parse_target(name)


def test_max_batch_bisection_on_a_known_memory_curve(monkeypatch):
  # bytes(batch) = 1 GiB + batch x 0.1 GiB against 16 GiB: the largest multiple of 4 below 150 is 148
  def fake_report(cfg, t, devices=None):
    total = aot.GiB + cfg.train.batch_size * aot.GiB // 10
    return dict(fits=total <= 16 * aot.GiB, bytes_per_chip=dict(total=total), compile_s=0.0,
                batch=cfg.train.batch_size)
  monkeypatch.setattr(aot, 'compile_report', fake_report)
  monkeypatch.setattr(aot, 'data_parallel_unit', lambda cfg, t, devices=None: 4)
  cfg = aot.target_config(load_config('scaling/model/ladder.py:nano'))
  for start in (4, 16, 400):
    best, r, probed = aot.find_max_batch(aot.target_config(cfg, batch_size=start), aot.parse_target('v5litepod-4'),
                                         devices=[])
    assert best == 148 and r['batch'] == 148
    assert len(probed) <= 12   # doubling then bisection, not a scan


def test_hlo_flops_counts_while_loops_trip_count_times():
  hlo = """HloModule m

body {
  p = (s32[], f32[4,8]) parameter(0)
  x = f32[4,8]{1,0} get-tuple-element(p), index=1
  w = f32[8,8]{1,0} constant({...})
  d = f32[4,8]{1,0} dot(x, w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  i = s32[] get-tuple-element(p), index=0
  ROOT t = (s32[], f32[4,8]) tuple(i, d)
}

cond {
  p = (s32[], f32[4,8]) parameter(0)
  i = s32[] get-tuple-element(p), index=0
  n = s32[] constant(12)
  ROOT lt = pred[] compare(i, n), direction=LT
}

ENTRY main {
  a = f32[4,8]{1,0} parameter(0)
  b = f32[8,16]{1,0} parameter(1)
  e = f32[4,16]{1,0} dot(a, b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  z = s32[] constant(0)
  t = (s32[], f32[4,8]) tuple(z, a)
  ROOT w = (s32[], f32[4,8]) while(t), condition=cond, body=body
}
"""
  flops, unknown = hlo_lib.hlo_dot_flops(hlo)
  assert unknown == 0
  assert flops == 2 * 4 * 16 * 8 + 12 * (2 * 4 * 8 * 8)


# ----------------------------------------------------------------------------- real compiles (libtpu)
NANO = {'model.attention': 'xla', 'model.remat': 'none', 'model.scan_layers': 'true'}


@pytest.fixture(scope='module')
def aot_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('aot-cache'))


@pytest.fixture(scope='module')
def nano_v5p8(aot_cache):
  """The nano rung's step on v5p-8 (4 chips): plain XLA attention, no remat, layers scanned."""
  aot.enable_compile_cache(aot_cache)
  t = aot.parse_target('v5p-8')
  cfg = aot.target_config(load_config('scaling/model/ladder.py:nano', NANO))
  c = aot.compile_step(cfg, t)
  assert not c.cached
  return cfg, t, c, aot.report(c, cfg, t)


@needs_libtpu
def test_reported_bytes_are_memory_analysis_and_match_the_state_size(nano_v5p8):
  cfg, t, c, r = nano_v5p8
  m = c.compiled.memory_analysis()
  b = r['bytes_per_chip']
  assert (b['argument'], b['output'], b['alias'], b['temp'], b['generated_code']) == (
      m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes, m.temp_size_in_bytes,
      m.generated_code_size_in_bytes)
  assert b['total'] == (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                        + m.temp_size_in_bytes + m.generated_code_size_in_bytes)
  # mesh data=4: every chip holds the whole state: float32 params + two Adam moments = 12 bytes/param,
  # plus its quarter of the int32 inputs and targets; the new state is donated, so it aliases the old
  n = accounting.count_params(c.setup.dims)['total']
  B, T = cfg.train.batch_size, cfg.model.seq_len
  expected_args = 12 * n + 2 * 4 * (B // 4) * T
  assert abs(b['argument'] - expected_args) / expected_args < 0.01
  assert abs(b['alias'] - 12 * n) / (12 * n) < 0.01
  assert r['fits'] and r['hbm_bytes_per_chip'] == 95 * aot.GiB and r['chips'] == 4


@needs_libtpu
def test_xla_flops_agree_with_accounting_term_by_term(nano_v5p8):
  cfg, t, c, r = nano_v5p8
  d = c.setup.dims
  B, T, L, HK = cfg.train.batch_size, cfg.model.seq_len, d.num_layers, d.num_heads * d.head_dim
  # the 'xla' attention multiplies the full T x T score matrix (masked afterwards): 12 L H K T per token,
  # where the accounting counts the causal (T + 1) / 2 keys a query really attends to
  full_attention = B * T * (6 * accounting.matmul_params(d) + 12 * L * HK * T)
  assert abs(r['xla_flops_per_step'] / full_attention - 1) < 0.01
  masked_away = B * T * 12 * L * HK * (T - (T + 1) / 2)
  assert abs((r['xla_flops_per_step'] - r['accounting_flops_per_step']) / masked_away - 1) < 0.02
  assert r['accounting_flops_per_step'] == accounting.flops_per_token(d) * B * T
  # XLA's own cost analysis counts each while body (layers scan, loss chunks) once: far below
  assert r['cost_analysis_flops_per_chip'] * t.chips < 0.7 * r['xla_flops_per_step']
  assert r['estimated_step_s'] == pytest.approx(r['xla_flops_per_step'] / 4 / 459e12)


@needs_libtpu
def test_auto_attention_on_a_v5p_slice_is_splash_under_shard_map(aot_cache):
  """model.attention='auto' on a TPU is the splash kernel. XLA cannot partition it, so it runs per chip
  under shard_map (scaling/model/splash.py): the step of a 1-layer model on 4 chips (fsdp) compiles, and
  the kernels' matmuls, no dots of the HLO, are counted: per layer a forward (q k^T, p v), a dQ kernel
  (q k^T, dO v^T, ds k) and a dK/dV kernel (q k^T, dO v^T, p^T dO, ds^T q), 9 products of 2 B H K FLOPs
  per position of the one 128 x 128 block."""
  aot.enable_compile_cache(aot_cache)
  t = aot.parse_target('v5p-8')
  over = {'model.attention': 'auto', 'model.remat': 'none', 'model.num_layers': '1', 'model.seq_len': '128',
          'train.batch_size': '8', 'mesh.data': '1', 'mesh.fsdp': '-1'}
  cfg = aot.target_config(load_config('scaling/model/ladder.py:nano', over))
  lowered, _ = aot.lower_step(cfg, t)
  assert lowered.as_text(dialect='hlo').count('custom_call_target="tpu_custom_call"') == 3   # fwd, dQ, dK/dV
  r = aot.compile_report(cfg, t)
  assert r['fits'] and r['mesh'] == {'data': 1, 'fsdp': 4, 'tensor': 1}
  B, H, K = 8, 4, 128 // 4   # nano: d_model 128, 4 heads
  assert r['kernel_flops_per_step'] == 9 * 2 * B * H * K * 128 * 128
  assert r['xla_flops_per_step'] > r['accounting_flops_per_step']   # executed >= the model's (causal) FLOPs
  assert 0 < r['estimated_mfu'] < 1


def test_hlo_flops_count_a_shard_map_body_on_every_device_and_kernels_by_their_shapes():
  """A dot inside a shard_map body (per-device shapes) runs on each device; a custom call counts what
  kernel_flops says of its shapes."""
  hlo = """
xla.sdy.manual_computation_body.1 {
  a = f32[2,8]{1,0} parameter(0)
  b = f32[8,4]{1,0} parameter(1)
  ROOT d = f32[2,4]{1,0} dot(a, b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY main {
  x = f32[2,8]{1,0} parameter(0)
  y = f32[8,4]{1,0} parameter(1)
  c = f32[2,4]{1,0} call(x, y), to_apply=xla.sdy.manual_computation_body.1
  k = (f32[2,4]{1,0}, bf16[3]{0}) custom-call(x, y), custom_call_target="tpu_custom_call"
  ROOT e = f32[2,4]{1,0} dot(x, y), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}
"""
  seen = []

  def kernel(target, outs, operands):
    seen.append((target, outs, operands))
    return 1000.0
  assert hlo_lib.hlo_dot_flops(hlo, devices=4) == (2 * 2 * 4 * 8 * 4 + 2 * 2 * 4 * 8, 0)
  assert hlo_lib.hlo_dot_flops(hlo, kernel, devices=4) == (2 * 2 * 4 * 8 * 4 + 2 * 2 * 4 * 8 + 1000, 0)
  assert seen == [('tpu_custom_call', [[2, 4], [3]], [[2, 8], [8, 4]])]


@needs_libtpu
def test_7b_on_one_v5e_chip_does_not_fit_with_the_shortfall():
  t = aot.parse_target('v5litepod-1')
  cfg = aot.target_config(load_config('scaling/model/ladder.py:7b', {'train.batch_size': '1', 'mesh.fsdp': '1'}))
  r = aot.compile_report(cfg, t)
  n = accounting.count_params(cfg.model)['total']
  assert not r['fits']
  assert r['bytes_per_chip']['total'] >= 12 * n > 16 * aot.GiB   # params + Adam alone are 5x the HBM
  assert r['shortfall_bytes'] == r['bytes_per_chip']['total'] - r['hbm_bytes_per_chip'] > 50 * aot.GiB
  assert r['hbm_bytes_per_chip'] <= 16 * aot.GiB
  assert 'DOES NOT FIT' in aot_cli.format_report(r)


@needs_libtpu
def test_compile_command_json_from_the_cache(nano_v5p8, aot_cache, capsys):
  from scaling.cli import main as cli
  args = ['compile', '--config', 'scaling/model/ladder.py:nano', '--topology', 'v5p-8', '--json',
          '--cache_dir', aot_cache] + [f'--config.{k}={v}' for k, v in NANO.items()]
  assert cli.main(args) == 0
  out = json.loads(capsys.readouterr().out)
  assert out['from_cache']   # the fixture compiled this very step: its figures come back from disk
  for k in ('fits', 'hbm_bytes_per_chip', 'bytes_per_chip', 'xla_flops_per_step', 'accounting_flops_per_step',
            'estimated_step_s', 'estimated_mfu'):
    assert k in out
  assert out['bytes_per_chip'] == nano_v5p8[3]['bytes_per_chip']   # the same program as the fixture's
  assert out['xla_flops_per_step'] == nano_v5p8[3]['xla_flops_per_step']


@pytest.fixture(scope='module')
def two_slices():
  """nano on 2 x v5p-8, per slice fsdp over the 4 chips: mesh data=2 (over DCN) x fsdp=4 (ICI)."""
  t = aot.parse_target('v5p-8', num_slices=2)
  cfg = aot.target_config(load_config('scaling/model/ladder.py:nano', {**NANO, 'mesh.data': '1', 'mesh.fsdp': '-1'}))
  c = aot.compile_step(cfg, t)
  slice_of = [d.slice_index for d in c.setup.mesh.devices.flat]
  return c, hlo_lib.collectives(c.compiled.as_text(), slice_of)


@needs_libtpu
def test_multislice_mesh_puts_data_over_slices(two_slices):
  c, _ = two_slices
  mesh = c.setup.mesh
  assert dict(mesh.shape) == dict(data=2, fsdp=4, tensor=1)
  for i in range(2):   # each data row is one slice: fsdp (and its all-gathers) stays on ICI
    assert {d.slice_index for d in mesh.devices[i].flat} == {i}


@needs_libtpu
def test_multislice_gradient_reduction_crosses_slices(two_slices):
  c, colls = two_slices
  n = accounting.count_params(c.setup.dims)['total']
  cross = [x for x in colls if x['cross_slice']]
  reduced = sum(x['elements'] for x in cross if x['op'] == 'all-reduce')
  # every gradient crosses once: at least each chip's fsdp shard, at most the whole gradient (+ the loss)
  assert n / 4 <= reduced <= n + 16
  # ICI collectives stay inside a slice
  assert all(x['group_size'] is None or x['group_size'] <= 4 for x in colls)


@needs_libtpu
def test_multislice_only_the_gradient_reduction_crosses_slices(two_slices):
  # (with model.scan_layers=false, libtpu 0.0.42 also all-gathers the embedding's per-token gradient
  # across the data axis for its scatter-add; the scanned layout of the named rungs does not)
  _, colls = two_slices
  assert {x['op'] for x in colls if x['cross_slice']} == {'all-reduce'}


def test_check_runs_fit_names_the_runs_that_do_not_fit_and_compiles_each_config_once(monkeypatch):
  calls = []

  def fake_report(cfg, t, devices=None):   # 1 GiB per layer against the v5e chip's 16 GiB
    calls.append(cfg.model.num_layers)
    total = cfg.model.num_layers * aot.GiB
    return dict(fits=total <= 16 * aot.GiB, bytes_per_chip=dict(total=total), hbm_bytes_per_chip=16 * aot.GiB,
                shortfall_bytes=max(0, total - 16 * aot.GiB))
  monkeypatch.setattr(aot, 'compile_report', fake_report)
  monkeypatch.setattr(aot, 'target_devices', lambda t: [])
  small = load_config('scaling/model/ladder.py:nano')
  big = load_config('scaling/model/ladder.py:nano', {'model.num_layers': '20'})
  lr = load_config('scaling/model/ladder.py:nano', {'train.lr': '0.1'})   # same step as `small`
  problems = aot_cli.check_runs_fit([('small', small), ('big', big), ('small-lr', lr)], 'v5litepod-4')
  assert calls == [2, 20]
  assert len(problems) == 1 and problems[0].startswith('big: needs 20.00 GiB per chip')
  assert '4.00 GiB more than the 16.00 GiB' in problems[0]
  with pytest.raises(aot.AotError, match='Known'):
    aot_cli.check_runs_fit([small], 'v5p-3')


def test_sweep_preflight_is_on_by_default_and_can_be_turned_off(monkeypatch):
  import types
  monkeypatch.setattr(aot, 'libtpu_available', lambda: True)
  monkeypatch.setattr(aot_cli, '_prepare_compile', lambda cache_dir=None: None)
  seen = []
  monkeypatch.setattr(aot_cli, 'check_runs_fit', lambda runs, topo, slices: seen.append((runs, topo, slices)) or ['x'])
  cfg = load_config('scaling/model/ladder.py:nano')
  sweep = types.SimpleNamespace(runs=[types.SimpleNamespace(label='nano', hash='h', config=cfg)])
  monkeypatch.delenv('SCALING_AOT_CHECK', raising=False)
  assert aot_cli.sweep_fit_problems(sweep, {'tpu_type': 'v5p-16', 'num_slices': '2'}) == ['x']
  assert seen == [([('nano', cfg)], 'v5p-16', 2)]
  assert aot_cli.sweep_fit_problems(sweep, {'tpu_type': 'v5p-16', 'aot_check': '0'}) == []
  monkeypatch.setenv('SCALING_AOT_CHECK', '0')
  assert aot_cli.sweep_fit_problems(sweep, {'tpu_type': 'v5p-16'}) == []
  assert aot_cli.sweep_fit_problems(sweep, {'tpu_type': 'v5p-16', 'aot_check': 'true'}) == ['x']
  monkeypatch.setattr(aot, 'libtpu_available', lambda: False)
  assert aot_cli.sweep_fit_problems(sweep, {'tpu_type': 'v5p-16', 'aot_check': 'true'}) == []


def test_gpu_names():
  t = aot.parse_target('h100')
  assert (t.chips, t.topology, t.hosts, t.chip.platform) == (8, '1x1x8', 1, 'cuda')
  t = aot.parse_target('h200-16')
  assert (t.chips, t.topology, t.hosts) == (16, '1x2x8', 2)
  assert 'device_memory_size: 150754820096' in aot.gpu_target_config(t.chip)
  with pytest.raises(aot.AotError, match='multiple of 8'):
    aot.parse_target('h100-12')


needs_cuda_plugin = pytest.mark.skipif(
    not any(__import__('importlib').util.find_spec(m) for m in ('jax_cuda13_plugin', 'jax_cuda12_plugin')),
    reason='the CUDA PJRT plugin is not installed (pip install -e ".[cuda-aot]")')


@needs_cuda_plugin
def test_nano_compiles_for_8_h100_without_a_gpu():
  cfg = aot.target_config(load_config('scaling/model/ladder.py:nano', {'model.attention': 'xla'}))
  c = aot.compile_step(cfg, aot.parse_target('h100-8'))
  n = accounting.count_params(c.setup.dims)['total']
  assert abs(c.memory['argument'] - 12 * n) / (12 * n) < 0.05   # data=8: the whole state on every GPU
  assert c.memory['total'] < 80e9


@pytest.mark.parametrize('backend', ['tpu-vm', 'gke'])
def test_tpu_launchers_refuse_a_sweep_that_does_not_fit_before_reserving(backend, monkeypatch, tmp_path):
  import types

  from scaling.launch.gke import GkeBackend
  from scaling.launch.sweep import LaunchError
  from scaling.launch.tpu_vm import TpuVmBackend
  monkeypatch.setattr(aot, 'libtpu_available', lambda: True)
  monkeypatch.setattr(aot_cli, '_prepare_compile', lambda cache_dir=None, platform='tpu': None)
  monkeypatch.setattr(aot_cli, 'check_runs_fit', lambda runs, topo, slices: [f'{runs[0][0]}: needs 99 GiB per chip'])
  cls = TpuVmBackend if backend == 'tpu-vm' else GkeBackend
  res = {'tpu_type': 'v5p-8', 'zone': 'z', 'cluster': 'c', 'docker_image': 'img', 'aot_check': '1'}
  b = cls(tmp_path, res, log=lambda *a: None)
  b.fit_check = aot_cli.sweep_fit_problems   # as `scaling sweep` hands it to the launcher
  sweep = types.SimpleNamespace(runs=[types.SimpleNamespace(label='7b', hash='h', config=None)])
  with pytest.raises(LaunchError, match='1 run.* do not fit on v5p-8; nothing was reserved:\n  7b: needs 99 GiB'):
    b.preflight(sweep)
  b.resources['aot_check'] = '0'
  b.preflight(sweep)   # off: nothing compiled, nothing refused


def test_collective_bytes_of_an_all_gather_and_a_reduce_scatter_by_hand():
  """Compiled on the 8 fake CPU devices, a mesh a=2 x b=4; per device in a loop of 3: an all-gather over b of
  f32[1,16] (its result f32[4,16], 256 bytes; a ring sends 3/4 of it, 192) and a reduce-scatter over b of
  f32[4,16] (its result f32[1,16], 64 bytes; a ring sends 3 of them, 192)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P
  mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(2, 4), ('a', 'b'))
  x = jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=NamedSharding(mesh, P(('a', 'b'))))
  gather = jax.shard_map(lambda v: jax.lax.all_gather(v, 'b', tiled=True), mesh=mesh, in_specs=P(('a', 'b')),
                         out_specs=P('a'), check_vma=False)
  scatter = jax.shard_map(lambda v: jax.lax.psum_scatter(v, 'b', tiled=True), mesh=mesh, in_specs=P('a'),
                          out_specs=P(('a', 'b')), check_vma=False)
  step = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, v: v + scatter(jnp.tanh(gather(v))), x))
  text = step.lower(x).compile().as_text()
  assert hlo_lib.collective_bytes(text, [0] * 8) == {
      ('all-gather', 'ici'): dict(count=3, bytes=3 * 4 * 16 * 4, wire_bytes=3 * 3 / 4 * 256),
      ('reduce-scatter', 'ici'): dict(count=3, bytes=3 * 16 * 4, wire_bytes=3 * 3 * 64)}
  # a second slice of each b-group (a = slices): the same ops stay within a slice
  assert set(hlo_lib.collective_bytes(text, [0, 0, 0, 0, 1, 1, 1, 1])) == {('all-gather', 'ici'),
                                                                          ('reduce-scatter', 'ici')}
  assert hlo_lib.wire_bytes('all-reduce', 100.0, 4) == 150.0 and hlo_lib.wire_bytes('all-gather', 100.0, 1) == 0.0
