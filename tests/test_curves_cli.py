"""`scaling predict` end to end on run directories written here by hand (config.json + metrics.jsonl, as
scaling/train/loop.py writes them; a cooldown branch holds only its own rows and names its parent in
train.init_from), preregistration of a sweep's predictions, their scoring against hand-computed numbers, and the
validation table. The losses come from the loop implementation of the multi-power law in tests/test_curves.py.
"""

import datetime
import json
import math
import pathlib

import numpy as np
import pytest
from test_curves import MP_TRUE, ref_multipower

from scaling.analysis.curves import prereg, runs, schedules, validate
from scaling.analysis.curves.forecast import predict_during_training
from scaling.cli import main
from scaling.config.load import load_config, to_dict

LR, WARMUP, EVERY = 3e-3, 30, 10


def base_config(**train) -> dict:
  cfg = to_dict(load_config(None))
  cfg['train'].update(lr=LR, warmup_steps=WARMUP, log_every=EVERY, min_lr_ratio=0.1, **train)
  return cfg


def write_run(d, cfg: dict, noise=0.005, seed=0, truth=MP_TRUE):
  """A finished run directory: config.json and train/loss rows every EVERY steps and at the last step. A branch
  (train.init_from='../PARENT:FORK') gets only its rows after the fork. Returns {step: loss} of the rows written."""
  d = pathlib.Path(d)
  d.mkdir(parents=True, exist_ok=True)
  (d / 'config.json').write_text(json.dumps(cfg))
  sched, parent, fork = runs.run_schedule(d, cfg)
  n = sched.total
  steps = sorted(set(range(EVERY, n + 1, EVERY)) | {n})
  steps = [s for s in steps if fork is None or s > fork]
  rng = np.random.default_rng(seed)
  rows = {}
  with open(d / 'metrics.jsonl', 'w') as f:
    for s in steps:
      loss = ref_multipower(sched.eta / LR, sched.warmup, s - 1, truth) * math.exp(noise * rng.standard_normal())
      rows[s] = loss
      f.write(json.dumps({'step': s, 'train/loss': loss, 'train/lr': float(sched.eta[s - 1])}) + '\n')
  return rows


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  """A constant-lr parent (480 steps), WSD cooldown branches of 300, 450 and 600 steps forked from it (decay 20%),
  and a cosine run of 600 steps, as `branches()` lays them out."""
  root = tmp_path_factory.mktemp('study')
  out = {'root': root}
  write_run(root / 'parent', base_config(schedule='constant', steps=480), seed=1)
  out['parent'] = root / 'parent'
  for b in (300, 450, 600):
    d = round(0.2 * b)
    cfg = base_config(schedule='wsd', steps=b, decay_steps=d, init_from=f'../parent:{b - d}')
    out[f'b{b}'] = root / f'b{b}'
    out[f'rows{b}'] = write_run(root / f'b{b}', cfg, seed=b)
  write_run(root / 'cos600', base_config(schedule='cosine', steps=600), seed=7)
  out['cos600'] = root / 'cos600'
  return out


def truth_final(sched):
  return ref_multipower(sched.eta / LR, sched.warmup, sched.total - 1, MP_TRUE)


def test_a_branch_curve_is_its_parents_rows_then_its_own(study):
  c = runs.load_curve(study['b450'])
  assert c.parent == str(study['parent'].resolve()) and c.fork == 360
  np.testing.assert_array_equal(c.t + 1, list(range(10, 361, 10)) + list(range(370, 451, 10)))
  assert c.loss[-1] == pytest.approx(study['rows450'][450])
  own = runs.load_curve(study['b450'], with_parent=False)
  assert (own.t + 1).min() == 370
  both = runs.load_sources([study['parent'], study['b450']])
  assert (both[1].t + 1).min() == 370          # the parent's rows are counted once, in the parent's curve


