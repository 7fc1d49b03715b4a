"""Statistics of generated text: repetition, diversity, and its likelihood under another model.

For the seed study's sampling claim (scaling/analysis/seed/study.py): for one model, samples drawn greedily,
with top-k, with top-p and untruncated (temperature 1), compared by

  rep_n(ids)          1 - distinct n-grams / n-grams within one sample (Welleck et al. 2019's seq-rep-n):
                      0 for a sample without a repeated n-gram, -> 1 for a loop
  distinct_n(samples) distinct n-grams / n-grams over all samples together (Li et al. 2016)
  continuation_bpb    bits per byte of each continuation under a judge model (a larger model trained on
                      the same corpus), conditioned on its prompt: how plausible the text is

n-grams are over token ids (one tokenizer across the compared samples).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def ngrams(ids: Sequence[int], n: int) -> list[tuple]:
  if n < 1:
    raise ValueError(f'n must be >= 1, got {n}')
  ids = list(ids)
  return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def rep_n(ids: Sequence[int], n: int = 4) -> float | None:
  """1 - |distinct n-grams| / |n-grams| of one sample; None when it has no n-gram."""
  g = ngrams(ids, n)
  return 1.0 - len(set(g)) / len(g) if g else None


def distinct_n(samples: Sequence[Sequence[int]], n: int = 2) -> float | None:
  """|distinct n-grams| / |n-grams| over all samples pooled; None when there is no n-gram."""
  g = [x for s in samples for x in ngrams(s, n)]
  return len(set(g)) / len(g) if g else None


def continuation_nll(model, prompts: Sequence[Sequence[int]], conts: Sequence[Sequence[int]]) -> list[float]:
  """Summed NLL (nats) of each continuation's tokens under `model`, given its prompt (one forward per row).

  Rows are right-padded to one length; a prompt plus continuation longer than the model's positions cover
  is an error (evaluate.check_positions_cover).
  """
  import jax
  import jax.numpy as jnp

  from scaling.train.evaluate import check_positions_cover
  if len(prompts) != len(conts):
    raise ValueError(f'{len(prompts)} prompts but {len(conts)} continuations')
  rows = [list(p) + list(c) for p, c in zip(prompts, conts)]
  T = max(len(r) for r in rows) - 1
  check_positions_cover(model.dims, T, what='prompt + continuation')
  x = np.zeros((len(rows), T), np.int32)
  y = np.zeros((len(rows), T), np.int32)
  m = np.zeros((len(rows), T), np.float32)
  for i, (p, r) in enumerate(zip(prompts, rows)):
    x[i, :len(r) - 1], y[i, :len(r) - 1] = r[:-1], r[1:]
    m[i, len(p) - 1:len(r) - 1] = 1.0     # targets that are continuation tokens
  logits = model(jnp.asarray(x)).astype(jnp.float32)
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), jnp.asarray(y)[..., None], -1)[..., 0]
  return [float(v) for v in np.asarray((nll * jnp.asarray(m)).sum(-1))]


def bits_per_byte(nll_nats: Sequence[float], texts: Sequence[str]) -> float | None:
  """Pooled bits per UTF-8 byte: sum of NLLs / ln 2 / sum of bytes; None without bytes."""
  n = sum(len(t.encode('utf-8')) for t in texts)
  return float(sum(nll_nats)) / math.log(2) / n if n else None
