"""Damaged checkpoints: resume falls back to the newest step that restores completely.

A workdir gets real orbax checkpoints (the four items of scaling.train.checkpoint.save) of a small
parameter tree and AdamW state filled with random numbers; then files are damaged the way a
crash, a full disk or a bad copy leaves them. References are independent of the code under
test: the numpy trees the checkpoints were written from, the bytes of every file before the
call (moved, never rewritten or deleted), and orbax's own listing and restore afterwards.
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
from conftest import xla_flags

from scaling.train import checkpoint, distributed

pytestmark = pytest.mark.slow   # training runs resumed over damaged checkpoints (not in -m 'not slow')

REPO = pathlib.Path(__file__).resolve().parent.parent


def make_state(seed: int) -> dict:
  """Params + AdamW state (numpy, random values; integer counters 7), shaped like a tiny model's."""
  rng = np.random.default_rng(seed)
  params = {'embed_VD': rng.normal(size=(256, 64)).astype(np.float32),
            'blocks': {'w_up_DF': rng.normal(size=(2, 64, 128)).astype(np.float32),
                       'norm': {'scale': rng.normal(size=(2, 64)).astype(np.float32)}}}
  opt_state = optax.adamw(1e-3).init(params)
  opt_state = jax.tree.map(lambda x: np.full(x.shape, 7, x.dtype) if np.issubdtype(x.dtype, np.integer)
                           else rng.normal(size=x.shape).astype(x.dtype), opt_state)
  return dict(params=params, opt_state=opt_state)


def save_steps(workdir, steps=(10, 20)) -> dict:
  """Checkpoints of `steps` (state seeded by the step) as training writes them; returns {step: state}."""
  states = {s: make_state(s) for s in steps}
  mgr = checkpoint.manager(workdir, keep=10, async_save=False)
  for s, st in states.items():
    on_device = jax.device_put(st, jax.devices()[0])
    checkpoint.save(mgr, s, params=on_device['params'], opt_state=on_device['opt_state'],
                    meta=dict(step=s, seed=0), data_state={'grain': {'next_index': s}, 'batch_size': 4})
  mgr.wait_until_finished()
  mgr.close()
  return states


def snapshot(root) -> dict:
  """Every path under root -> sha256 of its bytes (None for a directory)."""
  root = pathlib.Path(root)
  return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
          for p in sorted(root.rglob('*'))}