def test_predict_cosine_from_a_parent_and_one_branch(study, tmp_path, capsys):
  out = tmp_path / 'pred'
  rc = main.main(['predict', '--runs', str(study['parent']), str(study['b300']), '--schedule', 'cosine',
                  '--steps', '600', '--out', str(out), '--bootstrap', '20'])
  assert rc == 0, capsys.readouterr()
  rec = json.loads((out / 'prediction.json').read_text())
  p = rec['prediction']
  assert p['state'] == 'predicted' and p['steps'] == 600 and p['metric'] == 'train/loss'
  assert p['ci'][0] <= p['point'] <= p['ci'][1] and p['pi'][0] < p['pi'][1]
  truth = truth_final(schedules.schedule_of(base_config(schedule='cosine', steps=600)['train'], 600))
  assert abs(p['point'] - truth) < 0.05 * truth        # a cosine from one linear WSD decay: within 5%
  assert set(rec['fit']['params']) == {'L0', 'A', 'alpha', 'B', 'C', 'beta', 'gamma'}
  assert (out / 'prediction.png').stat().st_size > 10_000
  assert '90% interval' in capsys.readouterr().out


def test_constant_lr_runs_predict_constant_but_not_an_anneal(study, tmp_path, capsys):
  args = ['predict', '--runs', str(study['parent']), '--bootstrap', '20', '--no_plot', '--out', str(tmp_path)]
  assert main.main(args + ['--schedule', 'constant:warmup=30', '--steps', '400']) == 0
  assert json.loads((tmp_path / 'prediction.json').read_text())['prediction']['state'] == 'predicted'
  capsys.readouterr()
  assert main.main(args + ['--schedule', 'wsd:decay=0.2,shape=1-sqrt']) == 1
  p = json.loads((tmp_path / 'prediction.json').read_text())['prediction']
  assert p['state'] == 'cannot predict' and p['point'] is None and 'never decay the lr' in p['reason']
  assert 'cannot predict' in capsys.readouterr().out


def test_a_too_short_curve_cannot_be_predicted(tmp_path, capsys):
  write_run(tmp_path / 'short', base_config(schedule='cosine', steps=60))
  rc = main.main(['predict', '--runs', str(tmp_path / 'short'), '--schedule', 'cosine', '--steps', '1000',
                  '--out', str(tmp_path / 'o'), '--bootstrap', '20'])
  assert rc == 1
  p = json.loads((tmp_path / 'o' / 'prediction.json').read_text())['prediction']
  assert p['state'] == 'cannot predict' and p['point'] is None and 'too few points' in p['reason']


@pytest.mark.parametrize('spec,words', [
    ('cosin', 'unknown schedule'), ('wsd:decay=1.5', 'a fraction in (0, 1)'), ('wsd:shape=sqrt', 'a decay shape'),
    ('cosine:shape=linear', 'are for wsd'), ('wsd:decay=0.2,decay_steps=10', 'not both'),
    ('run:/nonexistent/run', 'no config.json')])
def test_bad_schedule_specs_exit_2_naming_the_problem(study, tmp_path, capsys, spec, words):
  rc = main.main(['predict', '--runs', str(study['parent']), '--schedule', spec, '--out', str(tmp_path)])
  assert rc == 2
  assert words in capsys.readouterr().err


def test_schedule_specs_build_the_schedule_asked_for(study):
  from scaling.analysis.curves.spec import parse_schedule
  cfg = base_config(schedule='constant', steps=480)
  t = parse_schedule('wsd:decay_steps=50,shape=cosine,min_lr=0', cfg, 200)
  want = schedules.schedule_of(dict(cfg['train'], schedule='wsd', decay_steps=50, decay_shape='cosine',
                                    min_lr_ratio=0.0), 200)
  np.testing.assert_array_equal(t.schedule.eta, want.eta)
  r = parse_schedule(f'run:{study["b450"]}', cfg)
  assert r.steps == 450 and r.schedule.eta[100] == LR and r.schedule.eta[-1] == pytest.approx(LR * (0.1 + 0.9 / 90))
  assert parse_schedule('cosine', cfg, default_steps=600).steps == 600
  with pytest.raises(schedules.CurveError, match='comes at its length'):
    parse_schedule(f'run:{study["b450"]}', cfg, 500)


