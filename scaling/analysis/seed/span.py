"""The same validation bytes for every tokenizer: bits per byte of a fixed span of the validation text.

A run's eval/bpb is its mean loss over `eval_batches` windows of its own token stream times that split's mean
bytes per token: the char and byte arms of configs/sweeps/seed_upgrades.py were scored on 49k bytes of
validation text, the BPE arms on 124k, not the same bytes. This module scores every arm on one text:

  * the span (`choose`): validation documents of split.json (the names, sizes and text hashes prepare
    recorded; the split is by document name, so it is the same for every tokenizer of one corpus), taken in
    the order of sha256('span:' + name), each cut to its first DOC_CAP bytes (at a character boundary),
    until SPAN_BYTES are reached. `span_texts` reads their text from the corpus and checks each against
    its recorded sha256; `digest` identifies the span, so rows scored on different text can be told apart;
  * the scoring (`windows`, `span_bits`): each document as [EOS] + its tokens (a document start, as in
    the training stream), tiled by windows of the model's training context T from its start (each window
    starts without earlier context, as training does); every token of the text is a target once, the EOS
    only an input. bits = the summed NLL / ln 2, bpb = bits / the span's UTF-8 bytes. What a window of T
    tokens holds (646 bytes with BPE-4096, 256 with bytes) is part of what the tokenizer buys.

A char tokenizer maps characters unseen in training to <unk>: predicting that one id costs fewer bits than
the character would, so `claims/span_unk` counts them (0 for byte and byte-fallback BPE).
`span_bpb` runs the model (jax, imported where it is called); the rest is numpy and the standard library.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import numpy as np

SPAN_BYTES = 1 << 17          # 131072 bytes: more than the BPE arms' own eval slice
DOC_CAP = 1 << 12             # at most 4096 bytes of one document: >= 32 documents
SPAN_BPB = 'claims/span_bpb'


class SpanError(ValueError):
  """The validation span cannot be built (no split record, a text that is not the one prepare recorded)."""


def _order(name: str) -> bytes:
  return hashlib.sha256(('span:' + name).encode('utf-8')).digest()


def choose(val_documents: Sequence[dict], span_bytes: int = SPAN_BYTES,
           doc_cap: int = DOC_CAP) -> list[tuple[str, int]]:
  """(name, bytes to take) of the span's documents from split.json's val_documents (name, bytes, sha256)."""
  if span_bytes <= 0 or doc_cap <= 0:
    raise ValueError(f'span_bytes and doc_cap must be > 0, got {span_bytes}, {doc_cap}')
  out, total = [], 0
  for d in sorted(val_documents, key=lambda d: _order(d['name'])):
    if total >= span_bytes:
      break
    take = min(int(d['bytes']), doc_cap)
    if take > 0:
      out.append((d['name'], take))
      total += take
  if total < span_bytes:
    raise SpanError(f'the validation split holds {total} bytes, fewer than the span\'s {span_bytes}: '
                    'lower SPAN_BYTES or raise data.val_fraction')
  return out


def cut(text: str, n_bytes: int) -> str:
  """The text's first n_bytes UTF-8 bytes, less a character cut in two at the end."""
  return text.encode('utf-8')[:n_bytes].decode('utf-8', errors='ignore')


def digest(texts: Sequence[str]) -> str:
  h = hashlib.sha256()
  for t in texts:
    h.update(hashlib.sha256(t.encode('utf-8')).digest())
  return h.hexdigest()[:16]


def read_texts(sources, names: set[str]) -> dict[str, str]:
  """{name: text} of the named documents; text-file sources open only those files."""
  from scaling.data.sources import TextFiles
  out = {}
  for src in sources:
    if isinstance(src, TextFiles):
      pick = [(n, p) for n, p in zip(src.names(), src.paths) if n in names]
      src = TextFiles([p for _, p in pick], [n for n, _ in pick], gutenberg=src.gutenberg)
    for doc in src:
      if doc.name in names:
        out[doc.name] = doc.text
  return out


