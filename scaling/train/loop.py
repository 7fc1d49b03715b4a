"""Training: the loop with evaluation, checkpoints and signals, around the step of step.py.

    config -> mesh -> data (prepare + loaders) -> model params (sharded init or restore)
    -> step: microbatched loss/grad (lax.scan) -> clip -> AdamW -> new state (donated)
    -> metrics.jsonl / TensorBoard / progress bar -> eval (loss, bits per byte) -> checkpoints

One `jax.jit` step with explicit in/out shardings and donated state. Parameters
and Adam moments are float32; the forward runs in the compute dtype with
float32 matmul accumulation, and the loss is computed in float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.base import hostmem
from scaling.base.files import atomic_write_json
from scaling.base.names import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_PREEMPTED  # noqa: E402, F401  (exit codes: one place)
from scaling.base.workdir_lock import WorkdirLock
from scaling.config import pack
from scaling.config.load import ConfigError, to_dict
from scaling.model import accounting
from scaling.train import batch_schedule, branch, checkpoint, evalsets, mixture_run, run_history, sharding, tracking
from scaling.train.metrics import MetricsWriter, Progress, device_peak_flops, mfu
from scaling.train.run_data import check_workdir, prepare_data  # noqa: F401  (tests find check_workdir here)
from scaling.train.run_end import do_eval_sets, final_evals, fmt, summary
from scaling.train.runtime import (  # noqa: F401  (tests find these names here)
  Data,
  Hook,
  Hooks,
  Run,
  StepTimer,
  StopFlag,
  TrainError,
  check_finite,
)
from scaling.train.step import (  # noqa: F401  (tests patch these names here)
  Setup,
  build_setup,
  init_state,
  jit_eval_step,
  jit_train_step,
  make_eval_step,
  make_train_step,
  resolve_dims,
)


# ----------------------------------------------------------------------------- the run
def _write_json(path, obj):
  atomic_write_json(path, obj, indent=1)


def train(cfg, workdir, *, debug: bool = False, profile_steps: str = '', quiet: bool = False,
          final_model: bool = False, extend: int | None = None, force_change: bool = False,
          hooks: tuple[Hook, ...] = ()) -> dict:
  """Runs (or resumes) training in `workdir`; returns the summary dict (also written to summary.json).

  A resume must not change the math of the run (its config.json; scaling/config/history.py says which fields
  do) unless asked: extend=STEPS continues it to STEPS steps in all (the schedule built for that length),
  force_change=True applies any change; both are recorded in the workdir's history.jsonl.

  final_model=True (the same in every process: it is gathered collectively): a finished run's result
  also holds 'model', the final Transformer on the main process's first local device (None elsewhere),
  and 'tokenizer', for main-only work after training (the end-of-run samples) without reopening the
  checkpoint, which would wait for the other processes in orbax's barriers.

  hooks: extra periodic actions, run after the log action (e.g. the predicted final loss that `scaling train`
  hands in for train.predict_every: scaling/analysis/curves/live.py).
  """
  t_start = time.time()
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  log = (lambda *a: print(*a, flush=True)) if (is_main and not quiet) else (lambda *a: None)

  # --- everything that can fail fast, before data or compile -----------------
  if cfg.model.vocab_size == 0 and cfg.data.tokenizer in ('bpe', 'unigram'):
    with cfg.model.unlocked():
      cfg.model.vocab_size = cfg.data.vocab_size
  run_history.apply_extend(cfg, extend, workdir)   # the new total, before the schedule is built
  allow = run_history.allowed(extend, force_change)
  setup = build_setup(cfg) if cfg.model.vocab_size else None
  prof = _parse_profile(profile_steps)
  if is_main:
    tracking.check_available(cfg)   # W&B asked for (logging.wandb_project) but not installed: say so now

  run = None
  try:
    # one trainer per workdir, for the whole run (scaling/base/workdir_lock.py): a second one stops here
    with WorkdirLock(workdir, log=log) if is_main else contextlib.nullcontext():
      if setup is None:   # the vocab follows a tokenizer not built yet: the config's own check now, the rest later
        run_history.check_changes(cfg, workdir, allow)
      resume_step = check_workdir(cfg, workdir, log=log, allow=allow) if setup else None
      # From here on a SIGTERM/SIGINT is a request to stop cleanly (saved, resumable), also during data
      # preparation and restore: one process stops at the next phase boundary, several at the first step.
      with StopFlag() as stop:
        run = Run(cfg, setup, workdir, stop, log, is_main, debug=debug, quiet=quiet, allow_change=allow)
        result = _train(run, resume_step, prof, t_start, hooks)
        if final_model and result['state'] == 'done':
          result |= dict(model=_local_model(run), tokenizer=run.data.tokenizer)
        return result
  except KeyboardInterrupt:   # a second SIGINT (or one before the handler is installed): stop at once
    step = run.step if run else 0
    print(f'interrupted (SIGINT): stopped at once after step {step}, without saving it; re-run the same command '
          f'to resume from the last complete checkpoint', file=sys.stderr, flush=True)
    return dict(state='interrupted', step=step, exit_code=EXIT_INTERRUPTED)


def _stop_result(signum, step: int) -> dict:
  """The result of a run stopped by a signal: SIGINT (the user) 130, SIGTERM (a preemption) 75."""
  if signum == signal.SIGINT:
    return dict(state='interrupted', step=step, exit_code=EXIT_INTERRUPTED)
  return dict(state='preempted', step=step, exit_code=EXIT_PREEMPTED)


def _stopped_before_training(run: Run, what: str, step) -> dict | None:
  """The preempted result if one process got a stop signal before its first step (else None)."""
  stop = run.stop
  if stop.signum is None or jax.process_count() > 1:   # several processes: synced at the first step
    return None
  name = signal.Signals(stop.signum).name
  run.log(f'{name} received during {what}, before training started: nothing new to save; '
          f're-run the same command to resume')
  return _stop_result(stop.signum, step or 0)


def _train(run: Run, resume_step, prof, t_start, extra_hooks=()) -> dict:
  """The phases of a run: data, state (restore or init), the loop, final evaluations, summary."""
  run.log(f'workdir: {run.workdir.absolute()} (checkpoints, metrics.jsonl, tb/, summary.json)')
  run.t_start = t_start
  resume_step = prepare_data(run, resume_step)
  if (r := _stopped_before_training(run, 'data preparation', resume_step)):
    return r
  _restore_or_init(run, resume_step)
  if (done := _already_finished(run, resume_step)) is not None:
    _describe(run)   # the model line (and with --debug the parameter listing), as on any resume
    return done
  _write_run_files(run)   # only now: a failed restore leaves the workdir as it was
  if (r := _stopped_before_training(run, 'state initialisation and restore', resume_step)):
    run.mgr.close()
    return r
  _describe(run)
  outcome = _loop(run, _periodic_actions(run, extra_hooks), prof)
  if outcome is not None:
    return outcome
  # the final checkpoint is saved (_close_loop waited for it); summary.json next, before the end-of-run evals
  summary(run, {}, t_start, quiet=True)
  try:
    extra = final_evals(run)
  except Exception as e:   # noqa: BLE001  (any failure here: the run itself is finished and saved)
    _end_failed(run, 'the final evaluation', e)
    extra = {}
  return summary(run, extra, t_start)


def finished_summary(workdir, total: int) -> dict | None:
  """The summary.json of a run finished at step `total` with no failed end-of-run work, else None."""
  try:
    done = json.loads((pathlib.Path(workdir) / 'summary.json').read_text())
  except (OSError, ValueError):
    return None
  return done if done.get('state') == 'done' and done.get('step') == total and not done.get('end_error') else None


def _already_finished(run: Run, resume_step) -> dict | None:
  """A finished run re-run (its summary.json says done at the last step, with no failed end-of-run work):
  says so and returns that summary; nothing is written. None otherwise."""
  total = run.setup.total_steps
  if resume_step != total or jax.process_count() > 1:   # several processes: the end as before (no shared read)
    return None
  done = finished_summary(run.workdir, total)
  if done is None:
    return None
  run.mgr.close()
  run.log(f'run already finished: step {total} of {total}, summary.json in {run.workdir.absolute()}; '
          f'nothing to do (delete summary.json to redo the end-of-run evaluation)')
  return done


def _end_failed(run: Run, what: str, e: BaseException) -> None:
  """End-of-run work failed: one line on stderr; summary.json records it (exit code 1)."""
  msg = (f'{what} failed: {type(e).__name__}: {e} '.replace('\n', ' ') +
         f'(the run is finished: checkpoint of step {run.step} and summary.json are saved; re-run the same '
         f'command to retry it)')
  run.end_error = msg
  run.eval_loss = run.eval_bpb = None   # not an older step's values
  run.eval_row = {}
  print(f'error: {msg}', file=sys.stderr, flush=True)


def _write_run_files(run: Run) -> None:
  """config.json and the tokenizer (for sample/eval/export); a stale summary.json goes. Before: the changes of a
  resumed run's config are recorded and its earlier segments read (run_history.begin)."""
  if run.is_main:
    run.workdir.mkdir(parents=True, exist_ok=True)
    run_history.begin(run)
    _write_json(run.workdir / 'config.json', to_dict(run.cfg))
    run.data.tokenizer.save(str(run.workdir / checkpoint.TOKENIZER_DIR))
    (run.workdir / 'summary.json').unlink(missing_ok=True)


