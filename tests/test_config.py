"""Tests of scaling/config.py: loading, command-line overrides, validation.

A bad config must fail at load time with a ConfigError whose message names the
offending field, before any device or data work.
"""

import pytest

from scaling import config as config_lib
from scaling.config import ConfigError, load_config, parse_override_flags

LADDER = config_lib.load_module(config_lib.REPO_ROOT / 'configs' / 'ladder.py')


def test_default_and_every_rung_load_and_validate():
  cfg = load_config()
  assert cfg.model.num_layers > 0 and 'train' in cfg and 'mesh' in cfg
  for rung in LADDER.RUNGS:
    cfg = load_config(f'configs/ladder.py:{rung}')
    L, D, H, G, F, lr, batch = LADDER.RUNGS[rung]
    m = cfg.model
    assert (m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.d_ff) == (L, D, H, G, F)
    assert cfg.train.lr == lr and cfg.train.batch_size == batch


def test_spec_resolves_relative_to_configs_dir():
  a = load_config('ladder.py:5m')
  b = load_config(str(config_lib.REPO_ROOT / 'configs' / 'ladder.py') + ':5m')
  assert config_lib.to_dict(a) == config_lib.to_dict(b)
  assert config_lib.to_dict(load_config('ladder:5m')) == config_lib.to_dict(a)


def test_missing_file_and_unknown_rung_fail_clearly():
  with pytest.raises(ConfigError, match='no_such_config'):
    load_config('no_such_config.py')
  with pytest.raises(ValueError, match="unknown ladder rung 'huge'"):
    load_config('configs/ladder.py:huge')


# ----------------------------------------------------------------------------- overrides
def test_parse_override_flags_splits_config_flags_from_the_rest():
  argv = ['train', '--config.model.num_layers=3', '--config.train.lr', '1e-3', '--workdir=/tmp/x',
          '--config.sample.prompts=a,b', '--config.model.scan_layers=false', 'extra']
  overrides, rest = parse_override_flags(argv)
  assert overrides == {'model.num_layers': '3', 'train.lr': '1e-3', 'sample.prompts': 'a,b',
                       'model.scan_layers': 'false'}
  assert rest == ['train', '--workdir=/tmp/x', 'extra']
  with pytest.raises(ConfigError, match='--config.train.lr needs a value'):
    parse_override_flags(['--config.train.lr'])


def test_overrides_apply_to_a_ladder_rung_with_the_field_types():
  overrides, _ = parse_override_flags([
      '--config.model.num_layers=3', '--config.train.lr=1e-3', '--config.model.scan_layers=False',
      '--config.model.norm=layernorm', '--config.sample.prompts=a,b', '--config.train.tokens=2e6',
      '--config.model.init_std=1'])
  cfg = load_config('configs/ladder.py:125m', overrides)
  m = cfg.model
  assert m.num_layers == 3 and type(m.num_layers) is int
  assert m.d_model == 768 and m.num_heads == 12          # the rest of the rung is kept
  assert cfg.train.lr == 1e-3 and type(cfg.train.lr) is float
  assert m.scan_layers is False
  assert m.norm == 'layernorm'
  assert tuple(cfg.sample.prompts) == ('a', 'b')
  assert cfg.train.tokens == 2_000_000 and type(cfg.train.tokens) is int
  assert m.init_std == 1.0 and type(m.init_std) is float
  # python-valued overrides work too
  assert load_config('configs/ladder.py:nano', {'model.num_layers': 5}).model.num_layers == 5


def test_config_hash_follows_the_resolved_config():
  a, b = load_config('ladder.py:nano'), load_config('ladder.py:nano')
  assert config_lib.config_hash(a) == config_lib.config_hash(b)
  c = load_config('ladder.py:nano', {'train.seed': '1'})
  assert config_lib.config_hash(c) != config_lib.config_hash(a)


def test_train_steps_from_token_budget():
  cfg = load_config('ladder.py:nano', {'train.tokens': '100000', 'train.batch_size': '8'})
  assert config_lib.train_steps(cfg) == 100000 // (8 * cfg.model.seq_len)
  cfg = load_config('ladder.py:nano', {'train.steps': '7'})
  assert config_lib.train_steps(cfg) == 7