def truncate_data_files(d) -> None:
  """Cuts every file over 10 KB under d (the arrays' compressed chunk files) to half its size.

  Not just the largest one: after orbax merges the per-process OCDBT manifests, a per-process b-tree node
  file is no longer read, and depending on how the async writes fell it can be the largest file. Cutting
  it damages nothing a restore reads (found on a loaded CI machine), so the test must cut the data too.
  """
  big = [p for p in pathlib.Path(d).rglob('*') if p.is_file() and p.stat().st_size > 10_000]
  assert big, f'no array data file in {d}'
  for f in big:
    os.truncate(f, f.stat().st_size // 2)


DAMAGE = {   # name -> (how, the reason in the moved directory's name, words of the message: a step saved before
             # checksums (no manifest: every item read back), a step with its manifest (the file named))
    'truncated params array': (lambda d: truncate_data_files(d / 'params'), 'bad-params', 'params unreadable',
                               'when saved (truncated)'),
    'truncated opt_state array': (lambda d: truncate_data_files(d / 'opt_state'), 'bad-opt_state',
                                  'opt_state unreadable', 'when saved (truncated)'),
    'deleted meta/metadata': (lambda d: (d / 'meta' / 'metadata').unlink(), 'bad-meta', 'meta unreadable',
                              'meta/metadata is missing (listed in checksums.json)'),
    'garbled data item': (lambda d: (d / 'data' / 'metadata').write_text('{"grain": '), 'bad-data',
                          'data unreadable', 'data/metadata has 10 bytes'),
    'missing commit marker': (lambda d: (d / 'commit_success.txt').unlink(), 'uncommitted',
                              'no commit_success.txt: the save did not finish', 'no commit_success.txt'),
    'missing item': (lambda d: shutil.rmtree(d / 'opt_state'), 'no-opt_state', 'the opt_state item is missing',
                     'the opt_state item is missing'),
}


def unseal(ckpt_dir) -> None:
  """Removes every step's manifest: the steps as a run saved them before checksums existed."""
  for p in pathlib.Path(ckpt_dir).glob(f'*/{checkpoint.MANIFEST}'):
    p.unlink()


def restore_numpy(workdir, step, like) -> dict:
  mgr = checkpoint.manager(workdir, async_save=False)
  target = jax.device_put(like, jax.devices()[0])
  out = checkpoint.restore(mgr, step, params_target=target['params'], opt_target=target['opt_state'])
  steps = mgr.all_steps()
  mgr.close()
  return out, steps


def assert_tree_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('sealed', [True, False], ids=['manifest', 'no-manifest'])
@pytest.mark.parametrize('damage', list(DAMAGE))
def test_damaged_latest_falls_back_to_the_previous_step(tmp_path, damage, sealed):
  how, reason, legacy_words, sealed_words = DAMAGE[damage]
  words = sealed_words if sealed else legacy_words
  states = save_steps(tmp_path)
  ckpt = tmp_path / checkpoint.CKPT_DIR
  if not sealed:
    unseal(ckpt)
  how(ckpt / '20')
  before = snapshot(ckpt / '20')
  lines = []
  assert checkpoint.select_resume_step(tmp_path, log=lines.append) == 10
  moved = tmp_path / checkpoint.DAMAGED_DIR / f'20-{reason}'
  assert len(lines) == 1, lines
  assert lines[0].startswith('checkpoint step 20 skipped: ') and words in lines[0] and str(moved) in lines[0]
  assert snapshot(moved) == before                      # moved as it was, nothing deleted
  assert words in (moved.parent / f'{moved.name}.txt').read_text()
  assert sorted(p.name for p in ckpt.iterdir()) == ['10']
  out, steps = restore_numpy(tmp_path, 10, states[10])
  assert steps == [10]                                  # orbax no longer lists the damaged step
  assert_tree_equal(out['params'], states[10]['params'])
  assert_tree_equal(out['opt_state'], states[10]['opt_state'])
  assert out['meta'] == {'step': 10, 'seed': 0}
  assert checkpoint.select_resume_step(tmp_path, log=lines.append) == 10 and len(lines) == 1   # now quiet


def test_all_damaged_raises_and_changes_nothing(tmp_path):
  save_steps(tmp_path)
  ckpt = tmp_path / checkpoint.CKPT_DIR
  unseal(ckpt)   # the checks of a step saved before checksums (test_checksums.py: those of one with them)
  truncate_data_files(ckpt / '20' / 'params')
  (ckpt / '10' / 'commit_success.txt').unlink()
  before = snapshot(tmp_path)
  lines = []
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.select_resume_step(tmp_path, log=lines.append)
  msg = str(e.value)
  assert f'no intact checkpoint in {ckpt}' in msg
  assert 'step 20: params unreadable' in msg and 'step 10: no commit_success.txt' in msg
  assert 'Nothing was changed' in msg and '--workdir' in msg
  assert snapshot(tmp_path) == before and not (tmp_path / checkpoint.DAMAGED_DIR).exists()
  assert lines == []


def test_walks_back_over_several_and_keeps_every_copy(tmp_path):
  """30 and 20 damaged -> 10, newest first; a step damaged again later gets a second name."""
  states = save_steps(tmp_path, (10, 20, 30))
  ckpt = tmp_path / checkpoint.CKPT_DIR
  unseal(ckpt)
  truncate_data_files(ckpt / '30' / 'params')
  (ckpt / '20' / 'meta' / 'metadata').unlink()
  lines = []
  assert checkpoint.select_resume_step(tmp_path, log=lines.append) == 10
  assert [x.split(':')[0] for x in lines] == ['checkpoint step 30 skipped', 'checkpoint step 20 skipped']
  save_steps(tmp_path, (20,))   # the resumed run writes step 20 again; it is damaged again
  unseal(ckpt)
  truncate_data_files(ckpt / '20' / 'params')
  assert checkpoint.select_resume_step(tmp_path, log=lines.append) == 10
  assert sorted(p.name for p in (tmp_path / checkpoint.DAMAGED_DIR).iterdir()) == [
      '20-bad-meta', '20-bad-meta.txt', '20-bad-params', '20-bad-params.txt', '30-bad-params', '30-bad-params.txt']
  out, _ = restore_numpy(tmp_path, 10, states[10])
  assert_tree_equal(out['params'], states[10]['params'])


def test_a_cut_off_save_is_never_selected(tmp_path):
  """A kill during an async save leaves <step>.orbax-checkpoint-tmp: even one that holds every file and
  the commit markers (killed between the marker and the rename) is passed over, and left alone."""
  save_steps(tmp_path)
  ckpt = tmp_path / checkpoint.CKPT_DIR
  shutil.copytree(ckpt / '20', ckpt / '30.orbax-checkpoint-tmp')
  shutil.copytree(ckpt / '20', ckpt / '40.orbax-checkpoint-tmp-1796150000')
  for p in (ckpt / '40.orbax-checkpoint-tmp-1796150000').rglob('commit_success.txt'):
    p.unlink()
  before = snapshot(tmp_path)
  lines = []
  assert checkpoint.select_resume_step(tmp_path, log=lines.append) == 20
  assert snapshot(tmp_path) == before
  assert len(lines) == 2 and all('cut off while saving' in x and 'ignored' in x for x in lines)
  assert checkpoint.latest_step(tmp_path) == 20   # orbax agrees


def test_a_relative_workdir_resumes(tmp_path, monkeypatch):
  """`scaling train --workdir workdir` (the README's default) names the workdir relative to the current
  directory; tensorstore reads absolute paths only, so an intact step must not be taken for a damaged one."""
  save_steps(tmp_path / 'w')
  monkeypatch.chdir(tmp_path)
  lines = []
  assert checkpoint.select_resume_step('w', log=lines.append) == 20 and lines == []
  assert checkpoint.check_step(pathlib.Path('w') / checkpoint.CKPT_DIR / '20') is None


def test_no_checkpoints_is_none(tmp_path):
  assert checkpoint.select_resume_step(tmp_path / 'absent') is None
  (tmp_path / checkpoint.CKPT_DIR).mkdir()
  assert checkpoint.select_resume_step(tmp_path) is None
  save_steps(tmp_path, (10,))
  os.rename(tmp_path / checkpoint.CKPT_DIR / '10', tmp_path / checkpoint.CKPT_DIR / '10.orbax-checkpoint-tmp')
  lines = []
  assert checkpoint.select_resume_step(tmp_path, log=lines.append) is None
  assert len(lines) == 1 and 'step 10 was cut off while saving' in lines[0]


def test_check_step_reads_in_slices(tmp_path):
  """A budget smaller than one row of any array: every array is read one row at a time, still complete."""
  save_steps(tmp_path)
  ckpt = tmp_path / checkpoint.CKPT_DIR
  unseal(ckpt)   # a sealed step is checked by its sums, not read back
  assert checkpoint.check_step(ckpt / '10', batch_bytes=16) is None
  truncate_data_files(ckpt / '20' / 'opt_state')
  assert checkpoint.check_step(ckpt / '20', batch_bytes=16)[0] == 'bad-opt_state'
  (ckpt / '10' / 'meta' / 'metadata').write_text(json.dumps({'step': 11}))
  assert checkpoint.check_step(ckpt / '10') == ('bad-meta', 'meta says step 11')


CHILD = textwrap.dedent('''
  import json, os, sys
  from scaling.train import checkpoint, distributed
  distributed.initialize()
  i = int(os.environ['SCALING_PROCESS_ID'])
  lines = []
  try:
    out = dict(step=checkpoint.select_resume_step(sys.argv[1], log=lines.append))
  except checkpoint.CheckpointError as e:
    out = dict(error=str(e))
  out['lines'] = lines
  open(os.path.join(sys.argv[2], 'out%d.json' % i), 'w').write(json.dumps(out))
''')


# each process saves its half of every array (sharded over the 4 devices of 2 processes): the checkpoint
# holds ocdbt.process_0 and ocdbt.process_1, as a multi-process training run writes it
CHILD_SAVE = textwrap.dedent('''
  import sys
  import jax, numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from scaling.train import checkpoint, distributed
  distributed.initialize()
  mesh = jax.make_mesh((4,), ('x',))
  def put(a):
    return jax.make_array_from_callback(a.shape, NamedSharding(mesh, P('x')), lambda i: a[i])
  mgr = checkpoint.manager(sys.argv[1])
  for s in (10, 20):
    params = {'w': put(np.arange(4096 * 64, dtype=np.float32).reshape(4096, 64) * s)}
    opt = {'mu': put(np.full((4096, 64), s, np.float32)), 'count': put(np.full((4,), s, np.int32))}
    checkpoint.save(mgr, s, params=params, opt_state=opt, meta=dict(step=s), data_state=None)
  mgr.wait_until_finished()
  mgr.close()
''')


def _two_processes(tmp_path, monkeypatch, workdir, child=CHILD) -> list[dict]:
  script = tmp_path / 'child.py'
  script.write_text(child)
  monkeypatch.setenv('XLA_FLAGS', xla_flags(4))
  monkeypatch.setenv('PYTHONPATH', str(REPO))
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  rc = distributed.launch_local(2, [str(workdir), str(tmp_path)], command=[sys.executable, str(script)])
  assert rc == 0
  return [json.loads((tmp_path / f'out{i}.json').read_text()) for i in range(2)] if child == CHILD else []


def test_a_checkpoint_written_by_two_processes_is_read_completely(tmp_path, monkeypatch):
  """Both processes' shard files are read: damage in either one's file is found."""
  workdir = tmp_path / 'w'
  _two_processes(tmp_path, monkeypatch, workdir, CHILD_SAVE)
  ckpt = workdir / checkpoint.CKPT_DIR
  for item in ('params', 'opt_state'):
    assert {p.name for p in (ckpt / '20' / item).iterdir() if p.name.startswith('ocdbt.process_')} == {
        'ocdbt.process_0', 'ocdbt.process_1'}
  assert checkpoint.check_step(ckpt / '10') is None and checkpoint.check_step(ckpt / '20') is None
  for proc in ('ocdbt.process_0', 'ocdbt.process_1'):
    d = tmp_path / proc / '20'
    shutil.copytree(ckpt / '20', d)
    truncate_data_files(d / 'params' / proc)
    assert checkpoint.check_step(d)[0] == 'bad-params', proc
  mgr = checkpoint.manager(workdir, async_save=False)
  target = {'w': jax.ShapeDtypeStruct((4096, 64), np.float32, sharding=jax.sharding.SingleDeviceSharding(
      jax.devices()[0]))}
  out = checkpoint.restore(mgr, 20, params_target=target)
  mgr.close()
  np.testing.assert_array_equal(np.asarray(out['params']['w']),
                                np.arange(4096 * 64, dtype=np.float32).reshape(4096, 64) * 20)


def test_two_processes_agree_and_move_once(tmp_path, monkeypatch):
  """Both processes get step 10; process 0 alone moves step 20 and reports it; then both fail alike
  when nothing is intact, with the tree unchanged."""
  workdir = tmp_path / 'w'
  save_steps(workdir)
  ckpt = workdir / checkpoint.CKPT_DIR
  truncate_data_files(ckpt / '20' / 'params')
  out = _two_processes(tmp_path, monkeypatch, workdir)
  assert [o.get('step') for o in out] == [10, 10], out
  assert len(out[0]['lines']) == 1 and out[0]['lines'][0].startswith('checkpoint step 20 skipped')
  assert out[1]['lines'] == []
  assert sorted(p.name for p in ckpt.iterdir()) == ['10']
  assert sorted(p.name for p in (workdir / checkpoint.DAMAGED_DIR).iterdir()) == ['20-bad-params',
                                                                                  '20-bad-params.txt']
  (ckpt / '10' / 'commit_success.txt').unlink()
  before = snapshot(workdir)
  out = _two_processes(tmp_path, monkeypatch, workdir)
  assert 'step 10: no commit_success.txt' in out[0]['error'] and 'process 0' in out[1]['error'], out
  assert snapshot(workdir) == before


# ----------------------------------------------------------------------------- a full disk during a save
@pytest.fixture
def small_disk(tmp_path):
  """An 8 MB tmpfs (root only; skipped elsewhere): room for 2 checkpoints of big_state, not 3."""
  mnt = tmp_path / 'disk'
  mnt.mkdir()
  r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', str(mnt)], capture_output=True)
  if r.returncode:
    pytest.skip(f'cannot mount a tmpfs here ({r.stderr.decode().strip()}); needs root')
  yield mnt
  subprocess.run(['umount', '-l', str(mnt)], check=True)


def big_state(seed: int) -> dict:
  """~3.1 MB per checkpoint: params 1.1 MB + two Adam moments, all random."""
  rng = np.random.default_rng(seed)
  st = make_state(seed)
  st['params']['embed_VD'] = rng.normal(size=(1024, 256)).astype(np.float32)
  opt_state = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(x.dtype) if x.dtype == np.float32 else x,
                           optax.adamw(1e-3).init(st['params']))   # random moments: no compression helps
  return dict(params=st['params'], opt_state=opt_state)


