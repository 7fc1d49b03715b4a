"""What a run tells its user: where its outputs go, throughput and MFU without the compile, an honest ETA.

References: a fake clock for the ETA (the arithmetic done by hand), and a train step slowed
on purpose to at least SLEEP seconds, so any logged step time below SLEEP counts something
that is not a step (the old first row timed zero steps after the compile: tok/s in the
millions, MFU in the thousands of percent).
"""

import time

import pytest
from test_eval_path import overrides, write_corpus

from scaling.config import load as config_lib
from scaling.train import loop as train_lib
from scaling.train import metrics as metrics_lib
from scaling.train.metrics import read_metrics

SLEEP = 0.05


def test_eta_counts_from_the_first_compiled_step(monkeypatch, capsys):
  """5 s of compile, then 5 steps in 10 s: 0.5 step/s, so 4 steps left take 8 s (not 10 s, which
  spreading the compile over the steps would say); before any timed step the ETA is '-'."""
  clock = {'t': 100.0}
  monkeypatch.setattr(metrics_lib.time, 'time', lambda: clock['t'])
  progress = metrics_lib.Progress(10, 0, enabled=True)
  clock['t'] = 105.0   # the first step, with its compile, ends
  progress.start_timing(1)
  progress.update(1, {'loss': '5.0'})
  clock['t'] = 115.0
  progress.update(6, {'loss': '4.0'})
  lines = capsys.readouterr().out.splitlines()
  assert lines == ['step 1/10 loss=5.0 eta=-', 'step 6/10 loss=4.0 eta=8s']


def test_throughput_excludes_compile_and_mfu_never_exceeds_peak(tmp_path, monkeypatch, capsys):
  """Every step takes >= SLEEP s: each logged step_s is >= SLEEP, tok/s = tokens per step / step_s,
  the compile step has no throughput row, and with a peak far below the achieved FLOP/s the MFU
  is capped at 1 with one note. The workdir is named at the start and at the end."""
  data = dict(corpus=write_corpus(tmp_path / 'corpus'), data_dir=str(tmp_path / 'prepared'))
  cfg = config_lib.load_config('default.py', overrides(data, train__peak_flops=1.0))
  orig = train_lib.jit_train_step

  def slow(setup, keys):
    step = orig(setup, keys)

    def wrapped(state, batch):
      out = step(state, batch)
      time.sleep(SLEEP)
      return out
    return wrapped
  monkeypatch.setattr(train_lib, 'jit_train_step', slow)
  wd = tmp_path / 'run'
  result = train_lib.train(cfg, wd)
  assert result['state'] == 'done'
  out = capsys.readouterr().out
  rows = [r for r in read_metrics(wd) if 'train/loss' in r]
  assert [r['step'] for r in rows] == list(range(1, 7))
  assert 'throughput/tokens_per_s' not in rows[0]   # the compile step alone: nothing timed
  timed = rows[1:]
  tokens_per_step = 8 * 32
  for r in timed:
    assert r['throughput/step_s'] >= SLEEP, r
    assert r['throughput/tokens_per_s'] == pytest.approx(tokens_per_step / r['throughput/step_s'])
    assert r['throughput/mfu'] == 1.0, r
  assert out.count('MFU is shown capped at 100%') == 1
  lines = out.splitlines()
  assert lines[0] == f'workdir: {wd.absolute()} (checkpoints, metrics.jsonl, tb/, summary.json)'
  assert lines[-1].startswith('done: 6 steps') and lines[-1].endswith(f'outputs in {wd.absolute()}')
