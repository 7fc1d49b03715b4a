"""Tagged eval sets (scaling/train/evalsets.py): which text, the cache, the config, and the training loop's metrics.

References are independent of the code under test: the held-out documents `scaling prepare` chooses
when the same corpus is the training corpus (its split.json), byte-tokenizer ids worked out from the
UTF-8 bytes, and a numpy float64 log-softmax of the final model's logits over a set's windows.
"""

import json
import math
import os
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import load as config_lib
from scaling.data import shards
from scaling.data.loader import make_eval_loader
from scaling.data.prepare import prepare
from scaling.data.tokenizer import ByteTokenizer, DataError
from scaling.train import evalsets
from scaling.train import loop as train_lib

SEQ = 32


def write_docs(root: pathlib.Path, words, n: int, seed: int) -> str:
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    (root / f'd{i:02d}.txt').write_text(' '.join(words[j] for j in rng.integers(0, len(words), 300)) + '\n')
  return str(root / '*.txt')


@pytest.fixture(scope='module')
def corpora(tmp_path_factory):
  root = tmp_path_factory.mktemp('evalsets')
  return dict(root=root, a=write_docs(root / 'alpha', 'alpha beta gamma , .'.split(), 8, 0),
              b=write_docs(root / 'numbers', 'one two three four'.split(), 20, 1))


def test_training_tag_is_the_corpus_name(tmp_path):
  (tmp_path / 'web').mkdir()
  (tmp_path / 'web' / 'x.jsonl').write_text('{"text": "a"}\n')
  (tmp_path / 'single.txt').write_text('a')
  assert evalsets.training_tag('shakespeare') == 'shakespeare'
  assert evalsets.training_tag('prose:pypi') == 'prose'
  assert evalsets.training_tag('hf:allenai/c4:en') == 'c4-en'
  assert evalsets.training_tag(str(tmp_path / 'web' / '*.jsonl')) == 'web'
  assert evalsets.training_tag(str(tmp_path / 'single.txt')) == 'single'


def test_a_set_is_the_held_out_split_prepare_would_make(corpora, tmp_path):
  """The documents are those prepare holds out when the corpus is trained on (split.json), in name-hash
  order, each the UTF-8 bytes of its text followed by EOS (byte tokenizer); bytes per token by hand."""
  tok = ByteTokenizer()
  s = evalsets.build_eval_set('numbers', corpora['b'], tok, val_fraction=0.2, cache=str(tmp_path), log=print)
  summary = prepare(dict(corpus=corpora['b'], tokenizer='byte', val_fraction=0.2, data_dir=str(tmp_path / 'p')),
                    verbose=False)
  held_out = [d['name'] for d in shards.read_split(summary['data_dir'])['val_documents']]
  assert len(held_out) == 4
  record = json.loads((pathlib.Path(s.data_dir) / evalsets.EVALSET_JSON).read_text())
  assert record['documents'] == 4
  split = shards.open_split(s.data_dir, 'val')
  root = pathlib.Path(corpora['b']).parent
  texts = {n: (root / n).read_text() for n in held_out}
  got = {bytes(split.tokens[a:b - 1].astype(np.uint8)).decode() for a, b in zip(split.doc_offsets, split.doc_offsets[1:])}
  assert got == set(texts.values())
  assert all(split.tokens[b - 1] == tok.eos_id for b in split.doc_offsets[1:])
  n_bytes = sum(len(t.encode()) for t in texts.values())
  assert s.bytes_per_token == pytest.approx(n_bytes / (n_bytes + 4))


def test_the_cache_is_reused_and_rebuilt_when_the_corpus_or_shard_changes(corpora, tmp_path):
  tok, lines = ByteTokenizer(), []
  build = lambda: evalsets.build_eval_set('a', corpora['a'], tok, val_fraction=0.25, cache=str(tmp_path),
                                          log=lines.append)
  s = build()
  assert len(lines) == 1 and 'held-out documents' in lines[0]
  assert build() == s and len(lines) == 1              # cached: nothing rebuilt
  val = pathlib.Path(s.data_dir) / 'val.bin'
  val.write_bytes(b'\0' * val.stat().st_size)          # same size, wrong crc
  assert build() == s and len(lines) == 2              # rebuilt after failing the shard check
  doc = sorted(pathlib.Path(corpora['a']).parent.glob('*.txt'))[0]
  os.utime(doc, ns=(doc.stat().st_atime_ns, doc.stat().st_mtime_ns + 10**9))
  build()
  assert len(lines) == 3                               # the inputs changed: rebuilt


