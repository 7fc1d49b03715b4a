"""Text generation with a KV cache and temperature / top-k / top-p sampling.

Three layers, lowest first:

  filter_logits(logits_BV, temperature=, top_k=, top_p=)   the sampling filter (pure, testable)
  generate_tokens(model, prompt_ids_BT, prompt_lens_B, ...)  token ids in, token ids out; one jit
  generate(model, tokenizer, prompts, ...)                   strings in, continuations out (notebooks)

plus the CLI glue `add_sample_args(parser)` / `run_sample(args)` for `scaling sample`.

How decoding runs. The prompts are right-padded into one [B, T] batch and
prefilled once, writing their keys/values into a cache of
S = T + max_new_tokens slots (bucketed, see below), not the model's maximum.
Then ONE `jax.lax.while_loop` samples a token per row from the last logits and
feeds it back at that row's own position len_b, len_b + 1, ...; the model's
cached attention masks every slot past the query position, so the pad
keys/values a short prompt left behind are never seen (they are overwritten
before they become visible). The loop stops after max_new_tokens steps or as
soon as every row has produced EOS. The model enters the jitted function as an
argument (`nnx.split` -> graphdef (static) + state (traced)), so new weights
never trigger a recompile.

Compiles. The compiled function is cached by jax.jit on its static arguments
and shapes: the model graph, the batch size, the prompt width and the output
width (both rounded up to a multiple of `BUCKET` tokens), the cache length, the
EOS id and the sampling mode (greedy / plain / filtered). temperature, top_k,
top_p and the actual max_new_tokens are traced values: changing them does not
recompile.

Sampling. temperature 0 is greedy argmax. Otherwise the logits are divided by
the temperature, top_k > 0 keeps the k most likely tokens (ties broken towards
the lower token id), then top_p < 1 keeps the smallest set of most likely
tokens whose probability (renormalised after top-k) reaches p, always at least
the most likely token; `jax.random.categorical` draws from what is left.

Randomness. Every row has its own key and step i draws with
fold_in(row_key, i), so a row's sample does not depend on which other rows
share the batch. `generate` derives the row key from (seed, prompt text, which
copy of that prompt this is within the call): the same prompt and seed give
the same text alone or in any batch, `num_samples` copies differ from each
other, and listing a prompt twice is the same as num_samples=2.
`generate_tokens` given one key uses fold_in(key, row index) (depends on the
row's place in the batch); given B keys it uses them as the row keys.

Lengths. A prompt longer than model.dims.seq_len (the training context) is an
error for every position scheme. With learned positions the prompt plus the new
tokens must also fit in the position table (model.position_table rows, else
seq_len: there is no position embedding beyond it); rope / none may generate
past seq_len (quality degrades: the model never saw
those distances). All such checks run on the host before anything compiles.
The cache holds every position (no ring buffer, also with a sliding window).
The model's vocab may be padded past the tokenizer's: `generate` never samples
ids >= tokenizer.vocab_size (`vocab_limit`).

Cost. Decoding reads the whole cache every step (work ~ cache length:
`attention.cached_attention`, a masked softmax over the cache). The prefill
starts at position 0 and runs the model's fast causal kernel
(`model.attention`, as in training) over the prompt, only writing its
keys/values into the cache: about one uncached forward of the padded prompt
(figures in BENCHMARKS.md, "Decoding with a KV cache").

BOS. Nothing is prepended by default: the training stream (scaling/data/prepare.py)
is documents each followed by EOS, with no BOS anywhere, so a BOS embedding was
never trained. `add_bos=True` prepends tokenizer.bos_id (an error when it has
none). A prompt that encodes to zero tokens is a ValueError.
"""

from __future__ import annotations

import argparse
import functools
import numbers
import sys
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.config.load import position_rows
from scaling.train.evaluate import PositionsError, positions_cover

# Prompt width and output width are rounded up to a multiple of this, so prompts
# of nearby lengths and nearby max_new_tokens share one compiled function.
BUCKET = 32


# ----------------------------------------------------------------------------- checks
def check_sampling_args(*, temperature: float, top_k: int, top_p: float) -> None:
  """ValueError for sampling settings outside their domain."""
  if not isinstance(temperature, numbers.Real) or not temperature >= 0:
    raise ValueError(f'temperature must be >= 0 (0 = greedy argmax), got {temperature!r}')
  if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 0:
    raise ValueError(f'top_k must be an integer >= 0 (0 = no top-k filter), got {top_k!r}')
  if not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:
    raise ValueError(f'top_p must be in (0, 1] (1 = no nucleus filter), got {top_p!r}')


