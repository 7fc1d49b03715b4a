"""A pinned Debian part that left the regular mirrors is still fetched (scaling/data/fetch.py): the sources in
order (apt, deb.debian.org, snapshot.debian.org, $SCALING_DEBIAN_MIRRORS), every file sha256-checked, one
message naming every URL tried, and `prose:-PART` as a different corpus. No network: a fake opener, or a
local HTTP server standing in for the mirrors."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import tarfile
import threading
import urllib.error

import pytest

from scaling.data import fetch, prepare, prose
from scaling.data.tokenizer import DataError

LONG = 'The quick brown fox jumps over the lazy dog, and keeps running past the fence. ' * 6


def _tar(files: dict) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w:xz') as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buf.getvalue()


def _deb(files: dict) -> bytes:
  out = [b'!<arch>\n']
  for name, data in {'debian-binary': b'2.0\n', 'data.tar.xz': _tar(files)}.items():
    out.append(f'{name + "/":<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n'.encode() + data
               + (b'\n' if len(data) % 2 else b''))
  return b''.join(out)


DEB = _deb({f'./usr/share/doc/x/{n}.txt': f'{n}\n\n{LONG}\n'.encode() for n in ('a', 'b')})
SHA = hashlib.sha256(DEB).hexdigest()
SHA1 = hashlib.sha1(DEB).hexdigest()


def _part(name='xdoc', data=DEB):
  """A Debian part with an epoch, like vim's: apt saves `2%3a1.0-1`, the pool has `1.0-1`."""
  return prose.Part(name, 'debian', f'{name}-pkg', '2:1.0-1', f'{name}-pkg_2%3a1.0-1_all.deb',
                    hashlib.sha256(data).hexdigest(), 'MIT', 'rst', r'^usr/share/doc/x/(.+)\.txt$')


def _pypi_part(tmp_path):
  sdist = io.BytesIO()
  with tarfile.open(fileobj=sdist, mode='w:gz') as tar:
    data = f'{LONG}\n'.encode()
    info = tarfile.TarInfo('p-1/docs/c.txt')
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
  blob = sdist.getvalue()
  part = prose.Part('pdoc', 'pypi', 'p', '1', 'p-1.tar.gz', hashlib.sha256(blob).hexdigest(), 'MIT', 'rst',
                    r'^docs/(.+)\.txt$')
  root = prose.part_root(part, str(tmp_path))
  os.makedirs(root)
  with open(os.path.join(root, part.archive), 'wb') as f:
    f.write(blob)
  return part


class FakeWeb:
  """url -> bytes, or an HTTP status; records the URLs asked for, in order."""

  def __init__(self, pages: dict):
    self.pages, self.asked = pages, []

  def __call__(self, url, timeout=None):
    self.asked.append(url)
    page = self.pages.get(url, 404)
    if isinstance(page, int):
      raise urllib.error.HTTPError(url, page, 'nope', {}, None)
    if isinstance(page, Exception):
      raise page
    resp = io.BytesIO(page)
    resp.headers = {'Content-Length': str(len(page))}
    return resp


@pytest.fixture
def no_apt(monkeypatch):
  monkeypatch.setattr(prose.shutil, 'which', lambda name: None)
  monkeypatch.delenv(fetch.MIRRORS_ENV, raising=False)
  monkeypatch.delenv('SCALING_PROSE_UNPINNED', raising=False)


def _snapshot_answer(pin: fetch.Pin, sha1=SHA1) -> bytes:
  return json.dumps({'binary': pin.package, 'binary_version': pin.version,
                     'result': [{'architecture': 'all', 'hash': sha1}],
                     'fileinfo': {sha1: [{'archive_name': 'debian-security', 'first_seen': '20250101T000000Z',
                                          'path': f'/pool/updates/main/x/{pin.source}', 'name': pin.file,
                                          'size': len(DEB)}]}}).encode()


