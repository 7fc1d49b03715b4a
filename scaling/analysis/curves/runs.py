"""Run directories into loss curves: the metric's rows of metrics.jsonl against the number of updates behind each,
with the run's per-update lr rebuilt from its config.json (a cooldown branch: the parent's steps up to the fork,
then its own).

A run directory is what `scaling train` writes (scaling/train/loop.py, metrics.py): config.json (the resolved
config) and metrics.jsonl (one row per log_every steps: train/loss, train/lr, ...; eval/loss at eval_every and at
the end). A branch's metrics.jsonl holds only its own steps (after the fork); the steps before are its parent's,
found through train.init_from ('WORKDIR[:STEP]', a relative WORKDIR taken from the branch's directory).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Sequence

import numpy as np

from scaling.analysis.curves.schedules import CurveError, Schedule, branch_schedule, schedule_of

METRICS = ('train/loss', 'eval/loss')
# What makes two runs "the same model size" for one curve law: the model, the data and the optimizer's scalars
# (the schedule and length are what the law predicts across). Compute-only fields are left out.
SAME_RUN = {'model': None, 'data': ('corpus', 'tokenizer', 'vocab_size', 'train_tokens', 'document_masking'),
            'train': ('batch_size', 'lr', 'b1', 'b2', 'eps', 'weight_decay', 'grad_clip', 'z_loss')}
COMPUTE_ONLY = ('scan_layers', 'remat', 'attention', 'attention_block_size')


@dataclasses.dataclass
class Curve:
  """One run's loss curve: loss[i] was measured after t[i] updates; schedule.eta covers its whole run."""
  name: str
  path: str
  metric: str
  t: np.ndarray
  loss: np.ndarray
  schedule: Schedule
  config: dict
  parent: str | None = None      # a branch: the parent's directory
  fork: int | None = None        # ... and the fork step
  final_step: int = 0            # the run's last logged step of the metric


def updates_behind(metric: str, steps: np.ndarray) -> np.ndarray:
  """train/* rows at step s are the loss before update s (s - 1 updates); eval rows come after it (s)."""
  return steps - 1 if metric.startswith('train/') else steps


def read_config(run_dir) -> dict:
  path = pathlib.Path(run_dir) / 'config.json'
  if not path.is_file():
    raise CurveError(f'{run_dir}: no config.json. Give the directory of a run that `scaling train` wrote '
                     f'(its workdir, e.g. ROOT/runs/<hash>)')
  try:
    cfg = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise CurveError(f'{path}: not valid JSON ({e}); restore the run\'s config.json') from None
  if not isinstance(cfg.get('train'), dict) or 'lr' not in cfg['train']:
    raise CurveError(f'{path}: no train section with an lr: not a scaling run config')
  return cfg


