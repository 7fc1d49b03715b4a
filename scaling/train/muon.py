"""Muon for the hidden matrices, AdamW for every other parameter (train.optimizer='muon').

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks",
kellerjordan.github.io/posts/muon; modded-nanogpt) takes each hidden matrix's gradient G_t and

    M_t = beta M_{t-1} + (1 - beta) G_t                         momentum (train.muon_momentum)
    U_t = beta M_t / (1 - beta^(t+1)) + (1 - beta) G_t / (1 - beta^t)     Nesterov, bias-corrected (optax's form)
    O_t = NS^k(U_t / (||U_t||_F + 1e-8))                         k = train.muon_ns_steps Newton-Schulz iterations
    W  <- W - lr_t (s O_t + wd W)                                 s = sqrt(max(1, fan_out / fan_in))

where one Newton-Schulz iteration on X (transposed first when it has more rows than columns, so that A is the
smaller Gram matrix) is the quintic X <- a X + (b A + c A A) X, A = X X^T, with (a, b, c) = (3.4445, -4.7750,
2.0315) (Jordan et al. 2024): it drives every singular value of X (at most 1 after the normalization) towards 1,
into roughly [0.5, 1.5] after 5 iterations, so O_t is close to the orthogonal factor U V^T of U_t = U S V^T. The momentum and the iteration are optax's
`optax.contrib.scale_by_muon` (the same coefficients; its batch axes run each layer of a stacked [L, ...]
parameter as its own matrix); the scale s, the decay and the grouping are here.

The scale s: the spectral-norm condition for feature learning (Yang, Simon & Bernstein 2023, "A Spectral
Condition for Feature Learning", arXiv 2310.17813: ||dW|| ~ sqrt(fan_out / fan_in)), in the form of Jordan's
Muon (max with 1). O_t has spectral norm ~1 at any shape, so the update's spectral norm is lr x s; a width
ladder keeps the ratios fan_out / fan_in (d_ff / d_model, H K / d_model) fixed, so s and the lr found at one
width hold at another. (Moonshot's alternative, 0.2 sqrt(max(fan_in, fan_out)) to match AdamW's update RMS
(Liu et al. 2025, "Muon is Scalable for LLM Training", arXiv 2502.16982), grows with the width: it reuses an
AdamW lr but does not transfer it.)

Which parameters: the hidden matrices of scaling/model/parametrization.py (PARAM_ROLES 'hidden': attention
q, k, v, o and the MLP's matrices; axes in MATRIX_AXES, e.g. wq [L, D, H, K] is L matrices D x HK); AdamW
(train.b1, b2, eps, the decay mask of optim.decay_mask) takes the embeddings, the LM head (tied or not) and
the norms. The decay is decoupled on both (lr x weight_decay x W; every Muon matrix decays), the schedule is
the one schedule, the gradient clip comes before both.

With a parametrization: Muon's scale s is the width rule of the matrices it takes, so they keep lr (the μP
multiplier lr / m is an Adam rule: an Adam step's entries are O(1) whatever the width, an orthogonalized one's
spectral norm is), decay at lr x wd, and have no eps; the AdamW parameters keep their multipliers (optim.py),
and the forward multipliers (logits 1/m, attention, CompleteP's residual 1/d) and the init are the model's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers, scale_by_muon

from scaling.model.parametrization import MATRIX_AXES, param_role

MUON, ADAM = 'muon', 'adam'


def _name(path) -> str:
  return str(getattr(path[-1], 'key', getattr(path[-1], 'name', path[-1])))


def labels(params):
  """A tree like `params`: 'muon' for the hidden matrices, 'adam' for every other parameter."""
  return jax.tree_util.tree_map_with_path(lambda p, _: MUON if param_role(_name(p)) == 'hidden' else ADAM, params)


def _dimension_numbers(updates):
  """The Muon leaves' (input axes, output axes) as optax's MuonDimensionNumbers (the layers axis is a batch)."""
  def one(path, x):
    name = _name(path)
    if name not in MATRIX_AXES:
      raise ValueError(f'Muon got parameter {name!r} of shape {x.shape}, which is no hidden matrix '
                       f'(scaling/model/parametrization.py MATRIX_AXES)')
    fan_in, fan_out = MATRIX_AXES[name]
    return MuonDimensionNumbers(reduction_axis=fan_in, output_axis=fan_out)
  return jax.tree_util.tree_map_with_path(one, updates)


def fans(name: str, shape) -> tuple[int, int]:
  """(fan_in, fan_out) of one layer's matrix of hidden parameter `name` of stacked `shape`."""
  ins, outs = MATRIX_AXES[name]
  return math.prod(shape[a] for a in ins), math.prod(shape[a] for a in outs)


def shape_scale(name: str, shape) -> float:
  """s = sqrt(max(1, fan_out / fan_in)) (the module docstring)."""
  fan_in, fan_out = fans(name, shape)
  return math.sqrt(max(1.0, fan_out / fan_in))


def scale_by_shape() -> optax.GradientTransformation:
  def update(updates, state, params=None):
    del params
    out = jax.tree_util.tree_map_with_path(
        lambda p, u: u * jnp.asarray(shape_scale(_name(p), u.shape), u.dtype), updates)
    return out, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def muon_matrices(train_cfg, learning_rate) -> optax.GradientTransformation:
  """The Muon branch, for the hidden matrices only (the module docstring)."""
  t = train_cfg
  return optax.chain(
      scale_by_muon(ns_steps=t.get('muon_ns_steps', 5), beta=t.get('muon_momentum', 0.95), nesterov=True,
                    weight_dimension_numbers=_dimension_numbers),
      scale_by_shape(),
      optax.add_decayed_weights(t.weight_decay),
      optax.scale_by_learning_rate(learning_rate))


def muon(train_cfg, learning_rate, adam: optax.GradientTransformation) -> optax.GradientTransformation:
  """Muon on the hidden matrices, `adam` (the AdamW of this parametrization) on the rest; one state pytree."""
  return optax.partition({MUON: muon_matrices(train_cfg, learning_rate), ADAM: adam}, labels)
