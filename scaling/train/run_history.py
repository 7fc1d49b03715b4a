"""A run over its segments (each start of `scaling train` in its workdir): what a resume may change, the record of
what it changed (history.jsonl), and the times and tokens of every segment (segments.json, summed in summary.json).

    resume: check_changes (before any compile or write) -> begin (before config.json is replaced: the changes
    recorded, the earlier segments read) -> record_segment at each checkpoint, the loop's end and the summary
    -> whole_run: summary.json's totals (wall_s, compile_s, tokens, FLOPs) over every segment

The field classification and the history file's format are the config layer's (scaling/config/history.py).
"""

from __future__ import annotations

import datetime
import json
import time

import numpy as np

from scaling.base.files import atomic_write_json
from scaling.base.layout import SEGMENTS, SUMMARY
from scaling.config import history
from scaling.config.load import ConfigError, to_dict, train_steps

EXTEND, FORCE = 'extend', 'force'
SAID = {history.FREE: 'changed (not the math)', EXTEND: 'extended', FORCE: 'changed by --force-change',
        history.MIXTURE: 'data mixture weights changed (every source keeps its position)'}


def allowed(extend: int | None, force_change: bool) -> frozenset:
  """The changes of the math a resume may make: EXTEND (train.steps/tokens) and/or FORCE (any)."""
  return frozenset(([EXTEND] if extend is not None else []) + ([FORCE] if force_change else []))


def apply_extend(cfg, steps: int | None, workdir) -> None:
  """--extend STEPS: the run in `workdir` continues to STEPS steps in all (train.steps; train.tokens 0), with the
  schedule built for that length. ConfigError when there is no run to continue or it is past STEPS."""
  if steps is None:
    return
  w = workdir
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ConfigError(f'--extend {steps!r}: give the new total number of steps, a positive integer')
  if not history.existing_run(w):
    raise ConfigError(f'--extend {steps} continues a run, but {w} holds none (no config.json and checkpoint); '
                      f'for a new run set --config.train.steps={steps}')
  newest = history.checkpoint_steps(w)[-1]
  if steps < newest:
    raise ConfigError(f'--extend {steps}: {w} is already at step {newest}. To train a shorter run, branch from an '
                      f"earlier checkpoint into a new workdir: --config.train.init_from='{w}:STEP' "
                      f'--config.train.steps={steps} --workdir NEW')
  with cfg.train.unlocked():
    cfg.train.steps, cfg.train.tokens = steps, 0


def check_changes(cfg, workdir, allow=frozenset()) -> None:
  """Before anything is compiled or written: ConfigError if `cfg` changes the math of the run in `workdir` (its
  config.json and a checkpoint exist) in a way `allow` does not cover, naming each field (old -> new) and the
  three ways to change a run. Free fields pass (begin records them)."""
  old, steps = history.read_config_json(workdir), history.checkpoint_steps(workdir)
  if old is None or not steps or FORCE in allow:
    return
  math = [c for c in history.diff(old, to_dict(cfg)) if c.kind == history.MATH
          and c.key not in history.MIXTURE_FIELDS]   # a mixture's weights: each source keeps its position
  if EXTEND in allow:
    math = [c for c in math if c.key not in history.EXTEND_FIELDS]
  if math:
    raise ConfigError(history.refusal(workdir, steps[-1], math, cfg.train.schedule, train_steps(cfg)))


def begin(run) -> None:
  """Main process, before config.json and summary.json are replaced: a resumed run's config changes go into
  history.jsonl (one line per way: free, extend, force; each said in one line), and the segments so far are read
  (segments.json, else the summary.json of an older version); a run starting from scratch has none."""
  w = run.workdir
  resumed = bool(history.checkpoint_steps(w))
  old = history.read_config_json(w)
  if resumed and old is not None:
    _record_changes(run, old)
  elif not resumed and history.history_path(w).exists():
    history.append_history(w, history.entry(0, 'restart', [], note='no checkpoint: the run starts from scratch; '
                                                                   'the lines above were of an earlier run'))
  run.segments = _previous_segments(w) if resumed else []


def _record_changes(run, old: dict) -> None:
  groups = {}
  for c in history.diff(old, to_dict(run.cfg)):
    how = (history.FREE if c.kind == history.FREE else history.MIXTURE if c.key in history.MIXTURE_FIELDS else
           EXTEND if c.key in history.EXTEND_FIELDS and EXTEND in run.allow_change else FORCE)
    groups.setdefault(how, []).append(c)
  step = run.start_step
  for how, changes in groups.items():
    extra = _lr_change(run, old, step) if how in (EXTEND, FORCE) else {}
    history.append_history(run.workdir, history.entry(step, how, changes, **extra))
    lr = extra.get('lr') or {}
    said = (f'; the lr of step {step + 1} is {lr["new"]:.4g} (under the old config {lr["old"]:.4g})'
            if lr.get('old') is not None and lr['old'] != lr['new'] else '')
    run.log(f'{SAID[how]} from step {step}: {history.describe(changes)}{said}; recorded in '
            f'{history.history_path(run.workdir)}')


