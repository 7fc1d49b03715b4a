"""Reading the prose corpus's archives (scaling/data/prose.py) without unpacking them to disk.

An sdist is a tarball with a `NAME-VERSION/` top folder; a .deb an ar archive whose data.tar.* is
streamed (the kernel source's nested tarball too), so neither dpkg nor root is needed. A part (any
object with name, registry, spec, include, exclude, inner) selects the members that make documents.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator

from scaling.data.tokenizer import DataError


class _Slice(io.RawIOBase):
  """A read-only window [start, start+size) of a binary file (an ar member)."""

  def __init__(self, f, start: int, size: int):
    self.f, self.start, self.size, self.pos = f, start, size, 0

  def readable(self) -> bool:
    return True

  def readinto(self, b) -> int:
    n = min(len(b), self.size - self.pos)
    if n <= 0:
      return 0
    self.f.seek(self.start + self.pos)
    data = self.f.read(n)
    b[:len(data)] = data
    self.pos += len(data)
    return len(data)


def deb_data_member(f) -> tuple[str, int, int]:
  """(name, offset, size) of the data.tar.* member of an open .deb (an ar archive)."""
  if f.read(8) != b'!<arch>\n':
    raise DataError('not a .deb (ar) archive')
  while True:
    header = f.read(60)
    if len(header) < 60:
      raise DataError('the .deb holds no data.tar member')
    name = header[:16].decode('ascii', 'replace').strip().rstrip('/')
    size = int(header[48:58].decode('ascii').strip())
    if name.startswith('data.tar'):
      return name, f.tell(), size
    f.seek(size + (size & 1), os.SEEK_CUR)


def _tar_stream_mode(name: str) -> str:
  for suffix, mode in (('.xz', 'r|xz'), ('.gz', 'r|gz'), ('.bz2', 'r|bz2'), ('.tar', 'r|')):
    if name.endswith(suffix):
      return mode
  raise DataError(f'{name}: unsupported compression (this Python reads .tar, .gz, .bz2, .xz); '
                  'unpack it with `dpkg-deb --fsys-tarfile` and re-pack it as .tar.xz')


def _matches(part, path: str) -> str | None:
  m = re.match(part.include, path)
  if not m:
    return None
  name = m.group(1)
  if part.exclude and re.match(part.exclude, name):
    return None
  return name


def _tar_members(tar: tarfile.TarFile, part, strip_top: bool) -> Iterator[tuple[str, bytes]]:
  for member in tar:
    if not member.isfile():
      continue
    if strip_top:
      path = member.name.split('/', 1)[1] if '/' in member.name else ''
    else:
      path = member.name[2:] if member.name.startswith('./') else member.name.lstrip('/')
    name = _matches(part, path)
    if name is not None:
      yield name, tar.extractfile(member).read()


def archive_members(part, path: str) -> Iterator[tuple[str, bytes]]:
  """(document name within the part, bytes) for each selected member, in archive order."""
  try:
    if part.registry == 'pypi':
      with tarfile.open(path, 'r:*') as tar:
        yield from _tar_members(tar, part, strip_top=True)
      return
    with open(path, 'rb') as f:
      name, offset, size = deb_data_member(f)
      with tarfile.open(fileobj=_Slice(f, offset, size), mode=_tar_stream_mode(name)) as data:
        if not part.inner:
          yield from _tar_members(data, part, strip_top=False)
          return
        for member in data:
          if member.isfile() and member.name.lstrip('.').lstrip('/') == part.inner:
            with tarfile.open(fileobj=data.extractfile(member),
                              mode=_tar_stream_mode(part.inner)) as inner:
              yield from _tar_members(inner, part, strip_top=False)
            return
        raise DataError(f'{path} has no {part.inner}')
  except (tarfile.TarError, OSError, EOFError, ValueError) as e:
    raise DataError(f'prose part {part.name!r}: {path} is not a readable {part.spec} archive '
                    f'({e}): delete it and run again') from e
