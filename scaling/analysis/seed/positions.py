"""The seed study's per-position measurements: bits per byte by position in long documents
(the longer-context and RoPE claims), from a model's windowed NLL."""

from __future__ import annotations

import jax.numpy as jnp

from scaling.train.evaluate import EvalError, check_positions_cover


# ----------------------------------------------------------------------------- per-position losses
# The seed study's length and context claims (scaling/analysis/seed/study.py): the same tokens of long validation
# documents scored with windows of different lengths, and the loss bucketed by position in the document.
def long_documents(data_dir, length: int, max_docs: int = 64, split: str = 'val'):
  """int32 [N, length + 1]: the first length + 1 tokens of each document of `split` that has that many
  (in corpus order, at most max_docs); an empty [0, length + 1] array when none is that long."""
  import numpy as np

  from scaling.data.shards import open_split
  s = open_split(str(data_dir), split, verify=False)
  off = np.asarray(s.doc_offsets)
  rows = [np.asarray(s.tokens[a:a + length + 1], np.int32) for a, b in zip(off[:-1], off[1:])
          if b - a >= length + 1][:max_docs]
  return np.stack(rows) if rows else np.zeros((0, length + 1), np.int32)


def window_nll(model, docs_NP1, window: int, batch_size: int = 8):
  """float64 [N, P]: the NLL (nats) of target p of each document row, scored by windows of `window` tokens
  that tile the row from its start (target p sees the p mod window tokens of its own window before it).

  P = docs_NP1.shape[1] - 1 must be a multiple of window; positions must cover the window
  (check_positions_cover: learned positions end at their table).
  """
  import jax
  import numpy as np
  from flax import nnx
  docs = np.asarray(docs_NP1, np.int32)
  N, P = docs.shape[0], docs.shape[1] - 1
  if window <= 0 or P % window:
    raise EvalError(f'window={window} must divide the scored length {P}')
  check_positions_cover(model.dims, window, what='window')
  graphdef, state = nnx.split(model)

  @jax.jit
  def nll(state, inputs_BT, targets_BT):
    logits_BTV = nnx.merge(graphdef, state)(inputs_BT).astype(jnp.float32)
    logp_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
    return -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]

  k = P // window
  inputs = docs[:, :-1].reshape(N * k, window)
  targets = docs[:, 1:].reshape(N * k, window)
  out = np.zeros((N * k, window))
  for i in range(0, N * k, batch_size):
    b = slice(i, min(i + batch_size, N * k))
    pad = batch_size - (b.stop - b.start)   # one compiled shape: the last batch is padded
    x = np.pad(inputs[b], ((0, pad), (0, 0)))
    y = np.pad(targets[b], ((0, pad), (0, 0)))
    out[b] = np.asarray(nll(state, jnp.asarray(x), jnp.asarray(y)))[:b.stop - b.start]
  return out.reshape(N, P)


def bucket_bpb(nll_NP, buckets, bytes_per_token: float) -> dict:
  """{(a, b): bits per byte of the targets at document positions a <= p < b}, bytes at the split's mean
  bytes/token (exact for comparisons between models of one tokenizer). Buckets past P are left out."""
  import math

  import numpy as np
  nll = np.asarray(nll_NP)
  out = {}
  for a, b in buckets:
    if b <= nll.shape[1]:
      out[(a, b)] = float(nll[:, a:b].mean()) / math.log(2) / bytes_per_token
  return out
