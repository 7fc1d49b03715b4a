"""The decoder-only transformer, top to bottom, in Flax NNX.

    tokens_BT -> embed -> [+ learned positions] -> L x Block -> final norm -> LM head -> logits_BTV
    Block(x) = x + Attention(Norm(x)) ; x = x + MLP(Norm(x))          (pre-norm residual)

Shape suffixes name the axes: B batch, T query length, S key length, D d_model,
H query heads, G kv heads (grouped-query attention, G divides H), K head_dim,
F d_ff, V vocab, L layers.

Choices (all in `config.model`, defaults and documentation in scaling/config/default.py,
which `ModelDims` takes its defaults from): norm rmsnorm|layernorm, position
rope|learned|none, mlp swiglu|gelu, tied or untied LM head, compute dtype, scan
over layers, remat (names: REMATS), attention kernel (scaling/model/attention.py),
parametrization sp|mup|completep (scaling/model/parametrization.py).

Parameters are float32 ("master weights") and carry logical axis names in their
`axes` metadata (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`, `mlp`,
`layers`, `seq`); `scaling/train/sharding.py` maps them to mesh axes with a rule table.
Matmuls run in the compute dtype and accumulate in float32
(`preferred_element_type`); norms, softmax and the loss run in float32.

Block parameters are always stacked along a leading `layers` axis, so one
checkpoint layout serves both execution modes: `scan_layers=True` runs the
blocks with `jax.lax.scan` (compile time independent of depth), False unrolls
a Python loop over layer slices (same numbers).

Init: every matrix ~ N(0, init_std) (0.02), except the two projections that
write into the residual stream (attention output, MLP down), which use
init_std / sqrt(2 L) (GPT-2 / Megatron scaling, keeps the residual variance
independent of depth). Norm scales start at 1, biases at 0.

Parametrization. 'sp' is the above. 'mup' (maximal update parametrization, Yang
et al. 2022) with width multiplier m = d_model / mup_base_width reads one role
table (PARAM_ROLES, role_multipliers): hidden matrices start at std / sqrt(m) and
learn at lr / m (scaling/train/optim.py), embeddings, readout and norms keep std and
lr, the logits are scaled by 1/m and attention logits by sqrt(K_base / K)
(K_base = mup_base_head_dim: ~1/head_dim; 1 when head_dim stays fixed as the
head count grows). At m = 1 and K = K_base it is SP bit for bit. 'completep' (Dey et al.
2025, alpha = 1) adds depth: with d = num_layers / mup_base_depth every residual branch is
scaled by 1/d, the output projections start at init_std / sqrt(2 L_base) and Adam's eps on
the blocks is eps / (m d) (the table: scaling/model/parametrization.py). At m = d = 1 it is SP.

KV cache. A call with a cache and T > 1 tokens is a prefill from position 0
(checked): the fast causal kernel over its own keys, which it writes into the
cache. A call with T = 1 is a decode step: its key/value is written at its
position and `attention.cached_attention` attends over the cache up to there.

No biases in linear layers (LLaMA style, also for the GELU MLP); LayerNorm has
a bias.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from scaling.base import names
from scaling.config.load import ConfigError, check_position_table, default_model, position_rows, resolved_dims
from scaling.model import attention as attn_lib
from scaling.model import parametrization as par_lib

# scaling/config/default.py's model section: the one place the defaults are written (documented there)
_DEFAULT = default_model()


def _auto_dtype(backend: str | None = None) -> str:
  """dtype='auto': float32 on CPU, bfloat16 on accelerators."""
  return 'float32' if (backend or jax.default_backend()) == 'cpu' else 'bfloat16'


@dataclasses.dataclass(frozen=True)
class ModelDims:
  """The model hyperparameters with derived fields resolved (hashable, static under jit).

  The dims have no default; every choice defaults to scaling/config/default.py's value.
  """
  vocab_size: int
  seq_len: int
  num_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  d_ff: int
  norm: str = _DEFAULT['norm']
  norm_eps: float = _DEFAULT['norm_eps']
  position: str = _DEFAULT['position']
  position_table: int = _DEFAULT['position_table']   # learned: the table's rows (0: seq_len); see position_rows
  rope_theta: float = _DEFAULT['rope_theta']
  mlp: str = _DEFAULT['mlp']
  tied_embeddings: bool = _DEFAULT['tied_embeddings']
  dtype: str = _DEFAULT['dtype']            # 'auto' is resolved on construction (_auto_dtype)
  scan_layers: bool = _DEFAULT['scan_layers']
  remat: str = _DEFAULT['remat']
  attention: str = _DEFAULT['attention']
  attention_block_size: int = _DEFAULT['attention_block_size']
  sliding_window: int = _DEFAULT['sliding_window']
  init_std: float = _DEFAULT['init_std']
  parametrization: str = _DEFAULT['parametrization']
  mup_base_width: int = _DEFAULT['mup_base_width']
  mup_base_head_dim: int = _DEFAULT['mup_base_head_dim']
  mup_base_depth: int = _DEFAULT['mup_base_depth']

  def __post_init__(self):
    if self.vocab_size <= 0:
      raise ConfigError(f'model.vocab_size={self.vocab_size}: 0 means "follow the tokenizer", which is known only '
                        'once the data is prepared (char / tiktoken tokenizers); resolve it first '
                        '(scaling.config.load.resolve_vocab(cfg, tokenizer.vocab_size)) or set model.vocab_size')
    if self.dtype == 'auto':
      object.__setattr__(self, 'dtype', _auto_dtype())
    check_position_table(self.position_table, self.position, self.seq_len)
    b = self.mup_base_head_dim
    if isinstance(b, bool) or not isinstance(b, int) or b < 0:
      raise ConfigError(f'model.mup_base_head_dim must be an integer >= 0 (the head_dim the lr was tuned at; '
                        f'0: this head_dim, attention factor 1), got {b!r}')
    b = self.mup_base_depth
    if isinstance(b, bool) or not isinstance(b, int) or b < 0:
      raise ConfigError(f'model.mup_base_depth must be an integer >= 0 (the num_layers the lr was tuned at; '
                        f'0: this num_layers), got {b!r}')

  @classmethod
  def from_config(cls, m, *, backend: str | None = None) -> 'ModelDims':
    d = {f.name: m[f.name] for f in dataclasses.fields(cls) if f.name in m}
    d.update(resolved_dims(m))
    if d['dtype'] == 'auto':
      d['dtype'] = _auto_dtype(backend)
    return cls(**d)

  @property
  def position_rows(self) -> int:
    """Rows of the learned-position table (position_table, else seq_len); 0 without learned positions."""
    return position_rows(self)

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def width_mult(self) -> float:
    """μP's width multiplier m = d_model / mup_base_width (1 under 'sp' and when the base width is 0)."""
    return par_lib.width_mult(self)

  @property
  def depth_mult(self) -> float:
    """CompleteP's depth multiplier d = num_layers / mup_base_depth (1 unless 'completep' with a base depth)."""
    return par_lib.depth_mult(self)


