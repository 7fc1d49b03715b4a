"""A pinned Debian archive from the first source that still has it; every file sha256-checked.

Debian replaces a package version by its security update and later drops the old one from the
regular mirrors, so a pin that downloads today may not in a few months. A pinned .deb of the prose
corpus (scaling/data/prose.py, `PARTS`) is therefore tried, in order, from:

1. the regular mirrors: `apt-get download NAME=VERSION` where apt exists (prose.py runs it; it uses
   the machine's own apt sources), then the pool of deb.debian.org (`REGULAR_MIRRORS`: the main
   archive, where point releases put a version, and debian-security, where security updates
   appear first: `.../pool/updates/main/...`);
2. snapshot.debian.org, which keeps every version ever published: the machine-readable API
   `SNAPSHOT/mr/binary/<package>/<version>/binfiles?fileinfo=1` gives the file's sha1 and where it
   was first seen; the file is then fetched as `SNAPSHOT/file/<sha1>`, else as
   `SNAPSHOT/archive/<archive>/<first_seen><path>/<name>` (the API: salsa.debian.org/snapshot-team/
   snapshot, file API);
3. the mirrors in `$SCALING_DEBIAN_MIRRORS` (comma- or space-separated): a Debian mirror's root
   (`https://mirror.example/debian`: the pool layout below it; a root ending in `-security`:
   `pool/updates/...`), or a template with `{file}` (the pool's file name), `{archive}` (the name
   in the table, as apt saves it), `{package}`, `{version}`, `{source}`, `{pool}` (the pool path),
   e.g. `https://lab.example/corpus/{file}` for a flat copy of the archives.

Every downloaded file is checked against the table's sha256 before it takes the archive's name, so
any source, a mirror of unknown provenance included, is safe: a file with another hash is deleted
and the next source tried. `fetch_pinned` returns the path, or raises `Unavailable` listing every
URL tried and why each failed.

The pool path needs the source package's name (`DEBIAN_SOURCES`; checked against deb.debian.org for
all 17 Debian parts when written). No network is used by the tests: they replace `open_url`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator

from scaling.data.tokenizer import DataError

REGULAR_MIRRORS = ('https://deb.debian.org/debian', 'https://deb.debian.org/debian-security')
SNAPSHOT = 'https://snapshot.debian.org'
MIRRORS_ENV = 'SCALING_DEBIAN_MIRRORS'
TIMEOUT_S = 60.0            # per connection / read, not per file
CHUNK = 1 << 20

# binary package -> source package (the pool directory); the prose corpus's Debian parts
DEBIAN_SOURCES = {
    'dict-gcide': 'dict-gcide', 'linux-source-6.1': 'linux', 'python3.11-doc': 'python3.11',
    'perl-doc': 'perl', 'postgresql-doc-15': 'postgresql-15', 'perl-modules-5.36': 'perl',
    'manpages': 'manpages', 'manpages-dev': 'manpages', 'vim-runtime': 'vim',
    'debian-reference-en': 'debian-reference', 'erlang-doc': 'erlang',
    'qtbase5-doc-html': 'qtbase-opensource-src', 'sqlite3-doc': 'sqlite3', 'nodejs-doc': 'nodejs',
    'libssl-doc': 'openssl', 'tcl8.6-doc': 'tcl8.6', 'git-doc': 'git',
}


class Unavailable(DataError):
  """No source had the pinned file. `tried`: (url or command, what happened), in order."""

  def __init__(self, msg: str, tried: list[tuple[str, str]]):
    super().__init__(msg)
    self.tried = tried


@dataclasses.dataclass(frozen=True)
class Pin:
  """What is fetched: a Debian binary package at one version, known by its sha256."""
  package: str
  version: str
  sha256: str
  archive: str          # the file name it is saved under (apt's: the epoch's ':' as '%3a')
  arch: str = 'all'

  @property
  def source(self) -> str:
    return DEBIAN_SOURCES.get(self.package, self.package)

  @property
  def file(self) -> str:
    """The file's name in a Debian pool (and on snapshot): no epoch."""
    return f'{self.package}_{self.version.split(":", 1)[-1]}_{self.arch}.deb'

  def pool(self, security: bool = False) -> str:
    src = self.source
    prefix = src[:4] if src.startswith('lib') else src[:1]
    return f'pool/{"updates/" if security else ""}main/{prefix}/{src}/{self.file}'


def open_url(url: str, timeout: float = TIMEOUT_S):
  """A readable response for `url` (urllib; the tests replace this function)."""
  req = urllib.request.Request(url, headers={'User-Agent': 'scaling-prose-corpus'})
  return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310  (https URLs built here or configured)


def _log(msg: str) -> None:
  print(f'prose: {msg}', file=sys.stderr, flush=True)


def _why(e: BaseException) -> str:
  if isinstance(e, urllib.error.HTTPError):
    return f'HTTP {e.code}'
  if isinstance(e, urllib.error.URLError):
    return f'unreachable ({e.reason})'
  return f'{type(e).__name__}: {e}'


def configured_mirrors(env: dict | None = None) -> list[str]:
  raw = (os.environ if env is None else env).get(MIRRORS_ENV, '')
  return [m for m in re.split(r'[\s,]+', raw) if m]


def mirror_urls(pin: Pin, mirror: str) -> list[str]:
  """The URL(s) of `pin` on one mirror: a template, or a Debian mirror's root."""
  if '{' in mirror:   # the fields URL-quoted: apt's '%3a' is a '%' in a file name
    q = lambda s: urllib.parse.quote(s, safe='/+~')
    return [mirror.format(file=q(pin.file), archive=q(pin.archive), package=q(pin.package),
                          version=q(pin.version), source=q(pin.source), pool=q(pin.pool()))]
  root = mirror.rstrip('/')
  return [f'{root}/{pin.pool(security=root.endswith("-security"))}']


