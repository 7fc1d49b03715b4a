"""The --schedule SPEC of `scaling predict`: which schedule (and length) to predict the final loss of.

  constant[:KEY=V,...]      constant lr after warmup
  cosine[:KEY=V,...]        cosine decay to lr * min_lr
  wsd[:KEY=V,...]           warmup-stable-decay: decay=FRACTION (of the steps after warmup) or decay_steps=N,
                            shape=linear|cosine|1-sqrt
  run:DIR                   the schedule of that run directory (a cooldown branch: its parent's steps up to the fork,
                            then its own), at its own length
  config:FILE               the train section of a config.json or a config file (path.py[:arg]), at --steps or
                            its own length

KEY is one of warmup=N, lr=X, min_lr=R (train.min_lr_ratio) and, for wsd, decay, decay_steps, shape. A key not
given takes the source runs' value (the first run's config.json; decay: its decay_fraction). The length is --steps,
else the longest source run's. Examples: `wsd:decay=0.2,shape=1-sqrt`, `cosine:min_lr=0`, `constant`,
`run:sweeps/x/runs/3f2a...`.
"""

from __future__ import annotations

import dataclasses
import pathlib

from scaling.analysis.curves.runs import read_config, run_schedule, total_steps
from scaling.analysis.curves.schedules import DECAY_SHAPES, SCHEDULES, CurveError, Schedule, describe, schedule_of

COMMON_KEYS = {'warmup': 'warmup_steps', 'lr': 'lr', 'min_lr': 'min_lr_ratio', 'min_lr_ratio': 'min_lr_ratio'}
WSD_KEYS = {'decay': 'decay_fraction', 'decay_steps': 'decay_steps', 'shape': 'decay_shape'}
FORMS = 'constant, cosine, wsd[:decay=0.2,shape=1-sqrt], run:DIR or config:FILE'


@dataclasses.dataclass(frozen=True)
class Target:
  """A schedule to predict: its per-update lr, the train section it came from (None for run:DIR), its text."""
  schedule: Schedule
  spec: str
  train: dict | None = None

  @property
  def steps(self) -> int:
    return self.schedule.total


def _value(spec: str, key: str, text: str):
  """A KEY=V value, checked: the error names the spec, the key and what it takes."""
  def bad(what):
    return CurveError(f'--schedule {spec!r}: {key}={text!r} is not {what}')
  if key == 'shape':
    if text not in DECAY_SHAPES:
      raise bad(f'a decay shape ({", ".join(DECAY_SHAPES)})')
    return text
  try:
    v = int(text) if key in ('warmup', 'decay_steps') else float(text)
  except ValueError:
    raise bad('an integer' if key in ('warmup', 'decay_steps') else 'a number') from None
  ok = {'warmup': v >= 0, 'decay_steps': v >= 1, 'lr': v > 0, 'decay': 0 < v < 1}.get(key, 0 <= v <= 1)
  if not ok:
    raise bad({'warmup': '>= 0', 'decay_steps': '>= 1', 'lr': '> 0', 'decay': 'a fraction in (0, 1)'}.get(
        key, 'a ratio in [0, 1]'))
  return v


def _named(spec: str, name: str, args: str, base_train: dict, steps: int) -> Target:
  keys = dict(COMMON_KEYS, **(WSD_KEYS if name == 'wsd' else {}))
  train = {k: base_train.get(k) for k in ('lr', 'warmup_steps', 'min_lr_ratio', 'decay_fraction', 'decay_shape')}
  train.update(schedule=name, decay_steps=0)
  seen = set()
  for part in filter(None, (p.strip() for p in args.split(','))):
    key, eq, text = part.partition('=')
    key = key.strip()
    if not eq or key not in keys:
      extra = '' if name == 'wsd' else ' (decay, decay_steps and shape are for wsd)'
      raise CurveError(f'--schedule {spec!r}: {part!r} is not KEY=VALUE with KEY one of {", ".join(keys)}{extra}')
    if keys[key] in seen:
      raise CurveError(f'--schedule {spec!r}: {key} is given twice')
    seen.add(keys[key])
    train[keys[key]] = _value(spec, key, text.strip())
  if {'decay_fraction', 'decay_steps'} <= seen:
    raise CurveError(f'--schedule {spec!r}: give decay (a fraction) or decay_steps, not both')
  return Target(schedule=schedule_of(train, steps, describe(train, steps)), spec=spec, train=train)


def _config_train(spec: str, path: str) -> tuple[dict, int]:
  """(train section, its length) of a run directory, a config.json or a config file path.py[:arg]."""
  p = pathlib.Path(path.partition(':')[0]) if path.partition(':')[0].endswith('.py') else pathlib.Path(path)
  if p.is_dir() or p.name == 'config.json':
    cfg = read_config(p if p.is_dir() else p.parent)
  elif p.suffix == '.json':
    import json
    try:
      cfg = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
      raise CurveError(f'--schedule {spec!r}: cannot read {p} ({e})') from None
  elif p.suffix == '.py':
    from scaling.config import load as config_lib
    try:
      cfg = config_lib.to_dict(config_lib.load_config(path))
    except (config_lib.ConfigError, OSError, ValueError) as e:
      raise CurveError(f'--schedule {spec!r}: {e}') from None
  else:
    raise CurveError(f'--schedule {spec!r}: config:FILE takes a run directory, a config.json or a config '
                     f'path.py[:arg]')
  if not isinstance(cfg.get('train'), dict) or 'lr' not in cfg['train']:
    raise CurveError(f'--schedule {spec!r}: {p} has no train section with an lr')
  return cfg['train'], total_steps(cfg)


def parse_schedule(spec: str, base_cfg: dict, steps: int | None = None, default_steps: int | None = None) -> Target:
  """The Target a --schedule SPEC names (module docstring); base_cfg is a source run's config (the defaults)."""
  spec = (spec or '').strip()
  if steps is not None and int(steps) < 1:
    raise CurveError(f'--steps {steps}: a run trains at least 1 step')
  kind, sep, rest = spec.partition(':')
  if kind == 'run':
    if not rest:
      raise CurveError(f'--schedule {spec!r}: run:DIR names a run directory')
    sched, _, _ = run_schedule(rest)
    if steps is not None and int(steps) != sched.total:
      raise CurveError(f'--schedule {spec!r} trains {sched.total} steps, --steps says {steps}: a run\'s schedule '
                       f'comes at its length; for another length use config:{rest}/config.json')
    return Target(schedule=dataclasses.replace(sched, label=f'{sched.label} ({pathlib.Path(rest).name})'),
                  spec=spec)
  if kind == 'config':
    if not rest:
      raise CurveError(f'--schedule {spec!r}: config:FILE names a config.json or a config file')
    train, own = _config_train(spec, rest)
    n = int(steps) if steps is not None else own
    train = dict(train, init_from='')
    return Target(schedule=schedule_of(train, n, describe(train, n)), spec=spec, train=train)
  if kind in SCHEDULES:
    n = int(steps) if steps is not None else int(default_steps or total_steps(base_cfg))
    return _named(spec, kind, rest if sep else '', base_cfg['train'], n)
  raise CurveError(f'--schedule {spec!r}: unknown schedule; write one of {FORMS}')
