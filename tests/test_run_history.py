"""A run's history is the truth (issue 39, items 2-4): a resume that changes the math of a run is refused unless
asked for (--extend, --force-change), every change is recorded in the workdir's history.jsonl, `scaling train
--workdir W` resumes from W's own config.json, and summary.json covers every segment of the run.

References are independent of the code under test: the cosine schedule in closed form, the files the runs wrote
(metrics.jsonl, segments.json, history.jsonl, config.json) read back as JSON, file snapshots (sha256) taken
before, and step counts done by hand; never numbers the code printed.
"""

import hashlib
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest
from test_eval_path import write_corpus

from scaling.cli import main as cli
from scaling.config import default as default_config
from scaling.config import history
from scaling.config import load as config_lib
from scaling.train import checkpoint, run_history
from scaling.train import loop as train_lib
from scaling.train.metrics import read_metrics

REPO = pathlib.Path(__file__).resolve().parent.parent
STEPS, HALF, LR, WARMUP, MIN_RATIO = 4, 2, 1e-2, 1, 0.1


def overrides(data: dict, **kw) -> dict:
  base = {
      'model.vocab_size': 259, 'model.seq_len': 16, 'model.num_layers': 2, 'model.d_model': 32,
      'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64,
      'data.corpus': data['corpus'], 'data.tokenizer': 'byte', 'data.data_dir': data['data_dir'],
      'train.batch_size': 8, 'train.steps': STEPS, 'train.lr': LR, 'train.warmup_steps': WARMUP,
      'train.min_lr_ratio': MIN_RATIO, 'train.schedule': 'cosine', 'train.log_every': 1, 'train.eval_every': HALF,
      'train.eval_batches': 1, 'train.ckpt_every': HALF, 'train.keep_checkpoints': 5, 'train.peak_flops': 1e12,
      'train.eval_sets': '{}', 'sample.prompts': '()',
  }
  base.update({k.replace('__', '.'): v for k, v in kw.items()})
  return base


def cfg_of(data, **kw):
  return config_lib.load_config('default.py', overrides(data, **kw))


def cosine_lr(step: int, total: int, lr: float = LR) -> float:
  """The lr of optimizer step `step` (0-based: metrics row step + 1 logs it) in closed form: linear warmup over
  WARMUP steps, then a cosine from lr to lr * MIN_RATIO over the remaining total - WARMUP steps."""
  if step < WARMUP:
    return lr * step / WARMUP
  t = min(step - WARMUP, total - WARMUP) / (total - WARMUP)
  return lr * (MIN_RATIO + (1 - MIN_RATIO) * 0.5 * (1 + math.cos(math.pi * t)))


def snapshot(workdir: pathlib.Path) -> dict:
  return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(workdir.rglob('*')) if p.is_file()}


def read_json(path):
  return json.loads(pathlib.Path(path).read_text())


def rows(workdir) -> dict:
  return {r['step']: r for r in read_metrics(workdir)}


def history_lines(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / 'history.jsonl'
  return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('run_history')
  return dict(corpus=write_corpus(root / 'corpus'), data_dir=str(root / 'prepared'), root=root)


@pytest.fixture(scope='module')
def interrupted(data):
  """A run stopped by SIGTERM after step HALF (saved there, exit 75): a run in progress."""
  wd = data['root'] / 'interrupted'
  orig, calls = train_lib.jit_train_step, []

  def jit(setup, keys):
    step = orig(setup, keys)

    def wrapped(state, batch):
      out = step(state, batch)
      calls.append(1)
      if len(calls) == HALF:
        os.kill(os.getpid(), signal.SIGTERM)
      return out
    return wrapped
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train_lib, 'jit_train_step', jit)
    result = train_lib.train(cfg_of(data), wd, quiet=True)
  assert result['state'] == 'preempted' and result['step'] == HALF
  return wd


@pytest.fixture(scope='module')
def finished(data, interrupted):
  """The interrupted run resumed with the flags of its first start, to the end: two segments, no change."""
  wd = data['root'] / 'finished'
  shutil.copytree(interrupted, wd)
  result = train_lib.train(cfg_of(data), wd, quiet=True)
  assert result['state'] == 'done' and result['step'] == STEPS
  assert not (wd / 'history.jsonl').exists()   # the same flags change nothing (the sweep launcher's resume)
  return wd


def copy(src: pathlib.Path, tmp_path) -> pathlib.Path:
  dst = tmp_path / src.name
  shutil.copytree(src, dst)
  return dst


