"""Loading configs, applying overrides, and validating them with clear errors.

A config is a Python file with `get_config(arg)` returning an ml_collections
ConfigDict (big_vision style). It is named on the command line as
`path/to/file.py[:arg]` and overridden with `--config.a.b=value` flags.

Everything that can be checked without devices or data is checked here, at
load time, so a bad config fails before any compile or long work.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
import re
import sys

import ml_collections

from scaling.base.files import sha256_bytes
from scaling.config import default as default_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = pathlib.Path(__file__).resolve().parents[1]
# the packaged config files (loaded by path, never imported): the defaults and the ladder of model sizes
PACKAGED_CONFIG_DIRS = (PACKAGE / 'config', PACKAGE / 'model')
DEFAULT_CONFIG = 'default.py'

# the names a config may choose: one list each, jax-free (scaling/base/names.py), imported by the implementations too
from scaling.base import names as _names
from scaling.base.names import (
  ATTENTION,
  DECAY_SHAPES,
  DTYPES,
  MLPS,
  NORMS,
  POSITIONS,
  REMATS,
  SCHEDULES,
)

# model.parametrization and train.optimizer: the one list of each is scaling/base/names.py's
PARAMETRIZATIONS = _names.PARAMETRIZATIONS
OPTIMIZERS = _names.OPTIMIZERS

# sections that map names to values: `--config.SECTION.NAME=value` may add a NAME (train.eval_sets: tag -> corpus)
OPEN_SECTIONS = ('train.eval_sets', 'data.mixture')


class ConfigError(ValueError):
  """A config that cannot work; the message names the field and the fix."""


def _packaged_config_file(name: str) -> pathlib.Path | None:
  """`name` (with or without .py) among the packaged config files (default.py, ladder.py), or None."""
  for base in PACKAGED_CONFIG_DIRS:
    if (base / name).is_file():
      return base / name
    if (base / (name + '.py')).is_file():
      return base / (name + '.py')
  return None


def _find_config_file(name: str) -> pathlib.Path:
  """Resolves a config path: as given, or a packaged config by its file name (`configs/ladder.py` and
  `ladder.py` both name the packaged ladder, as they did when configs/ held it)."""
  p = pathlib.Path(name)
  if p.exists():
    return p
  if (found := _packaged_config_file(name)) is not None:
    return found
  if p.parent.name == 'configs' and (found := _packaged_config_file(p.name)) is not None:
    return found
  raise ConfigError(f'config file {name!r} not found (give a path to a .py file with get_config(), '
                    f'e.g. configs/sweeps/smoke.py, or a packaged one: default.py, ladder.py:nano)')


def load_module(path: str | os.PathLike):
  """Imports a config file as a module (each call gets a fresh module).

  A file under a `configs/` folder may import its siblings as `configs.<...>` (the sweeps share
  configs/sweeps/_common.py): the folder that holds `configs/` is on sys.path while the file runs, whatever
  the working directory or entry point (the `scaling` console script does not put the cwd on sys.path)."""
  path = pathlib.Path(path)
  roots = [str(p.parent) for p in path.resolve().parents if p.name == 'configs'][:1]
  roots = [r for r in roots if r not in sys.path]
  spec = importlib.util.spec_from_file_location(f'_scaling_cfg_{path.stem}', path)
  mod = importlib.util.module_from_spec(spec)
  sys.path[:0] = roots
  try:
    spec.loader.exec_module(mod)
  finally:
    for r in roots:
      sys.path.remove(r)
  return mod


def split_spec(spec: str | None) -> tuple[pathlib.Path, str | None]:
  spec = spec or DEFAULT_CONFIG
  name, _, arg = spec.partition(':')
  return _find_config_file(name), (arg or None)


def parse_value(text: str, old):
  """Parses an override string into the type of the field it replaces."""
  if isinstance(old, bool):
    low = text.lower()
    if low in ('true', '1', 'yes'):
      return True
    if low in ('false', '0', 'no'):
      return False
    raise ConfigError(f'expected a boolean (true/false), got {text!r}')
  if isinstance(old, int):
    try:
      return int(float(text)) if ('e' in text.lower() and float(text).is_integer()) else int(text)
    except ValueError:
      raise ConfigError(f'expected an integer, got {text!r}') from None
  if isinstance(old, float):
    try:
      return float(text)
    except ValueError:
      raise ConfigError(f'expected a number, got {text!r}') from None
  if isinstance(old, (tuple, list)):
    try:
      v = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      v = tuple(s for s in text.split(',') if s)
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)
  return text


def apply_override(cfg: ml_collections.ConfigDict, key: str, value) -> None:
  """Sets cfg.<key> = value; `key` is dotted. Unknown keys are an error."""
  parts = key.split('.')
  node = cfg
  for i, p in enumerate(parts[:-1]):
    if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
      raise ConfigError(f'unknown config key {key!r}: {".".join(parts[:i + 1])!r} is not a section '
                        f'(sections: {", ".join(k for k in node if isinstance(node[k], ml_collections.ConfigDict))})')
    node = node[p]
  leaf = parts[-1]
  if leaf not in node and '.'.join(parts[:-1]) in OPEN_SECTIONS:   # a new key of a tag -> value map
    with node.unlocked():
      node[leaf] = str(value)
    return
  if leaf not in node:
    raise ConfigError(f'unknown config key {key!r} (known in this section: {", ".join(sorted(node.keys()))})')
  old = node[leaf]
  if isinstance(old, ml_collections.ConfigDict) and isinstance(value, (str, dict)):   # a whole map: "{'a': 'b'}"
    value = _parse_map(key, value)
    with node.unlocked():
      node[leaf] = ml_collections.ConfigDict(value)
    return
  if isinstance(value, str) and not isinstance(old, str):
    try:
      value = parse_value(value, old)
    except ConfigError as e:
      raise ConfigError(f'--config.{key}: {e}') from None
  elif isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  with node.unlocked():
    try:
      node[leaf] = value
    except TypeError as e:   # ml_collections refuses a value of another type
      raise ConfigError(f'--config.{key}: {e}') from None


def _parse_map(key: str, value) -> dict:
  """A section given whole on the command line (a Python dict literal; '' or {} for empty)."""
  if isinstance(value, dict):
    return dict(value)
  try:
    v = ast.literal_eval(value) if value.strip() else {}
  except (ValueError, SyntaxError):
    v = None
  if not isinstance(v, dict):
    raise ConfigError(f'--config.{key} is a section: give a dict literal, e.g. --config.{key}="{{\'tag\': \'value\'}}", '
                      f'or --config.{key}.FIELD=value; got {value!r}')
  return v


def parse_override_flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
  """Splits `--config.a.b=v` (or `--config.a.b v`) flags out of argv."""
  overrides, rest = {}, []
  i = 0
  while i < len(argv):
    a = argv[i]
    if a.startswith('--config.'):
      body = a[len('--config.'):]
      if '=' in body:
        k, v = body.split('=', 1)
      else:
        if i + 1 >= len(argv):
          raise ConfigError(f'{a} needs a value')
        k, v = body, argv[i + 1]
        i += 1
      overrides[k] = v
    else:
      rest.append(a)
    i += 1
  return overrides, rest


def load_config(spec: str | None = None, overrides: dict | None = None,
                *, validate: bool = True) -> ml_collections.ConfigDict:
  """Loads `file.py[:arg]`, applies dotted overrides, fills derived fields, validates."""
  path, arg = split_spec(spec)
  mod = load_module(path)
  if not hasattr(mod, 'get_config'):
    raise ConfigError(f'{path} has no get_config(arg) function')
  cfg = mod.get_config(arg)
  for k, v in (overrides or {}).items():
    apply_override(cfg, k, v)
  fill_vocab(cfg)
  if validate:
    validate_config(cfg)
  return cfg




def default_model() -> dict:
  """The model section of the packaged scaling/config/default.py, imported as a module (never a default.py in
  the working directory): the one place the model defaults are written; ModelDims takes its defaults from it."""
  return default_config.model().to_dict()


# ----------------------------------------------------------------------------- vocab
def tokenizer_vocab_size(data) -> int | None:
  """The tokenizer's id count when the data section alone decides it, else None.

  bpe / unigram: data.vocab_size (sentencepiece makes exactly that many pieces or fails);
  byte: 259. char (the corpus's characters) and tiktoken (the encoding) are known only
  once the tokenizer is built: None.
  """
  from scaling.data import tokenizer as tok_lib  # numpy only
  kind = str(data.get('tokenizer', '')).partition(':')[0]
  if kind in tok_lib.SPM_KINDS:
    return int(data.vocab_size)
  if kind == 'byte':
    return tok_lib.ByteTokenizer().vocab_size
  return None


def fill_vocab(cfg):
  """model.vocab_size = 0 (follow the tokenizer) -> the tokenizer's id count, when the data section
  decides it (tokenizer_vocab_size); left at 0 otherwise (resolve_vocab fills it from the built
  tokenizer). Explicit sizes are left alone. Returns cfg (changed in place)."""
  if 'model' in cfg and 'data' in cfg and cfg.model.get('vocab_size') == 0:
    n = tokenizer_vocab_size(cfg.data)
    if n:
      with cfg.model.unlocked():
        cfg.model.vocab_size = n
  return cfg


def _tokenizer_words(data) -> str:
  kind = str(data.get('tokenizer', '')).partition(':')[0]
  extra = f', data.vocab_size={data.vocab_size}' if 'vocab_size' in data and kind in ('bpe', 'unigram') else ''
  return f'data.tokenizer={data.get("tokenizer")!r}{extra}'


def resolve_vocab(cfg, tokenizer_vocab: int) -> int:
  """model.vocab_size checked against (or, at 0, set to) the tokenizer's id count; returns it.

  Smaller than the tokenizer: ConfigError (ids would fall outside the embedding). Larger: ConfigError
  unless model.pad_vocab is true (deliberate padding, e.g. to a multiple of the mesh's model axes;
  the extra rows are never seen as inputs and never sampled). Both messages name both fields.
  """
  m, tokenizer_vocab = cfg.model, int(tokenizer_vocab)
  if m.vocab_size == 0:
    with m.unlocked():
      m.vocab_size = tokenizer_vocab
    return tokenizer_vocab
  tok = f'the tokenizer ({_tokenizer_words(cfg.data)}) has {tokenizer_vocab} ids'
  if m.vocab_size < tokenizer_vocab:
    raise ConfigError(f'model.vocab_size={m.vocab_size} but {tok}: token ids would fall outside the embedding. '
                      f'Set model.vocab_size=0 (follow the tokenizer) or >= {tokenizer_vocab}')
  if m.vocab_size > tokenizer_vocab and not m.get('pad_vocab', False):
    raise ConfigError(f'model.vocab_size={m.vocab_size} but {tok}: {m.vocab_size - tokenizer_vocab} embedding '
                      f'rows would never be used. Set model.vocab_size=0 (follow the tokenizer), or '
                      f'model.pad_vocab=true if the padding is deliberate (e.g. for sharding)')
  return m.vocab_size


def resolved_dims(m) -> dict:
  """The model dims with the 0 = derived fields filled in."""
  head_dim = m.head_dim or (m.d_model // m.num_heads if m.num_heads else 0)
  if m.d_ff:
    d_ff = m.d_ff
  elif m.mlp == 'swiglu':
    d_ff = -(-int(8 * m.d_model / 3) // 64) * 64  # 8/3 d, rounded up to a multiple of 64
  else:
    d_ff = 4 * m.d_model
  return dict(head_dim=head_dim, d_ff=d_ff)


def position_rows(m) -> int:
  """Rows of the learned-position table of model section `m` (a ConfigDict, a ModelDims or a dict of its
  fields, e.g. a checkpoint's meta): model.position_table, or seq_len when that is 0 (or absent: configs from
  before the field); 0 without learned positions. The longest sequence the model has positions for."""
  get = m.get if hasattr(m, 'get') else lambda name, default=None: getattr(m, name, default)
  if get('position', None) != 'learned':
    return 0
  return int(get('position_table', 0) or get('seq_len', 0))


def check_position_table(table, position: str, seq_len: int) -> None:
  """ConfigError unless model.position_table is 0, or >= seq_len with learned positions (config and ModelDims)."""
  if isinstance(table, bool) or not isinstance(table, int) or table < 0:
    raise ConfigError(f'model.position_table must be an integer >= 0 (0: a table of seq_len rows), got {table!r}')
  if table and position != 'learned':
    raise ConfigError(f'model.position_table={table} sizes the learned-position table, but model.position='
                      f'{position!r} has none; set model.position=learned, or leave model.position_table=0 '
                      f'({position} needs no table and accepts any length)')
  if table and table < seq_len:
    raise ConfigError(f'model.position_table={table} is shorter than model.seq_len={seq_len}: training needs a '
                      f'position for each of its {seq_len} tokens. Set model.position_table=0 (= seq_len) or '
                      f'a value >= {seq_len}')


def validate_model(m) -> None:
  def positive(name):
    v = m[name]
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
      raise ConfigError(f'model.{name} must be a positive integer, got {v!r}')
  for name in ('seq_len', 'num_layers', 'd_model', 'num_heads', 'num_kv_heads'):
    positive(name)
  if isinstance(m.vocab_size, bool) or not isinstance(m.vocab_size, int) or m.vocab_size < 0:
    raise ConfigError(f'model.vocab_size must be an integer >= 0 (0: follow the tokenizer), got {m.vocab_size!r}')
  for name in ('head_dim', 'd_ff'):
    if m[name] < 0:
      raise ConfigError(f'model.{name} must be >= 0 (0 derives it), got {m[name]}')
  if not m.head_dim and m.d_model % m.num_heads:
    raise ConfigError(f'model.num_heads={m.num_heads} does not divide model.d_model={m.d_model}; '
                      f'pick num_heads dividing d_model or set model.head_dim explicitly')
  if m.num_heads % m.num_kv_heads:
    raise ConfigError(f'model.num_kv_heads={m.num_kv_heads} does not divide model.num_heads={m.num_heads} '
                      f'(grouped-query attention shares each kv head among num_heads/num_kv_heads query heads)')
  for name, allowed in (('norm', NORMS), ('position', POSITIONS), ('mlp', MLPS), ('dtype', DTYPES),
                        ('remat', REMATS), ('attention', ATTENTION),
                        ('parametrization', PARAMETRIZATIONS)):
    if m[name] not in allowed:
      raise ConfigError(f'model.{name}={m[name]!r} is unknown; choose one of {", ".join(allowed)}')
  head_dim = resolved_dims(m)['head_dim']
  if m.position == 'rope' and head_dim % 2:
    raise ConfigError(f'model.position=rope needs an even head_dim, got head_dim={head_dim} '
                      f'(d_model={m.d_model} / num_heads={m.num_heads}); change the dims or use position=learned')
  if not m.init_std > 0:   # also catches nan
    raise ConfigError(f'model.init_std must be > 0, got {m.init_std}')
  if not m.norm_eps >= 0:
    raise ConfigError(f'model.norm_eps must be >= 0, got {m.norm_eps}')
  check_position_table(m.get('position_table', 0), m.position, m.seq_len)
  if m.position == 'rope' and not m.rope_theta > 0:
    raise ConfigError(f'model.rope_theta must be > 0 with position=rope, got {m.rope_theta}')
  if m.sliding_window < 0:
    raise ConfigError(f'model.sliding_window must be >= 0 (0 = full causal), got {m.sliding_window}')
  if isinstance(m.mup_base_width, bool) or not isinstance(m.mup_base_width, int) or m.mup_base_width < 0:
    raise ConfigError(f'model.mup_base_width must be an integer >= 0 (the d_model the lr was tuned at; 0: this '
                      f'd_model), got {m.mup_base_width!r}')
  base_depth = m.get('mup_base_depth', 0)
  if isinstance(base_depth, bool) or not isinstance(base_depth, int) or base_depth < 0:
    raise ConfigError(f'model.mup_base_depth must be an integer >= 0 (the num_layers the lr was tuned at; 0: this '
                      f'num_layers), got {base_depth!r}')
  if m.attention_block_size <= 0:
    raise ConfigError(f'model.attention_block_size must be > 0, got {m.attention_block_size}')


def validate_config(cfg) -> None:
  """Checks everything that needs neither devices nor data."""
  validate_model(cfg.model)
  if 'train' in cfg:
    t = cfg.train
    for name in ('batch_size', 'microbatches'):
      if t[name] <= 0:
        raise ConfigError(f'train.{name} must be positive, got {t[name]}')
    if t.batch_size % t.microbatches:
      raise ConfigError(f'train.batch_size={t.batch_size} does not divide into train.microbatches={t.microbatches}')
    if t.steps <= 0 and t.tokens <= 0:
      raise ConfigError('set train.steps > 0 or train.tokens > 0')
    if t.schedule not in SCHEDULES:
      raise ConfigError(f'train.schedule={t.schedule!r} is unknown; choose one of {", ".join(SCHEDULES)}')
    if t.lr <= 0:
      raise ConfigError(f'train.lr must be > 0, got {t.lr}')
    if not 0 <= t.min_lr_ratio <= 1:
      raise ConfigError(f'train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}')
    if t.warmup_steps < 0:
      raise ConfigError(f'train.warmup_steps must be >= 0, got {t.warmup_steps}')
    s = t.get('init_seed', -1)
    if isinstance(s, bool) or not isinstance(s, int) or s < -1:
      raise ConfigError(f'train.init_seed must be an integer >= 0, or -1 (use train.seed), got {s!r}')
    _validate_batch_schedule(cfg)
    _validate_branch(cfg)
    _validate_mixture(cfg)
    check_eval_sets(t.get('eval_sets', None))
    if t.get('loss_chunk', 0) < 0:
      raise ConfigError(f'train.loss_chunk must be >= 0 (logits rows per chunk; 0 = unchunked), got {t.loss_chunk}')
    if t.get('predict_every', 0) < 0:
      raise ConfigError(f'train.predict_every must be >= 0 (0 = off; N: predict the final loss every N steps), '
                        f'got {t.predict_every}')
    _validate_optimizer(t)
  if 'mesh' in cfg:
    for name in ('data', 'fsdp', 'tensor'):
      v = cfg.mesh[name]
      if v == 0 or v < -1:
        raise ConfigError(f'mesh.{name} must be a positive size or -1 (fill), got {v}')
    if sum(cfg.mesh[n] == -1 for n in ('data', 'fsdp', 'tensor')) > 1:
      raise ConfigError('at most one of mesh.data/fsdp/tensor may be -1')
    if cfg.model.num_kv_heads % max(cfg.mesh.tensor, 1) and cfg.mesh.tensor > 1:
      raise ConfigError(f'mesh.tensor={cfg.mesh.tensor} does not divide model.num_kv_heads='
                        f'{cfg.model.num_kv_heads}; tensor parallelism shards kv heads')
  if 'logging' in cfg and cfg.logging.get('wandb_mode', '') not in ('', 'online', 'offline', 'disabled'):
    raise ConfigError(f'logging.wandb_mode={cfg.logging.wandb_mode!r}: choose online, offline, disabled or '
                      f"'' ($WANDB_MODE, else online)")
  if 'sample' in cfg:
    s = cfg.sample
    if not 0 < s.top_p <= 1:
      raise ConfigError(f'sample.top_p must be in (0, 1], got {s.top_p}')
    if s.top_k < 0:
      raise ConfigError(f'sample.top_k must be >= 0 (0 = off), got {s.top_k}')
    if s.temperature < 0:
      raise ConfigError(f'sample.temperature must be >= 0 (0 = greedy), got {s.temperature}')


def _validate_optimizer(t) -> None:
  """train.optimizer and Muon's settings (scaling/train/muon.py)."""
  opt = t.get('optimizer', 'adamw')
  if opt not in OPTIMIZERS:
    raise ConfigError(f'train.optimizer={opt!r} is unknown; choose one of {", ".join(OPTIMIZERS)}')
  n = t.get('muon_ns_steps', 5)
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ConfigError(f'train.muon_ns_steps must be an integer >= 1 (Newton-Schulz iterations; 5 is usual), got {n!r}')
  mom = t.get('muon_momentum', 0.95)
  if isinstance(mom, bool) or not isinstance(mom, (int, float)) or not 0 <= mom < 1:
    raise ConfigError(f'train.muon_momentum must be in [0, 1) (0.95 is usual), got {mom!r}')
  alr = t.get('muon_adam_lr', 0.0)
  if isinstance(alr, bool) or not isinstance(alr, (int, float)) or not alr >= 0:
    raise ConfigError(f'train.muon_adam_lr must be a number >= 0 (the AdamW part\'s peak lr under Muon; 0: '
                      f'train.lr), got {alr!r}')
  if alr and opt != 'muon':
    raise ConfigError(f'train.muon_adam_lr={alr} is read only under train.optimizer=\'muon\' (optimizer is '
                      f'{opt!r}): set --config.train.optimizer=muon, or drop muon_adam_lr and set train.lr')


def _validate_branch(cfg) -> None:
  """train.ckpt_steps / decay_steps / decay_shape / init_from (cooldown branches, scaling/train/branch.py): syntax only."""
  t = cfg.train
  if t.get('decay_shape', 'linear') not in DECAY_SHAPES:
    raise ConfigError(f'train.decay_shape={t.decay_shape!r} is unknown; choose one of {", ".join(DECAY_SHAPES)}')
  steps = t.get('ckpt_steps', ())
  if isinstance(steps, (str, bytes)) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                for x in (steps if isinstance(steps, (tuple, list)) else [None])):
    raise ConfigError(f'train.ckpt_steps must be a tuple of positive step numbers, e.g. (240, 760), got {steps!r}')
  d = t.get('decay_steps', 0)
  if isinstance(d, bool) or not isinstance(d, int) or d < 0:
    raise ConfigError(f'train.decay_steps must be an integer >= 0 (0: use train.decay_fraction), got {d!r}')
  if t.get('init_from', ''):
    _, step = parse_init_from(t.init_from)
    if step is not None and t.schedule == 'wsd' and d > 0 and train_steps(cfg) - d < step:
      raise ConfigError(f'train.init_from={t.init_from!r} forks at step {step}, but train.steps - '
                        f'train.decay_steps = {train_steps(cfg) - d}: the decay would start before the fork, '
                        f'in steps the parent trained at its own lr. Set train.steps = {step} + decay_steps')


