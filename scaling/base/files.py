"""Files written whole or not at all, file digests, and the file lock: one implementation of each (stdlib only).

Atomic writes. `atomic_write_bytes/text/json(path, ...)` and `atomic_open(path)` (a file object, for writers that
stream) write a new file beside `path` and rename it onto `path` (os.replace), so a reader sees the old content or
the new, never a part. The new file's name is unique (`.<name>.<12 hex digits>.tmp`, made with O_EXCL), so two
writers of one path never share it: the last rename wins and each file it installs is whole. On any error
(KeyboardInterrupt included) the new file is deleted and `path` is left as it was; the error surfaces unchanged.
The file gets the permissions a plain `open(path, 'w')` gives (0666 less the umask). Text is UTF-8, newlines as
given. `fsync=True` also flushes the data to disk before the rename and the directory after it (off by default:
no caller asked for it before this module, and a rename alone already keeps a half-written file from being seen).

Digests. `sha256_bytes(data)` and `sha256_file(path)` (read in 1 MiB chunks): hex digests.

Lock. `lock_fd(fd)` takes an `fcntl.flock` on an open file (exclusive, or shared), blocking, with one try, or with
retries until a timeout; `unlock_fd(fd)` releases it; `locked_file(path)` opens (creating) a lock file and holds
the lock for a `with` block. The kernel drops an flock when its last descriptor closes, so a killed holder never
leaves it held (on a local filesystem).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

try:
  import fcntl
except ImportError:   # not POSIX: no flock (CAN_LOCK says so)
  fcntl = None

CAN_LOCK = fcntl is not None
CHUNK = 1 << 20
TEMP_SUFFIX = '.tmp'
# the name of a temporary file of this module: '.<target name>.<12 hex digits>.tmp'
TEMP_NAME = re.compile(r'^\..+\.[0-9a-f]{12}\.tmp$')


# ----------------------------------------------------------------------------- atomic writes
def is_temp_name(name: str) -> bool:
  """Whether a file name (no directory) is one of this module's temporary files."""
  return bool(TEMP_NAME.match(name))


def open_temp_beside(path: str | os.PathLike, mode: str = 'wb') -> tuple[IO, str]:
  """(file object, its path): a new file with a unique name in `path`'s directory, opened for writing with
  `mode` ('wb' or 'w'; text is UTF-8). For a writer that renames it onto `path` itself (os.replace) when done,
  and deletes it on failure; `atomic_open` does both."""
  if mode not in ('wb', 'w'):
    raise ValueError(f'open_temp_beside: mode {mode!r} is not "wb" or "w"')
  path = os.fspath(path)
  directory, name = os.path.split(path)
  while True:
    tmp = os.path.join(directory, f'.{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}')
    try:
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # 0666 less the umask, as open() makes
      break
    except FileExistsError:
      continue
  try:
    return (os.fdopen(fd, 'wb') if mode == 'wb' else os.fdopen(fd, 'w', encoding='utf-8', newline='')), tmp
  except BaseException:
    os.close(fd)
    _remove(tmp)
    raise


def _remove(path: str) -> None:
  try:
    os.unlink(path)
  except OSError:
    pass


def _fsync_dir(directory: str) -> None:
  try:
    fd = os.open(directory or '.', os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:   # some filesystems cannot sync a directory
    pass
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'wb', *, fsync: bool = False) -> Iterator[IO]:
  """`with atomic_open(path) as f: f.write(...)`: `path` gets what was written when the block ends without an
  error, and is left as it was (the temporary file deleted) when it raises."""
  path = os.fspath(path)
  f, tmp = open_temp_beside(path, mode)
  try:
    with f:
      yield f
      if fsync:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    _remove(tmp)
    raise
  if fsync:
    _fsync_dir(os.path.dirname(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
  """Replaces `path` with `data` atomically (see the module docstring)."""
  with atomic_open(path, 'wb', fsync=fsync) as f:
    f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
  """Replaces `path` with `text` (UTF-8, newlines untranslated) atomically."""
  atomic_write_bytes(path, text.encode('utf-8'), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = False, end: str = '',
                      **dumps_kwargs) -> None:
  """Replaces `path` with `json.dumps(obj, **dumps_kwargs) + end` atomically. The object is serialised before
  anything is written, so one that cannot be leaves no trace."""
  atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + end, fsync=fsync)


# ----------------------------------------------------------------------------- digests
def sha256_bytes(data: bytes) -> str:
  """The hex sha256 of `data`."""
  return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
  """The hex sha256 of a file's bytes, read `chunk` bytes at a time."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(chunk), b''):
      h.update(block)
  return h.hexdigest()


# ----------------------------------------------------------------------------- the lock
_HELD = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def lock_fd(fd, *, shared: bool = False, timeout: float | None = None, poll: float = 0.05,
            on_wait: Callable[[], Any] | None = None) -> bool:
  """Takes an flock on `fd` (a descriptor or a file object); True once held.

  timeout None: waits as long as it takes (`on_wait()`, when given, is called once first if another process holds
  it); 0: one try, False if held elsewhere; > 0: retries every `poll` s, False if still held after `timeout` s.
  Errors other than "held by another" raise (as OSError).
  """
  if fcntl is None:
    raise OSError(errno.ENOSYS, 'fcntl.flock is not available on this platform')
  op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
  end = time.monotonic() + (timeout or 0.0)
  while True:
    try:
      fcntl.flock(fd, op | fcntl.LOCK_NB)
      return True
    except OSError as e:
      if e.errno not in _HELD:
        raise
    if timeout is None:
      if on_wait is not None:
        on_wait()
      fcntl.flock(fd, op)
      return True
    if time.monotonic() >= end:
      return False
    time.sleep(poll)


def unlock_fd(fd) -> None:
  """Releases the flock `lock_fd` took on `fd` (the descriptor stays open)."""
  fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked_file(path: str | os.PathLike, *, shared: bool = False, timeout: float | None = None,
                poll: float = 0.05, on_wait: Callable[[], Any] | None = None,
                mode: int = 0o644) -> Iterator[int | None]:
  """`with locked_file(path) as fd:` holds an flock on `path` (created with `mode` less the umask if missing)
  for the block; `fd` is None when `timeout` passed with the lock held elsewhere (see `lock_fd`). The lock is
  released and the file closed (not removed) at the end."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
  try:
    held = lock_fd(fd, shared=shared, timeout=timeout, poll=poll, on_wait=on_wait)
  except BaseException:
    os.close(fd)
    raise
  try:
    yield fd if held else None
  finally:
    try:
      if held:
        unlock_fd(fd)
    finally:
      os.close(fd)
