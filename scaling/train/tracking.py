"""Experiment tracking: Weights & Biases, optional and off by default.

    scaling train --config.logging.wandb_project=my-study            # online
    WANDB_MODE=offline scaling train --config.logging.wandb_project=p # run files only, no network

`MetricsWriter` (scaling/train/metrics.py) hands every metrics row it writes to TensorBoard to the tracker
too, so W&B gets the same scalars at the same steps (train/*, throughput/*, eval/loss, eval/bpb and
every tagged set's eval/<tag>/bpb), plus the resolved config once at the start.

Sweeps are one view. The launcher writes run.json into each run's directory before training starts
(scaling/launch/rundir.py: `hash`, and `sweep` = the sweep file, with `:arg`); a run that finds one is put in
group = the sweep's name (scaling/launch/sweep.py Sweep.name: the file's stem, '-arg') and named by its run hash.
`logging.wandb_group` / `logging.wandb_name` (or $SCALING_WANDB_GROUP / $SCALING_WANDB_NAME) override
both; outside a sweep the name is the workdir's. The W&B run id is derived from the workdir's absolute
path, so a resumed run (preemption, re-run) continues the same W&B run (resume='allow').

Only the main process logs. The run files go to WORKDIR/wandb/. wandb is optional:
`pip install -e '.[wandb]'`; a set project without it is an error before any work.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

from scaling.base import files

INSTALL_HINT = "logging.wandb_project is set but wandb is not installed: `pip install -e '.[wandb]'`"


class TrackingError(RuntimeError):
  pass


def sweep_identity(workdir) -> tuple[str, str] | None:
  """(group, name) of a sweep run from its run.json (the launcher's record), None outside a sweep."""
  try:
    rec = json.loads((pathlib.Path(workdir) / 'run.json').read_text())
  except (OSError, ValueError):
    return None
  if not isinstance(rec, dict) or not rec.get('hash') or not rec.get('sweep'):
    return None
  path, _, arg = str(rec['sweep']).partition(':')
  return pathlib.PurePath(path).stem + (f'-{arg}' if arg else ''), str(rec['hash'])


def identity(logging_cfg, workdir) -> tuple[str | None, str]:
  """(group, run name): config fields, then $SCALING_WANDB_GROUP/NAME, then the sweep's, then the workdir's."""
  sweep = sweep_identity(workdir)
  group = (logging_cfg.get('wandb_group', '') or os.environ.get('SCALING_WANDB_GROUP', '')
           or (sweep[0] if sweep else '')) or None
  name = (logging_cfg.get('wandb_name', '') or os.environ.get('SCALING_WANDB_NAME', '')
          or (sweep[1] if sweep else pathlib.Path(workdir).absolute().name))
  return group, name


def check_available(cfg) -> None:
  """TrackingError when W&B logging is asked for and wandb is missing (call before any long work)."""
  if _project(cfg):
    try:
      import wandb  # noqa: F401
    except ImportError:
      raise TrackingError(INSTALL_HINT) from None


def _project(cfg) -> str:
  lg = cfg.get('logging', None) if hasattr(cfg, 'get') else None
  return str(lg.get('wandb_project', '') or '') if lg is not None else ''


class WandbTracker:
  """One W&B run: log(step, row) of numeric finite scalars; finish()."""

  def __init__(self, cfg, workdir):
    check_available(cfg)
    import wandb

    from scaling.config.load import to_dict
    lg = cfg.logging
    workdir = pathlib.Path(workdir).absolute()
    group, name = identity(lg, workdir)
    mode = lg.get('wandb_mode', '') or os.environ.get('WANDB_MODE', '') or 'online'
    run_id = files.sha256_bytes(str(workdir).encode())[:16]
    workdir.mkdir(parents=True, exist_ok=True)
    self.run = wandb.init(project=lg.wandb_project, entity=lg.get('wandb_entity', '') or None, group=group,
                          name=name, id=run_id, resume='allow', dir=str(workdir), config=to_dict(cfg), mode=mode,
                          settings=wandb.Settings(silent=True, console='off'))

  def log(self, step: int, row: dict) -> None:
    scalars = {k: float(v) for k, v in row.items()
               if k != 'step' and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if scalars:
      self.run.log(scalars, step=int(step))

  def finish(self) -> None:
    self.run.finish()


def make_tracker(cfg, workdir) -> WandbTracker | None:
  """The run's tracker, or None when logging.wandb_project is empty (the default)."""
  return WandbTracker(cfg, workdir) if cfg is not None and _project(cfg) else None
