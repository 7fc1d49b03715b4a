"""Checkpoint checksums (issue #39 item 5): damage orbax cannot see, failed asynchronous saves, orbax's logging.

Every committed step gets <step>/checksums.json (sha256 and size of each of its files); a step whose files do not
match it (flipped bytes, a truncated or lost file) is skipped by every reader: train's resume, a branch's source,
eval/sample/export. References are independent of the code under test: hashlib over the files as they lie on disk,
the numpy trees the checkpoints were written from, orbax's own restore, and runs whose damaged step is simply
absent. Failures are made where they happen in production: orbax's commit of a step, in its background thread,
raises ENOSPC.
"""

import errno
import hashlib
import json
import logging
import pathlib
import shutil
import threading
import time

import jax
import pytest
from test_ckpt_damage import assert_tree_equal, make_state, restore_numpy, save_steps, snapshot

from scaling.config import load as config_lib
from scaling.train import branch, checkpoint

MANIFEST = 'checksums.json'


def largest_file(d: pathlib.Path) -> pathlib.Path:
  """The biggest file under d: an array data file of orbax's OCDBT store (the random values)."""
  return max((p for p in d.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def flip_byte(path: pathlib.Path) -> None:
  """One bit of the byte in the middle of the file flipped (the size unchanged): orbax restores such a file
  without an error, with a changed value (seen before checksums: restore gave 1-3 changed elements)."""
  b = bytearray(path.read_bytes())
  b[len(b) // 2] ^= 0x01
  path.write_bytes(bytes(b))


def truncate(path: pathlib.Path) -> None:
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


DAMAGE = {'flipped byte': (flip_byte, 'does not match its sha256 in checksums.json'),
          'truncated file': (truncate, 'has {half} bytes, {size} when saved (truncated)'),
          'missing file': (lambda p: p.unlink(), 'is missing (listed in checksums.json)')}


def fail_commit(monkeypatch, at: int, release: threading.Event | None = None) -> list:
  """orbax's commit (the rename of <step>.orbax-checkpoint-tmp, in the save's background thread) of the `at`-th
  save from now raises ENOSPC, after waiting for `release` when given. Returns the list of calls."""
  from orbax.checkpoint._src.path import atomicity
  orig, calls = atomicity.on_commit_callback, []

  async def commit(tmp_dir, **kw):
    calls.append(str(tmp_dir.get()))
    if len(calls) == at:
      if release is not None:
        release.wait(60)
      raise OSError(errno.ENOSPC, 'No space left on device', str(tmp_dir.get()))
    return await orig(tmp_dir, **kw)
  monkeypatch.setattr(atomicity, 'on_commit_callback', commit)
  return calls


# ----------------------------------------------------------------------------- the manifest
def test_every_file_of_a_saved_step_is_in_its_manifest(tmp_path):
  """Asynchronous saves with keep=2, as training saves: each kept step's manifest lists every file of the step
  (relative path, size, sha256 computed here with hashlib), and still matches after later saves, orbax's
  retention and a restore (orbax changes nothing in a committed step)."""
  mgr = checkpoint.manager(tmp_path, keep=2)
  states = {s: make_state(s) for s in (10, 20, 30)}
  for s, st in states.items():
    st = jax.device_put(st, jax.devices()[0])
    checkpoint.save(mgr, s, params=st['params'], opt_state=st['opt_state'], meta=dict(step=s), data_state=None)
  mgr.wait_until_finished()
  mgr.close()
  ckpt = tmp_path / checkpoint.CKPT_DIR
  restore_numpy(tmp_path, 30, states[30])
  assert sorted(p.name for p in ckpt.iterdir()) == ['20', '30']
  for s in (20, 30):
    d = ckpt / str(s)
    want = {p.relative_to(d).as_posix(): {'bytes': p.stat().st_size,
                                           'sha256': hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in d.rglob('*') if p.is_file() and p.name != MANIFEST}
    assert json.loads((d / MANIFEST).read_text())['files'] == want
    assert {'params', 'opt_state', 'meta', 'data'} <= {k.split('/')[0] for k in want}
    assert not [p for p in d.iterdir() if p.name.endswith('.tmp')]   # the atomic write left no temporary file


# ----------------------------------------------------------------------------- damage, every reader
@pytest.mark.parametrize('damage', list(DAMAGE))
def test_a_damaged_sealed_step_is_skipped_by_inference_and_train(tmp_path, damage, capsys):
  """The newest step's largest params file damaged: eval/sample/export (restore_params) use step 10 with one note
  naming step 20 and the file, moving nothing; train's resume (select_resume_step) picks 10 with one line naming
  them and moves 20 aside as it was; step 10 restores exactly the tree it was saved from."""
  how, words = DAMAGE[damage]
  states = save_steps(tmp_path)
  ckpt = tmp_path / checkpoint.CKPT_DIR
  f = largest_file(ckpt / '20' / 'params')
  rel = f.relative_to(ckpt / '20').as_posix()
  words = words.format(size=f.stat().st_size, half=f.stat().st_size // 2)
  how(f)
  before = snapshot(tmp_path)
  mgr = checkpoint.manager(tmp_path, async_save=False)
  target = jax.device_put(states[10]['params'], jax.devices()[0])
  capsys.readouterr()
  step, params = checkpoint.restore_params(mgr, tmp_path, [20, 10], target)
  mgr.close()
  notes = capsys.readouterr().err.strip().splitlines()
  assert step == 10 and len(notes) == 1, notes
  assert notes[0].startswith('note: using checkpoint step 10') and f'step 20: {rel} {words}' in notes[0]
  assert_tree_equal(params, states[10]['params'])
  assert snapshot(tmp_path) == before
  lines = []
  assert checkpoint.select_resume_step(tmp_path, log=lines.append) == 10
  assert len(lines) == 1 and lines[0].startswith(f'checkpoint step 20 skipped: {rel} {words}'), lines
  moved = tmp_path / checkpoint.DAMAGED_DIR / '20-bad-params'
  assert snapshot(moved) == {k[len('checkpoints/20/'):]: v for k, v in before.items()
                             if k.startswith('checkpoints/20/')}
  out, steps = restore_numpy(tmp_path, 10, states[10])
  assert steps == [10]
  assert_tree_equal(out['opt_state'], states[10]['opt_state'])


def test_a_step_saved_before_checksums_is_checked_as_before(tmp_path):
  """No manifest (a step from before this change): an intact one resumes and restores exactly; a truncated
  array is still found by reading every array back."""
  states = save_steps(tmp_path)
  ckpt = tmp_path / checkpoint.CKPT_DIR
  for s in (10, 20):
    (ckpt / str(s) / MANIFEST).unlink()
  assert checkpoint.check_step(ckpt / '20') is None
  assert checkpoint.select_resume_step(tmp_path, log=pytest.fail) == 20
  out, _ = restore_numpy(tmp_path, 20, states[20])
  assert_tree_equal(out['params'], states[20]['params'])
  truncate(largest_file(ckpt / '20' / 'params'))
  assert checkpoint.check_step(ckpt / '20')[0] == 'bad-params'


def test_an_unreadable_manifest_is_damage(tmp_path):
  save_steps(tmp_path)
  ckpt = tmp_path / checkpoint.CKPT_DIR
  (ckpt / '20' / MANIFEST).write_text('{"files": {"params/_METADATA": ')
  bad = checkpoint.check_step(ckpt / '20')
  assert bad[0] == 'bad-checksums' and bad[1].startswith('checksums.json unreadable'), bad
  lines = []
  assert checkpoint.select_resume_step(tmp_path, log=lines.append) == 10 and 'checksums.json' in lines[0]


def test_a_branch_skips_or_refuses_a_damaged_parent_step(tmp_path):
  """init_from naming no step: the parent's newest intact step, one line naming the damaged one and its file;
  naming the damaged step: refused, naming the file (another step would be another experiment)."""
  parent = tmp_path / 'parent'
  save_steps(parent)
  f = largest_file(parent / checkpoint.CKPT_DIR / '20' / 'opt_state')
  rel = f.relative_to(parent / checkpoint.CKPT_DIR / '20').as_posix()
  flip_byte(f)
  def cfg(init_from):
    return config_lib.load_config('default.py', {'train.init_from': init_from, 'train.steps': 40})
  lines = []
  src = branch.find_source(cfg('../parent'), tmp_path / 'child', log=lines.append)
  assert (src.workdir, src.step) == (parent, 10)
  assert len(lines) == 1 and 'step 20:' in lines[0] and f'{rel} does not match its sha256' in lines[0], lines
  with pytest.raises(branch.BranchError, match=rf'checkpoint of step 20 is damaged \(.*{rel} does not match'):
    branch.find_source(cfg('../parent:20'), tmp_path / 'child')
  assert branch.find_source(cfg('../parent:10'), tmp_path / 'child').step == 10


# ----------------------------------------------------------------------------- a failed asynchronous save
def test_a_failed_async_save_is_raised_at_the_first_check_after_it_failed(tmp_path, monkeypatch, capfd, caplog):
  """The commit of step 20 fails with ENOSPC in orbax's background thread. While it runs, check_pending_save
  returns at once; once it has failed, the next check raises one line: the step, the full disk and its
  directory, the intact step 10, the fix. orbax's own logged tracebacks (absl, even at INFO) are not shown."""
  caplog.set_level(logging.INFO)
  caplog.set_level(logging.INFO, logger='absl')   # the worst case: verbose absl logging (restored after the test)
  save_steps(tmp_path, (10,))
  release = threading.Event()
  calls = fail_commit(monkeypatch, 1, release)
  mgr = checkpoint.manager(tmp_path, keep=2)
  st = jax.device_put(make_state(20), jax.devices()[0])
  checkpoint.save(mgr, 20, params=st['params'], opt_state=st['opt_state'], meta=dict(step=20), data_state=None)
  capfd.readouterr()
  t0 = time.perf_counter()
  checkpoint.check_pending_save(mgr)   # still running: no error, no wait
  assert time.perf_counter() - t0 < 0.5
  release.set()
  deadline = time.time() + 60
  while any(t.name == 'save_finalize' and t.is_alive() for t in threading.enumerate()) and time.time() < deadline:
    time.sleep(0.05)
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.check_pending_save(mgr)
  msg = str(e.value)
  ckpt = tmp_path / checkpoint.CKPT_DIR
  assert len(calls) == 1 and '\n' not in msg
  assert msg.startswith('saving the checkpoint of step 20 failed: the disk is full (') and f'free in {ckpt}' in msg
  assert f'step 10 ({ckpt / "10"}), is intact' in msg and 'free space' in msg and 're-run the same command' in msg
  mgr.close()
  out = capfd.readouterr()
  assert out.err.strip() == '' and out.out.strip() == '', out
  orbax_records = [r for r in caplog.records if '/orbax/' in r.pathname]
  assert orbax_records == [], [r.getMessage()[:100] for r in orbax_records]
  assert checkpoint.select_resume_step(tmp_path, log=lambda *a: None) == 10


def test_check_pending_save_without_a_failure_is_silent(tmp_path):
  mgr = checkpoint.manager(tmp_path)
  checkpoint.check_pending_save(mgr)   # no save yet
  st = jax.device_put(make_state(1), jax.devices()[0])
  checkpoint.save(mgr, 1, params=st['params'], opt_state=st['opt_state'], meta=dict(step=1), data_state=None)
  mgr.wait_until_finished()
  checkpoint.check_pending_save(mgr)
  mgr.close()
  assert checkpoint.check_step(tmp_path / checkpoint.CKPT_DIR / '1') is None


# ----------------------------------------------------------------------------- inference in a multi-process run
def test_load_for_inference_refuses_a_multi_process_run(tmp_path, monkeypatch):
  """One process of several opening a checkpoint would wait in orbax's barriers forever: refused first."""
  from scaling.inference import run as run_lib
  (tmp_path / 'config.json').write_text('{}')
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(run_lib.ocp, 'CheckpointManager', lambda *a, **k: pytest.fail('orbax was reached'))
  with pytest.raises(checkpoint.CheckpointError, match=r'process 0 of a 2-process run: its checkpoint reads wait '
                                                       r'for every process.*Run eval/sample/export as one process'):
    run_lib.load_for_inference(tmp_path)


# ----------------------------------------------------------------------------- through the CLI (training runs)
# tiny_cli_run (tests/conftest.py): one finished 20-step run per test run, shared with test_ckpt_damage.py
@pytest.mark.slow
def test_cli_eval_and_train_skip_a_step_with_a_flipped_byte(tiny_cli_run, tmp_path, capsys):
  """One flipped byte in step 20's params: `scaling eval` evaluates step 10 (the numbers of a copy whose step 20
  is absent) with a note naming step 20 and the file; `scaling train --extend 30` resumes from 10 with one line
  naming them, and finishes."""
  from scaling.cli import main as cli
  run, args = tiny_cli_run
  damaged, ref = tmp_path / 'damaged', tmp_path / 'ref'
  shutil.copytree(run, damaged)
  shutil.copytree(run, ref)
  f = largest_file(damaged / checkpoint.CKPT_DIR / '20' / 'params')
  rel = f.relative_to(damaged / checkpoint.CKPT_DIR / '20').as_posix()
  flip_byte(f)
  shutil.rmtree(ref / checkpoint.CKPT_DIR / '20')
  capsys.readouterr()
  assert cli.main(['eval', '--workdir', str(damaged), '--batches', '1', '--json']) == 0
  got = capsys.readouterr()
  notes = [x for x in got.err.splitlines() if x.startswith('note: using checkpoint step 10')]
  assert len(notes) == 1 and f'step 20: {rel} does not match its sha256' in notes[0], got.err
  assert cli.main(['eval', '--workdir', str(ref), '--batches', '1', '--json']) == 0
  want = capsys.readouterr().out
  rows = [json.loads(x) for x in got.out.splitlines()]
  assert rows and rows == [json.loads(x) for x in want.splitlines()] and {r['step'] for r in rows} == {10}
  assert cli.main(['train', '--workdir', str(damaged), *args, '--config.train.steps=20', '--extend', '30']) == 0
  out = capsys.readouterr()
  skipped = [x for x in (out.out + out.err).splitlines() if 'checkpoint step 20 skipped' in x]
  assert len(skipped) == 1 and f'{rel} does not match its sha256' in skipped[0], out
  assert f'resumed from {damaged / checkpoint.CKPT_DIR / "10"} (step 10)' in out.out
  assert checkpoint.latest_step(damaged) == 30 and (damaged / checkpoint.DAMAGED_DIR / '20-bad-params').is_dir()


@pytest.mark.slow
def test_cli_train_stops_at_the_step_after_a_failed_async_save(tiny_cli_run, tmp_path, monkeypatch, capsys):
  """ckpt_every 4 of 12 steps; the asynchronous save of step 8 fails (ENOSPC in orbax's commit). Each step first
  waits for a finished save thread, so the step after the failure is step 9: the run stops there with one line
  (exit 2), steps 9.. are not logged (before checksums: the failure surfaced at the save of step 12). Re-running
  the command resumes from step 4 (steps 5-9 are what was lost) and finishes."""
  from scaling.cli import main as cli
  from scaling.train import loop as train_lib
  from scaling.train.metrics import read_metrics
  _, args = tiny_cli_run
  wd = tmp_path / 'run'
  orig = train_lib.jit_train_step

  def jit(setup, keys):
    step = orig(setup, keys)

    def wrapped(state, batch):
      for t in threading.enumerate():
        if t.name == 'save_finalize':
          threading.Thread.join(t, 60)   # the base join: orbax's own would raise the save's error here
      return step(state, batch)
    return wrapped
  monkeypatch.setattr(train_lib, 'jit_train_step', jit)
  calls = fail_commit(monkeypatch, 2)
  flags = [*args, '--config.train.steps=12', '--config.train.ckpt_every=4']
  capsys.readouterr()
  assert cli.main(['train', '--workdir', str(wd), *flags]) == 2
  err = capsys.readouterr().err
  assert len(calls) == 2 and len(err.strip().splitlines()) == 1, err
  assert err.startswith('error: saving the checkpoint of step 8 failed: the disk is full') and 'step 4 (' in err
  assert max(r['step'] for r in read_metrics(wd) if 'train/loss' in r) == 8
  monkeypatch.undo()
  assert cli.main(['train', '--workdir', str(wd), *flags]) == 0
  out = capsys.readouterr().out
  assert f'resumed from {wd / checkpoint.CKPT_DIR / "4"} (step 4)' in out and 'step 8 was cut off' in out
  assert checkpoint.latest_step(wd) == 12
