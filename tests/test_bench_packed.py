"""bench/packed.py (packed members against separate runs, issue #32): its model of the unpacked arm and its
choices from the study, in process; and the script end to end at a tiny size in a subprocess, every number of
its table checked against arithmetic done here from the processes' own files (metrics.jsonl) and the measured
walls in its --json.

The end-to-end run: d_model 32 at 1 layer and seq 32, 3 steps, K = 2, one layout, no warm-up and one
single run (--repeats 1): three rounds of tiny processes (one alone, two at once, K=2 packed).
"""

import json
import os
import statistics
import subprocess
import sys
import types

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, os.path.join(ROOT, 'bench'))

import packed  # noqa: E402  (bench/packed.py)
from test_bench_scripts import md_table  # noqa: E402  (one reader of the scripts' markdown tables)

HANG_S = 600   # a limit that only catches a hang


def run_script(argv):
  """stdout of `argv` run from the repository root on one CPU device; fails with its output on an error.
  XLA's backend optimizations off, as the suite's own compiles (tests/conftest.py): the processes here are
  tiny and the test checks arithmetic, not speed."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_backend_optimization_level=0')
  p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
  assert p.returncode == 0, f'{argv} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}'
  return p.stdout, p.stderr


def number(cell):
  return float(cell.split(' ')[0].replace(',', '').rstrip('x%'))


def steady_step_s(workdir):
  """The median of a run's 'throughput/step_s' rows after the first, read here from its metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  times = [r['throughput/step_s'] for r in rows if 'throughput/step_s' in r]
  assert len(times) >= 2, times
  return statistics.median(times[1:])


# ----------------------------------------------------------------------------- in process
def test_unpacked_model_is_rounds_of_p_then_the_rest_alone():
  walls = {1: 10.0, 2: 13.0}
  assert packed.unpacked_wall(8, 1, walls) == 80.0
  assert packed.unpacked_wall(8, 2, walls) == 4 * 13.0          # ceil(8 / 2) x wall(2 at once)
  assert packed.unpacked_wall(5, 2, walls) == 2 * 13.0 + 10.0   # the fifth run alone
  assert packed.unpacked_wall(1, 2, walls) == 10.0
  assert packed.best_unpacked(8, walls) == (52.0, 2)
  assert packed.best_unpacked(2, {1: 10.0, 2: 21.0}) == (20.0, 1)   # two at once slower than one after the other


def test_member_lrs_span_half_to_twice_the_rate():
  assert packed.member_lrs(0.004, 1) == ['0.004']
  lrs = [float(x) for x in packed.member_lrs(0.004, 16)]
  assert len(set(lrs)) == 16 and lrs == sorted(lrs)
  assert lrs[0] == 0.002 and lrs[-1] == 0.008


def test_shapes_are_the_studys():
  study = packed.load_study()
  plan = study.plan()
  shape, src = packed.study_shape(study, plan, 64)
  assert src == 'plan' and shape['model.num_layers'] == 2 and shape['model.num_heads'] == 2   # rung 2: 2 x 64
  shape, src = packed.study_shape(study, plan, 256)   # not in the plan: d_model / layers nearest 64
  assert src == 'rule' and shape['model.num_layers'] == 4 and shape['model.num_heads'] == 8   # head_dim 32
  mains = sorted(r['steps'] for r in plan if r.get('role') != 'parent')
  assert packed.default_projection(study, plan) == [250, round(statistics.median(mains))]


