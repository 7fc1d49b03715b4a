"""The predicted final loss during training (train.predict_every, scaling/analysis/curves/live.py).

The action is driven here as the loop drives it (at its due steps, with a run's loss), on a curve drawn from the
multi-power law with a known truth; what it reports is checked against a second path (predict_during_training
called by hand on the same prefix of the curve) and the truth. One short real run checks the wiring end to end.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from test_curves import BASE, MP_TRUE, ref_multipower

from scaling.analysis.curves import live, schedules
from scaling.analysis.curves.forecast import predict_during_training
from scaling.config.load import ConfigError, load_config

TOTAL, LOG, EVERY = 600, 10, 200


class _Progress:
  def __init__(self):
    self.lines = []

  def write(self, line):
    self.lines.append(line)


def _fake_run(tmp_path, train, *, start_step=0):
  sched = lambda c: schedules.lr_at(train, TOTAL, c)   # noqa: E731  (any callable of counts, as optax's)
  setup = types.SimpleNamespace(total_steps=TOTAL, schedule=sched)
  return types.SimpleNamespace(is_main=True, workdir=tmp_path, start_step=start_step, step=start_step, loss=None,
                               setup=setup, progress=_Progress())


def _curve(train, seed=0):
  """The loss logged at step s (after s - 1 updates), from the reference law, with 0.3% noise."""
  eta = schedules.lr_at(train, TOTAL, np.arange(TOTAL)) / train['lr']
  rng = np.random.default_rng(seed)
  w = train['warmup_steps']
  return {s: ref_multipower(eta, w, s - 1, MP_TRUE) * (1 + 0.003 * rng.standard_normal())
          for s in range(w + LOG, TOTAL + 1, LOG)}


def _drive(action, run, curve, upto):
  hook = live._PredictHook('predict', action, every=LOG, at_last=False)
  rows = {}
  for s in range(run.step + 1, upto + 1):
    run.step = s
    if hook.due(s, TOTAL):
      run.loss = curve.get(s, float('nan'))   # warmup steps: a value the action skips (not in the law's range)
      rows[s] = action(run)
      if s % EVERY == 0:
        action.wait()   # deterministic here (reported at the next log step); the loop never waits
  action.wait()
  return hook, rows


def test_the_action_predicts_what_the_fit_of_the_same_curve_predicts(tmp_path):
  train = dict(BASE, schedule='wsd')
  curve = _curve(train)
  run = _fake_run(tmp_path, train)
  action = live.LivePrediction(EVERY, draws=20, seed=3)
  hook, rows = _drive(action, run, curve, 560)
  # due at log steps and at predict steps, never at the last step (the final loss is measured then)
  assert hook.due(200, TOTAL) and hook.due(30, TOTAL) and not hook.due(33, TOTAL) and not hook.due(TOTAL, TOTAL)
  assert [r['at_step'] for r in action.reported] == [200, 400]
  # the fit at 200: constant lr so far, no annealing seen: it says why there is no number
  first = action.reported[0]
  assert first['state'] == 'cannot predict' and first['reason']
  # at 400 the wsd decay (from step 480 on) has not begun either: a cosine run, 400 steps into its decay, predicts
  train2 = dict(BASE, schedule='cosine')
  curve2 = _curve(train2, seed=1)
  run2 = _fake_run(tmp_path / 'b', train2)
  (tmp_path / 'b').mkdir()
  action2 = live.LivePrediction(EVERY, draws=20, seed=3)
  _, rows2 = _drive(action2, run2, curve2, 410)
  got = action2.reported[-1]
  assert got['at_step'] == 400 and got['state'] == 'predicted'
  steps = [s for s in sorted(curve2) if s <= 400]
  direct = predict_during_training(steps, [curve2[s] for s in steps], lambda c: schedules.lr_at(train2, TOTAL, c),
                                   TOTAL, draws=20, seed=3)
  assert got['point'] == pytest.approx(direct['point'], rel=1e-9) and got['pi'] == pytest.approx(direct['pi'])
  truth = ref_multipower(schedules.lr_at(train2, TOTAL, np.arange(TOTAL)) / train2['lr'], train2['warmup_steps'],
                         TOTAL - 1, MP_TRUE)
  assert abs(got['point'] - truth) < 0.02 * truth and got['pi'][0] <= truth <= got['pi'][1]   # 200 steps ahead
  # reported in the row of the first action after the fit finished, and in one progress line
  row = next(r for r in rows2.values() if r)
  assert row['predict/at_step'] == 400 and row['predict/final_loss'] == got['point']
  assert row['predict/final_loss_lo'] <= row['predict/final_loss'] <= row['predict/final_loss_hi']
  assert any('predicted final train loss' in line and 'to step 400' in line for line in run2.progress.lines)


def test_a_resumed_run_fits_the_curve_logged_before_it(tmp_path):
  """The rows of the earlier segment (metrics.jsonl) are part of the curve, read once; rows past the resume step
  (logged after the checkpoint, lost with the crash) are not."""
  train = dict(BASE, schedule='wsd', decay_fraction=0.5)
  curve = _curve(train, seed=2)
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    for s in sorted(curve):
      if s <= 330:
        f.write(json.dumps({'step': s, 'train/loss': curve[s]}) + '\n')
  run = _fake_run(tmp_path, train, start_step=300)
  action = live.LivePrediction(EVERY, draws=5, seed=0)
  _drive(action, run, curve, 400)
  assert action.steps == [s for s in sorted(curve) if s <= 400]
  assert action.losses == [curve[s] for s in action.steps]


def test_predict_every_is_off_by_default_and_refuses_a_negative_value():
  cfg = load_config('default.py', {})
  assert cfg.train.predict_every == 0 and live.hook(cfg) is None
  on = live.hook(load_config('default.py', {'train.predict_every': 50, 'train.log_every': 10}))
  assert on.fn.every == 50 and on.every == 10 and on.due(50, 100) and on.due(20, 100) and not on.due(100, 100)
  with pytest.raises(ConfigError, match='train.predict_every must be >= 0'):
    load_config('default.py', {'train.predict_every': -5})


def test_a_failing_fit_is_a_line_not_a_crash(tmp_path, monkeypatch):
  from scaling.analysis.curves import forecast

  def broken(*a, **k):
    raise FloatingPointError('bad curve')
  monkeypatch.setattr(forecast, 'predict_during_training', broken)
  train = dict(BASE, schedule='wsd')
  run = _fake_run(tmp_path, train)
  action = live.LivePrediction(EVERY, draws=5)
  _drive(action, run, _curve(train), 210)
  assert action.reported[0]['state'] == 'cannot predict' and 'FloatingPointError' in action.reported[0]['reason']


@pytest.mark.slow
def test_training_logs_the_prediction(tmp_path):
  """End to end: the loop runs the action at its due steps and writes predict/* to metrics.jsonl (the fit made
  in the loop here, so the step it is reported at does not depend on the machine's load)."""
  from conftest import TINY_CLI

  from scaling.train import loop
  cfg = load_config('default.py', {**TINY_CLI, 'train.steps': 120, 'train.schedule': 'wsd', 'train.log_every': 5,
                                   'train.decay_fraction': 0.6, 'train.predict_every': 60})
  action = live.LivePrediction(60, draws=10, background=False)
  loop.train(cfg, tmp_path / 'run', quiet=True,
             hooks=(live._PredictHook('predict', action, every=5, at_last=False),))
  rows = [json.loads(x) for x in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows if 'predict/at_step' in r or 'predict/final_loss' in r] in ([65], [])
  logged = [(r['step'], r['train/loss']) for r in rows if 'train/loss' in r and r['step'] <= 60]
  assert list(zip(action.steps, action.losses))[:len(logged)] == logged   # the curve the fit saw: the logged one
  assert [r['at_step'] for r in action.reported] == [60]
  if action.reported[0]['state'] == 'predicted':
    r = next(r for r in rows if 'predict/at_step' in r)
    assert r['predict/final_loss_lo'] <= r['predict/final_loss'] <= r['predict/final_loss_hi']