def test_full_disk_during_a_save_is_one_clear_error_and_keeps_the_last_checkpoint(small_disk):
  """Steps 10 and 20 fit, the asynchronous save of 30 hits ENOSPC in orbax's background thread: the next
  wait says which step failed, that the disk is full and that step 20 is intact; 10 and 20 still restore
  exactly, the resume step is 20, and with room again step 30 saves."""
  workdir = small_disk / 'w'
  states = {s: big_state(s) for s in (10, 20, 30)}
  mgr = checkpoint.manager(workdir, keep=2)   # asynchronous, as in training
  for s in (10, 20, 30):
    st = jax.device_put(states[s], jax.devices()[0])
    checkpoint.save(mgr, s, params=st['params'], opt_state=st['opt_state'], meta=dict(step=s), data_state=None)
  with pytest.raises(checkpoint.CheckpointError) as e:
    mgr.wait_until_finished()
  msg = str(e.value)
  assert msg.startswith('saving the checkpoint of step 30 failed: the disk is full'), msg
  assert f'step 20 ({workdir / checkpoint.CKPT_DIR / "20"}), is intact' in msg and 'room for 3' in msg
  mgr.close()
  ckpt = workdir / checkpoint.CKPT_DIR
  assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ['10', '20']
  for s in (10, 20):
    assert checkpoint.check_step(ckpt / str(s)) is None
    out, _ = restore_numpy(workdir, s, states[s])
    assert_tree_equal(out['params'], states[s]['params'])
    assert_tree_equal(out['opt_state'], states[s]['opt_state'])
  assert checkpoint.select_resume_step(workdir, log=lambda *a: None) == 20
  subprocess.run(['mount', '-o', 'remount,size=40m', str(small_disk)], check=True)
  mgr = checkpoint.manager(workdir, keep=2)
  st = jax.device_put(states[30], jax.devices()[0])
  checkpoint.save(mgr, 30, params=st['params'], opt_state=st['opt_state'], meta=dict(step=30), data_state=None)
  mgr.wait_until_finished()
  mgr.close()
  out, steps = restore_numpy(workdir, 30, states[30])
  assert steps == [20, 30]
  assert_tree_equal(out['params'], states[30]['params'])


