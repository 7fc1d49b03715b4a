"""Hugging Face interop: export a workdir as a Llama checkpoint, import one back.

    scaling export --workdir DIR --out HF_DIR [--step N] [--dtype float32|bfloat16] [--max_shard_size 2GB]
    scaling import --hf HF_DIR --workdir DIR [--config FILE.py[:ARG]]

Every model built with the default architecture (RMSNorm, RoPE, SwiGLU, grouped-
query attention, tied or untied LM head, no biases) is a `LlamaForCausalLM`; other
choices (LayerNorm, learned or no positions, GELU, sliding window) have no Llama
equivalent and are refused with an error naming the config field.

Weight layout. Our block parameters are stacked along a leading layers axis and
keep heads as separate axes; Hugging Face stores one `nn.Linear` weight per
layer as [out_features, in_features] (y = x W^T):

    ours                          HF name (layer i)                          HF shape
    embed_VD                      model.embed_tokens.weight                  [V, D]
    blocks.wq_DHK[i]              model.layers.i.self_attn.q_proj.weight     [H*K, D]
    blocks.wk_DGK[i] / wv_DGK[i]  ... k_proj.weight / v_proj.weight          [G*K, D]
    blocks.wo_HKD[i]              ... o_proj.weight                          [D, H*K]
    blocks.w_gate_DF[i] / w_up_DF ... mlp.gate_proj.weight / up_proj.weight  [F, D]
    blocks.w_down_FD[i]           ... mlp.down_proj.weight                   [D, F]
    blocks.attn_norm.scale[i]     ... input_layernorm.weight                 [D]
    blocks.mlp_norm.scale[i]      ... post_attention_layernorm.weight        [D]
    final_norm.scale              model.norm.weight                          [D]
    lm_head_DV (untied only)      lm_head.weight                             [V, D]

No permutation of the q/k rows is needed: our RoPE rotates the pairs (i, i + K/2)
("rotate_half"), which is exactly what `LlamaAttention` does, and query head h
reads kv head h // (H/G) in both (the tests check the logits against
transformers).

Files. Weights go to `model.safetensors`, or above `--max_shard_size` to
`model-0000k-of-0000n.safetensors` shards with a `model.safetensors.index.json`,
written with the safetensors library (numpy arrays; bfloat16 through ml_dtypes).
Only safetensors are read or written: never pickle (no `pytorch_model.bin`).
A sentencepiece tokenizer is exported as `tokenizer.model` plus a
`tokenizer_config.json` for `LlamaTokenizer` (BPE) that reproduces our ids: no
BOS/EOS added (our documents are only EOS-terminated), `add_prefix_space=False`
and `legacy=False` (our models are trained without sentencepiece's dummy prefix,
with identity normalization). A unigram model gets `PreTrainedTokenizerFast`,
which transformers builds from the sentencepiece proto. char/byte/tiktoken
tokenizers have no Llama form: the weights are exported without a tokenizer.

μP. A model trained with model.parametrization='mup' exports as a plain Llama: its forward
multipliers are folded into the exported weights (`mup_folding`): the attention logit factor
into q_proj (RoPE is linear, so scaling q before or after it is the same), the output
multiplier into lm_head. A tied μP model whose output multiplier is not 1 is exported untied
(embed_tokens the embedding, lm_head the embedding times the multiplier), since one tensor
cannot be both. The hidden matrices' init and learning-rate rules do not change the forward,
so nothing else moves. `scaling import` then gives an 'sp' model with the same logits.

Both directions write into a temporary folder beside the target and rename it at
the end, so a failure leaves nothing at the target. Before the rename, the folder and
its files get the modes that mkdir/open give under the process umask (755/644 under
the usual 022), not the private 700/600 of mkdtemp and safetensors.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Any

import ml_dtypes  # registers bfloat16 with numpy (safetensors' numpy backend needs it)
import numpy as np
import sentencepiece as spm
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from scaling.config.load import ConfigError, from_json, load_config, resolved_dims, validate_config, validate_model

WEIGHTS_NAME = 'model.safetensors'
INDEX_NAME = 'model.safetensors.index.json'
CONFIG_NAME = 'config.json'
SPM_FILE = 'tokenizer.model'
EXPORT_DTYPES = {'float32': np.dtype(np.float32), 'bfloat16': np.dtype(ml_dtypes.bfloat16)}
_SAFETENSORS_DTYPES = ('F32', 'F16', 'BF16', 'F64')
# Tensors some Llama checkpoints carry that hold no weights (recomputed by transformers).
_IGNORED_SUFFIXES = ('.rotary_emb.inv_freq',)


class HFError(ValueError):
  """Bad export/import input; the message names the problem and the fix."""


# ----------------------------------------------------------------------------- config
def check_llama_compatible(m) -> None:
  """Raises HFError naming the first model field that LlamaForCausalLM cannot express.

  `m` is our model section (ConfigDict) or a ModelDims: anything with the fields as attributes.
  """
  fixed = (('norm', 'rmsnorm', 'Llama uses RMSNorm'),
           ('position', 'rope', 'Llama uses rotary position embeddings'),
           ('mlp', 'swiglu', 'Llama uses a SwiGLU MLP'))
  for name, want, why in fixed:
    if getattr(m, name) != want:
      raise HFError(f'cannot export as Llama: model.{name}={getattr(m, name)!r} has no Llama equivalent '
                    f'({why}; only model.{name}={want!r} models can be exported)')
  window = getattr(m, 'sliding_window', 0)
  if window:
    raise HFError(f'cannot export as Llama: model.sliding_window={window} (Llama attention is full causal; '
                  'only model.sliding_window=0 models can be exported)')


def mup_folding(m) -> tuple[float, float, bool]:
  """(attention logit factor folded into q_proj, output multiplier folded into lm_head, untie on export)
  of model section or ModelDims `m`: (1, 1, False) under 'sp' and μP at its base shape."""
  from scaling.model.transformer import ModelDims, attention_logit_multiplier, output_multiplier
  if getattr(m, 'parametrization', 'sp') == 'sp':
    return 1.0, 1.0, False
  dims = m if isinstance(m, ModelDims) else ModelDims.from_config(m, backend='cpu')
  a, c = attention_logit_multiplier(dims), output_multiplier(dims)
  return a, c, bool(dims.tied_embeddings and c != 1.0)


def hf_config_from_model(m, *, dtype: str = 'float32', tokenizer=None) -> dict[str, Any]:
  """The LlamaConfig (as a config.json dict) of our model section `m`."""
  check_llama_compatible(m)
  dims = resolved_dims(m)
  bos = getattr(tokenizer, 'bos_id', None)
  eos = getattr(tokenizer, 'eos_id', None)
  return {
      'architectures': ['LlamaForCausalLM'],
      'model_type': 'llama',
      'vocab_size': int(m.vocab_size),
      'hidden_size': int(m.d_model),
      'intermediate_size': int(dims['d_ff']),
      'num_hidden_layers': int(m.num_layers),
      'num_attention_heads': int(m.num_heads),
      'num_key_value_heads': int(m.num_kv_heads),
      'head_dim': int(dims['head_dim']),
      'hidden_act': 'silu',
      'max_position_embeddings': int(m.seq_len),
      'rms_norm_eps': float(m.norm_eps),
      'rope_theta': float(m.rope_theta),
      'rope_parameters': {'rope_type': 'default', 'rope_theta': float(m.rope_theta)},  # transformers >= 5
      'rope_scaling': None,
      'attention_bias': False,
      'mlp_bias': False,
      'attention_dropout': 0.0,
      'pretraining_tp': 1,
      'tie_word_embeddings': bool(m.tied_embeddings) and not mup_folding(m)[2],   # μP may untie (mup_folding)
      'initializer_range': float(m.get('init_std', 0.02)),
      'bos_token_id': bos,
      'eos_token_id': eos,
      'pad_token_id': getattr(tokenizer, 'pad_id', None),
      'use_cache': True,
      'torch_dtype': dtype,
      'dtype': dtype,  # the transformers >= 5 name of torch_dtype
  }


def model_cfg_from_hf(hf_config: dict[str, Any]):
  """Our model section (an ml_collections ConfigDict) from a Llama config.json dict.

  Fields Llama does not have (compute dtype, scan, remat, attention kernel, init)
  take the defaults of scaling/config/default.py.
  """
  c = hf_config
  archs = c.get('architectures') or []
  if c.get('model_type') != 'llama' and 'LlamaForCausalLM' not in archs:
    raise HFError(f'not a Llama checkpoint: config.json has model_type={c.get("model_type")!r}, '
                  f'architectures={archs!r}; only LlamaForCausalLM (model_type "llama") can be imported')
  for key in ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'):
    if not isinstance(c.get(key), int):
      raise HFError(f'config.json: {key} is missing or not an integer ({c.get(key)!r})')
  act = c.get('hidden_act', 'silu')
  if act != 'silu':
    raise HFError(f'config.json: hidden_act={act!r}; only "silu" (SwiGLU) maps to our model')
  for key in ('attention_bias', 'mlp_bias'):
    if c.get(key):
      raise HFError(f'config.json: {key}=true; our model has no biases in linear layers')
  rope = c.get('rope_parameters') or {}
  scaling = c.get('rope_scaling') or {}
  for src, d in (('rope_parameters', rope), ('rope_scaling', scaling)):
    kind = d.get('rope_type', d.get('type', 'default'))
    if kind != 'default':
      raise HFError(f'config.json: {src} has rope_type={kind!r}; only plain RoPE ("default") is supported')
  theta = rope.get('rope_theta') or c.get('rope_theta') or 10000.0
  if c.get('pretraining_tp', 1) not in (1, None):
    raise HFError(f'config.json: pretraining_tp={c["pretraining_tp"]} is not supported (needs 1)')
  heads = c['num_attention_heads']
  kv_heads = c.get('num_key_value_heads') or heads
  head_dim = c.get('head_dim') or c['hidden_size'] // heads
  m = load_config(None).model
  with m.unlocked():
    m.vocab_size = c['vocab_size']
    m.seq_len = int(c.get('max_position_embeddings') or m.seq_len)
    m.num_layers = c['num_hidden_layers']
    m.d_model = c['hidden_size']
    m.num_heads = heads
    m.num_kv_heads = int(kv_heads)
    m.head_dim = int(head_dim)
    m.d_ff = c['intermediate_size']
    m.norm = 'rmsnorm'
    m.norm_eps = float(c.get('rms_norm_eps', 1e-6))
    m.position = 'rope'
    m.rope_theta = float(theta)
    m.mlp = 'swiglu'
    m.tied_embeddings = bool(c.get('tie_word_embeddings', False))
    m.sliding_window = 0
  try:
    validate_model(m)
  except ConfigError as e:
    raise HFError(f'config.json describes a model we cannot build: {e}') from e
  return m


# ----------------------------------------------------------------------------- tensors
def _layer(i: int) -> str:
  return f'model.layers.{i}.'


def expected_shapes(m) -> dict[str, tuple[int, ...]]:
  """HF tensor name -> shape, for our model section `m` (in the order they are written)."""
  dims = resolved_dims(m)
  V, D, H, G = m.vocab_size, m.d_model, m.num_heads, m.num_kv_heads
  K, F = dims['head_dim'], dims['d_ff']
  out = {'model.embed_tokens.weight': (V, D)}
  for i in range(m.num_layers):
    p = _layer(i)
    out.update({
        p + 'self_attn.q_proj.weight': (H * K, D),
        p + 'self_attn.k_proj.weight': (G * K, D),
        p + 'self_attn.v_proj.weight': (G * K, D),
        p + 'self_attn.o_proj.weight': (D, H * K),
        p + 'mlp.gate_proj.weight': (F, D),
        p + 'mlp.up_proj.weight': (F, D),
        p + 'mlp.down_proj.weight': (D, F),
        p + 'input_layernorm.weight': (D,),
        p + 'post_attention_layernorm.weight': (D,),
    })
  out['model.norm.weight'] = (D,)
  if not m.tied_embeddings:
    out['lm_head.weight'] = (V, D)
  return out


def check_tensors(m, shapes: dict[str, tuple[int, ...]], source: str) -> list[str]:
  """Checks names and shapes against the config; returns the names to ignore (extra but harmless)."""
  want = expected_shapes(m)
  missing = [n for n in want if n not in shapes]
  if missing:
    more = f' and {len(missing) - 5} more' if len(missing) > 5 else ''
    raise HFError(f'{source}: missing tensors {missing[:5]}{more}; the checkpoint is incomplete or not a '
                  f'Llama model with num_hidden_layers={m.num_layers}')
  ignore = []
  for name in shapes:
    if name in want:
      continue
    if name.endswith(_IGNORED_SUFFIXES) or (name == 'lm_head.weight' and m.tied_embeddings):
      ignore.append(name)  # transformers ignores these too (recomputed / tied)
      continue
    raise HFError(f'{source}: unexpected tensor {name!r} (shape {list(shapes[name])}); it is not part of a '
                  'bias-free Llama model with this config')
  for name, shape in want.items():
    got = tuple(shapes[name])
    if got != shape:
      hint = ''
      if name in ('model.embed_tokens.weight', 'lm_head.weight') and got[1:] == shape[1:]:
        hint = f' (config.json vocab_size={m.vocab_size} but the tensor has {got[0]} rows)'
      raise HFError(f'{source}: tensor {name} has shape {list(got)} but config.json implies {list(shape)}'
                    f'{hint}; the config and the weights do not belong together')
  return ignore


def params_to_hf(model) -> dict[str, np.ndarray]:
  """Our Transformer's parameters as HF Llama tensors (float32 numpy, torch layout), in file order."""
  from flax import nnx
  d = model.dims
  check_llama_compatible(d)
  p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  f32 = lambda x: np.asarray(x, dtype=np.float32)
  b = p['blocks']
  D, H, G, K = d.d_model, d.num_heads, d.num_kv_heads, d.head_dim
  wq, wk, wv, wo = f32(b['wq_DHK']), f32(b['wk_DGK']), f32(b['wv_DGK']), f32(b['wo_HKD'])
  wg, wu, wd = f32(b['w_gate_DF']), f32(b['w_up_DF']), f32(b['w_down_FD'])
  an, mn = f32(b['attn_norm']['scale']), f32(b['mlp_norm']['scale'])
  attn_mult, out_mult, untie = mup_folding(d)
  if attn_mult != 1.0:   # μP's attention logit factor, folded into the queries
    wq = wq * np.float32(attn_mult)
  out = {'model.embed_tokens.weight': f32(p['embed_VD'])}
  c = np.ascontiguousarray
  for i in range(d.num_layers):
    q = _layer(i)
    out[q + 'self_attn.q_proj.weight'] = c(wq[i].reshape(D, H * K).T)
    out[q + 'self_attn.k_proj.weight'] = c(wk[i].reshape(D, G * K).T)
    out[q + 'self_attn.v_proj.weight'] = c(wv[i].reshape(D, G * K).T)
    out[q + 'self_attn.o_proj.weight'] = c(wo[i].reshape(H * K, D).T)
    out[q + 'mlp.gate_proj.weight'] = c(wg[i].T)
    out[q + 'mlp.up_proj.weight'] = c(wu[i].T)
    out[q + 'mlp.down_proj.weight'] = c(wd[i].T)
    out[q + 'input_layernorm.weight'] = c(an[i])
    out[q + 'post_attention_layernorm.weight'] = c(mn[i])
  out['model.norm.weight'] = f32(p['final_norm']['scale'])
  if not d.tied_embeddings or untie:   # μP's output multiplier folded into the head (a tied one is untied)
    head_DV = f32(p['embed_VD']).T if d.tied_embeddings else f32(p['lm_head_DV'])
    out['lm_head.weight'] = c((head_DV * np.float32(out_mult) if out_mult != 1.0 else head_DV).T)
  return out