def _normal(rngs: nnx.Rngs, shape, std) -> jax.Array:
  return std * jax.random.normal(rngs.params(), shape, jnp.float32)


# ----------------------------------------------------------------------------- parametrization
# the per-parameter multipliers and the forward multipliers: scaling/model/parametrization.py (re-exported here)
PARAMETRIZATIONS = par_lib.PARAMETRIZATIONS   # model.parametrization
PARAM_ROLES, param_role, role_multipliers = par_lib.PARAM_ROLES, par_lib.param_role, par_lib.role_multipliers
output_multiplier, attention_logit_multiplier = par_lib.output_multiplier, par_lib.attention_logit_multiplier
residual_multiplier = par_lib.residual_multiplier


def _init(dims, rngs: nnx.Rngs, name: str, shape, std) -> jax.Array:
  """N(0, std x the init multiplier of the parameter's group; par_lib.multipliers)."""
  return _normal(rngs, shape, std * par_lib.multipliers(dims)[par_lib.param_group([name])].init)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def mixed_einsum(eq: str, x, w):
  """einsum 'a,b->out' with float32 accumulation in the forward AND in both backward matmuls.

  JAX's default transpose of a dot with preferred_element_type=float32 runs the gradient
  matmuls with bf16 outputs, which XLA's CPU backend does at a fraction of the speed (and
  precision) of bf16 inputs with float32 accumulation. Every index must appear in exactly two
  of the three operands (true for all the model's projections).
  """
  return jnp.einsum(eq, x, w, preferred_element_type=jnp.float32)


