"""`scaling export`: a workdir's checkpoint as a Hugging Face Llama folder (safetensors, tokenizer.model).

The weight layout, the μP folding and the files written are described in hf.py's docstring.
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
from safetensors.numpy import save_file

from scaling.config.load import from_json, resolved_dims
from scaling.inference.hf import (
  CONFIG_NAME,
  INDEX_NAME,
  SPM_FILE,
  WEIGHTS_NAME,
  HFError,
  _check_target,
  _layer,
  _move_into_place,
  _tmp_beside,
)

EXPORT_DTYPES = {'float32': np.dtype(np.float32), 'bfloat16': np.dtype(ml_dtypes.bfloat16)}


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
  base_depth = getattr(m, 'mup_base_depth', 0) or 0
  if getattr(m, 'parametrization', 'sp') == 'completep' and base_depth and base_depth != m.num_layers:
    raise HFError(f'cannot export as Llama: model.parametrization=\'completep\' scales every residual branch by '
                  f'{base_depth}/{m.num_layers} (mup_base_depth / num_layers), which Llama has no place for and '
                  'this export does not fold; export a model at its base depth, or train it with sp or mup')
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


# ----------------------------------------------------------------------------- tensors
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


# ----------------------------------------------------------------------------- export
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
