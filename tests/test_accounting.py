"""Tests of scaling/model/accounting.py against independent counts.

Parameter counts are checked against the abstract model (nnx.eval_shape: the
real parameter tree, no memory). FLOPs are checked against the matmuls the
model actually executes: every dot_general in the traced forward pass is
counted (2 x output size x contraction size), and XLA's own cost analysis of
the compiled forward gives a second opinion. The causal attention average is
checked against a brute-force count of attended keys per query position.
Memory is checked against the bytes of the real optimizer's abstract state, the
125m scale-table row against hand-worked arithmetic (shown in comments), and the
7b rung against LLaMA-7B's published parameter count.
"""

import math
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from scaling.config import load as config_lib
from scaling.model import accounting
from scaling.model import transformer as model_lib
from scaling.train import optim

LADDER = config_lib.load_module(config_lib.REPO_ROOT / 'scaling' / 'model' / 'ladder.py')


def _abstract_param_sizes(model_cfg) -> dict[str, int]:
  """Parameter count of the abstract model, per top-level name (blocks included)."""
  state = nnx.state(model_lib.abstract_model(model_cfg), nnx.Param)
  sizes = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    top = path[0].key
    sizes[top] = sizes.get(top, 0) + math.prod(leaf.shape)
  return sizes


def _adam_state_bytes(cfg) -> int:
  """Bytes of the training optimizer's state (scaling.train.optim, abstract: nnx.eval_shape + jax.eval_shape);
  the integer step counters are left out."""
  params = nnx.state(model_lib.abstract_model(cfg.model), nnx.Param)
  tx, _ = optim.make_optimizer(cfg.train, 100)
  leaves = jax.tree_util.tree_leaves(jax.eval_shape(tx.init, params))
  return sum(l.size * l.dtype.itemsize for l in leaves if jnp.issubdtype(l.dtype, jnp.floating))


def _check_counts(cfg):
  model_cfg = cfg.model
  sizes = _abstract_param_sizes(model_cfg)
  got = accounting.count_params(model_cfg)
  assert got['total'] == sum(sizes.values())
  assert got['embedding'] == sizes['embed_VD']
  assert got['position'] == sizes.get('pos_embed_TD', 0)
  assert got['head'] == sizes.get('lm_head_DV', 0)
  non_emb = sum(v for k, v in sizes.items() if k not in ('embed_VD', 'pos_embed_TD', 'lm_head_DV'))
  assert got['non_embedding'] == non_emb
  assert got['per_layer'] * model_cfg.num_layers == sizes['blocks']
  # the same numbers from the resolved ModelDims
  assert accounting.count_params(model_lib.ModelDims.from_config(model_cfg, backend='cpu')) == got
  # params and their gradients (float32: 4 bytes each, checked here) + the real optimizer's moments
  params = jax.tree_util.tree_leaves(nnx.state(model_lib.abstract_model(model_cfg), nnx.Param))
  assert {l.dtype for l in params} == {jnp.dtype('float32')}
  param_bytes = sum(l.size * 4 for l in params)
  assert accounting.train_memory_bytes(model_cfg) == 2 * param_bytes + _adam_state_bytes(cfg)


@pytest.mark.parametrize('rung', list(LADDER.RUNGS))
def test_count_params_matches_abstract_model_for_every_rung(rung):
  _check_counts(config_lib.load_config(f'scaling/model/ladder.py:{rung}'))


@pytest.mark.parametrize('variant', [
    dict(norm='layernorm'),
    dict(position='learned'),
    dict(position='none'),
    dict(mlp='gelu'),
    dict(mlp='gelu', d_ff=0),          # derived d_ff = 4 d
    dict(d_ff=0),                      # derived d_ff = 8/3 d rounded up to 64
    dict(tied_embeddings=False),
    dict(num_heads=8, num_kv_heads=2),   # GQA
    dict(num_heads=8, num_kv_heads=8),   # MHA
    dict(num_heads=8, num_kv_heads=1),   # MQA
    dict(head_dim=12),                 # head_dim != d_model / num_heads
    dict(norm='layernorm', position='learned', mlp='gelu', tied_embeddings=False, num_kv_heads=4),
    dict(position='learned', position_table=64),   # a table longer than seq_len
])
def test_count_params_matches_abstract_model_for_variants(tiny_cfg, variant):
  _check_counts(tiny_cfg(**variant))


