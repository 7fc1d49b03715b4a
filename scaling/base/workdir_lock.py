"""One trainer per workdir: an exclusive lock held by the main process for the whole run.

The lock is `fcntl.flock` on `<workdir>/train.lock`, which also records who holds it
(host, pid, start time) for the message a second trainer prints. The kernel releases
an flock when its holder dies (kill -9 included) on a local filesystem, so:

* lock busy: another trainer holds it -> WorkdirBusy naming its host and pid; except
  when the record names a dead process on this host (the lock outlived it, e.g. through a
  descriptor inherited by an orphaned child): that lock is stale and is taken over;
* lock free but a record is there: its holder died without cleaning up (on this host
  or another, where its pid cannot be checked): the lock is taken over with a message.

On release the file is removed (after unlocking a waiter re-checks that its file is
still the one on disk), and a workdir the lock itself created is removed if still empty.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import time

from scaling.base.files import lock_fd

LOCK_FILE = 'train.lock'


class WorkdirBusy(RuntimeError):
  pass


def pid_alive(pid: int) -> bool:
  """Whether a process of this host with that pid exists (also used by scaling/launch/rundir.py)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _read_record(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  raw = os.read(fd, 65536)
  try:
    rec = json.loads(raw) if raw.strip() else {}
  except ValueError:
    rec = {'unreadable': raw[:80].decode(errors='replace')}
  return rec if isinstance(rec, dict) else {}


def _holder(rec: dict) -> str:
  since = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(rec['started'])) if 'started' in rec else '?'
  return f'host {rec.get("host", "?")}, pid {rec.get("pid", "?")}, since {since}'


class WorkdirLock:
  """`with WorkdirLock(workdir, log):` holds the workdir's lock (raises WorkdirBusy if another run does)."""

  def __init__(self, workdir, log=print):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / LOCK_FILE
    self.log = log
    self.fd = None
    self._created_dir = False

  def acquire(self) -> 'WorkdirLock':
    self._created_dir = not self.workdir.exists()
    self.workdir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        held = lock_fd(fd, timeout=0)
      except BaseException:
        os.close(fd)
        raise
      if not held:
        rec = _read_record(fd)
        os.close(fd)
        if rec.get('host') == host and isinstance(rec.get('pid'), int) and not pid_alive(rec['pid']):
          self.log(f'{self.workdir}: its lock is held although its trainer ({_holder(rec)}) is gone: '
                   f'a stale lock, taken over')
          self.path.unlink(missing_ok=True)   # the stale holder keeps the old file; we lock a new one
          continue
        self._cleanup_dir()
        raise WorkdirBusy(f'{self.workdir} is in use by another `scaling train` ({_holder(rec)}): one trainer '
                          f'per workdir. Wait for it to finish, stop it (kill {rec.get("pid", "<pid>")} on '
                          f'{rec.get("host", "its host")}), or use another --workdir') from None
      try:
        same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same = False
      if not same:   # the holder released (and removed) the file between our open and lock: retry
        os.close(fd)
        continue
      break
    rec = _read_record(fd)
    if rec:
      self.log(f'{self.workdir}: took over the lock left by a trainer that is gone ({_holder(rec)})')
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(dict(host=host, pid=os.getpid(), started=time.time())).encode())
    os.fsync(fd)
    self.fd = fd
    return self

  def release(self) -> None:
    if self.fd is None:
      return
    try:
      self.path.unlink(missing_ok=True)   # while still locked: a waiter then sees a removed file and retries
    finally:
      os.close(self.fd)   # releases the flock
      self.fd = None
    self._cleanup_dir()

  def _cleanup_dir(self) -> None:
    if self._created_dir:
      try:
        self.workdir.rmdir()   # only if empty: the lock created it and nothing else was written
      except OSError:
        pass

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
