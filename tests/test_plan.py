"""scaling/train/plan.py (`scaling plan`): the step-time model, the pruned search, the cache, the command.

The search runs on hand-made memory and traffic curves (a fake evaluator: no compile), whose best setting is
known by construction; the step-time parts are checked against the vendors' figures worked out by hand; the
cache and one real plan compile the tiny step for one TPU v5e chip (libtpu, compile-only; marked slow).
"""

import json

import pytest

from scaling.base.hardware import GiB
from scaling.config.load import load_config
from scaling.train import aot
from scaling.train import hlo as hlo_lib
from scaling.train import plan as plan_lib

needs_libtpu = pytest.mark.skipif(not aot.libtpu_available(), reason='libtpu not installed (pip install -e ".[tpu-aot]")')

TINY = {'model.attention': 'xla', 'model.remat': 'full', 'model.scan_layers': 'true', 'model.num_layers': '2',
        'model.d_model': '64', 'model.num_heads': '4', 'model.num_kv_heads': '2', 'model.d_ff': '128',
        'model.seq_len': '64', 'model.vocab_size': '256', 'train.batch_size': '16', 'train.loss_chunk': '256',
        'mesh.data': '1', 'mesh.fsdp': '-1'}
REMAT_MEMORY = {'none': 1.0, 'dots': 0.7, 'dots_except_mlp': 0.5, 'full': 0.25}
REMAT_FLOPS = {'none': 1.0, 'dots': 1.1, 'dots_except_mlp': 1.2, 'full': 1.33}


def tiny_cfg(**over):
  return aot.target_config(load_config('scaling/model/ladder.py:nano', {**TINY, **over}))


class Curves:
  """A hand-made candidate: state 16 GiB over fsdp x tensor, activations `act` GiB over data-parallel x
  microbatches x tensor (times the remat's share), FLOPs 1e15 x the remat's recomputation; collectives 1 GB per
  step per fsdp gather round (x microbatches) and `tensor_bytes` per tensor-parallel chip."""

  def __init__(self, act=200.0, tensor_bytes=20e9):
    self.act, self.tensor_bytes, self.calls = act, tensor_bytes, []

  def bytes(self, k):
    return (16 * GiB / (k.fsdp * k.tensor)
            + self.act * GiB * REMAT_MEMORY[k.remat] / (k.data * k.fsdp * k.microbatches * k.tensor))

  def __call__(self, k):
    self.calls.append(k)
    ici = (1e9 * k.microbatches if k.fsdp > 1 else 2e9) + (self.tensor_bytes * (k.tensor > 1))
    return dict(bytes=self.bytes(k), hbm=95 * GiB, flops=1e15 * REMAT_FLOPS[k.remat], accounting_flops=1e15,
                hbm_bytes=1e10, ici_wire_bytes=ici, dcn_wire_bytes=0.0, compile_s=1.0), False


# ----------------------------------------------------------------------------- the step-time model
def test_step_time_parts_by_hand():
  """v5p: 459 TFLOP/s bf16, 2,765 GB/s HBM, 1,200 GB/s ICI both ways (600 one way), 50 Gb/s DCN per chip."""
  t = aot.parse_target('v5p-8', num_slices=2)   # 8 chips
  fig = dict(flops=8 * 459e12 * 0.5, accounting_flops=8 * 459e12 * 0.3, hbm_bytes=2765e9 * 0.2,
             ici_wire_bytes=600e9 * 0.1, dcn_wire_bytes=50e9 / 8 * 0.05)
  e = plan_lib.estimate(fig, t)
  assert e['compute_s'] == pytest.approx(0.5) and e['memory_s'] == pytest.approx(0.2)
  assert e['ici_s'] == pytest.approx(0.1) and e['dcn_s'] == pytest.approx(0.05)
  assert e['step_s'] == pytest.approx(0.5 + 0.1 + 0.05)      # max(compute, memory) + collectives
  assert e['mfu'] == pytest.approx(0.3 / 0.65)
  memory_bound = plan_lib.estimate(dict(fig, hbm_bytes=2765e9 * 0.9), t)
  assert memory_bound['step_s'] == pytest.approx(0.9 + 0.15)


