"""The critical batch size by branching (Merrill et al. 2025, "Critical Batch Size Revisited"): `scaling cbs`.

From a run's kept checkpoints at several points (fork steps s, at tokens t_s and batch B), branch with batch k B
for k in a geometric grid (k = 1 is the reference: the run's own batch), each branch a fixed window of W tokens
with its lr scaled by train.batch_lr_rule (sqrt for Adam by default), every branch reading the same windows of the
corpus order (the data position counts sequences: scaling/config/batch.py). The critical batch at t_s is the
largest k B whose branch reaches the reference's loss within a tolerance at the same tokens t_s + W, and every
smaller grid batch does too (a batch above the CBS costs tokens; below it, it does not).

    plan:      branch_overrides / plan_rows  ->  rows of a sweep (configs/sweeps/cbs.py reads a plan.json; a study's
               sweep file adds the rows with its parents: configs/sweeps/batch.py)
    report:    read_branches(root) -> estimate(points, tolerance, tail) -> cbs.json, cbs.png (CBS vs tokens)

The loss of a branch at t_s + W is the mean train loss over the last `tail` of its window (by tokens: the same
sequences for every branch, so the comparison is paired by data). Its interval: the branches' tail points are
resampled (bootstrap) and the estimate redone; the interval runs from the 5th percentile of the estimates to the
95th percentile of the next grid batch above them (the grid brackets the CBS: it lies between the largest batch
that passes and the smallest that fails).

jax-free (numpy; matplotlib for the plot).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np

from scaling.config import batch as batch_lib

DEFAULT_FACTORS = (1, 2, 4, 8, 16)
DEFAULT_TOLERANCE = 0.01    # nats: a branch within this of the reference's loss at the same tokens passes
DEFAULT_TAIL = 0.25         # the share of the window (by tokens) whose train loss is averaged
LOG_POINTS = 40             # logged losses per branch (train.log_every = steps // LOG_POINTS)
NAME = 'cbs'


class CbsError(ValueError):
  """A plan or a report that cannot be made; the message says why and what to do."""


# ----------------------------------------------------------------------------- the plan
def window_steps(window_tokens: int, batch: int, factors, seq_len: int) -> tuple[int, dict]:
  """(W rounded up to a whole number of steps at the largest batch, {k: steps of branch k})."""
  unit = max(factors) * batch * seq_len
  w = max(unit, -(-int(window_tokens) // unit) * unit)
  return w, {k: w // (k * batch * seq_len) for k in factors}


def branch_overrides(train: dict, seq_len: int, fork: int, k: int, steps: int, rule: str) -> dict:
  """The overrides of one branch (batch k x the batch at `fork`) of a parent with train section `train`: the
  parent's batch schedule up to the fork and k B after it, a constant lr (the parent's before the fork when it was
  constant there), the window's steps, logs enough to average its tail, one checkpoint at the end."""
  parent = batch_lib.of(train)
  before = [(s, b) for s, b in parent.changes if s < fork]
  B = parent.batch_at(fork - 1)
  changes = before + ([(fork, k * B)] if k != 1 else [])
  if parent.changes and train.get('batch_lr_rule', 'sqrt') != rule and before:
    raise CbsError(f'the parent changes its batch before step {fork} under batch_lr_rule='
                   f'{train.get("batch_lr_rule")!r}; branch with the same rule (--rule {train.get("batch_lr_rule")})')
  return {'name': NAME, 'train.batch_schedule': batch_lib.format_spec(changes), 'train.batch_lr_rule': rule,
          'train.schedule': 'constant', 'train.steps': fork + steps, 'train.tokens': 0,
          'train.log_every': max(1, steps // LOG_POINTS), 'train.ckpt_every': 10 ** 9, 'train.ckpt_steps': (),
          'train.keep_checkpoints': 1, 'train.eval_every': 10 ** 9}


def check_parent(train: dict, forks) -> None:
  """CBS branches continue at the parent's lr: the parent must be at constant lr at every fork (constant, or wsd
  before its decay) and past its warmup."""
  sched = train.get('schedule')
  warm = int(train.get('warmup_steps', 0))
  if sched == 'cosine':
    raise CbsError('the parent decays its lr (train.schedule=cosine): a branch at another batch would change the '
                   'lr it continues at. Branch from a constant-lr parent (train.schedule=constant, or wsd before its '
                   'decay), as the study does (configs/sweeps/batch.py)')
  if min(forks) <= warm:
    raise CbsError(f'fork step {min(forks)} is inside the parent\'s warmup ({warm} steps): fork after it')


def plan_rows(parent_cfg: dict, parent: str | dict, forks, factors=DEFAULT_FACTORS, window_tokens: int = 0,
              rule: str = 'sqrt') -> list[dict]:
  """Every branch of a CBS measurement: per fork step, one branch per factor k. `parent`: the parent's workdir
  (rows with train.init_from='WORKDIR:STEP') or its overrides in the same sweep (rows with the launcher's
  'branch_of', which waits for the checkpoint). `window_tokens`: each branch's window (rounded up)."""
  from scaling.launch.sweep import BRANCH_KEY
  t, seq_len = parent_cfg['train'], int(parent_cfg['model']['seq_len'])
  factors = sorted({int(k) for k in factors})
  if factors[0] != 1 or len(factors) < 2:
    raise CbsError(f'the factors must include 1 (the reference) and at least one more, got {factors}')
  check_parent(t, forks)
  rows = []
  for fork in sorted(int(s) for s in forks):
    B = batch_lib.of(t).batch_at(fork - 1)
    _, steps = window_steps(window_tokens, B, factors, seq_len)
    for k in factors:
      row = branch_overrides(t, seq_len, fork, k, steps[k], rule)
      if isinstance(parent, dict):
        row[BRANCH_KEY] = {'parent': dict(parent), 'step': fork}
      else:
        row['train.init_from'] = f'{parent}:{fork}'
      rows.append(row)
  return rows


# ----------------------------------------------------------------------------- reading the branches
@dataclasses.dataclass
class Branch:
  path: str
  parent: str        # the parent's workdir (resolved)
  fork: int          # the fork step
  fork_tokens: int   # tokens seen at the fork
  batch: int         # the parent's batch at the fork (B)
  k: int             # the branch's batch / B
  tokens: np.ndarray     # tokens seen of each logged step after the fork
  loss: np.ndarray       # its train loss


def branch_of(path: pathlib.Path, cfg: dict, rows: list[dict]) -> Branch | None:
  """A CBS branch read from its workdir (config.json, metrics.jsonl); None for any other run."""
  from scaling.config.load import parse_init_from
  t = cfg.get('train') or {}
  if cfg.get('name') != NAME or not t.get('init_from'):
    return None
  parent, fork = parse_init_from(t['init_from'])
  sched = batch_lib.of(t)
  B, seq_len = sched.batch_at(fork - 1), int(cfg['model']['seq_len'])
  k, rem = divmod(sched.batch_at(fork), B)
  if rem:
    return None
  pts = [(r['tokens_seen'], r['train/loss']) for r in rows
         if r.get('step', 0) > fork and 'train/loss' in r and 'tokens_seen' in r and math.isfinite(r['train/loss'])]
  if not pts:
    return None
  tok, loss = (np.asarray(x, float) for x in zip(*pts))
  p = pathlib.Path(parent).expanduser()   # relative: from the branch's workdir (scaling/train/branch.py)
  p = p if p.is_absolute() else (pathlib.Path(path).absolute() / p).resolve()
  return Branch(str(path), str(p), fork, sched.tokens_seen(fork, seq_len), B, k, tok, loss)


def read_branches(root) -> list[Branch]:
  from scaling.analysis.run_plot import read_metrics
  from scaling.analysis.runs_table import config_of, find_runs
  out = []
  for path in find_runs(root):
    b = branch_of(path, config_of(path), read_metrics(path))
    if b is not None:
      out.append(b)
  return out


# ----------------------------------------------------------------------------- the estimate
def tail_points(b: Branch, end_tokens: float, tail: float) -> np.ndarray:
  """The branch's losses logged in the last `tail` of the window (tokens in (end - tail W, end])."""
  w = end_tokens - b.fork_tokens
  sel = (b.tokens > end_tokens - tail * w) & (b.tokens <= end_tokens + 0.5)
  return b.loss[sel]


def critical_batch(losses: dict[int, float], tolerance: float) -> int:
  """The largest factor k whose loss, and every smaller factor's, is within `tolerance` of factor 1's."""
  ref, best = losses[1], 1
  for k in sorted(losses):
    if losses[k] > ref + tolerance:
      break
    best = k
  return best


def estimate_point(branches: list[Branch], tolerance: float = DEFAULT_TOLERANCE, tail: float = DEFAULT_TAIL,
                   draws: int = 400, seed: int = 0) -> dict:
  """The CBS at one fork point from its branches (one per factor, k = 1 among them)."""
  by_k = {b.k: b for b in branches}
  if 1 not in by_k:
    raise CbsError(f'fork step {branches[0].fork} of {branches[0].parent}: no reference branch (k = 1)')
  end = min(float(b.tokens.max()) for b in branches)   # a branch still running: compare where all are
  pts = {k: tail_points(b, end, tail) for k, b in sorted(by_k.items())}
  pts = {k: p for k, p in pts.items() if p.size}
  if 1 not in pts or len(pts) < 2:
    raise CbsError(f'fork step {branches[0].fork}: too few logged losses in the window\'s tail')
  grid = sorted(pts)
  means = {k: float(p.mean()) for k, p in pts.items()}
  k_hat = critical_batch(means, tolerance)
  rng = np.random.default_rng(seed)
  est = np.array([critical_batch({k: float(rng.choice(p, p.size).mean()) for k, p in pts.items()}, tolerance)
                  for _ in range(draws)])
  nxt = np.array([grid[grid.index(e) + 1] if e != grid[-1] else np.inf for e in est])
  B, b0 = branches[0].batch, by_k[1]
  return {'parent': b0.parent, 'fork': b0.fork, 'tokens': b0.fork_tokens, 'end_tokens': end, 'batch': B,
          'factors': grid, 'loss': means, 'excess': {k: means[k] - means[1] for k in grid},
          'cbs': k_hat * B, 'cbs_k': k_hat, 'interval': [float(np.percentile(est, 5, method='lower')) * B,
                                                       float(np.percentile(nxt, 95, method='higher')) * B],
          'above_grid': k_hat == grid[-1], 'at_reference': k_hat == 1, 'tolerance': tolerance, 'tail': tail}


def estimate(branches: list[Branch], tolerance: float = DEFAULT_TOLERANCE, tail: float = DEFAULT_TAIL,
             draws: int = 400, seed: int = 0) -> list[dict]:
  """The CBS at every (parent, fork step) point, by tokens seen."""
  groups: dict = {}
  for b in branches:
    groups.setdefault((b.parent, b.fork), []).append(b)
  out = [estimate_point(g, tolerance, tail, draws, seed) for _, g in sorted(groups.items())]
  return sorted(out, key=lambda r: (r['parent'], r['tokens']))


# ----------------------------------------------------------------------------- the report
def describe(points: list[dict]) -> str:
  lines = [f'{"parent":24s} {"fork":>6s} {"tokens":>10s} {"B":>4s} {"CBS":>6s} {"interval":>15s}  excess loss by k']
  for p in points:
    lo, hi = p['interval']
    hi_s = '>max' if math.isinf(hi) else f'{hi:.0f}'
    flag = ' (>= grid)' if p['above_grid'] else ' (<= B)' if p['at_reference'] else ''
    ex = ' '.join(f'{k}:{v:+.3f}' for k, v in p['excess'].items())
    lines.append(f'{pathlib.Path(p["parent"]).name[:24]:24s} {p["fork"]:6d} {p["tokens"]:10.3g} {p["batch"]:4d} '
                 f'{p["cbs"]:6d} {lo:7.0f}-{hi_s:>7s}  {ex}{flag}')
  return '\n'.join(lines)


def plot(points: list[dict], out) -> pathlib.Path:
  """CBS (sequences) against tokens seen at the fork, one line per parent, intervals as error bars."""
  from scaling.analysis.run_plot import _pyplot, save_closed
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for parent in sorted({p['parent'] for p in points}):
    ps = [p for p in points if p['parent'] == parent]
    x = np.array([p['tokens'] for p in ps], float)
    y = np.array([p['cbs'] for p in ps], float)
    top = np.array([min(p['interval'][1], 2 * p['cbs'] * max(p['factors'])) for p in ps])
    err = np.array([y - [p['interval'][0] for p in ps], top - y])
    ax.errorbar(x, y, yerr=np.clip(err, 0, None), marker='o', capsize=3, label=pathlib.Path(parent).name[:16])
  ax.set_xscale('log')
  ax.set_yscale('log', base=2)
  ax.set_xlabel('tokens seen at the fork')
  ax.set_ylabel('critical batch (sequences)')
  ax.set_title('critical batch by branching (Merrill et al. 2025)')
  ax.legend(fontsize=7)
  return save_closed(plt, fig, out)


def report(root, out_dir=None, tolerance: float = DEFAULT_TOLERANCE, tail: float = DEFAULT_TAIL,
           draws: int = 400) -> dict:
  """cbs.json and cbs.png under `out_dir` (default the root) from the CBS branches under `root`."""
  from scaling.base.files import atomic_write_json
  branches = read_branches(root)
  if not branches:
    raise CbsError(f'no CBS branches (runs named {NAME!r} with train.init_from) with logged losses under {root}')
  points = estimate(branches, tolerance, tail, draws)
  out_dir = pathlib.Path(out_dir or root)
  out_dir.mkdir(parents=True, exist_ok=True)
  png = plot(points, out_dir / 'cbs.png')
  doc = {'points': json.loads(json.dumps(points, default=float)), 'png': str(png), 'branches': len(branches)}
  atomic_write_json(out_dir / 'cbs.json', doc, indent=1)
  return doc
