"""batch: batch size as a measured axis (issue #37) on the prose corpus, three sizes of isoflop_v2's shape family.

  python configs/sweeps/batch.py                 # the plan: every arm's runs, tokens and estimated CPU hours
  scaling sweep --config configs/sweeps/batch.py --backend local --root sweeps/batch --max-parallel 2
  scaling cbs report --root sweeps/batch --out docs/results/batch            # (a): cbs.json, cbs.png
  # then (c): re-submit; the ramp arm is built from docs/results/batch/cbs.json (only the new runs train)

(a) CBS against tokens, per size. One constant-lr parent at batch B0 = 8 x 256 tokens trains D_MAX = TOKENS_PER_PARAM
    x N tokens and keeps a checkpoint at FORK_FRACTIONS of it; from each, `scaling cbs` branches (batch k B0, k in
    FACTORS, lr x sqrt(k), a window of WINDOW_FRACTION of the fork's tokens; k = 1 is the reference). The CBS at
    each fork is the largest k B0 within TOLERANCE nats of the reference at the window's end (Merrill et al. 2025),
    with a bootstrap interval (scaling/analysis/cbs.py).
(b) B_opt against data, per size: batch in GRID_BATCHES x lr in LR_ARMS x the centre rate x sqrt(B / B0); each
    (batch, lr) arm is one constant-lr parent with WSD cooldown branches (1-sqrt, DECAY_FRACTION) at the budgets
    BUDGET_FRACTIONS x D_MAX (scaling/launch/sweep.py branches). Per (size, budget): the best lr per batch, a
    parabola in log2 B through the best batch and its neighbours gives B_opt; B_opt(D) = a D^b is fitted over the
    budgets and sizes with a bootstrap interval (Zhang et al. 2024: B_opt follows D, not N; DeepSeek LLM 2024:
    B_opt = 0.292 C^0.327).
(c) A batch ramp set from (a) against the fixed batch: per size a WSD run of D_MAX tokens whose batch is the largest
    power of two <= the measured CBS at each fork's tokens (capped at RAMP_MAX; train.batch_schedule from
    scaling/config/batch.py spec_from_tokens; lr x sqrt(B / B0)), against (b)'s B0 arm at D_MAX (the fixed batch,
    centre lr): gradient steps and wall to reach the fixed batch's final loss (goal: >= 25% fewer steps).

Wall: throughput from isoflop_v2's fit to measured tokens/s on this machine kind (tokens_per_s), plus RUN_OVERHEAD_S
per run; `python configs/sweeps/batch.py` prints the totals.
"""

import json
import math
import os
import pathlib
import sys

if __name__ == '__main__' and not __package__:   # `python configs/sweeps/batch.py` from anywhere
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs.sweeps import isoflop_v2 as v2
from configs.sweeps._common import CPU_RUN
from scaling.analysis import cbs as cbs_lib
from scaling.config import batch as batch_lib
from scaling.launch.sweep import BRANCH_KEY, branches

WIDTHS = (64, 128, 192)                  # 0.21M, 0.72M, 1.5M parameters (3 layers, head dim 16)
SEQ_LEN, B0 = 256, 8                     # the base batch: 2,048 tokens a step (isoflop_v2's)
TOKENS_PER_PARAM = 20                    # D_MAX = 20 N (total N)
WARMUP = 50
FORK_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)   # (a): fork points, of D_MAX
FACTORS = (1, 2, 4, 8, 16)               # (a): branch batches k B0
WINDOW_FRACTION, MIN_WINDOW = 0.1, 2e5   # (a): each branch's window, of its fork's tokens
TOLERANCE = cbs_lib.DEFAULT_TOLERANCE
GRID_BATCHES = (8, 16, 32, 64)           # (b)
LR_ARMS = (0.5, 1.0, 2.0)                # (b): x the centre rate x sqrt(B / B0)
BUDGET_FRACTIONS = (0.25, 0.5, 1.0)      # (b): of D_MAX
DECAY_FRACTION, DECAY_SHAPE = 0.2, '1-sqrt'
RAMP_MAX = 64                            # (c): the ramp's largest batch
CBS_JSON = pathlib.Path(__file__).resolve().parents[2] / 'docs' / 'results' / 'batch' / 'cbs.json'
RUN_OVERHEAD_S = v2.RUN_OVERHEAD_S


def get_config(arg=None):
  return v2.get_config(arg)


def size(width: int) -> dict:
  """The overrides of one size: the shape, the data, the base batch, the log and eval settings."""
  return {**CPU_RUN, **v2.shape(width), **v2._data(), 'model.seq_len': SEQ_LEN, 'train.batch_size': B0,
          'train.warmup_steps': WARMUP, 'train.min_lr_ratio': v2.MIN_LR_RATIO}


def d_max(width: int) -> int:
  n = next(f[1] for f in v2.family() if f[0] == width)
  return int(min(TOKENS_PER_PARAM * n, v2.MAX_TOKENS))


def steps_of(tokens: float, batch: int) -> int:
  return max(1, int(round(tokens / (batch * SEQ_LEN))))


def centre_lr(width: int) -> float:
  return v2.centre_lr(width, steps_of(d_max(width), B0))


# ----------------------------------------------------------------------------- (a) CBS against tokens
def cbs_parent(width: int) -> dict:
  steps = steps_of(d_max(width), B0)
  forks = tuple(sorted({steps_of(f * d_max(width), B0) for f in FORK_FRACTIONS}))
  return {**size(width), 'name': 'batch-cbs-parent', 'train.schedule': 'constant', 'train.lr': centre_lr(width),
          'train.steps': steps, 'train.ckpt_steps': forks}


