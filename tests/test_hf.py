"""Tests of scaling/inference/hf.py, hf_export.py, hf_import.py: Hugging Face Llama export and import.

References: transformers' own LlamaForCausalLM and tokenizer (an independent
implementation), loaded from the exported folder with `from_pretrained`; the
original parameters for the export -> import round trip; the bfloat16 rounding
of numpy/ml_dtypes for the bfloat16 export.

torch and transformers are test dependencies (installed by .ci/run), imported
unconditionally at their first use in a test (not when pytest collects the module). Models are tiny (D <= 48, 2 layers) with numpy-random
parameters large enough that layout mistakes move the logits by O(1).
"""

import importlib
import json
import os
import pathlib
import types

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # everything is local; never reach the hub

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from scaling.config.load import resolved_dims  # noqa: E402
from scaling.data import tokenizer as tok_lib  # noqa: E402
from scaling.inference import hf, hf_export, hf_import  # noqa: E402
from scaling.inference import run as run_lib  # noqa: E402
from scaling.model.transformer import abstract_model  # noqa: E402
from scaling.train import checkpoint as ckpt_lib  # noqa: E402


class _ImportedAtFirstUse:
  """A module imported when a test first reads one of its attributes. pytest-xdist has every worker collect
  (import) every test module; torch and transformers cost ~4 CPU-s a process, which the workers that run none
  of these tests paid for nothing (and torch in a worker's memory for the rest of the run)."""

  def __init__(self, name: str, setup=None):
    self._name, self._setup, self._module = name, setup, None

  def __getattr__(self, attr):
    if self._module is None:
      module = importlib.import_module(self._name)
      if self._setup is not None:
        self._setup(module)
      self._module = module
    return getattr(self._module, attr)


def _quiet(transformers):
  transformers.logging.set_verbosity_error()
  transformers.utils.logging.disable_progress_bar()


torch = _ImportedAtFirstUse('torch')
transformers = _ImportedAtFirstUse('transformers', _quiet)

T = 12  # sequence length of the forward checks (long enough for RoPE to matter)

SAMPLES = [
    'Hello world',
    'ROMEO:\nBut soft, what light through yonder window breaks?',
    ' a leading space',
    '   three leading spaces and trailing  ',
    'digits 1234567890 and 3.14159, 2026-11-29',
    'tabs\tand\nnew\n\nlines',
    'naïve café, Ünïcödé, 日本語テキスト, Ω≈ç√ and an emoji 😀',
    'def f(x_BTD):\n    return x_BTD  # code',
    '',
]


def _corpus_lines():
  """A small deterministic corpus: words, digits, spacing and a few non-ASCII characters."""
  rng = np.random.default_rng(0)
  words = ('the of and to in that is was he for it with as his on be at by had not are but from or '
           'have an they which one you were her all she there would their we him been has when who '
           'will more no if out so said what up its about into than them can only other new some '
           'could time these two may then do first any my now such like our over man me even most '
           'café naïve über 1999 2026 42 x_BTD').split()
  lines = []
  for _ in range(400):
    n = int(rng.integers(3, 14))
    line = ' '.join(str(w) for w in rng.choice(words, n))
    if rng.random() < 0.2:
      line = '  ' + line
    lines.append(line.capitalize() + rng.choice(['.', ',', '!', '?', ':']))
  return lines


@pytest.fixture(scope='module')
def spm_bpe():
  return tok_lib.train_sentencepiece(_corpus_lines(), kind='bpe', vocab_size=320)


def _randomize(model, seed, std):
  """Every matrix ~ N(0, std^2), norm scales 1 + N(0, 0.3^2): logits with O(1) spread."""
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
    if name == 'scale':
      return jnp.asarray(1 + 0.3 * rng.standard_normal(leaf.shape), jnp.float32)
    return jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


def _make_workdir(path, cfg, model, tokenizer):
  ckpt_lib.save_imported(path, cfg, model, tokenizer)
  return path


def _params(model):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))}


