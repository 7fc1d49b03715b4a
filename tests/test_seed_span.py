"""The same validation bytes for every tokenizer (scaling/analysis/seed/span.py): the span's choice, the windows, the
bits against a loop, and the same text from data directories prepared with different tokenizers."""

import hashlib
import json
import math
import os

import numpy as np
import pytest

from scaling.analysis.seed import span


def test_choose_orders_by_the_span_hash_and_caps_each_document():
  docs = [{'name': f'd{i}', 'bytes': b, 'sha256': '-'} for i, b in enumerate((5000, 100, 3000, 10, 9000))]
  order = sorted(docs, key=lambda d: hashlib.sha256(('span:' + d['name']).encode()).digest())
  got = span.choose(docs, span_bytes=4200, doc_cap=4096)
  want, total = [], 0
  for d in order:                               # by hand: take min(bytes, 4096) until 4200 bytes are reached
    if total >= 4200:
      break
    want.append((d['name'], min(d['bytes'], 4096)))
    total += min(d['bytes'], 4096)
  assert got == want and sum(b for _, b in got) >= 4200
  with pytest.raises(span.SpanError, match='fewer than the span'):
    span.choose(docs, span_bytes=10 ** 6)


def test_cut_keeps_whole_characters():
  assert span.cut('aé b', 2) == 'a'           # 'é' is two bytes: cut in half, it is dropped
  assert span.cut('aé b', 3) == 'aé'
  assert span.cut('abc', 10) == 'abc'


def test_windows_by_hand():
  x, y, m = span.windows([[5, 6, 7, 8, 9], [4]], eos=1, T=2)
  np.testing.assert_array_equal(x, [[1, 5], [6, 7], [8, 0], [1, 0]])
  np.testing.assert_array_equal(y, [[5, 6], [7, 8], [9, 0], [4, 0]])
  np.testing.assert_array_equal(m, [[1, 1], [1, 1], [1, 0], [1, 0]])


def test_span_bits_against_a_loop():
  """A fake model whose NLL depends on the target and on its position in the window: the tiling shows."""
  T = 3
  docs = [[7, 3, 9, 2, 2, 8, 1], [4, 4], [6]]
  nll_fn = lambda x, y: 0.1 * (np.arange(T)[None] + 1) + 0.01 * y
  x, y, m = span.windows(docs, eos=0, T=T)
  got = span.span_bits(nll_fn, x, y, m, batch_size=2)
  want = sum(0.1 * (i % T + 1) + 0.01 * tok for ids in docs for i, tok in enumerate(ids)) / math.log(2)
  assert got == pytest.approx(want, rel=1e-12)


def test_model_nll_fn_matches_the_model(make_model):
  import jax
  import jax.numpy as jnp
  model = make_model(seq_len=8)
  rng = np.random.default_rng(0)
  x = rng.integers(0, 50, (2, 8)).astype(np.int32)
  y = rng.integers(0, 50, (2, 8)).astype(np.int32)
  logp = jax.nn.log_softmax(model(jnp.asarray(x)).astype(jnp.float32), axis=-1)
  want = -np.take_along_axis(np.asarray(logp), y[..., None], axis=-1)[..., 0]
  np.testing.assert_allclose(span.model_nll_fn(model)(x, y), want, rtol=1e-5, atol=1e-6)


def _corpus(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  rng = np.random.default_rng(0)
  for i in range(40):
    (corpus / f'd{i:02d}.txt').write_text('é ' + ' '.join(f'w{rng.integers(50)}' for _ in range(300 + 9 * i)))
  return corpus


def test_every_tokenizer_gets_the_same_text(tmp_path):
  import ml_collections

  from scaling.data.prepare import prepare
  corpus = _corpus(tmp_path)
  texts = {}
  for tok in ('byte', 'char'):
    cfg = ml_collections.ConfigDict(dict(corpus=str(corpus / '*.txt'), text_field='text', tokenizer=tok,
                                         vocab_size=4096, data_dir=str(tmp_path / f'data-{tok}'), val_fraction=0.25,
                                         document_masking=False, num_workers=0, train_tokens=0))
    summ = prepare(cfg, verbose=False)
    texts[tok] = span.span_texts(cfg, summ['data_dir'], span_bytes=3000, doc_cap=1000)
  assert texts['byte'] == texts['char'] and span.digest(texts['byte']) == span.digest(texts['char'])
  assert sum(len(t.encode()) for t in texts['byte']) >= 3000
  # each text is the start of a validation file, cut at a character boundary
  for t in texts['byte']:
    assert any(open(corpus / f, encoding='utf-8').read().startswith(t) for f in os.listdir(corpus))
  # a corpus file changed after prepare is not the text prepare recorded: a clear error
  with open(os.path.join(summ['data_dir'], 'split.json'), encoding='utf-8') as f:
    name = span.choose(json.load(f)['val_documents'], 3000, 1000)[0][0]
  (corpus / name).write_text('something else')
  with pytest.raises(span.SpanError, match='not the text prepare'):
    span.span_texts(cfg, summ['data_dir'], span_bytes=3000, doc_cap=1000)