def test_optional_and_missing_corpora(tmp_path):
  tok, lines = ByteTokenizer(), []
  missing = str(tmp_path / 'nowhere' / '*.txt')
  assert evalsets.build_eval_set('x', missing + '?', tok, cache=str(tmp_path), log=lines.append) is None
  assert 'skipped' in lines[0]
  with pytest.raises(DataError, match='matches no files'):
    evalsets.build_eval_set('x', missing, tok, cache=str(tmp_path))


def test_config_tags_and_overrides():
  cfg = config_lib.load_config(None, {'train.eval_sets.web': '/data/web/*.jsonl'})
  assert dict(cfg.train.eval_sets) == {'prose': 'prose?', 'web': '/data/web/*.jsonl'}
  assert dict(config_lib.load_config(None, {'train.eval_sets': '{}'}).train.eval_sets) == {}
  with pytest.raises(config_lib.ConfigError, match="tag 'a/b'"):
    config_lib.load_config(None, {'train.eval_sets': "{'a/b': 'x'}"})
  with pytest.raises(config_lib.ConfigError, match='dict literal'):
    config_lib.load_config(None, {'train.eval_sets': 'prose'})


# ----------------------------------------------------------------------------- through training
@pytest.fixture(scope='module')
def trained(corpora, tmp_path_factory):
  root = tmp_path_factory.mktemp('evalsets_run')
  over = {
      'model.seq_len': SEQ, 'model.num_layers': 1, 'model.d_model': 32, 'model.num_heads': 2,
      'model.num_kv_heads': 1, 'model.d_ff': 64, 'data.corpus': corpora['a'], 'data.tokenizer': 'byte',
      'data.data_dir': str(root / 'prepared'), 'data.val_fraction': 0.25, 'train.batch_size': 8, 'train.steps': 4,
      'train.warmup_steps': 1, 'train.eval_every': 2, 'train.eval_batches': 2, 'train.ckpt_every': 1000,
      'train.log_every': 2, 'train.peak_flops': 1e12, 'train.eval_sets': "{'nums': '%s'}" % corpora['b'],
  }
  cfg = config_lib.load_config(None, over)
  old = os.environ.get('SCALING_CACHE')
  os.environ['SCALING_CACHE'] = str(root / 'cache')
  try:
    result = train_lib.train(cfg, root / 'run', quiet=True)
  finally:
    os.environ.pop('SCALING_CACHE') if old is None else os.environ.__setitem__('SCALING_CACHE', old)
  assert result['state'] == 'done'
  return dict(result=result, workdir=root / 'run', cfg=cfg, cache=root / 'cache')


