"""prepare's tokenize and encode steps: the train/validation assignment, the tokenizer, the encoded shards.

`_Assigner` puts each document in train or validation by its name (scaling/data/corpus.py's split);
`_build_tokenizer` trains the tokenizer on the training split (sentencepiece in a thread, so an interrupt
is acted on while it runs: `_in_thread`); `_encode_all` encodes every document, EOS appended, into its
split's shard writer, serially or in a process pool over chunks of documents. The pool uses the 'spawn'
start method (no fork of a multithreaded JAX parent) and its workers load the tokenizer prepare saved.
`check` is prepare's check point (scaling/data/prepare.py): it raises Interrupted when prepare is stopped.
"""

from __future__ import annotations

import collections
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from scaling.data import corpus as corpus_lib
from scaling.data import tokenizer as tok_lib
from scaling.data.tokenizer import DataError

_CHUNK_BYTES = 4 << 20
_TOKENIZER_THREAD = 'prepare-tokenizer'


# --- the split and the tokenizer ----------------------------------------------------------


class _Assigner:
  """Decides train/val per document name (exact count where names are known up front)."""

  def __init__(self, sources: list[corpus_lib.Source], val_fraction: float):
    self.val_fraction = val_fraction
    known: list[str] = []
    self.streamed = False
    for s in sources:
      names = s.names()
      if names is None:
        self.streamed = True
      else:
        known.extend(names)
    self.num_known = len(known)
    if not known and not self.streamed:
      raise DataError('the corpus has no documents (empty files or globs)')
    self.val_names = corpus_lib.split_documents(known, val_fraction) if known else set()
    self._known = set(known) if self.streamed else None

  def is_val(self, name: str) -> bool:
    if name in self.val_names:
      return True
    if self._known is not None and name not in self._known:
      return corpus_lib.is_val_by_threshold(name, self.val_fraction)
    return False


def _iter_docs(sources: list[corpus_lib.Source], check) -> Iterator[corpus_lib.Document]:
  for s in sources:
    for d in s:
      check()
      yield d


def _build_tokenizer(settings: dict[str, Any], sources, assigner: _Assigner, check,
                     log) -> tok_lib.Tokenizer:
  kind, arg = settings['tokenizer_kind'], settings['tokenizer_arg']
  if settings.get('tokenizer_from'):   # given (a data mixture's, trained on all its sources: scaling/data/mixture.py)
    return tok_lib.load_tokenizer(settings['tokenizer_from'])
  if kind == 'byte':
    return tok_lib.ByteTokenizer()
  if kind == 'tiktoken':
    return tok_lib.TiktokenTokenizer(arg)
  train_texts = (d.text for d in _iter_docs(sources, check) if not assigner.is_val(d.name))
  t0 = time.time()
  if kind == 'char':
    tok: tok_lib.Tokenizer = tok_lib.CharTokenizer.train(train_texts)
  else:
    lines = (line for text in train_texts for line in text.split('\n'))
    tok = _in_thread(lambda: tok_lib.train_sentencepiece(
        lines, kind=kind, vocab_size=settings['vocab_size'],
        character_coverage=settings.get('character_coverage', 1.0)), check)
  check()
  log(f'prepare: trained {tok.name} tokenizer in {time.time() - t0:.1f} s')
  return tok


def _in_thread(fn: Callable[[], Any], check) -> Any:
  """fn() in a daemon thread while this one keeps calling check() (so a signal is acted on).

  sentencepiece trains in C++ with the GIL released, minutes for a large corpus and vocab;
  run here, an interrupt raises at once. The abandoned training runs on until it ends; a
  process that exits before that should leave with os._exit (main_prepare does), as C++
  still running in a thread may abort during interpreter teardown.
  """
  box: dict[str, Any] = {}

  def run():
    try:
      box['value'] = fn()
    except BaseException as e:  # handed to the caller
      box['error'] = e

  thread = threading.Thread(target=run, name=_TOKENIZER_THREAD, daemon=True)
  thread.start()
  while thread.is_alive():
    thread.join(0.1)
    check()
  if 'error' in box:
    raise box['error']
  return box['value']


# --- encoding (serial or a process pool) --------------------------------------------------

_WORKER_TOKENIZER: dict[str, tok_lib.Tokenizer] = {}


def _worker_init() -> None:
  """Pool workers leave SIGINT to the parent (a terminal's Ctrl-C reaches the whole group)."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def _encode_chunk(data_dir: str, texts: list[str], dtype_name: str) -> list[np.ndarray]:
  """Pool worker: encodes texts with the tokenizer saved in data_dir, EOS appended."""
  tok = _WORKER_TOKENIZER.get(data_dir)
  if tok is None:
    tok = _WORKER_TOKENIZER[data_dir] = tok_lib.load_tokenizer(data_dir)
  return [_encode_doc(tok, t, np.dtype(dtype_name)) for t in texts]


def _encode_doc(tok: tok_lib.Tokenizer, text: str, dtype: np.dtype) -> np.ndarray:
  ids = tok.encode_array(text, dtype=np.int64)
  eos = tok.eos_id if tok.eos_id is not None else 0
  out = np.empty(ids.size + 1, dtype=dtype)
  out[:-1] = ids
  out[-1] = eos
  return out


def _chunks(docs: Iterator[corpus_lib.Document], chunk_bytes: int):
  batch, size = [], 0
  for d in docs:
    if not d.text:
      continue
    batch.append(d)
    size += len(d.text)
    if size >= chunk_bytes:
      yield batch
      batch, size = [], 0
  if batch:
    yield batch


def _encode_all(tok, docs, assigner, writers, data_dir, dtype, workers, progress, check) -> None:
  """Encodes every non-empty document into its split's writer, in corpus order."""

  def write(batch, arrays):
    for d, ids in zip(batch, arrays):
      split = 'val' if assigner.is_val(d.name) else 'train'
      writers[split].add(ids, len(d.text.encode('utf-8')))
    progress.update(len(batch))

  def result(r):
    while not r.ready():  # a bounded wait: the interrupt check runs while workers encode
      r.wait(0.1)
      check()
    return r.get()

  chunks = _chunks(docs, _CHUNK_BYTES)
  if workers <= 1:
    for batch in chunks:
      arrays = []
      for d in batch:
        arrays.append(_encode_doc(tok, d.text, dtype))
        check()
      write(batch, arrays)
    return
  ctx = multiprocessing.get_context('spawn')  # no fork of a multithreaded (JAX) parent
  with ctx.Pool(workers, initializer=_worker_init) as pool:  # exit (any exception): terminate
    pending: collections.deque = collections.deque()
    for batch in chunks:
      pending.append((batch, pool.apply_async(
          _encode_chunk, (data_dir, [d.text for d in batch], dtype.name))))
      if len(pending) >= 2 * workers:  # bounded: the corpus is never all in memory
        b, r = pending.popleft()
        write(b, result(r))
    while pending:
      b, r = pending.popleft()
      write(b, result(r))


def _tqdm(total, verbose):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, unit='doc', desc='encode', disable=not verbose, leave=False)