def test_pool_names_follow_debian_layout():
  pin = fetch.Pin('vim-runtime', '2:9.0.1378-2+deb12u2', 'f' * 64, 'vim-runtime_2%3a9.0.1378-2+deb12u2_all.deb')
  assert pin.file == 'vim-runtime_9.0.1378-2+deb12u2_all.deb'
  assert pin.pool() == 'pool/main/v/vim/vim-runtime_9.0.1378-2+deb12u2_all.deb'
  ssl = fetch.Pin('libssl-doc', '3.0.22-1~deb12u2', 'f' * 64, 'x')
  assert ssl.pool(security=True) == 'pool/updates/main/o/openssl/libssl-doc_3.0.22-1~deb12u2_all.deb'
  assert fetch.Pin('libfoo-doc', '1', 'f' * 64, 'x').pool() == 'pool/main/libf/libfoo-doc/libfoo-doc_1_all.deb'
  assert fetch.snapshot_query(pin) == ('https://snapshot.debian.org/mr/binary/vim-runtime/2%3A9.0.1378-2%2Bdeb12u2'
                                       '/binfiles?fileinfo=1')
  assert fetch.mirror_urls(pin, 'https://m.example/debian/') == [
      'https://m.example/debian/pool/main/v/vim/vim-runtime_9.0.1378-2+deb12u2_all.deb']
  assert fetch.mirror_urls(pin, 'https://m.example/debian-security') == [
      'https://m.example/debian-security/pool/updates/main/v/vim/vim-runtime_9.0.1378-2+deb12u2_all.deb']
  assert fetch.mirror_urls(pin, 'https://lab.example/c/{archive}') == [
      'https://lab.example/c/vim-runtime_2%253a9.0.1378-2+deb12u2_all.deb']


def test_every_debian_part_has_its_pool_file():
  """The pool file name is the archive apt saves, less the URL-quoted epoch; every part's source is known."""
  for p in prose.PARTS:
    if p.registry != 'debian':
      continue
    assert p.package in fetch.DEBIAN_SOURCES, p.name
    pin = fetch.Pin(p.package, p.version, p.sha256, p.archive)
    epoch = p.version.split(':')[0] + '%3a' if ':' in p.version else ''
    assert pin.file == p.archive.replace('_' + epoch, '_', 1), p.name


def test_fallback_order_and_sha_mismatch_refused(tmp_path, no_apt, monkeypatch):
  part = _part()
  pin = fetch.Pin(part.package, part.version, part.sha256, part.archive)
  archive_url = f'https://snapshot.debian.org/archive/debian-security/20250101T000000Z/pool/updates/main/x/' \
                f'{pin.source}/{pin.file}'
  web = FakeWeb({fetch.snapshot_query(pin): _snapshot_answer(pin),
                 f'https://snapshot.debian.org/file/{SHA1}': DEB[:-1] + b'X',   # flipped: refused
                 archive_url: DEB})
  monkeypatch.setattr(fetch, 'open_url', web)
  monkeypatch.setenv(fetch.MIRRORS_ENV, 'https://never.example/debian')
  [src] = prose.prose_sources(str(tmp_path), table=[part])
  assert web.asked == [
      f'https://deb.debian.org/debian/pool/main/x/{pin.source}/{pin.file}',
      f'https://deb.debian.org/debian-security/pool/updates/main/x/{pin.source}/{pin.file}',
      fetch.snapshot_query(pin), f'https://snapshot.debian.org/file/{SHA1}', archive_url]   # the mirror: not needed
  assert src.names() == ['xdoc/a', 'xdoc/b']
  root = prose.part_root(part, str(tmp_path))
  assert sorted(os.listdir(root)) == ['.lock', 'docs', part.archive]   # no partial file left
  with open(os.path.join(root, part.archive), 'rb') as f:
    assert f.read() == DEB
  assert prose.read_manifest(part, str(tmp_path))['pinned']


def test_apt_first_then_http_when_apt_gives_another_file(tmp_path, monkeypatch):
  part = _part()
  calls = []

  def fake_apt(cmd, cwd=None, **kw):
    calls.append(cmd)
    with open(os.path.join(cwd, part.archive), 'wb') as f:   # a newer build under the old name: wrong hash
      f.write(DEB + b'\n')
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(prose.shutil, 'which', lambda name: '/usr/bin/' + name)
  monkeypatch.setattr(prose.subprocess, 'run', fake_apt)
  pin = fetch.Pin(part.package, part.version, part.sha256, part.archive)
  web = FakeWeb({f'https://deb.debian.org/debian/pool/main/x/{pin.source}/{pin.file}': DEB})
  monkeypatch.setattr(fetch, 'open_url', web)
  prose.fetch_prose(str(tmp_path), table=[part])
  assert calls == [['apt-get', 'download', 'xdoc-pkg=2:1.0-1']] and len(web.asked) == 1

  # apt has the pinned file: nothing else is asked
  other = _part('ydoc')
  monkeypatch.setattr(prose.subprocess, 'run', lambda cmd, cwd=None, **kw: (
      open(os.path.join(cwd, other.archive), 'wb').write(DEB), subprocess.CompletedProcess(cmd, 0))[1])
  web.asked.clear()
  prose.fetch_prose(str(tmp_path), table=[other])
  assert web.asked == []