def check_max_new_tokens(max_new_tokens) -> None:
  if not isinstance(max_new_tokens, numbers.Integral) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
    raise ValueError(f'max_new_tokens must be an integer >= 0, got {max_new_tokens!r}')


def check_lengths(dims, max_prompt_len: int, max_new_tokens: int) -> None:
  """ValueError when a prompt (plus, for learned positions, the continuation) does not fit the model.

  The learned-position rule is evaluate.positions_cover (shared with training and `scaling eval`);
  the message here names the prompt and max_new_tokens and the fix. PositionsError is a ValueError.
  """
  if max_prompt_len > dims.seq_len:
    raise ValueError(
        f'prompt of {max_prompt_len} tokens is longer than the model context seq_len={dims.seq_len}; '
        f'shorten the prompt to at most {dims.seq_len} tokens')
  if not positions_cover(dims, max_prompt_len + max_new_tokens):   # the one rule (scaling/train/evaluate.py)
    rows = position_rows(dims)
    size = f'seq_len={rows}' if rows == dims.seq_len else f'model.position_table={rows}'
    raise PositionsError(
        f'prompt of {max_prompt_len} tokens + max_new_tokens={max_new_tokens} = '
        f'{max_prompt_len + max_new_tokens} exceeds {size}, the size of the learned '
        f'position table; lower max_new_tokens to {max(rows - max_prompt_len, 0)} or shorten the prompt')


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


# ----------------------------------------------------------------------------- sampling
def filter_logits(logits_BV, *, temperature, top_k, top_p):
  """Temperature, then top-k, then top-p (nucleus); removed tokens get -inf.

  Returns float32 logits of the same shape [..., V] such that
  `jax.random.categorical(key, out)` samples from the filtered distribution.
  temperature == 0 keeps only the most likely token (greedy). top_k == 0 and
  top_p == 1 disable their filters. Ties in rank are broken towards the lower
  token id. The arguments may be Python numbers or traced scalars.

  top-p keeps token t (in decreasing probability order, after top-k and
  renormalisation) iff the probability mass of the tokens ranked strictly
  above t is < top_p: that is the smallest prefix whose mass reaches top_p,
  and always contains the most likely token.
  """
  shape = logits_BV.shape
  V = shape[-1]
  x_BV = logits_BV.reshape(-1, V).astype(jnp.float32)
  B = x_BV.shape[0]
  temperature = jnp.asarray(temperature, jnp.float32)
  x_BV = x_BV / jnp.where(temperature > 0, temperature, 1.0)
  order_BV = jnp.argsort(-x_BV, axis=-1, stable=True)           # token ids, most likely first
  sorted_BV = jnp.take_along_axis(x_BV, order_BV, axis=-1)
  rank_V = jnp.arange(V)
  top_k = jnp.asarray(top_k, jnp.int32)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
  k = jnp.where(temperature > 0, k, 1)
  keep_BV = jnp.broadcast_to(rank_V < k, (B, V))
  probs_BV = jax.nn.softmax(jnp.where(keep_BV, sorted_BV, -jnp.inf), axis=-1)
  mass_above_BV = jnp.concatenate(
      [jnp.zeros((B, 1), jnp.float32), jnp.cumsum(probs_BV, axis=-1)[:, :-1]], axis=-1)
  keep_BV = keep_BV & (mass_above_BV < jnp.asarray(top_p, jnp.float32))
  keep_BV = keep_BV.at[:, 0].set(True)
  # back from rank order to token order
  keep_tok_BV = jnp.zeros((B, V), bool).at[jnp.arange(B)[:, None], order_BV].set(keep_BV)
  return jnp.where(keep_tok_BV, x_BV, -jnp.inf).reshape(shape)


def _sample(logits_BV, keys_B, temperature, top_k, top_p, mode: str):
  """One token per row. mode: 'greedy' (argmax), 'plain' (temperature only) or 'filtered'."""
  if mode == 'greedy':
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  if mode == 'plain':
    x_BV = logits_BV.astype(jnp.float32) / temperature
  else:
    x_BV = filter_logits(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p)
  return jax.vmap(jax.random.categorical)(keys_B, x_BV).astype(jnp.int32)


def _sampling_mode(temperature, top_k, top_p) -> str:
  if temperature == 0:
    return 'greedy'
  return 'filtered' if (top_k > 0 or top_p < 1) else 'plain'


