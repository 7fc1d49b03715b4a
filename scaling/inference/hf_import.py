"""`scaling import`: a Hugging Face Llama folder (safetensors only) read back into a training workdir.

The weight layout and the checks are described in hf.py's docstring; every name, shape and dtype is
checked against config.json before any tensor is read.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy: safetensors' numpy backend needs it)
import numpy as np
import sentencepiece as spm
from safetensors import SafetensorError, safe_open

from scaling.config.load import ConfigError, load_config, resolved_dims, validate_config, validate_model
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

_SAFETENSORS_DTYPES = ('F32', 'F16', 'BF16', 'F64')
# Tensors some Llama checkpoints carry that hold no weights (recomputed by transformers).
_IGNORED_SUFFIXES = ('.rotary_emb.inv_freq',)


# ----------------------------------------------------------------------------- config
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


# ----------------------------------------------------------------------------- import
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
