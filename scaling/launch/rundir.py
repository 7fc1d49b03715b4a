"""Run directories: where each run's state lives, who may touch it, and when.

    ROOT/runs/<config_hash>/
      run.json        written only by a launcher, only while it holds .lock:
                      overrides, config spec and flags, resolved config,
                      attempts (backend, start/end, host, pid or job id,
                      exit code, outcome) and the current state; read and
                      changed as a RunRecord (scaling/launch/record.py)
      .lock           fcntl.flock target; a launcher holds it while it decides
                      and submits (queue backends), or for as long as the run
                      executes (local: the training process inherits it, so the
                      lock outlives a killed launcher until training ends)
      train.log       local/tpu-vm output;  slurm-<jobid>.out for SLURM; a packed attempt
                      (scaling/launch/packing.py) writes one line here pointing at
                      ROOT/packs/<id>.log, the output of its members' one process
      config.json, metrics.jsonl, checkpoints, summary.json
                      written only by `scaling train`

So every file has one writer, and `status`/`collect` only read: they work from
any machine that sees ROOT.

States: pending (never started), running (local process alive), submitted
(queued on a cluster; job id recorded), done (summary.json says so), failed
(last attempt exited non-zero), preempted (exit 75: checkpointed, resumable),
interrupted (stopped from outside: cancelled, launcher died).
An attempt's outcome counts against --max-retries only when it is `failed`.
File names and exit codes are in scaling/base/layout.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shlex
import socket
import sys
from typing import Iterator

from scaling.base.files import atomic_write_json, atomic_write_text, lock_fd, unlock_fd
from scaling.base.layout import LOCK, METRICS, RESULTS, RUN_JSON, RUNS_DIR, SUMMARY
from scaling.base.workdir_lock import pid_alive  # jax-free
from scaling.launch.record import RunRecord, as_record

LINEAGE_KEYS = ('role', 'parent', 'fork_step', 'own_tokens', 'own_flops')   # collect columns of branches
CKPT_DIR = 'checkpoints'   # scaling/train/checkpoint.py CKPT_DIR (not imported: the launcher does not load jax)
RESULT_KEYS = ('params', 'non_embedding_params', 'tokens', 'flops', 'train/loss', 'eval/loss', 'eval/bpb',
               'throughput/tokens_per_s', 'wall_s')


def train_prefix() -> list[str]:
  """The training command prefix: $SCALING_TRAIN_CMD (split like a shell) or `python -m scaling train`."""
  env = os.environ.get('SCALING_TRAIN_CMD', '').strip()
  return shlex.split(env) if env else [sys.executable, '-m', 'scaling', 'train']


def train_argv(prefix: list[str], spec: str, workdir: str, flags: list[str]) -> list[str]:
  """The full training command of one run. Samples at the end are skipped: sweeps measure, they do not chat."""
  return list(prefix) + ['--config', spec, '--workdir', str(workdir), '--no_sample'] + list(flags)


class RunDir:
  """One run's directory under ROOT/runs/ and the files in it."""

  def __init__(self, root: str | os.PathLike, run_hash: str):
    self.root = pathlib.Path(root)
    self.hash = run_hash
    self.path = self.root / RUNS_DIR / run_hash

  def __repr__(self):
    return f'RunDir({str(self.path)!r})'

  # ---- files -------------------------------------------------------------------------------------
  def read(self) -> dict | None:
    """run.json as JSON (None if missing); `load` gives it as a RunRecord."""
    try:
      with open(self.path / RUN_JSON) as f:
        return json.load(f)
    except FileNotFoundError:
      return None

  def load(self) -> RunRecord | None:
    return as_record(self.read())

  def write(self, rec: RunRecord | dict) -> None:
    """Atomically replaces run.json (callers hold the lock)."""
    atomic_write_json(self.path / RUN_JSON, rec.to_json() if isinstance(rec, RunRecord) else rec, indent=1,
                      sort_keys=True, end='\n')

  def summary(self) -> dict | None:
    """summary.json when training finished (state 'done'), else None."""
    try:
      with open(self.path / SUMMARY) as f:
        s = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
      return None
    return s if s.get('state') == 'done' else None

  def last_metrics(self, key: str | None = None) -> dict:
    """The last complete line of metrics.jsonl (that has `key`, when given); {} if none. Reads only the tail."""
    p = self.path / METRICS
    try:
      with open(p, 'rb') as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read().decode(errors='replace')
    except FileNotFoundError:
      return {}
    for line in reversed(tail.splitlines()):
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if key is None or key in row:
        return row
    return {}

  def latest_checkpoint(self) -> int | None:
    """The newest finished checkpoint's step in checkpoints/ (None: none); what a restart resumes from."""
    ckpt = self.path / CKPT_DIR
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and p.is_dir()] if ckpt.is_dir() else []
    return max(steps, default=None)

  def has_checkpoint(self, step: int | None = None) -> bool:
    """A finished checkpoint (of `step`, or any) in checkpoints/: orbax renames a step's directory into
    place only once its save is complete, so a directory named by the step is one."""
    ckpt = self.path / CKPT_DIR
    if step is not None:
      return (ckpt / str(step)).is_dir()
    return ckpt.is_dir() and any(p.name.isdigit() and p.is_dir() for p in ckpt.iterdir())

  # ---- lock --------------------------------------------------------------------------------------
  def try_lock(self, timeout: float = 0.0) -> int | None:
    """Takes the run's flock; returns the fd, or None when another process holds it past `timeout`."""
    fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      held = lock_fd(fd, timeout=timeout)
    except BaseException:
      os.close(fd)
      raise
    if not held:
      os.close(fd)
      return None
    return fd

  @staticmethod
  def unlock(fd: int) -> None:
    unlock_fd(fd)
    os.close(fd)

  @contextlib.contextmanager
  def locked(self, timeout: float = 0.0) -> Iterator[int | None]:
    fd = self.try_lock(timeout)
    try:
      yield fd
    finally:
      if fd is not None:
        self.unlock(fd)