def _export(workdir, out, **kw):
  args = types.SimpleNamespace(workdir=str(workdir), out=str(out), step=None, dtype='float32',
                               max_shard_size='2GB')
  for k, v in kw.items():
    setattr(args, k, v)
  assert hf_export.run_export(args) == 0
  return out


def _import(hf_dir, workdir):
  assert hf_import.run_import(types.SimpleNamespace(hf=str(hf_dir), workdir=str(workdir), config=None)) == 0
  return workdir


def _hf_logits(hf_dir, tokens):
  model, info = transformers.AutoModelForCausalLM.from_pretrained(
      str(hf_dir), dtype=torch.float32, attn_implementation='eager', output_loading_info=True)
  assert type(model).__name__ == 'LlamaForCausalLM'
  assert not info['missing_keys'] and not info['unexpected_keys'] and not info['mismatched_keys'], info
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy(), model


_forward = jax.jit(lambda model, tokens: model(tokens))


def _ours_logits(model, tokens):
  return np.asarray(_forward(model, tokens))


def _nothing_left(parent: pathlib.Path, name: str):
  """The target does not exist and no temporary folder for it was left behind."""
  assert not (parent / name).exists()
  assert not [p for p in parent.iterdir() if p.name.startswith(f'.{name}.tmp')]


# ----------------------------------------------------------------------------- forward vs transformers
CASES = {
    # GQA (4 query heads on 2 kv heads), tied head, odd vocab.
    'gqa_tied_f32': dict(model=dict(vocab_size=97, num_kv_heads=2, tied_embeddings=True), dtype='float32'),
    # untied head, multi-query attention, another odd vocab, non-default RoPE theta and eps, 3 shards or more.
    'mqa_untied_f32': dict(model=dict(vocab_size=131, num_kv_heads=1, tied_embeddings=False, rope_theta=500.0,
                                      norm_eps=1e-6, d_ff=48), dtype='float32', shard='8KB'),
    # untied GQA saved in bfloat16.
    'gqa_untied_bf16': dict(model=dict(vocab_size=131, num_kv_heads=2, tied_embeddings=False), dtype='bfloat16'),
    # plain multi-head attention, tied, head_dim set explicitly (H * K != D), bfloat16.
    'mha_headdim_bf16': dict(model=dict(vocab_size=97, num_heads=4, num_kv_heads=4, head_dim=12, d_model=32,
                                        tied_embeddings=True), dtype='bfloat16'),
}


@pytest.mark.parametrize('case', list(CASES))
def test_export_logits_match_transformers(case, tiny_cfg, tmp_path):
  spec = CASES[case]
  cfg = tiny_cfg(**spec['model'])
  model = _randomize(_abstract_filled(cfg.model), seed=1, std=0.35)
  chars = tok_lib.CharTokenizer('abcdefghij \n')  # fits any vocab here; has no HF form (weights only)
  workdir = _make_workdir(tmp_path / 'run', cfg, model, chars)
  out = _export(workdir, tmp_path / 'hf', dtype=spec['dtype'], max_shard_size=spec.get('shard', '2GB'))

  files = sorted(p.name for p in out.iterdir())
  if 'shard' in spec:
    index = json.loads((out / hf.INDEX_NAME).read_text())
    shards = sorted(set(index['weight_map'].values()))
    assert len(shards) >= 3 and all(s in files for s in shards)
  else:
    assert hf.WEIGHTS_NAME in files and hf.INDEX_NAME not in files
  hf_cfg = json.loads((out / 'config.json').read_text())
  assert hf_cfg['architectures'] == ['LlamaForCausalLM'] and hf_cfg['torch_dtype'] == spec['dtype']

  tokens = jnp.asarray(np.random.default_rng(2).integers(0, cfg.model.vocab_size, (2, T)), jnp.int32)
  ref, torch_model = _hf_logits(out, tokens)
  ours = _ours_logits(model, tokens)
  assert ours.std() > 0.5  # the comparison is not between near-constant logits
  if spec['dtype'] == 'float32':
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
  else:
    # Exactly our model with bfloat16-rounded parameters; the rounding itself moves logits a little.
    graphdef, state = nnx.split(model)
    rounded = nnx.merge(graphdef, jax.tree.map(
        lambda x: jnp.asarray(np.asarray(x).astype(ml_dtypes.bfloat16).astype(np.float32)), state))
    np.testing.assert_allclose(_ours_logits(rounded, tokens), ref, rtol=0, atol=1e-4)
    assert np.abs(ours - ref).max() <= 0.1 * np.abs(ours).max()

  if case == 'gqa_tied_f32':
    # Control: the interleaved-pair RoPE layout (what a q/k row permutation would mean) does NOT match,
    # so the agreement above really checks that no permutation is needed.
    K = resolved_dims(cfg.model)['head_dim']
    perm = np.concatenate([np.arange(0, K, 2), np.arange(1, K, 2)])
    with torch.no_grad():
      for layer in torch_model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
          w = proj.weight.view(-1, K, proj.weight.shape[1])
          w.copy_(w[:, perm, :].clone())
      permuted = torch_model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()
    assert np.abs(permuted - ours).max() > 1e-2


