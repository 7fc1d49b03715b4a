"""Evaluation: the one path from a model and validation batches to loss and bits per byte.

Used by the training loop (every `train.eval_every` steps, over `train.eval_batches`
batches), by its final evaluations at other lengths (`train.final_eval_lengths`), and
by `scaling eval` (a trained workdir, by default over the whole validation split):

    eval step (train.make_eval_step: masked NLL sum and token count of a batch)
    -> evaluate(): summed over the batches -> mean loss (nats/token)
    -> bits per byte (scaling.data.loader.bits_per_byte, with the split's bytes per token)

`scaling eval --sets` scores the run's tagged eval sets (scaling/evalsets.py: the training corpus's
split and each of train.eval_sets, the same path per set); `scaling eval --tasks` runs
lm-evaluation-harness tasks on the checkpoint in-process (scaling/harness.py).

Evaluating at lengths other than the training length measures length
generalisation (RoPE vs learned positions). Learned positions have a table of
`model.seq_len` rows: `check_positions_cover` refuses longer sequences with a
clear error rather than letting them be silently clipped.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax.numpy as jnp

from scaling.data.loader import bits_per_byte


class EvalError(ValueError):
  pass


class PositionsError(EvalError):
  """A sequence longer than a learned position table (the training length)."""


def positions_cover(dims, seq_len: int) -> bool:
  """Whether the model has a position for every token of a `seq_len`-token sequence."""
  return dims.position != 'learned' or seq_len <= dims.seq_len


def check_positions_cover(dims, seq_len: int, what: str = '') -> None:
  """PositionsError when learned positions end before `seq_len` (the one check; eval, train, generate).

  `what` names the sequence in the message (e.g. 'prompt + max_new_tokens'); default 'seq_len'.
  """
  if positions_cover(dims, seq_len):
    return
  what = what or 'seq_len'
  raise PositionsError(
      f'this model uses learned positions with a table of {dims.seq_len} rows (its training length), so '
      f'{what}={seq_len} does not fit: there is no position embedding past {dims.seq_len}. Use at most '
      f'{dims.seq_len} (RoPE and position=none models accept any length)')


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
  from scaling import sharding
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


# ----------------------------------------------------------------------------- `scaling eval`
def eval_workdir(workdir, seq_lens=None, *, step=None, max_batches: int = 0, batch_size: int | None = None) -> list[dict]:
  """Rows {seq_len, step, eval/loss, eval/bpb, tokens} of a workdir's checkpoint over the validation split.

  batch_size defaults to the run's train.batch_size, so `max_batches=train.eval_batches` scores the
  windows the training run's evaluations scored.
  """
  import jax
  from flax import nnx

  from scaling.checkpoint import load_for_inference
  from scaling.data import make_eval_loader, prepare
  from scaling.train import make_eval_step
  model, cfg, _, step = load_for_inference(workdir, step=step, with_step=True)
  seq_lens = seq_lens or [cfg.model.seq_len]
  for L in seq_lens:
    if L <= 0:
      raise EvalError(f'--seq_len must be positive, got {L}')
    check_positions_cover(model.dims, L, what='--seq_len')
  summary = prepare(cfg.data, verbose=False)
  bpt = summary.get('bytes_per_token_val') or summary.get('bytes_per_token')
  graphdef, params = nnx.split(model)
  step_fn = jax.jit(make_eval_step(graphdef, cfg.train.get('loss_chunk', 0)))   # the training run's eval step
  rows = []
  for L in seq_lens:
    loader = make_eval_loader(summary['data_dir'], seq_len=L, batch_size=batch_size or cfg.train.batch_size,
                              max_batches=max_batches,
                              document_masking=cfg.data.document_masking)
    r = evaluate(step_fn, params, loader, bytes_per_token=bpt)
    rows.append({'seq_len': L, 'step': step, 'eval/loss': r.loss, 'eval/bpb': r.bpb, 'tokens': r.tokens})
  return rows


def format_rows(rows: list[dict], *, workdir, step, max_batches: int, train_eval_batches: int) -> str:
  """The table `scaling eval` prints, with a note on why its bpb differs from the training run's."""
  split = 'the whole validation split' if not max_batches else f'the first {max_batches} batch(es) of the validation split'
  lines = [f'{workdir} (checkpoint step {step}), over {split}:',
           f'{"seq_len":>8}  {"loss (nats/token)":>17}  {"bits/byte":>9}  {"tokens":>10}']
  for r in rows:
    lines.append(f'{r["seq_len"]:>8}  {r["eval/loss"]:>17.4f}  {r["eval/bpb"]:>9.4f}  {r["tokens"]:>10,}')
  if max_batches != train_eval_batches:
    lines.append(f'note: the training run\'s eval/bpb (metrics.jsonl, summary.json) covers only the first '
                 f'train.eval_batches={train_eval_batches} batch(es) of the validation split, so it differs from '
                 f'these figures; `--batches {train_eval_batches}` evaluates the same batches (at the training length)')
  return '\n'.join(lines)


