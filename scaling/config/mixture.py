"""Load-time checks of a data mixture (data.mixture, data.mixture_weights, data.mixture_stages,
data.mixture_max_epochs): the syntax (scaling/data/mixture_spec.py) and the combinations that cannot work, as
MixtureError naming the field and the fix (scaling/config/load.py raises it as ConfigError), before any data is touched or anything compiled. Whether each
source holds enough text for its weight is checked once its size is known (scaling/train/mixture_run.py),
also before any compile.
"""

from __future__ import annotations

from scaling.data.mixture_spec import MixtureError, make_plan


def plan_of(cfg, total_steps: int | None = None):
  """The mixture's Plan (weights of every step), or None when data.mixture is empty."""
  d = cfg.data
  if not len(d.get('mixture', None) or {}):
    return None
  return make_plan(d.mixture, d.get('mixture_weights', ''), d.get('mixture_stages', ''), total_steps)


def check_mixture(cfg, total_steps: int) -> None:
  """MixtureError for a bad mixture setting or combination (nothing when data.mixture is empty)."""
  d = cfg.data
  mixture = d.get('mixture', None)
  has = mixture is not None and len(mixture) > 0
  if not has:
    for name in ('mixture_weights', 'mixture_stages'):
      if str(d.get(name, '') or '').strip():
        raise MixtureError(f'data.{name} is set but data.mixture is empty: name the sources first, e.g. '
                           f"--config.data.mixture=\"{{'linux': 'prose:linux', 'kjv': 'prose:kjv'}}\"")
    return
  plan_of(cfg, total_steps)
  epochs = d.get('mixture_max_epochs', 1.0)
  if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
    raise MixtureError(f'data.mixture_max_epochs must be > 0 (1: each training window at most once), got {epochs!r}')
  if str(d.get('data_dir', '') or ''):
    raise MixtureError('data.data_dir names one prepared corpus, but data.mixture prepares one directory per source '
                       '(under $SCALING_CACHE/data; set SCALING_CACHE to move them): leave data.data_dir empty')
  if d.get('train_tokens', 0):
    raise MixtureError('data.train_tokens (a fixed slice of one corpus) does not combine with data.mixture; size a '
                       "source's share with its weight and train.steps, or give the source a smaller corpus spec")
  t = cfg.get('train', {})
  if str(t.get('batch_schedule', '') or '').strip():
    raise MixtureError('train.batch_schedule does not combine with data.mixture yet (a mixture counts its rows per '
                       'global batch of train.batch_size): use one of them')