@pytest.mark.parametrize('tied', [True, False])
def test_mup_export_folds_the_multipliers_and_imports_as_sp(tied, tiny_cfg, tmp_path):
  """μP at 2x its base width (d_model 32, base 16: output multiplier 1/2) and 2x its base head dim (8 vs 4:
  attention logits x sqrt(4 / 8)): transformers' Llama of the exported folder gives our μP logits; a tied
  model comes out untied (lm_head = embedding / 2); `scaling import` gives an 'sp' model with those logits."""
  cfg = tiny_cfg(vocab_size=97, num_kv_heads=2, tied_embeddings=tied, parametrization='mup', mup_base_width=16,
                 mup_base_head_dim=4)
  model = _randomize(_abstract_filled(cfg.model), seed=4, std=0.35)
  chars = tok_lib.CharTokenizer('abcdefghij \n')
  workdir = _make_workdir(tmp_path / 'run', cfg, model, chars)
  out = _export(workdir, tmp_path / 'hf')
  hf_cfg = json.loads((out / 'config.json').read_text())
  assert hf_cfg['tie_word_embeddings'] is False
  tensors = load_file(str(out / hf.WEIGHTS_NAME))
  p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  head_DV = np.asarray(p['embed_VD']).T if tied else np.asarray(p['lm_head_DV'])
  np.testing.assert_allclose(tensors['lm_head.weight'], 0.5 * head_DV.T, rtol=1e-6)
  np.testing.assert_array_equal(tensors['model.embed_tokens.weight'], np.asarray(p['embed_VD']))
  wq0 = np.asarray(p['blocks']['wq_DHK'])[0].reshape(32, -1).T
  np.testing.assert_allclose(tensors['model.layers.0.self_attn.q_proj.weight'], wq0 * 0.5 ** 0.5, rtol=1e-6)

  tokens = jnp.asarray(np.random.default_rng(5).integers(0, 97, (2, T)), jnp.int32)
  ref, _ = _hf_logits(out, tokens)
  ours = _ours_logits(model, tokens)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
  # control: the same weights read as SP (no multipliers) give other logits, so the folding is what matches
  sp_cfg = tiny_cfg(vocab_size=97, num_kv_heads=2, tied_embeddings=tied)
  graphdef, _ = nnx.split(abstract_model(sp_cfg.model))
  assert np.abs(_ours_logits(nnx.merge(graphdef, nnx.state(model)), tokens) - ours).max() > 1e-2

  back = _import(out, tmp_path / 'back')
  model2, cfg2, _ = run_lib.load_for_inference(back)
  assert (cfg2.model.parametrization, cfg2.model.tied_embeddings) == ('sp', False)
  np.testing.assert_allclose(_ours_logits(model2, tokens), ref, rtol=0, atol=1e-4)


