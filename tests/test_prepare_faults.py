"""prepare under faults (issue 15, item 5): SIGINT exits 130 with one line and leaves nothing
partial; a damaged data directory is rebuilt with one line saying which file failed which
check; a data_dir holding other files is refused; leftovers of a killed prepare are removed.

The SIGINT test runs `python -m scaling.cli.main prepare` (which imports JAX, whose gc callback used
to swallow the KeyboardInterrupt) in its own process group and signals the group, as a
terminal's Ctrl-C does, once encoding has started.
"""

import importlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading

import ml_collections
import numpy as np
import pytest

from scaling.data.prepare import Interrupted, prepare

pytestmark = pytest.mark.slow   # data preparation killed and resumed in subprocesses (not in -m 'not slow')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_corpus(directory, n_docs, doc_bytes, seed=0):
  rng = np.random.default_rng(seed)
  words = np.array('thou art the king of night and day shall love é 漢字 1600'.split())
  os.makedirs(directory, exist_ok=True)
  for i in range(n_docs):
    n_words = doc_bytes // 5
    text = ' '.join(rng.choice(words, size=n_words))
    text = re.sub(r'((?:\S+ ){12})', '\\1\n', text)
    with open(os.path.join(directory, f'doc{i:03d}.txt'), 'w', encoding='utf-8') as f:
      f.write(text)
  return os.path.join(directory, '*.txt')


def cfg(corpus, data_dir, **kw):
  return ml_collections.ConfigDict(dict(corpus=corpus, text_field='text', tokenizer='char',
                                        vocab_size=0, data_dir=str(data_dir), val_fraction=0.2,
                                        **kw))


def leftovers(parent, name):
  """Entries beside a data dir that belong to it: the dir itself and its temporaries."""
  return sorted(e for e in os.listdir(parent) if e == name or e.startswith(f'.{name}.'))


def _reader(stream, q):
  for line in iter(stream.readline, ''):
    q.put(line)
  q.put(None)


@pytest.mark.parametrize('phase,workers', [('encode', 1), ('encode', 2), ('tokenizer', 1)])
def test_sigint_exits_130_and_leaves_nothing(tmp_path, phase, workers):
  """Ctrl-C while encoding (serial and with a pool) or while sentencepiece trains (in C++)."""
  corpus = write_corpus(str(tmp_path / 'corpus'), n_docs=24, doc_bytes=500_000)  # 12 MB
  data_dir = tmp_path / 'out' / 'data'
  tokenizer = 'char' if phase == 'encode' else 'bpe'   # char: slow encode; bpe: slow training
  cmd = [sys.executable, '-m', 'scaling.cli.main', 'prepare', f'--config.data.corpus={corpus}',
         f'--config.data.data_dir={data_dir}', f'--config.data.tokenizer={tokenizer}',
         '--config.data.vocab_size=2000']
  started = 'trained char' if phase == 'encode' else 'prepare: corpus'  # the phase has begun
  if workers > 1:  # the pool's fields are not config keys: the CLI's entry point, called directly
    cmd = [sys.executable, '-c', 'import sys, jax, ml_collections; from scaling.data.prepare import main_prepare; '
           f'main_prepare(ml_collections.ConfigDict(dict(corpus={corpus!r}, data_dir={str(data_dir)!r}, '
           f'tokenizer="char", prepare_workers={workers}, parallel_threshold_mb=0)))']
  env = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)
  q: queue.Queue = queue.Queue()
  threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
  out = []
  try:
    while True:
      line = q.get(timeout=600)
      assert line is not None, f'prepare ended before the {phase} phase: {out} {proc.stderr.read()}'
      out.append(line)
      if started in line:
        break
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    rc = proc.wait(timeout=600)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  err = proc.stderr.read()
  assert rc == 130, (rc, err[-2000:])
  messages = [ln for ln in err.splitlines() if 'interrupted' in ln]
  assert len(messages) == 1 and 'prepare: interrupted by SIGINT' in messages[0], err[-2000:]
  assert 'Traceback' not in err and 'Exception ignored' not in err, err[-2000:]
  assert leftovers(tmp_path / 'out', 'data') == []  # no data dir, no temporary dir


def test_stop_leaves_an_existing_data_dir_as_it_was(tmp_path):
  corpus = write_corpus(str(tmp_path / 'c'), n_docs=6, doc_bytes=20_000)
  data_dir = tmp_path / 'data'
  prepare(cfg(corpus, data_dir), verbose=False)
  before = {f: (data_dir / f).read_bytes() for f in os.listdir(data_dir)}
  with open(corpus.replace('*.txt', 'doc000.txt'), 'a', encoding='utf-8') as f:
    f.write('changed\n')  # so the next prepare rebuilds
  calls = []
  with pytest.raises(Interrupted):
    prepare(cfg(corpus, data_dir), verbose=False, stop=lambda: calls.append(1) or len(calls) > 8)
  assert {f: (data_dir / f).read_bytes() for f in os.listdir(data_dir)} == before
  assert leftovers(tmp_path, 'data') == ['data']
  with pytest.raises(Interrupted):  # a fresh target: nothing at all is left
    prepare(cfg(corpus, tmp_path / 'fresh'), verbose=False, stop=lambda: True)
  assert leftovers(tmp_path, 'fresh') == []


