"""Tests of scaling/inference/generate.py: KV-cache decoding, sampling filters, batching, seeds, bad input.

References are independent of the code under test: the full (uncached) forward
pass, a slow Python greedy loop over full forwards, numpy sorts of known
probabilities, and generating prompts one at a time.
"""

import argparse
import io
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from scaling.inference import generate as gen

CHARS = ''.join(chr(c) for c in range(32, 127))  # 95 printable ASCII characters


class ToyCharTokenizer:
  """Printable ASCII -> ids 0..94, EOS = 95; no BOS. decode drops EOS."""

  def __init__(self):
    self.vocab_size = len(CHARS) + 1
    self.eos_id = len(CHARS)
    self.bos_id = None
    self._index = {c: i for i, c in enumerate(CHARS)}

  def encode(self, text):
    return [self._index[c] for c in text]

  def decode(self, ids):
    return ''.join(CHARS[i] for i in ids if i != self.eos_id)


VOCAB = len(CHARS) + 1


@pytest.fixture(scope='module')
def tok():
  return ToyCharTokenizer()


def _model(make_model, **overrides):
  kw = dict(vocab_size=VOCAB, seq_len=64, std=0.2)
  kw.update(overrides)
  return make_model(**kw)


_JITTED = {}


def _jit_model(model):
  """model(tokens, positions=None, cache=None) as one jitted function of the params (compiled per shape)."""
  if id(model) not in _JITTED:
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda st, *a, **k: nnx.merge(graphdef, st)(*a, **k))
    _JITTED[id(model)] = (model, lambda *a, **k: fn(state, *a, **k))  # keeps model alive: ids stay unique
  return _JITTED[id(model)][1]


_filter = jax.jit(gen.filter_logits)  # one compile per shape instead of one per eager op


def _reference_text(model, tok, prompt, n):
  """The greedy continuation of a prompt string by the slow reference, cut at its first EOS, decoded."""
  ref = _reference_greedy(model, tok.encode(prompt), n)
  return tok.decode(ref[:ref.index(tok.eos_id)] if tok.eos_id in ref else ref)


def _reference_greedy(model, prompt, n, width=64):
  """Greedy continuation by re-running the full forward on the whole sequence every step.

  The sequence is right-padded to a fixed width (causal: positions < len do not
  see the padding), so the jitted forward compiles once.
  """
  forward = _jit_model(model)
  seq = list(prompt)
  for _ in range(n):
    tokens = np.zeros((1, width), np.int32)
    tokens[0, :len(seq)] = seq
    seq.append(int(jnp.argmax(forward(jnp.asarray(tokens))[0, len(seq) - 1])))
  return seq[len(prompt):]