def _abstract_filled(model_cfg):
  """A model of this config (parameters are overwritten by _randomize; no initializer compiled)."""
  graphdef, state = nnx.split(abstract_model(model_cfg))
  return nnx.merge(graphdef, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state))


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_export_import_round_trip(dtype, tiny_cfg, tmp_path, spm_bpe):
  cfg = tiny_cfg(vocab_size=331, tied_embeddings=False, num_kv_heads=2)  # odd vocab > tokenizer's 320
  model = _randomize(_abstract_filled(cfg.model), seed=3, std=0.2)
  workdir = _make_workdir(tmp_path / 'run', cfg, model, spm_bpe)
  out = _export(workdir, tmp_path / 'hf', dtype=dtype, max_shard_size='20KB')
  assert (out / hf.INDEX_NAME).exists()
  back = _import(out, tmp_path / 'back')

  model2, cfg2, tok2 = run_lib.load_for_inference(back)
  want = _params(model)
  if dtype == 'bfloat16':
    want = {k: v.astype(ml_dtypes.bfloat16).astype(np.float32) for k, v in want.items()}
  got = _params(model2)
  assert set(got) == set(want)
  for k in want:
    assert got[k].dtype == np.float32
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  for k in ('vocab_size', 'seq_len', 'num_layers', 'd_model', 'num_heads', 'num_kv_heads', 'norm', 'norm_eps',
            'position', 'rope_theta', 'mlp', 'tied_embeddings'):
    assert cfg2.model[k] == cfg.model[k], k
  assert resolved_dims(cfg2.model) == resolved_dims(cfg.model)
  assert tok2.sha256 == spm_bpe.sha256 and tok2.kind == 'bpe'
  assert cfg2.data.vocab_size == spm_bpe.vocab_size