def test_save_failed_message_without_a_full_disk(tmp_path):
  """Any other failure (here a synthetic one, no file system needed) names the step and the cause."""
  save_steps(tmp_path, (10,))
  mgr = checkpoint.manager(tmp_path)
  msg = str(checkpoint.save_failed(mgr, PermissionError(13, 'Permission denied'), 20))
  mgr.close()
  assert msg.startswith('saving the checkpoint of step 20 failed: PermissionError: [Errno 13] Permission denied')
  assert 'step 10' in msg and 'is intact' in msg and 'disk is full' not in msg
  enospc = OSError(28, 'No space left on device')
  mgr = checkpoint.manager(tmp_path)
  msg = str(checkpoint.save_failed(mgr, enospc, 20))
  mgr.close()
  assert 'the disk is full' in msg and 'room for 3' in msg


# ----------------------------------------------------------------------------- through `scaling train`
# tiny_cli_run (tests/conftest.py): one finished 20-step run per test run, shared with test_checksums.py
def _losses(workdir) -> dict:
  from scaling.train.metrics import read_metrics
  return {r['step']: r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r}


def test_cli_resumes_from_the_step_before_a_damaged_one(tiny_cli_run, tmp_path, capsys):
  """The issue's repro: truncate the largest params file of step 20, run to 30: one line about step 20,
  resumed from 10, finished at 30 with the losses of a run whose step 20 was simply absent."""
  from scaling.cli import main as cli
  run, args = tiny_cli_run
  damaged, ref = tmp_path / 'damaged', tmp_path / 'ref'
  shutil.copytree(run, damaged)
  shutil.copytree(run, ref)
  truncate_data_files(damaged / checkpoint.CKPT_DIR / '20' / 'params')
  shutil.rmtree(ref / checkpoint.CKPT_DIR / '20')
  capsys.readouterr()
  assert cli.main(['train', '--workdir', str(damaged), *args, '--config.train.steps=20', '--extend', '30']) == 0
  out = capsys.readouterr()
  skipped = [x for x in (out.out + out.err).splitlines() if 'checkpoint step 20 skipped' in x]
  assert len(skipped) == 1 and ': params/' in skipped[0] and 'when saved (truncated)' in skipped[0], out
  assert f'resumed from {damaged / checkpoint.CKPT_DIR / "10"} (step 10)' in out.out
  assert 'Traceback' not in out.err
  assert checkpoint.latest_step(damaged) == 30
  assert (damaged / checkpoint.DAMAGED_DIR / '20-bad-params').is_dir()
  assert cli.main(['train', '--workdir', str(ref), *args, '--config.train.steps=20', '--extend', '30']) == 0
  got, want = _losses(damaged), _losses(ref)
  assert [s for s in range(11, 31) if got.get(s) != want.get(s)] == []