def hf_to_model(hf_config: dict[str, Any], tensors: dict[str, np.ndarray]):
  """(model section ConfigDict, Transformer) from a Llama config dict and its tensors (any float dtype).

  Parameters come out float32 (our master weights), on the default device.
  """
  import jax.numpy as jnp
  from flax import nnx

  from scaling.model.transformer import abstract_model
  m = model_cfg_from_hf(hf_config)
  check_tensors(m, {k: tuple(v.shape) for k, v in tensors.items()}, 'tensors')
  L, D, H, G, K = m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.head_dim
  f32 = lambda name: np.asarray(tensors[name], dtype=np.float32)

  def stack(suffix, fn):
    return jnp.asarray(np.stack([fn(f32(_layer(i) + suffix)) for i in range(L)]))

  blocks = {
      'wq_DHK': stack('self_attn.q_proj.weight', lambda w: w.T.reshape(D, H, K)),
      'wk_DGK': stack('self_attn.k_proj.weight', lambda w: w.T.reshape(D, G, K)),
      'wv_DGK': stack('self_attn.v_proj.weight', lambda w: w.T.reshape(D, G, K)),
      'wo_HKD': stack('self_attn.o_proj.weight', lambda w: w.T.reshape(H, K, D)),
      'w_gate_DF': stack('mlp.gate_proj.weight', lambda w: w.T),
      'w_up_DF': stack('mlp.up_proj.weight', lambda w: w.T),
      'w_down_FD': stack('mlp.down_proj.weight', lambda w: w.T),
      'attn_norm': {'scale': stack('input_layernorm.weight', lambda w: w)},
      'mlp_norm': {'scale': stack('post_attention_layernorm.weight', lambda w: w)},
  }
  pure = {'embed_VD': jnp.asarray(f32('model.embed_tokens.weight')), 'blocks': blocks,
          'final_norm': {'scale': jnp.asarray(f32('model.norm.weight'))}}
  if not m.tied_embeddings:
    pure['lm_head_DV'] = jnp.asarray(f32('lm_head.weight').T)
  graphdef, state = nnx.split(abstract_model(m))
  nnx.replace_by_pure_dict(state, pure)
  return m, nnx.merge(graphdef, state)