def total_steps(cfg: dict) -> int:
  """train.steps, or tokens // (batch_size * seq_len) when train.tokens > 0 (scaling/config/load.py)."""
  t = cfg['train']
  if (t.get('tokens') or 0) > 0:
    return max(1, int(t['tokens']) // (int(t['batch_size']) * int(cfg['model']['seq_len'])))
  return int(t['steps'])


def read_metric(run_dir, metric: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of the rows with a finite `metric`, by step (a later row of one step replaces an earlier)."""
  path = pathlib.Path(run_dir) / 'metrics.jsonl'
  if not path.is_file():
    raise CurveError(f'{run_dir}: no metrics.jsonl: the run has not logged yet (train it, or give another run)')
  rows = {}
  for n, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      raise CurveError(f'{path}:{n}: not a JSON row; a damaged metrics.jsonl: remove the line') from None
    v = row.get(metric)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 'step' in row:
      rows[int(row['step'])] = float(v)
  steps = np.array(sorted(rows), dtype=np.int64)
  return steps, np.array([rows[s] for s in steps], dtype=np.float64)


def parent_of(cfg: dict, run_dir) -> tuple[str, int | None] | None:
  """(parent directory, fork step or None) of a branch (train.init_from), else None."""
  spec = cfg['train'].get('init_from') or ''
  if not spec:
    return None
  path, sep, tail = spec.rpartition(':')
  path, step = (path, int(tail)) if sep and tail.isdigit() and path else (spec, None)
  p = pathlib.Path(path).expanduser()
  p = p if p.is_absolute() else (pathlib.Path(run_dir).absolute() / p).resolve()
  return str(p), step


def run_schedule(run_dir, cfg: dict | None = None) -> tuple[Schedule, str | None, int | None]:
  """(the run's Schedule over all its updates, parent directory, fork step); for a plain run (sched, None, None)."""
  cfg = cfg or read_config(run_dir)
  n = total_steps(cfg)
  par = parent_of(cfg, run_dir)
  if par is None:
    return schedule_of(cfg['train'], n), None, None
  parent_dir, fork = par
  if not os.path.isdir(parent_dir):
    raise CurveError(f'{run_dir} is a cooldown branch of {parent_dir} (train.init_from='
                     f'{cfg["train"]["init_from"]!r}), which does not exist: its steps before the fork are the '
                     f'parent\'s. Copy the parent beside it, or give runs that are not branches')
  pcfg = read_config(parent_dir)
  if fork is None:
    steps, _ = read_metric(parent_dir, 'train/loss')
    if not steps.size:
      raise CurveError(f'{run_dir}: train.init_from names no step and the parent {parent_dir} logged none')
    fork = int(steps[-1])
  return branch_schedule(pcfg['train'], total_steps(pcfg), fork, cfg['train'], n), parent_dir, fork


def load_curve(run_dir, metric: str = 'train/loss', with_parent: bool = True) -> Curve:
  """The run's curve of `metric`; a branch's includes its parent's rows up to the fork unless with_parent=False."""
  if metric not in METRICS:
    raise CurveError(f'--metric {metric!r}: curves are fitted to one of {", ".join(METRICS)}')
  run_dir = str(pathlib.Path(run_dir))
  cfg = read_config(run_dir)
  sched, parent, fork = run_schedule(run_dir, cfg)
  steps, vals = read_metric(run_dir, metric)
  final = int(steps[-1]) if steps.size else 0
  if parent is not None:
    steps, vals = steps[steps > fork], vals[steps > fork]
    if with_parent:
      ps, pv = read_metric(parent, metric)
      keep = ps <= fork
      steps, vals = np.concatenate([ps[keep], steps]), np.concatenate([pv[keep], vals])
  if not steps.size:
    hint = (' (eval/loss is logged every train.eval_every steps and at the end: use --metric train/loss)'
            if metric == 'eval/loss' else '')
    raise CurveError(f'{run_dir}: metrics.jsonl has no {metric} rows{hint}')
  return Curve(name=pathlib.Path(run_dir).name, path=run_dir, metric=metric, t=updates_behind(metric, steps),
               loss=vals, schedule=sched, config=cfg, parent=parent, fork=fork, final_step=final)


def same_run_fields(cfg: dict) -> dict:
  """The fields two runs must share for one curve law to describe both (SAME_RUN)."""
  out = {}
  for section, keys in SAME_RUN.items():
    sec = cfg.get(section) or {}
    names = [k for k in sec if k not in COMPUTE_ONLY] if keys is None else keys
    out.update({f'{section}.{k}': sec[k] for k in names if k in sec})
  return out


def differences(a: dict, b: dict) -> list[str]:
  """'model.d_model 128 vs 256', ... between two configs' SAME_RUN fields. A field one config lacks is not compared:
  a config.json written before the field existed ran at its neutral value (scaling/config/load.py HASH_NEUTRAL)."""
  fa, fb = same_run_fields(a), same_run_fields(b)
  return [f'{k} {fa[k]!r} vs {fb[k]!r}' for k in sorted(set(fa) & set(fb))
          if fa[k] is not None and fb[k] is not None and fa[k] != fb[k]]


def load_sources(run_dirs: Sequence, metric: str = 'train/loss') -> list[Curve]:
  """The curves to fit: every run of one model size and optimizer setting. A branch whose parent is also given
  keeps only its own rows (the parent's are counted once, in the parent's curve)."""
  if not run_dirs:
    raise CurveError('no runs given: name the run directories to fit (--runs DIR [DIR ...])')
  paths = [str(pathlib.Path(d).resolve()) for d in run_dirs]
  if len(set(paths)) != len(paths):
    raise CurveError(f'a run is given twice: {[d for d, p in zip(run_dirs, paths) if paths.count(p) > 1][0]}')
  curves = []
  for d, p in zip(run_dirs, paths):
    cfg = read_config(d)
    par = parent_of(cfg, d)
    curves.append(load_curve(d, metric, with_parent=par is None or par[0] not in paths))
  for c in curves[1:]:
    diff = differences(curves[0].config, c.config)
    if diff:
      raise CurveError(f'{c.path} is not a run of the same model and optimizer as {curves[0].path} '
                       f'({"; ".join(diff)}): a curve law is fitted to runs of one model size and lr; give those')
  return curves
