"""`scaling eval`: validation loss and bits per byte of a trained workdir, at any context length.

Evaluating at lengths other than the training length measures length
generalisation (RoPE vs learned positions). Learned positions have a table of
`model.seq_len` rows: longer lengths are refused with a clear error rather
than silently clipped.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.loss import fused_cross_entropy


class EvalError(ValueError):
  pass


def check_length(dims, seq_len: int) -> None:
  if seq_len <= 0:
    raise EvalError(f'--seq_len must be positive, got {seq_len}')
  if dims.position == 'learned' and seq_len > dims.seq_len:
    raise EvalError(f'this model uses learned positions with a table of {dims.seq_len} rows; it cannot be '
                    f'evaluated at seq_len={seq_len}. Use seq_len <= {dims.seq_len} (RoPE and position=none '
                    f'models accept any length)')


def eval_workdir(workdir, seq_lens=None, *, step=None, max_batches: int = 0, batch_size: int = 8) -> list[dict]:
  from scaling.checkpoint import load_for_inference
  from scaling.data import make_eval_loader, prepare
  model, cfg, _ = load_for_inference(workdir, step=step)
  dims = model.dims
  seq_lens = seq_lens or [cfg.model.seq_len]
  for L in seq_lens:
    check_length(dims, L)
  summary = prepare(cfg.data, verbose=False)
  bpt = summary.get('bytes_per_token_val') or summary.get('bytes_per_token')
  graphdef, params = nnx.split(model)

  @jax.jit
  def step_fn(params, batch):
    m = nnx.merge(graphdef, params)
    x_BTD, _ = m.hidden(batch['inputs'], segment_ids_BT=batch.get('segment_ids'))
    _, (s, c) = fused_cross_entropy(x_BTD, m.head_weights(), batch['targets'], batch.get('mask'),
                                    dtype=m.dims.compute_dtype)
    return s, c

  rows = []
  for L in seq_lens:
    total = count = 0.0
    for b in make_eval_loader(summary['data_dir'], seq_len=L, batch_size=batch_size, max_batches=max_batches,
                              document_masking=cfg.data.document_masking):
      s, c = step_fn(params, {k: jnp.asarray(v) for k, v in b.items()})
      total, count = total + float(s), count + float(c)
    if not count:
      raise EvalError(f'the validation split has no complete window of {L} tokens; use a shorter --seq_len')
    loss = total / count
    rows.append({'seq_len': L, 'eval/loss': loss, 'eval/bpb': loss / math.log(2) / bpt, 'tokens': int(count)})
  return rows


def run_eval(args) -> int:
  rows = eval_workdir(args.workdir, args.seq_len, step=args.step, max_batches=args.batches)
  for r in rows:
    print(json.dumps(r))
  return 0