# ----------------------------------------------------------------------------- safetensors files
_SIZE_UNITS = {'': 1, 'B': 1, 'KB': 10**3, 'MB': 10**6, 'GB': 10**9, 'TB': 10**12,
               'KIB': 2**10, 'MIB': 2**20, 'GIB': 2**30, 'TIB': 2**40}


def parse_size(text) -> int:
  """'2GB' -> 2e9 bytes, '500MiB' -> 500 * 2^20, 1000 -> 1000 (the units of transformers' max_shard_size)."""
  if isinstance(text, int):
    size = text
  else:
    match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*', str(text))
    unit = match.group(2).upper() if match else None
    if unit not in _SIZE_UNITS:
      raise HFError(f'--max_shard_size={text!r} is not a size; write e.g. 2GB, 500MB, 1GiB or a byte count')
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
  if size <= 0:
    raise HFError(f'--max_shard_size must be positive, got {text!r}')
  return size


def write_safetensors(tensors: dict[str, np.ndarray], out_dir, max_shard_size='2GB') -> list[str]:
  """Writes model.safetensors, or shards plus model.safetensors.index.json; returns the file names."""
  limit = parse_size(max_shard_size)
  shards: list[list[str]] = [[]]
  size = 0
  for name, arr in tensors.items():  # greedy, in order; a tensor above the limit gets a shard of its own
    if shards[-1] and size + arr.nbytes > limit:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += arr.nbytes
  n = len(shards)
  files = [WEIGHTS_NAME] if n == 1 else [f'model-{k + 1:05d}-of-{n:05d}.safetensors' for k in range(n)]
  for fname, names in zip(files, shards):
    save_file({k: tensors[k] for k in names}, os.path.join(out_dir, fname), metadata={'format': 'pt'})
  if n > 1:
    index = {'metadata': {'total_size': int(sum(a.nbytes for a in tensors.values()))},
             'weight_map': {k: f for f, names in zip(files, shards) for k in names}}
    with open(os.path.join(out_dir, INDEX_NAME), 'w') as f:
      json.dump(index, f, indent=2)
  return files