def test_memory_traffic_counts_loop_bodies_trip_count_times():
  hlo = """HloModule m

fused {
  a = f32[4,8]{1,0} parameter(0)
  ROOT n = f32[4,8]{1,0} negate(a)
}

body {
  p = (s32[], f32[4,8]) parameter(0)
  x = f32[4,8]{1,0} get-tuple-element(p), index=1
  f = f32[4,8]{1,0} fusion(x), kind=kLoop, calls=fused
  i = s32[] get-tuple-element(p), index=0
  ROOT t = (s32[], f32[4,8]) tuple(i, f)
}

cond {
  p = (s32[], f32[4,8]) parameter(0)
  i = s32[] get-tuple-element(p), index=0
  n = s32[] constant(5)
  ROOT lt = pred[] compare(i, n), direction=LT
}

ENTRY main {
  a = f32[4,8]{1,0} parameter(0)
  c = bf16[4,8]{1,0} convert(a)
  z = s32[] constant(0)
  t = (s32[], f32[4,8]) tuple(z, a)
  ROOT w = (s32[], f32[4,8]) while(t), condition=cond, body=body
}
"""
  # convert: reads 128 B, writes 64 B; the fusion reads and writes 128 B, 5 times; the compare reads two s32
  # and writes a pred, 5 times; the fusion's own negate stays on chip
  weighted, once = hlo_lib.memory_traffic(hlo)
  assert once == 192 + 256 + 9
  assert weighted == 192 + 5 * 256 + 5 * 9


# ----------------------------------------------------------------------------- the search on known curves
def test_plan_chooses_the_fewest_microbatches_that_fit():
  """8 v5e chips, remat full (nothing heavier to try), a 6 GiB limit: on fsdp 8 the state is 2 GiB per chip and
  the activations 200 GiB x 0.25 / 8 = 6.25 GiB at one microbatch (8.25: too big), 6.25 / m at m: 2 fits
  (5.125 GiB). Less fsdp holds more state and needs 4 microbatches (more fsdp gathers: slower); tensor 2 adds
  collectives. So: fsdp 8, 2 microbatches, and no more than 2 tried there."""
  cfg = tiny_cfg(**{'train.batch_size': '64'})
  t = aot.parse_target('v5litepod-8')
  curves = Curves()
  p = plan_lib.Planner(cfg, t, curves, hbm=6 * GiB, refine=False)
  w = p.run()
  assert w is not None
  k = w['knobs']
  assert (k.data, k.fsdp, k.tensor, k.remat, k.microbatches) == (1, 8, 1, 'full', 2)
  assert w['fig']['bytes'] == pytest.approx(2 * GiB + 50 * GiB / 16)
  # microbatches only as many as needed: none beyond 2 on the winning mesh, and fewer compiles than the grid
  assert not [c for c in curves.calls if c.fsdp == 8 and c.microbatches > 2]
  assert len(curves.calls) < 4 * 4 * 3 * 2


def test_less_remat_when_it_fits_and_more_tensor_parallelism_loses_when_it_only_adds_bytes():
  """Plenty of HBM: remat 'none' (least recomputation) fits everywhere; a tensor axis saves no FLOPs and adds
  20 GB of collectives per step, so the winner has tensor 1, and meshes with tensor 2 were tried and lost."""
  cfg = tiny_cfg()
  t = aot.parse_target('v5p-8')
  curves = Curves(act=10.0)
  p = plan_lib.Planner(cfg, t, curves, refine=False)
  w = p.run()
  assert w['knobs'].tensor == 1 and w['knobs'].remat == 'none' and w['knobs'].microbatches == 1
  tried_tensor = [r for r in p.rows.values() if r['knobs'].tensor == 2]
  assert tried_tensor and all(r['est']['step_s'] > w['est']['step_s'] for r in tried_tensor)
  assert not [r for r in p.rows.values() if r['knobs'].tensor == 4]   # stopped once tensor 2 did not help
  # the step time's collective part is the hand model's 20 GB over 600 GB/s (one way of v5p's 1,200 GB/s)
  t2 = min(tried_tensor, key=lambda r: r['est']['step_s'])
  assert t2['est']['ici_s'] - w['est']['ici_s'] == pytest.approx(20e9 / 600e9, rel=0.1)