# --------------------------------------------------------------------------------------------------
# Records.


def ensure_run_dir(rd: RunDir, run, sweep) -> None:
  """Creates the run directory and its run.json (under the lock) if missing."""
  rd.path.mkdir(parents=True, exist_ok=True)
  if (rd.path / RUN_JSON).exists():
    return
  with rd.locked(timeout=30) as fd:
    if fd is None:
      raise TimeoutError(f'could not lock {rd.path} within 30 s to create run.json')
    if rd.read() is None:
      rd.write(RunRecord.new(run, sweep))


def fork_ready(root, run) -> bool:
  """Whether `run` can start: it is no branch, or its parent's checkpoint at the fork step exists, or the
  branch has a checkpoint (it resumes from it) or a summary of its own."""
  if getattr(run, 'parent', None) is None:
    return True
  own = RunDir(root, run.hash)
  if own.summary() is not None or own.has_checkpoint():
    return True
  return RunDir(root, run.parent).has_checkpoint(run.fork_step)


def effective_state(rd: RunDir, rec: RunRecord | dict | None) -> str:
  """The state a reader reports: summary.json wins; a 'running' local process that is gone is 'interrupted'."""
  if rd.summary() is not None:
    return 'done'
  rec = as_record(rec)
  if rec is None:
    return 'pending'
  a = rec.last
  if rec.state == 'running' and a and a.host == socket.gethostname() and a.pid:
    if not pid_alive(a.pid):
      return 'interrupted'
  return rec.state


def scan(root: str | os.PathLike) -> list[tuple[RunDir, RunRecord]]:
  """All runs under ROOT/runs, ordered by their index in the sweep."""
  runs_dir = pathlib.Path(root) / RUNS_DIR
  out = []
  if runs_dir.is_dir():
    for p in sorted(runs_dir.iterdir()):
      if p.is_dir():
        rd = RunDir(root, p.name)
        rec = rd.load()
        if rec is not None:
          out.append((rd, rec))
  out.sort(key=lambda t: (t[1].sweep, t[1].index))
  return out


# --------------------------------------------------------------------------------------------------
# status and collect (read-only, except results.jsonl which collect writes atomically).


def _fmt_overrides(ov: dict) -> str:
  from scaling.launch.sweep import format_value
  return ' '.join(f'{k}={format_value(v)}' for k, v in ov.items())


def status_rows(root) -> list[dict]:
  rows = []
  for rd, rec in scan(root):
    m = rd.last_metrics()
    summ = rd.summary() or {}
    a = rec.last
    rows.append({
        'run': rd.hash,
        'overrides': rec.overrides,
        'label': rec.label or _fmt_overrides(rec.overrides),
        'state': effective_state(rd, rec),
        'step': summ.get('step', m.get('step')),
        'train_loss': summ.get('train/loss', m.get('train/loss')),
        'eval_loss': summ.get('eval/loss', rd.last_metrics('eval/loss').get('eval/loss')),
        'attempts': len(rec.attempts),
        'job': (a.job_id or a.pid) if a else None,
    })
  return rows