def safetensors_files(hf_dir) -> dict[str, str]:
  """Tensor name -> file (absolute path) from the index, or from the single model.safetensors."""
  hf_dir = pathlib.Path(hf_dir)
  index_path, single = hf_dir / INDEX_NAME, hf_dir / WEIGHTS_NAME
  if index_path.exists():
    try:
      weight_map = json.loads(index_path.read_text())['weight_map']
    except (ValueError, KeyError, TypeError) as e:
      raise HFError(f'{index_path} is not a safetensors index (needs a "weight_map" object): {e}') from e
    missing = sorted({f for f in weight_map.values() if not (hf_dir / f).is_file()})
    if missing:
      raise HFError(f'{index_path} names shard file(s) that do not exist: {missing}; the download or copy is '
                    'incomplete')
  elif single.exists():
    weight_map = None
  else:
    others = sorted(p.name for p in hf_dir.glob('*') if p.suffix in ('.bin', '.pt', '.pth', '.ckpt'))
    hint = (f' (found {others}: pickle-based weights are never loaded; convert them to safetensors first)'
            if others else '')
    raise HFError(f'no {WEIGHTS_NAME} or {INDEX_NAME} in {hf_dir}{hint}')
  where: dict[str, str] = {}
  files = sorted(set(weight_map.values())) if weight_map is not None else [WEIGHTS_NAME]
  for fname in files:
    path = hf_dir / fname
    try:
      with safe_open(str(path), framework='np') as f:
        keys = list(f.keys())
    except (SafetensorError, OSError) as e:
      raise HFError(f'{path} is not a readable safetensors file ({e}); it may be truncated: copy it again') from e
    for k in keys:
      where[k] = str(path)
  if weight_map is not None:
    lost = sorted(k for k, f in weight_map.items() if where.get(k) != str(hf_dir / f))
    if lost:
      raise HFError(f'{index_path} maps {len(lost)} tensor(s) to shards that do not hold them '
                    f'(e.g. {lost[:3]}); the shards and the index do not belong together')
  return where