def cbs_rows(width: int) -> list[dict]:
  parent = cbs_parent(width)
  base = {'train': {'batch_size': B0, 'batch_schedule': '', 'schedule': 'constant', 'warmup_steps': WARMUP},
          'model': {'seq_len': SEQ_LEN}}
  rows = [parent]
  keep = {k: v for k, v in parent.items() if k not in ('train.ckpt_steps', 'name')}
  for fork in parent['train.ckpt_steps']:
    window = max(WINDOW_FRACTION * fork * B0 * SEQ_LEN, MIN_WINDOW)
    for r in cbs_lib.plan_rows(base, parent, [fork], FACTORS, int(window), 'sqrt'):
      rows.append({**keep, **r})
  return rows


# ----------------------------------------------------------------------------- (b) B_opt against data
def grid_rows(width: int) -> list[dict]:
  rows = []
  for b in GRID_BATCHES:
    for m in LR_ARMS:
      lr = float(f'{centre_lr(width) * math.sqrt(b / B0) * m:.3g}')
      arm = {**size(width), 'train.batch_size': b, 'train.lr': lr}
      budgets = [steps_of(f * d_max(width), b) for f in BUDGET_FRACTIONS]
      rows += branches([arm], budgets, decay_fraction=DECAY_FRACTION, decay_shape=DECAY_SHAPE,
                       parent={'name': 'batch-grid-parent'}, branch={'name': 'batch-grid'})
  return rows


# ----------------------------------------------------------------------------- (c) the ramp
def measured_cbs() -> dict:
  """{width: [(tokens, CBS)]} from docs/results/batch/cbs.json (`scaling cbs report`), else {}."""
  if not CBS_JSON.is_file():
    return {}
  out = {}
  for p in json.loads(CBS_JSON.read_text())['points']:
    width = int(p.get('width') or _width_of(p['parent']))
    out.setdefault(width, []).append((p['tokens'], p['cbs']))
  return out


def _width_of(parent_dir: str) -> int:
  cfg = json.loads((pathlib.Path(parent_dir) / 'config.json').read_text())
  return int(cfg['model']['d_model'])


def ramp_spec(points) -> str:
  """The batch of each fork's tokens on: the largest power of two <= its CBS, never down, at most RAMP_MAX."""
  at, cur = [], B0
  for tokens, c in sorted(points):
    b = min(RAMP_MAX, 2 ** int(math.floor(math.log2(max(c, B0)))))
    if b > cur:
      at.append((tokens, b))
      cur = b
  return batch_lib.spec_from_tokens(B0, SEQ_LEN, at)


def ramp_rows(width: int, cbs: dict) -> list[dict]:
  if width not in cbs:
    return []
  spec = ramp_spec(cbs[width])
  sched = batch_lib.parse(spec, B0)
  steps = sched.steps_within_windows(d_max(width) // SEQ_LEN)
  return [{**size(width), 'name': 'batch-ramp', 'train.schedule': 'wsd', 'train.lr': centre_lr(width),
           'train.batch_schedule': spec, 'train.batch_lr_rule': 'sqrt', 'train.steps': steps,
           'train.decay_steps': max(1, int(round(DECAY_FRACTION * steps))), 'train.decay_shape': DECAY_SHAPE}]


def get_sweep(arg=None):
  del arg
  cbs = measured_cbs()
  return [r for w in WIDTHS for r in cbs_rows(w) + grid_rows(w) + ramp_rows(w, cbs)]


# ----------------------------------------------------------------------------- the plan
def row_tokens(r: dict) -> float:
  """Tokens a row trains: a branch from its fork on."""
  sched = batch_lib.parse(r.get('train.batch_schedule', ''), r['train.batch_size'])
  start = r[BRANCH_KEY]['step'] if BRANCH_KEY in r else 0
  return (sched.windows_before(r['train.steps']) - sched.windows_before(start)) * SEQ_LEN


def plan() -> list[tuple]:
  cbs = measured_cbs()
  out = []
  for w in WIDTHS:
    fpt = next(f[3] for f in v2.family() if f[0] == w)
    for arm, rows in (('(a) cbs', cbs_rows(w)), ('(b) grid', grid_rows(w)), ('(c) ramp', ramp_rows(w, cbs))):
      tokens = sum(row_tokens(r) for r in rows)
      hours = (tokens / v2.tokens_per_s(fpt) + RUN_OVERHEAD_S * len(rows)) / 3600
      out.append((w, arm, len(rows), tokens, hours))
  return out


def main() -> None:
  print(f'batch study: widths {WIDTHS}, D_MAX = {TOKENS_PER_PARAM} N, base batch {B0} x {SEQ_LEN}')
  print(f'{"width":>5s} {"D_MAX":>8s} {"centre lr":>9s}  {"arm":10s} {"runs":>5s} {"tokens":>9s} {"CPU h":>6s}')
  total_h = total_runs = 0
  for w, arm, n, tokens, hours in plan():
    print(f'{w:5d} {d_max(w):8.3g} {centre_lr(w):9.3g}  {arm:10s} {n:5d} {tokens:9.3g} {hours:6.2f}')
    total_h, total_runs = total_h + hours, total_runs + n
  pending = '' if measured_cbs() else ' ((c) pending: no docs/results/batch/cbs.json yet)'
  print(f'total: {total_runs} runs, {total_h:.1f} CPU hours at one process at a time, ~{total_h / v2.TWO_AT_ONCE:.1f} '
        f'h with two at once{pending}')


if __name__ == '__main__':
  main()