def format_table(rows: list[dict], cols: list[str]) -> str:
  def cell(v):
    if v is None:
      return '-'
    if isinstance(v, float):
      return f'{v:.4g}'
    return str(v)
  cells = [[cell(r.get(c)) for c in cols] for r in rows]
  widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
  lines = ['  '.join(c.ljust(w) for c, w in zip(cols, widths))]
  lines += ['  '.join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
  return '\n'.join(lines)


def _accounting(config: dict) -> dict:
  """params / non-embedding params / flops for a run that has no summary yet (via scaling.model.accounting)."""
  try:
    import ml_collections

    from scaling.config.load import train_steps
    from scaling.model import accounting
  except ImportError:
    return {}
  try:
    cfg = ml_collections.ConfigDict(config)
    counts = accounting.count_params(cfg.model)
    tokens = train_steps(cfg) * cfg.train.batch_size * cfg.model.seq_len
    fpt = accounting.flops_per_token(cfg.model)
    return {'params': counts['total'], 'non_embedding_params': counts['non_embedding'],
            'tokens': tokens, 'flops': fpt * tokens}
  except Exception:  # pylint: disable=broad-except
    return {}      # accounting is best effort for unfinished runs; summary.json is authoritative


def lineage(config: dict) -> tuple[str, int] | None:
  """(parent run hash, fork step) of a branch's resolved config (train.init_from = '../<hash>:<step>')."""
  spec = ((config or {}).get('train') or {}).get('init_from') or ''
  path, sep, step = spec.rpartition(':')
  if not sep or not step.isdigit():
    return None
  return pathlib.PurePath(path).name, int(step)


def _add_lineage(row: dict, rec: RunRecord, parents: set[str]) -> None:
  """Lineage and compute columns of a collect row: role, parent, fork_step, own_tokens, own_flops.

  'tokens' and 'flops' stay a run's whole training (for a branch its parent's steps before the fork
  included: the fit's D and C). 'own_tokens'/'own_flops' are what this run itself trained, so the
  sweep's total compute is the sum of own_flops (the shared stable phase counted once, in its parent).
  A finished parent's state is 'parent' (its lr never decayed: no fit point; the fit leaves it out
  with a note, `scaling report` counts its compute).
  """
  lin = lineage(rec.config)
  row['role'] = 'branch' if lin else ('parent' if rec.hash in parents else None)
  row['parent'], row['fork_step'] = lin if lin else (None, None)
  tokens, flops = row.get('tokens'), row.get('flops')
  own = tokens
  if lin and isinstance(tokens, (int, float)):
    t = (rec.config or {}).get('train') or {}
    per_step = int(t.get('batch_size', 0)) * int(((rec.config or {}).get('model') or {}).get('seq_len', 0))
    own = tokens - lin[1] * per_step
  row['own_tokens'] = own
  row['own_flops'] = (flops * own / tokens if isinstance(flops, (int, float)) and isinstance(own, (int, float))
                      and tokens else None)
  if row['role'] == 'parent' and row['state'] == 'done':
    row['state'] = 'parent'


def collect_rows(root) -> list[dict]:
  from scaling.config.history import read_history, summarize  # jax-free: each run's history.jsonl
  rows = []
  found = scan(root)
  parents = {lin[0] for _, rec in found if (lin := lineage(rec.config))}
  for rd, rec in found:
    summ = rd.summary()
    row = {'run': rd.hash, 'overrides': rec.overrides, 'state': effective_state(rd, rec)}
    if summ is not None:
      src = summ
    else:
      src = _accounting(rec.config)
      m = rd.last_metrics()
      for k in m:   # train/loss (a mixture's train/<source>/loss too) and every eval: eval/<tag>/bpb (evalsets.py)
        if k == 'train/loss' or k.startswith('eval/') or k.startswith('train/') and k.endswith('/loss'):
          src[k] = m[k]
    for k in RESULT_KEYS:
      row[k] = src.get(k)
    for k, v in src.items():   # extra evaluations: eval/bpb@2x (length generalisation), eval/<tag>/bpb (tagged sets)
      if (k.startswith('eval/bpb@') or k.startswith('eval/loss@') or k.count('/') == 2 and k.startswith('eval/')
          or k.count('/') == 2 and k.startswith('train/') and k.endswith('/loss')):   # a mixture's per-source loss
        row[k] = v
    row['name'] = (rec.config or {}).get('name') or rec.overrides.get('name')
    row['changes'] = summarize(read_history(rd.path))   # config changes after the run started: [] for none
    _add_lineage(row, rec, parents)
    rows.append(row)
  return rows


def branch_compute(rows: list[dict]) -> dict | None:
  """The compute of a sweep's cooldown branches against separate runs, from collect rows (None: no branch).

  sweep_flops: what the branches and their parents trained (each parent once, each branch its decay);
  separate_flops: the branches' full FLOPs, what as many separate runs of those lengths would take.
  Only finished rows count (the fraction of a half-run sweep would mean nothing).
  """
  branches = [r for r in rows if r.get('role') == 'branch' and r.get('state') == 'done']
  used = {r.get('parent') for r in branches}
  parents = [r for r in rows if r.get('role') == 'parent' and r.get('run') in used]
  if not branches or any(not isinstance(r.get('own_flops'), (int, float)) for r in branches + parents):
    return None
  sweep = sum(r['own_flops'] for r in branches + parents)
  separate = sum(r['flops'] for r in branches)
  unfinished = sum(r.get('role') == 'branch' and r.get('state') != 'done' and r.get('parent') in used for r in rows)
  return {'branches': len(branches), 'parents': len(parents), 'sweep_flops': sweep, 'separate_flops': separate,
          'fraction': sweep / separate if separate else None, 'unfinished': unfinished}


def write_results(root) -> pathlib.Path:
  """Writes ROOT/results.jsonl (one row per run) atomically and returns its path."""
  root = pathlib.Path(root)
  rows = collect_rows(root)
  out = root / RESULTS
  atomic_write_text(out, ''.join(json.dumps(r, sort_keys=True) + '\n' for r in rows))
  return out