def test_configured_mirror_over_real_http(tmp_path, no_apt, monkeypatch):
  """Through urllib and a local server: the regular mirrors 404, snapshot is down, the lab's flat mirror has it."""
  part = _part()
  served = tmp_path / 'www'
  (served / 'flat').mkdir(parents=True)
  (served / 'flat' / part.archive).write_bytes(DEB)

  class Quiet(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
      super().__init__(*a, directory=str(served), **k)

    def log_message(self, *a):
      pass

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Quiet)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  base = f'http://127.0.0.1:{server.server_address[1]}'
  try:
    monkeypatch.setattr(fetch, 'REGULAR_MIRRORS', (f'{base}/debian', f'{base}/debian-security'))
    monkeypatch.setattr(fetch, 'SNAPSHOT', 'http://127.0.0.1:1')   # nothing listens: unreachable
    monkeypatch.setenv(fetch.MIRRORS_ENV, f'{base}/nothing-here/{{file}}, {base}/flat/{{archive}}')
    [src] = prose.prose_sources(str(tmp_path / 'cache'), table=[part])
  finally:
    server.shutdown()
  assert [d.name for d in src] == ['xdoc/a', 'xdoc/b']


def test_unavailable_names_every_url_and_the_choice(tmp_path, no_apt, monkeypatch):
  gone, kept = _part(), _pypi_part(tmp_path)
  pin = fetch.Pin(gone.package, gone.version, gone.sha256, gone.archive)
  web = FakeWeb({fetch.snapshot_query(pin): urllib.error.URLError('Name or service not known'),
                 'https://lab.example/xdoc-pkg_1.0-1_all.deb': b'not the file'})
  monkeypatch.setattr(fetch, 'open_url', web)
  monkeypatch.setenv(fetch.MIRRORS_ENV, 'https://lab.example/{file}')
  with pytest.raises(DataError) as e:
    prose.fetch_prose(str(tmp_path), table=[gone, kept])
  msg = str(e.value)
  assert "'xdoc'" in msg and 'xdoc-pkg=2:1.0-1' in msg
  assert 'apt-get download xdoc-pkg=2:1.0-1: no apt-get' in msg
  for url in web.asked:            # every URL tried is named, with why it failed
    assert url in msg
  assert len(web.asked) == 4
  assert 'HTTP 404' in msg and 'unreachable' in msg and 'refused: sha256' in msg
  assert "--config.data.corpus='prose:-xdoc'" in msg and fetch.MIRRORS_ENV in msg
  assert prose.read_manifest(kept, str(tmp_path)) is not None   # the other part was still fetched
  assert not os.path.exists(os.path.join(prose.part_root(gone, str(tmp_path)), gone.archive))
  # the opt-in: the same table without the part, no download tried
  web.asked.clear()
  srcs = prose.prose_sources(str(tmp_path), parts='-xdoc', table=[gone, kept])
  assert [s.names() for s in srcs] == [['pdoc/c']] and web.asked == []


def test_suggestion_keeps_the_rest_of_the_selection():
  table = [_part('a'), _part('b'), prose.Part('c', 'pypi', 'c', '1', 'c.tar.gz', '0' * 64, 'MIT', 'rst', '^(x)$')]
  assert prose._without(None, ['a'], table) == 'prose:-a'
  assert prose._without('debian', ['b'], table) == 'prose:debian,-b'
  assert prose._without('a,c', ['a'], table) == 'prose:c'
  assert prose._without('a', ['a'], table) is None         # nothing would be left: stop is the only choice
  assert [p.name for p in prose.select_parts('-a', table)] == ['b', 'c']
  assert [p.name for p in prose.select_parts('debian,-b', table)] == ['a']
  assert [p.name for p in prose.select_parts('all,-debian', table)] == ['c']
  with pytest.raises(DataError, match='unknown part'):
    prose.select_parts('-nope', table)


def test_leaving_a_part_out_is_another_corpus(tmp_path, no_apt, monkeypatch):
  """Its content digest (what prepare records and compares) and its data directory differ from the full corpus's."""
  monkeypatch.setenv('SCALING_CACHE', str(tmp_path))
  a, b = _part('adoc'), _pypi_part(tmp_path)
  root = prose.part_root(a, str(tmp_path))
  os.makedirs(root)
  with open(os.path.join(root, a.archive), 'wb') as f:
    f.write(DEB)
  digest = {}
  for spec in ('prose', 'prose:-pdoc'):
    settings = prepare._settings({'corpus': spec})
    sources = prose.prose_sources(str(tmp_path), parts=spec.partition(':')[2] or None, table=[a, b])
    digest[spec] = prepare._content_digest(settings, sources, lambda: None)
  assert digest['prose'] != digest['prose:-pdoc']
  assert prepare.default_data_dir({'corpus': 'prose'}) != prepare.default_data_dir({'corpus': 'prose:-python'})
