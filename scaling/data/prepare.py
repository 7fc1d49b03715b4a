"""`scaling prepare`: raw text -> tokenizer -> token shards, idempotently.

Steps (see corpus.py for sources and the split, shards.py for the files written):
  1. resolve the corpus (missing files, bad globs, unknown tokenizer: DataError at once);
  2. if `data_dir/summary.json` records the same input fingerprint (config fields that
     matter + every input file's path, size and mtime) and the shards verify, do nothing
     and say so;
  3. assign documents to train/validation by name hash (whole documents);
  4. train/build the tokenizer on the training split only and save it into data_dir;
  5. encode every document, append EOS, write `train.bin`/`val.bin` (a process pool over
     chunks of documents when the corpus is larger than `parallel_threshold_mb`);
  6. write index.json, then summary.json (the commit marker), and print the summary.

The pool uses the 'spawn' start method (safe under a multithreaded JAX parent); a script
calling `prepare` on a corpus above the threshold needs the usual `if __name__ == '__main__'`.

`bytes_per_token_*` in the summary are UTF-8 text bytes / tokens, the EOS separators
counted as tokens: the ratio that turns a mean loss over the token stream into bits per
byte (`bits_per_byte` in loader.py).
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from scaling import tokenizer as tok_lib
from scaling.data import corpus as corpus_lib
from scaling.data import shards
from scaling.tokenizer import DataError

SUMMARY_JSON = 'summary.json'
_CHUNK_BYTES = 4 << 20


def _get(cfg: Any, name: str, default: Any) -> Any:
  """Reads cfg.name from a ConfigDict, dict or object; `default` when absent."""
  if isinstance(cfg, dict):
    return cfg.get(name, default)
  try:
    return cfg[name] if name in cfg else default
  except TypeError:
    return getattr(cfg, name, default)


def _settings(data_cfg: Any) -> dict[str, Any]:
  """The config fields that decide the prepared data, validated."""
  spec = str(_get(data_cfg, 'tokenizer', 'bpe'))
  kind, arg = tok_lib.parse_spec(spec)
  vocab_size = _get(data_cfg, 'vocab_size', 4096)
  if kind in tok_lib.SPM_KINDS:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 260:
      raise DataError(f'data.vocab_size={vocab_size!r}: a {kind} tokenizer with byte fallback '
                      'needs an integer >= 260 (256 byte pieces + specials); try 4096')
  else:
    vocab_size = None  # decided by the tokenizer
  val_fraction = float(_get(data_cfg, 'val_fraction', 0.05))
  if not 0.0 <= val_fraction < 1.0:
    raise DataError(f'data.val_fraction={val_fraction} must be in [0, 1)')
  corpus = str(_get(data_cfg, 'corpus', 'shakespeare')).strip()
  return dict(format_version=shards.FORMAT_VERSION, corpus=corpus,
              text_field=str(_get(data_cfg, 'text_field', 'text')), tokenizer=spec,
              tokenizer_kind=kind, tokenizer_arg=arg, vocab_size=vocab_size,
              val_fraction=val_fraction)


def _hash(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def default_data_dir(data_cfg: Any) -> str:
  """$SCALING_CACHE/data/<corpus>-<tokenizer>-<hash of the settings>."""
  s = _settings(data_cfg)
  corpus = s['corpus'] if s['corpus'] == 'shakespeare' else (
      'hf' if s['corpus'].startswith('hf:') else 'files')
  tok = s['tokenizer_kind'] + (str(s['vocab_size']) if s['vocab_size'] else '')
  return os.path.join(corpus_lib.cache_dir(), 'data', f'{corpus}-{tok}-{_hash(s)[:10]}')


def resolve_data_dir(data_cfg: Any) -> str:
  d = str(_get(data_cfg, 'data_dir', '') or '')
  return os.path.abspath(os.path.expanduser(d)) if d else default_data_dir(data_cfg)


def _fingerprint(settings: dict[str, Any], sources: list[corpus_lib.Source]) -> str:
  inputs = [s.fingerprint() for s in sources]
  arg = settings['tokenizer_arg']
  if settings['tokenizer_kind'] == 'tiktoken' and os.path.isfile(arg):
    inputs.append(corpus_lib._stat_fp(arg))  # pylint: disable=protected-access
  return _hash([settings, inputs])


def _up_to_date(data_dir: str, fingerprint: str) -> dict[str, Any] | None:
  """The stored summary if data_dir was prepared from the same inputs and verifies, else None."""
  path = os.path.join(data_dir, SUMMARY_JSON)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      summary = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError, OSError):
    return None
  if summary.get('fingerprint') != fingerprint:
    return None
  try:
    tok = tok_lib.load_tokenizer(data_dir)
    shards.check_tokenizer_hash(data_dir, tok.sha256)
    for split in shards.read_index(data_dir)['splits']:
      shards.open_split(data_dir, split, verify=True)
  except DataError:
    return None
  return summary


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


def _iter_docs(sources: list[corpus_lib.Source]) -> Iterator[corpus_lib.Document]:
  for s in sources:
    yield from s


def _build_tokenizer(settings: dict[str, Any], sources, assigner: _Assigner,
                     verbose: bool) -> tok_lib.Tokenizer:
  kind, arg = settings['tokenizer_kind'], settings['tokenizer_arg']
  if kind == 'byte':
    return tok_lib.ByteTokenizer()
  if kind == 'tiktoken':
    return tok_lib.TiktokenTokenizer(arg)
  train_texts = (d.text for d in _iter_docs(sources) if not assigner.is_val(d.name))
  t0 = time.time()
  if kind == 'char':
    tok: tok_lib.Tokenizer = tok_lib.CharTokenizer.train(train_texts)
  else:
    lines = (line for text in train_texts for line in text.split('\n'))
    tok = tok_lib.train_sentencepiece(lines, kind=kind, vocab_size=settings['vocab_size'])
  if verbose:
    print(f'prepare: trained {tok.name} tokenizer in {time.time() - t0:.1f} s')
  return tok


# --- encoding (serial or a process pool) --------------------------------------------------

_WORKER_TOKENIZER: dict[str, tok_lib.Tokenizer] = {}


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


def _encode_all(tok, sources, assigner, writers, data_dir, dtype, workers, progress) -> None:
  """Encodes every non-empty document into its split's writer, in corpus order."""

  def write(batch, arrays):
    for d, ids in zip(batch, arrays):
      split = 'val' if assigner.is_val(d.name) else 'train'
      writers[split].add(ids, len(d.text.encode('utf-8')))
    progress.update(len(batch))

  chunks = _chunks(_iter_docs(sources), _CHUNK_BYTES)
  if workers <= 1:
    for batch in chunks:
      write(batch, [_encode_doc(tok, d.text, dtype) for d in batch])
    return
  ctx = multiprocessing.get_context('spawn')  # no fork of a multithreaded (JAX) parent
  with ctx.Pool(workers) as pool:
    pending: collections.deque = collections.deque()
    for batch in chunks:
      pending.append((batch, pool.apply_async(
          _encode_chunk, (data_dir, [d.text for d in batch], dtype.name))))
      if len(pending) >= 2 * workers:  # bounded: the corpus is never all in memory
        b, r = pending.popleft()
        write(b, r.get())
    while pending:
      b, r = pending.popleft()
      write(b, r.get())