# ----------------------------------------------------------------------------- phase: state
def _restore_or_init(run: Run, resume_step) -> None:
  """The state: initialised into its shardings, then restored from a checkpoint or imported params."""
  cfg, setup = run.cfg, run.setup
  src = branch.prepare(cfg, run.workdir, dataclasses.asdict(setup.dims), run.log) if resume_step is None else None
  run.mgr = checkpoint.manager(run.workdir, keep=cfg.train.keep_checkpoints,
                               keep_steps=cfg.train.get('ckpt_steps', ()))
  state = init_state(setup, pack.init_seed(cfg.train))
  if src is not None:
    state = branch.start(state, src, mesh=setup.mesh, train_loader=run.data.train_loader,
                         total_steps=setup.total_steps, log=run.log)
    run.start_step = run.step = src.step
  elif resume_step is not None:
    restored = checkpoint.restore(run.mgr, resume_step, params_target=state['params'],
                                  opt_target=state['opt_state'])
    state = dict(params=restored['params'], opt_state=restored['opt_state'],
                 step=jax.device_put(jnp.asarray(resume_step, jnp.int32), sharding.replicated(setup.mesh)))
    if restored['data']:
      run.data.train_loader.set_state(restored['data'])
    run.start_step = run.step = resume_step
    run.log(f'resumed from {run.workdir / checkpoint.CKPT_DIR / str(resume_step)} (step {resume_step})')
  else:
    imported = checkpoint.load_imported_params(run.workdir, state['params'])
    if imported is not None:
      state['params'] = imported
      run.log('starting from imported params')
  run.state = state


