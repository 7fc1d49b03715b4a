"""Where a fit.json came from: the code's commit, the package and library versions, digests of the inputs.

Everything here is a function of the inputs and the code only (no time, host or absolute path), so that the same
results and options give a byte-identical fit.json wherever they are fitted:

  * code_revision(): the commit of the git checkout that holds this `scaling` package (`git rev-parse HEAD`, with
    `dirty` when `git status --porcelain -- scaling` lists a change), or None outside a checkout of its own: a
    package installed inside some other repository reports None rather than that repository's commit;
  * versions(): the package's, Python's, numpy's and scipy's;
  * row_sha256(raw): the sha256 of a results row as canonical JSON (sorted keys, no spaces);
  * the results file's sha256 comes from scaling/base/files.py (sha256_file).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import subprocess

import numpy as np
import scipy

from scaling.analysis.fit.load import PARAM_COLUMNS
from scaling.base.files import sha256_bytes, sha256_file

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # .../scaling


def _git(root: str, *args: str) -> str | None:
  try:
    r = subprocess.run(['git', '-C', root, *args], capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return None
  return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=8)
def code_revision(package_dir: str = PACKAGE_DIR) -> dict:
  """{commit, dirty} of the git checkout whose top level holds `package_dir` (the scaling package); both None when
  there is no such checkout (not a checkout, no git, or the package sits inside a different repository).
  Cached per process: one fit.json records one state of the code."""
  root = os.path.dirname(os.path.abspath(package_dir))
  top = _git(root, 'rev-parse', '--show-toplevel')
  if not top or os.path.realpath(top) != os.path.realpath(root):
    return {'commit': None, 'dirty': None}
  commit = _git(root, 'rev-parse', 'HEAD')
  status = _git(root, 'status', '--porcelain', '--', os.path.basename(package_dir)) if commit else None
  return {'commit': commit, 'dirty': None if status is None else bool(status)}


def versions() -> dict:
  """The scaling package's version (None when not installed), Python's, numpy's and scipy's."""
  try:
    pkg = importlib.metadata.version('scaling')
  except importlib.metadata.PackageNotFoundError:
    pkg = None
  return {'package_version': pkg, 'python': platform.python_version(), 'numpy': np.__version__,
          'scipy': scipy.__version__}


def row_sha256(raw: dict) -> str:
  """sha256 of a results row as canonical JSON: json.dumps(sort_keys=True, separators=(',', ':'))."""
  return sha256_bytes(json.dumps(raw, sort_keys=True, separators=(',', ':'), default=str).encode('utf-8'))


def provenance() -> dict:
  """fit.json's `provenance`: code_commit, code_dirty and the versions."""
  rev = code_revision()
  return {'code_commit': rev['commit'], 'code_dirty': rev['dirty'], **versions()}


RECORDED_OPTIONS = ('metric', 'params', 'targets', 'fits', 'bootstrap', 'seed', 'huber_delta', 'max_starts',
                    'budget_tol', 'skip_bad', 'held_out', 'plots', 'noise_floor', 'arms')


def inputs_record(results: str, rows: list[dict], opts: dict, keep=None) -> dict:
  """fit.json's `inputs`: the results file by base name and sha256 (never its directory, so that two copies of the
  same results fit to the same bytes), the metric, the N column, the rows used (their run hashes and each row's
  sha256, in order), their ranges, every analysis option (the bootstrap seed among them) and the row filter."""
  arr = {k: np.array([r[k] for r in rows]) for k in ('N', 'D', 'C', 'L')}
  return {
      'results': os.path.basename(results), 'results_sha256': sha256_file(results), 'metric': opts['metric'],
      'params_column': PARAM_COLUMNS[opts['params']], 'rows_used': len(rows), 'runs': [r['run'] for r in rows],
      'row_sha256': [row_sha256(r['raw']) for r in rows],
      'range': {k: [float(v.min()), float(v.max())] for k, v in arr.items()},
      'options': {k: opts.get(k) for k in RECORDED_OPTIONS}, 'rng_seed': opts.get('seed'),
      'row_filter': None if keep is None else f'{getattr(keep, "__module__", "?")}.{getattr(keep, "__qualname__", "?")}',
  }