def _mixed_fwd(eq, x, w):
  return mixed_einsum(eq, x, w), (x, w)


def _mixed_bwd(eq, res, g):
  x, w = res
  ins, out = eq.split('->')
  a, b = ins.split(',')
  g = g.astype(x.dtype)
  dx = jnp.einsum(f'{out},{b}->{a}', g, w, preferred_element_type=jnp.float32).astype(x.dtype)
  dw = jnp.einsum(f'{a},{out}->{b}', x, g, preferred_element_type=jnp.float32).astype(w.dtype)
  return dx, dw


mixed_einsum.defvjp(_mixed_fwd, _mixed_bwd)


def _dot(eq: str, x, w, dtype):
  """einsum in the compute dtype with float32 accumulation, result in the compute dtype."""
  return mixed_einsum(eq, x.astype(dtype), w.astype(dtype)).astype(dtype)


# ----------------------------------------------------------------------------- norms
def rms_norm(x, scale, eps):
  """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (y * scale).astype(x.dtype)


def layer_norm(x, scale, bias, eps):
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps)
  return (y * scale + bias).astype(x.dtype)


class Norm(nnx.Module):
  """RMSNorm or LayerNorm over the last axis; `lead` adds stacked leading axes (e.g. layers)."""

  def __init__(self, dims: ModelDims, lead: tuple[int, ...] = (), lead_axes: tuple[str, ...] = ()):
    self.kind, self.eps = dims.norm, dims.norm_eps
    self.scale = nnx.Param(jnp.ones(lead + (dims.d_model,)), axes=lead_axes + ('embed',))
    if self.kind == 'layernorm':
      self.bias = nnx.Param(jnp.zeros(lead + (dims.d_model,)), axes=lead_axes + ('embed',))

  def __call__(self, x):
    if self.kind == 'layernorm':
      return layer_norm(x, self.scale[...], self.bias[...], self.eps)
    return rms_norm(x, self.scale[...], self.eps)


# ----------------------------------------------------------------------------- RoPE
def rope_frequencies(head_dim: int, theta: float, evens_k=None) -> jax.Array:
  """inv_freq_k = theta^(-2k/K), k = 0..K/2-1. `evens_k`: the 2k as a float32 array, when the caller has them."""
  evens_k = jnp.arange(0, head_dim, 2, dtype=jnp.float32) if evens_k is None else evens_k
  return 1.0 / (theta ** (evens_k / head_dim))


def rope_tables(positions_BT, head_dim: int, theta: float, evens_k=None) -> tuple[jax.Array, jax.Array]:
  """(cos_BTk, sin_BTk) f32 of positions * inv_freq, for explicit positions (packed documents, decoding).
  Transformer.hidden computes them once for all layers, but XLA still fuses cos and sin into each use (per
  element of q and of k, forward and backward); the default positions avoid that: static_rope_tables."""
  angles_BTk = positions_BT[..., None].astype(jnp.float32) * rope_frequencies(head_dim, theta, evens_k)
  return jnp.cos(angles_BTk), jnp.sin(angles_BTk)


def static_rope_tables(B: int, T: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """rope_tables of positions 0..T-1 in every row, computed when the step is traced (the same arithmetic,
  run eagerly) and so compiled in as constants: the default positions of training and scoring. XLA fuses
  even one shared traced table into each consumer, where it costs a cos and a sin per element of q and
  of k; a constant costs a load. The integers (positions, 2k) come from numpy, exactly the values a device
  iota gives, and every float operation still runs on the device as before: the same tables bit for bit, and
  6 one-op programs for XLA to compile in each process instead of 14 (iotas, casts, broadcasts)."""
  with jax.ensure_compile_time_eval():
    evens_k = jax.device_put(np.arange(0, head_dim, 2, dtype=np.float32))   # a jax array: `/ head_dim` on the device
    cos_1Tk, sin_1Tk = rope_tables(np.arange(T, dtype=np.int32)[None], head_dim, theta, evens_k)
  return (jnp.broadcast_to(cos_1Tk, (B, T, head_dim // 2)), jnp.broadcast_to(sin_1Tk, (B, T, head_dim // 2)))


def apply_rope(x_BTNK, positions_BT, theta: float, tables=None):
  """Rotary embedding, Hugging Face "rotate_half" layout: pairs (i, i + K/2) rotate by pos * inv_freq_i.
  `tables`: rope_tables(positions_BT, K, theta), when the caller has them."""
  K = x_BTNK.shape[-1]
  cos_BTk, sin_BTk = rope_tables(positions_BT, K, theta) if tables is None else tables
  cos, sin = cos_BTk[:, :, None, :], sin_BTk[:, :, None, :]
  x = x_BTNK.astype(jnp.float32)
  x1, x2 = x[..., : K // 2], x[..., K // 2:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNK.dtype)


# ----------------------------------------------------------------------------- block
class Block(nnx.Module):
  """One pre-norm transformer block. Parameters carry a leading stacked axis of size n (the layers)."""

  def __init__(self, dims: ModelDims, n: int, *, rngs: nnx.Rngs):
    self.dims = dims
    D, H, G, K, F = dims.d_model, dims.num_heads, dims.num_kv_heads, dims.head_dim, dims.d_ff
    std, out_std = dims.init_std, dims.init_std / math.sqrt(2 * dims.num_layers)
    L, LA = (n,), ('layers',)
    self.attn_norm = Norm(dims, L, LA)
    self.wq_DHK = nnx.Param(_init(dims, rngs, 'wq_DHK', L + (D, H, K), std), axes=LA + ('embed', 'heads', 'head_dim'))
    self.wk_DGK = nnx.Param(_init(dims, rngs, 'wk_DGK', L + (D, G, K), std), axes=LA + ('embed', 'kv_heads', 'head_dim'))
    self.wv_DGK = nnx.Param(_init(dims, rngs, 'wv_DGK', L + (D, G, K), std), axes=LA + ('embed', 'kv_heads', 'head_dim'))
    self.wo_HKD = nnx.Param(_init(dims, rngs, 'wo_HKD', L + (H, K, D), out_std), axes=LA + ('heads', 'head_dim', 'embed'))
    self.mlp_norm = Norm(dims, L, LA)
    if dims.mlp == 'swiglu':
      self.w_gate_DF = nnx.Param(_init(dims, rngs, 'w_gate_DF', L + (D, F), std), axes=LA + ('embed', 'mlp'))
    self.w_up_DF = nnx.Param(_init(dims, rngs, 'w_up_DF', L + (D, F), std), axes=LA + ('embed', 'mlp'))
    self.w_down_FD = nnx.Param(_init(dims, rngs, 'w_down_FD', L + (F, D), out_std), axes=LA + ('mlp', 'embed'))

  def attention(self, x_BTD, positions_BT, segment_ids_BT, cache, rope=None):
    dims, dt = self.dims, self.dims.compute_dtype
    q_BTHK = checkpoint_name(_dot('btd,dhk->bthk', x_BTD, self.wq_DHK[...], dt), 'attn_proj')
    k_BTGK = checkpoint_name(_dot('btd,dgk->btgk', x_BTD, self.wk_DGK[...], dt), 'attn_proj')
    v_BTGK = checkpoint_name(_dot('btd,dgk->btgk', x_BTD, self.wv_DGK[...], dt), 'attn_proj')
    if dims.position == 'rope':
      rope = rope_tables(positions_BT, dims.head_dim, dims.rope_theta) if rope is None else rope
      q_BTHK = apply_rope(q_BTHK, positions_BT, dims.rope_theta, rope)
      k_BTGK = apply_rope(k_BTGK, positions_BT, dims.rope_theta, rope)
    if (a := attention_logit_multiplier(dims)) != 1.0:   # μP; SP and μP at base width skip it
      q_BTHK = q_BTHK * jnp.asarray(a, q_BTHK.dtype)
    if cache is None:
      out_BTHK = attn_lib.attention(
          q_BTHK, k_BTGK, v_BTGK, impl=dims.attention, segment_ids_BT=segment_ids_BT,
          window=dims.sliding_window, block_size=dims.attention_block_size)
      new_cache = None
    elif q_BTHK.shape[1] > 1:
      # prefill: a multi-token cache call starts at position 0 (Transformer.hidden checks it), so the
      # new keys are all there is and the fast causal kernel gives the result; the cache only stores them
      new_cache = write_cache(cache, k_BTGK, v_BTGK, positions_BT)
      out_BTHK = attn_lib.attention(q_BTHK, k_BTGK, v_BTGK, impl=dims.attention, window=dims.sliding_window,
                                    block_size=dims.attention_block_size)
    else:   # decode: the new key/value into the cache, then attention over the cache up to each row's position
      new_cache = write_cache(cache, k_BTGK, v_BTGK, positions_BT)
      out_BTHK = attn_lib.cached_attention(q_BTHK, *new_cache, positions_BT, window=dims.sliding_window)
    out_BTHK = checkpoint_name(out_BTHK, 'attn_out')
    return checkpoint_name(_dot('bthk,hkd->btd', out_BTHK, self.wo_HKD[...], dt), 'attn_proj'), new_cache

  def mlp(self, x_BTD):
    dt = self.dims.compute_dtype
    up_BTF = checkpoint_name(_dot('btd,df->btf', x_BTD, self.w_up_DF[...], dt), 'mlp_proj')
    if self.dims.mlp == 'swiglu':
      gate_BTF = checkpoint_name(_dot('btd,df->btf', x_BTD, self.w_gate_DF[...], dt), 'mlp_proj')
      h_BTF = jax.nn.silu(gate_BTF) * up_BTF
    else:
      h_BTF = jax.nn.gelu(up_BTF, approximate=True)
    return checkpoint_name(_dot('btf,fd->btd', h_BTF, self.w_down_FD[...], dt), 'mlp_proj')

  def __call__(self, x_BTD, positions_BT, segment_ids_BT=None, cache=None, rope=None):
    r = residual_multiplier(self.dims)   # CompleteP: 1/d on each branch; SP, μP and base depth skip it
    branch = (lambda h: h) if r == 1.0 else (lambda h: h * jnp.asarray(r, h.dtype))
    h_BTD, new_cache = self.attention(self.attn_norm(x_BTD), positions_BT, segment_ids_BT, cache, rope)
    x_BTD = x_BTD + branch(h_BTD)
    x_BTD = x_BTD + branch(self.mlp(self.mlp_norm(x_BTD)))
    return x_BTD, new_cache


def _prefill_error(positions_BT) -> str | None:
  p = np.asarray(positions_BT)
  if np.array_equal(p, np.broadcast_to(np.arange(p.shape[1]), p.shape)):
    return None
  return (f'a model call with a KV cache and T={p.shape[1]} > 1 tokens is a prefill, which must start at '
          f'position 0 in every row (positions_BT = arange(T)); got rows starting at {sorted(set(p[:, 0].tolist()))}. '
          f'The prefill attends over its own keys only: pass positions_BT=None, or feed the tokens after a '
          f'prefill one at a time (T = 1)')


def _raise_prefill_error(positions_BT) -> None:
  if (msg := _prefill_error(positions_BT)):
    raise ValueError(msg)


def check_prefill_positions(positions_BT) -> None:
  """ValueError unless positions_BT is arange(T) in every row (a prefill starts at position 0).

  Concrete positions are checked on the host at once; traced ones (inside jit) by a host
  callback when the call runs: one small transfer per prefill, none per decode step (T = 1)
  and none when positions_BT is None (then they are arange(T) by construction).
  """
  if isinstance(positions_BT, jax.core.Tracer):
    jax.debug.callback(_raise_prefill_error, positions_BT)
  else:
    _raise_prefill_error(positions_BT)


def write_cache(cache, k_BTGK, v_BTGK, positions_BT):
  """Writes the new keys/values into the cache at their absolute positions."""
  k_cache, v_cache = cache
  b_idx = jnp.arange(positions_BT.shape[0])[:, None]
  return (k_cache.at[b_idx, positions_BT].set(k_BTGK.astype(k_cache.dtype)),
          v_cache.at[b_idx, positions_BT].set(v_BTGK.astype(v_cache.dtype)))


# ----------------------------------------------------------------------------- remat
_cp = jax.checkpoint_policies
_REMAT_POLICIES = {
    'full': _cp.nothing_saveable,
    # every matmul output: plain dots (attention scores) and the named projections, whose
    # dots sit inside mixed_einsum's custom VJP where checkpoint_dots cannot see them
    'dots': _cp.save_from_both_policies(_cp.checkpoint_dots,
                                        _cp.save_only_these_names('attn_proj', 'attn_out', 'mlp_proj')),
    # keep the attention projections and the attention output; recompute the MLP
    'dots_except_mlp': _cp.save_only_these_names('attn_proj', 'attn_out'),
}
# the valid model.remat names (scaling/config/load.py validates against them); 'none' saves everything
REMATS = names.REMATS
assert REMATS == ('none',) + tuple(_REMAT_POLICIES), 'scaling/base/names.py REMATS must list _REMAT_POLICIES'


def remat_policy(name: str):
  return _REMAT_POLICIES[name]


# ----------------------------------------------------------------------------- model
class Transformer(nnx.Module):
  """Embedding, L blocks (stacked), final norm, LM head."""

  def __init__(self, dims: ModelDims, *, rngs: nnx.Rngs):
    self.dims = dims
    D, V = dims.d_model, dims.vocab_size
    self.embed_VD = nnx.Param(_init(dims, rngs, 'embed_VD', (V, D), dims.init_std), axes=('vocab', 'embed'))
    if dims.position == 'learned':
      self.pos_embed_TD = nnx.Param(_init(dims, rngs, 'pos_embed_TD', (dims.position_rows, D), dims.init_std),
                                    axes=('seq', 'embed'))
    self.blocks = Block(dims, dims.num_layers, rngs=rngs)
    self.final_norm = Norm(dims)
    if not dims.tied_embeddings:
      self.lm_head_DV = nnx.Param(_init(dims, rngs, 'lm_head_DV', (D, V), dims.init_std), axes=('embed', 'vocab'))

  def embed(self, tokens_BT, positions_BT):
    """Token embeddings plus, with learned positions, the position table's rows.

    Positions past the table (position_rows: model.position_table, else seq_len) are clipped to its
    last row, not an error. A static check (T > rows) would be free under jit but cannot tell padding
    from tokens: callers right-pad past the table (tests/test_generate.py's reference loop pads a 32-row model to 64),
    and causally no real position sees those rows. A value check would cost a host callback or
    checkify per call. The entry points check instead, on the host before compiling: training
    (T = seq_len), `scaling eval` and the final-length evals (evaluate.check_positions_cover /
    positions_cover) and `generate` (prompt + max_new_tokens, generate.check_lengths).
    """
    x_BTD = jnp.take(self.embed_VD[...], tokens_BT, axis=0)
    if self.dims.position == 'learned':
      table = self.pos_embed_TD[...]
      x_BTD = x_BTD + jnp.take(table, positions_BT, axis=0, mode='clip')
    return x_BTD.astype(self.dims.compute_dtype)

  def hidden(self, tokens_BT, positions_BT=None, segment_ids_BT=None, cache=None):
    """Final normed hidden states x_BTD (and the updated cache when one is given)."""
    dims = self.dims
    B, T = tokens_BT.shape
    rope = None
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
      if dims.position == 'rope':
        rope = static_rope_tables(B, T, dims.head_dim, dims.rope_theta)
    elif cache is not None and T > 1:
      check_prefill_positions(positions_BT)
    if dims.position == 'rope' and rope is None:
      rope = rope_tables(positions_BT, dims.head_dim, dims.rope_theta)
    x_BTD = self.embed(tokens_BT, positions_BT)
    graphdef, params = nnx.split(self.blocks)

    def body(x_BTD, layer):
      layer_params, layer_cache = layer
      block = nnx.merge(graphdef, layer_params)
      return block(x_BTD, positions_BT, segment_ids_BT, layer_cache, rope)

    if dims.remat != 'none':
      body = jax.checkpoint(body, policy=remat_policy(dims.remat))
    if dims.scan_layers:
      x_BTD, new_cache = jax.lax.scan(body, x_BTD, (params, cache))
    else:
      outs = []
      for i in range(dims.num_layers):
        layer = jax.tree.map(lambda a: a[i], (params, cache))
        x_BTD, c = body(x_BTD, layer)
        outs.append(c)
      new_cache = None if cache is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)
    return self.final_norm(x_BTD), new_cache

  def head_weights(self):
    """The LM head as W_DV (the transposed embedding when tied), times μP's output multiplier."""
    w_DV = self.embed_VD[...].T if self.dims.tied_embeddings else self.lm_head_DV[...]
    if (c := output_multiplier(self.dims)) != 1.0:   # SP and μP at base width skip it
      w_DV = w_DV * c
    return w_DV

  def logits(self, x_BTD):
    return mixed_einsum('btd,dv->btv', x_BTD.astype(self.dims.compute_dtype),
                        self.head_weights().astype(self.dims.compute_dtype))

  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, cache=None):
    """Logits (float32) for every position; with a cache, also the updated cache."""
    x_BTD, new_cache = self.hidden(tokens_BT, positions_BT, segment_ids_BT, cache)
    logits_BTV = self.logits(x_BTD)
    return logits_BTV if cache is None else (logits_BTV, new_cache)

  def init_cache(self, batch: int, length: int, dtype=None):
    """An empty KV cache: (k, v), each [L, B, S, G, K] in the compute dtype (only the kv heads)."""
    d = self.dims
    shape = (d.num_layers, batch, length, d.num_kv_heads, d.head_dim)
    dtype = dtype or d.compute_dtype
    return (jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def build_model(model_cfg, *, seed: int = 0, backend: str | None = None) -> Transformer:
  dims = model_cfg if isinstance(model_cfg, ModelDims) else ModelDims.from_config(model_cfg, backend=backend)
  return Transformer(dims, rngs=nnx.Rngs(params=seed))


def abstract_model(model_cfg) -> Transformer:
  """The model with ShapeDtypeStructs instead of arrays: no memory allocated."""
  dims = model_cfg if isinstance(model_cfg, ModelDims) else ModelDims.from_config(model_cfg, backend='cpu')
  return nnx.eval_shape(lambda: Transformer(dims, rngs=nnx.Rngs(params=0)))


def param_axes(model: Transformer) -> Any:
  """A pytree (matching nnx.state(model, nnx.Param)) of logical axis-name tuples."""
  state = nnx.state(model, nnx.Param)
  return jax.tree.map(lambda v: v.axes, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