def _describe(run: Run) -> None:
  cfg, dims, setup = run.cfg, run.setup.dims, run.setup
  counts = accounting.count_params(dims)
  run.log(f'model: {counts["total"]:,} params ({counts["non_embedding"]:,} non-embedding), '
          f'{dims.num_layers}L d={dims.d_model} H={dims.num_heads} G={dims.num_kv_heads} T={cfg.model.seq_len} '
          f'V={dims.vocab_size} dtype={dims.dtype} | mesh {dict(setup.mesh.shape)} | {setup.total_steps} steps x '
          f'{run.tokens_per_step:,} tokens')
  if run.debug and run.is_main:
    print('\n'.join(sharding.describe(run.state['params'])), flush=True)


# ----------------------------------------------------------------------------- phase: the loop
def _periodic_actions(run: Run, extra=()) -> Hooks:
  """Every periodic action of the loop, in the order they run after a step."""
  t = run.cfg.train
  hooks = Hooks()
  hooks.add('log', _log_action(run), every=t.log_every)
  hooks.hooks.extend(extra)   # after the log action: they may read the loss it fetched
  # the checkpoint before the eval: the last step is saved before the end-of-run eval, which may fail
  hooks.add('checkpoint', lambda r: _save(r, r.step), every=t.ckpt_every, steps=t.get('ckpt_steps', ()))
  if run.eval_sets:   # none with data.val_fraction=0 and no train.eval_sets: nothing to evaluate
    hooks.add('eval', _eval_action, every=t.eval_every)
  # after every step but the last, in every process (the multi-process stop protocol counts on it)
  hooks.add('stop check', _stop_check, every=1, at_last=False, reads_state=False)
  return hooks