# ----------------------------------------------------------------------------- errors
BAD = [
    # (overrides, words the message must contain)
    ({'model.d_model': '256', 'model.num_heads': '5'}, ['model.num_heads', 'd_model']),
    ({'model.num_heads': '4', 'model.num_kv_heads': '3'}, ['model.num_kv_heads', 'num_heads']),
    ({'model.d_model': '36', 'model.num_heads': '4'}, ['position=rope', 'head_dim']),
    ({'model.head_dim': '7'}, ['rope', 'head_dim']),
    ({'model.norm': 'batchnorm'}, ['model.norm', 'rmsnorm']),
    ({'model.position': 'alibi'}, ['model.position', 'rope']),
    ({'model.mlp': 'relu'}, ['model.mlp', 'swiglu']),
    ({'model.dtype': 'float16'}, ['model.dtype']),
    ({'model.remat': 'some'}, ['model.remat']),
    ({'model.attention': 'flash'}, ['model.attention']),
    ({'model.d_model': '0'}, ['model.d_model']),
    ({'model.num_layers': '-1'}, ['model.num_layers']),
    ({'model.vocab_size': '0'}, ['model.vocab_size']),
    ({'model.seq_len': '0'}, ['model.seq_len']),
    ({'model.num_heads': '0'}, ['model.num_heads']),
    ({'model.num_kv_heads': '0'}, ['model.num_kv_heads']),
    ({'model.d_ff': '-64'}, ['model.d_ff']),
    ({'model.head_dim': '-2'}, ['model.head_dim']),
    ({'model.init_std': '0'}, ['model.init_std']),
    ({'model.sliding_window': '-1'}, ['model.sliding_window']),
    ({'model.num_layers': 2.5}, ['model.num_layers']),          # a non-integer from Python
    ({'model.num_layers': True}, ['model.num_layers']),
    ({'model.rope_theta': '0'}, ['model.rope_theta']),
    ({'model.norm_eps': '-1e-5'}, ['model.norm_eps']),
    ({'model.init_std': 'nan'}, ['model.init_std']),
    ({'model.num_layer': '3'}, ['model.num_layer', 'num_layers']),   # unknown key: lists the known ones
    ({'modle.num_layers': '3'}, ['modle', 'model']),
    ({'model.num_layers': 'three'}, ['model.num_layers', 'integer']),
    ({'model.num_layers': '2.5'}, ['model.num_layers', 'integer']),
    ({'train.lr': 'fast'}, ['train.lr', 'number']),
    ({'model.tied_embeddings': 'maybe'}, ['model.tied_embeddings', 'boolean']),
    ({'model.norm': 3}, ['model.norm']),
    ({'train.batch_size': '10', 'train.microbatches': '4'}, ['train.batch_size', 'train.microbatches']),
    ({'train.microbatches': '0'}, ['train.microbatches']),
    ({'train.steps': '0', 'train.tokens': '0'}, ['train.steps', 'train.tokens']),
    ({'train.schedule': 'linear'}, ['train.schedule', 'cosine']),
    ({'train.lr': '0'}, ['train.lr']),
    ({'train.min_lr_ratio': '2'}, ['train.min_lr_ratio']),
    ({'mesh.tensor': '0'}, ['mesh.tensor']),
    ({'mesh.data': '-1', 'mesh.fsdp': '-1'}, ['mesh.data/fsdp/tensor']),
    ({'mesh.tensor': '4', 'model.num_kv_heads': '2'}, ['mesh.tensor', 'num_kv_heads']),
    ({'sample.top_p': '0'}, ['sample.top_p']),
]


@pytest.mark.parametrize('overrides,words', BAD, ids=[','.join(o) + '=' + ','.join(map(str, o.values()))
                                                      for o, _ in BAD])
def test_bad_config_fails_at_load_naming_the_field(overrides, words):
  with pytest.raises(ConfigError) as info:
    load_config('default.py', overrides)
  for w in words:
    assert w in str(info.value), (w, str(info.value))


def test_validate_config_catches_edits_after_loading():
  cfg = load_config('default.py')
  cfg.model.num_kv_heads = 3
  with pytest.raises(ConfigError, match='model.num_kv_heads'):
    config_lib.validate_config(cfg)
  # and validate=False defers the check
  cfg = load_config('default.py', {'model.num_kv_heads': '3'}, validate=False)
  assert cfg.model.num_kv_heads == 3
