"""The optimizer: AdamW with weight decay on matrices only (or Muon on the hidden matrices and AdamW on the rest:
train.optimizer='muon', scaling/train/muon.py), global-norm clipping, schedules, and under μP
(model.parametrization='mup') per-parameter learning rates by role (scale_by_role), under CompleteP
('completep') per-parameter learning rates, weight decays and Adam epsilons (completep_adamw; the table:
scaling/model/parametrization.py).

Schedules (all with linear warmup from 0 to `lr` over `warmup_steps`):
  cosine    cosine decay from lr to lr * min_lr_ratio at the last step;
  wsd       warmup-stable-decay: constant lr, then a decay to lr * min_lr_ratio over the last
            `decay_fraction` of the steps after warmup, or the last `decay_steps` when set (Hu et al.
            2024, MiniCPM); `decay_shape` linear (default), cosine or 1-sqrt. A cooldown branch
            (train.init_from, scaling/train/branch.py) forked at step s with steps = s + decay_steps decays
            exactly as a from-scratch WSD run of that length;
  constant  lr after warmup.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from scaling.base import names
from scaling.config.load import OPTIMIZERS
from scaling.train import muon as muon_lib


def schedule(train_cfg, total_steps: int) -> optax.Schedule:
  """The lr of every step: the schedule below, times train.batch_lr_rule's factor of the step's batch under
  train.batch_schedule (scaling/train/batch_schedule.py; none without a schedule)."""
  from scaling.train.batch_schedule import with_lr_rule
  return with_lr_rule(_base_schedule(train_cfg, total_steps), train_cfg)


def _base_schedule(train_cfg, total_steps: int) -> optax.Schedule:
  t = train_cfg
  peak, final = t.lr, t.lr * t.min_lr_ratio
  warm = min(t.warmup_steps, max(total_steps - 1, 0))
  warmup = optax.linear_schedule(0.0, peak, max(warm, 1))
  rest = max(total_steps - warm, 1)
  if t.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, rest, alpha=t.min_lr_ratio)
  elif t.schedule == 'wsd':
    decay = wsd_decay_steps(t, rest)
    main = optax.join_schedules([optax.constant_schedule(peak), decay_schedule(t.get('decay_shape', 'linear'),
                                                                                peak, final, decay)],
                                [rest - decay])
  else:
    main = optax.constant_schedule(peak)
  if warm == 0:
    return main
  return optax.join_schedules([warmup, main], [warm])


DECAY_SHAPES = names.DECAY_SHAPES   # the one list: scaling/base/names.py


def wsd_decay_steps(train_cfg, rest: int) -> int:
  """The length of the WSD decay: train.decay_steps when > 0 (a cooldown branch fixes it), else
  round(decay_fraction * the steps after warmup); at least 1 and at most `rest`."""
  d = int(train_cfg.get('decay_steps', 0) or 0)
  decay = d if d > 0 else int(round(rest * train_cfg.decay_fraction))
  return min(max(decay, 1), rest)


def decay_schedule(shape: str, peak: float, final: float, steps: int) -> optax.Schedule:
  """peak -> final over `steps`: linear (optax's), cosine (half period), or 1-sqrt (Hägele et al. 2024:
  final + (peak - final) (1 - sqrt(t / steps))); constant at `final` afterwards."""
  if shape == 'linear':
    return optax.linear_schedule(peak, final, steps)
  if shape == 'cosine':
    traced = not isinstance(peak, (int, float))   # a packed member's lr (scaling/train/packed.py)
    return optax.cosine_decay_schedule(peak, steps, alpha=final / peak if traced or peak else 0.0)
  if shape == '1-sqrt':
    import jax.numpy as jnp  # local: the module's imports are shared with the μP work

    def fn(count):
      frac = jnp.clip(count / steps, 0.0, 1.0)
      return final + (peak - final) * (1.0 - jnp.sqrt(frac))
    return fn
  raise ValueError(f'unknown decay shape {shape!r}; choose one of {", ".join(DECAY_SHAPES)}')


def decay_mask(params):
  """Weight decay on matrices (ndim >= 2, embeddings included); none on norm scales and biases.

  Block parameters carry a leading layers axis, so a stacked norm scale [L, D] is
  still a vector: the rule looks at the name too.
  """
  def leaf_mask(path, x):
    names = [getattr(k, 'key', getattr(k, 'name', '')) for k in path]
    is_norm = any('norm' in str(n) for n in names)
    return x.ndim >= 2 and not is_norm
  return jax.tree_util.tree_map_with_path(leaf_mask, params)


def _path_names(path) -> list[str]:
  return [str(getattr(k, 'key', getattr(k, 'name', ''))) for k in path]


def param_multipliers(params, dims, field: str = 'lr'):
  """A tree like `params` of each parameter's `field` multiplier (lr, wd or eps; its group's, in
  scaling/model/parametrization.py `multipliers`)."""
  from scaling.model.parametrization import multipliers, param_group
  table = multipliers(dims)
  return jax.tree_util.tree_map_with_path(lambda path, _: getattr(table[param_group(_path_names(path))], field),
                                          params)


def lr_multipliers(params, dims):
  """A tree like `params` of each parameter's learning-rate multiplier (its group's)."""
  return param_multipliers(params, dims, 'lr')


def scale_by_param(dims, field: str, *, inverse: bool = False) -> optax.GradientTransformation:
  """Multiplies each update by its parameter's `field` multiplier (or divides: inverse); a multiplier of 1 is
  skipped (no op in the program: a parametrization at its base shape is SP bit for bit)."""
  def update(updates, state, params=None):
    del params
    mults = param_multipliers(updates, dims, field)

    def one(u, c):
      c = 1.0 / c if inverse else c
      return u if c == 1.0 else u * jnp.asarray(c, u.dtype)
    return jax.tree.map(one, updates, mults), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def scale_by_role(dims) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its role's learning-rate multiplier.

  Placed after adamw, it scales the whole AdamW step, the decoupled weight decay lr * wd * p included:
  every parameter decays at its own learning rate (PyTorch AdamW parameter groups, mup's MuAdamW), so
  a hidden matrix under μP moves and decays at lr / m. Scaling the gradients instead would do nothing
  (Adam divides the scale out) and scaling only the Adam direction would leave the decay at lr.
  """
  def update(updates, state, params=None):
    del params
    mults = lr_multipliers(updates, dims)
    return jax.tree.map(lambda u, c: u * jnp.asarray(c, u.dtype), updates, mults), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def add_decayed_weights_by_param(weight_decay, dims) -> optax.GradientTransformation:
  """update + weight_decay x the parameter's wd multiplier x p, on the decay_mask parameters only."""
  def update(updates, state, params):
    mults, mask = param_multipliers(updates, dims, 'wd'), decay_mask(updates)

    def one(u, p, c, on):
      if not on:
        return u
      wd = weight_decay if c == 1.0 else weight_decay * c
      return u + jnp.asarray(wd, u.dtype) * p
    return jax.tree.map(one, updates, params, mults, mask), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def completep_adamw(t, learning_rate, dims) -> list[optax.GradientTransformation]:
  """AdamW with each parameter's lr, weight decay and eps multipliers (CompleteP, Dey et al. 2025 Table 1):

      p <- p - lr_t c_lr (Adam(g; eps c_eps) + wd c_wd p)      (PyTorch parameter groups: lr c_lr, decay wd c_wd)

  Adam's eps is set per parameter by scaling its gradient by 1 / c_eps before Adam: Adam is invariant to the
  gradient's scale but for eps, c m / (c sqrt(v) + eps) = m / (sqrt(v) + eps / c), and its moments hold the
  scaled gradient's. Every multiplier 1 (base width and depth): the ops of optax.adamw (SP bit for bit)."""
  return [scale_by_param(dims, 'eps', inverse=True),
          optax.scale_by_adam(b1=t.b1, b2=t.b2, eps=t.eps),
          add_decayed_weights_by_param(t.weight_decay, dims),
          scale_by_param(dims, 'lr'),
          optax.scale_by_learning_rate(learning_rate)]