def _loop(run: Run, hooks: Hooks, prof) -> dict | None:
  """Steps until the end, a stop signal or divergence; None when the run reached its last step."""
  total = run.setup.total_steps
  run.writer = MetricsWriter(run.workdir, enabled=run.is_main, start_step=run.start_step, config=run.cfg)
  run.progress = Progress(total, run.start_step, enabled=run.is_main and not run.quiet)
  run.timer = StepTimer()
  ctx = jax.disable_jit() if run.debug else contextlib.nullcontext()
  if run.debug:
    jax.config.update('jax_debug_nans', True)
  try:
    with ctx:
      _steps(run, hooks, prof, total)
  except TrainError as e:
    _close_loop(run)
    print(f'error: {e}', file=sys.stderr, flush=True)
    return dict(state='diverged', step=run.step, error=str(e), exit_code=EXIT_DIVERGED)
  finally:
    if run.debug:
      jax.config.update('jax_debug_nans', False)
  _close_loop(run)
  if run.stopped:
    return _stop_result(run.stop.signum, run.step)
  return None


def _steps(run: Run, hooks: Hooks, prof, total: int) -> None:
  """The loop proper: the pure step, then the periodic actions that are due."""
  train_step = None
  while run.step < total and not run.stopped:
    local = next(run.data.train_loader)
    if train_step is None:
      train_step = (make_train_step(run.setup.graphdef, run.setup.tx, run.cfg.train) if run.debug
                    else jit_train_step(run.setup, tuple(sorted(local))))
    if prof and run.step == prof[0]:
      jax.profiler.start_trace(str(run.workdir / 'profile'))
    batch = sharding.global_batch(local, run.setup.mesh)
    t0 = time.time()
    run.state, run.metrics = train_step(run.state, batch)
    if run.t_compile is None:
      _after_compile(run, t0)
    elif getattr(run.data.train_loader, 'changed', None):   # train.batch_schedule: a new batch size compiles
      batch_schedule.after_change(run, t0)
    if prof and run.step + 1 == prof[1]:
      jax.block_until_ready(run.metrics)
      jax.profiler.stop_trace()
      run.log(f'profile of steps {prof[0]}:{prof[1]} written to {run.workdir / "profile"}')
    run.step += 1
    checkpoint.check_pending_save(run.mgr)   # a failed async save stops the run now, not at the next save
    run.unchecked.append((run.step, run.metrics))
    check_finite(run, before=run.step)   # the previous step: its result is ready by now
    row = {}
    for hook in hooks.due(run.step, total):
      if hook.reads_state:
        check_finite(run)
      row |= hook.fn(run) or {}
    if row:
      _write_row(run, row)


def _after_compile(run: Run, t0: float) -> None:
  jax.block_until_ready(run.metrics)
  run.t_compile = time.time() - t0
  run.log(f'first step (compile) {run.t_compile:.1f}s')
  hostmem.hold_heap()   # compiled: from now on reuse freed step buffers (scaling/base/hostmem.py)
  run.timer.mark(run.step + 1)        # throughput and the ETA count from the first compiled step on
  run.progress.start_timing(run.step + 1)


def _log_action(run: Run):
  dims = run.setup.dims
  fpt = accounting.flops_per_token(dims)
  peak, source = device_peak_flops(dims.dtype, run.cfg.train.peak_flops)

  def log_row(run: Run) -> dict:
    row = {'train/loss': run.loss, 'train/grad_norm': float(run.metrics['grad_norm']),
           'train/lr': float(run.setup.schedule(run.step - 1))}
    row |= mixture_run.train_rows(run)   # a data mixture: train/<source>/loss ({} otherwise)
    since = run.timer.step
    dt = run.timer.seconds_per_step(run.step)   # None on the compile step: no rate to show
    if dt is not None:
      tps = batch_schedule.tokens_per_step_between(run, since, run.step) / dt
      util, capped = mfu(fpt, tps, peak, jax.device_count())
      if capped and not run.shown.get('capped'):
        run.progress.write(f'note: {tps:,.0f} tokens/s is above the peak of {peak:.3g} FLOP/s per device '
                           f'({source}); MFU is shown capped at 100%. Set train.peak_flops to the real peak')
      row |= {'throughput/tokens_per_s': tps, 'throughput/step_s': dt, 'throughput/mfu': util}
      row = {k: v for k, v in row.items() if v is not None}   # no MFU without a known peak
      run.tps_seen.append(tps)
      run.shown = dict(tps=tps, mfu='-' if util is None else f'{util:.1%}', capped=run.shown.get('capped') or capped)
    return row | batch_schedule.log_fields(run)   # tokens_seen (and the batch under train.batch_schedule)
  return log_row


