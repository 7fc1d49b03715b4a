"""Merges the seed study's rows from several roots into one, for one report.

    python -m scaling.analysis.seed.merge --out /tmp/seed_all docs/results/seed_upgrades sweeps/seed_upgrades_v2
    scaling report --root /tmp/seed_all --study seed_upgrades

The committed result holds results.jsonl and claims.jsonl of runs whose checkpoints are gone; the runs added
since (and the ones re-trained for their checkpoints, which resume by config hash into a fresh root) hold
their own. Roots are read in the order given and a later root wins: a run hash present in two roots keeps the
later root's results row and only the later root's claims row (its measurements, all of one checkpoint; a
later root that has not measured the run yet leaves it unmeasured, so no number of a checkpoint that is gone
sits beside the results of the one that replaced it). Step-time rows are kept per (pair, backend), the later
winning; the claims_measure wall times (meta rows) are summed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from scaling.base.files import atomic_write_text

RESULTS, CLAIMS = 'results.jsonl', 'claims.jsonl'


def _read(path: str) -> list[dict]:
  if not os.path.isfile(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def merge_roots(roots, out: str) -> dict:
  """Writes out/results.jsonl and out/claims.jsonl from the roots (module docstring); returns counts."""
  if not roots:
    raise ValueError('merge needs at least one root')
  for r in roots:
    if not os.path.isfile(os.path.join(r, RESULTS)):
      raise FileNotFoundError(f'{r} has no {RESULTS}: run `scaling sweep collect --root {r}` first')
  results: dict[str, dict] = {}
  runs: dict[str, dict] = {}
  times: dict[tuple, dict] = {}
  wall, replaced = 0.0, 0
  for root in roots:
    for row in _read(os.path.join(root, RESULTS)):
      replaced += row['run'] in results
      results.pop(row['run'], None)
      results[row['run']] = row
      runs.pop(row['run'], None)   # an earlier checkpoint's measurements do not outlive its results row
    for row in _read(os.path.join(root, CLAIMS)):
      if row.get('kind') == 'run':
        runs.pop(row['run'], None)
        runs[row['run']] = row
      elif row.get('kind') == 'steptime':
        times[(row.get('pair'), row.get('backend'))] = row
      elif row.get('kind') == 'meta':
        wall += float(row.get('wall_s', 0))
  os.makedirs(out, exist_ok=True)
  atomic_write_text(os.path.join(out, RESULTS), ''.join(json.dumps(r) + '\n' for r in results.values()))
  claims = list(runs.values()) + list(times.values()) + [{'kind': 'meta', 'wall_s': wall}]
  atomic_write_text(os.path.join(out, CLAIMS), ''.join(json.dumps(r) + '\n' for r in claims))
  return {'runs': len(results), 'replaced': replaced, 'measured': len(runs)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('roots', nargs='+', help='roots holding results.jsonl (+ claims.jsonl), earliest first')
  p.add_argument('--out', required=True, help='the merged root (results.jsonl, claims.jsonl written there)')
  args = p.parse_args(argv)
  try:
    n = merge_roots(args.roots, args.out)
  except (OSError, ValueError) as e:
    print(f'merge: error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {args.out}: {n["runs"]} runs ({n["replaced"]} replaced by a later root), {n["measured"]} measured')
  return 0


if __name__ == '__main__':
  sys.exit(main())