def _tqdm(total, verbose):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, unit='doc', desc='encode', disable=not verbose, leave=False)


# --- prepare ------------------------------------------------------------------------------


def prepare(data_cfg: Any, *, verbose: bool = True, force: bool = False) -> dict[str, Any]:
  """Prepares tokenizer + shards for `data_cfg` (configs/default.py `c.data`); returns summary.

  Idempotent: with the same inputs and settings a second call verifies the shards, prints
  that the data is up to date and returns the stored summary with `skipped=True`.
  Extra optional fields: `prepare_workers` (0: auto), `parallel_threshold_mb` (64).
  """
  t_start = time.time()
  settings = _settings(data_cfg)
  if settings['tokenizer_kind'] == 'tiktoken':
    tok_lib.TiktokenTokenizer(settings['tokenizer_arg'])  # fail fast: missing file / package
  sources = corpus_lib.resolve_corpus(settings['corpus'], settings['text_field'])
  data_dir = resolve_data_dir(data_cfg)
  fingerprint = _fingerprint(settings, sources)
  if not force:
    summary = _up_to_date(data_dir, fingerprint)
    if summary is not None:
      if verbose:
        print(f'prepare: {data_dir} is up to date (same inputs and tokenizer); nothing to do')
      return dict(summary, skipped=True)
  os.makedirs(data_dir, exist_ok=True)
  for name in (SUMMARY_JSON, shards.INDEX_JSON):  # an interrupted run is never taken as done
    p = os.path.join(data_dir, name)
    if os.path.exists(p):
      os.remove(p)

  assigner = _Assigner(sources, settings['val_fraction'])
  if verbose:
    print(f'prepare: corpus {", ".join(s.label for s in sources)} -> {data_dir}')
  tok = _build_tokenizer(settings, sources, assigner, verbose)
  tok.save(data_dir)

  dtype = shards.token_dtype(tok.vocab_size)
  total_bytes = sum(s.size_bytes() for s in sources)
  workers = int(_get(data_cfg, 'prepare_workers', 0)) or min(os.cpu_count() or 1, 16)
  threshold = float(_get(data_cfg, 'parallel_threshold_mb', 64)) * 2**20
  if total_bytes < threshold:
    workers = 1
  writers = {s: shards.ShardWriter(data_dir, s, dtype) for s in shards.SPLITS}
  total_docs = None if assigner.streamed else assigner.num_known
  t0 = time.time()
  try:
    with _tqdm(total_docs, verbose) as progress:
      _encode_all(tok, sources, assigner, writers, data_dir, dtype, workers, progress)
  except BaseException:
    for w in writers.values():
      w.abort()
    raise
  metas = {s: w.close() for s, w in writers.items()}
  encode_s = time.time() - t0

  train, val = metas['train'], metas['val']
  if train['num_tokens'] == 0:
    raise DataError(f'the training split of corpus {settings["corpus"]!r} is empty (all '
                    'documents empty or in validation)')
  if settings['val_fraction'] > 0 and val['num_tokens'] == 0:
    raise DataError(f'the validation split of corpus {settings["corpus"]!r} is empty: its '
                    'documents are empty; raise data.val_fraction or add documents')
  if not settings['val_fraction']:
    del metas['val']
  index = dict(format_version=shards.FORMAT_VERSION, vocab_size=tok.vocab_size,
               eos_id=tok.eos_id, tokenizer_sha256=tok.sha256, splits=metas)
  tok_lib.atomic_write_text(
      os.path.join(data_dir, shards.INDEX_JSON), json.dumps(index, indent=1))

  bpt = lambda m: round(m['text_bytes'] / max(m['num_tokens'], 1), 4)
  val_names = sorted(assigner.val_names)
  summary = dict(
      data_dir=data_dir, corpus=settings['corpus'], tokenizer=settings['tokenizer'],
      tokenizer_kind=tok.kind, tokenizer_name=tok.name,
      tokenizer_path=os.path.join(data_dir, tok_lib.TOKENIZER_JSON),
      vocab_size=tok.vocab_size, eos_id=tok.eos_id, bos_id=tok.bos_id, dtype=dtype.name,
      train_tokens=train['num_tokens'], val_tokens=val['num_tokens'],
      train_bytes=train['text_bytes'], val_bytes=val['text_bytes'],
      train_docs=train['num_docs'], val_docs=val['num_docs'],
      bytes_per_token_train=bpt(train), bytes_per_token_val=bpt(val),
      val_documents=val_names[:50], encode_workers=workers,
      encode_seconds=round(encode_s, 2), seconds=round(time.time() - t_start, 2),
      fingerprint=fingerprint, skipped=False)
  tok_lib.atomic_write_text(
      os.path.join(data_dir, SUMMARY_JSON), json.dumps(summary, indent=1))
  if verbose:
    print(format_summary(summary))
  return summary


def format_summary(summary: dict[str, Any]) -> str:
  keys = ('data_dir', 'corpus', 'tokenizer_path', 'tokenizer_kind', 'vocab_size', 'train_docs',
          'val_docs', 'train_tokens', 'val_tokens', 'train_bytes', 'val_bytes',
          'bytes_per_token_train', 'bytes_per_token_val', 'seconds')
  width = max(len(k) for k in keys)
  lines = ['prepare summary:'] + [f'  {k:<{width}}  {summary.get(k)}' for k in keys]
  return '\n'.join(lines)


def main_prepare(config: Any, *, force: bool = False) -> dict[str, Any]:
  """CLI entry: `config` is the full run config (uses config.data) or a data config.

  Prints the summary exactly once (prepare prints it after real work; here when skipped).
  """
  data_cfg = _get(config, 'data', None)
  if data_cfg is None:
    data_cfg = config
  summary = prepare(data_cfg, verbose=True, force=force)
  if summary.get('skipped'):
    print(format_summary(summary))
  return summary