def test_cli_with_every_checkpoint_damaged_fails_and_changes_nothing(tiny_cli_run, tmp_path, capsys):
  from scaling.cli import main as cli
  run, args = tiny_cli_run
  wd = tmp_path / 'w'
  shutil.copytree(run, wd)
  truncate_data_files(wd / checkpoint.CKPT_DIR / '20' / 'params')
  (wd / checkpoint.CKPT_DIR / '10' / 'meta' / 'metadata').unlink()
  before = snapshot(wd)
  capsys.readouterr()
  assert cli.main(['train', '--workdir', str(wd), *args, '--config.train.steps=20', '--extend', '30']) != 0
  err = capsys.readouterr().err
  assert err.startswith('error: no intact checkpoint') and 'step 20: params/' in err and '(truncated)' in err
  assert 'step 10: meta/metadata is missing' in err and len(err.strip().splitlines()) == 1, err
  assert snapshot(wd) == before


def test_sample_uses_the_newest_intact_checkpoint_and_moves_nothing(tiny_cli_run, tmp_path, capsys):
  """`scaling sample` (and eval/export, through load_for_inference) on a workdir whose newest step is
  damaged: one note naming the skipped step, the samples of step 10 (the same text as a copy whose
  step 20 is simply absent), and the workdir unchanged (inference never moves checkpoints)."""
  from scaling.cli import main as cli
  run, _ = tiny_cli_run
  damaged, ref = tmp_path / 'damaged', tmp_path / 'ref'
  shutil.copytree(run, damaged)
  shutil.copytree(run, ref)
  truncate_data_files(damaged / checkpoint.CKPT_DIR / '20' / 'params')
  shutil.rmtree(ref / checkpoint.CKPT_DIR / '20')
  before = snapshot(damaged)
  flags = ['--prompt', 'one two', '--max_new_tokens', '8', '--temperature', '0']
  capsys.readouterr()
  assert cli.main(['sample', '--workdir', str(damaged), *flags]) == 0
  got = capsys.readouterr()
  notes = [x for x in got.err.splitlines() if x.startswith('note: using checkpoint step 10')]
  assert len(notes) == 1 and 'step 20:' in notes[0], got.err
  assert snapshot(damaged) == before
  assert cli.main(['sample', '--workdir', str(ref), *flags]) == 0
  assert capsys.readouterr().out == got.out
  # `scaling eval` names the step it evaluated, not the newest on disk
  assert cli.main(['eval', '--workdir', str(damaged), '--batches', '1']) == 0
  assert f'{damaged} (checkpoint step 10)' in capsys.readouterr().out
  # every step damaged: one clear error, nothing changed
  (damaged / checkpoint.CKPT_DIR / '10' / 'params').rename(damaged / 'params-away')
  before = snapshot(damaged)
  assert cli.main(['sample', '--workdir', str(damaged), *flags]) != 0
  err = capsys.readouterr().err
  assert 'do not restore (every checkpoint was tried)' in err and 'step 20:' in err and 'step 10:' in err, err
  assert snapshot(damaged) == before
