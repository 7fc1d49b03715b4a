"""`scaling plot`: a run's loss and learning rate against tokens, or every run of a sweep, as a PNG (jax-free).

    scaling plot --workdir W   ->  W/loss.png: train loss (a line per logged step) and eval loss (points) against
                                   tokens seen, and beneath it the learning rate: the one the run logged
                                   (train/lr in metrics.jsonl), else its schedule rebuilt from config.json
    scaling plot --root R      ->  R/curves.png: every run's train loss (thin) and eval loss (points, joined)
                                   against tokens, one colour per run, a legend of the runs' labels

A run's rows come from its metrics.jsonl (scaling/train/metrics.py writes one per train.log_every steps:
step, train/loss, train/lr, tokens_seen, ...; eval/loss at train.eval_every and at the end). Tokens are the
row's tokens_seen, else step x batch_size x seq_len. A cooldown branch (train.init_from = 'PARENT:STEP')
counts its steps and tokens on from its parent's, so its curves start at its fork; its rebuilt lr schedule
starts there too (the parent trained the steps before at its own lr). The rebuilt schedule follows
scaling/train/optim.py (warmup, then cosine / wsd / constant; decay_steps, decay_shape, min_lr_ratio), computed
by scaling/analysis/curves/schedules.py `lr_at` with numpy.

`plot_run` and `plot_sweep` return what they drew (each axis: its lines' labels and points) besides writing
the PNG: tests/test_plot_runs.py reads that, not the pixels.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

from scaling.analysis.runs_table import config_of, find_runs, read_json, tokens_per_step, total_steps
from scaling.base.files import atomic_open
from scaling.base.layout import METRICS, RUN_JSON, RUNS_DIR

TRAIN, EVAL, LR = 'train/loss', 'eval/loss', 'train/lr'


class PlotError(ValueError):
  """Nothing to plot, or a run's files cannot be read; the message names the run and the fix."""


@dataclasses.dataclass
class RunCurves:
  """One run's curves against tokens: (tokens, value) pairs, sorted by step."""
  path: pathlib.Path
  name: str
  train: list[tuple[float, float]]
  eval: list[tuple[float, float]]
  lr: list[tuple[float, float]]
  lr_source: str                  # 'logged' (train/lr in metrics.jsonl), 'config' (rebuilt) or '' (neither)
  fork_step: int | None = None    # a branch: the parent's step it starts from
  fork_tokens: float | None = None


def read_metrics(path: pathlib.Path) -> list[dict]:
  """The rows of metrics.jsonl by step; a row cut off by a kill is skipped and a step logged twice (an
  older writer that did not drop rows past the checkpoint it resumed from) keeps its last row."""
  try:
    text = (path / METRICS).read_text()
  except OSError:
    return []
  rows: dict[int, dict] = {}
  for line in text.splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and isinstance(row.get('step'), (int, float)):
      rows[int(row['step'])] = row
  return [rows[s] for s in sorted(rows)]


def fork_of(cfg: dict) -> int | None:
  """The fork step of a branch (train.init_from 'WORKDIR:STEP'); None for no branch or no step given."""
  spec = str((cfg.get('train') or {}).get('init_from') or '')
  _, sep, tail = spec.rpartition(':')
  return int(tail) if spec and sep and tail.isdigit() else None


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _tokens(row: dict, tps: int | None) -> float | None:
  t = row.get('tokens_seen')
  if _finite(t):
    return float(t)
  return float(row['step'] * tps) if tps else None


def schedule_points(cfg: dict, start: int = 0) -> list[tuple[float, float]]:
  """The lr of updates start+1 .. total rebuilt from the config, at the tokens seen after each ([] when the
  config lacks what it takes: train.lr, the schedule's fields, batch_size x seq_len)."""
  import numpy as np

  from scaling.analysis.curves.schedules import CurveError, lr_at
  total, tps, train = total_steps(cfg), tokens_per_step(cfg), cfg.get('train') or {}
  if not total or not tps or not _finite(train.get('lr')) or start >= total:
    return []
  counts = np.arange(start, total)
  try:
    lr = lr_at(train, total, counts)
  except (CurveError, KeyError, TypeError, ValueError):
    return []
  return [(float((c + 1) * tps), float(v)) for c, v in zip(counts, lr)]


