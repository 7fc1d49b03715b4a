"""Evaluation: the one path from a model and validation batches to loss and bits per byte.

Used by the training loop (every `train.eval_every` steps, over `train.eval_batches`
batches), by its final evaluations at other lengths (`train.final_eval_lengths`), and
by `scaling eval` (a trained workdir, by default over the whole validation split):

    eval step (train.make_eval_step: masked NLL sum and token count of a batch)
    -> evaluate(): summed over the batches -> mean loss (nats/token)
    -> bits per byte (scaling.data.loader.bits_per_byte, with the split's bytes per token)

`scaling eval --sets` scores the run's tagged eval sets (scaling/train/evalsets.py: the training corpus's
split and each of train.eval_sets, the same path per set); `scaling eval --tasks` runs
lm-evaluation-harness tasks on the checkpoint in-process (scaling/inference/harness.py).

Evaluating at lengths other than the training length measures length
generalisation (RoPE vs learned positions). Learned positions have a table of
`model.position_table` rows (0: `model.seq_len`, the training length; a longer table
has untrained rows past it, so such a model can be scored at 2x or 4x its training
length): `check_positions_cover` refuses longer sequences with a clear error rather
than letting them be silently clipped.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from scaling.config.load import position_rows
from scaling.data.loader import bits_per_byte


class EvalError(ValueError):
  pass


class PositionsError(EvalError):
  """A sequence longer than a learned position table (model.position_table, else the training length)."""


def positions_cover(dims, seq_len: int) -> bool:
  """Whether the model has a position for every token of a `seq_len`-token sequence."""
  return dims.position != 'learned' or seq_len <= position_rows(dims)


def check_positions_cover(dims, seq_len: int, what: str = '') -> None:
  """PositionsError when learned positions end before `seq_len` (the one check; eval, train, generate).

  `what` names the sequence in the message (e.g. 'prompt + max_new_tokens'); default 'seq_len'.
  """
  if positions_cover(dims, seq_len):
    return
  what = what or 'seq_len'
  rows = position_rows(dims)
  size = ('its training length' if rows == dims.seq_len
          else f'model.position_table; it trained at seq_len={dims.seq_len}')
  raise PositionsError(
      f'this model uses learned positions with a table of {rows} rows ({size}), so '
      f'{what}={seq_len} does not fit: there is no position embedding past {rows}. Use at most '
      f'{rows} (RoPE and position=none models accept any length; a learned table longer than seq_len '
      f'is set before training, by model.position_table)')


@dataclasses.dataclass(frozen=True)
class EvalResult:
  loss: float        # mean next-token loss, nats per token
  bpb: float         # bits per UTF-8 byte of validation text
  tokens: int        # tokens scored

  def row(self, prefix: str = 'eval/') -> dict:
    return {f'{prefix}loss': self.loss, f'{prefix}bpb': self.bpb}


def evaluate(eval_step, params, batches, *, bytes_per_token: float, mesh=None) -> EvalResult:
  """Loss and bits per byte of `params` over `batches` (per-process numpy dicts from an eval loader).

  `eval_step(params, batch) -> (sum_nll, count)`; with a `mesh` the batches are assembled into
  globally sharded arrays (every process passes its own slice), else put on the default device.
  """
  from scaling.train import sharding
  total = count = 0.0
  seq_len = None
  for local in batches:
    seq_len = seq_len or local['inputs'].shape[-1]
    batch = (sharding.global_batch(local, mesh) if mesh is not None
             else {k: jnp.asarray(v) for k, v in local.items()})
    s, c = eval_step(params, batch)
    total += float(s)
    count += float(c)
  if count == 0:
    at = f' at seq_len={seq_len}' if seq_len else ''
    raise EvalError(f'the validation split produced no tokens{at}; use a larger corpus or a shorter sequence length')
  loss = total / count
  return EvalResult(loss, bits_per_byte(loss, bytes_per_token), int(count))
