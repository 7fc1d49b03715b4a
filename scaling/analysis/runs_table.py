"""`scaling runs DIR`: every run under a directory, one line each, read from the files the run left (jax-free).

A run is a directory with config.json (a workdir `scaling train` wrote), or with run.json (a sweep's run that
has not started yet); DIR is a sweep root (its runs/), one workdir, or any tree of them. Nothing inside a run
directory is searched further (checkpoints/, tb/), nor hidden directories.

A run's state, from the first of these that says it:

  done       summary.json says so
  diverged   summary.json says so (a packed member), the launcher recorded exit code 3, or the last logged
             train/loss is not finite
  running    train.lock names a live trainer (a process of this host that exists, or any other host's: it
             cannot be checked from here), or the launcher's record says running/submitted and nothing
             contradicts it (then 'submitted' for a queued job)
  failed     the launcher recorded a failed attempt (a non-zero exit other than 75)
  stopped    anything else that trained: preempted, interrupted, a trainer that is gone
  pending    a sweep's run that never started (run.json, no metrics)

Every number is the run's own: step of total (train.tokens / (batch * seq_len), else train.steps), the final
train and eval loss (summary.json, else the last logged ones), tokens (summary, else the last tokens_seen) and
wall time (summary, else the sum of segments.json). Reading a run costs a few small files and the tail of
metrics.jsonl, so a tree of hundreds of runs lists in well under a second.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import socket
import time

from scaling.base.layout import METRICS, RUN_JSON, RUNS_DIR, SEGMENTS, SUMMARY
from scaling.base.names import EXIT_DIVERGED, EXIT_PREEMPTED
from scaling.base.workdir_lock import LOCK_FILE, pid_alive

CONFIG = 'config.json'
STATES = ('done', 'running', 'submitted', 'stopped', 'diverged', 'failed', 'pending')
COLUMNS = ('run', 'name', 'state', 'step', 'train_loss', 'eval_loss', 'tokens', 'wall')
TAIL_CHUNK = 1 << 16
TAIL_MAX = 1 << 24            # the tail of metrics.jsonl searched for the last eval (16 MiB)


def read_json(path: pathlib.Path):
  """The JSON in `path`, or None when it is missing or cut off (a writer killed mid-write)."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


# ----------------------------------------------------------------------------- finding runs
def is_run_dir(path: pathlib.Path) -> bool:
  return (path / CONFIG).is_file() or (path / RUN_JSON).is_file()