def snapshot_query(pin: Pin) -> str:
  q = lambda s: urllib.parse.quote(s, safe='')
  return f'{SNAPSHOT}/mr/binary/{q(pin.package)}/{q(pin.version)}/binfiles?fileinfo=1'


def snapshot_urls(pin: Pin, info: dict) -> list[str]:
  """File URLs of `pin` from the snapshot API's answer (its architecture's files only)."""
  out = []
  fileinfo = info.get('fileinfo') or {}
  for row in info.get('result') or []:
    sha1 = str(row.get('hash', ''))
    if row.get('architecture') not in (pin.arch, None) or not re.fullmatch(r'[0-9a-f]{40}', sha1):
      continue
    out.append(f'{SNAPSHOT}/file/{sha1}')
    for f in fileinfo.get(sha1) or []:
      if f.get('name') == pin.file and f.get('first_seen') and f.get('path'):
        out.append(f'{SNAPSHOT}/archive/{f.get("archive_name", "debian")}/{f["first_seen"]}'
                   f'{f["path"]}/{f["name"]}')
  return out


def download_checked(url: str, dest: str, sha256: str, opener: Callable = None) -> str:
  """Downloads `url` beside `dest`; moves it to `dest` only when its sha256 is `sha256`.

  Returns '' on success, else what went wrong (nothing is left behind)."""
  opener = opener or open_url
  tmp = f'{dest}.part-{os.getpid()}'
  h, n, t0, last = hashlib.sha256(), 0, time.time(), time.time()
  try:
    with opener(url) as resp, open(tmp, 'wb') as f:
      total = int(resp.headers.get('Content-Length') or 0) if getattr(resp, 'headers', None) else 0
      while True:
        chunk = resp.read(CHUNK)
        if not chunk:
          break
        f.write(chunk)
        h.update(chunk)
        n += len(chunk)
        if time.time() - last >= 15:
          last = time.time()
          of = f' of {total / 1e6:.1f}' if total else ''
          _log(f'  {n / 1e6:.1f}{of} MB ({n / 1e6 / max(last - t0, 1e-9):.1f} MB/s)')
  except Exception as e:  # pylint: disable=broad-except  (any failure: try the next source)
    _remove(tmp)
    return _why(e)
  if h.hexdigest() != sha256:
    _remove(tmp)
    return f'refused: sha256 {h.hexdigest()} is not the pinned {sha256} ({n:,} bytes)'
  os.replace(tmp, dest)
  return ''


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except OSError:
    pass


def candidate_urls(pin: Pin, tried: list, opener: Callable, env: dict | None = None) -> Iterator[str]:
  """The URLs to try, in order: regular mirrors, snapshot (after one API query), configured mirrors.

  A failed snapshot query is appended to `tried`."""
  for m in REGULAR_MIRRORS:
    yield from mirror_urls(pin, m)
  query = snapshot_query(pin)
  try:
    with opener(query) as resp:
      info = json.loads(resp.read().decode('utf-8'))
    urls = snapshot_urls(pin, info)
    if not urls:
      tried.append((query, f'snapshot.debian.org lists no {pin.arch} file of {pin.package} {pin.version}'))
    yield from urls
  except Exception as e:  # pylint: disable=broad-except
    tried.append((query, _why(e)))
  for m in configured_mirrors(env):
    yield from mirror_urls(pin, m)


def fetch_pinned(pin: Pin, dest: str, *, tried: list | None = None, opener: Callable | None = None,
                 env: dict | None = None) -> str:
  """`dest` holding the pinned file, from the first source that has it (module docstring).

  `tried` (pass the attempts made before, e.g. apt's) gains every attempt; raises Unavailable."""
  opener = opener or open_url
  tried = [] if tried is None else tried
  os.makedirs(os.path.dirname(dest) or '.', exist_ok=True)
  for url in candidate_urls(pin, tried, opener, env):
    t0 = time.time()
    _log(f'  trying {url}')
    why = download_checked(url, dest, pin.sha256, opener)
    if not why:
      _log(f'  got {pin.file} ({os.path.getsize(dest) / 1e6:.1f} MB, sha256 checked) in '
           f'{time.time() - t0:.0f} s from {url}')
      return dest
    tried.append((url, why))
  raise Unavailable(f'{pin.package}={pin.version} (sha256 {pin.sha256}) is not to be had from any '
                    'source', tried)


def unavailable_message(parts: list[tuple[str, str, list]], suggestion: str, roots: dict) -> str:
  """The message when pinned parts cannot be fetched: each part, every URL tried, the choice."""
  lines = ['the pinned archive of prose part(s) ' + ', '.join(repr(p) for p, _, _ in parts) +
           ' could not be fetched from any source:']
  for name, spec, tried in parts:
    lines.append(f'  {name} ({spec}):')
    lines += [f'    {url}: {why}' for url, why in tried]
  lines += ['Choose one:', (
      f'  - proceed without it: --config.data.corpus={suggestion!r} (or `python -m scaling.data.prose '
      f'{suggestion.partition(":")[2]}`). That is another corpus: its spec, data directory and content '
      'digest differ from the full corpus\'s, so runs on the two never mix, and its figures are not '
      'those of docs/corpus.md;' if suggestion else
      '  - (proceeding without it leaves no part of this selection: choose other parts);'),
      f'  - or stop, and add a source: a mirror that still has the file ({MIRRORS_ENV}=URL, a Debian '
      'mirror root or a template with {file}), or copy the archive (any copy: its sha256 is checked) '
      'into ' + ', '.join(f'{roots[p]}/' for p, _, _ in parts) + '.']
  return '\n'.join(lines)
