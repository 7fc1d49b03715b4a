"""Token shards: one flat token file per split plus an index that lets a reader trust it.

Layout of a data directory (all written by `prepare`):
  train.bin, val.bin          token ids, raw little-endian uint16 (vocab <= 65536) or uint32
  train.docs.npy, val.docs.npy  document boundaries: int64 offsets [num_docs + 1] into .bin;
                              document k is tokens[off[k]:off[k+1]], its last token the EOS
  index.json                  per split: file, dtype, num_tokens, num_docs, text_bytes,
                              crc32 of the .bin, max_id; plus vocab_size, eos_id and the
                              tokenizer hash
  tokenizer.json (+ tokenizer.model)   the tokenizer (scaling/data/tokenizer.py)
  split.json                  the split: val_fraction, the validation documents (name, bytes,
                              sha256 of the text) and `split_digest`, a sha256 of that list
  summary.json                prepare's result (counts, bytes per token, digests)
  origin.json                 where the data came from: the corpus spec as given, its root,
                              the inputs' stat fingerprint, timings (written last)

Every file but origin.json is a function of the corpus's contents, its relative layout and
the data settings only: the same files prepared from another directory give byte-identical
files. `prepare` builds the directory beside its target and renames it into place.

`open_split` checks, before any training: files present, byte size == num_tokens * itemsize
(truncation), crc32 (corruption; skip with verify=False), every id < vocab_size, and that the
tokenizer hash matches. Each failure is a ShardError (a DataError) naming the file; its
`check` says in a few words which check failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import uuid
import zlib
from typing import Any, Iterator

import numpy as np

from scaling.base.files import atomic_open, open_temp_beside
from scaling.data.tokenizer import DataError

INDEX_JSON = 'index.json'
SPLIT_JSON = 'split.json'
FORMAT_VERSION = 1
SPLITS = ('train', 'val')


@contextlib.contextmanager
def staged_dir(path: str) -> Iterator[str]:
  """A new directory beside `path` to build a data directory in: on a clean exit it replaces `path` (an old
  one removed first), on an error (KeyboardInterrupt included) it is deleted and `path` is left as it was.
  (prepare's own install, scaling/data/prepare.py, also keeps a concurrent build's equal result.)"""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
  os.mkdir(tmp)
  try:
    yield tmp
    if os.path.isdir(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


class ShardError(DataError):
  """A prepared file that fails a check: `path` is the file, `check` the failed check."""

  def __init__(self, message: str, path: str, check: str):
    super().__init__(message)
    self.path, self.check = path, check


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


class ShardWriter:
  """Appends documents (token arrays, EOS included) to `<split>.bin`, tracking the index."""

  def __init__(self, data_dir: str, split: str, dtype: np.dtype):
    self.split, self.dtype = split, np.dtype(dtype)
    self.path = os.path.join(data_dir, f'{split}.bin')
    self.docs_path = os.path.join(data_dir, f'{split}.docs.npy')
    self._f, self._tmp = open_temp_beside(self.path)   # unique name; renamed onto .bin by close()
    self._crc = 0
    self._offsets = [0]
    self.text_bytes = 0
    self.max_id = -1

  def add(self, ids: np.ndarray, text_bytes: int) -> None:
    ids = np.ascontiguousarray(ids, dtype=self.dtype)
    data = ids.tobytes()
    self._f.write(data)
    self._crc = zlib.crc32(data, self._crc)
    self._offsets.append(self._offsets[-1] + ids.size)
    self.text_bytes += text_bytes
    if ids.size:
      self.max_id = max(self.max_id, int(ids.max()))

  def close(self) -> dict[str, Any]:
    self._f.close()
    os.replace(self._tmp, self.path)
    offsets = np.asarray(self._offsets, dtype=np.int64)
    with atomic_open(self.docs_path) as f:
      np.save(f, offsets, allow_pickle=False)
    return dict(file=os.path.basename(self.path), docs_file=os.path.basename(self.docs_path),
                dtype=self.dtype.name, num_tokens=int(offsets[-1]), num_docs=len(offsets) - 1,
                text_bytes=int(self.text_bytes), crc32=int(self._crc), max_id=int(self.max_id))

  def abort(self) -> None:
    self._f.close()
    if os.path.exists(self._tmp):
      os.remove(self._tmp)


def file_crc32(path: str, stop=None) -> int:
  """crc32 of a file, read in 4 MiB blocks; `stop()` is called between blocks (it may raise)."""
  crc = 0
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      crc = zlib.crc32(block, crc)
      if stop is not None:
        stop()
  return crc


def read_index(data_dir: str) -> dict[str, Any]:
  path = os.path.join(data_dir, INDEX_JSON)
  if not os.path.isfile(path):
    raise ShardError(f'{path} not found: {data_dir} is not a prepared data directory; run '
                     '`scaling prepare` (with the same data config) first', path,
                     'presence check: the file is missing')
  try:
    with open(path, encoding='utf-8') as f:
      index = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ShardError(f'{path} is corrupt ({e}); delete {data_dir} and run `scaling prepare`',
                     path, f'not valid JSON ({e})') from e
  if index.get('format_version') != FORMAT_VERSION:
    raise ShardError(f'{path}: format version {index.get("format_version")} is not '
                     f'{FORMAT_VERSION}; re-run `scaling prepare` into a fresh data_dir', path,
                     f'format version {index.get("format_version")} is not {FORMAT_VERSION}')
  return index


def read_split(data_dir: str) -> dict[str, Any] | None:
  """split.json of a prepared directory (None when absent: prepared before splits were recorded)."""
  path = os.path.join(data_dir, SPLIT_JSON)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      split = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
    raise ShardError(f'{path} is corrupt ({e}); re-run `scaling prepare`', path,
                     f'not valid JSON ({e})') from e
  if not isinstance(split, dict) or not isinstance(split.get('split_digest'), str):
    raise ShardError(f'{path} has no split_digest; re-run `scaling prepare`', path,
                     'no split_digest')
  return split


@dataclasses.dataclass
class Split:
  """A verified split: tokens as a read-only memmap and document offsets."""
  name: str
  path: str
  tokens: np.ndarray      # [num_tokens] uint16/uint32 memmap
  doc_offsets: np.ndarray  # [num_docs + 1] int64
  text_bytes: int
  vocab_size: int
  eos_id: int | None

  @property
  def num_tokens(self) -> int:
    return int(self.tokens.shape[0])

  @property
  def bytes_per_token(self) -> float:
    return self.text_bytes / max(self.num_tokens, 1)


def open_split(data_dir: str, split: str, *, verify: bool = True,
               check_ids: bool = True, stop=None) -> Split:
  """Opens `<split>.bin` of a prepared directory and checks it against index.json.

  `stop` (optional) is called between blocks of the crc32 read (prepare's interrupt check).
  """
  index = read_index(data_dir)
  meta = index.get('splits', {}).get(split)
  if meta is None:
    raise ShardError(f'{data_dir}/{INDEX_JSON} has no {split!r} split (val_fraction=0?)',
                     os.path.join(data_dir, INDEX_JSON), f'no {split!r} split')
  path = os.path.join(data_dir, meta['file'])
  docs_path = os.path.join(data_dir, meta['docs_file'])
  for p in (path, docs_path):
    if not os.path.isfile(p):
      raise ShardError(f'shard file missing: {p}; re-run `scaling prepare`', p,
                       'presence check: the file is missing')
  dtype = np.dtype(meta['dtype'])
  expected = meta['num_tokens'] * dtype.itemsize
  size = os.path.getsize(path)
  if size != expected:
    raise ShardError(f'shard {path} is truncated or corrupt: {size} bytes, but the index says '
                     f'{meta["num_tokens"]} {dtype.name} tokens = {expected} bytes. Delete '
                     f'{data_dir} and re-run `scaling prepare`', path,
                     f'size check: {size} bytes, the index says {expected}')
  if verify:
    crc = file_crc32(path, stop)
    if crc != meta['crc32']:
      raise ShardError(f'shard {path} is corrupt: its crc32 does not match the index. Delete '
                       f'{data_dir} and re-run `scaling prepare`', path,
                       f'crc32 check: {crc:08x}, the index says {meta["crc32"]:08x}')
  try:
    offsets = np.load(docs_path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise ShardError(f'document index {docs_path} is corrupt ({e}); re-run `scaling prepare`',
                     docs_path, f'unreadable ({e})') from e
  if (offsets.ndim != 1 or offsets.size != meta['num_docs'] + 1 or offsets[0] != 0
      or offsets[-1] != meta['num_tokens'] or np.any(np.diff(offsets) < 0)):
    raise ShardError(f'document index {docs_path} does not match {path}; re-run `scaling prepare`',
                     docs_path, f'offsets do not match {meta["num_docs"]} documents of {path}')
  vocab_size = int(index['vocab_size'])
  tokens = (np.memmap(path, dtype=dtype, mode='r', shape=(meta['num_tokens'],))
            if meta['num_tokens'] else np.zeros((0,), dtype))
  if check_ids and tokens.size:
    top = int(tokens.max())
    if top >= vocab_size:
      raise ShardError(f'shard {path} holds token id {top} >= vocab_size {vocab_size}: it was '
                       'written with another tokenizer or is corrupt; re-run `scaling prepare`',
                       path, f'token id check: id {top} >= vocab_size {vocab_size}')
  return Split(split, path, tokens, offsets, int(meta['text_bytes']), vocab_size,
               index.get('eos_id'))


def check_tokenizer_hash(data_dir: str, tokenizer_sha256: str) -> None:
  index = read_index(data_dir)
  if index.get('tokenizer_sha256') != tokenizer_sha256:
    raise ShardError(f'the tokenizer in {data_dir} is not the one its shards were written with '
                     '(hash mismatch); re-run `scaling prepare` into a fresh data_dir',
                     os.path.join(data_dir, 'tokenizer.json'),
                     f'hash check: not the tokenizer {INDEX_JSON} records')