def _adamw_parts(t, sched, dims) -> list[optax.GradientTransformation]:
  """The AdamW of this parametrization (sp: optax.adamw; mup: then scale_by_role; completep: completep_adamw)."""
  par = 'sp' if dims is None else dims.parametrization
  if par == 'completep':
    return completep_adamw(t, sched, dims)
  parts = [optax.adamw(sched, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay, mask=decay_mask)]
  if par != 'sp':
    parts.append(scale_by_role(dims))
  return parts


def make_optimizer(train_cfg, total_steps: int, dims=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(clip, AdamW) and the schedule; with `dims` under model.parametrization='mup', per-role learning rates
  (scale_by_role), under 'completep' per-parameter ones (completep_adamw). Under 'sp' (or without dims) the
  chain is exactly the SP one. train.optimizer='muon': (clip, Muon on the hidden matrices | that AdamW on the
  rest) (scaling/train/muon.py)."""
  t = train_cfg
  opt = t.get('optimizer', 'adamw')
  if opt not in OPTIMIZERS:
    raise ValueError(f'train.optimizer={opt!r} is unknown; choose one of {", ".join(OPTIMIZERS)}')
  sched = schedule(t, total_steps)
  parts = []
  if t.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(t.grad_clip))
  adam_lr = float(t.get('muon_adam_lr', 0.0) or 0.0) if opt == 'muon' else 0.0
  # train.muon_adam_lr: the AdamW part's schedule is train.lr's times muon_adam_lr / lr (every schedule here is
  # proportional to the peak: warmup from 0, decay to min_lr_ratio x peak, the batch rule's factor)
  adam_sched = sched if adam_lr <= 0 else (lambda step: sched(step) * (adam_lr / t.lr))
  adam = _adamw_parts(t, adam_sched, dims)
  if opt == 'muon':
    parts.append(muon_lib.muon(t, sched, optax.chain(*adam)))
  else:
    parts.extend(adam)
  return optax.chain(*parts), sched