def _flip(path, offset=10):
  with open(path, 'r+b') as f:
    f.seek(offset)
    b = f.read(1)
    f.seek(offset)
    f.write(bytes([b[0] ^ 0x01]))


@pytest.mark.parametrize('damage,check', [
    ('flip', r'crc32 check: [0-9a-f]{8}, the index says [0-9a-f]{8}'),
    ('truncate', r'size check: \d+ bytes, the index says \d+'),
    ('delete', r'presence check: the file is missing'),
])
def test_a_damaged_shard_is_rebuilt_with_one_line_saying_why(tmp_path, capsys, damage, check):
  corpus = write_corpus(str(tmp_path / 'c'), n_docs=6, doc_bytes=20_000)
  data_dir = tmp_path / 'data'
  first = prepare(cfg(corpus, data_dir), verbose=False)
  good = (data_dir / 'train.bin').read_bytes()
  shard = data_dir / 'train.bin'
  if damage == 'flip':
    _flip(shard)
  elif damage == 'truncate':
    os.truncate(shard, shard.stat().st_size - 2)
  else:
    shard.unlink()
  again = prepare(cfg(corpus, data_dir), verbose=True)
  lines = [ln for ln in capsys.readouterr().out.splitlines() if 'rebuilding' in ln]
  assert len(lines) == 1, lines
  assert re.fullmatch(rf'prepare: rebuilding {re.escape(str(data_dir))}: '
                      rf'{re.escape(str(shard))} failed the {check}', lines[0]), lines[0]
  assert again['skipped'] is False and (data_dir / 'train.bin').read_bytes() == good
  assert again['split_digest'] == first['split_digest']


def test_a_data_dir_with_other_files_is_refused_untouched(tmp_path):
  corpus = write_corpus(str(tmp_path / 'c'), n_docs=4, doc_bytes=5_000)
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'notes.txt').write_text('keep me')
  with pytest.raises(ValueError, match=r'holds files prepare did not write \(notes\.txt\)'):
    prepare(cfg(corpus, mine), verbose=False)
  assert os.listdir(mine) == ['notes.txt'] and leftovers(tmp_path, 'mine') == ['mine']


def test_leftovers_of_a_killed_prepare_are_removed(tmp_path, capsys):
  corpus = write_corpus(str(tmp_path / 'c'), n_docs=4, doc_bytes=5_000)
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                        text=True, check=True)
  pid = int(dead.stdout)  # that process has exited
  stale = tmp_path / f'.data.tmp-{socket.gethostname()}-{pid}-abcd1234'
  stale.mkdir()
  (stale / 'train.bin').write_bytes(b'partial')
  live = tmp_path / f'.data.tmp-{socket.gethostname()}-{os.getpid()}-live0000'  # ours: alive
  live.mkdir()
  s = prepare(cfg(corpus, tmp_path / 'data'), verbose=True)
  assert 'left by an interrupted prepare' in capsys.readouterr().out
  assert not stale.exists() and live.exists()
  assert json.loads((tmp_path / 'data' / 'summary.json').read_text())['split_digest'] == s['split_digest']


def test_a_concurrent_prepare_of_the_same_data_keeps_the_first(tmp_path):
  """Two prepares of one target at once: the second finds the same data in place and keeps it."""
  prepare_lib = importlib.import_module('scaling.data.prepare')  # (the package exports the function)
  corpus = write_corpus(str(tmp_path / 'c'), n_docs=4, doc_bytes=5_000)
  prepare(cfg(corpus, tmp_path / 'a'), verbose=False)
  prepare(cfg(corpus, tmp_path / 'b'), verbose=False)
  inode = os.stat(tmp_path / 'a').st_ino
  prepare_lib._install(str(tmp_path / 'b'), str(tmp_path / 'a'), existed=False)  # same summary
  assert os.stat(tmp_path / 'a').st_ino == inode and not (tmp_path / 'b').exists()
  prepare(cfg(corpus, tmp_path / 'b'), verbose=False)
  prepare_lib._install(str(tmp_path / 'b'), str(tmp_path / 'a'), existed=True)  # a rebuild
  assert os.stat(tmp_path / 'a').st_ino != inode and not (tmp_path / 'b').exists()
  assert leftovers(tmp_path, 'a') == ['a']
