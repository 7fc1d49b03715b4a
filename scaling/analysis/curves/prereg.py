"""Preregistered predictions: every run of a sweep gets its predicted final loss written down before it trains,
and a scorer compares them with what the runs measured.

`preregister` expands a sweep file exactly as `scaling sweep` does (scaling/launch/sweep.py load_sweep: same runs,
same hashes, cooldown branches resolved to their parent and fork step), fits the named source runs once, and writes
predictions.jsonl: one line per sweep run with its hash, label, steps, schedule, the prediction (state, point, ci,
pi, reason, notes; scaling/analysis/curves/forecast.py), and the provenance of every line: the code's commit (git
rev-parse, with `dirty`), the time (UTC), the sweep spec, the law, the metric and the source runs. A run of another
model size, data or optimizer setting than the sources gets 'cannot predict' with the differences. The file is never
overwritten, and with --root a sweep whose runs have already logged is refused: a preregistration comes first.

`score_predictions(predictions.jsonl, results.jsonl)` matches lines by run hash with `scaling sweep collect`'s
results.jsonl (finished runs: state 'done') and gives per run the error and whether the interval covered the
measured value, and over the runs the mean absolute relative error and the coverage.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
from typing import Sequence

from scaling.analysis.curves.fitting import CannotPredict, bootstrap, fit_curves
from scaling.analysis.curves.forecast import cannot, fit_record, predict_final
from scaling.analysis.curves.laws import make_law
from scaling.analysis.curves.runs import differences, load_sources, total_steps
from scaling.analysis.curves.schedules import CurveError, branch_schedule, schedule_of


def sweep_schedules(sweep) -> list[tuple[object, dict, object]]:
  """(run, its config as a dict, its Schedule) for every run of a loaded Sweep, branches through their parent."""
  from scaling.config import load as config_lib
  by_hash = {r.hash: r for r in sweep.runs}
  out = []
  for r in sweep.runs:
    cfg = config_lib.to_dict(r.config)
    if r.parent is not None:
      pcfg = config_lib.to_dict(by_hash[r.parent].config)
      sched = branch_schedule(pcfg['train'], total_steps(pcfg), r.fork_step, cfg['train'], total_steps(cfg))
    else:
      sched = schedule_of(cfg['train'], total_steps(cfg))
    out.append((r, cfg, sched))
  return out


def _started(root, runs) -> list[str]:
  return [r.hash for r in runs if (pathlib.Path(root) / 'runs' / r.hash / 'metrics.jsonl').is_file()]


def preregister(sweep_spec: str, source_dirs: Sequence[str], out_path: str, *, law: str = 'multipower',
                metric: str = 'train/loss', draws: int = 100, seed: int = 0, root: str | None = None,
                log=print) -> list[dict]:
  """Writes predictions.jsonl (module docstring); returns its records."""
  from scaling.analysis.fit.provenance import code_revision
  from scaling.base.files import atomic_write_text
  from scaling.launch.sweep import load_sweep
  if os.path.exists(out_path):
    raise CurveError(f'{out_path} exists: a preregistration is written once. Choose another --out, or delete it '
                     f'if it was never used')
  sweep = load_sweep(sweep_spec)
  if root is not None:
    started = _started(root, sweep.runs)
    if started:
      raise CurveError(f'{len(started)} run(s) of this sweep have already logged under {root} (e.g. {started[0]}): '
                       f'predictions written now are not preregistered. Preregister before `scaling sweep`')
  curves = load_sources(source_dirs, metric)
  try:
    fit = bootstrap(fit_curves(make_law(law), curves), draws=draws, seed=seed)
    record, fit_error = fit_record(fit), None
  except CannotPredict as e:
    fit, record, fit_error = None, None, str(e)
  rev = code_revision()
  common = {'sweep': sweep_spec, 'law': law, 'metric': metric, 'commit': rev['commit'], 'dirty': rev['dirty'],
            'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'sources': [{'run': c.name, 'path': c.path, 'last_step': c.final_step} for c in curves]}
  lines = []
  for run, cfg, sched in sweep_schedules(sweep):
    diff = differences(curves[0].config, cfg)
    if fit_error:
      pred = cannot(fit_error)
    elif diff:
      pred = cannot(f'not the model and optimizer of the source runs ({"; ".join(diff)}): fit on runs of this '
                    f'size and lr')
    else:
      pred = predict_final(fit, sched, seed=seed)
    lines.append({'run': run.hash, 'label': run.label, 'index': run.index, 'steps': sched.total,
                  'schedule': sched.label, **pred, **common})
  text = ''.join(json.dumps(line, sort_keys=True) + '\n' for line in lines)
  if record is not None:
    atomic_write_text(f'{out_path}.fit.json', json.dumps(record, indent=1, sort_keys=True) + '\n')
  atomic_write_text(out_path, text)
  n = sum(line['state'] == 'predicted' for line in lines)
  log(f'preregistered {len(lines)} runs of {sweep.name} ({n} predicted) -> {out_path}')
  return lines


def _read_jsonl(path: str, what: str) -> list[dict]:
  if not os.path.isfile(path):
    raise CurveError(f'{what} {path} does not exist')
  out = []
  for n, line in enumerate(pathlib.Path(path).read_text().splitlines(), 1):
    if line.strip():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        raise CurveError(f'{path}:{n}: not a JSON line') from None
  return out


def score_predictions(predictions_path: str, results_path: str, interval: str = 'pi') -> dict:
  """Per run: predicted, measured (results.jsonl's column of the prediction's metric), error = predicted -
  measured, rel_error = error / measured, covered = measured within the `interval` ('pi' or 'ci'); and a summary:
  how many were predicted, scored (predicted and finished), missing, cannot predict; the mean absolute relative
  error and the coverage (covered / scored) over the scored runs."""
  if interval not in ('pi', 'ci'):
    raise ValueError(f'interval must be pi or ci, got {interval!r}')
  preds = _read_jsonl(predictions_path, 'predictions')
  results = {r.get('run'): r for r in _read_jsonl(results_path, 'results') if r.get('state', 'done') == 'done'}
  runs, missing, cannot_n = [], 0, 0
  for p in preds:
    if p.get('state') != 'predicted':
      cannot_n += 1
      continue
    r = results.get(p['run'])
    measured = r.get(p['metric']) if r else None
    if not isinstance(measured, (int, float)) or not math.isfinite(measured):
      missing += 1
      continue
    lo, hi = p[interval]
    err = p['point'] - measured
    runs.append({'run': p['run'], 'label': p.get('label'), 'predicted': p['point'], 'measured': measured,
                 'error': err, 'rel_error': err / measured, 'interval': [lo, hi], 'covered': lo <= measured <= hi})
  n = len(runs)
  summary = {'predictions': len(preds), 'scored': n, 'missing': missing, 'cannot_predict': cannot_n,
             'interval': interval,
             'mean_abs_rel_error': sum(abs(r['rel_error']) for r in runs) / n if n else None,
             'coverage': sum(r['covered'] for r in runs) / n if n else None}
  return {'runs': runs, 'summary': summary}