@pytest.fixture
def no_long_work(monkeypatch):
  """Fails the test if train() gets as far as data preparation or compiling."""
  import scaling.data.prepare

  def forbidden(name):
    def f(*a, **k):
      raise AssertionError(f'{name} was reached: the refusal must come before it')
    return f
  monkeypatch.setattr(scaling.data.prepare, 'prepare', forbidden('data preparation'))
  monkeypatch.setattr(train_lib, 'init_state', forbidden('init_state (compile)'))
  monkeypatch.setattr(train_lib, 'jit_train_step', forbidden('jit_train_step (compile)'))


# ----------------------------------------------------------------------------- the field classification
def test_every_field_of_the_default_config_is_classified():
  """A new config field must say whether changing it on resume changes the math (scaling/config/history.py)."""
  d = config_lib.to_dict(default_config.get_config())
  leaves = set()
  for key in history.flatten(d):
    leaves.add(next((m for m in history.MAP_FIELDS if key.startswith(m + '.')), key))
  leaves |= {m for m in history.MAP_FIELDS}
  assert sorted(leaves - set(history.FIELD_KINDS)) == [], 'classify each new field in history.FIELD_KINDS'
  assert sorted(set(history.FIELD_KINDS) - leaves) == [], 'FIELD_KINDS names fields the config no longer has'
  assert set(history.FIELD_KINDS.values()) == {history.MATH, history.FREE}
  for key in ('train.steps', 'train.lr', 'train.schedule', 'train.batch_size', 'train.seed', 'model.d_model',
              'data.corpus', 'train.b2'):
    assert history.kind_of(key) == history.MATH, key
  for key in ('train.eval_every', 'train.eval_batches', 'train.eval_sets.web', 'train.ckpt_every',
              'train.keep_checkpoints', 'sample.top_p', 'train.peak_flops', 'name', 'logging.wandb_project'):
    assert history.kind_of(key) == history.FREE, key
  assert history.kind_of('study.arm') == history.MATH   # a field of no entry: refused, to be safe
  assert history.CKPT_DIR == checkpoint.CKPT_DIR


def test_the_history_module_is_jax_free():
  code = ('import sys, scaling.config.history as h; h.read_history("."); h.existing_run(".")\n'
          'heavy = [m for m in ("jax", "flax", "optax", "orbax", "ml_collections") if m in sys.modules]\n'
          'assert not heavy, heavy')
  r = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]


def test_a_workdir_config_reads_back_as_the_config_that_wrote_it(tmp_path):
  """config.json (as training writes it: tuples as lists, vocab resolved) loads back with no field changed."""
  cfg = config_lib.load_config('ladder.py:nano', {'train.final_eval_lengths': '(64,)', 'train.eval_sets.web': 'x?'})
  (tmp_path / 'config.json').write_text(json.dumps(config_lib.to_dict(cfg)))
  back = history.load_workdir_config(tmp_path, {})
  assert history.diff(config_lib.to_dict(cfg), config_lib.to_dict(back)) == []
  assert back.train.final_eval_lengths == (64,) and isinstance(back.sample.prompts, tuple)
  with_flag = history.load_workdir_config(tmp_path, {'train.lr': '0.5'})
  assert [(c.key, c.old, c.new, c.kind) for c in history.diff(config_lib.to_dict(cfg), config_lib.to_dict(with_flag))] \
      == [('train.lr', cfg.train.lr, 0.5, history.MATH)]


def test_whole_run_counts_a_step_trained_twice_once():
  """Segments 0-4 (killed after its checkpoint 4 went bad), 2-6 (resumed from 2): 6 steps of tokens, all the time."""
  segs = [dict(start=0, end=4, wall_s=10.0, compile_s=2.0, tokens_per_step=8, flops_per_token=3),
          dict(start=2, end=6, wall_s=7.0, compile_s=None, tokens_per_step=8, flops_per_token=3)]
  w = run_history.whole_run(segs, 6, 8, 3)
  assert (w['tokens'], w['flops'], w['wall_s'], w['compile_s']) == (48, 144, 17.0, 2.0)


# ----------------------------------------------------------------------------- problem 2: changed flags on resume
@pytest.mark.parametrize('change, words', [
    (dict(train__steps=6), ['train.steps 4 -> 6', '--extend 6']),
    (dict(train__lr=2e-2), ['train.lr 0.01 -> 0.02', '--extend STEPS (for train.steps/tokens only)']),
])
def test_a_change_of_the_math_on_resume_is_refused_naming_the_field(data, finished, tmp_path, no_long_work, change,
                                                                    words):
  wd = copy(finished, tmp_path)
  before = snapshot(wd)
  with pytest.raises(config_lib.ConfigError) as e:
    train_lib.train(cfg_of(data, **change), wd, quiet=True)
  msg = str(e.value)
  for w in words + ['newest checkpoint: step 4', 'Nothing was changed', "train.init_from='", '--force-change',
                    'recomputed for the new total']:
    assert w in msg, (w, msg)
  assert snapshot(wd) == before   # config.json still says what the run was trained with


