"""scaling/base/files.py: atomic writes (whole or not at all, unique temporary names), sha256, the file lock."""

import hashlib
import json
import os
import pathlib
import stat
import subprocess
import sys
import threading
import time

import pytest

from scaling.base import files

REPO = pathlib.Path(__file__).resolve().parent.parent


def leftovers(directory) -> list[str]:
  return sorted(p.name for p in pathlib.Path(directory).iterdir() if p.name.endswith(files.TEMP_SUFFIX))


def run_py(code: str, *args, **kw) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, '-c', code, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


# ----------------------------------------------------------------------------- atomic writes
def test_write_bytes_text_json(tmp_path):
  p = tmp_path / 'a.bin'
  files.atomic_write_bytes(p, b'\x00\x01')
  assert p.read_bytes() == b'\x00\x01'
  files.atomic_write_text(str(p), 'é\r\nx\n')   # str paths too; UTF-8, newlines untranslated
  assert p.read_bytes() == 'é\r\nx\n'.encode()
  files.atomic_write_json(p, {'b': 1, 'a': [1.5]}, indent=1, sort_keys=True, end='\n')
  assert p.read_text() == json.dumps({'a': [1.5], 'b': 1}, indent=1, sort_keys=True) + '\n'
  files.atomic_write_text(p, 'y', fsync=True)
  assert p.read_text() == 'y'
  assert leftovers(tmp_path) == []


def test_permissions_as_a_plain_open(tmp_path):
  files.atomic_write_text(tmp_path / 'new', 'x')
  with open(tmp_path / 'plain', 'w') as f:
    f.write('x')
  assert stat.S_IMODE((tmp_path / 'new').stat().st_mode) == stat.S_IMODE((tmp_path / 'plain').stat().st_mode)


def test_unserialisable_object_leaves_the_old_file(tmp_path):
  p = tmp_path / 'run.json'
  p.write_text('old')
  with pytest.raises(TypeError):
    files.atomic_write_json(p, {'ok': 1, 'bad': object()})
  assert p.read_text() == 'old'
  assert leftovers(tmp_path) == []


def test_error_midway_through_a_stream_leaves_the_old_file(tmp_path):
  p = tmp_path / 'data.bin'
  p.write_bytes(b'old')
  with pytest.raises(KeyboardInterrupt):
    with files.atomic_open(p) as f:
      f.write(b'new, half of it')
      raise KeyboardInterrupt
  assert p.read_bytes() == b'old'
  assert leftovers(tmp_path) == []


def test_failed_rename_leaves_the_old_file(tmp_path, monkeypatch):
  p = tmp_path / 'metrics.jsonl'
  p.write_text('old\n')

  def refuse(src, dst):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(files.os, 'replace', refuse)
  with pytest.raises(OSError, match='No space left'):
    files.atomic_write_text(p, 'new\n')
  monkeypatch.undo()
  assert p.read_text() == 'old\n'
  assert leftovers(tmp_path) == []


def test_missing_directory_raises_as_open_does(tmp_path):
  with pytest.raises(FileNotFoundError):
    files.atomic_write_text(tmp_path / 'nope' / 'x.json', '{}')


def test_temp_names_are_unique_and_never_reused(tmp_path, monkeypatch):
  """A temporary name that exists (another writer's) is skipped, never written over."""
  other = tmp_path / '.x.json.aaaaaaaaaaaa.tmp'
  other.write_text('another writer, mid-write')
  names = iter(['aaaaaaaaaaaa', 'aaaaaaaaaaaa', 'bbbbbbbbbbbb'])
  monkeypatch.setattr(files.secrets, 'token_hex', lambda n: next(names))
  f, tmp = files.open_temp_beside(tmp_path / 'x.json')
  f.close()
  assert os.path.basename(tmp) == '.x.json.bbbbbbbbbbbb.tmp' and files.is_temp_name(os.path.basename(tmp))
  assert other.read_text() == 'another writer, mid-write'
  os.unlink(tmp)


WRITER = '''
import sys
from scaling.base import files
path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
  files.atomic_write_text(path, f'{who}:{i}:' + who * (20000 + 997 * (i % 7)))
'''


def _whole(text: str) -> bool:
  who, i, body = text.split(':', 2)
  return body == who * (20000 + 997 * (int(i) % 7))