def _lr_change(run, old: dict, step: int) -> dict:
  """{'lr': {'old', 'new'}}: the base lr of the first step after the change, under the old and the new schedule."""
  import ml_collections

  from scaling.train import optim
  new = float(run.setup.schedule(step))
  try:
    oc = ml_collections.ConfigDict(old)
    before = float(optim.schedule(oc.train, train_steps(oc))(step))
  except Exception:   # noqa: BLE001  (a config.json of an older version: the lr is a note, not a check)
    before = None
  return {'lr': {'old': before, 'new': new}}


# ----------------------------------------------------------------------------- segments
def _previous_segments(w) -> list[dict]:
  try:
    segs = json.loads((w / SEGMENTS).read_text())
  except (OSError, ValueError):
    segs = None
  if isinstance(segs, list):
    return [s for s in segs if isinstance(s, dict)]
  try:   # a run finished by a version without segments.json: its summary.json held its last segment only
    done = json.loads((w / SUMMARY).read_text())
  except (OSError, ValueError):
    return []
  if not isinstance(done, dict) or not isinstance(done.get('wall_s'), (int, float)):
    return []
  return [dict(start=None, end=done.get('step'), wall_s=done['wall_s'], compile_s=done.get('compile_s'),
               tokens_per_s=done.get('throughput/tokens_per_s'),
               source='summary.json of an older version (its last segment only)')]


def record_segment(run, rows=None) -> list[dict]:
  """Every segment of the run, this one (from its start step to run.step, its wall time so far) last; written to
  segments.json (main process) so that a run stopped or killed later keeps it. `rows`: metrics rows for this
  segment's tokens/s when the loop did not collect them (packed members)."""
  from scaling.model import accounting
  tps = list(run.tps_seen) or [r['throughput/tokens_per_s'] for r in rows or ()
                               if 'throughput/tokens_per_s' in r and run.start_step < r.get('step', 0) <= run.step]
  this = dict(start=run.start_step, end=run.step, wall_s=round(time.time() - run.t_start, 3) if run.t_start else None,
              compile_s=run.t_compile, tokens_per_s=float(np.median(tps)) if tps else None,
              tokens_per_step=run.tokens_per_step, flops_per_token=accounting.flops_per_token(run.setup.dims),
              started=datetime.datetime.fromtimestamp(run.t_start or time.time(), datetime.timezone.utc)
              .isoformat(timespec='seconds'))
  segs = list(run.segments or []) + [this]
  if run.is_main and run.segments is not None:
    atomic_write_json(run.workdir / SEGMENTS, segs, indent=1)
  return segs


def whole_run(segments: list[dict], total: int, tokens_per_step: int, fpt, tokens_at=None) -> dict:
  """summary.json's totals: wall_s and compile_s summed over the segments; tokens and FLOPs of the steps the final
  model was trained on (each step at the rate of the last segment that trained it: a step trained again after a
  resume from an older checkpoint counts once; steps of no recorded segment, e.g. a branch's before its fork,
  at this segment's rate); and the segments. `tokens_at(step)`: the tokens of the first `step` steps when the batch
  changes during the run (train.batch_schedule; default step x tokens_per_step)."""
  pieces = []
  for s in segments:
    a, b = s.get('start'), s.get('end')
    if a is None or b is None or 'tokens_per_step' not in s:
      continue
    pieces = [(x, min(y, a), t, f) for x, y, t, f in pieces if x < a] + [(a, b, s['tokens_per_step'],
                                                                          s['flops_per_token'])]
  tokens, flops = total * tokens_per_step, fpt * total * tokens_per_step
  if tokens_at is not None:
    tokens = tokens_at(total)
    flops = fpt * tokens
  for a, b, t, f in pieces:
    n = max(0, min(b, total) - a)
    tokens, flops = tokens + n * (t - tokens_per_step), flops + n * (t * f - tokens_per_step * fpt)
  walls = [s['wall_s'] for s in segments if isinstance(s.get('wall_s'), (int, float))]
  compiles = [s['compile_s'] for s in segments if isinstance(s.get('compile_s'), (int, float))]
  return {'tokens': tokens, 'flops': flops, 'wall_s': sum(walls), 'compile_s': sum(compiles) if compiles else None,
          'segments': segments}