def find_runs(root, progress=None) -> list[pathlib.Path]:
  """The run directories under `root` (root itself when it is one), sorted by path. `progress(n_dirs)` is called
  every few seconds of a long walk."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f'{root} is not a directory: give a sweep root, a workdir or a directory of them')
  if is_run_dir(root):
    return [root]
  found, stack, seen, last = [], [root], 0, time.monotonic()
  while stack:
    d = stack.pop()
    seen += 1
    if progress is not None and time.monotonic() - last > 2.0:
      last = time.monotonic()
      progress(seen)
    try:
      entries = [e for e in os.scandir(d) if e.is_dir(follow_symlinks=False) and not e.name.startswith('.')]
    except OSError:
      continue
    for e in entries:
      p = pathlib.Path(e.path)
      if is_run_dir(p):
        found.append(p)
      else:
        stack.append(p)
  return sorted(found)


# ----------------------------------------------------------------------------- reading one run
def config_of(path: pathlib.Path) -> dict:
  """config.json, else the resolved config the launcher put in run.json, else {}."""
  cfg = read_json(path / CONFIG)
  if isinstance(cfg, dict):
    return cfg
  rec = read_json(path / RUN_JSON)
  return (rec.get('config') or {}) if isinstance(rec, dict) else {}


def tokens_per_step(cfg: dict) -> int | None:
  t, m = cfg.get('train') or {}, cfg.get('model') or {}
  try:
    return int(t['batch_size']) * int(m['seq_len'])
  except (KeyError, TypeError, ValueError):
    return None


def total_steps(cfg: dict) -> int | None:
  """train.tokens // tokens per step when train.tokens > 0 (under a batch schedule the most steps whose tokens fit),
  else train.steps: scaling/config/load.py train_steps on a config dict."""
  t = cfg.get('train') or {}
  tps = tokens_per_step(cfg)
  if (t.get('tokens') or 0) > 0 and tps:
    from scaling.config import batch
    if batch.is_scheduled(t):   # the steps whose tokens fit the budget
      return batch.steps_for_tokens(batch.of(t), int(t['tokens']), int(cfg['model']['seq_len']))
    return max(1, int(t['tokens']) // tps)
  return t.get('steps')


def tail_rows(path: pathlib.Path, want: str = 'eval/loss') -> tuple[dict, dict]:
  """(the last complete row of metrics.jsonl, the last row with key `want`), reading backwards from the end
  only as far as needed (at most TAIL_MAX bytes); ({}, {}) when there is none."""
  try:
    f = open(path, 'rb')
  except OSError:
    return {}, {}
  last, found = {}, {}
  with f:
    end = f.seek(0, os.SEEK_END)
    pos, carry = end, b''
    while pos > 0 and end - pos < TAIL_MAX and not found:
      n = min(TAIL_CHUNK, pos)
      pos -= n
      f.seek(pos)
      block = f.read(n) + carry
      lines = block.split(b'\n')
      carry = lines.pop(0) if pos > 0 else b''   # the first line may be cut: kept for the next block
      for line in reversed(lines):
        row = _row(line)
        if row is None:
          continue
        last = last or row
        if want in row:
          found = row
          break
  return last, found


def _row(line: bytes) -> dict | None:
  if not line.strip():
    return None
  try:
    row = json.loads(line)
  except ValueError:   # a line cut off by a kill mid-write
    return None
  return row if isinstance(row, dict) else None


def _live_lock(path: pathlib.Path, host: str) -> dict | None:
  """train.lock's record when it names a live trainer (this host: its pid exists; another host: assumed)."""
  rec = read_json(path / LOCK_FILE)
  if not isinstance(rec, dict):
    return None
  if rec.get('host') == host and isinstance(rec.get('pid'), int) and not pid_alive(rec['pid']):
    return None   # a stale file: the trainer is gone
  return rec


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def run_state(path: pathlib.Path, summary: dict | None, record: dict | None, last: dict, host: str) -> str:
  """The state of the run in `path` (the module docstring's rules, in order)."""
  s = (summary or {}).get('state')
  if s in ('done', 'diverged'):
    return s
  if 'train/loss' in last and not _finite(last['train/loss']):
    return 'diverged'
  if _live_lock(path, host) is not None:
    return 'running'
  attempts = (record or {}).get('attempts') or []
  a = attempts[-1] if attempts else None
  if a is not None and a.get('outcome') is None:        # the launcher's attempt has not ended
    if a.get('job_id') and not a.get('pid'):
      return 'submitted'
    if a.get('host') not in (None, host) or (isinstance(a.get('pid'), int) and pid_alive(a['pid'])):
      return 'running'
    return 'stopped'                                    # its process is gone, and it holds no lock
  if a is not None:
    if a.get('exit_code') == EXIT_DIVERGED:
      return 'diverged'
    if a.get('outcome') == 'failed' and a.get('exit_code') != EXIT_PREEMPTED:
      return 'failed'
  if not last and not (path / CONFIG).is_file():
    return 'pending'
  return 'stopped'


def _wall(path: pathlib.Path) -> float | None:
  segs = read_json(path / SEGMENTS)
  if not isinstance(segs, list):
    return None
  walls = [s.get('wall_s') for s in segs if isinstance(s, dict) and _finite(s.get('wall_s'))]
  return sum(walls) if walls else None


def _latest_checkpoint(path: pathlib.Path) -> int | None:
  try:
    return max((int(e.name) for e in os.scandir(path / 'checkpoints') if e.name.isdigit()), default=None)
  except OSError:
    return None