def test_import_checkpoint_saved_by_transformers(tmp_path):
  """A LlamaForCausalLM written by transformers' own save_pretrained (sharded) imports with equal logits."""
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=113, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
      initializer_range=0.3, rope_parameters={'rope_type': 'default', 'rope_theta': 1000.0})
  ref_model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in ref_model.named_parameters():
      if name.endswith('norm.weight'):
        p.add_(0.3 * torch.randn_like(p))  # non-trivial norm scales
  ref_model.save_pretrained(str(tmp_path / 'hf'), max_shard_size='20KB')
  assert (tmp_path / 'hf' / hf.INDEX_NAME).exists()
  workdir = tmp_path / 'run'
  hf_import.import_checkpoint(tmp_path / 'hf', workdir)
  assert (workdir / ckpt_lib.IMPORTED_DIR).exists()
  cfg = json.loads((workdir / 'config.json').read_text())
  assert (cfg['model']['vocab_size'], cfg['model']['rope_theta'], cfg['model']['d_ff']) == (113, 1000.0, 40)
  _, model = hf_import.load_hf(tmp_path / 'hf')[:2]
  tokens = np.random.default_rng(6).integers(0, 113, (2, T))
  with torch.no_grad():
    ref = ref_model(torch.tensor(tokens)).logits.numpy()
  ours = _ours_logits(model, jnp.asarray(tokens, jnp.int32))
  assert ours.std() > 0.5
  np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_pure_conversion_round_trip(tiny_cfg):
  """params_to_hf then hf_to_model gives back the same parameters, for tied and untied heads."""
  for tied in (True, False):
    cfg = tiny_cfg(tied_embeddings=tied, vocab_size=131)
    model = _randomize(_abstract_filled(cfg.model), seed=4, std=0.1)
    tensors = hf_export.params_to_hf(model)
    assert ('lm_head.weight' in tensors) == (not tied)
    assert tensors['model.layers.1.self_attn.q_proj.weight'].shape == (4 * 8, 32)
    m2, model2 = hf_import.hf_to_model(hf_export.hf_config_from_model(cfg.model), tensors)
    a, b = _params(model), _params(model2)
    assert set(a) == set(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_ids_match_autotokenizer(tiny_cfg, tmp_path, spm_bpe):
  cfg = tiny_cfg(vocab_size=320)
  model = _abstract_filled(cfg.model)
  out = _export(_make_workdir(tmp_path / 'run', cfg, model, spm_bpe), tmp_path / 'hf')
  auto = transformers.AutoTokenizer.from_pretrained(str(out))
  hf_cfg = json.loads((out / 'config.json').read_text())
  assert (hf_cfg['bos_token_id'], hf_cfg['eos_token_id']) == (spm_bpe.bos_id, spm_bpe.eos_id)
  assert auto.eos_token_id == spm_bpe.eos_id
  for text in SAMPLES + _corpus_lines()[:50]:
    ids = spm_bpe.encode(text)
    assert auto(text)['input_ids'] == ids, text
    assert auto.decode(ids) == text == spm_bpe.decode(ids)
  # non-ASCII outside the training text goes through byte fallback in both
  assert any(spm_bpe.encode('日本')[i] < 259 for i in range(2))


def test_unigram_tokenizer_ids_match(tmp_path):
  uni = tok_lib.train_sentencepiece(_corpus_lines(), kind='unigram', vocab_size=400)
  out = tmp_path / 'hf'
  out.mkdir()
  assert hf_export.write_tokenizer(uni, out, model_max_length=64)
  auto = transformers.AutoTokenizer.from_pretrained(str(out))
  for text in SAMPLES:
    assert auto(text)['input_ids'] == uni.encode(text), text


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def exported(tiny_cfg, tmp_path_factory, spm_bpe):
  """Factory: a fresh exported folder (sharded or single file) of a tiny untied model, vocab 331."""
  def make(shard='2GB'):
    base = tmp_path_factory.mktemp('src')
    cfg = tiny_cfg(vocab_size=331, tied_embeddings=False)
    model = _randomize(_abstract_filled(cfg.model), seed=5, std=0.1)
    return _export(_make_workdir(base / 'run', cfg, model, spm_bpe), base / 'hf', max_shard_size=shard)
  return make


def _import_fails(hf_dir, tmp_path, match):
  with pytest.raises(hf.HFError, match=match):
    hf_import.import_checkpoint(hf_dir, tmp_path / 'target')
  _nothing_left(tmp_path, 'target')


def test_import_missing_shard(exported, tmp_path):
  out = exported('20KB')
  shard = sorted(out.glob('model-*.safetensors'))[1]
  shard.unlink()
  _import_fails(out, tmp_path, f'shard file.*do not exist.*{shard.name}')


def test_import_missing_tensor(exported, tmp_path):
  out = exported()
  tensors = load_file(str(out / hf.WEIGHTS_NAME))
  del tensors['model.layers.1.mlp.up_proj.weight']
  save_file(tensors, str(out / hf.WEIGHTS_NAME), metadata={'format': 'pt'})
  _import_fails(out, tmp_path, r"missing tensors \['model.layers.1.mlp.up_proj.weight'\]")


def test_import_truncated_file(exported, tmp_path):
  out = exported()
  path = out / hf.WEIGHTS_NAME
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  _import_fails(out, tmp_path, 'truncated')


def test_import_shard_not_holding_its_tensors(exported, tmp_path):
  out = exported('20KB')
  index = json.loads((out / hf.INDEX_NAME).read_text())
  first = sorted(set(index['weight_map'].values()))[0]
  index['weight_map']['model.norm.weight'] = first
  (out / hf.INDEX_NAME).write_text(json.dumps(index))
  _import_fails(out, tmp_path, 'do not hold them')


def test_import_other_architecture(tmp_path):
  gpt2 = tmp_path / 'gpt2'
  gpt2.mkdir()
  (gpt2 / 'config.json').write_text(json.dumps({
      'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2', 'n_embd': 32, 'n_layer': 2, 'n_head': 4,
      'vocab_size': 97}))
  save_file({'transformer.wte.weight': np.zeros((97, 32), np.float32)}, str(gpt2 / hf.WEIGHTS_NAME))
  _import_fails(gpt2, tmp_path, "not a Llama checkpoint.*model_type='gpt2'.*GPT2LMHeadModel")


def test_import_vocab_mismatch(exported, tmp_path):
  out = exported()
  c = json.loads((out / 'config.json').read_text())
  c['vocab_size'] = 333
  (out / 'config.json').write_text(json.dumps(c))
  _import_fails(out, tmp_path, r'embed_tokens.weight has shape \[331, 32\].*vocab_size=333')


def test_import_refuses_pickle_weights(tmp_path, tiny_cfg):
  d = tmp_path / 'bin'
  d.mkdir()
  (d / 'config.json').write_text(json.dumps(hf_export.hf_config_from_model(tiny_cfg().model)))
  (d / 'pytorch_model.bin').write_bytes(b'not read')
  _import_fails(d, tmp_path, 'pickle-based weights are never loaded')


def test_import_into_nonempty_workdir(exported, tmp_path):
  out = exported()
  target = tmp_path / 'busy'
  target.mkdir()
  (target / 'notes.txt').write_text('mine')
  with pytest.raises(hf.HFError, match='not empty'):
    hf_import.import_checkpoint(out, target)
  assert sorted(p.name for p in target.iterdir()) == ['notes.txt']


@pytest.mark.parametrize('field,value', [('norm', 'layernorm'), ('position', 'learned'), ('position', 'none'),
                                         ('mlp', 'gelu'), ('sliding_window', 8)])
def test_export_refuses_non_llama(field, value, tiny_cfg, tmp_path):
  cfg = tiny_cfg(**{field: value})
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(json.dumps(json.loads(cfg.to_json_best_effort())))
  with pytest.raises(hf.HFError, match=f'model.{field}={value!r}'):
    hf_export.export_checkpoint(workdir, tmp_path / 'hf')
  _nothing_left(tmp_path, 'hf')


def test_export_bad_arguments(tmp_path, tiny_cfg):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(tiny_cfg().to_json_best_effort())
  with pytest.raises(hf.HFError, match='max_shard_size'):
    hf_export.export_checkpoint(workdir, tmp_path / 'hf', max_shard_size='lots')
  with pytest.raises(hf.HFError, match='dtype'):
    hf_export.export_checkpoint(workdir, tmp_path / 'hf', dtype='float16')
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'x').write_text('x')
  with pytest.raises(hf.HFError, match='not empty'):
    hf_export.export_checkpoint(workdir, tmp_path / 'full')
  _nothing_left(tmp_path, 'hf')