def numpy_loss(model, data_dir, batches, batch_size):
  total = count = 0.0
  for b in make_eval_loader(data_dir, seq_len=SEQ, batch_size=batch_size, max_batches=batches):
    logits = np.asarray(model(jnp.asarray(b['inputs'])), np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    nll = logz - np.take_along_axis(logits, b['targets'][..., None], -1)[..., 0]
    total += float((nll * b['mask']).sum())
    count += float(b['mask'].sum())
  return total / count


def test_training_reports_every_tagged_set(trained):
  """metrics.jsonl and summary.json: eval/<tag>/{loss,bpb} at each eval step for the training corpus's
  split (tag 'alpha', also as eval/loss) and the extra set; the final values match a numpy forward of
  the final checkpoint over the same windows."""
  from scaling.inference.run import load_for_inference
  rows = [json.loads(x) for x in (trained['workdir'] / 'metrics.jsonl').read_text().splitlines()]
  evals = [r for r in rows if 'eval/alpha/bpb' in r]
  assert [r['step'] for r in evals] == [2, 4] and all('eval/nums/bpb' in r for r in evals)
  assert all(r['eval/alpha/loss'] == r['eval/loss'] for r in evals)
  summary = json.loads((trained['workdir'] / 'summary.json').read_text())
  assert summary['eval/alpha/bpb'] == summary['eval/bpb'] == trained['result']['eval/bpb']
  model, _, _ = load_for_inference(trained['workdir'])
  (nums_dir,) = [p for p in (trained['cache'] / 'evalsets').iterdir() if p.name.startswith('nums-')]
  loss = numpy_loss(model, str(nums_dir), batches=2, batch_size=8)
  bpt = json.loads((nums_dir / evalsets.EVALSET_JSON).read_text())['bytes_per_token']
  assert summary['eval/nums/loss'] == pytest.approx(loss, rel=1e-4)
  assert summary['eval/nums/bpb'] == pytest.approx(loss / math.log(2) / bpt, rel=1e-4)
  own = numpy_loss(model, str(trained['cfg'].data.data_dir), batches=2, batch_size=8)
  assert summary['eval/alpha/loss'] == pytest.approx(own, rel=1e-4)
  assert summary['eval/nums/bpb'] != pytest.approx(summary['eval/alpha/bpb'], rel=1e-3)   # another domain


def test_sweep_collect_carries_tagged_sets_and_fit_reads_them(tmp_path):
  """A finished run's summary and an unfinished run's last metrics row: collect_rows carries every
  eval/<tag>/bpb, and fit.load_results takes one as the loss column."""
  from scaling.analysis.fit import load as fit
  from scaling.launch import rundir
  for i, (h, done) in enumerate((('aaa', True), ('bbb', False))):
    d = tmp_path / 'runs' / h
    d.mkdir(parents=True)
    (d / 'run.json').write_text(json.dumps({'hash': h, 'sweep': 'configs/sweeps/x.py', 'index': i, 'state': 'done'}))
    vals = {'eval/bpb': 2.0 + i, 'eval/alpha/bpb': 2.0 + i, 'eval/web/bpb': 3.5 + i, 'eval/web/loss': 2.4}
    if done:
      (d / 'summary.json').write_text(json.dumps({'state': 'done', 'params': 1e6, 'non_embedding_params': 8e5,
                                                  'tokens': 1e8, 'flops': 6e14, **vals}))
    else:
      (d / 'metrics.jsonl').write_text(json.dumps({'step': 10, 'train/loss': 3.0, **vals}) + '\n')
  rows = {r['run']: r for r in rundir.collect_rows(tmp_path)}
  assert rows['aaa']['eval/web/bpb'] == 3.5 and rows['aaa']['eval/alpha/bpb'] == 2.0
  assert rows['bbb']['eval/web/bpb'] == 4.5 and rows['bbb']['eval/web/loss'] == 2.4
  path = tmp_path / 'results.jsonl'
  path.write_text(json.dumps(rows['aaa']) + '\n')
  (row,) = fit.load_results(str(path), metric='eval/web/bpb')
  assert row['L'] == 3.5
  assert fit.is_metric('eval/web/loss') and not fit.is_metric('eval/web/x') and not fit.is_metric('eval//bpb')


def test_scaling_eval_sets_scores_the_runs_tagged_sets(trained, monkeypatch, capsys):
  """`scaling eval --sets --batches 2 --json` scores the windows training's last eval scored: the same
  figures as summary.json, for every tag; --sets with an unknown tag names the known ones."""
  from scaling.cli import main as cli
  monkeypatch.setenv('SCALING_CACHE', str(trained['cache']))
  wd = str(trained['workdir'])
  assert cli.main(['eval', '--workdir', wd, '--sets', '--batches', '2', '--json']) == 0
  rows = {r['set']: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
  summary = trained['result']
  assert set(rows) == {'alpha', 'nums'}
  for tag, r in rows.items():
    assert r['eval/bpb'] == pytest.approx(summary[f'eval/{tag}/bpb'], rel=1e-5)
  assert cli.main(['eval', '--workdir', wd, '--sets', 'web']) == 2
  assert 'alpha, nums' in capsys.readouterr().err
