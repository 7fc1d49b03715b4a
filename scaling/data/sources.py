"""Where documents come from: a corpus source yields (name, text) documents and a fingerprint of its files.

TextFiles (.txt), JsonlFile (.jsonl[.gz]), ParquetFile and HuggingFace (streamed) behind one interface
(Source); corpus.py resolves a data.corpus spec into these, prose.py builds the study corpus from them.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import re
from collections.abc import Iterator, Sequence

from scaling.data.tokenizer import DataError

SUPPORTED_SUFFIXES = ('.txt', '.jsonl', '.jsonl.gz', '.parquet')


@dataclasses.dataclass(frozen=True)
class Document:
  name: str
  text: str


def cache_dir() -> str:
  """$SCALING_CACHE, default ~/.cache/scaling."""
  return os.path.expanduser(os.environ.get('SCALING_CACHE') or '~/.cache/scaling')


# --- Gutenberg stripping ------------------------------------------------------------------

_START = re.compile(r'^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$', re.I | re.M)
_END = re.compile(r'^\s*\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$', re.I | re.M)
_SMALL_PRINT_END = re.compile(r'^.*\*END\*THE SMALL PRINT!.*$', re.M)
_END_OLD = re.compile(r'^\s*End of (the )?Project Gutenberg.*$', re.I | re.M)


def strip_gutenberg(text: str) -> str:
  """Removes a Project Gutenberg header/licence and footer, if present; CRLF -> LF.

  The header ends at '*** START OF THE/THIS PROJECT GUTENBERG ...' (or at the old
  '*END*THE SMALL PRINT!' line); the footer starts at '*** END OF ...' or 'End of (the)
  Project Gutenberg ...'. Text without these markers only loses surrounding blank lines.
  """
  text = text.replace('\r\n', '\n').replace('\r', '\n')
  for start in (_START, _SMALL_PRINT_END):
    m = start.search(text)
    if m:
      text = text[m.end():]
      break
  ends = [m.start() for m in (_END.search(text), _END_OLD.search(text)) if m]
  if ends:
    text = text[:min(ends)]
  return text.strip('\n').rstrip() + '\n'


# --- sources ------------------------------------------------------------------------------


class Source:
  """A list of documents. `names()` is None when the count is unknown without reading."""

  label: str = ''

  def names(self) -> list[str] | None:
    raise NotImplementedError

  def __iter__(self) -> Iterator[Document]:
    raise NotImplementedError

  def fingerprint(self) -> list:
    """What identifies the inputs (paths, sizes, mtimes): a change forces a new prepare."""
    raise NotImplementedError

  def size_bytes(self) -> int:
    return 0


def _stat_fp(path: str) -> list:
  st = os.stat(path)
  return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class TextFiles(Source):
  """One document per UTF-8 text file; `names` default to the paths (resolve_corpus passes
  location-free relative names)."""

  def __init__(self, paths: Sequence[str], names: Sequence[str] | None = None,
               gutenberg: bool = False):
    self.paths = list(paths)
    self._names = list(names) if names is not None else list(self.paths)
    self.gutenberg = gutenberg
    self.label = f'{len(self.paths)} text file(s)'

  def names(self) -> list[str]:
    return list(self._names)

  def __iter__(self) -> Iterator[Document]:
    for name, path in zip(self._names, self.paths):
      try:
        with open(path, 'rb') as f:
          text = f.read().decode('utf-8')
      except UnicodeDecodeError as e:
        raise DataError(f'{path} is not valid UTF-8 ({e}); convert it first, e.g. '
                        f'`iconv -f latin1 -t utf-8`') from e
      except OSError as e:
        raise DataError(f'cannot read {path}: {e}') from e
      if self.gutenberg:
        text = strip_gutenberg(text)
      yield Document(name, text)

  def fingerprint(self) -> list:
    return [_stat_fp(p) for p in self.paths]

  def size_bytes(self) -> int:
    return sum(os.path.getsize(p) for p in self.paths)


def _open_text(path: str):
  if path.endswith('.gz'):
    return io.TextIOWrapper(gzip.open(path, 'rb'), encoding='utf-8')
  return open(path, encoding='utf-8')


class JsonlFile(Source):
  """One document per non-blank line of a .jsonl or .jsonl.gz file; text in `field`.

  Documents are named `name:i` (`name` defaults to the path; resolve_corpus passes the
  path relative to the corpus root).
  """

  def __init__(self, path: str, field: str, name: str | None = None):
    self.path, self.field = path, field
    self.name = path if name is None else name
    self.label = path

  def names(self) -> list[str]:
    n = 0
    try:
      with _open_text(self.path) as f:
        for line in f:
          n += bool(line.strip())
    except (OSError, UnicodeDecodeError, EOFError) as e:
      raise DataError(f'cannot read {self.path}: {e}') from e
    return [f'{self.name}:{i}' for i in range(n)]

  def __iter__(self) -> Iterator[Document]:
    i = 0
    try:
      with _open_text(self.path) as f:
        for lineno, line in enumerate(f, 1):
          if not line.strip():
            continue
          try:
            record = json.loads(line)
          except json.JSONDecodeError as e:
            raise DataError(f'{self.path}:{lineno}: invalid JSON ({e})') from e
          if not isinstance(record, dict) or self.field not in record:
            raise DataError(f'{self.path}:{lineno}: no field {self.field!r} in the record; set '
                            'data.text_field to the name of the text field')
          text = record[self.field]
          if not isinstance(text, str):
            raise DataError(f'{self.path}:{lineno}: field {self.field!r} is '
                            f'{type(text).__name__}, not a string')
          yield Document(f'{self.name}:{i}', text)
          i += 1
    except (OSError, UnicodeDecodeError, EOFError) as e:
      raise DataError(f'cannot read {self.path}: {e}') from e

  def fingerprint(self) -> list:
    return [_stat_fp(self.path), self.field]

  def size_bytes(self) -> int:
    return os.path.getsize(self.path)


def _import_pyarrow_parquet():
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError('reading .parquet files needs the optional package pyarrow: '
                    '`pip install pyarrow`') from e
  return pq


class ParquetFile(Source):
  """One document per row of a .parquet file; text in column `field`; named `name:row`."""

  def __init__(self, path: str, field: str, name: str | None = None):
    self.path, self.field = path, field
    self.name = path if name is None else name
    self.label = path

  def _file(self):
    pq = _import_pyarrow_parquet()
    try:
      pf = pq.ParquetFile(self.path)
    except Exception as e:  # pyarrow raises its own error types
      raise DataError(f'cannot read parquet file {self.path}: {e}') from e
    if self.field not in pf.schema_arrow.names:
      raise DataError(f'{self.path}: no column {self.field!r} (columns: '
                      f'{pf.schema_arrow.names}); set data.text_field')
    return pf

  def names(self) -> list[str]:
    return [f'{self.name}:{i}' for i in range(self._file().metadata.num_rows)]

  def __iter__(self) -> Iterator[Document]:
    i = 0
    for batch in self._file().iter_batches(columns=[self.field], batch_size=1024):
      for text in batch.column(0).to_pylist():
        yield Document(f'{self.name}:{i}', text or '')
        i += 1

  def fingerprint(self) -> list:
    return [_stat_fp(self.path), self.field]

  def size_bytes(self) -> int:
    return os.path.getsize(self.path)


class HuggingFace(Source):
  """A streamed Hugging Face dataset's `train` split (optional: needs `datasets` + network)."""

  def __init__(self, name: str, config: str | None, field: str):
    self.name, self.config, self.field = name, config, field
    self.label = f'hf:{name}' + (f':{config}' if config else '')

  def names(self) -> None:
    return None

  def __iter__(self) -> Iterator[Document]:
    try:
      import datasets  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise DataError(f'corpus {self.label} needs the optional package `datasets` (and network '
                      'access): `pip install datasets`; or download the data and use local '
                      '.jsonl/.parquet files') from e
    try:
      ds = datasets.load_dataset(self.name, self.config, split='train', streaming=True)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'cannot open Hugging Face dataset {self.label}: {e}') from e
    for i, record in enumerate(ds):
      if self.field not in record:
        raise DataError(f'{self.label}: records have no field {self.field!r} (fields: '
                        f'{sorted(record)}); set data.text_field')
      yield Document(f'{self.label}:{i}', record[self.field] or '')

  def fingerprint(self) -> list:
    return [self.label, self.field]


# --- Shakespeare --------------------------------------------------------------------------