def _eval_action(run: Run) -> dict:
  if run.step == run.setup.total_steps:   # the last step's eval is end-of-run work: its failure is not fatal
    run.mgr.wait_until_finished()         # the final checkpoint (saved by the hook before) and summary.json first
    summary(run, {}, run.t_start, quiet=True)
    try:
      result, row = do_eval_sets(run)
    except Exception as e:   # noqa: BLE001  (the checkpoint hook still saves this step)
      _end_failed(run, f'the evaluation at the last step ({run.step})', e)
      return {}
  else:
    result, row = do_eval_sets(run)
  if result is not None:   # None: the training corpus has no validation split (data.val_fraction=0)
    run.eval_loss, run.eval_bpb = result.loss, result.bpb
  run.progress.write(f'step {run.step}: eval {fmt(run.eval_loss)}, bpb {fmt(run.eval_bpb)} '
                     f'(bpb: {evalsets.describe(row, run.eval_sets)})')
  run.timer.mark(run.step)   # eval time is not training throughput
  return row


def _write_row(run: Run, row: dict) -> None:
  """One metrics row per step (whatever the actions of that step computed) and the progress line."""
  run.writer.write(run.step, row)
  shown = {'loss': f'{run.loss:.3f}'}
  if 'tps' in run.shown:   # none before the first timed step
    shown |= {'tok/s': f'{run.shown["tps"]:,.0f}', 'mfu': run.shown['mfu']}
  run.progress.update(run.step, shown)


def _save(run: Run, step: int, force: bool = False) -> None:
  if step == run.saved_step:   # a signal on a checkpoint step: this step is already saved
    return
  run.saved_step = step
  meta = dict(step=step, seed=run.cfg.train.seed, model=dataclasses.asdict(run.setup.dims),
              tokens_seen=batch_schedule.tokens_seen(run, step))
  checkpoint.save(run.mgr, step, params=run.state['params'], opt_state=run.state['opt_state'], meta=meta,
                  data_state=run.data.train_loader.get_state(), force=force)
  run_history.record_segment(run)   # this segment so far: kept if the run is killed later


def _stop_check(run: Run) -> None:
  """A stop signal (agreed by all processes): save this step, wait for the save, say how to resume."""
  if run.step >= run.setup.total_steps or not run.stop.should_stop(run.step):
    return
  check_finite(run)
  _save(run, run.step, force=True)
  run.mgr.wait_until_finished()
  name = signal.Signals(run.stop.signum).name
  run.progress.write(f'{name} received: saved checkpoint at step {run.step} in '
                     f'{run.workdir / checkpoint.CKPT_DIR}; re-run the same command to resume')
  run.stopped = True


def _close_loop(run: Run) -> None:
  run.mgr.wait_until_finished()
  run_history.record_segment(run)
  run.mgr.close()
  run.progress.close()
  run.writer.close()


# ----------------------------------------------------------------------------- the final model
def _local_model(run: Run):
  """The final params as a Transformer on this process's first device (main process; None elsewhere).

  Every process takes part: the sharded params are gathered (a collective with several processes).
  """
  from jax.experimental import multihost_utils
  params = run.state['params']
  params = multihost_utils.process_allgather(params, tiled=True) if jax.process_count() > 1 else jax.device_get(params)
  if not run.is_main:
    return None
  return nnx.merge(run.setup.graphdef, jax.device_put(params, jax.local_devices()[0]))


def _parse_profile(spec: str):
  if not spec:
    return None
  try:
    a, b = (int(x) for x in spec.split(':'))
  except ValueError:
    raise ConfigError(f'--profile_steps must look like A:B (e.g. 10:15), got {spec!r}') from None
  if not 0 <= a < b:
    raise ConfigError(f'--profile_steps {spec}: need 0 <= A < B')
  return a, b