def _validate_batch_schedule(cfg) -> None:
  """train.batch_schedule / batch_lr_rule (scaling/config/batch.py): syntax, the steps, the microbatches."""
  from scaling.config import batch
  try:
    batch.validate(cfg.train, train_steps(cfg), cfg.train.microbatches)
  except batch.BatchScheduleError as e:
    raise ConfigError(str(e)) from None


def _validate_mixture(cfg) -> None:
  """data.mixture and its weights and stages (scaling/config/mixture.py): syntax, names, sums, combinations."""
  from scaling.config.mixture import check_mixture
  from scaling.data.mixture_spec import MixtureError
  try:
    check_mixture(cfg, train_steps(cfg))
  except MixtureError as e:
    raise ConfigError(str(e)) from None


def train_steps(cfg) -> int:
  t = cfg.train
  if t.tokens > 0 and (t.get('batch_schedule', '') or '').strip():   # the steps whose sequences fit the budget
    from scaling.config import batch
    return batch.steps_for_tokens(batch.of(t), t.tokens, cfg.model.seq_len)
  if t.tokens > 0:
    return max(1, t.tokens // (t.batch_size * cfg.model.seq_len))
  return t.steps


def to_dict(cfg) -> dict:
  return json.loads(cfg.to_json_best_effort())


# Fields added after sweeps had already been hashed, each with the value that reproduces how runs behaved
# before it existed. A field at that value is left out of config_hash, so adding a field with such a default
# keeps the hash (the run directory) of every earlier run: re-submitting a sweep after an upgrade continues
# it. A new field belongs here (tests/test_config.py checks the list of hashed fields).
HASH_NEUTRAL = {
    'train.ckpt_steps': [],
    'data.character_coverage': 1.0,
    'data.train_tokens': 0,
    'model.position_table': 0,
    'train.init_seed': -1,
    'train.optimizer': 'adamw',
    'train.muon_ns_steps': 5,
    'train.muon_momentum': 0.95,
    'train.muon_adam_lr': 0.0,
    'model.mup_base_depth': 0,
    'train.predict_every': 0,
    'data.mixture': {},
    'data.mixture_weights': '',
    'data.mixture_stages': '',
    'data.mixture_max_epochs': 1.0,
    'train.batch_schedule': '',
    'train.batch_lr_rule': 'sqrt',
}


def config_hash(cfg, n: int = 12, *, legacy: bool = False) -> str:
  """A stable hash of the resolved config (used to name sweep run directories); fields of HASH_NEUTRAL at
  their neutral value are left out. legacy=True: the hash of every field (how run directories were named
  before HASH_NEUTRAL; scaling/launch/sweep.py adopts such directories)."""
  d = to_dict(cfg)
  if not legacy:
    for key, neutral in HASH_NEUTRAL.items():
      section, name = key.split('.')
      if name in d.get(section, {}) and d[section][name] == neutral:
        del d[section][name]
  blob = json.dumps(d, sort_keys=True, separators=(',', ':'))
  return sha256_bytes(blob.encode())[:n]


def from_json(path) -> ml_collections.ConfigDict:
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


# ----------------------------------------------------------------------------- syntax of specs other layers read
TAG_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_\-]*$')