def test_two_processes_never_tear_the_file_nor_collide(tmp_path):
  """2 processes x 200 writes of distinct payloads while this one reads: every read is one whole payload,
  and no temporary file is left."""
  p = tmp_path / 'shared.txt'
  files.atomic_write_text(p, 'x:0:' + 'x' * 20000)
  procs = [run_py(WRITER, p, who, 200) for who in 'ab']
  reads = 0
  while any(q.poll() is None for q in procs):
    assert _whole(p.read_text()), 'a torn file'
    reads += 1
  for q in procs:
    _, err = q.communicate()
    assert q.returncode == 0, err
  assert _whole(p.read_text()) and p.read_text().split(':')[1] == '199'
  assert reads > 0
  assert sorted(x.name for x in tmp_path.iterdir()) == ['shared.txt']


def test_two_threads_never_tear_the_file_nor_collide(tmp_path):
  p = tmp_path / 'shared.txt'
  errors = []

  def write(who):
    try:
      for i in range(200):
        files.atomic_write_text(p, f'{who}:{i}:' + who * (20000 + 997 * (i % 7)))
    except Exception as e:  # noqa: BLE001
      errors.append(e)

  threads = [threading.Thread(target=write, args=(who,)) for who in 'cd']
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert _whole(p.read_text())
  assert sorted(x.name for x in tmp_path.iterdir()) == ['shared.txt']


# ----------------------------------------------------------------------------- sha256
def test_sha256_bytes_and_file(tmp_path):
  data = os.urandom(2 * files.CHUNK + 12345)   # larger than the chunk: several reads
  p = tmp_path / 'blob'
  p.write_bytes(data)
  want = hashlib.sha256(data).hexdigest()
  assert files.sha256_bytes(data) == want
  assert files.sha256_file(p) == want == files.sha256_file(str(p), chunk=1000)
  (tmp_path / 'empty').write_bytes(b'')
  assert files.sha256_file(tmp_path / 'empty') == hashlib.sha256(b'').hexdigest()


# ----------------------------------------------------------------------------- the lock
TRY_LOCK = '''
import sys, time
from scaling.base import files
t0 = time.monotonic()
with files.locked_file(sys.argv[1], timeout=float(sys.argv[2])) as fd:
  print(fd is not None, round(time.monotonic() - t0, 2))
'''

WAIT_LOCK = '''
import sys
from scaling.base import files
with files.locked_file(sys.argv[1], on_wait=lambda: print('waiting', flush=True)) as fd:
  print('held', fd is not None, flush=True)
'''


def test_lock_excludes_a_second_process(tmp_path):
  path = tmp_path / '.lock'

  def attempt(timeout):
    out, err = run_py(TRY_LOCK, path, timeout).communicate(timeout=30)
    assert not err, err
    held, waited = out.split()
    return held == 'True', float(waited)

  with files.locked_file(path) as fd:
    assert fd is not None
    assert attempt(0) == (False, pytest.approx(0, abs=0.5))   # non-blocking: refused at once
    held, waited = attempt(0.3)                                # with a timeout: retried, then refused
    assert not held and waited >= 0.3
  assert attempt(0)[0]                                         # released: granted
  assert path.exists()                                         # the lock file stays (only the lock goes)


def test_blocking_lock_waits_for_the_holder(tmp_path):
  path = tmp_path / '.lock'
  with files.locked_file(path):
    waiter = run_py(WAIT_LOCK, path)
    assert waiter.stdout.readline().strip() == 'waiting'   # on_wait: told once it has to wait
    time.sleep(0.1)
    assert waiter.poll() is None                            # still waiting while we hold it
  out, err = waiter.communicate(timeout=30)
  assert waiter.returncode == 0, err
  assert out.strip() == 'held True'


def test_lock_fd_in_one_process_and_shared_locks(tmp_path):
  """Two descriptors of one file conflict like two processes; shared locks do not exclude each other."""
  path = tmp_path / '.lock'
  a = os.open(path, os.O_RDWR | os.O_CREAT)
  b = os.open(path, os.O_RDWR)
  try:
    assert files.lock_fd(a, timeout=0)
    assert not files.lock_fd(b, timeout=0)
    files.unlock_fd(a)
    assert files.lock_fd(b, timeout=0)
    files.unlock_fd(b)
    assert files.lock_fd(a, shared=True, timeout=0) and files.lock_fd(b, shared=True, timeout=0)
    with files.locked_file(path, timeout=0) as fd:   # exclusive: refused while shared ones are held
      assert fd is None
  finally:
    os.close(a)
    os.close(b)