def test_extend_continues_with_the_schedule_of_the_new_length_and_records_it(data, finished, tmp_path):
  wd = copy(finished, tmp_path)
  lrs_before = {s: r['train/lr'] for s, r in rows(wd).items() if 'train/lr' in r}
  result = train_lib.train(cfg_of(data), wd, quiet=True, extend=6)   # the first start's flags and --extend
  assert result['state'] == 'done' and result['step'] == 6
  lrs = {s: r['train/lr'] for s, r in rows(wd).items() if 'train/lr' in r}
  assert sorted(lrs) == [1, 2, 3, 4, 5, 6]
  for s in range(1, 5):   # the steps already trained keep the lr they were trained with (the 4-step schedule)
    assert lrs[s] == lrs_before[s] == pytest.approx(cosine_lr(s - 1, STEPS), rel=1e-5)
  for s in (5, 6):        # from the resume step on: the cosine of the new total
    assert lrs[s] == pytest.approx(cosine_lr(s - 1, 6), rel=1e-5)
  assert lrs[5] > cosine_lr(4, STEPS) * 1.5   # the lr jumped up at the resume step: what --extend says it does
  (line,) = history_lines(wd)
  assert line['how'] == 'extend' and line['step'] == STEPS and line['fields'] == {'train.steps': [STEPS, 6]}
  assert line['lr']['old'] == pytest.approx(cosine_lr(STEPS, STEPS), rel=1e-5)
  assert line['lr']['new'] == pytest.approx(cosine_lr(STEPS, 6), rel=1e-5)
  assert line['time'] and 'commit' in line and 'dirty' in line
  assert read_json(wd / 'config.json')['train']['steps'] == 6
  summary = read_json(wd / 'summary.json')
  assert summary['tokens'] == 6 * 8 * 16 and [(s['start'], s['end']) for s in summary['segments']] == \
      [(0, HALF), (HALF, STEPS), (STEPS, 6)]


def test_force_change_applies_the_change_and_records_it(data, interrupted, tmp_path):
  wd = copy(interrupted, tmp_path)
  result = train_lib.train(cfg_of(data, train__lr=2e-2), wd, quiet=True, force_change=True)
  assert result['state'] == 'done' and result['step'] == STEPS
  lrs = {s: r['train/lr'] for s, r in rows(wd).items() if 'train/lr' in r}
  assert lrs[HALF] == pytest.approx(cosine_lr(HALF - 1, STEPS), rel=1e-5)   # trained before the change
  for s in range(HALF + 1, STEPS + 1):
    assert lrs[s] == pytest.approx(cosine_lr(s - 1, STEPS, lr=2e-2), rel=1e-5)
  (line,) = history_lines(wd)
  assert line['how'] == 'force' and line['step'] == HALF and line['fields'] == {'train.lr': [LR, 2e-2]}
  assert read_json(wd / 'config.json')['train']['lr'] == 2e-2


def test_a_changed_eval_every_is_free_and_recorded(data, interrupted, tmp_path):
  wd = copy(interrupted, tmp_path)
  result = train_lib.train(cfg_of(data, train__eval_every=1), wd, quiet=True)   # no flag needed
  assert result['state'] == 'done'
  evals = [s for s, r in rows(wd).items() if 'eval/loss' in r]
  assert evals == [HALF, HALF + 1, STEPS]   # every step from the resume on
  (line,) = history_lines(wd)
  assert line['how'] == 'free' and line['step'] == HALF and line['fields'] == {'train.eval_every': [HALF, 1]}
  assert read_json(wd / 'config.json')['train']['eval_every'] == 1


# ----------------------------------------------------------------------------- problem 3: the workdir's own config
def test_train_with_only_workdir_resumes_a_run_of_a_non_default_config(interrupted, tmp_path, capsys):
  """No --config and no flags: the run (2 layers, d 32: not the default 4 x 256) resumes from its config.json."""
  wd = copy(interrupted, tmp_path)
  saved = read_json(wd / 'config.json')
  assert saved['model']['num_layers'] != default_config.model()['num_layers']
  assert cli.main(['train', '--workdir', str(wd), '--no_sample']) == 0
  out = capsys.readouterr().out
  assert 'its own config.json is the config' in out and f'(step {HALF})' in out
  assert read_json(wd / 'summary.json')['step'] == STEPS
  assert read_json(wd / 'config.json') == saved and not (wd / 'history.jsonl').exists()
  assert sorted(s for s, r in rows(wd).items() if 'train/loss' in r) == list(range(1, STEPS + 1))