def test_parse_size():
  assert hf_export.parse_size('2GB') == 2 * 10**9
  assert hf_export.parse_size('500MiB') == 500 * 2**20
  assert hf_export.parse_size('1.5KB') == 1500
  assert hf_export.parse_size(1000) == 1000


# ----------------------------------------------------------------------------- file modes
@pytest.mark.parametrize('umask,dir_mode,file_mode', [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_exported_and_imported_folders_are_readable_as_the_umask_allows(umask, dir_mode, file_mode, tiny_cfg,
                                                                        tmp_path, spm_bpe):
  """Like any other output (`open`, `mkdir`): 755/644 under the usual umask 022, not mkdtemp's private 700."""
  cfg = tiny_cfg(vocab_size=331, tied_embeddings=False)
  workdir = _make_workdir(tmp_path / 'run', cfg, _randomize(_abstract_filled(cfg.model), seed=5, std=0.1), spm_bpe)
  old = os.umask(umask)
  try:
    out = _export(workdir, tmp_path / 'hf', max_shard_size='20KB')   # shards + index + tokenizer files
    back = hf_import.import_checkpoint(out, tmp_path / 'back')
  finally:
    os.umask(old)
  modes = {p.name: p.stat().st_mode & 0o777 for p in [out, *out.iterdir()]}
  assert len(modes) > 5 and (out / hf.INDEX_NAME).exists() and (out / hf.SPM_FILE).exists()
  assert modes == {name: dir_mode if name == 'hf' else file_mode for name in modes}
  imported = {p: p.stat().st_mode & 0o777 for p in [back, *back.rglob('*')]}
  assert len(imported) > 3 and imported == {p: dir_mode if p.is_dir() else file_mode for p in imported}
