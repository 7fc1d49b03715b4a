"""The end phase of a run: evaluations of the current params (every tagged eval set, or the training split at
another length), the end-of-run evals, and summary.json. Used by loop.py and packed_loop.py.
"""

from __future__ import annotations

import math

import numpy as np

from scaling.base.files import atomic_write_json
from scaling.model import accounting
from scaling.train import evalsets, mixture_run, run_history
from scaling.train.evaluate import evaluate, positions_cover
from scaling.train.metrics import device_peak_flops, read_metrics
from scaling.train.run_data import eval_loader
from scaling.train.runtime import Run
from scaling.train.step import jit_eval_step


def do_eval_sets(run: Run):
  """Every tagged eval set at the training length: (the training split's EvalResult, metrics row)."""
  if run.eval_step is None:
    run.eval_step = jit_eval_step(run.setup)
  T = run.cfg.model.seq_len
  result, run.eval_row = evalsets.evaluate_sets(run.eval_sets, run.eval_step, run.state['params'],
                                                lambda d: eval_loader(run, T, d), mesh=run.setup.mesh)
  return result, run.eval_row


def do_eval(run: Run, seq_len: int | None = None):
  """evaluate() of the current params over `train.eval_batches` batches at `seq_len` (default: training's)."""
  if run.eval_step is None:
    run.eval_step = jit_eval_step(run.setup)
  return evaluate(run.eval_step, run.state['params'], eval_loader(run, seq_len or run.cfg.model.seq_len),
                  bytes_per_token=run.data.bytes_per_token, mesh=run.setup.mesh)


def final_evals(run: Run) -> dict:
  """The eval loss of the final state (if the loop did not just compute it) and the extra lengths.

  With no validation split (run.eval_skipped) the training corpus's evals are skipped (null values).
  """
  if run.end_error:   # the last step's eval failed: already said
    return {}
  if run.eval_loss is None and not run.eval_row and run.eval_sets:
    result, _ = do_eval_sets(run)
    if result is not None:
      run.eval_loss, run.eval_bpb = result.loss, result.bpb
  T = run.cfg.model.seq_len
  out = {k: v for k, v in run.eval_row.items() if k.count('/') == 2}   # eval/<tag>/loss, eval/<tag>/bpb
  for L in run.cfg.train.final_eval_lengths:   # length generalisation (e.g. twice the training context)
    L = int(L)
    # learned positions have no rows past the training length: no value rather than an error
    value = do_eval(run, L).bpb if positions_cover(run.setup.dims, L) and not run.eval_skipped else None
    out[f'eval/bpb@{L}'] = value
    if L == 2 * T:
      out['eval/bpb@2x'] = value
  return out


def fmt(x) -> str:
  return 'skipped' if x is None else f'{x:.4f}'


def summary(run: Run, extra_evals: dict, t_start: float, quiet: bool = False) -> dict:
  """summary.json (main process) and the result dict of a finished run: totals over all its segments (the
  current one from run.t_start; `t_start` is kept for the callers)."""
  dims, total = run.setup.dims, run.setup.total_steps
  counts = accounting.count_params(dims)
  fpt = accounting.flops_per_token(dims)
  peak, peak_src = device_peak_flops(dims.dtype, run.cfg.train.peak_flops)
  loss = run.loss
  rows = read_metrics(run.workdir) if run.is_main else []
  if not math.isfinite(loss):   # resumed a finished run: report its last logged loss
    logged = [r['train/loss'] for r in rows if 'train/loss' in r]
    loss = logged[-1] if logged else float('nan')
  # the whole run: every segment's wall and compile time, the tokens and FLOPs of every step (run_history.py)
  from scaling.train import batch_schedule  # train.batch_schedule: the tokens of the schedule's batches
  tokens_at = (lambda s: batch_schedule.tokens_seen(run, s)) if batch_schedule.is_scheduled(run.cfg) else None
  whole = run_history.whole_run(run_history.record_segment(run, rows), total, run.tokens_per_step, fpt, tokens_at)
  tps = [r['throughput/tokens_per_s'] for r in rows if 'throughput/tokens_per_s' in r]
  result = {
      'state': 'done', 'step': run.step, 'params': counts['total'], 'non_embedding_params': counts['non_embedding'],
      'tokens': whole['tokens'], 'flops': whole['flops'],
      'flops_per_token': fpt, 'train/loss': loss, 'eval/loss': run.eval_loss, 'eval/bpb': run.eval_bpb,
      'throughput/tokens_per_s': float(np.median(tps)) if tps else None, 'compile_s': whole['compile_s'],
      'peak_flops': peak, 'peak_source': peak_src, 'wall_s': whole['wall_s'],
      'exit_code': 1 if run.end_error else 0, 'eval_skipped': run.eval_skipped, 'end_error': run.end_error,
      'segments': whole['segments'], **extra_evals, **mixture_run.summary_fields(run, rows),
  }
  if run.is_main:
    atomic_write_json(run.workdir / 'summary.json', result, indent=1)
    if not quiet:
      run.log(f'done: {run.step} steps, train loss {loss:.4f}, eval loss {fmt(run.eval_loss)}, '
              f'eval bpb {fmt(run.eval_bpb)}, {result["wall_s"]:.0f}s; outputs in {run.workdir.absolute()}')
  return result