def test_position_table_rows_count_as_embedding_parameters_by_hand(tiny_cfg):
  """The tiny model (V 97, T 16, L 2, D 32, H 4, G 2, K 8, F 64, swiglu, rmsnorm, tied), counted by hand:
  embed 97 x 32 = 3104; per layer attention 32x32 + 2x32x16 + 32x32 = 3072, MLP 3x32x64 = 6144, norms 64
  -> 9280, two layers 18560; final norm 32: 21696 without positions (non-embedding 18592). Learned positions
  add 16 x 32 = 512 rows (the default: seq_len), a 64-row table 64 x 32 = 2048, all outside non_embedding."""
  for ov, pos in (({}, 0), ({'position': 'learned'}, 512), ({'position': 'learned', 'position_table': 0}, 512),
                  ({'position': 'learned', 'position_table': 16}, 512),
                  ({'position': 'learned', 'position_table': 64}, 2048)):
    got = accounting.count_params(tiny_cfg(**ov).model)
    assert (got['total'], got['position'], got['non_embedding']) == (21696 + pos, pos, 18592), ov
  # FLOPs per token follow the training length, not the table (the lookup is not a matmul)
  assert accounting.flops_per_token(tiny_cfg(position='learned', position_table=64).model) == \
      accounting.flops_per_token(tiny_cfg(position='learned').model)


def _nominal(name: str) -> float:
  number, unit = re.fullmatch(r'(\d+)([mb])', name).groups()
  return int(number) * (1e6 if unit == 'm' else 1e9)


def test_named_rungs_are_within_5_percent_of_their_name():
  named = [r for r in LADDER.RUNGS if re.fullmatch(r'\d+[mb]', r)]
  assert set(named) >= {'125m', '350m', '760m', '1b', '3b', '7b', '2m', '5m', '10m', '20m', '30m'}
  for rung in named:
    total = accounting.count_params(config_lib.load_config(f'scaling/model/ladder.py:{rung}').model)['total']
    assert abs(total / _nominal(rung) - 1) <= 0.05, (rung, total)


def test_seven_b_rung_is_llama_7b():
  """The 7b rung has LLaMA-7B's shape (32 x 4096, 32 heads, d_ff 11008, vocab 32000, untied): its published
  parameter count (6,738,415,616, Touvron et al. 2023 / the Hugging Face checkpoint) is an outside reference."""
  assert accounting.count_params(config_lib.load_config('scaling/model/ladder.py:7b').model)['total'] == 6_738_415_616


def test_big_rungs_train_compute_optimal_tokens():
  batch_tokens, steps = {}, {}
  for rung in LADDER.BIG_RUNGS:
    cfg = config_lib.load_config(f'scaling/model/ladder.py:{rung}')
    batch_tokens[rung] = cfg.train.batch_size * cfg.model.seq_len
    # 20 tokens per parameter of the real (abstract) parameter tree
    assert cfg.train.tokens == 20 * sum(_abstract_param_sizes(cfg.model).values())
    steps[rung] = config_lib.train_steps(cfg)
  # steps = floor(20 N / batch tokens), worked out by hand:
  #   125m: 20 x 124,668,672 = 2,493,373,440 / 2^19 = 4755.7;     350m: 6,879,662,080 / 2^19 = 13121.9
  #   760m: 14,990,899,200 / 2^20 = 14296.4;  1b: 19,326,771,200 / 2^20 = 18431.4
  #   3b: 58,644,940,800 / 2^21 = 27964.1;    7b: 134,768,312,320 / 2^21 = 64262.5
  assert steps == {'125m': 4755, '350m': 13121, '760m': 14296, '1b': 18431, '3b': 27964, '7b': 64262}
  # GPT-3 batch sizes in tokens: 0.5M at 125m/350m, 1M at 760m/1b, 2M at 3b/7b.
  assert batch_tokens == {'125m': 2**19, '350m': 2**19, '760m': 2**20, '1b': 2**20, '3b': 2**21, '7b': 2**21}


