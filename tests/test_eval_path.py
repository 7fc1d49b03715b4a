"""The one evaluation path (scaling/train/evaluate.py): training's evals, the final-length evals and `scaling eval`.

References are independent of the code under test: sums worked out by hand for `evaluate`,
the textbook formula for bits per byte, and a numpy float64 log-softmax of the model's logits
for the loss `scaling eval` prints of a trained workdir.
"""

import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from scaling.cli import main as cli
from scaling.config import load as config_lib
from scaling.train import evaluate
from scaling.train import loop as train_lib

WORDS = 'alpha beta gamma delta epsilon zeta eta theta , and .'.split()
SEQ = 32


def write_corpus(root: pathlib.Path, num_docs: int = 6) -> str:
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(3)
  for i in range(num_docs):
    (root / f'doc{i}.txt').write_text(' '.join(WORDS[j] for j in rng.integers(0, len(WORDS), 800)))
  return str(root / '*.txt')


def overrides(data: dict, **kw) -> dict:
  base = {
      'model.vocab_size': 259, 'model.seq_len': SEQ, 'model.num_layers': 2, 'model.d_model': 32,
      'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64,
      'data.corpus': data['corpus'], 'data.tokenizer': 'byte', 'data.data_dir': data['data_dir'],
      'train.batch_size': 8, 'train.steps': 6, 'train.lr': 1e-2, 'train.warmup_steps': 2, 'train.log_every': 1,
      'train.eval_every': 1000, 'train.eval_batches': 1, 'train.ckpt_every': 1000, 'train.peak_flops': 1e12,
  }
  base.update({k.replace('__', '.'): v for k, v in kw.items()})
  return base


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 6-step run of a tiny model with learned positions (final evals at 16 and 2 x 32)."""
  root = tmp_path_factory.mktemp('eval_path')
  data = dict(corpus=write_corpus(root / 'corpus'), data_dir=str(root / 'prepared'))
  cfg = config_lib.load_config('default.py', overrides(data, model__position='learned',
                                                       train__final_eval_lengths='(16, 64)'))
  wd = root / 'run'
  result = train_lib.train(cfg, wd, quiet=True)
  assert result['state'] == 'done'
  return dict(cfg=cfg, workdir=wd, result=result, data=data)


@pytest.fixture(scope='module')
def trained_long(tmp_path_factory):
  """The same run with a learned-position table of 4 x SEQ rows (model.position_table): final evals at 2x, 4x
  and 8x the training length."""
  root = tmp_path_factory.mktemp('eval_path_table')
  data = dict(corpus=write_corpus(root / 'corpus'), data_dir=str(root / 'prepared'))
  cfg = config_lib.load_config('default.py', overrides(
      data, model__position='learned', model__position_table=4 * SEQ,
      train__final_eval_lengths=f'({2 * SEQ}, {4 * SEQ}, {8 * SEQ})'))
  wd = root / 'run'
  result = train_lib.train(cfg, wd, quiet=True)
  assert result['state'] == 'done'
  return dict(cfg=cfg, workdir=wd, result=result, data=data)


# ----------------------------------------------------------------------------- the pieces
class Dims:
  def __init__(self, position, seq_len, position_table=None):
    self.position, self.seq_len = position, seq_len
    if position_table is not None:   # a duck-typed dims from before the field has none
      self.position_table = position_table


def test_check_positions_cover():
  evaluate.check_positions_cover(Dims('learned', 32), 32)
  evaluate.check_positions_cover(Dims('rope', 32), 1000)
  evaluate.check_positions_cover(Dims('none', 32), 1000)
  with pytest.raises(ValueError) as e:
    evaluate.check_positions_cover(Dims('learned', 32), 33)
  assert isinstance(e.value, evaluate.PositionsError)
  msg = str(e.value)
  for words in ('learned positions', 'table of 32 rows', 'seq_len=33', 'at most 32', 'RoPE'):
    assert words in msg, (words, msg)
  with pytest.raises(evaluate.PositionsError, match=r'prompt \+ max_new_tokens=40'):
    evaluate.check_positions_cover(Dims('learned', 32), 40, what='prompt + max_new_tokens')
  # a table longer than the training length (model.position_table) covers up to its rows; 0 is seq_len
  evaluate.check_positions_cover(Dims('learned', 32, 0), 32)
  with pytest.raises(evaluate.PositionsError, match='table of 32 rows'):
    evaluate.check_positions_cover(Dims('learned', 32, 0), 33)
  for L in (32, 64, 128):
    evaluate.check_positions_cover(Dims('learned', 32, 128), L)
  with pytest.raises(evaluate.PositionsError) as e:
    evaluate.check_positions_cover(Dims('learned', 32, 128), 129)
  for words in ('table of 128 rows', 'model.position_table', 'seq_len=32', 'seq_len=129', 'at most 128'):
    assert words in str(e.value), (words, str(e.value))


def test_evaluate_sums_over_batches_then_divides():
  """Two batches with NLL sums 3 and 5 over 2 and 6 tokens: mean 8/8 = 1 nat/token, not the mean of
  the batch means (1.5 and 0.83); bits per byte at 2 bytes/token = 1 / ln 2 / 2."""
  sums = iter([(3.0, 2.0), (5.0, 6.0)])
  batches = [{'inputs': np.zeros((1, 4), np.int32)}] * 2
  r = evaluate.evaluate(lambda p, b: next(sums), None, batches, bytes_per_token=2.0)
  assert r.loss == 1.0 and r.tokens == 8
  assert r.bpb == pytest.approx(1 / math.log(2) / 2)
  assert r.row() == {'eval/loss': 1.0, 'eval/bpb': r.bpb}
  with pytest.raises(evaluate.EvalError, match='no tokens at seq_len=4'):
    evaluate.evaluate(lambda p, b: (0.0, 0.0), None, batches[:1], bytes_per_token=2.0)


# ----------------------------------------------------------------------------- through the workdir
def numpy_reference(workdir, batches: int, batch_size: int, seq_len: int | None = None):
  """(mean loss, bits per byte) of the workdir's model on the first validation batches (windows of `seq_len`
  tokens, default the training length), by hand."""
  from scaling.data.loader import make_eval_loader
  from scaling.data.prepare import prepare
  from scaling.inference.run import load_for_inference
  model, cfg, _ = load_for_inference(workdir)
  summary = prepare(cfg.data, verbose=False)
  total = count = 0.0
  for b in make_eval_loader(summary['data_dir'], seq_len=seq_len or cfg.model.seq_len, batch_size=batch_size,
                            max_batches=batches):
    logits = np.asarray(model(jnp.asarray(b['inputs'])), np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = logz - np.take_along_axis(logits, b['targets'][..., None], -1)[..., 0]
    total += float((nll * b['mask']).sum())
    count += float(b['mask'].sum())
  loss = total / count
  bpt = summary.get('bytes_per_token_val') or summary['bytes_per_token']
  return loss, loss / math.log(2) / bpt


def test_scaling_eval_matches_numpy_and_training(trained, capsys):
  """`scaling eval --batches 1 --json`: the loss of a numpy forward over the same windows, and the
  training run's own final eval (same windows: train.eval_batches=1 of train.batch_size rows)."""
  wd = trained['workdir']
  assert cli.main(['eval', '--workdir', str(wd), '--batches', '1', '--json']) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{')]
  assert len(rows) == 1 and rows[0]['seq_len'] == SEQ and rows[0]['tokens'] == 8 * SEQ
  loss, bpb = numpy_reference(wd, batches=1, batch_size=8)
  assert rows[0]['eval/loss'] == pytest.approx(loss, rel=1e-4)
  assert rows[0]['eval/bpb'] == pytest.approx(bpb, rel=1e-4)
  assert trained['result']['eval/bpb'] == pytest.approx(bpb, rel=1e-4)


def test_scaling_eval_prints_a_table_with_a_note(trained, capsys):
  """Default output: a header, one row per length, and why its bpb is not training's."""
  wd = trained['workdir']
  assert cli.main(['eval', '--workdir', str(wd), '--seq_len', '16', '--seq_len', '32']) == 0
  out = capsys.readouterr().out
  lines = out.splitlines()
  assert not any(line.lstrip().startswith('{') for line in lines), out
  assert 'whole validation split' in lines[0] and 'step 6' in lines[0]
  assert lines[1].split()[:2] == ['seq_len', 'loss']
  assert [line.split()[0] for line in lines[2:4]] == ['16', '32']
  assert 'train.eval_batches=1' in out and '--batches 1' in out
  assert cli.main(['eval', '--workdir', str(wd), '--batches', '1']) == 0
  assert 'note:' not in capsys.readouterr().out   # the same batches as training: nothing to explain


def test_scaling_eval_refuses_lengths_past_learned_positions(trained, capsys):
  assert cli.main(['eval', '--workdir', str(trained['workdir']), '--seq_len', str(2 * SEQ)]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'learned positions' in err and f'--seq_len={2 * SEQ}' in err


def test_final_evals_skip_lengths_past_learned_positions(trained):
  """Training's final evals: a shorter length is evaluated (the numpy reference at 16), twice the
  training length has no value with learned positions (None, not an error)."""
  result = trained['result']
  assert result['eval/bpb@64'] is None and result['eval/bpb@2x'] is None
  assert result['eval/bpb@16'] is not None and math.isfinite(result['eval/bpb@16'])
  assert result['eval/bpb@16'] != pytest.approx(result['eval/bpb'], rel=1e-6)   # another length indeed


def test_a_longer_table_evaluates_at_2x_and_4x_and_refuses_past_it(trained_long, capsys):
  """model.position_table = 4 x seq_len: training's final evals have values at 2x and 4x (None at 8x, past the
  table), `scaling eval` at 2x and 4x matches the numpy forward over the same windows, and 8x is refused."""
  result, wd = trained_long['result'], trained_long['workdir']
  for L in (2 * SEQ, 4 * SEQ):
    assert result[f'eval/bpb@{L}'] is not None and math.isfinite(result[f'eval/bpb@{L}']), L
  assert result['eval/bpb@2x'] == result[f'eval/bpb@{2 * SEQ}']
  assert result[f'eval/bpb@{8 * SEQ}'] is None
  assert cli.main(['eval', '--workdir', str(wd), '--batches', '1', '--json',
                   '--seq_len', str(2 * SEQ), '--seq_len', str(4 * SEQ)]) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{')]
  assert [r['seq_len'] for r in rows] == [2 * SEQ, 4 * SEQ]
  for r in rows:
    loss, bpb = numpy_reference(wd, batches=1, batch_size=8, seq_len=r['seq_len'])
    assert r['eval/loss'] == pytest.approx(loss, rel=1e-4) and r['eval/bpb'] == pytest.approx(bpb, rel=1e-4)
  assert cli.main(['eval', '--workdir', str(wd), '--seq_len', str(8 * SEQ)]) == 2
  err = capsys.readouterr().err
  assert 'table of 128 rows' in err and f'--seq_len={8 * SEQ}' in err and 'model.position_table' in err