# ----------------------------------------------------------------------------- the decode loop
@functools.partial(jax.jit, static_argnames=('graphdef', 'n_buf', 'cache_len', 'eos_id', 'mode'))
def _generate_jit(graphdef, state, prompt_BT, lens_B, keys_B, max_new, temperature, top_k, top_p, vocab_limit, *,
                  n_buf: int, cache_len: int, eos_id: int | None, mode: str):
  """Prefill + while_loop decode. Returns (tokens [B, n_buf], lengths [B])."""
  model = nnx.merge(graphdef, state)
  B = prompt_BT.shape[0]
  # prefill from position 0 (positions None: arange(T), nothing to check at run time)
  logits_BTV, cache = model(prompt_BT, cache=model.init_cache(B, cache_len))
  last_BV = jnp.take_along_axis(logits_BTV, (lens_B - 1)[:, None, None], axis=1)[:, 0]
  fill = 0 if eos_id is None else eos_id
  allowed_V = jnp.arange(logits_BTV.shape[-1]) < vocab_limit  # ids the tokenizer can decode

  def cond(carry):
    i, _, _, _, done_B, _ = carry
    return (i < max_new) & ~jnp.all(done_B)

  def body(carry):
    i, cache, last_BV, out_BN, done_B, lengths_B = carry
    step_keys_B = None if mode == 'greedy' else jax.vmap(lambda k: jax.random.fold_in(k, i))(keys_B)
    last_BV = jnp.where(allowed_V, last_BV, -jnp.inf)
    tok_B = _sample(last_BV, step_keys_B, temperature, top_k, top_p, mode)
    tok_B = jnp.where(done_B, fill, tok_B)
    out_BN = jax.lax.dynamic_update_slice(out_BN, tok_B[:, None], (0, i))
    hit_B = jnp.zeros_like(done_B) if eos_id is None else tok_B == eos_id
    lengths_B = lengths_B + (~done_B & ~hit_B).astype(jnp.int32)
    done_B = done_B | hit_B
    logits_B1V, cache = model(tok_B[:, None], (lens_B + i)[:, None], cache=cache)
    return i + 1, cache, logits_B1V[:, 0], out_BN, done_B, lengths_B

  carry = (jnp.int32(0), cache, last_BV, jnp.full((B, n_buf), fill, jnp.int32),
           jnp.zeros((B,), bool), jnp.zeros((B,), jnp.int32))
  _, _, _, out_BN, _, lengths_B = jax.lax.while_loop(cond, body, carry)
  return out_BN, lengths_B


def _row_keys(rng, B: int):
  """A typed key per row: rng is one key (folded with the row index) or B keys (used as given)."""
  rng = jnp.asarray(rng) if not isinstance(rng, jax.Array) else rng
  if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(jnp.asarray(rng, jnp.uint32))
  if rng.shape == ():
    return jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(B))
  if rng.shape == (B,):
    return rng
  raise ValueError(f'rng must be one PRNG key or one key per row (shape ({B},)), got key shape {rng.shape}')


def generate_tokens(model, prompt_ids_BT, prompt_lens_B, *, max_new_tokens: int, temperature: float = 1.0,
                    top_k: int = 0, top_p: float = 1.0, rng=None, eos_id: int | None = None,
                    vocab_limit: int | None = None):
  """Continues B right-padded prompts by up to max_new_tokens tokens with the KV cache.

  prompt_ids_BT: int [B, T], row b's prompt in prompt_ids_BT[b, :prompt_lens_B[b]]
  (the rest is padding, ignored). rng: one key (row b uses fold_in(rng, b)) or
  B keys (row b uses rng[b]: batch-independent samples); unused when greedy.
  eos_id: a row stops at its first EOS (None: never stops early).
  vocab_limit: only ids < vocab_limit are generated (the tokenizer's vocab when
  the model's embedding is padded past it); None: the model vocab.

  Returns numpy (tokens_BN int32 [B, max_new_tokens], lengths_B int32 [B]):
  row b's continuation is tokens_BN[b, :lengths_B[b]], EOS excluded; the
  positions after it hold eos_id (0 when eos_id is None).
  """
  B = np.shape(prompt_ids_BT)[0] if np.ndim(prompt_ids_BT) == 2 else 0
  call = prepare_call(model, prompt_ids_BT, prompt_lens_B, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_k=top_k, top_p=top_p, rng=rng, eos_id=eos_id, vocab_limit=vocab_limit)
  if call is None:  # max_new_tokens == 0
    return np.zeros((B, 0), np.int32), np.zeros((B,), np.int32)
  args, static = call
  out_BN, lengths_B = _generate_jit(*args, **static)
  return np.asarray(out_BN)[:, :max_new_tokens], np.asarray(lengths_B)