def test_nothing_fits_names_the_closest_candidate():
  cfg = tiny_cfg()
  t = aot.parse_target('v5litepod-4')
  p = plan_lib.Planner(cfg, t, Curves(act=2000.0), hbm=1 * GiB, refine=False)
  assert p.run() is None
  c = p.closest()
  assert c['verdict'] == 'too big'
  assert all(c['fig']['bytes'] <= r['fig']['bytes'] for r in p.rows.values())


def test_the_candidate_budget_stops_the_search():
  cfg = tiny_cfg()
  p = plan_lib.Planner(cfg, aot.parse_target('v5p-8'), Curves(act=10.0), max_candidates=2)
  p.run()
  assert len(p.rows) == 2 and 'budget' in p.stopped


# ----------------------------------------------------------------------------- the cache, the command
def test_cache_second_run_compiles_nothing(monkeypatch, tmp_path):
  """A re-run reads every candidate from the cache: the step is neither lowered nor compiled again."""
  compiled = []

  def fake_compile_figures(cfg, t, devices=None):
    compiled.append(cfg.train.microbatches)
    return Curves()(plan_lib.knobs_of(cfg, t))[0]
  monkeypatch.setattr(plan_lib, 'compile_figures', fake_compile_figures)
  monkeypatch.setattr(aot, 'target_devices', lambda t: [])
  monkeypatch.setattr(plan_lib, 'versions', lambda: dict(jax='x', libtpu='y'))
  cfg = load_config('scaling/model/ladder.py:nano', TINY)
  t = aot.parse_target('v5litepod-8')
  first = plan_lib.plan(cfg, t, cache_dir=str(tmp_path), hbm=6 * GiB, refine=False)
  n = len(compiled)
  assert n == first.compiled == len(first.rows) >= 2
  second = plan_lib.plan(cfg, t, cache_dir=str(tmp_path), hbm=6 * GiB, refine=False)
  assert len(compiled) == n and second.compiled == 0
  assert second.winner['knobs'] == first.winner['knobs']
  # another jax/libtpu version is another key
  monkeypatch.setattr(plan_lib, 'versions', lambda: dict(jax='x2', libtpu='y'))
  plan_lib.plan(cfg, t, cache_dir=str(tmp_path), hbm=6 * GiB, refine=False, max_candidates=1)
  assert len(compiled) == n + 1


def test_plan_command_writes_the_winner_as_overrides(monkeypatch, tmp_path, capsys):
  from scaling.cli import main as cli
  from scaling.train import aot_cli
  monkeypatch.setattr(aot_cli, '_prepare_compile', lambda *a, **k: None)
  monkeypatch.setattr(plan_lib, 'compiling_evaluator', lambda cfg, t, cache, devices=None: Curves())
  out = tmp_path / 'p.json'
  args = ['plan', '--config', 'scaling/model/ladder.py:nano', '--topology', 'v5litepod-8', '--no_refine', '--out',
          str(out)] + [f'--config.{k}={v}' for k, v in TINY.items()]
  assert cli.main(args + ['--hbm_gib', '6']) == 0
  text = capsys.readouterr().out
  assert '--config.train.microbatches=2' in text and '--config.mesh.fsdp=8' in text
  plan = json.loads(out.read_text())
  assert plan['fits'] and plan['overrides']['train.microbatches'] == 2 and plan['overrides']['model.remat'] == 'full'
  assert plan['candidates'][0]['overrides'] == plan['overrides']
  assert cli.main(args + ['--hbm_gib', '0.5']) == 1
  assert 'nothing fits' in capsys.readouterr().out and not json.loads(out.read_text())['fits']


def test_sweep_plan_flag_applies_the_overrides_to_every_run(tmp_path, capsys):
  from scaling.cli import main as cli
  plan = tmp_path / 'p.json'
  plan.write_text(json.dumps({'overrides': {'train.microbatches': 2, 'model.remat': 'full'}}))
  assert cli.main(['sweep', '--config', 'configs/sweeps/smoke.py', '--backend', 'local', '--dry-run', '--no-pack',
                   '--root', str(tmp_path / 'root'), '--plan', str(plan)]) == 0
  out = capsys.readouterr().out
  assert out.count('--config.train.microbatches=2') >= 4 and out.count('--config.model.remat=full') >= 4


