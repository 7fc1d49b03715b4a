"""`scaling eval`: a trained workdir scored on its validation split at any lengths, on its tagged eval sets,
or on lm-evaluation-harness tasks; every score goes through scaling/train/evaluate.py's one path."""

from __future__ import annotations

import pathlib
import sys
import time

from scaling.train.evaluate import EvalError, check_positions_cover, evaluate


def with_progress(batches, total: int, label: str, *, stream=None, every: float = 10.0, clock=time.monotonic):
  """`batches`, reporting batches done / total with the rate and ETA as they are consumed (on stderr).

  On a terminal a tqdm bar; otherwise a line every `every` s and one at the end, so a log stays short. The
  rate counts from the second batch on (the first one's time is the compile)."""
  stream = stream or sys.stderr
  if getattr(stream, 'isatty', lambda: False)():
    from tqdm import tqdm
    yield from tqdm(batches, total=total, desc=label, unit='batch', file=stream, dynamic_ncols=True)
    return
  t_start = clock()
  t0 = last = None
  n = 0
  for batch in batches:
    yield batch   # the caller scores it (and waits for the result) before asking for the next
    n += 1
    now = clock()
    if t0 is None:
      t0 = last = now   # after the first batch: its time was mostly the compile
      continue
    if now - last >= every or n == total:
      rate = (n - 1) / max(now - t0, 1e-9)
      eta = f'{(total - n) / rate:.0f} s' if rate > 0 else '-'
      print(f'{label}: {n}/{total} batches, {rate:.2f} batch/s, eta {eta} ({now - t_start:.0f} s)', file=stream,
            flush=True)
      last = now


# ----------------------------------------------------------------------------- `scaling eval`
def eval_workdir(workdir, seq_lens=None, *, step=None, max_batches: int = 0, batch_size: int | None = None) -> list[dict]:
  """Rows {seq_len, step, eval/loss, eval/bpb, tokens} of a workdir's checkpoint over the validation split.

  batch_size defaults to the run's train.batch_size, so `max_batches=train.eval_batches` scores the
  windows the training run's evaluations scored.
  """
  import jax
  from flax import nnx

  from scaling.data.loader import make_eval_loader
  from scaling.data.mixture import prepare_any as prepare  # a data mixture: its first source's split
  from scaling.inference.run import load_for_inference
  from scaling.train.step import make_eval_step
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
    r = evaluate(step_fn, params, with_progress(loader, len(loader), f'eval seq_len={L}'), bytes_per_token=bpt)
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
  (scaling/train/evalsets.py) at the training length; tags 'all' or comma-separated."""
  import sys

  import jax
  from flax import nnx

  from scaling.data.loader import make_eval_loader
  from scaling.data.mixture import prepare_any  # a data mixture's sources, or the corpus
  from scaling.inference.run import load_for_inference
  from scaling.train.evalsets import resolve_eval_sets
  from scaling.train.step import make_eval_step
  model, cfg, tokenizer, step = load_for_inference(workdir, step=step, with_step=True)
  sets = resolve_eval_sets(cfg, prepare_any(cfg.data, verbose=False), tokenizer,
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
    r = evaluate(step_fn, params, with_progress(loader, len(loader), f'eval {s.tag}'), bytes_per_token=s.bytes_per_token)
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

  from scaling.config.load import from_json
  if getattr(args, 'tasks', ''):   # lm-evaluation-harness tasks (scaling/inference/harness.py)
    from scaling.inference.harness import run_tasks
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
