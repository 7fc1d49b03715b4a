"""The parametrizations (model.parametrization sp | mup | completep): per-parameter multipliers of the init std,
the learning rate, the weight decay and Adam's epsilon, and the forward multipliers. jax-free (plain floats), so
the accounting (scaling/model/accounting.py) and the config layer's callers can read it without jax.

Every parameter belongs to a group, by its name in scaling/model/transformer.py and whether it sits in the blocks:

    embedding     embed_VD, pos_embed_TD                               (vocab|seq, embed): one width axis
    hidden        wq_DHK, wk_DGK, wv_DGK, w_gate_DF, w_up_DF           two width axes, read the residual stream
    hidden_out    wo_HKD, w_down_FD                                    two width axes, write into the residual stream
    block_vector  the norms of the blocks (scale, bias)
    vector        the final norm
    readout       lm_head_DV (the tied head is embed_VD: embedding)

'sp': every multiplier 1. With m = d_model / mup_base_width (ModelDims.width_mult) and, under 'completep',
d = num_layers / mup_base_depth (ModelDims.depth_mult):

    group         sp        mup (Yang et al. 2022, TP5)         completep (Dey et al. 2025, Table 1, alpha = 1)
                  init lr   init     lr   wd  eps               init              lr    wd   eps
    hidden        1    1    m^-1/2   1/m  1   1                 m^-1/2            1/m   m    1/(m d)
    hidden_out    1    1    m^-1/2   1/m  1   1                 m^-1/2 sqrt(d)    1/m   m    1/(m d)
    block_vector  1    1    1        1    1   1                 1                 1     1    1/(m d)
    others        1    1    1        1    1   1                 1                 1     1    1

    forward: logits x 1/m (mup, completep); attention logits x sqrt(K_base / K) (mup, completep);
             every residual branch x 1/d (completep: x + d^-1 Attn(Norm(x)), x + d^-1 MLP(Norm(x))).

`wd` multiplies train.weight_decay and `eps` Adam's train.eps for that parameter (PyTorch parameter groups: the
decay applied is lr x lr mult x wd x wd mult x p). Our 'mup' keeps the decay at the parameter's own lr (wd mult
1: the rule of the runs made with it) and eps as is; CompleteP's Table 1 sets the hidden decay to wd x m, so that
lr x wd stays fixed across width, and eps to eps / (m d) on the residual blocks' parameters.

CompleteP at alpha = 1 (Dey, Zhang, Noci, Li, Bordelon, Bergsma, Pehlevan, Hanin, Hestness 2025, "Don't be
lazy: CompleteP enables compute-efficient deep transformers", arXiv 2505.01618, Table 1; the authors' minimal
implementation is EleutherAI/nanoGPT-mup, branch completep): the depth lr factors d^(alpha - 1) are 1, so across
depth only the residual branches (x 1/d) and Adam's eps (x 1/d) change. Table 1's hidden init variance does not
depend on depth; SP here starts the output projections at init_std / sqrt(2 L) (GPT-2), so under completep they
start at init_std / sqrt(2 L_base) (the init multiplier sqrt(d) = sqrt(L / L_base) against that), and the
residual multiplier carries the depth. At m = 1 and d = 1 every factor is exactly 1.0 and mup and completep are
SP bit for bit.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from scaling.config.load import PARAMETRIZATIONS  # model.parametrization: the one list

# The role of every parameter, by its name in scaling/model/transformer.py: the one table the initializers and
# the optimizer (scaling/train/optim.py: per-parameter learning rates, which matrices Muon takes) read.
PARAM_ROLES = {
    'embed_VD': 'embedding', 'pos_embed_TD': 'embedding',            # (vocab|seq, embed): one width axis
    'wq_DHK': 'hidden', 'wk_DGK': 'hidden', 'wv_DGK': 'hidden', 'wo_HKD': 'hidden',
    'w_gate_DF': 'hidden', 'w_up_DF': 'hidden', 'w_down_FD': 'hidden',   # two width axes
    'lm_head_DV': 'readout',                                          # (embed, vocab)
    'scale': 'vector', 'bias': 'vector',                              # norms
}
OUTPUT_PROJECTIONS = ('wo_HKD', 'w_down_FD')   # the hidden matrices that write into the residual stream
GROUPS = ('embedding', 'hidden', 'hidden_out', 'block_vector', 'vector', 'readout')

# The hidden matrices as matrices: (input axes, output axes) of each, counted in the stacked parameter
# [L, ...] (axis 0 is the layers axis, a batch of L matrices). Muon orthogonalizes each layer's matrix
# [prod(input axes), prod(output axes)] (scaling/train/muon.py); the accounting counts its FLOPs.
MATRIX_AXES = {
    'wq_DHK': ((1,), (2, 3)), 'wk_DGK': ((1,), (2, 3)), 'wv_DGK': ((1,), (2, 3)), 'wo_HKD': ((1, 2), (3,)),
    'w_gate_DF': ((1,), (2,)), 'w_up_DF': ((1,), (2,)), 'w_down_FD': ((1,), (2,)),
}
assert set(MATRIX_AXES) == {n for n, r in PARAM_ROLES.items() if r == 'hidden'}


class Multipliers(NamedTuple):
  """One group's factors: of the init std, the learning rate, the weight decay and Adam's epsilon."""
  init: float
  lr: float
  wd: float
  eps: float


ONE = Multipliers(1.0, 1.0, 1.0, 1.0)


def param_role(name: str) -> str:
  if name not in PARAM_ROLES:
    raise KeyError(f'parameter {name!r} has no role in scaling.model.parametrization.PARAM_ROLES; add it there')
  return PARAM_ROLES[name]


def param_group(names) -> str:
  """The group of the parameter at path `names` (its keys from the root, e.g. ('blocks', 'attn_norm', 'scale'))."""
  names = [str(n) for n in names]
  role = param_role(names[-1])
  if role == 'hidden':
    return 'hidden_out' if names[-1] in OUTPUT_PROJECTIONS else 'hidden'
  if role == 'vector':
    return 'block_vector' if 'blocks' in names[:-1] else 'vector'
  return role


def width_mult(dims) -> float:
  """m = d_model / mup_base_width (1 under 'sp' and when the base width is 0)."""
  if dims.parametrization == 'sp' or not dims.mup_base_width:
    return 1.0
  return dims.d_model / dims.mup_base_width


def depth_mult(dims) -> float:
  """d = num_layers / mup_base_depth under 'completep' (1 otherwise, and when the base depth is 0)."""
  base = getattr(dims, 'mup_base_depth', 0)
  if dims.parametrization != 'completep' or not base:
    return 1.0
  return dims.num_layers / base


def multipliers(dims) -> dict[str, Multipliers]:
  """group -> Multipliers (the module docstring's table)."""
  if dims.parametrization not in PARAMETRIZATIONS:
    raise ValueError(f'model.parametrization={dims.parametrization!r} is unknown; choose one of '
                     f'{", ".join(PARAMETRIZATIONS)}')
  table = {g: ONE for g in GROUPS}
  if dims.parametrization == 'sp':
    return table
  m = width_mult(dims)
  if dims.parametrization == 'mup':
    hidden = Multipliers(m ** -0.5, 1.0 / m, 1.0, 1.0)
    return dict(table, hidden=hidden, hidden_out=hidden)
  d = depth_mult(dims)
  eps = 1.0 / (m * d)
  return dict(table, hidden=Multipliers(m ** -0.5, 1.0 / m, m, eps),
              hidden_out=Multipliers(m ** -0.5 * math.sqrt(d), 1.0 / m, m, eps),
              block_vector=Multipliers(1.0, 1.0, 1.0, eps))


def role_multipliers(dims) -> dict[str, tuple[float, float]]:
  """role -> (init std multiplier, Adam learning-rate multiplier) of the width rules (μP, Yang et al. 2022,
  "Tensor Programs V", Table 3 for Adam, in the form with an output multiplier): hidden matrices start at
  init_std / sqrt(m) and learn at lr / m; embeddings, readout and norms keep init_std and lr. 'sp': all 1.
  The per-parameter table with the depth rules is `multipliers`."""
  t = multipliers(dims)
  return {'embedding': t['embedding'][:2], 'hidden': t['hidden'][:2], 'readout': t['readout'][:2],
          'vector': t['vector'][:2]}


def output_multiplier(dims) -> float:
  """μP / CompleteP: the logits are scaled by 1/m (the readout sees a hidden state whose entries move O(1))."""
  return 1.0 / width_mult(dims)


def residual_multiplier(dims) -> float:
  """CompleteP: each residual branch is scaled by 1/d = mup_base_depth / num_layers (alpha = 1); 1 otherwise."""
  return 1.0 / depth_mult(dims)


def attention_logit_multiplier(dims) -> float:
  """μP (and CompleteP): attention logits q.k / sqrt(K) times sqrt(K_base / K), i.e. q.k sqrt(K_base) / K:
  proportional to 1/head_dim (Yang et al. 2022, section 4), with K_base = model.mup_base_head_dim (0: this head_dim).

  The factor follows the head dim, not the width: a ladder that keeps head_dim fixed and grows the
  head count (scaling/model/ladder.py, the lr_transfer study) has factor 1 at every width, and one that
  grows head_dim at a fixed head count gets sqrt(K_base / K). 1 under 'sp' and at K = K_base, so μP
  at its base shape is SP bit for bit.
  """
  if dims.parametrization == 'sp' or not dims.mup_base_head_dim or dims.mup_base_head_dim == dims.head_dim:
    return 1.0
  return math.sqrt(dims.mup_base_head_dim / dims.head_dim)