# ----------------------------------------------------------------------------- a real plan (libtpu)
@needs_libtpu
@pytest.mark.slow
def test_real_plan_on_one_v5e_chip_picks_microbatches_under_a_limit_between_them(tmp_path):
  """The tiny step on one v5e chip, remat full (nothing heavier to try): its bytes at 1 and 2 microbatches,
  compiled by `scaling compile`'s path, bracket a limit, so the plan must pick 2; a re-run compiles nothing."""
  aot.enable_compile_cache(str(tmp_path / 'aot'))
  t = aot.parse_target('v5litepod-1')
  one = aot.compile_report(tiny_cfg(), t)['bytes_per_chip']['total']
  two = aot.compile_report(tiny_cfg(**{'train.microbatches': '2'}), t)['bytes_per_chip']['total']
  assert two < one
  cfg = load_config('scaling/model/ladder.py:nano', TINY)
  p = plan_lib.plan(cfg, t, cache_dir=str(tmp_path / 'plan'), hbm=(one + two) // 2, refine=False)
  assert p.winner['knobs'].microbatches == 2 and p.winner['fig']['bytes'] == two
  e = p.winner['est']
  assert e['compute_s'] > 0 and e['memory_s'] > 0 and e['ici_s'] == 0   # one chip: no collectives
  again = plan_lib.plan(cfg, t, cache_dir=str(tmp_path / 'plan'), hbm=(one + two) // 2, refine=False)
  assert again.compiled == 0 and again.winner['knobs'] == p.winner['knobs']


def _fake_planning(monkeypatch, record) -> list:
  """plan=auto with scaling plan replaced by a Planner over the Curves model (no compile): returns the list that
  gets record(cfg) of every config actually planned."""
  from scaling.train import aot_cli
  planned = []

  def fake_plan(cfg, t, log=None, **kw):
    planned.append(record(cfg))
    p = plan_lib.Planner(aot.target_config(cfg), t, Curves(), hbm=6 * GiB, refine=False)
    p.run()
    return p
  monkeypatch.setattr(aot, 'libtpu_available', lambda: True)
  monkeypatch.setattr(aot_cli, '_prepare_compile', lambda *a, **k: None)
  monkeypatch.setattr(plan_lib, 'plan', fake_plan)
  return planned


def test_sweep_resource_plan_auto_gives_each_run_its_winner(monkeypatch):
  """resources plan=auto (tpu-vm, gke): every run is planned for the slice and takes the winner's knobs as flags,
  its config and hash following; runs with the same step are planned once."""
  import types

  from scaling.config.load import config_hash
  from scaling.train import aot_cli
  planned = _fake_planning(monkeypatch, lambda cfg: cfg.train.batch_size)
  spec = 'scaling/model/ladder.py:nano'
  runs = []
  for lr in ('0.001', '0.002'):
    flags = {**TINY, 'train.lr': lr}
    cfg = load_config(spec, flags)
    runs.append(types.SimpleNamespace(label=f'lr={lr}', hash=config_hash(cfg), config=cfg, spec=spec, flags=flags,
                                      parent=None))
  sweep = types.SimpleNamespace(runs=runs)
  old = [r.hash for r in runs]
  assert aot_cli.sweep_fit_problems(sweep, {'tpu_type': 'v5litepod-8', 'plan': 'auto', 'aot_check': '1'}) == []
  assert planned == [16]   # the lr is no part of the step: one plan for both
  for r, h in zip(runs, old):
    assert r.flags['train.microbatches'] == '2' and r.flags['mesh.fsdp'] == '8' and r.flags['mesh.data'] == '1'
    assert r.config.train.microbatches == 2 and r.hash == config_hash(r.config) != h


def test_sweep_resource_plan_auto_plans_a_branch_after_its_parent_and_forks_from_the_planned_directory(monkeypatch):
  """A cooldown branch under plan=auto: the parent is planned first (its hash changes with the knobs), and the
  branch (listed first here) then names the parent's new directory in train.init_from, takes the same knobs (the
  same step: one plan) and hashes its own planned config."""
  import types

  from scaling.config.load import config_hash
  from scaling.train import aot_cli
  planned = _fake_planning(monkeypatch, lambda cfg: cfg.train.init_from)
  spec = 'scaling/model/ladder.py:nano'
  pflags = {**TINY, 'train.steps': '20'}
  pcfg = load_config(spec, pflags)
  parent = types.SimpleNamespace(label='parent', hash=config_hash(pcfg), config=pcfg, spec=spec, flags=pflags,
                                 parent=None, fork_step=None)
  bflags = {**pflags, 'train.steps': '30', 'train.init_from': f'../{parent.hash}:15'}
  bcfg = load_config(spec, bflags)
  branch = types.SimpleNamespace(label='branch', hash=config_hash(bcfg), config=bcfg, spec=spec, flags=bflags,
                                 parent=parent.hash, fork_step=15)
  old_parent, old_branch = parent.hash, branch.hash
  sweep = types.SimpleNamespace(runs=[branch, parent])
  assert aot_cli.sweep_fit_problems(sweep, {'tpu_type': 'v5litepod-8', 'plan': 'auto', 'aot_check': '1'}) == []
  assert planned == ['']   # the parent's step; the branch's is the same step (its init_from is no part of it)
  assert parent.hash == config_hash(parent.config) != old_parent
  assert branch.parent == parent.hash and branch.flags['train.init_from'] == f'../{parent.hash}:15'
  assert branch.config.train.init_from == f'../{parent.hash}:15' and branch.config.train.microbatches == 2
  assert branch.hash == config_hash(branch.config) not in (old_branch, parent.hash)


# ----------------------------------------------------------------------------- the smallest target that fits
class State(Curves):
  """Curves with `state` GiB of parameters and optimizer state spread over fsdp x tensor."""

  def __init__(self, state, act=200.0):
    super().__init__(act=act)
    self.state = state

  def bytes(self, k):
    return super().bytes(k) + (self.state - 16) * GiB / (k.fsdp * k.tensor)


def planner_on(curves, planned):
  def plan_fn(cfg, t):
    p = plan_lib.Planner(cfg, t, curves, refine=False)
    p.run()
    planned.append((t.name, p))
    return p
  return plan_fn


def test_targets_smallest_fitting_slice_is_chosen():
  """600 GiB of state against v5p's 95 GiB: 150 GiB per chip on v5p-8's 4 chips fits nothing; on v5p-16's 8 chips
  75 GiB plus 200 x 0.7 / 8 = 17.5 GiB of activations (remat dots) fits. So v5p-16, whatever order they are listed
  in, and v5p-32 is never planned."""
  from scaling.train import plan_targets
  cfg = tiny_cfg(**{'train.batch_size': '64'})
  ts = plan_targets.ordered_targets('v5p-32,v5p-16,v5p-8')
  assert [t.name for t in ts] == ['v5p-8', 'v5p-16', 'v5p-32']
  planned, curves = [], State(600.0)
  row = plan_targets.choose_target('big', cfg, ts, planner_on(curves, planned))
  assert [name for name, _ in planned] == ['v5p-8', 'v5p-16']
  assert row['fits'] and row['target'] == 'v5p-16' and row['chips'] == 8
  assert [(x['target'], x['fits']) for x in row['tried']] == [('v5p-8', False), ('v5p-16', True)]
  k = plan_lib.Knobs(**{name: row['overrides'][field] for name, field in plan_lib.KNOB_FIELDS.items()})
  assert k.data * k.fsdp * k.tensor == 8
  assert row['bytes_per_chip'] == pytest.approx(curves.bytes(k)) and row['bytes_per_chip'] <= 95 * GiB
  assert row['hbm_bytes_per_chip'] == 95 * GiB and 0 < row['estimated_mfu'] < 1
  text = plan_targets.format_target_table([row])
  assert '| big | v5p-16 | yes |' in text and 'v5p-8: no' in text


def test_targets_none_fits_names_the_closest_over_every_slice():
  """5,000 GiB of state: 312 GiB per chip even on v5p-32's 16 chips. Nothing fits; the closest candidate is the
  one with the least bytes of any slice (all share the 95 GiB limit), and it lies on the largest slice."""
  from scaling.train import plan_targets
  cfg = tiny_cfg(**{'train.batch_size': '64'})
  planned = []
  row = plan_targets.choose_target('huge', cfg, plan_targets.ordered_targets(['v5p-8', 'v5p-32', 'v5p-16']),
                                   planner_on(State(5000.0), planned))
  assert [name for name, _ in planned] == ['v5p-8', 'v5p-16', 'v5p-32']
  assert not row['fits'] and [x['fits'] for x in row['tried']] == [False, False, False]
  least = min((r['fig']['bytes'], name) for name, p in planned for r in p.rows.values() if r['verdict'] == 'too big')
  assert row['target'] == least[1] == 'v5p-32' and row['bytes_per_chip'] == least[0]
  assert 'fits none of v5p-8, v5p-16, v5p-32' in row['note'] and 'closest' in row['note']


def test_table_targets_command_json(monkeypatch, capsys):
  """`scaling table --targets ... --json`: each rung's accounting row with its target's fields (the plan stubbed:
  320 GiB of state for 125m, 80 GiB per chip on v5p-8's 4 chips; 960 GiB for 7b, 120 GiB per chip even on
  v5p-16's 8: it fits neither, exit status 1, its closest on v5p-16)."""
  from scaling.cli import main as cli
  from scaling.train import aot_cli
  monkeypatch.setattr(aot_cli, '_prepare_compile', lambda *a, **k: None)

  def fake_plan(cfg, t, **kw):
    curves = State(320.0 if cfg.model.d_model < 1000 else 960.0, act=1.0)
    p = plan_lib.Planner(aot.target_config(cfg), t, curves, refine=False)
    p.run()
    return p
  monkeypatch.setattr(plan_lib, 'plan', fake_plan)
  assert cli.main(['table', '--rungs', '125m,7b', '--targets', 'v5p-16,v5p-8', '--json']) == 1
  rows = json.loads(capsys.readouterr().out)
  assert [(r['rung'], r['target'], r['fits']) for r in rows] == [('125m', 'v5p-8', True), ('7b', 'v5p-16', False)]
  o = rows[0]['overrides']
  assert rows[0]['params'] > 1e8 and (o['mesh.data'], o['mesh.fsdp'], o['mesh.tensor']) == (1, 4, 1)
  assert 80 * GiB < rows[0]['bytes_per_chip'] < 81 * GiB and 120 * GiB < rows[1]['bytes_per_chip'] < 121 * GiB
  assert cli.main(['table', '--rungs', '125m', '--targets', 'v5p-8']) == 0
  assert '| 125m | v5p-8 | yes | data=1 fsdp=4 tensor=1' in capsys.readouterr().out


def test_table_topology_auto_compiles_each_rung_on_its_ladder_target(monkeypatch, capsys):
  """`scaling table --topology auto`: each rung compiled as configured on scaling/model/ladder.py TARGETS[rung]."""
  from scaling.cli import main as cli
  from scaling.config.load import load_module
  from scaling.train import aot_cli
  ladder = load_module('scaling/model/ladder.py')
  seen = []

  def fake_rows(named, topology, num_slices=1, log=None):
    seen.extend((name, topology, cfg.model.remat) for name, cfg in named)
    return [dict(topology=topology, fits=True, hbm_bytes_per_chip=GiB, estimated_step_s=1.0, estimated_mfu=0.5,
                 note='') for _ in named]
  monkeypatch.setattr(aot_cli, '_prepare_compile', lambda *a, **k: None)
  monkeypatch.setattr(aot_cli, 'topology_rows', fake_rows)
  assert cli.main(['table', '--rungs', '125m,1b,7b', '--topology', 'auto', '--json']) == 0
  rows = json.loads(capsys.readouterr().out)
  want = {r: ladder.TARGETS[r] for r in ('125m', '1b', '7b')}
  assert {name: topo for name, topo, _ in seen} == want
  assert [(r['rung'], r['topology']) for r in rows] == list(want.items())
  assert all(r['note'] == f'on {want[r["rung"]]}' for r in rows)
  remat = {name: m for name, _, m in seen}
  assert remat['1b'] == ladder.PLANNED.get('1b', {}).get('model.remat', 'dots_except_mlp')
  assert cli.main(['table', '--rungs', '125m,1b,7b', '--topology', 'auto']) == 0
  assert '| fits target |' in capsys.readouterr().out
  seen.clear()   # one named slice: every rung on it, the notes as they were
  assert cli.main(['table', '--rungs', '125m,1b', '--topology', 'v5p-32', '--json']) == 0
  assert [topo for _, topo, _ in seen] == ['v5p-32', 'v5p-32']
  assert [r['note'] for r in json.loads(capsys.readouterr().out)] == ['', '']
