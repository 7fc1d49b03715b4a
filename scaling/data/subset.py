"""A capped training split: `data.train_tokens = N` trains on a fixed N-token slice of the corpus.

For the seed study's dataset claim (configs/sweeps/seed_upgrades.py): equal training tokens drawn from a
small slice repeated k times against the whole corpus seen once (Muennighoff et al. 2023), with
everything else equal. So the slice is derived from the whole corpus's prepared directory, not prepared
on its own: the same tokenizer (trained on the whole training split), the same validation split (same
split_digest), and a train split of exactly N tokens: whole documents in a fixed pseudo-random order
(seed 0, so every part of the corpus is represented, not the first parts in corpus order), the last one
cut to make N. It lives beside the full directory as `<data_dir>-train<N>` and is rebuilt only when the
full directory changed (its content digest is recorded).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from scaling.base.files import atomic_write_text
from scaling.data import shards
from scaling.data.tokenizer import DataError

SUBSET_JSON = 'subset.json'
_SHARED = ('val.bin', 'val.docs.npy', shards.SPLIT_JSON, 'tokenizer.json', 'tokenizer.model', 'tokenizer.tiktoken')


def document_order(num_docs: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).permutation(num_docs)


def subset_dir(data_dir: str, tokens: int) -> str:
  return f'{data_dir.rstrip(os.sep)}-train{int(tokens)}'


def _write_train(src: shards.Split, tmp: str, tokens: int) -> dict:
  off = np.asarray(src.doc_offsets)
  w = shards.ShardWriter(tmp, 'train', np.dtype(src.tokens.dtype))
  left = tokens
  try:
    for d in document_order(len(off) - 1):
      if left <= 0:
        break
      ids = np.asarray(src.tokens[off[d]:off[d + 1]])[:left]
      w.add(ids, int(round(ids.size * src.bytes_per_token)))   # bytes at the split's mean bytes/token
      left -= ids.size
  except BaseException:
    w.abort()
    raise
  return w.close()


def _current(out: str, want: dict) -> bool:
  try:
    with open(os.path.join(out, SUBSET_JSON), encoding='utf-8') as f:
      return json.load(f) == want
  except (OSError, json.JSONDecodeError):
    return False


def with_train_subset(full: dict, tokens: int, log=lambda m: None) -> dict:
  """The summary of `full`'s (prepare's result) directory with its train split cut to `tokens` tokens."""
  src_dir = full['data_dir']
  if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 2:
    raise DataError(f'data.train_tokens={tokens!r}: give an integer >= 2 (0 = the whole training split)')
  if tokens > full['train_tokens']:
    raise DataError(f'data.train_tokens={tokens} exceeds the training split of {src_dir} '
                    f'({full["train_tokens"]} tokens); use at most that, or 0 for all of it')
  out = subset_dir(src_dir, tokens)
  want = {'source': os.path.basename(src_dir), 'content_digest': full.get('content_digest'),
          'train_tokens': tokens, 'order': 'numpy default_rng(0).permutation of the documents'}
  if not _current(out, want):
    log(f'prepare: a {tokens}-token slice of the training split -> {out}')
    with shards.staged_dir(out) as tmp:
      for name in _SHARED:
        if os.path.exists(os.path.join(src_dir, name)):
          shutil.copyfile(os.path.join(src_dir, name), os.path.join(tmp, name))
      meta = _write_train(shards.open_split(src_dir, 'train', verify=False), tmp, tokens)
      index = shards.read_index(src_dir)
      index['splits']['train'] = meta
      atomic_write_text(os.path.join(tmp, shards.INDEX_JSON), json.dumps(index, indent=1))
      with open(os.path.join(src_dir, 'summary.json'), encoding='utf-8') as f:
        summ = json.load(f)
      summ.update(train_tokens=meta['num_tokens'], train_docs=meta['num_docs'], train_bytes=meta['text_bytes'],
                  train_subset=want)
      atomic_write_text(os.path.join(tmp, 'summary.json'), json.dumps(summ, indent=1, ensure_ascii=False))
      atomic_write_text(os.path.join(tmp, SUBSET_JSON), json.dumps(want, indent=1))
  with open(os.path.join(out, 'summary.json'), encoding='utf-8') as f:
    summ = json.load(f)
  keep = {k: full[k] for k in ('fingerprint', 'corpus', 'corpus_root', 'skipped') if k in full}
  return dict(summ, **keep, data_dir=out, tokenizer_path=os.path.join(out, 'tokenizer.json'))