def test_schedule_runs_goal_rows_first_and_skips_by_estimate(tmp_path, monkeypatch):
  """Fake measurements on a fake clock: every single run is 40 steps of 0.1 s, so its overhead is its wall - 4 s.
  Rows run in the order goal rows first; the estimates (overhead + K x per-member cost) decide the skips."""
  clock, calls = [0.0], []
  single = {32: 20.0, 64: 30.0}   # walls: one alone; two at once take 1.5x
  per_member = {32: 5.0, 64: 6.0}   # a packed row's wall: the single's overhead + K x this

  def fake_unpacked(b, d, p, rep):
    wall = single[d] * (1.5 if p == 2 else 1.0)
    clock[0] += wall
    calls.append(('unpacked', d, p))
    return dict(d_model=d, p=p, rep=rep, walls_s=[wall] * p, wall_s=wall, step_s=0.1, steps=40,
                overhead_s=wall - 4.0, compile_s=1.0, tokens_per_s_run=2048 / 0.1, layers=2)

  def fake_packed(b, d, k, layout):
    wall = single[d] - 4.0 + k * per_member[d]
    clock[0] += wall
    calls.append(('packed', d, k))
    return dict(d_model=d, K=k, layout=layout, wall_s=wall, step_s=0.1 * k, steps=40, overhead_s=wall - 4.0 * k,
                compile_s=1.0, tokens_per_s_member=2048 / (0.1 * k), layers=2, members_done=k)

  monkeypatch.setattr(packed, 'measure_unpacked', fake_unpacked)
  monkeypatch.setattr(packed, 'measure_packed', fake_packed)
  args = packed.parse_args(['--d_models', '32,64', '--ks', '1,8,16', '--layouts', 'loop', '--max_row_s', '90',
                            '--budget_s', '320'])
  study = types.SimpleNamespace(RUN_OVERHEAD_S=40.0, MIN_STEPS=250)
  b = packed.Bench(args, study, [{'steps': 1000}], 'prose', tmp_path, [1000], clock=lambda: clock[0])
  b.step_guess = {32: 0.1, 64: 0.1}
  b.shapes = {d: ({'model.num_layers': 2, 'model.num_heads': 2, 'model.num_kv_heads': 1}, 'plan') for d in (32, 64)}
  packed.run_all(b)
  # d 32: 20 + 30 + 20 (the repeat) = 70 s; K=8 est 16 + 8 x 4 = 48, took 16 + 40 = 56 (126 s); d 64: 30 + 45
  # (201 s); K=8 est 26 + 32 = 58, took 26 + 48 = 74 (275 s); d 32 K=1: est 16 + (56 - 16) / 8 = 21 (296 s);
  # d 32 K=16: est 16 + 80 = 96 > 90; d 64 K=1: est 26 + 6 = 32 ends at 328 > 320; d 64 K=16: 26 + 96 > 90
  assert calls == [('unpacked', 32, 1), ('unpacked', 32, 2), ('unpacked', 32, 1), ('packed', 32, 8),
                   ('unpacked', 64, 1), ('unpacked', 64, 2), ('packed', 64, 8), ('packed', 32, 1)]
  assert [(s['d_model'], s['K'], s['why'], round(s['estimate_s'], 6)) for s in b.skipped] == [
      (32, 16, 'over --max_row_s', 96.0), (64, 1, 'past --budget_s', 32.0), (64, 16, 'over --max_row_s', 122.0)]
  rows = sorted((packed.make_row(b, m) for m in b.packed), key=lambda r: (r['d_model'], r['K']))
  # d 32 K=8: alone 8 x 20 = 160, two at once 4 x 30 = 120: p=2, ratio 120 / 56
  assert [(r['d_model'], r['K'], r['p'], round(r['ratio'], 9)) for r in rows] == [
      (32, 1, 1, round(20 / 21, 9)), (32, 8, 2, round(120 / 56, 9)), (64, 8, 2, round(180 / 74, 9))]
  # at 1000 steps: packed d 32 K=8 = (56 - 32) + 1000 x 0.8 = 824; unpacked 4 x ((30 - 4) + 1000 x 0.1) = 504
  assert rows[1]['projected']['1000']['ratio'] == pytest.approx(504 / 824) and rows[1]['projected']['1000']['p'] == 2
  lines, data = packed.report(b, rows, 0.0, (0.0, 0.0), clock[0])
  text = '\n'.join(lines)
  assert (f'# goal K=8 at d_model <= 64 >= 3.0x, loop, measured at 40 steps: {120 / 56:.2f}x (d 32), '
          f'{180 / 74:.2f}x (d 64): not met') in text
  assert '# skipped: d_model 64 K=1 loop: estimated 32s (past --budget_s)' in text
  assert data['noise']['walls_s'] == [20.0, 20.0] and data['noise']['wall_spread'] == 0.0


@pytest.mark.parametrize('argv', [['--layouts', 'scan'], ['--d_models', '48'], ['--steps', '4', '--log_every', '3'],
                                  ['--ks', '0'], ['--override', 'novalue'], ['--repeats', '0']])
def test_bad_arguments_exit_with_usage(argv, capsys):
  with pytest.raises(SystemExit) as e:
    packed.parse_args(argv)
  assert e.value.code == 2


