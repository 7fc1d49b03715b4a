"""Merging the seed study's roots (scaling/analysis/seed/merge.py): a later root wins per run hash, and no
measurement of a replaced checkpoint outlives its results row."""

import json

import pytest

from scaling.analysis.seed import merge


def _write(root, results, claims):
  root.mkdir()
  (root / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in results))
  (root / 'claims.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in claims))


def _read(path):
  return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_later_roots_win_and_stale_measurements_go(tmp_path):
  old, new, out = tmp_path / 'old', tmp_path / 'new', tmp_path / 'out'
  _write(old, [{'run': 'a', 'eval/bpb': 2.0}, {'run': 'b', 'eval/bpb': 3.0}, {'run': 'c', 'eval/bpb': 4.0}],
         [{'kind': 'run', 'run': 'a', 'claims/len@512': 2.4}, {'kind': 'run', 'run': 'b', 'claims/x': 1},
          {'kind': 'run', 'run': 'c', 'claims/x': 2},
          {'kind': 'steptime', 'pair': 'norm', 'backend': 'cpu', 'times': {}}, {'kind': 'meta', 'wall_s': 600}])
  _write(new, [{'run': 'a', 'eval/bpb': 2.1}, {'run': 'b', 'eval/bpb': 3.1}, {'run': 'd', 'eval/bpb': 5.0}],
         [{'kind': 'run', 'run': 'a', 'claims/span_bpb': 2.2}, {'kind': 'meta', 'wall_s': 60}])
  n = merge.merge_roots([str(old), str(new)], str(out))
  assert n == {'runs': 4, 'replaced': 2, 'measured': 2}
  results = {r['run']: r['eval/bpb'] for r in _read(out / 'results.jsonl')}
  assert results == {'a': 2.1, 'b': 3.1, 'c': 4.0, 'd': 5.0}
  claims = _read(out / 'claims.jsonl')
  runs = {r['run']: r for r in claims if r['kind'] == 'run'}
  assert runs['a'] == {'kind': 'run', 'run': 'a', 'claims/span_bpb': 2.2}   # the old len@512 is of another checkpoint
  assert 'b' not in runs                      # re-trained, not re-measured yet: unmeasured, not the old numbers
  assert runs['c']['claims/x'] == 2           # not re-trained: its measurements stay
  assert [r['wall_s'] for r in claims if r['kind'] == 'meta'] == [660]
  assert sum(r['kind'] == 'steptime' for r in claims) == 1


def test_a_root_without_results_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='scaling sweep collect'):
    merge.merge_roots([str(tmp_path)], str(tmp_path / 'out'))
  assert merge.main([str(tmp_path), '--out', str(tmp_path / 'out')]) == 2