def prepare_call(model, prompt_ids_BT, prompt_lens_B, *, max_new_tokens, temperature, top_k, top_p, rng, eos_id,
                 vocab_limit=None):
  """Validates the inputs and builds (args, static kwargs) of the jitted loop; None when max_new_tokens == 0.

  Separate from generate_tokens so benchmarks can time the compiled call alone
  (args[5] is the traced step count: the same compiled function runs fewer steps).
  """
  check_sampling_args(temperature=temperature, top_k=top_k, top_p=top_p)
  check_max_new_tokens(max_new_tokens)
  prompt_BT = np.asarray(prompt_ids_BT)
  lens_B = np.asarray(prompt_lens_B)
  if prompt_BT.ndim != 2 or not np.issubdtype(prompt_BT.dtype, np.integer):
    raise ValueError(f'prompt_ids_BT must be an integer array [batch, length], got {prompt_BT.dtype} {prompt_BT.shape}')
  B, T = prompt_BT.shape
  if lens_B.shape != (B,) or not np.issubdtype(lens_B.dtype, np.integer):
    raise ValueError(f'prompt_lens_B must be {B} integers (one per row), got {lens_B.dtype} {lens_B.shape}')
  if B == 0:
    raise ValueError('no prompts given')
  if lens_B.min() < 1 or lens_B.max() > T:
    raise ValueError(f'prompt lengths must lie in [1, {T}] (an empty prompt has nothing to condition on), '
                     f'got {lens_B.tolist()}')
  dims = model.dims
  if prompt_BT.min() < 0 or prompt_BT.max() >= dims.vocab_size:
    raise ValueError(f'token ids must lie in [0, {dims.vocab_size}) (the model vocab); '
                     f'got ids in [{prompt_BT.min()}, {prompt_BT.max()}]')
  if eos_id is not None and not 0 <= eos_id < dims.vocab_size:
    raise ValueError(f'eos_id={eos_id} is outside the model vocab [0, {dims.vocab_size})')
  if vocab_limit is None:
    vocab_limit = dims.vocab_size
  if not isinstance(vocab_limit, numbers.Integral) or not 1 <= vocab_limit <= dims.vocab_size:
    raise ValueError(f'vocab_limit must be an integer in [1, {dims.vocab_size}] (the model vocab), '
                     f'got {vocab_limit!r}: is the tokenizer larger than the model embedding?')
  max_len = int(lens_B.max())
  check_lengths(dims, max_len, int(max_new_tokens))
  if max_new_tokens == 0:
    return None
  mode = _sampling_mode(temperature, top_k, top_p)
  if rng is None:
    if mode != 'greedy':
      raise ValueError('sampling (temperature > 0) needs rng: pass jax.random.key(seed)')
    rng = jax.random.key(0)

  # bucketed shapes: prompt width, output width, cache length
  t_pad = _round_up(max_len, BUCKET)
  n_buf = _round_up(int(max_new_tokens), BUCKET)
  cache_len = t_pad + n_buf
  if dims.position == 'learned':   # no position past the table
    t_pad = min(t_pad, position_rows(dims))
    cache_len = min(cache_len, position_rows(dims))
  padded_BT = np.zeros((B, t_pad), np.int32)
  width = min(T, t_pad)
  padded_BT[:, :width] = prompt_BT[:, :width]
  graphdef, state = nnx.split(model)
  args = [graphdef, state, jnp.asarray(padded_BT), jnp.asarray(lens_B, jnp.int32), _row_keys(rng, B),
          jnp.int32(max_new_tokens), jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p),
          jnp.int32(vocab_limit)]
  static = dict(n_buf=n_buf, cache_len=cache_len, eos_id=None if eos_id is None else int(eos_id), mode=mode)
  return args, static


# ----------------------------------------------------------------------------- strings
def encode_prompts(tokenizer, prompts: Sequence[str], *, add_bos: bool = False) -> list[list[int]]:
  """Token ids per prompt, tokenizer.bos_id first when add_bos. ValueError for an empty result."""
  bos = getattr(tokenizer, 'bos_id', None)
  if add_bos and bos is None:
    raise ValueError('add_bos=True but the tokenizer has no BOS id (tokenizer.bos_id is None)')
  prefix = [bos] if add_bos else []
  out = []
  for i, p in enumerate(prompts):
    if not isinstance(p, str):
      raise ValueError(f'prompt {i} is a {type(p).__name__}, expected a string')
    ids = prefix + list(tokenizer.encode(p))
    if not ids:
      raise ValueError(f'prompt {i} ({p!r}) encodes to zero tokens: give a non-empty prompt '
                       f'(in Python, add_bos=True starts from the BOS token instead)')
    out.append(ids)
  return out