def read_shapes(where: dict[str, str]) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
  """(name -> shape, name -> safetensors dtype) from the file headers only (no tensor data read)."""
  shapes, dtypes = {}, {}
  for path in sorted(set(where.values())):
    with safe_open(path, framework='np') as f:
      for k in f.keys():
        if where.get(k) == path:
          sl = f.get_slice(k)
          shapes[k], dtypes[k] = tuple(sl.get_shape()), sl.get_dtype()
  return shapes, dtypes


def read_tensors(where: dict[str, str], names) -> dict[str, np.ndarray]:
  by_file: dict[str, list[str]] = {}
  for n in names:
    by_file.setdefault(where[n], []).append(n)
  out = {}
  for path, ns in by_file.items():
    try:
      with safe_open(path, framework='np') as f:
        for n in ns:
          out[n] = np.asarray(f.get_tensor(n), dtype=np.float32)
    except (SafetensorError, OSError) as e:
      raise HFError(f'cannot read tensors from {path} ({e}); the file may be truncated: copy it again') from e
  return out


# ----------------------------------------------------------------------------- tokenizer
def write_tokenizer(tokenizer, out_dir, *, model_max_length: int) -> bool:
  """Writes tokenizer.model + tokenizer_config.json for a sentencepiece tokenizer; False (nothing) otherwise."""
  if getattr(tokenizer, 'kind', None) not in ('bpe', 'unigram'):
    return False
  with tempfile.TemporaryDirectory() as tmp:  # the public way to get the .model bytes
    tokenizer.save(tmp)
    shutil.copyfile(os.path.join(tmp, SPM_FILE), os.path.join(out_dir, SPM_FILE))
  with open(os.path.join(out_dir, SPM_FILE), 'rb') as f:
    sp = spm.SentencePieceProcessor(model_proto=f.read())
  piece = lambda i: None if i is None else sp.id_to_piece(int(i))
  special = {'bos_token': piece(tokenizer.bos_id), 'eos_token': piece(tokenizer.eos_id),
             'unk_token': piece(tokenizer.unk_id), 'pad_token': piece(tokenizer.pad_id)}
  special = {k: v for k, v in special.items() if v is not None}
  cfg = {
      # BPE: LlamaTokenizer's conversion of tokenizer.model gives our ids; unigram has no Llama
      # form, transformers builds a generic fast tokenizer from the sentencepiece proto.
      'tokenizer_class': 'LlamaTokenizer' if tokenizer.kind == 'bpe' else 'PreTrainedTokenizerFast',
      'add_bos_token': False,       # our documents are not BOS-prefixed
      'add_eos_token': False,
      'add_prefix_space': False,    # trained with add_dummy_prefix=False
      'legacy': False,
      'clean_up_tokenization_spaces': False,
      'spaces_between_special_tokens': False,
      'use_default_system_prompt': False,
      'sp_model_kwargs': {},
      'model_max_length': int(model_max_length),
      **special,
  }
  with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w') as f:
    json.dump(cfg, f, indent=2, ensure_ascii=False)
  with open(os.path.join(out_dir, 'special_tokens_map.json'), 'w') as f:
    json.dump(special, f, indent=2, ensure_ascii=False)
  return True