def test_train_with_only_workdir_and_a_changed_flag_exits_2_before_any_work(finished, tmp_path, capsys,
                                                                            no_long_work):
  wd = copy(finished, tmp_path)
  before = snapshot(wd)
  assert cli.main(['train', '--workdir', str(wd), '--no_sample', '--config.train.steps=6']) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'train.steps 4 -> 6' in err and '--extend 6' in err
  assert snapshot(wd) == before


# ----------------------------------------------------------------------------- problem 4: summary.json of the whole run
def test_summary_totals_are_the_sums_over_the_segments(finished):
  summary, segs = read_json(finished / 'summary.json'), read_json(finished / 'segments.json')
  metrics = rows(finished)
  assert summary['segments'] == segs
  assert [(s['start'], s['end']) for s in segs] == [(0, HALF), (HALF, STEPS)]   # the stop step, the last step
  assert summary['wall_s'] == pytest.approx(sum(s['wall_s'] for s in segs))
  assert summary['compile_s'] == pytest.approx(sum(s['compile_s'] for s in segs))
  assert all(s['wall_s'] > 0 and s['compile_s'] > 0 for s in segs)   # both segments compiled
  assert summary['tokens'] == metrics[STEPS]['tokens_seen'] == STEPS * 8 * 16
  assert summary['flops'] == summary['tokens'] * summary['flops_per_token']
  for s in segs:   # each segment's tokens/s: the median of its own logged rates (one timed step each here)
    rates = [r['throughput/tokens_per_s'] for k, r in metrics.items()
             if s['start'] < k <= s['end'] and 'throughput/tokens_per_s' in r]
    assert rates and s['tokens_per_s'] == pytest.approx(sorted(rates)[len(rates) // 2])


def test_a_rerun_of_a_finished_run_adds_its_segment_to_the_totals(data, finished, tmp_path, monkeypatch):
  """A finished run whose end-of-run evaluation failed is re-run: it redoes only that, and summary.json keeps the
  earlier segments' time (before: wall_s of the re-run alone, compile_s null)."""
  wd = copy(finished, tmp_path)
  done = read_json(wd / 'summary.json')
  (wd / 'summary.json').write_text(json.dumps(dict(done, end_error='the final evaluation failed: simulated')))
  earlier = read_json(wd / 'segments.json')
  assert train_lib.train(cfg_of(data), wd, quiet=True)['exit_code'] == 0
  summary = read_json(wd / 'summary.json')
  assert summary['end_error'] is None and summary['segments'][:2] == earlier
  (last,) = summary['segments'][2:]
  assert (last['start'], last['end'], last['compile_s']) == (STEPS, STEPS, None)   # nothing trained
  assert summary['wall_s'] == pytest.approx(sum(s['wall_s'] for s in earlier) + last['wall_s'])
  assert summary['compile_s'] == pytest.approx(sum(s['compile_s'] for s in earlier))
  assert summary['tokens'] == done['tokens']


# ----------------------------------------------------------------------------- collect and report
def test_collect_rows_and_the_report_show_the_changes(tmp_path):
  from scaling.analysis.report import render_report
  from scaling.launch import rundir
  for i, h in enumerate(('aaa', 'bbb')):
    d = tmp_path / 'runs' / h
    d.mkdir(parents=True)
    (d / 'run.json').write_text(json.dumps({'hash': h, 'sweep': 'x.py', 'index': i, 'state': 'done'}))
    (d / 'summary.json').write_text(json.dumps({'state': 'done', 'tokens': 1e6, 'flops': 1e12}))
  history.append_history(tmp_path / 'runs' / 'bbb', dict(step=100, how='extend', fields={'train.steps': [100, 120]},
                                                          time='t', commit=None))
  got = {r['run']: r['changes'] for r in rundir.collect_rows(tmp_path)}
  assert got == {'aaa': [], 'bbb': [{'step': 100, 'how': 'extend', 'fields': {'train.steps': [100, 120]}}]}
  text = render_report(rundir.collect_rows(tmp_path), None, title='t', notes=[])
  assert '## Runs changed after they started' in text and '| bbb | 100 | extend | train.steps: 100 → 120 |' in text


def test_a_config_json_from_before_a_new_field_is_no_change():
  """A run written before a field existed (its config.json lacks every HASH_NEUTRAL field, e.g. train.init_seed)
  resumes under today's config with no change to record: the missing field counts at its neutral value."""
  from scaling.config import history
  from scaling.config import load as config_lib
  now = config_lib.to_dict(config_lib.load_config('default.py'))
  old = json.loads(json.dumps(now))
  for key in config_lib.HASH_NEUTRAL:
    section, name = key.split('.')
    del old[section][name]
  assert history.diff(old, now) == []
  old['train']['lr'] = now['train']['lr'] * 2   # a real difference is still found
  assert [c.key for c in history.diff(old, now)] == ['train.lr']