# ----------------------------------------------------------------------------- cache == full forward
@pytest.mark.parametrize('overrides', [
    dict(position='rope', num_heads=4, num_kv_heads=2),
    dict(position='learned', num_heads=4, num_kv_heads=4, norm='layernorm', mlp='gelu'),
    dict(position='none', num_heads=4, num_kv_heads=1, scan_layers=False),
    dict(position='rope', num_heads=4, num_kv_heads=2, sliding_window=4),
], ids=['rope-gqa', 'learned-mha', 'none-mqa', 'rope-window'])
def test_cached_decoding_logits_equal_full_forward(make_model, overrides):
  model = _model(make_model, **overrides)
  rng = np.random.default_rng(0)
  total, prompt_lens = 14, np.array([6, 3])
  seqs = rng.integers(0, VOCAB, (2, total)).astype(np.int32)
  forward = _jit_model(model)
  full = np.asarray(forward(jnp.asarray(seqs)))  # [B, total, V]: rows are independent in a full forward

  # prefill right-padded prompts (pad = token 0), then feed each row's own tokens one at a time
  padded = np.where(np.arange(6)[None] < prompt_lens[:, None], seqs[:, :6], 0)
  cache = model.init_cache(2, 20)
  logits, cache = forward(jnp.asarray(padded), jnp.broadcast_to(jnp.arange(6), (2, 6)), cache=cache)
  for b in range(2):
    np.testing.assert_allclose(np.asarray(logits)[b, :prompt_lens[b]], full[b, :prompt_lens[b]],
                               rtol=1e-4, atol=1e-4)
  for step in range(total - 6):
    pos = prompt_lens + step
    toks = seqs[np.arange(2), pos]
    logits, cache = forward(jnp.asarray(toks[:, None]), jnp.asarray(pos[:, None]), cache=cache)
    np.testing.assert_allclose(np.asarray(logits)[:, 0], full[np.arange(2), pos], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- greedy
@pytest.mark.parametrize('overrides', [
    dict(position='rope', num_kv_heads=2),
    dict(position='learned', num_kv_heads=4, seq_len=32),
    dict(position='learned', num_kv_heads=4, seq_len=20, position_table=32),   # generates past seq_len
    dict(position='none', num_kv_heads=1),
], ids=['rope', 'learned-seq32', 'learned-seq20-table32', 'none'])
def test_greedy_equals_reference_full_forward_loop(make_model, overrides):
  model = _model(make_model, **overrides)
  rng = np.random.default_rng(1)
  lens = [20, 5, 11]  # learned, a table of 32 rows: 20 + 12 = 32 fills the position table exactly
  prompts = np.zeros((3, 20), np.int32)
  for b, n in enumerate(lens):
    prompts[b, :n] = rng.integers(0, VOCAB, n)
  tokens, lengths = gen.generate_tokens(model, prompts, lens, max_new_tokens=12, temperature=0.0)
  assert tokens.shape == (3, 12)
  np.testing.assert_array_equal(lengths, [12, 12, 12])
  for b, n in enumerate(lens):
    assert tokens[b].tolist() == _reference_greedy(model, prompts[b, :n].tolist(), 12), b


def test_stops_at_eos_and_pads_after(make_model):
  model = _model(make_model)
  prompts = np.array([[1, 2, 3, 4], [5, 6, 7, 0]], np.int32)
  free, _ = gen.generate_tokens(model, prompts, [4, 3], max_new_tokens=10, temperature=0.0)
  eos = int(free[0, 3])  # declare row 0's 4th greedy token to be EOS
  stop0 = free[0].tolist().index(eos)
  tokens, lengths = gen.generate_tokens(model, prompts, [4, 3], max_new_tokens=10, temperature=0.0, eos_id=eos)
  assert lengths[0] == stop0
  assert tokens[0, :stop0].tolist() == free[0, :stop0].tolist()
  assert (tokens[0, stop0:] == eos).all()
  row1 = free[1].tolist()
  stop1 = row1.index(eos) if eos in row1 else 10
  assert lengths[1] == stop1 and tokens[1, :stop1].tolist() == row1[:stop1]


# ----------------------------------------------------------------------------- filters
def test_filter_top_k_keeps_exactly_k_most_likely():
  logits = np.random.default_rng(2).normal(size=(4, 50)).astype(np.float32) * 3
  out = np.asarray(_filter(jnp.asarray(logits), temperature=1.0, top_k=5, top_p=1.0))
  for b in range(4):
    kept = set(np.flatnonzero(np.isfinite(out[b])).tolist())
    assert kept == set(np.argsort(-logits[b])[:5].tolist())
    np.testing.assert_allclose(out[b, sorted(kept)], logits[b, sorted(kept)])
  # ties go to the lower token id
  ties = np.asarray(_filter(jnp.zeros((1, 8)), temperature=1.0, top_k=3, top_p=1.0))
  assert np.flatnonzero(np.isfinite(ties[0])).tolist() == [0, 1, 2]


def test_top_k_never_samples_outside_top_k():
  logits = np.random.default_rng(3).normal(size=(2, 64)).astype(np.float32)  # flat-ish: top-k matters
  out = _filter(jnp.asarray(logits), temperature=1.5, top_k=4, top_p=1.0)
  keys = jax.random.split(jax.random.key(0), 4000)
  draws = np.asarray(jax.vmap(lambda k: jax.random.categorical(k, out))(keys))  # [4000, 2]
  for b in range(2):
    allowed = set(np.argsort(-logits[b])[:4].tolist())
    assert set(draws[:, b].tolist()) == allowed  # all k seen, nothing else


def _known_logits(perm):
  """Probabilities 0.4, 0.3, 0.2, 0.1, 0 ... placed at the token ids in perm."""
  probs = np.full(16, 1e-12)
  probs[perm] = [0.4, 0.3, 0.2, 0.1]
  return np.log(probs).astype(np.float32)[None], probs


@pytest.mark.parametrize('top_p,top_k,expected_ranks', [
    (0.3, 0, [0]),           # the top token alone already has 0.4 >= 0.3
    (0.65, 0, [0, 1]),       # 0.4 + 0.3 = 0.7 >= 0.65
    (0.75, 0, [0, 1, 2]),    # 0.7 < 0.75, + 0.2 = 0.9
    (0.95, 0, [0, 1, 2, 3]),
    (0.75, 3, [0, 1]),       # after top-3: 0.44, 0.33, 0.22 -> 0.78 >= 0.75
    (1.0, 2, [0, 1]),
])
def test_filter_top_p_keeps_smallest_set_reaching_p(top_p, top_k, expected_ranks):
  perm = [9, 2, 14, 5]
  logits, _ = _known_logits(perm)
  out = np.asarray(_filter(jnp.asarray(logits), temperature=1.0, top_k=top_k, top_p=top_p))
  assert np.flatnonzero(np.isfinite(out[0])).tolist() == sorted(perm[r] for r in expected_ranks)


def test_top_p_sampling_frequencies():
  perm = [9, 2, 14, 5]
  logits, probs = _known_logits(perm)
  out = _filter(jnp.asarray(logits), temperature=1.0, top_k=0, top_p=0.65)
  draws = np.asarray(jax.random.categorical(jax.random.key(1), out[0], shape=(8000,)))
  assert set(draws.tolist()) == {9, 2}
  np.testing.assert_allclose(np.mean(draws == 9), 0.4 / 0.7, atol=0.03)


def test_filter_temperature():
  logits = jnp.asarray(np.random.default_rng(4).normal(size=(3, 10)), jnp.float32)
  np.testing.assert_allclose(_filter(logits, temperature=2.0, top_k=0, top_p=1.0), logits / 2, rtol=1e-6)
  greedy = np.asarray(_filter(logits, temperature=0.0, top_k=0, top_p=1.0))
  for b in range(3):
    assert np.flatnonzero(np.isfinite(greedy[b])).tolist() == [int(np.argmax(logits[b]))]


def test_generate_tokens_top_k_samples_from_model_top_k(make_model):
  model = _model(make_model)
  prompt = np.array([[3, 1, 4, 1, 5]], np.int32)
  B = 256
  keys = jax.random.split(jax.random.key(7), B)
  tokens, _ = gen.generate_tokens(model, np.repeat(prompt, B, 0), [5] * B, max_new_tokens=1,
                                  temperature=2.0, top_k=3, rng=keys)
  allowed = set(np.argsort(-np.asarray(_jit_model(model)(jnp.asarray(prompt)))[0, -1])[:3].tolist())
  assert set(tokens[:, 0].tolist()) == allowed


def test_never_samples_ids_past_the_tokenizer_vocab(make_model, tok):
  """A model vocab padded past the tokenizer's (allowed at train time) must not emit undecodable ids."""
  model = _model(make_model, vocab_size=VOCAB + 32)
  prompt = np.array([[3, 1, 4, 1, 5]] * 64, np.int32)
  keys = jax.random.split(jax.random.key(0), 64)
  free, _ = gen.generate_tokens(model, prompt, [5] * 64, max_new_tokens=8, temperature=5.0, rng=keys)
  assert free.max() >= VOCAB  # without the limit, the padded ids do get sampled
  limited, _ = gen.generate_tokens(model, prompt, [5] * 64, max_new_tokens=8, temperature=5.0, rng=keys,
                                   vocab_limit=VOCAB)
  assert limited.max() < VOCAB
  # generate limits to tokenizer.vocab_size itself: every row hands decode its 8 ids, all decodable
  decoded = []

  class RecordingTokenizer(ToyCharTokenizer):
    def decode(self, ids):
      decoded.append(list(ids))
      return super().decode(ids)

  texts = gen.generate(model, RecordingTokenizer(), ['abc'] * 4, max_new_tokens=8, temperature=5.0,
                       stop_at_eos=False)
  assert len(texts) == 4 and [len(ids) for ids in decoded] == [8] * 4
  assert max(max(ids) for ids in decoded) < VOCAB


# ----------------------------------------------------------------------------- seeds and batching
def test_same_seed_same_text_different_seed_differs(make_model, tok):
  model = _model(make_model)
  kw = dict(max_new_tokens=16, temperature=2.0, top_p=0.99, stop_at_eos=False)
  a = gen.generate(model, tok, ['Hello'], seed=0, **kw)
  assert gen.generate(model, tok, ['Hello'], seed=0, **kw) == a
  b = gen.generate(model, tok, ['Hello'], seed=1, **kw)
  assert a != b


def test_batch_equals_one_at_a_time(make_model, tok):
  model = _model(make_model)
  prompts = ['To be, or not to be', 'Hi', 'ROMEO:']
  greedy = gen.generate(model, tok, prompts, max_new_tokens=10, temperature=0.0)
  assert greedy == [gen.generate(model, tok, [p], max_new_tokens=10, temperature=0.0)[0] for p in prompts]
  for p, text in zip(prompts, greedy):  # and equal to the slow reference, cut at its first EOS
    ref = _reference_greedy(model, tok.encode(p), 10)
    assert tok.encode(text) == (ref[:ref.index(tok.eos_id)] if tok.eos_id in ref else ref)
  # sampling: each row's key depends on (seed, prompt, copy), not on its batch neighbours
  kw = dict(max_new_tokens=10, temperature=1.5, top_k=20, seed=3)
  batch = gen.generate(model, tok, prompts, **kw)
  assert batch == [gen.generate(model, tok, [p], **kw)[0] for p in prompts]


def test_num_samples_copies_in_order_and_differ(make_model, tok):
  model = _model(make_model)
  kw = dict(max_new_tokens=12, temperature=2.0, seed=5, stop_at_eos=False)
  out = gen.generate(model, tok, ['ab', 'xyz'], num_samples=2, **kw)
  assert len(out) == 4
  assert out[0] != out[1] and out[2] != out[3]
  assert out[2:] == gen.generate(model, tok, ['xyz'], num_samples=2, **kw)
  # listing a prompt twice is the same as num_samples=2
  assert gen.generate(model, tok, ['ab', 'ab'], **kw) == out[:2]


def test_no_recompile_for_new_sampling_values_or_weights(make_model, tok):
  model = _model(make_model)
  gen.generate(model, tok, ['abc'], max_new_tokens=5, temperature=0.7, top_p=0.9)
  n = gen._generate_jit._cache_size()
  gen.generate(model, tok, ['abcdef'], max_new_tokens=9, temperature=1.3, top_p=0.5, top_k=7, seed=4)
  gen.generate(_model(make_model, seed=1), tok, ['xy'], max_new_tokens=7, temperature=0.5, top_p=0.8)
  assert gen._generate_jit._cache_size() == n


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def no_compile(monkeypatch):
  def fail(*a, **k):
    raise AssertionError('compiled/ran before validating the input')
  monkeypatch.setattr(gen, '_generate_jit', fail)


@pytest.mark.parametrize('kwargs,match', [
    (dict(prompts=['']), 'zero tokens'),
    (dict(prompts=[]), 'at least one prompt'),
    (dict(top_p=0.0), 'top_p'),
    (dict(top_p=1.5), 'top_p'),
    (dict(top_k=-1), 'top_k'),
    (dict(temperature=-0.1), 'temperature'),
    (dict(num_samples=0), 'num_samples'),
    (dict(max_new_tokens=-1), 'max_new_tokens'),
    (dict(prompts=['x' * 65]), r'65 tokens .* seq_len=64'),
    (dict(add_bos=True), 'BOS'),
])
def test_bad_input_raises_before_compiling(make_model, tok, no_compile, kwargs, match):
  model = _model(make_model)
  kw = dict(prompts=['abc'], max_new_tokens=4)
  kw.update(kwargs)
  with pytest.raises(ValueError, match=match):
    gen.generate(model, tok, kw.pop('prompts'), **kw)


def test_learned_positions_prompt_plus_new_tokens_must_fit(make_model, tok, no_compile):
  model = _model(make_model, position='learned', seq_len=32)
  with pytest.raises(ValueError, match=r'20 tokens \+ max_new_tokens=13 = 33 exceeds seq_len=32'):
    gen.generate(model, tok, ['a' * 20], max_new_tokens=13)
  model = _model(make_model, position='learned', seq_len=20, position_table=32)   # the table, not seq_len
  with pytest.raises(ValueError, match=r'20 tokens \+ max_new_tokens=13 = 33 exceeds model.position_table=32.*'
                                       r'lower max_new_tokens to 12'):
    gen.generate(model, tok, ['a' * 20], max_new_tokens=13)


def test_generate_tokens_bad_input(make_model, no_compile):
  model = _model(make_model)
  p = np.zeros((2, 5), np.int32)
  with pytest.raises(ValueError, match='prompt lengths'):
    gen.generate_tokens(model, p, [5, 0], max_new_tokens=3, temperature=0.0)
  with pytest.raises(ValueError, match='needs rng'):
    gen.generate_tokens(model, p, [5, 5], max_new_tokens=3, temperature=1.0)
  with pytest.raises(ValueError, match='vocab'):
    gen.generate_tokens(model, p + VOCAB, [5, 5], max_new_tokens=3, temperature=0.0)


# ----------------------------------------------------------------------------- CLI glue
def test_run_sample_prints_prompt_and_continuation(make_model, tok, monkeypatch):
  model = _model(make_model)
  cfg = ml_collections.ConfigDict({'sample': {'prompts': ('ab',), 'max_new_tokens': 6, 'temperature': 0.0,
                                              'top_k': 0, 'top_p': 1.0, 'seed': 0}})
  calls = []

  def load_for_inference(workdir, step=None):
    calls.append((workdir, step))
    return model, cfg, tok

  fake = types.ModuleType('scaling.inference.run')
  fake.load_for_inference = load_for_inference
  monkeypatch.setitem(sys.modules, 'scaling.inference.run', fake)
  parser = gen.add_sample_args(argparse.ArgumentParser())
  args = parser.parse_args(['--workdir', '/w', '--prompt', 'Hi', '--prompt', 'yo', '--step', '7'])
  out = io.StringIO()
  assert gen.run_sample(args, out=out) == 0
  assert calls == [('/w', 7)]
  # greedy (the config's temperature 0) and 6 tokens (its max_new_tokens): the reference full-forward loop
  hi, yo = (_reference_text(model, tok, p, 6) for p in ('Hi', 'yo'))
  assert out.getvalue() == f'--- prompt 0 ---\nHi{hi}\n--- prompt 1 ---\nyo{yo}\n'
  # no --prompt: the config's prompts and settings
  out = io.StringIO()
  assert gen.run_sample(parser.parse_args(['--workdir', '/w']), out=out) == 0
  assert out.getvalue() == f'--- prompt 0 ---\nab{_reference_text(model, tok, "ab", 6)}\n'
  with pytest.raises(SystemExit):
    parser.parse_args(['--prompt', 'x'])  # --workdir is required