def test_a_branch_without_its_parent_is_an_error(tmp_path):
  write_run(tmp_path / 'p', base_config(schedule='constant', steps=100))
  write_run(tmp_path / 'b', base_config(schedule='wsd', steps=120, decay_steps=20, init_from='../p:100'))
  (tmp_path / 'p' / 'config.json').rename(tmp_path / 'config.json')
  (tmp_path / 'p' / 'metrics.jsonl').unlink()
  (tmp_path / 'p').rmdir()
  with pytest.raises(schedules.CurveError, match='does not exist'):
    runs.load_curve(tmp_path / 'b')


def test_runs_of_another_size_are_refused_as_sources(study, tmp_path):
  other = base_config(schedule='cosine', steps=600)
  other['model']['d_model'] = 2 * other['model']['d_model']
  write_run(tmp_path / 'big', other)
  with pytest.raises(schedules.CurveError, match='model.d_model'):
    runs.load_sources([study['parent'], tmp_path / 'big'])


# ----------------------------------------------------------------------------------------------------------------
# Preregistration and scoring.

SWEEP = '''
from scaling.config.load import load_config
from scaling.launch.sweep import branches

def get_config(arg=None):
  cfg = load_config(None)
  cfg.train.update(dict(lr={lr}, warmup_steps={warmup}, log_every={every}, min_lr_ratio=0.1))
  return cfg

def get_sweep(arg=None):
  return (branches([{{}}], [300, 450, 600], decay_fraction=0.2)
          + [{{'train.schedule': 'cosine', 'train.steps': 600}}, {{'model.d_model': 96, 'train.steps': 600}}])
'''


@pytest.fixture(scope='module')
def sweep_file(tmp_path_factory):
  d = tmp_path_factory.mktemp('sweepfile')
  (d / 'curves_sweep.py').write_text(SWEEP.format(lr=LR, warmup=WARMUP, every=EVERY))
  return str(d / 'curves_sweep.py')


def test_preregistration_predicts_every_run_of_the_sweep_before_it_starts(sweep_file, tmp_path, capsys):
  from scaling.config.load import to_dict as cfg_dict
  from scaling.launch.sweep import load_sweep
  sweep = load_sweep(sweep_file)
  old = tmp_path / 'old' / 'runs'          # the sources: the parent and shortest branch of an earlier sweep
  parent = next(r for r in sweep.runs if r.parent is None and r.config.train.schedule == 'constant')
  branch = next(r for r in sweep.runs if r.parent == parent.hash and r.config.train.steps == 300)
  write_run(old / parent.hash, cfg_dict(parent.config), seed=1)
  write_run(old / branch.hash, cfg_dict(branch.config), seed=2)
  out = tmp_path / 'predictions.jsonl'
  rc = main.main(['predict', '--sweep', sweep_file, '--from', str(old / parent.hash), str(old / branch.hash),
                  '--out', str(out), '--bootstrap', '20', '--root', str(tmp_path / 'new')])
  assert rc == 0, capsys.readouterr()
  lines = [json.loads(x) for x in out.read_text().splitlines()]
  assert [x['run'] for x in lines] == [r.hash for r in sweep.runs]
  by = {x['run']: x for x in lines}
  for r in sweep.runs:
    x = by[r.hash]
    assert x['steps'] == r.config.train.steps and x['sweep'] == sweep_file and x['law'] == 'multipower'
    assert 'commit' in x and datetime.datetime.fromisoformat(x['time']).tzinfo is not None
    assert [s['run'] for s in x['sources']] == [parent.hash, branch.hash]
    if r.config.model.d_model == 96:
      assert x['state'] == 'cannot predict' and 'model.d_model' in x['reason'] and x['point'] is None
    else:
      assert x['state'] == 'predicted' and x['pi'][0] <= x['point'] <= x['pi'][1], x
  b600 = next(r for r in sweep.runs if r.config.train.steps == 600 and r.parent is not None)
  assert 'from step 480' in by[b600.hash]['schedule']
  assert (tmp_path / 'predictions.jsonl.fit.json').is_file()
  # never overwritten, and never after the sweep's runs have logged
  assert main.main(['predict', '--sweep', sweep_file, '--from', str(old / parent.hash), '--out', str(out)]) == 2
  assert 'written once' in capsys.readouterr().err
  assert main.main(['predict', '--sweep', sweep_file, '--from', str(old / parent.hash), '--out',
                    str(tmp_path / 'p2.jsonl'), '--root', str(tmp_path / 'old')]) == 2
  assert 'already logged' in capsys.readouterr().err