def run_curves(path) -> RunCurves:
  """A run's curves from its workdir (metrics.jsonl, config.json)."""
  path = pathlib.Path(path)
  cfg = config_of(path)
  if not cfg and not (path / METRICS).exists():
    raise PlotError(f'{path}: no config.json and no metrics.jsonl: give the workdir of a run (`scaling train '
                    f'--workdir W` writes both there), or --root for a sweep root')
  rows = read_metrics(path)
  tps = tokens_per_step(cfg)
  pick = lambda key: [(t, float(r[key])) for r in rows if key in r and _finite(r[key])   # noqa: E731
                      and (t := _tokens(r, tps)) is not None]
  fork = fork_of(cfg)
  logged = pick(LR)
  lr, source = (logged, 'logged') if logged else (schedule_points(cfg, fork or 0), 'config')
  rec = read_json(path / RUN_JSON)
  name = cfg.get('name') or (rec.get('label') if isinstance(rec, dict) else None) or path.name
  return RunCurves(path=path, name=str(name), train=pick(TRAIN), eval=pick(EVAL), lr=lr,
                   lr_source=source if lr else '', fork_step=fork,
                   fork_tokens=float(fork * tps) if fork is not None and tps else None)


# ----------------------------------------------------------------------------- drawing
def _pyplot():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _save(fig, out: pathlib.Path) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  with atomic_open(out, 'wb') as f:
    fig.savefig(f, format='png', dpi=120, bbox_inches='tight')


def save_closed(plt, fig, out) -> pathlib.Path:
  """Writes `fig` to the PNG `out` (atomically), closes it, returns the path."""
  out = pathlib.Path(out)
  _save(fig, out)
  plt.close(fig)
  return out


def drawn(ax) -> dict:
  """What an axis shows: its title and, per line, the label, colour and (x, y) points (for tests and --json)."""
  from matplotlib.colors import to_hex
  return {'title': ax.get_title(), 'xscale': ax.get_xscale(),
          'lines': [{'label': ln.get_label(), 'color': to_hex(ln.get_color()),
                     'x': [float(v) for v in ln.get_xdata()], 'y': [float(v) for v in ln.get_ydata()]}
                    for ln in ax.get_lines()]}


def plot_run(workdir, out=None) -> dict:
  """W/loss.png (or `out`): loss against tokens above, lr beneath. Returns {'out', 'axes': [drawn(ax), ...]}."""
  c = run_curves(workdir)
  if not c.train and not c.eval:
    raise PlotError(f'{c.path}: metrics.jsonl has no train/loss or eval/loss yet: the run has not logged a step '
                    f'(it logs every train.log_every steps); plot it once it has')
  out = pathlib.Path(out) if out else c.path / 'loss.png'
  plt = _pyplot()
  fig, (ax, ax_lr) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5), gridspec_kw={'height_ratios': (2.2, 1)})
  try:
    if c.train:
      ax.plot(*zip(*c.train), color='C0', lw=1.0, label='train/loss')
    if c.eval:
      ax.plot(*zip(*c.eval), color='C1', marker='o', ms=4, lw=1.2, label='eval/loss')
    ax.set_ylabel('loss')
    ax.set_title(f'{c.name} ({c.path.name})' + (f': branch from step {c.fork_step}' if c.fork_step else ''))
    ax.legend()
    ax.grid(alpha=0.3)
    if c.lr:
      src = 'logged' if c.lr_source == 'logged' else 'schedule from config.json'
      ax_lr.plot(*zip(*c.lr), color='C2', lw=1.2, label=f'lr ({src})')
      ax_lr.legend()
    else:
      ax_lr.text(0.5, 0.5, 'no lr: none logged and config.json lacks the schedule', ha='center',
                 transform=ax_lr.transAxes)
    for a in (ax, ax_lr):
      if c.fork_tokens:
        a.axvline(c.fork_tokens, color='grey', ls=':', lw=1, label=f'fork (step {c.fork_step})')
    ax_lr.set_ylabel('learning rate')
    ax_lr.set_xlabel('tokens')
    ax_lr.grid(alpha=0.3)
    result = {'out': str(out), 'axes': [drawn(ax), drawn(ax_lr)], 'lr_source': c.lr_source}
    _save(fig, out)
  finally:
    plt.close(fig)
  return result


