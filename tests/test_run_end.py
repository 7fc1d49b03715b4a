"""The end of a run (scaling/train/loop.py): the final checkpoint and summary.json come before any
end-of-run work that can fail, and a corpus without a validation split (data.val_fraction=0) skips its
evaluations instead of failing after the last step.

References are the files on disk (the checkpoint directories orbax wrote, summary.json, metrics.jsonl
read back as JSON), not numbers the run printed.
"""

import json
import pathlib

import numpy as np
import pytest

from scaling.config import load as config_lib
from scaling.data.corpus import DataError
from scaling.train import evaluate as evaluate_lib
from scaling.train import loop as train_lib
from scaling.train import run_end

WORDS = 'alpha beta gamma delta epsilon zeta eta theta , and .'.split()
STEPS = 3


def write_docs(root: pathlib.Path, num_docs: int) -> str:
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(5)
  for i in range(num_docs):
    (root / f'doc{i}.txt').write_text(' '.join(WORDS[j] for j in rng.integers(0, len(WORDS), 600)))
  return str(root / ('doc0.txt' if num_docs == 1 else '*.txt'))


def make_cfg(root: pathlib.Path, corpus: str, **kw):
  base = {
      'model.vocab_size': 259, 'model.seq_len': 16, 'model.num_layers': 2, 'model.d_model': 32,
      'model.num_heads': 4, 'model.num_kv_heads': 2, 'model.d_ff': 64,
      'data.corpus': corpus, 'data.tokenizer': 'byte', 'data.data_dir': str(root / 'prepared'),
      'train.batch_size': 8, 'train.steps': STEPS, 'train.lr': 1e-2, 'train.warmup_steps': 1,
      'train.log_every': 1, 'train.eval_every': 2, 'train.eval_batches': 1, 'train.ckpt_every': 1000,
      'train.peak_flops': 1e12,
  }
  base.update({k.replace('__', '.'): v for k, v in kw.items()})
  return config_lib.load_config('default.py', base)


def saved_steps(workdir: pathlib.Path) -> list[int]:
  d = workdir / 'checkpoints'
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def rows(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(x) for x in (workdir / 'metrics.jsonl').read_text().splitlines()]


def test_one_file_corpus_is_refused_with_the_default_split(tmp_path):
  """The advice the reproduction follows: one document cannot be split; the error names val_fraction=0."""
  cfg = make_cfg(tmp_path, write_docs(tmp_path / 'corpus', 1))
  with pytest.raises(DataError, match='val_fraction=0'):
    train_lib.train(cfg, tmp_path / 'run', quiet=True)
  assert saved_steps(tmp_path / 'run') == []


# default: the tagged set 'prose?' too (refused at val_fraction=0 where the prose corpus is present); {}: only
# the training corpus's own split (before: "index.json has no 'val' split" after the last step)
@pytest.mark.parametrize('eval_sets', ['default', '{}'])
def test_val_fraction_0_run_finishes_with_null_evals_and_rerun_is_a_no_op(tmp_path, capsys, eval_sets):
  kw = {} if eval_sets == 'default' else {'train__eval_sets': eval_sets}
  cfg = make_cfg(tmp_path, write_docs(tmp_path / 'corpus', 1), data__val_fraction=0.0,
                 train__final_eval_lengths='(32,)', **kw)
  wd = tmp_path / 'run'
  result = train_lib.train(cfg, wd)
  out = capsys.readouterr().out
  assert result['state'] == 'done' and result['exit_code'] == 0
  assert 'skipped' in out and 'val_fraction=0' in out
  assert saved_steps(wd) == [STEPS]                       # the final checkpoint (ckpt_every is past the end)
  summary = json.loads((wd / 'summary.json').read_text())
  assert summary['state'] == 'done' and summary['step'] == STEPS
  for key in ('eval/loss', 'eval/bpb', 'eval/bpb@32'):    # present and null, not missing
    assert key in summary and summary[key] is None
  assert 'val_fraction=0' in summary['eval_skipped'] and summary['end_error'] is None
  metric_rows = rows(wd)
  assert [r['step'] for r in metric_rows] == list(range(1, STEPS + 1))
  assert not any(k.startswith('eval/') for r in metric_rows for k in r)   # the periodic eval (step 2) skipped too

  before = {p: p.read_bytes() for p in (wd / 'summary.json', wd / 'metrics.jsonl')}
  again = train_lib.train(cfg, wd)
  out = capsys.readouterr().out
  assert again['state'] == 'done' and again['exit_code'] == 0 and again['step'] == STEPS
  assert 'already finished' in out
  assert {p: p.read_bytes() for p in before} == before
  assert saved_steps(wd) == [STEPS]


def test_a_failing_final_eval_leaves_a_finished_saved_run(tmp_path, monkeypatch, capsys):
  cfg = make_cfg(tmp_path, write_docs(tmp_path / 'corpus', 4), data__val_fraction=0.5, train__eval_every=1000)
  wd = tmp_path / 'run'
  seen = {}

  def broken(*a, **kw):
    seen['steps'] = saved_steps(wd)
    seen['summary'] = json.loads((wd / 'summary.json').read_text()) if (wd / 'summary.json').exists() else None
    raise RuntimeError('eval exploded')

  monkeypatch.setattr(evaluate_lib, 'evaluate', broken)
  monkeypatch.setattr(run_end, 'evaluate', broken)   # the end phase's own name for it
  result = train_lib.train(cfg, wd, quiet=True)
  err = capsys.readouterr().err
  # when the eval ran, the final checkpoint and a finished summary.json were already on disk
  assert seen['steps'] == [STEPS]
  assert seen['summary']['state'] == 'done' and seen['summary']['step'] == STEPS
  assert result['state'] == 'done' and result['exit_code'] == 1
  lines = [x for x in err.splitlines() if x.startswith('error:')]
  assert len(lines) == 1
  assert 'evaluation' in lines[0] and 'RuntimeError: eval exploded' in lines[0] and 're-run' in lines[0]
  summary = json.loads((wd / 'summary.json').read_text())
  assert summary['state'] == 'done' and summary['eval/loss'] is None and 'eval exploded' in summary['end_error']
  assert saved_steps(wd) == [STEPS]

  # re-running with a working eval completes the missing end-of-run work, without training again
  monkeypatch.undo()
  again = train_lib.train(cfg, wd, quiet=True)
  assert again['state'] == 'done' and again['exit_code'] == 0 and again['step'] == STEPS
  summary = json.loads((wd / 'summary.json').read_text())
  assert summary['end_error'] is None and summary['eval/loss'] > 0 and summary['eval/bpb'] > 0
  assert saved_steps(wd) == [STEPS]
  assert [r['step'] for r in rows(wd) if 'train/loss' in r] == list(range(1, STEPS + 1))