def run_row(path: pathlib.Path, root: pathlib.Path, host: str | None = None) -> dict:
  """One run's row: run (its path under root), name, state, step, total_steps, train_loss, eval_loss, tokens,
  wall_s, label (the sweep's), path."""
  host = host or socket.gethostname()
  cfg = config_of(path)
  summary = read_json(path / SUMMARY)
  summary = summary if isinstance(summary, dict) else None
  record = read_json(path / RUN_JSON)
  record = record if isinstance(record, dict) else None
  last, last_eval = tail_rows(path / METRICS)
  src = summary if summary and summary.get('state') == 'done' else {}
  step = src.get('step', (summary or {}).get('step', last.get('step')))
  if step is None:
    step = _latest_checkpoint(path)
  tps = tokens_per_step(cfg)
  tokens = src.get('tokens', last.get('tokens_seen'))
  if tokens is None and step is not None and tps:
    tokens = step * tps
  rel = path.relative_to(root).as_posix() if path != root else path.name
  return {
      'run': rel or path.name, 'name': cfg.get('name') or (record or {}).get('overrides', {}).get('name'),
      'state': run_state(path, summary, record, last, host), 'step': step, 'total_steps': total_steps(cfg),
      'train_loss': src.get('train/loss', last.get('train/loss')),
      'eval_loss': src.get('eval/loss', last_eval.get('eval/loss')),
      'tokens': tokens, 'wall_s': src.get('wall_s', _wall(path)),
      'label': (record or {}).get('label'), 'path': str(path),
  }


def _sweep_order(rows: list[dict]) -> list[dict]:
  """A sweep's runs in their sweep order (run.json 'index'); other runs after them, by path."""
  def key(r):
    rec = read_json(pathlib.Path(r['path']) / RUN_JSON)
    idx = rec.get('index') if isinstance(rec, dict) else None
    return (0, str(rec.get('sweep')), idx, r['run']) if isinstance(idx, int) else (1, '', 0, r['run'])
  return sorted(rows, key=key)


def runs_rows(root, progress=None) -> list[dict]:
  """The rows of every run under `root`: a sweep root's runs in sweep order, other trees by path."""
  root = pathlib.Path(root)
  base = root / RUNS_DIR if (root / RUNS_DIR).is_dir() and not is_run_dir(root) else root
  host = socket.gethostname()
  rows = [run_row(p, base, host) for p in find_runs(base, progress)]
  return _sweep_order(rows)


# ----------------------------------------------------------------------------- the table
def si(x) -> str:
  if not _finite(x):
    return '-'
  for div, unit in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(x) >= div:
      return f'{x / div:.3g}{unit}'
  return f'{x:.3g}'


def duration(s) -> str:
  if not _finite(s):
    return '-'
  s = int(round(s))
  return f'{s // 3600}h{s % 3600 // 60:02d}m' if s >= 3600 else f'{s // 60}m{s % 60:02d}s' if s >= 60 else f'{s}s'


def _cells(r: dict) -> dict:
  step = '-' if r['step'] is None else str(r['step'])
  loss = lambda v: f'{v:.4f}' if _finite(v) else ('nan' if isinstance(v, float) else '-')   # noqa: E731
  return {'run': r['run'], 'name': r['name'] or '-', 'state': r['state'],
          'step': f'{step}/{r["total_steps"] if r["total_steps"] is not None else "?"}',
          'train_loss': loss(r['train_loss']), 'eval_loss': loss(r['eval_loss']), 'tokens': si(r['tokens']),
          'wall': duration(r['wall_s'])}


def format_rows(rows: list[dict]) -> str:
  """The table (one line per run) and a count of runs by state."""
  cells = [_cells(r) for r in rows]
  widths = {c: max([len(c)] + [len(x[c]) for x in cells]) for c in COLUMNS}
  lines = ['  '.join(c.ljust(widths[c]) for c in COLUMNS).rstrip()]
  lines += ['  '.join(x[c].ljust(widths[c]) for c in COLUMNS).rstrip() for x in cells]
  counts: dict[str, int] = {}
  for r in rows:
    counts[r['state']] = counts.get(r['state'], 0) + 1
  lines.append(f'{len(rows)} run(s): ' + ', '.join(f'{counts[s]} {s}' for s in STATES if s in counts))
  return '\n'.join(lines)