def _prompt_key(seed: int, text: str, copy: int):
  key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(text.encode('utf-8')) & 0x7FFFFFFF)
  return jax.random.fold_in(key, copy)


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, num_samples: int = 1, stop_at_eos: bool = True,
             add_bos: bool = False) -> list[str]:
  """Continuations (without the prompt) of each prompt, num_samples per prompt, in prompt order.

  Example: generate(model, tok, ['ROMEO:'], max_new_tokens=100, temperature=0.8, top_p=0.9).
  All prompts run as one batch. Same seed and prompt give the same text,
  whatever else is in the batch (see the module docstring for the keys).
  """
  if isinstance(prompts, str):
    prompts = [prompts]
  check_sampling_args(temperature=temperature, top_k=top_k, top_p=top_p)
  check_max_new_tokens(max_new_tokens)
  if not isinstance(num_samples, numbers.Integral) or num_samples < 1:
    raise ValueError(f'num_samples must be an integer >= 1, got {num_samples!r}')
  if not prompts:
    raise ValueError('prompts is empty: give at least one prompt string')
  ids = encode_prompts(tokenizer, prompts, add_bos=add_bos)
  max_len = max(len(x) for x in ids)
  check_lengths(model.dims, max_len, int(max_new_tokens))
  rows, keys, seen = [], [], {}
  for text, row in zip(prompts, ids):
    for _ in range(num_samples):
      copy = seen.get(text, 0)
      seen[text] = copy + 1
      rows.append(row)
      keys.append(_prompt_key(seed, text, copy))
  prompt_BT = np.zeros((len(rows), max_len), np.int32)
  for b, row in enumerate(rows):
    prompt_BT[b, :len(row)] = row
  eos_id = getattr(tokenizer, 'eos_id', None) if stop_at_eos else None
  tokens_BN, lengths_B = generate_tokens(
      model, prompt_BT, np.array([len(r) for r in rows], np.int32), max_new_tokens=max_new_tokens,
      temperature=temperature, top_k=top_k, top_p=top_p, rng=jnp.stack(keys), eos_id=eos_id,
      vocab_limit=min(int(tokenizer.vocab_size), model.dims.vocab_size))
  return [tokenizer.decode(tokens_BN[b, :lengths_B[b]].tolist()) for b in range(len(rows))]


# ----------------------------------------------------------------------------- CLI glue
def add_sample_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """Flags of `scaling sample`; unset sampling flags fall back to the run's config.sample."""
  parser.add_argument('--workdir', required=True, help='training run directory (holds the checkpoints)')
  parser.add_argument('--prompt', action='append', default=None,
                      help='prompt text; repeat for several (default: config.sample.prompts)')
  parser.add_argument('--max_new_tokens', type=int, default=None, help='tokens to generate per prompt')
  parser.add_argument('--temperature', type=float, default=None, help='0 = greedy argmax')
  parser.add_argument('--top_k', type=int, default=None, help='keep the k most likely tokens (0 = off)')
  parser.add_argument('--top_p', type=float, default=None, help='nucleus: smallest set with mass >= p (1 = off)')
  parser.add_argument('--seed', type=int, default=None, help='sampling seed')
  parser.add_argument('--num_samples', type=int, default=1, help='continuations per prompt')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step (default: the latest)')
  return parser


def run_sample(args: argparse.Namespace, out=None) -> int:
  """Loads the checkpoint in args.workdir and prints each prompt followed by its continuation."""
  out = out or sys.stdout
  from scaling.inference.run import load_for_inference  # pylint: disable=import-outside-toplevel
  model, cfg, tokenizer = load_for_inference(args.workdir, step=args.step)
  sample_cfg = cfg.get('sample', None) if hasattr(cfg, 'get') else None

  def pick(name, default):
    value = getattr(args, name, None)
    if value is not None:
      return value
    if sample_cfg is not None and name in sample_cfg:
      return sample_cfg[name]
    return default

  prompts = list(args.prompt) if args.prompt else list(pick('prompts', ('',)))
  try:
    texts = generate(model, tokenizer, prompts, max_new_tokens=pick('max_new_tokens', 64),
                     temperature=pick('temperature', 1.0), top_k=pick('top_k', 0), top_p=pick('top_p', 1.0),
                     seed=pick('seed', 0), num_samples=args.num_samples)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  n = args.num_samples
  for i, text in enumerate(texts):
    prompt = prompts[i // n]
    header = f'--- prompt {i // n}' + (f', sample {i % n}' if n > 1 else '') + ' ---'
    print(header, file=out)
    print(prompt + text, file=out)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = add_sample_args(argparse.ArgumentParser(description='Sample from a trained checkpoint.'))
  return run_sample(parser.parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())