# ----------------------------------------------------------------------------- end to end
TINY = ['--d_models', '32', '--ks', '2', '--steps', '3', '--log_every', '1', '--layouts', 'vmap',
        '--corpus', 'shakespeare', '--repeats', '1', '--no_warm_up', '--project_steps', '10,1000',
        '--override', 'model.num_layers=1', '--override', 'model.seq_len=32', '--override', 'train.eval_batches=1',
        '--override', 'train.eval_sets={}']
BATCH, SEQ = 8, 32   # the study's batch; seq as overridden
HEADER = ['d_model', 'layers', 'K', 'layout', 'packed s', 'unpacked s', 'p', 'unpacked / packed', 'tok/s/member',
          'tok/s/run unpacked', 'compile s', 'overhead s', 'ratio @10 steps', 'ratio @1000 steps']


@pytest.mark.slow
def test_table_follows_from_the_measured_walls_and_metrics(tmp_path):
  path = tmp_path / 'packed.json'
  out, err = run_script([sys.executable, 'bench/packed.py', *TINY, '--workdir', str(tmp_path / 'scratch'),
                         '--json', str(path)])
  data = json.loads(path.read_text())
  assert '[2/2] d_model 32 K=2 vmap' in err and 'ETA' in err   # progress on stderr
  assert '# corpus: the embedded default corpus (Shakespeare) with data.tokenizer=bpe, data.vocab_size=1024' in out
  header, rows = md_table(out, 'd_model')
  assert header == HEADER
  assert [r[:4] for r in rows] == [['32', '1', '2', 'vmap']]   # K=2 only: K=1 adds a process, not a case

  # the unpacked arm: one run alone and two at once, each with its own wall; a group's wall is its slowest
  (one,) = [m for m in data['unpacked'] if m['p'] == 1]
  (two,) = [m for m in data['unpacked'] if m['p'] == 2]
  assert len(one['walls_s']) == 1 and len(two['walls_s']) == 2
  w1, w2 = one['walls_s'][0], max(two['walls_s'])
  steps1 = steady_step_s(one['workdirs'][0])
  steps2 = statistics.mean(steady_step_s(w) for w in two['workdirs'])
  assert one['tokens_per_s_run'] == pytest.approx(BATCH * SEQ / steps1, rel=1e-9)
  # K runs at --max-parallel p: K // p rounds of p at once, an odd one alone; the better p
  model = {1: (w1, 1), 2: (min((2 * w1, 1), (w2, 2)))}
  for r, cells in zip(data['rows'], rows):
    k = r['K']
    want, p = model[k]
    assert r['unpacked_wall_s'] == pytest.approx(want, rel=1e-9) and r['p'] == p
    assert number(cells[HEADER.index('unpacked s')]) == pytest.approx(want, abs=0.051)
    assert cells[HEADER.index('p')] == str(p)
    assert number(cells[HEADER.index('packed s')]) == pytest.approx(r['wall_s'], abs=0.051)
    assert r['ratio'] == pytest.approx(want / r['wall_s'], rel=1e-9)
    assert number(cells[HEADER.index('unpacked / packed')]) == pytest.approx(want / r['wall_s'], abs=0.0051)
    # tokens/s per member: batch x seq over the packed step time, read here from a member's metrics
    step = steady_step_s(os.path.join(r['workdir'], 'member-0'))
    assert r['tokens_per_s_member'] == pytest.approx(BATCH * SEQ / step, rel=1e-9)
    assert number(cells[HEADER.index('tok/s/member')]) == pytest.approx(BATCH * SEQ / step, abs=0.51)
    assert r['members_done'] == k and r['layers'] == 1
    # the projection: each arm's wall = (measured wall - 3 steps) + S steps, at S = 1000
    packed_s = r['wall_s'] - 3 * step + 1000 * step
    arm = {1: w1 - 3 * steps1 + 1000 * steps1, 2: w2 - 3 * steps2 + 1000 * steps2}
    unpacked_s, q = min((k * arm[1], 1), ((k // 2) * arm[2] + (k % 2) * arm[1], 2))
    got = r['projected']['1000']
    assert got['ratio'] == pytest.approx(unpacked_s / packed_s, rel=1e-6) and got['p'] == q
    assert cells[HEADER.index('ratio @1000 steps')] == f'{unpacked_s / packed_s:.2f}x (p={q})'
  # no K=8 row: the goals say so rather than pass or fail
  assert '# goal K=8 at d_model 32 >= 3.0x, vmap, measured at 3 steps: -: not measured' in out
  assert '# noise: not measured (--repeats 1)' in out