def parse_init_from(spec: str) -> tuple[str, int | None]:
  """'WORKDIR[:STEP]' -> (WORKDIR, STEP or None). A suffix that is not all digits is part of the path."""
  if not isinstance(spec, str) or not spec.strip():
    raise ConfigError(f"train.init_from must be 'WORKDIR[:STEP]', got {spec!r}")
  path, sep, tail = spec.rpartition(':')
  if sep and tail.isdigit() and path:
    return path, int(tail)
  if sep and tail.startswith('-') and tail[1:].isdigit():
    raise ConfigError(f'train.init_from={spec!r}: the step must be >= 0')
  return spec, None


def split_optional(spec: str) -> tuple[str, bool]:
  """An eval-set spec 'SPEC?' (skipped when its corpus is absent) -> (SPEC, True); 'SPEC' -> (SPEC, False)."""
  spec = str(spec or '').strip()
  return (spec[:-1].strip(), True) if spec.endswith('?') else (spec, False)


def check_eval_sets(eval_sets) -> None:
  """ConfigError for a bad tag or spec type of train.eval_sets (config load time: no data touched)."""
  if eval_sets is None:
    return
  if not hasattr(eval_sets, 'items'):
    raise ConfigError(f'train.eval_sets must map tags to corpus specs, e.g. {{"prose": "prose"}}, '
                      f'got {eval_sets!r}')
  for tag, spec in eval_sets.items():
    if not TAG_RE.match(str(tag)):
      raise ConfigError(f'train.eval_sets: tag {tag!r} must be letters, digits, "_" or "-" (it names the '
                        f'metrics eval/<tag>/bpb)')
    if not isinstance(spec, str):
      raise ConfigError(f'train.eval_sets.{tag} must be a corpus spec string (like data.corpus), got {spec!r}')