def test_scoring_against_hand_computed_errors_and_coverage(tmp_path):
  preds = [
      {'run': 'a', 'state': 'predicted', 'metric': 'train/loss', 'point': 3.0, 'ci': [2.95, 3.05], 'pi': [2.9, 3.1]},
      {'run': 'b', 'state': 'predicted', 'metric': 'train/loss', 'point': 2.5, 'ci': [2.45, 2.55], 'pi': [2.4, 2.6]},
      {'run': 'c', 'state': 'predicted', 'metric': 'eval/loss', 'point': 4.0, 'ci': [3.9, 4.1], 'pi': [3.8, 4.2]},
      {'run': 'd', 'state': 'cannot predict', 'metric': 'train/loss', 'point': None, 'ci': None, 'pi': None},
      {'run': 'e', 'state': 'predicted', 'metric': 'train/loss', 'point': 2.0, 'ci': [1.9, 2.1], 'pi': [1.8, 2.2]}]
  results = [
      {'run': 'a', 'state': 'done', 'train/loss': 3.2, 'eval/loss': 9.0},    # 3.0 vs 3.2: -6.25%, outside
      {'run': 'b', 'state': 'done', 'train/loss': 2.45, 'eval/loss': 9.0},   # 2.5 vs 2.45: +2.0408%, inside
      {'run': 'c', 'state': 'done', 'train/loss': 1.0, 'eval/loss': 4.0},    # eval/loss 4.0: 0%, inside
      {'run': 'd', 'state': 'done', 'train/loss': 1.0},
      {'run': 'e', 'state': 'failed', 'train/loss': 2.0}]                    # not finished: missing
  (tmp_path / 'p.jsonl').write_text(''.join(json.dumps(p) + '\n' for p in preds))
  (tmp_path / 'r.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in results))
  s = prereg.score_predictions(str(tmp_path / 'p.jsonl'), str(tmp_path / 'r.jsonl'))
  by = {r['run']: r for r in s['runs']}
  assert set(by) == {'a', 'b', 'c'}
  assert by['a']['error'] == pytest.approx(-0.2) and by['a']['rel_error'] == pytest.approx(-0.0625)
  assert by['b']['rel_error'] == pytest.approx(0.05 / 2.45) and by['c']['error'] == pytest.approx(0.0)
  assert [by[k]['covered'] for k in 'abc'] == [False, True, True]
  assert s['summary'] == {'predictions': 5, 'scored': 3, 'missing': 1, 'cannot_predict': 1, 'interval': 'pi',
                          'mean_abs_rel_error': pytest.approx((0.0625 + 0.05 / 2.45 + 0.0) / 3),
                          'coverage': pytest.approx(2 / 3)}
  ci = prereg.score_predictions(str(tmp_path / 'p.jsonl'), str(tmp_path / 'r.jsonl'), interval='ci')
  assert [r['covered'] for r in ci['runs']] == [False, True, True]   # b: 2.45 is the ci's lower end


# ----------------------------------------------------------------------------------------------------------------
# The validation table, and the trainer's hook.

def test_validation_table_on_a_parent_its_branches_and_a_cosine_run(study, tmp_path):
  dirs = [str(study[k]) for k in ('parent', 'b300', 'b450', 'b600', 'cos600')]
  rec = validate.validate(dirs, str(tmp_path), draws=20, log=lambda *a: None)
  assert [s['run'] for s in rec['fit']['sources']] == ['parent', 'b300']      # the default: parent + shortest
  rows = {r['run']: r for r in rec['rows']}
  assert set(rows) == {'b450', 'b600', 'cos600'}
  parent_rows = {int(json.loads(x)['step']): json.loads(x)['train/loss']
                 for x in (study['parent'] / 'metrics.jsonl').read_text().splitlines()}
  for name, steps in (('b450', 450), ('b600', 600)):
    r = rows[name]
    assert r['measured'] == pytest.approx(study[f'rows{steps}'][steps])
    near = sorted(parent_rows, key=lambda s: (abs(s - steps), s))[:5]   # nearest rows (the parent ends at 480)
    want = math.exp(np.mean([math.log(parent_rows[s]) for s in near]))
    assert r['baselines']['parent']['predicted'] == pytest.approx(want)
    assert r['error_pct'] == pytest.approx(100 * (r['predicted'] - r['measured']) / r['measured'])
    err_b = r['baselines']['parent']['predicted'] - r['measured']
    assert r['skill']['parent'] == pytest.approx(abs(r['predicted'] - r['measured']) / abs(err_b))
    assert r['covered'] == (r['pi'][0] <= r['measured'] <= r['pi'][1])
  done = [r for r in rows.values() if r.get('error_pct') is not None]
  assert rec['summary']['coverage'] == pytest.approx(np.mean([r['covered'] for r in done]))
  md = (tmp_path / 'validation.md').read_text()
  assert 'b450' in md and 'skill vs parent' in md and 'nominal 0.90' in md
  assert (tmp_path / 'validation.png').is_file() and (tmp_path / 'validation.json').is_file()


def test_predict_during_training_waits_for_the_curve_then_predicts(study):
  """The trainer's hook on the cosine run's own rows: after 60 of 600 steps too little is logged; after 400 steps
  (the lr well into its decay) it predicts, exactly as the fit of a curve built by hand with the same schedule (the
  warmup found from the lr alone). How good such a prediction is belongs to the synthetic-law tests: here the final
  loss, 200 steps past the data, must be within 2%."""
  from scaling.analysis.curves import fitting, forecast, laws
  cfg = base_config(schedule='cosine', steps=600)
  fn = lambda c: schedules.lr_at(cfg['train'], 600, c)   # noqa: E731 -- any callable of counts
  rows = [json.loads(x) for x in (study['cos600'] / 'metrics.jsonl').read_text().splitlines()]
  steps, losses = [r['step'] for r in rows], [r['train/loss'] for r in rows]
  early = predict_during_training(steps[:6], losses[:6], fn, 600)
  assert early['state'] == 'cannot predict' and 'too few points' in early['reason']
  k = steps.index(400) + 1
  late = predict_during_training(steps[:k], losses[:k], fn, 600, draws=20, seed=3)
  sched = schedules.schedule_of(cfg['train'], 600)
  assert forecast.infer_warmup(sched.eta) == sched.warmup == WARMUP
  curve = runs.Curve(name='x', path='', metric='train/loss', t=np.array(steps[:k]) - 1, loss=np.array(losses[:k]),
                     schedule=sched, config={})
  fit = fitting.bootstrap(fitting.fit_curves(laws.MultiPower(), [curve]), draws=20, seed=3)
  direct = forecast.predict_final(fit, sched, seed=3)
  assert late['state'] == direct['state'] == 'predicted'
  assert late['point'] == pytest.approx(direct['point'], rel=1e-12) and late['pi'] == pytest.approx(direct['pi'])
  assert abs(late['point'] - losses[-1]) < 0.02 * losses[-1]


def test_predict_help_and_a_prediction_never_load_jax(study, tmp_path):
  """`scaling predict --help` loads nothing heavy; a whole prediction loads numpy/scipy/matplotlib, never jax."""
  import os
  import subprocess
  import sys
  code = ('import sys\nfrom scaling.cli import main\ntry:\n  main.main(["predict", "--help"])\nexcept SystemExit:\n'
          '  pass\nassert not [m for m in ("jax", "numpy", "scipy", "matplotlib") if m in sys.modules]\n'
          f'assert main.main(["predict", "--runs", {str(study["parent"])!r}, "--schedule", "constant", "--out", '
          f'{str(tmp_path)!r}, "--bootstrap", "20", "--no_plot"]) == 0\n'
          'heavy = [m for m in ("jax", "flax", "optax", "orbax") if m in sys.modules]\nassert not heavy, heavy\n')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  r = subprocess.run([sys.executable, '-c', code], cwd=pathlib.Path(__file__).parent.parent, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
