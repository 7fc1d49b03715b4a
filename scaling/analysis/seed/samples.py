"""The sampling claim's measurement: generated continuations beside the human ones, per prompt.

Prompts are the first PROMPT_LEN tokens of validation documents that hold at least PROMPT_LEN + NEW_TOKENS
tokens (evenly spaced over those documents, in corpus order); the human continuation is the document's next
NEW_TOKENS tokens. Each decoding mode (greedy, top-k 40, top-p 0.9, untruncated T = 1) continues every
prompt by NEW_TOKENS tokens. Per continuation (generated or human) this records

  rep4        1 - distinct 4-grams / 4-grams within the continuation (Welleck et al. 2019's seq-rep-4)
  distinct2/3 distinct n-grams / n-grams within the continuation (Li et al. 2016's distinct-n, taken per
              continuation so that prompts can be resampled: pooled over continuations, a prompt drawn twice
              would count its own n-grams as repeats)
  bits, bytes the judge's NLL of the continuation given its prompt (bits) and its decoded UTF-8 bytes

into claims/samples = {'judge': run hash, 'stats': {mode or 'human': {stat: [one value per prompt]}}};
scaling/analysis/seed/decoding.py measures how far each mode sits from the human text. jax is imported where
it is used.
"""

from __future__ import annotations

import math

import numpy as np

from scaling.analysis.seed import sample_stats as st

PROMPTS, PROMPT_LEN, NEW_TOKENS = 32, 32, 128
MODES = {'greedy': (0.0, 0, 1.0), 'topk40': (1.0, 40, 1.0), 'topp0.9': (1.0, 0, 0.9), 'pure': (1.0, 0, 1.0)}
HUMAN = 'human'
SAMPLES = 'claims/samples'


def document_prompts(doc_offsets, tokens, n: int = PROMPTS, prompt_len: int = PROMPT_LEN,
                     new_tokens: int = NEW_TOKENS) -> tuple[np.ndarray, np.ndarray]:
  """(prompts int32 [n, prompt_len], human continuations int32 [n, new_tokens]) from the documents
  tokens[off[k]:off[k+1]] (each ending in its EOS) that hold prompt_len + new_tokens tokens before it."""
  off = np.asarray(doc_offsets)
  need = prompt_len + new_tokens
  ok = [int(a) for a, b in zip(off[:-1], off[1:]) if b - a - 1 >= need]
  if len(ok) < n:
    raise ValueError(f'only {len(ok)} validation documents hold {need} tokens; {n} prompts need as many')
  starts = [ok[i] for i in np.linspace(0, len(ok) - 1, n).round().astype(int)]
  rows = np.stack([np.asarray(tokens[a:a + need], np.int32) for a in starts])
  return rows[:, :prompt_len], rows[:, prompt_len:]


def text_stats(conts) -> dict[str, list]:
  """rep4, distinct2, distinct3 of each continuation (lists of ids)."""
  return {'rep4': [st.rep_n(c, 4) for c in conts], 'distinct2': [st.distinct_n([c], 2) for c in conts],
          'distinct3': [st.distinct_n([c], 3) for c in conts]}


def judged(judge, tokenizer, prompts, conts) -> dict[str, list]:
  """bits (the judge's NLL of each continuation given its prompt) and bytes (of its decoded text)."""
  nll = st.continuation_nll(judge, [list(map(int, p)) for p in prompts], conts)
  return {'bits': [v / math.log(2) for v in nll],
          'bytes': [len(tokenizer.decode(c).encode('utf-8')) for c in conts]}


def sample_records(model, tokenizer, judge, split, seed: int = 0) -> dict:
  """claims/samples of one model (the module docstring); `split` a shards.Split of the validation data."""
  import jax

  from scaling.inference.generate import generate_tokens
  prompts, human = document_prompts(split.doc_offsets, split.tokens)
  lens = np.full((prompts.shape[0],), PROMPT_LEN, np.int32)
  stats = {}
  for mode, (temp, k, p) in MODES.items():
    toks, _ = generate_tokens(model, prompts, lens, max_new_tokens=NEW_TOKENS, temperature=temp, top_k=k,
                              top_p=p, rng=jax.random.key(seed), eos_id=None,
                              vocab_limit=min(int(tokenizer.vocab_size), model.dims.vocab_size))
    conts = [list(map(int, row)) for row in toks]
    stats[mode] = {**text_stats(conts), **judged(judge, tokenizer, prompts, conts)}
  conts = [list(map(int, row)) for row in human]
  stats[HUMAN] = {**text_stats(conts), **judged(judge, tokenizer, prompts, conts)}
  return {'stats': stats, 'prompts': int(prompts.shape[0]), 'new_tokens': NEW_TOKENS}