def eval_sets_workdir(workdir, tags: str = 'all', *, step=None, max_batches: int = 0,
                      batch_size: int | None = None) -> list[dict]:
  """Rows {set, step, eval/loss, eval/bpb, tokens} of a workdir's checkpoint over its run's tagged eval sets
  (scaling/evalsets.py) at the training length; tags 'all' or comma-separated."""
  import sys

  import jax
  from flax import nnx

  from scaling.checkpoint import load_for_inference
  from scaling.data import make_eval_loader, prepare
  from scaling.evalsets import resolve_eval_sets
  from scaling.train import make_eval_step
  model, cfg, tokenizer, step = load_for_inference(workdir, step=step, with_step=True)
  sets = resolve_eval_sets(cfg, prepare(cfg.data, verbose=False), tokenizer,
                           log=lambda *a: print(*a, file=sys.stderr))
  if tags != 'all':
    wanted = [t.strip() for t in tags.split(',') if t.strip()]
    unknown = [t for t in wanted if t not in {s.tag for s in sets}]
    if unknown:
      raise EvalError(f'--sets {tags}: no tagged set {", ".join(unknown)} in this run; it has '
                      f'{", ".join(s.tag for s in sets)}')
    sets = [s for s in sets if s.tag in wanted]
  graphdef, params = nnx.split(model)
  step_fn = jax.jit(make_eval_step(graphdef, cfg.train.get('loss_chunk', 0)))
  rows = []
  for s in sets:
    loader = make_eval_loader(s.data_dir, seq_len=cfg.model.seq_len, batch_size=batch_size or cfg.train.batch_size,
                              max_batches=max_batches, document_masking=cfg.data.document_masking)
    r = evaluate(step_fn, params, loader, bytes_per_token=s.bytes_per_token)
    rows.append({'set': s.tag, 'step': step, 'eval/loss': r.loss, 'eval/bpb': r.bpb, 'tokens': r.tokens})
  return rows


def format_set_rows(rows: list[dict], *, workdir, step, max_batches: int) -> str:
  split = 'each held-out split' if not max_batches else f'the first {max_batches} batch(es) of each held-out split'
  lines = [f'{workdir} (checkpoint step {step}), tagged eval sets over {split}:',
           f'{"set":>16}  {"loss (nats/token)":>17}  {"bits/byte":>9}  {"tokens":>10}']
  for r in rows:
    lines.append(f'{r["set"]:>16}  {r["eval/loss"]:>17.4f}  {r["eval/bpb"]:>9.4f}  {r["tokens"]:>10,}')
  return '\n'.join(lines)


def run_eval(args) -> int:
  import json

  from scaling.config import from_json
  if getattr(args, 'tasks', ''):   # lm-evaluation-harness tasks (scaling/harness.py)
    from scaling.harness import run_tasks
    run_tasks(args.workdir, args.tasks, step=args.step, limit=args.limit, num_fewshot=args.num_fewshot,
              batch_size=args.eval_batch_size)
    return 0
  if getattr(args, 'sets', None):
    rows = eval_sets_workdir(args.workdir, args.sets, step=args.step, max_batches=args.batches)
    print('\n'.join(json.dumps(r) for r in rows) if args.json else
          format_set_rows(rows, workdir=args.workdir, step=rows[0]['step'] if rows else args.step,
                          max_batches=args.batches))
    return 0
  rows = eval_workdir(args.workdir, args.seq_len, step=args.step, max_batches=args.batches)
  if getattr(args, 'json', False):
    for r in rows:
      print(json.dumps(r))
    return 0
  cfg = from_json(pathlib.Path(args.workdir) / 'config.json')
  print(format_rows(rows, workdir=args.workdir, step=rows[0]['step'], max_batches=args.batches,
                    train_eval_batches=cfg.train.eval_batches))
  return 0


# ----------------------------------------------------------------------------- per-position losses
# The seed study's length and context claims (scaling/claims_study.py): the same tokens of long validation
# documents scored with windows of different lengths, and the loss bucketed by position in the document.
def long_documents(data_dir, length: int, max_docs: int = 64, split: str = 'val'):
  """int32 [N, length + 1]: the first length + 1 tokens of each document of `split` that has that many
  (in corpus order, at most max_docs); an empty [0, length + 1] array when none is that long."""
  import numpy as np

  from scaling.data import open_split
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