def read_tokenizer(hf_dir):
  """Our SentencePieceTokenizer from HF_DIR/tokenizer.model, or None when there is none."""
  from scaling.data.tokenizer import SentencePieceTokenizer
  path = pathlib.Path(hf_dir) / SPM_FILE
  if not path.is_file():
    return None
  data = path.read_bytes()
  try:
    from sentencepiece import sentencepiece_model_pb2  # needs protobuf; only here
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(data)
    model_type = proto.trainer_spec.model_type
    spm.SentencePieceProcessor(model_proto=data)
  except Exception as e:  # pylint: disable=broad-except  (protobuf/sentencepiece parse errors)
    raise HFError(f'{path} is not a sentencepiece model ({type(e).__name__}: {e})') from e
  kinds = {1: 'unigram', 2: 'bpe'}
  if model_type not in kinds:
    raise HFError(f'{path}: sentencepiece model type {model_type} is not supported (only BPE and unigram)')
  return SentencePieceTokenizer(data, kinds[model_type])


# ----------------------------------------------------------------------------- target folders
def _check_target(path: pathlib.Path, what: str) -> None:
  if path.exists() and (not path.is_dir() or any(path.iterdir())):
    raise HFError(f'{what} {path} already exists and is not empty; give a new or empty folder')


def _tmp_beside(path: pathlib.Path) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  return pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.tmp-', dir=path.parent))