MAX_LABEL = 90


def _labels(curves: list[RunCurves]) -> list[str]:
  out = _full_labels(curves)
  return [x if len(x) <= MAX_LABEL else x[:MAX_LABEL - 3] + '...' for x in out]


def _full_labels(curves: list[RunCurves]) -> list[str]:
  """Legend labels: the sweep overrides that differ between the runs (run.json), else the config name; with the
  run's directory name, so a label finds its run."""
  overrides = []
  for c in curves:
    rec = read_json(c.path / RUN_JSON)
    overrides.append(rec.get('overrides') if isinstance(rec, dict) and isinstance(rec.get('overrides'), dict)
                     else None)
  if all(o is not None for o in overrides) and overrides:
    keys = sorted({k for o in overrides for k in o})
    vary = [k for k in keys if len({repr(o.get(k)) for o in overrides}) > 1]
    if vary:
      return [f'{c.path.name}: ' + ' '.join(f'{k.rsplit(".", 1)[-1]}={o.get(k)}' for k in vary if k in o)
              for c, o in zip(curves, overrides)]
  return [f'{c.path.name}: {c.name}' if c.name != c.path.name else c.name for c in curves]


def plot_sweep(root, out=None) -> dict:
  """R/curves.png (or `out`): every run's train and eval loss against tokens. Returns {'out', 'runs', 'skipped',
  'axes': [drawn(ax)]}: per run a thin train line and an eval line with points, in the run's colour."""
  root = pathlib.Path(root)
  base = root / RUNS_DIR if (root / RUNS_DIR).is_dir() else root
  paths = find_runs(base)
  curves, skipped = [], []
  for p in paths:
    c = run_curves(p)
    (curves if c.train or c.eval else skipped).append(c)
  if not curves:
    raise PlotError(f'{root}: none of its {len(paths)} run(s) has logged a loss yet' if paths else
                    f'{root}: no runs under it (a run is a directory with config.json); give a sweep root '
                    f'(--root, with runs/ in it) or a directory of workdirs, or --workdir for one run')
  out = pathlib.Path(out) if out else root / 'curves.png'
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(10, 6))
  cmap = plt.get_cmap('tab10' if len(curves) <= 10 else 'tab20' if len(curves) <= 20 else 'viridis')
  try:
    for i, (c, label) in enumerate(zip(curves, _labels(curves))):
      color = cmap(i if len(curves) <= 20 else i / max(len(curves) - 1, 1))
      if c.train:
        ax.plot(*zip(*c.train), color=color, lw=0.8, alpha=0.6, label=label)
      if c.eval:
        ax.plot(*zip(*c.eval), color=color, marker='o', ms=3.5, lw=1.2,
                label=f'{label} (eval)' if c.train else label)
    ax.set_xscale('log')
    ax.set_xlabel('tokens')
    ax.set_ylabel('loss (thin: train, points: eval)')
    ax.set_title(f'{root.name}: {len(curves)} run(s)' + (f', {len(skipped)} without a logged loss yet'
                                                          if skipped else ''))
    ax.grid(alpha=0.3, which='both')
    handles = [h for h in ax.get_lines() if not h.get_label().endswith(' (eval)')]
    ax.legend(handles=handles, fontsize=7 if len(curves) <= 20 else 5, loc='center left', bbox_to_anchor=(1.01, 0.5),
              ncol=1 if len(curves) <= 25 else 2)
    result = {'out': str(out), 'runs': [str(c.path) for c in curves], 'skipped': [str(c.path) for c in skipped],
              'axes': [drawn(ax)]}
    _save(fig, out)
  finally:
    plt.close(fig)
  return result
