"""Tests of scaling/config/load.py: loading, command-line overrides, validation.

A bad config must fail at load time with a ConfigError whose message names the
offending field, before any device or data work.
"""

import math

import jax
import pytest
from flax import nnx

from scaling.config import load as config_lib
from scaling.config.load import ConfigError, load_config, parse_override_flags
from scaling.model import attention as attn_lib
from scaling.model import transformer as model_lib

LADDER = config_lib.load_module(config_lib.REPO_ROOT / 'scaling' / 'model' / 'ladder.py')


def _model_params(model_cfg) -> int:
  """Parameters of the model built from `model_cfg` (shapes only), a second path beside accounting."""
  state = nnx.state(model_lib.abstract_model(model_cfg), nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def test_default_and_every_rung_load_and_validate():
  cfg = load_config()
  assert cfg.model.num_layers > 0 and 'train' in cfg and 'mesh' in cfg
  for rung in LADDER.RUNGS:
    load_config(f'scaling/model/ladder.py:{rung}')


def test_rungs_against_hand_written_values():
  """Two rungs written out by hand (GPT-3 Table 2.1 for 125m), with their parameter counts."""
  nano, big = load_config('ladder.py:nano'), load_config('ladder.py:125m')
  m = nano.model
  assert (m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.d_ff, m.vocab_size, m.seq_len) == (
      2, 128, 4, 2, 512, 4096, 256)
  assert (nano.train.lr, nano.train.batch_size, nano.train.steps, m.tied_embeddings) == (3e-3, 16, 300, True)
  # nano, K = 128/4 = 32, tied: embedding 4096*128 = 524,288; per layer wq 128*4*32 = 16,384, wk = wv
  # 128*2*32 = 8,192 each, wo 16,384, SwiGLU 3*128*512 = 196,608, two norms 256 -> 246,016; x2 layers
  # = 492,032; final norm 128: total 1,016,448
  assert _model_params(m) == 1_016_448
  m = big.model
  assert (m.num_layers, m.d_model, m.num_heads, m.num_kv_heads, m.vocab_size, m.seq_len) == (
      12, 768, 12, 4, 32000, 2048)
  assert (big.train.lr, big.train.batch_size, m.tied_embeddings) == (6e-4, 256, False)
  # 125m, K = 64, d_ff 8/3*768 = 2048 (a multiple of 64), untied: embedding + head 2*32000*768 =
  # 49,152,000; per layer wq = wo 768*768 = 589,824 each, wk = wv 768*4*64 = 196,608 each, SwiGLU
  # 3*768*2048 = 4,718,592, norms 1,536 -> 6,292,992; x12 = 75,515,904; final norm 768:
  # total 124,668,672; the compute-optimal budget 20 tokens per parameter = 2,493,373,440
  assert _model_params(m) == 124_668_672
  assert big.train.tokens == 2_493_373_440
  # steps = tokens // (256 sequences * 2048 tokens = 524,288 per step) = 4755 (4755 * 524,288 =
  # 2,492,989,440; the rest, 384,000, is less than a step)
  assert config_lib.train_steps(big) == 4755


def test_spec_resolves_relative_to_configs_dir():
  a = load_config('ladder.py:5m')
  b = load_config(str(config_lib.REPO_ROOT / 'scaling' / 'model' / 'ladder.py') + ':5m')
  assert config_lib.to_dict(a) == config_lib.to_dict(b)
  assert config_lib.to_dict(load_config('ladder:5m')) == config_lib.to_dict(a)


def test_missing_file_and_unknown_rung_fail_clearly():
  with pytest.raises(ConfigError, match='no_such_config'):
    load_config('no_such_config.py')
  with pytest.raises(ValueError, match="unknown ladder rung 'huge'"):
    load_config('scaling/model/ladder.py:huge')


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
  cfg = load_config('scaling/model/ladder.py:125m', overrides)
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
  assert load_config('scaling/model/ladder.py:nano', {'model.num_layers': 5}).model.num_layers == 5


def test_config_hash_follows_the_resolved_config():
  a, b = load_config('ladder.py:nano'), load_config('ladder.py:nano')
  assert config_lib.config_hash(a) == config_lib.config_hash(b)
  c = load_config('ladder.py:nano', {'train.seed': '1'})
  assert config_lib.config_hash(c) != config_lib.config_hash(a)


def test_train_steps_from_token_budget():
  # 100,000 tokens / (8 sequences * 256 tokens = 2,048 per step) = 48.8: 48 whole steps
  cfg = load_config('ladder.py:nano', {'train.tokens': '100000', 'train.batch_size': '8'})
  assert config_lib.train_steps(cfg) == 48
  # a budget below one batch still runs one step
  cfg = load_config('ladder.py:nano', {'train.tokens': '1000', 'train.batch_size': '8'})
  assert config_lib.train_steps(cfg) == 1
  cfg = load_config('ladder.py:nano', {'train.steps': '7'})
  assert config_lib.train_steps(cfg) == 7


# ----------------------------------------------------------------------------- vocab
def test_model_vocab_follows_the_tokenizer_unless_set():
  assert load_config().model.vocab_size == 4096                               # bpe: data.vocab_size
  assert load_config(None, {'data.vocab_size': '8192'}).model.vocab_size == 8192
  assert load_config(None, {'data.tokenizer': 'byte'}).model.vocab_size == 259   # 256 bytes + eos, bos, pad
  assert load_config(None, {'data.tokenizer': 'char'}).model.vocab_size == 0     # known once prepared
  assert load_config(None, {'data.tokenizer': 'tiktoken:gpt2'}).model.vocab_size == 0
  assert load_config(None, {'model.vocab_size': '97'}).model.vocab_size == 97    # explicit: kept
  assert load_config('ladder.py:125m', {'data.vocab_size': '50000'}).model.vocab_size == 50000


def _vocab_cfg(**model):
  cfg = load_config(None, {'data.tokenizer': 'byte', **{f'model.{k}': v for k, v in model.items()}})
  return cfg


def test_resolve_vocab_fills_checks_and_names_both_fields():
  cfg = load_config(None, {'data.tokenizer': 'char'})
  assert config_lib.resolve_vocab(cfg, 67) == 67 and cfg.model.vocab_size == 67
  assert config_lib.resolve_vocab(_vocab_cfg(), 259) == 259
  with pytest.raises(ConfigError) as e:                      # smaller: ids outside the embedding
    config_lib.resolve_vocab(_vocab_cfg(vocab_size=200), 259)
  for w in ('model.vocab_size=200', "data.tokenizer='byte'", '259 ids', 'model.vocab_size=0'):
    assert w in str(e.value), (w, str(e.value))
  with pytest.raises(ConfigError) as e:                      # larger, not declared: the case
    config_lib.resolve_vocab(_vocab_cfg(vocab_size=4096), 259)
  for w in ('model.vocab_size=4096', "data.tokenizer='byte'", '259 ids', '3837 embedding rows',
            'model.pad_vocab=true'):
    assert w in str(e.value), (w, str(e.value))
  bpe = load_config(None, {'model.vocab_size': '4000'})
  with pytest.raises(ConfigError, match=r"data.tokenizer='bpe', data.vocab_size=4096\) has 4096 ids"):
    config_lib.resolve_vocab(bpe, 4096)
  assert config_lib.resolve_vocab(_vocab_cfg(vocab_size=384, pad_vocab=True), 259) == 384   # deliberate


def test_unresolved_vocab_cannot_build_a_model():
  m = load_config(None, {'data.tokenizer': 'char'}).model
  with pytest.raises(ConfigError, match='model.vocab_size=0.*follow the tokenizer.*resolve_vocab'):
    model_lib.ModelDims.from_config(m)


# ----------------------------------------------------------------------------- one schema
def test_model_dims_defaults_are_the_default_config():
  """ModelDims built from the dims alone has every choice of scaling/config/default.py (read here directly)."""
  default = config_lib.load_module(config_lib.REPO_ROOT / 'scaling' / 'config' / 'default.py').get_config().model
  dims = model_lib.ModelDims(vocab_size=97, seq_len=16, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                             head_dim=8, d_ff=64)
  choices = ('norm', 'norm_eps', 'position', 'position_table', 'rope_theta', 'mlp', 'tied_embeddings', 'scan_layers',
             'remat', 'attention', 'attention_block_size', 'sliding_window', 'init_std')
  for name in choices:
    assert getattr(dims, name) == default[name], name
  assert default.dtype == 'auto' and dims.dtype == ('float32' if jax.default_backend() == 'cpu' else 'bfloat16')
  # a field the default config does not set is no ModelDims field either (and vice versa, but for the dims
  # that ModelDims resolves and the config-only vocab padding flag)
  fields = {f.name for f in model_lib.ModelDims.__dataclass_fields__.values()}
  assert fields == set(default.keys()) - {'pad_vocab'}


def test_attention_and_remat_names_come_from_their_implementations():
  assert attn_lib.IMPLEMENTATIONS == ('auto', 'reference', 'xla', 'blockwise', 'cudnn', 'splash')
  assert model_lib.REMATS == ('none', 'full', 'dots', 'dots_except_mlp')
  for name in attn_lib.IMPLEMENTATIONS:
    assert load_config(None, {'model.attention': name}).model.attention == name
  for name in model_lib.REMATS:
    assert load_config(None, {'model.remat': name}).model.remat == name
    if name != 'none':
      assert model_lib.remat_policy(name) is not None
  with pytest.raises(ConfigError, match='model.attention.*auto, reference, xla, blockwise, cudnn, splash'):
    load_config(None, {'model.attention': 'flash'})
  with pytest.raises(ConfigError, match='model.remat.*none, full, dots, dots_except_mlp'):
    load_config(None, {'model.remat': 'some'})


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
    ({'model.vocab_size': '-1'}, ['model.vocab_size', 'follow the tokenizer']),
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
    # model.position_table: only with learned positions, and at least seq_len rows
    ({'model.position_table': '1024'}, ['model.position_table=1024', "model.position='rope'",
                                        'model.position=learned', 'model.position_table=0']),
    ({'model.position': 'none', 'model.position_table': '1024'}, ['model.position_table', 'model.position=learned']),
    ({'model.position': 'learned', 'model.position_table': '255'}, ['model.position_table=255', 'seq_len=256',
                                                                    'position_table=0', '>= 256']),
    ({'model.position': 'learned', 'model.position_table': '-1'}, ['model.position_table', '>= 0']),
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


def test_a_field_at_its_neutral_value_leaves_the_hash_alone():
  """A config from before a HASH_NEUTRAL field existed (the field deleted here) hashes like today's config with
  the field at its neutral value, so re-submitting a sweep after the upgrade finds its run directories; a
  non-neutral value changes the hash; legacy=True hashes every field (the old directory names)."""
  import copy
  cfg = load_config('ladder.py:nano')
  old = copy.deepcopy(cfg)
  with old.unlocked():
    for key in config_lib.HASH_NEUTRAL:
      section, name = key.split('.')
      del old[section][name]
  assert config_lib.config_hash(cfg) == config_lib.config_hash(old) == config_lib.config_hash(old, legacy=True)
  assert config_lib.config_hash(cfg, legacy=True) != config_lib.config_hash(cfg)
  for key, value in (('data.character_coverage', 0.9995), ('data.train_tokens', 1000), ('train.ckpt_steps', '(5,)')):
    assert config_lib.config_hash(load_config('ladder.py:nano', {key: str(value)})) != config_lib.config_hash(cfg), key


def test_position_table_default_keeps_the_hash_and_a_table_changes_it():
  """model.position_table=0 (= seq_len) hashes like a config from before the field (the field deleted) and like
  an explicit 0; a longer table is another model, so another hash (also against an equal-length explicit table,
  which names a choice the old configs did not make)."""
  import copy
  learned = {'model.position': 'learned'}
  for ov in ({}, learned):
    cfg = load_config('ladder.py:nano', ov)
    old = copy.deepcopy(cfg)
    with old.unlocked():
      del old.model['position_table']
    assert config_lib.config_hash(cfg) == config_lib.config_hash(old)
    assert config_lib.config_hash(load_config('ladder.py:nano', {**ov, 'model.position_table': '0'})) == \
        config_lib.config_hash(cfg)
  base = config_lib.config_hash(load_config('ladder.py:nano', learned))
  seq = load_config('ladder.py:nano').model.seq_len
  hashes = {config_lib.config_hash(load_config('ladder.py:nano', {**learned, 'model.position_table': str(t)}))
            for t in (seq, 2 * seq, 4 * seq)}
  assert len(hashes) == 3 and base not in hashes


def test_position_rows_follow_the_table_and_default_to_seq_len():
  rows = lambda **ov: config_lib.position_rows(load_config(None, {f'model.{k}': str(v) for k, v in ov.items()}).model)
  assert rows() == 0 and rows(position='none') == 0                      # no table without learned positions
  assert rows(position='learned') == 256 and rows(position='learned', seq_len=64) == 64
  assert rows(position='learned', position_table=1024) == 1024
  # a checkpoint's meta (a dict) and a config from before the field: seq_len rows
  assert config_lib.position_rows({'position': 'learned', 'seq_len': 32}) == 32
  assert config_lib.position_rows({'position': 'learned', 'seq_len': 32, 'position_table': 128}) == 128
  # ModelDims checks the table too (it can be built without a config)
  with pytest.raises(ConfigError, match='model.position_table=8 is shorter than model.seq_len=16'):
    model_lib.ModelDims(vocab_size=97, seq_len=16, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, d_ff=64, position='learned', position_table=8)
  with pytest.raises(ConfigError, match='model.position=learned'):
    model_lib.ModelDims(vocab_size=97, seq_len=16, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2,
                        head_dim=8, d_ff=64, position_table=64)


def test_every_hashed_field_is_known():
  """A field added to scaling/config/default.py changes the hash of every run (and so orphans every sweep's run
  directories) unless it is in config.HASH_NEUTRAL with the value that reproduces the old behaviour. This
  list is the fields hashed today: a new one goes into HASH_NEUTRAL, not here (unless every hash is meant to
  change)."""
  import json
  import pathlib
  want = json.loads((pathlib.Path(__file__).parent / 'data' / 'hashed_config_fields.json').read_text())
  d = config_lib.to_dict(load_config('default.py'))
  got = sorted(f'{s}.{k}' for s, sec in d.items() if isinstance(sec, dict) for k in sec
               if f'{s}.{k}' not in config_lib.HASH_NEUTRAL)
  new, gone = sorted(set(got) - set(want['sections'])), sorted(set(want['sections']) - set(got))
  assert not new, f'new config field(s) {new}: add each to scaling/config/load.py HASH_NEUTRAL with its neutral value'
  assert not gone, f'config field(s) {gone} removed: every run hash changes (say so, then update the list)'
  assert sorted(k for k, v in d.items() if not isinstance(v, dict)) == want['top']


def test_a_config_under_configs_imports_its_siblings_from_any_working_directory(tmp_path):
  """A sweep file imports `configs.sweeps.<sibling>` (the shipped ones share _common.py): load_module puts the
  folder holding `configs/` on sys.path while the file runs, and takes it off again (the `scaling` console
  script has no cwd on sys.path)."""
  import sys

  from scaling.config.load import load_module
  sweeps = tmp_path / 'proj' / 'configs' / 'sweeps'
  sweeps.mkdir(parents=True)
  (sweeps / '_shared_for_this_test.py').write_text('VALUE = 42\n')
  (sweeps / 'mine.py').write_text('from configs.sweeps._shared_for_this_test import VALUE\n')
  assert str(tmp_path / 'proj') not in sys.path
  assert load_module(sweeps / 'mine.py').VALUE == 42
  assert str(tmp_path / 'proj') not in sys.path