def _umask() -> int:
  """The process umask, read without changing it where Linux shows it (os.umask alone must set one)."""
  try:
    with open('/proc/self/status', encoding='ascii') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _modes_as_umask_allows(root: pathlib.Path) -> None:
  """Folders 0777 and files 0666 less the umask under `root`, as a plain mkdir/open would make them:
  mkdtemp makes its folder private (0700) and safetensors writes its files 0600."""
  mask = _umask()
  for dirpath, _, filenames in os.walk(root):
    os.chmod(dirpath, 0o777 & ~mask)
    for name in filenames:
      path = os.path.join(dirpath, name)
      if not os.path.islink(path):
        os.chmod(path, 0o666 & ~mask)


def _move_into_place(tmp: pathlib.Path, path: pathlib.Path, what: str) -> None:
  _modes_as_umask_allows(tmp)
  if path.exists():
    _check_target(path, what)  # still empty (nobody wrote there meanwhile)
    path.rmdir()
  os.replace(tmp, path)


# ----------------------------------------------------------------------------- export / import
def export_checkpoint(workdir, out, *, step: int | None = None, dtype: str = 'float32',
                      max_shard_size='2GB') -> pathlib.Path:
  """Writes the workdir's (latest or given) checkpoint as a Hugging Face Llama folder `out`."""
  from scaling.inference.run import load_for_inference
  if dtype not in EXPORT_DTYPES:
    raise HFError(f'--dtype={dtype!r}: choose one of {", ".join(EXPORT_DTYPES)}')
  parse_size(max_shard_size)
  out, workdir = pathlib.Path(out), pathlib.Path(workdir)
  _check_target(out, 'export target')
  cfg_path = workdir / 'config.json'
  if not cfg_path.is_file():
    raise HFError(f'{workdir} is not a training workdir: {cfg_path} is missing')
  check_llama_compatible(from_json(cfg_path).model)  # before loading any weights
  model, cfg, tokenizer = load_for_inference(workdir, step)
  if tokenizer is not None and tokenizer.vocab_size > cfg.model.vocab_size:
    raise HFError(f'the tokenizer has {tokenizer.vocab_size} ids but model.vocab_size={cfg.model.vocab_size}')
  hf_cfg = hf_config_from_model(cfg.model, dtype=dtype, tokenizer=tokenizer)
  tensors = {k: v.astype(EXPORT_DTYPES[dtype]) for k, v in params_to_hf(model).items()}
  tmp = _tmp_beside(out)
  try:
    with open(tmp / CONFIG_NAME, 'w') as f:
      json.dump(hf_cfg, f, indent=2)
    gen = {k: hf_cfg[k] for k in ('bos_token_id', 'eos_token_id', 'pad_token_id') if hf_cfg[k] is not None}
    with open(tmp / 'generation_config.json', 'w') as f:
      json.dump(gen, f, indent=2)
    write_safetensors(tensors, tmp, max_shard_size)
    if not write_tokenizer(tokenizer, tmp, model_max_length=cfg.model.seq_len):
      print(f'note: tokenizer {getattr(tokenizer, "name", None)!r} has no Hugging Face Llama form; '
            'exported the weights without a tokenizer', file=sys.stderr)
    _move_into_place(tmp, out, 'export target')
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out