# ----------------------------------------------------------------------------- FLOPs
def _dot_flops(jaxpr) -> int:
  """2 x (output elements) x (contraction size), summed over every dot_general (scan bodies x length)."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      (lhs_contract, _), _ = eqn.params['dimension_numbers']
      lhs_shape = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs_shape[i] for i in lhs_contract)
    repeat = eqn.params['length'] if eqn.primitive.name == 'scan' else 1
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          total += repeat * _dot_flops(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          total += repeat * _dot_flops(sub)
  return total


def _forward(model_cfg):
  graphdef, state = nnx.split(model_lib.abstract_model(model_cfg))
  return (lambda state, tokens: nnx.merge(graphdef, state)(tokens)), state


def _forward_dot_flops(model_cfg, batch: int, length: int) -> int:
  fn, state = _forward(model_cfg)
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  return _dot_flops(jax.make_jaxpr(fn)(state, tokens).jaxpr)


def _brute_force_avg_keys(T: int, window: int) -> float:
  """Loop over query positions, counting the keys each one attends to."""
  attended = 0
  for i in range(T):
    attended += sum(1 for j in range(T) if j <= i and (window == 0 or i - j < window))
  return attended / T


@pytest.mark.parametrize('T,window', [(1, 0), (2, 0), (16, 0), (37, 0), (16, 1), (16, 5), (16, 16),
                                      (16, 40), (50, 7)])
def test_avg_attended_keys_matches_brute_force(T, window):
  assert accounting.avg_attended_keys(T, window) == pytest.approx(_brute_force_avg_keys(T, window), rel=1e-12)


@pytest.mark.parametrize('variant', [
    dict(),
    dict(mlp='gelu', tied_embeddings=False),
    dict(num_kv_heads=4, norm='layernorm', position='learned'),
    dict(sliding_window=5, head_dim=12),
])
def test_flops_per_token_matches_traced_matmuls(tiny_cfg, variant):
  cfg = tiny_cfg(num_layers=3, **variant).model
  L, H, K = cfg.num_layers, cfg.num_heads, model_lib.ModelDims.from_config(cfg).head_dim
  batch = 2
  # The traced forward at two lengths separates the per-token matmul part (a)
  # from the attention part, which grows with the keys per query (b * T):
  # dot FLOPs / token = a + b T, since the reference attention scores every key.
  per_token = {t: _forward_dot_flops(cfg, batch, t) / (batch * t) for t in (8, 16)}
  b = (per_token[16] - per_token[8]) / 8
  a = per_token[8] - 8 * b
  assert a == 2 * accounting.matmul_params(cfg)          # 2 FLOPs per multiply-add per matmul weight
  assert b == 4 * L * H * K                              # QK^T and AV: 2 x 2 K FLOPs per key per head
  for T in (16, 64, 301):
    # Causal: each query sees only the keys counted by brute force; training = 3 x forward.
    want = 3 * (a + b * _brute_force_avg_keys(T, cfg.sliding_window))
    assert accounting.flops_per_token(cfg, T) == pytest.approx(want, rel=1e-12)
    assert accounting.forward_flops_per_token(cfg, T) == pytest.approx(want / 3, rel=1e-12)
  assert accounting.flops_per_token(cfg) == accounting.flops_per_token(cfg, cfg.seq_len)


def test_xla_cost_analysis_agrees_with_traced_matmuls(tiny_cfg):
  """XLA's FLOP count of the compiled (unrolled) forward = our dot count + a little elementwise work."""
  # Unrolled: XLA's cost analysis counts a while-loop (scan) body only once.
  cfg = tiny_cfg(scan_layers=False, d_model=64, d_ff=192, num_heads=4, num_kv_heads=2).model
  batch, T = 2, 16
  fn, state = _forward(cfg)
  tokens = jax.ShapeDtypeStruct((batch, T), jnp.int32)
  xla_flops = jax.jit(fn).lower(state, tokens).compile().cost_analysis()['flops']
  dots = _forward_dot_flops(cfg, batch, T)
  L, H, K = cfg.num_layers, cfg.num_heads, cfg.d_model // cfg.num_heads
  assert dots == batch * T * (2 * accounting.matmul_params(cfg) + 4 * L * H * K * T)
  assert dots <= xla_flops <= 1.10 * dots, (xla_flops, dots)


