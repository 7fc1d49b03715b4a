"""run.json as types (scaling/launch/record.py): old run directories read and write back unchanged, and each
transition writes the keys earlier launchers wrote (literals below, not the code's own output)."""

import json

import pytest

from scaling.launch.backend import Backend
from scaling.launch.record import Attempt, RunRecord, outcome_of_exit
from scaling.launch.rundir import RunDir

# A run.json as the launcher before the RunRecord type wrote it: a local attempt killed (-9), one that
# never recorded its end, then a queue attempt; plus a key this version does not know.
OLD = {
    'hash': 'abc123', 'sweep': '/x/sw.py', 'index': 2, 'label': 'lr=0.001', 'overrides': {'train.lr': 0.001},
    'spec': '/x/ladder.py:nano', 'flags': {'train.lr': '0.001'}, 'config': {'train': {'lr': 0.001}},
    'state': 'submitted', 'created': 1700000000.5, 'future_key': [1, 2],
    'attempts': [
        {'n': 1, 'backend': 'local', 'start': 1.0, 'host': 'h', 'pid': 11, 'slot': 0, 'cmd': ['py', 'train'],
         'end': 2.0, 'exit_code': -9, 'outcome': 'failed'},
        {'n': 2, 'backend': 'local', 'start': 3.0, 'end': 3.0, 'exit_code': None, 'outcome': 'failed',
         'error': 'No such file'},
        {'n': 3, 'backend': 'slurm', 'start': 4.0, 'job_id': '77', 'end': 5.0, 'exit_code': 75,
         'outcome': 'preempted', 'queue_state': 'failed'},
        {'n': 4, 'backend': 'slurm', 'start': 6.0, 'job_id': '78', 'xpk_extra': 'kept'},
    ],
}


def test_old_run_json_round_trips_unchanged(tmp_path):
  rec = RunRecord.from_json(json.loads(json.dumps(OLD)))
  assert rec.to_json() == OLD
  assert rec.failures == 2 and rec.state == 'submitted'
  assert rec.open_job().job_id == '78' and rec.attempts[3].extra == {'xpk_extra': 'kept'}
  rd = RunDir(tmp_path, 'abc123')
  rd.path.mkdir(parents=True)
  (rd.path / 'run.json').write_text(json.dumps(OLD))
  rd.write(rd.load())
  assert json.loads((rd.path / 'run.json').read_text()) == OLD


def test_transitions_write_the_old_keys():
  rec = RunRecord(hash='h')
  a = rec.start_local('local', pid=5, slot=1, cmd=['t'])
  assert rec.state == 'running' and set(a.to_json()) == {'n', 'backend', 'start', 'host', 'pid', 'slot', 'cmd'}
  rec.end(a, 'preempted', 75)
  assert rec.state == 'preempted'
  assert set(a.to_json()) == {'n', 'backend', 'start', 'host', 'pid', 'slot', 'cmd', 'end', 'exit_code', 'outcome'}
  b = rec.submitted('slurm', 42)
  assert rec.state == 'submitted' and b.to_json() == {'n': 2, 'backend': 'slurm', 'start': b.start, 'job_id': '42'}
  assert rec.open_job() is b
  rec.end(b, 'failed', 3, queue_state='failed')
  assert b.to_json()['queue_state'] == 'failed' and rec.failures == 1 and rec.open_job() is None
  c = rec.start_failed('local', 'not found')
  assert c.to_json() == {'n': 3, 'backend': 'local', 'start': c.start, 'end': c.start, 'exit_code': None,
                         'outcome': 'failed', 'error': 'not found'}
  with pytest.raises(ValueError, match='unknown outcome'):
    rec.end(c, 'gone', None)


def test_close_dangling_ends_only_local_attempts():
  rec = RunRecord(hash='h')
  rec.start_local('local', pid=5, slot=0, cmd=['t'])
  assert rec.close_dangling() and rec.state == 'interrupted' and rec.last.exit_code is None
  assert not rec.close_dangling()       # already ended
  rec.submitted('slurm', '9')
  assert not rec.close_dangling() and rec.last.open   # a queue job waits for the queue's answer
  done = RunRecord(hash='h')
  done.start_local('local', pid=5, slot=0, cmd=['t'])
  assert done.close_dangling(done=True) and done.state == 'done'


def test_outcome_of_exit():
  assert [outcome_of_exit(c, False) for c in (0, 1, 75, -9, None)] == ['failed', 'failed', 'preempted', 'failed',
                                                                       'failed']
  assert outcome_of_exit(0, True) == 'done'


def test_skip_finished_is_done_or_gave_up(tmp_path):
  class R:
    hash, label = 'h1', 'x'
  logs = []
  be = Backend(tmp_path, max_retries=1, log=logs.append)
  rd = RunDir(tmp_path, 'h1')
  rd.path.mkdir(parents=True)
  rec = RunRecord(hash='h1')
  assert be.skip_finished(R, rd, rec) is None
  for _ in range(2):
    rec.start_failed('local', 'boom')
  assert be.skip_finished(R, rd, rec) == 'gave_up' and 'raise --max-retries' in logs[-1]
  (rd.path / 'summary.json').write_text('{"state": "done"}')
  assert be.skip_finished(R, rd, rec) == 'done' and rec.state == 'done'
  assert rd.read()['state'] == 'done'      # written back under the caller's lock
  assert Attempt.from_json({'n': 1, 'backend': 'b', 'start': 0}).open