def load_hf(hf_dir):
  """(model section, Transformer, tokenizer or None) from a Llama safetensors folder, fully checked."""
  hf_dir = pathlib.Path(hf_dir)
  cfg_path = hf_dir / CONFIG_NAME
  if not cfg_path.is_file():
    raise HFError(f'{hf_dir} is not a Hugging Face model folder: {cfg_path} is missing')
  try:
    hf_cfg = json.loads(cfg_path.read_text())
  except ValueError as e:
    raise HFError(f'{cfg_path} is not valid JSON: {e}') from e
  m = model_cfg_from_hf(hf_cfg)
  where = safetensors_files(hf_dir)
  shapes, dtypes = read_shapes(where)
  ignore = check_tensors(m, shapes, str(hf_dir))
  names = [n for n in shapes if n not in ignore]
  bad = sorted({dtypes[n] for n in names} - set(_SAFETENSORS_DTYPES))
  if bad:
    raise HFError(f'{hf_dir}: tensors of dtype {bad} cannot be weights; expected floating point')
  tokenizer = read_tokenizer(hf_dir)
  if tokenizer is not None and tokenizer.vocab_size > m.vocab_size:
    raise HFError(f'{hf_dir / SPM_FILE} has {tokenizer.vocab_size} ids but config.json '
                  f'vocab_size={m.vocab_size}; the tokenizer and the model do not belong together')
  m, model = hf_to_model(hf_cfg, read_tensors(where, names))
  return m, model, tokenizer


def import_checkpoint(hf_dir, workdir, *, config: str | None = None) -> pathlib.Path:
  """Writes a workdir (config.json, tokenizer/, imported params) that train/sample/eval start from.

  `config` (file.py[:arg]) supplies everything but the model dims; default scaling/config/default.py.
  """
  from scaling.train.checkpoint import save_imported
  workdir = pathlib.Path(workdir)
  _check_target(workdir, 'import workdir')
  m, model, tokenizer = load_hf(hf_dir)
  cfg = load_config(config, validate=False)
  with cfg.unlocked():
    cfg.model.update(m)
    if tokenizer is not None and 'data' in cfg:
      cfg.data.tokenizer = tokenizer.kind
      cfg.data.vocab_size = tokenizer.vocab_size
  try:
    validate_config(cfg)
  except ConfigError as e:
    raise HFError(f'the imported model does not fit config {config or "default.py"}: {e}') from e
  if tokenizer is None:
    print(f'note: {hf_dir} has no {SPM_FILE}; imported the weights without a tokenizer', file=sys.stderr)
  tmp = _tmp_beside(workdir)
  try:
    save_imported(tmp, cfg, model, tokenizer)
    _move_into_place(tmp, workdir, 'import workdir')
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return workdir


# ----------------------------------------------------------------------------- CLI glue
def add_export_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--workdir', required=True, help='training workdir to export from')
  parser.add_argument('--out', required=True, help='new (or empty) folder for the Hugging Face checkpoint')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step (default: the latest)')
  parser.add_argument('--dtype', default='float32', choices=tuple(EXPORT_DTYPES), help='dtype of the saved weights')
  parser.add_argument('--max_shard_size', default='2GB', help='split weights into shards above this size (2GB, 500MB)')


def run_export(args) -> int:
  """`scaling export`; raises HFError (a ValueError) on bad input."""
  out = export_checkpoint(args.workdir, args.out, step=args.step, dtype=args.dtype,
                          max_shard_size=args.max_shard_size)
  print(f'exported {args.workdir} -> {out} (LlamaForCausalLM, {args.dtype}); load it with '
        f'transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})')
  return 0


def add_import_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--hf', required=True, help='Hugging Face Llama folder (config.json + safetensors)')
  parser.add_argument('--workdir', required=True, help='new (or empty) workdir to create')
  parser.add_argument('--config', default=None,
                      help='config file[:arg] for everything but the model dims (default: scaling/config/default.py)')


def run_import(args) -> int:
  """`scaling import`; raises HFError (a ValueError) on bad input."""
  workdir = import_checkpoint(args.hf, args.workdir, config=getattr(args, 'config', None))
  print(f'imported {args.hf} -> {workdir}; continue with `scaling train --workdir {workdir}` '
        f'or `scaling sample --workdir {workdir}`')
  return 0