def span_texts(data_cfg, data_dir: str, span_bytes: int = SPAN_BYTES, doc_cap: int = DOC_CAP) -> list[str]:
  """The span's texts for a prepared data directory (module docstring), each checked against split.json."""
  from scaling.data import corpus as corpus_lib
  from scaling.data.shards import read_split
  split = read_split(data_dir)
  if not split or not split.get('val_documents'):
    raise SpanError(f'{data_dir} has no split.json with validation documents: re-run `scaling prepare`')
  picks = choose(split['val_documents'], span_bytes, doc_cap)
  sha = {d['name']: d['sha256'] for d in split['val_documents']}
  texts = read_texts(corpus_lib.resolve_corpus(data_cfg.corpus, data_cfg.get('text_field', 'text')),
                     {n for n, _ in picks})
  out = []
  for name, take in picks:
    text = texts.get(name)
    if text is None or hashlib.sha256(text.encode('utf-8')).hexdigest() != sha[name]:
      raise SpanError(f'validation document {name!r} is missing from the corpus or is not the text prepare '
                      f'recorded in {data_dir}/split.json: re-run `scaling prepare` on this corpus')
    out.append(cut(text, take))
  return out


def windows(docs_ids: Sequence[Sequence[int]], eos: int, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(inputs, targets, mask) int32/int32/float64 [W, T]: each document as [eos] + ids tiled by windows of T
  inputs from its start; mask 1 on the targets that are the document's tokens, 0 on padding."""
  if T <= 0:
    raise ValueError(f'the window must be > 0 tokens, got {T}')
  rows_in, rows_tg, rows_m = [], [], []
  for ids in docs_ids:
    seq = np.concatenate([[eos], np.asarray(ids, np.int64)])
    n = len(seq) - 1
    for a in range(0, n, T):
      k = min(T, n - a)
      x, y, m = np.zeros(T, np.int32), np.zeros(T, np.int32), np.zeros(T)
      x[:k], y[:k], m[:k] = seq[a:a + k], seq[a + 1:a + 1 + k], 1.0
      rows_in.append(x)
      rows_tg.append(y)
      rows_m.append(m)
  if not rows_in:
    return np.zeros((0, T), np.int32), np.zeros((0, T), np.int32), np.zeros((0, T))
  return np.stack(rows_in), np.stack(rows_tg), np.stack(rows_m)


def span_bits(nll_fn: Callable, inputs, targets, mask, batch_size: int = 8) -> float:
  """Summed NLL over the masked targets, in bits; nll_fn(inputs_BT, targets_BT) -> nats [B, T], called on
  batches of exactly batch_size rows (the last one padded)."""
  total = 0.0
  for i in range(0, len(inputs), batch_size):
    sl = slice(i, min(i + batch_size, len(inputs)))
    pad = batch_size - (sl.stop - sl.start)
    x = np.pad(inputs[sl], ((0, pad), (0, 0)))
    y = np.pad(targets[sl], ((0, pad), (0, 0)))
    nll = np.asarray(nll_fn(x, y), np.float64)[:sl.stop - sl.start]
    total += float((nll * mask[sl]).sum())
  return total / math.log(2)


def model_nll_fn(model) -> Callable:
  """nll_fn for span_bits from a Transformer (one compiled shape)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  graphdef, state = nnx.split(model)

  @jax.jit
  def nll(state, x, y):
    logp = jax.nn.log_softmax(nnx.merge(graphdef, state)(x).astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]

  return lambda x, y: np.asarray(nll(state, jnp.asarray(x), jnp.asarray(y)))


def span_bpb(model, tokenizer, texts: Sequence[str], T: int) -> dict:
  """The claims/span_* measurements of one model over the span's texts, windows of T tokens."""
  from scaling.train.evaluate import check_positions_cover
  check_positions_cover(model.dims, T, what='span window')
  ids = [tokenizer.encode(t) for t in texts]
  eos = tokenizer.eos_id if tokenizer.eos_id is not None else 0
  x, y, m = windows(ids, eos, T)
  n_bytes = sum(len(t.encode('utf-8')) for t in texts)
  unk = getattr(tokenizer, 'unk_id', None)
  return {SPAN_BPB: span_bits(model_nll_fn(model), x, y, m) / n_bytes, 'claims/span_bytes': n_bytes,
          'claims/span_docs': len(texts), 'claims/span_tokens': int(sum(len(i) for i in ids)),
          'claims/span_digest': digest(texts),
          'claims/span_unk': int(sum(list(i).count(unk) for i in ids)) if unk is not None else 0}
