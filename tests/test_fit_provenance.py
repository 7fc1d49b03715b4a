"""fit.json's provenance and determinism (scaling/analysis/fit/provenance.py, command.py): the same results fitted in
two directories give byte-identical fit.json files; the digests are sha256 of the bytes and rows (hashlib here);
the commit is `git rev-parse HEAD` of this checkout, and None outside a checkout of the package's own."""

import hashlib
import json
import shutil
import subprocess

import pytest

from scaling.analysis.fit import command, provenance

E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28


def write_results(path):
  rows = []
  for c in (1e18, 1e19, 1e20):
    n0 = 0.12 * c ** 0.45
    for k, off in enumerate((-0.4, -0.2, 0.0, 0.2, 0.4)):
      n = n0 * 10 ** off
      d = c / (6 * n)
      loss = E + A / n ** ALPHA + B / d ** BETA
      rows.append({'run': f'{len(rows):012x}', 'state': 'done', 'params': n, 'non_embedding_params': n, 'tokens': d,
                   'flops': c, 'eval/bpb': loss, 'eval/loss': loss, 'train/loss': loss,
                   'overrides': {'model.num_layers': 4, 'model.d_model': 64 * (k + 1), 'model.num_heads': k + 1}})
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return rows


def test_the_same_results_in_two_directories_give_byte_identical_fit_json(tmp_path):
  rows = write_results(tmp_path / 'one' / 'results.jsonl')
  shutil.copytree(tmp_path / 'one', tmp_path / 'elsewhere' / 'two')
  opts = {'bootstrap': 8, 'max_starts': 4, 'plots': False, 'seed': 3}
  for d in ('one', 'elsewhere/two'):
    command.fit_all(results=str(tmp_path / d / 'results.jsonl'), **opts)
  one, two = ((tmp_path / d / 'fit.json').read_bytes() for d in ('one', 'elsewhere/two'))
  assert one == two
  saved = json.loads(one)
  assert str(tmp_path) not in one.decode()                  # no directory anywhere in it
  inp = saved['inputs']
  assert inp['results'] == 'results.jsonl'
  assert inp['results_sha256'] == hashlib.sha256((tmp_path / 'one' / 'results.jsonl').read_bytes()).hexdigest()
  assert inp['runs'] == [r['run'] for r in rows]
  assert inp['row_sha256'] == [hashlib.sha256(json.dumps(r, sort_keys=True, separators=(',', ':')).encode())
                               .hexdigest() for r in rows]
  assert set(inp['options']) == set(provenance.RECORDED_OPTIONS)
  assert inp['options']['seed'] == inp['rng_seed'] == 3 and inp['options']['bootstrap'] == 8
  prov = saved['provenance']
  assert set(prov) == {'code_commit', 'code_dirty', 'package_version', 'python', 'numpy', 'scipy'}
  # a third fit with another seed differs (the comparison above can fail)
  command.fit_all(results=str(tmp_path / 'one' / 'results.jsonl'), **{**opts, 'seed': 4})
  assert (tmp_path / 'one' / 'fit.json').read_bytes() != two


def test_the_commit_is_this_checkouts_head():
  try:
    head = subprocess.run(['git', '-C', provenance.PACKAGE_DIR, 'rev-parse', 'HEAD'], capture_output=True, text=True,
                          timeout=10)
  except OSError:
    pytest.skip('no git')
  rev = provenance.code_revision()
  if head.returncode != 0:
    assert rev == {'commit': None, 'dirty': None}
  else:
    assert rev['commit'] == head.stdout.strip() and isinstance(rev['dirty'], bool)


def test_no_commit_outside_a_checkout_of_the_package(tmp_path):
  alone = tmp_path / 'plain' / 'scaling'
  alone.mkdir(parents=True)
  assert provenance.code_revision(str(alone)) == {'commit': None, 'dirty': None}
  if shutil.which('git') is None:
    return
  # a package that sits inside some other repository does not report that repository's commit
  repo = tmp_path / 'other'
  (repo / 'vendored' / 'scaling').mkdir(parents=True)
  subprocess.run(['git', 'init', '-q', str(repo)], check=True, timeout=30)
  assert provenance.code_revision(str(repo / 'vendored' / 'scaling')) == {'commit': None, 'dirty': None}