def test_table_row_of_125m_matches_hand_arithmetic(tiny_cfg):
  """125m: L 12, D 768, H 12, G 4, K 64, F 2048 (8/3 D), V 32000, T 2048, RMSNorm, RoPE, SwiGLU, untied."""
  cfg = config_lib.load_config('scaling/model/ladder.py:125m').model
  row = accounting.table_row('125m', cfg)
  # per layer: q, o 2 x 768 x 768 = 1,179,648; k, v 2 x 768 x 256 = 393,216; MLP 3 x 768 x 2048 = 4,718,592;
  #   norms 2 x 768 = 1,536: 6,292,992 x 12 = 75,515,904; + final norm 768 = 75,516,672 non-embedding;
  #   + embedding and head 2 x 32000 x 768 = 49,152,000: 124,668,672 in all.
  assert (row['params'], row['non_embedding_params']) == (124_668_672, 75_516_672)
  assert row['chinchilla_tokens'] == 2_493_373_440                       # 20 x 124,668,672
  # matmul weights: 12 x (1,572,864 + 4,718,592) + head 24,576,000 = 100,073,472 -> 6 x = 600,440,832;
  # attention: 12 x 12 layers x 12 heads x 64 x (2049 / 2) mean keys = 113,301,504; sum 713,742,336.
  assert row['flops_per_token'] == 713_742_336
  assert row['train_flops'] == pytest.approx(713_742_336 * 2_493_373_440, rel=1e-15)   # 1.7796e18
  # at 40% of the H100's 989 TFLOP/s: 1.7796e18 / 3.956e14 = 4498.5 s = 1.2496 h
  assert row['hours_H100'] == pytest.approx(1.2496, abs=1e-4)
  assert row['param_adam_bytes'] == 16 * 124_668_672                     # 4 float32 copies
  table = accounting.format_table([row, accounting.table_row('nano', tiny_cfg().model)])
  lines = table.splitlines()
  assert len(lines) == 4 and lines[2].startswith('| 125m |') and all(
      line.count('|') == lines[0].count('|') for line in lines)


def test_every_jax_device_kind_finds_its_peak_row():
  """JAX names TPUs 'TPU v4', 'TPU v5' (v5p), 'TPU v5 lite' (v5e), 'TPU v6 lite' (v6e) and GPUs by their full
  product names; each finds its row (the old substring match sent v5e, v5p and v6e to 'assumed H100')."""
  from scaling.base.hardware import TPUS, peak_flops, peak_row
  for chip in TPUS.values():   # each target of `scaling compile` is its own row of the one table
    assert peak_row(chip.device_kind) == f'TPU {chip.generation}', chip
  # the data sheets' dense bf16 peaks, stated here: H100 SXM 1,979 TFLOP/s with sparsity, halved; Cloud TPU's
  # per-chip figures for v4, v5p, v5e and v6e (every target above)
  for kind, peak in (('NVIDIA H100 80GB HBM3', 989e12), ('NVIDIA H200', 989e12), ('NVIDIA A100-SXM4-40GB', 312e12),
                     ('TPU v4', 275e12), ('TPU v5', 459e12), ('TPU v5 lite', 197e12), ('TPU v6 lite', 918e12)):
    assert peak_flops(peak_row(kind)) == peak, kind
  assert sorted(TPUS) == ['v4', 'v5e', 'v5p', 'v6e']
  assert peak_row('NVIDIA H100 80GB HBM3') == 'H100' and peak_row('NVIDIA H200') == 'H200'
  assert peak_row('NVIDIA A100-SXM4-40GB') == 'A100'
  assert peak_row('TPU v7x') is None and peak_row('cpu') is None
