"""Training: state, the jitted step, evaluation, and the loop with checkpoints and signals.

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
import math
import os
import pathlib
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from scaling import accounting, checkpoint, distributed, hostmem, sharding
from scaling.config import ConfigError, to_dict, train_steps
from scaling.loss import cross_entropy, fused_cross_entropy
from scaling.metrics import MetricsWriter, Progress, device_peak_flops
from scaling.model import ModelDims, Transformer, abstract_model
from scaling.optim import make_optimizer

EXIT_PREEMPTED = 75   # EX_TEMPFAIL: saved and stopped on a signal; re-running resumes
EXIT_DIVERGED = 3


class TrainError(RuntimeError):
  pass


# ----------------------------------------------------------------------------- loss
def model_loss(graphdef, params, batch, z_loss: float = 0.0, loss_chunk: int = 0):
  """(loss, (sum_nll, count)) of a batch; loss_chunk > 0: the fused chunked head+loss (scaling/loss.py)."""
  model = nnx.merge(graphdef, params)
  if loss_chunk:
    x_BTD, _ = model.hidden(batch['inputs'], segment_ids_BT=batch.get('segment_ids'))
    return fused_cross_entropy(x_BTD, model.head_weights(), batch['targets'], batch.get('mask'), z_loss,
                               chunk_rows=loss_chunk, dtype=model.dims.compute_dtype)
  logits = model(batch['inputs'], segment_ids_BT=batch.get('segment_ids'))
  return cross_entropy(logits, batch['targets'], batch.get('mask'), z_loss)


# ----------------------------------------------------------------------------- step
def make_train_step(graphdef, tx, train_cfg):
  """The pure step: (state, batch) -> (state, metrics). Gradient accumulation over microbatches."""
  M = train_cfg.microbatches
  z = train_cfg.z_loss
  chunk = train_cfg.get('loss_chunk', 0)

  def grad_fn(params, batch):
    (loss, aux), grads = jax.value_and_grad(lambda p: model_loss(graphdef, p, batch, z, chunk), has_aux=True)(params)
    return loss, grads

  def step(state, batch):
    params = state['params']
    if M == 1:
      loss, grads = grad_fn(params, batch)
    else:
      # microbatch m = rows m, m + M, m + 2M, ...: every device's contiguous slice of the batch
      # holds rows of every microbatch, so each microbatch stays split over all data-parallel devices
      # (a plain reshape to [M, B/M] puts a microbatch on B/M rows' devices and XLA all-gathers)
      micro = jax.tree.map(lambda x: x.reshape((x.shape[0] // M, M) + x.shape[1:]).swapaxes(0, 1), batch)

      def body(carry, mb):
        loss_acc, g_acc = carry
        loss, g = grad_fn(params, mb)
        return (loss_acc + loss, jax.tree.map(jnp.add, g_acc, g)), None
      zeros = jax.tree.map(jnp.zeros_like, params)
      (loss, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), micro)
      loss, grads = loss / M, jax.tree.map(lambda g: g / M, grads)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    params = optax.apply_updates(params, updates)
    new_state = dict(params=params, opt_state=opt_state, step=state['step'] + 1)
    return new_state, dict(loss=loss, grad_norm=grad_norm)

  return step


def make_eval_step(graphdef, loss_chunk: int = 0):
  def step(params, batch):
    _, (sum_nll, count) = model_loss(graphdef, params, batch, loss_chunk=loss_chunk)
    return sum_nll, count
  return step


# ----------------------------------------------------------------------------- setup
@dataclasses.dataclass
class Setup:
  cfg: Any
  dims: ModelDims
  mesh: Any
  graphdef: Any
  tx: Any
  schedule: Any
  total_steps: int
  state_sharding: Any
  param_sharding: Any


def resolve_dims(cfg, vocab_size: int | None = None) -> ModelDims:
  m = cfg.model
  if vocab_size is not None and m.vocab_size == 0:
    with m.unlocked():
      m.vocab_size = vocab_size
  return ModelDims.from_config(m)


def build_setup(cfg, mesh=None) -> Setup:
  """Everything that needs no data: dims, mesh, optimizer, abstract state and its shardings."""
  dims = resolve_dims(cfg)
  mesh = mesh or sharding.make_mesh(cfg.mesh)
  sharding.check_batch(cfg.train.batch_size, cfg.train.microbatches, mesh)
  total = train_steps(cfg)
  tx, sched = make_optimizer(cfg.train, total)
  abstract = abstract_model(dims)
  graphdef, abs_state = nnx.split(abstract)
  param_sh = nnx.to_pure_dict(sharding.param_shardings(abs_state, mesh))
  abs_params = nnx.to_pure_dict(abs_state)
  abs_opt = jax.eval_shape(tx.init, abs_params)
  rep = sharding.replicated(mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abs_opt, param_sh,
                                 transform_non_params=lambda _: rep,
                                 is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
  state_sh = dict(params=param_sh, opt_state=opt_sh, step=rep)
  return Setup(cfg, dims, mesh, graphdef, tx, sched, total, state_sh, param_sh)


def init_state(setup: Setup, seed: int):
  """Initialises params directly into their shardings (no host copy of a large model)."""
  dims, tx = setup.dims, setup.tx

  def init():
    model = Transformer(dims, rngs=nnx.Rngs(params=seed))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(params=params, opt_state=tx.init(params), step=jnp.zeros((), jnp.int32))
  return jax.jit(init, out_shardings=setup.state_sharding)()


def jit_train_step(setup: Setup, batch_keys):
  step = make_train_step(setup.graphdef, setup.tx, setup.cfg.train)
  bsh = {k: sharding.batch_sharding(setup.mesh) for k in batch_keys}
  rep = sharding.replicated(setup.mesh)
  return jax.jit(step, in_shardings=(setup.state_sharding, bsh), out_shardings=(setup.state_sharding, rep),
                 donate_argnums=(0,))


def jit_eval_step(setup: Setup):
  # the batch arrives already sharded over (data, fsdp) by sharding.global_batch
  return jax.jit(make_eval_step(setup.graphdef, setup.cfg.train.get('loss_chunk', 0)))


def evaluate(eval_step, params, loader, mesh) -> tuple[float, int]:
  """Mean loss (nats/token) over the eval loader, and the number of tokens."""
  total, count = 0.0, 0.0
  for local in loader:
    batch = sharding.global_batch(local, mesh)
    s, c = eval_step(params, batch)
    total += float(s)
    count += float(c)
  if count == 0:
    raise TrainError('the validation split produced no tokens; use a larger corpus or a smaller seq_len')
  return total / count, int(count)


# ----------------------------------------------------------------------------- signals
class StopFlag:
  """SIGTERM / SIGINT: finish the current step, save, exit. A second SIGINT exits at once.

  With several processes every process must stop after the same step (see
  distributed.StopSync): JAX's preemption service then owns SIGTERM.
  """

  def __init__(self):
    self.signum = None
    self._old = {}
    self._sync = None

  def __enter__(self):
    self._sync = distributed.StopSync()
    for s in (signal.SIGTERM, signal.SIGINT):
      if s == signal.SIGTERM and self._sync.handles_sigterm():
        continue
      self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    self._sync.notify(signum)

  def should_stop(self, step: int) -> bool:
    """Whether to save and exit after `step`; called after every step in every process."""
    if self._sync.should_stop(step, self.signum is not None):
      self.signum = self.signum or signal.SIGTERM
      return True
    return False

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


# ----------------------------------------------------------------------------- the run
def _write_json(path, obj):
  tmp = pathlib.Path(str(path) + '.tmp')
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def check_workdir(cfg, workdir) -> int | None:
  """Before compiling: a checkpoint in the workdir must belong to this model and data settings.

  Returns its step (None for a fresh workdir).
  """
  step = checkpoint.latest_step(workdir)
  if step is None:
    return None
  mgr = checkpoint.manager(workdir, async_save=False)
  meta = checkpoint.read_meta(mgr, step)
  data_state = checkpoint.read_meta(mgr, step, 'data')
  mgr.close()
  checkpoint.check_compatible(meta, dataclasses.asdict(resolve_dims(cfg)), workdir)
  # the loader's settings (scaling/data/loader.py), which TrainLoader.set_state would reject only
  # after the compile and after config.json was overwritten
  # the number of processes may change (elastic restart): the state counts global batches, so only
  # the global batch must match
  if data_state and 'batch_size' in data_state:
    data_state = dict(data_state, global_batch_size=data_state['batch_size'] * data_state.get('process_count', 1))
  checkpoint.check_data_state(
      data_state, dict(seq_len=cfg.model.seq_len, global_batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                       document_masking=cfg.data.document_masking), workdir)
  return step


def train(cfg, workdir, *, debug: bool = False, profile_steps: str = '', quiet: bool = False) -> dict:
  """Runs (or resumes) training in `workdir`; returns the summary dict (also written to summary.json)."""
  t_start = time.time()
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  log = (lambda *a: print(*a, flush=True)) if (is_main and not quiet) else (lambda *a: None)

  # --- everything that can fail fast, before data or compile -----------------
  if cfg.model.vocab_size == 0 and cfg.data.tokenizer in ('bpe', 'unigram'):
    with cfg.model.unlocked():
      cfg.model.vocab_size = cfg.data.vocab_size
  setup = build_setup(cfg) if cfg.model.vocab_size else None
  resume_step = check_workdir(cfg, workdir) if setup else None
  prof = _parse_profile(profile_steps)

  # From here on a SIGTERM/SIGINT is a request to stop cleanly (exit 75, resumable), also during data
  # preparation and restore: one process stops at the next phase boundary, several at the first step.
  with StopFlag() as stop:
    return _train(cfg, workdir, setup, resume_step, prof, stop, t_start=t_start, is_main=is_main, log=log,
                  debug=debug, quiet=quiet)


def _stopped_before_training(stop, what: str, step, log) -> dict | None:
  """The preempted result if one process got a stop signal before its first step (else None)."""
  if stop.signum is None or jax.process_count() > 1:   # several processes: synced at the first step
    return None
  name = signal.Signals(stop.signum).name
  log(f'{name} received during {what}, before training started: nothing new to save; '
      f're-run the same command to resume')
  return dict(state='preempted', step=step or 0, exit_code=EXIT_PREEMPTED)


def _train(cfg, workdir, setup, resume_step, prof, stop, *, t_start, is_main, log, debug, quiet) -> dict:
  from scaling.data import load_tokenizer, make_eval_loader, make_train_loader, prepare

  # --- data -----------------------------------------------------------------
  if is_main:
    summary = prepare(cfg.data, verbose=not quiet)
  _sync('prepare')
  if not is_main:
    summary = prepare(cfg.data, verbose=False)
  if (r := _stopped_before_training(stop, 'data preparation', resume_step, log)):
    return r
  data_dir = summary['data_dir']
  tokenizer = load_tokenizer(data_dir)
  if cfg.model.vocab_size == 0:
    with cfg.model.unlocked():
      cfg.model.vocab_size = tokenizer.vocab_size
    setup = build_setup(cfg)
    resume_step = check_workdir(cfg, workdir)
  if tokenizer.vocab_size > cfg.model.vocab_size:
    raise ConfigError(f'the tokenizer in {data_dir} has {tokenizer.vocab_size} tokens but model.vocab_size='
                      f'{cfg.model.vocab_size}: token ids would fall outside the embedding. Set '
                      f'--config.model.vocab_size={tokenizer.vocab_size} or larger')
  dims, mesh, T = setup.dims, setup.mesh, cfg.model.seq_len
  nproc, pidx = jax.process_count(), jax.process_index()
  local_batch = cfg.train.batch_size // nproc
  train_loader = make_train_loader(data_dir, seq_len=T, batch_size=local_batch, seed=cfg.train.seed,
                                   process_index=pidx, process_count=nproc,
                                   document_masking=cfg.data.document_masking)
  bpt_val = summary.get('bytes_per_token_val') or summary.get('bytes_per_token')

  def eval_loader():
    return make_eval_loader(data_dir, seq_len=T, batch_size=max(local_batch, 1), process_index=pidx,
                            process_count=nproc, max_batches=cfg.train.eval_batches,
                            document_masking=cfg.data.document_masking)

  # --- workdir files ----------------------------------------------------------
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    _write_json(workdir / 'config.json', to_dict(cfg))
    tokenizer.save(str(workdir / checkpoint.TOKENIZER_DIR))
    (workdir / 'summary.json').unlink(missing_ok=True)

  # --- state ------------------------------------------------------------------
  counts = accounting.count_params(dims)
  fpt = accounting.flops_per_token(dims)
  mgr = checkpoint.manager(workdir, keep=cfg.train.keep_checkpoints)
  state = init_state(setup, cfg.train.seed)
  start_step = 0
  if resume_step is not None:
    restored = checkpoint.restore(mgr, resume_step, params_target=state['params'],
                                  opt_target=state['opt_state'])
    state = dict(params=restored['params'], opt_state=restored['opt_state'],
                 step=jax.device_put(jnp.asarray(resume_step, jnp.int32), sharding.replicated(mesh)))
    if restored['data']:
      train_loader.set_state(restored['data'])
    start_step = resume_step
    log(f'resumed from {workdir / checkpoint.CKPT_DIR / str(resume_step)} (step {resume_step})')
  else:
    imported = checkpoint.load_imported_params(workdir, state['params'])
    if imported is not None:
      state['params'] = imported
      log('starting from imported params')

  if (r := _stopped_before_training(stop, 'state initialisation and restore', resume_step, log)):
    mgr.close()
    return r

  log(f'model: {counts["total"]:,} params ({counts["non_embedding"]:,} non-embedding), '
      f'{dims.num_layers}L d={dims.d_model} H={dims.num_heads} G={dims.num_kv_heads} T={T} V={dims.vocab_size} '
      f'dtype={dims.dtype} | mesh {dict(mesh.shape)} | {setup.total_steps} steps x '
      f'{cfg.train.batch_size * T:,} tokens')
  if debug and is_main:
    print('\n'.join(sharding.describe(state['params'])), flush=True)

  batch_keys = None
  train_step = eval_step = None
  peak, peak_src = device_peak_flops(dims.dtype, cfg.train.peak_flops)
  writer = MetricsWriter(workdir, enabled=is_main)
  progress = Progress(setup.total_steps, start_step, enabled=is_main and not quiet)
  tokens_per_step = cfg.train.batch_size * T
  last = dict(loss=float('nan'))
  eval_loss = eval_bpb = None
  step = start_step
  t_log, step_log = time.time(), start_step
  exit_code = 0
  pending = None   # (step, metrics) of the last dispatched step, checked one step late

  def check_finite(s, m):
    # the gradient norm too: a NaN gradient with a still-finite loss already wrote NaN params into
    # this step's state, which must not be checkpointed as the "last good" one
    loss, grad_norm = float(m['loss']), float(m['grad_norm'])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      what = f'loss is {loss}' if not math.isfinite(loss) else f'gradient norm is {grad_norm} (loss {loss:.4g})'
      raise TrainError(f'{what} at step {s}: training diverged. The last good checkpoint is kept in '
                       f'{workdir / checkpoint.CKPT_DIR}; lower train.lr or raise warmup, then re-run to resume.')
    return loss

  def do_eval(s):
    nonlocal eval_loss, eval_bpb, eval_step
    loader = eval_loader()
    if eval_step is None:
      eval_step = jit_eval_step(setup)
    eval_loss, _ = evaluate(eval_step, state['params'], loader, mesh)
    eval_bpb = eval_loss / math.log(2) / bpt_val
    return {'eval/loss': eval_loss, 'eval/bpb': eval_bpb}

  saved = {'step': None}

  def do_save(s, force=False):
    if s == saved['step']:   # a signal on a checkpoint step: this step is already saved
      return
    saved['step'] = s
    meta = dict(step=s, seed=cfg.train.seed, model=dataclasses.asdict(dims), tokens_seen=s * tokens_per_step)
    checkpoint.save(mgr, s, params=state['params'], opt_state=state['opt_state'], meta=meta,
                    data_state=train_loader.get_state(), force=force)

  ctx = jax.disable_jit() if debug else contextlib.nullcontext()
  if debug:
    jax.config.update('jax_debug_nans', True)
  t_compile = None
  try:
    with ctx:
      while step < setup.total_steps:
        local = next(train_loader)
        if batch_keys is None:
          batch_keys = tuple(sorted(local))
          train_step = (make_train_step(setup.graphdef, setup.tx, cfg.train) if debug
                        else jit_train_step(setup, batch_keys))
        if prof and step == prof[0]:
          jax.profiler.start_trace(str(workdir / 'profile'))
        batch = sharding.global_batch(local, mesh)
        t0 = time.time()
        state, metrics = train_step(state, batch)
        if t_compile is None:
          jax.block_until_ready(metrics)
          t_compile = time.time() - t0
          log(f'first step (compile) {t_compile:.1f}s')
          hostmem.hold_heap()   # compiled: from now on reuse freed step buffers (scaling/hostmem.py)
          t_log, step_log = time.time(), step + 1
        if prof and step + 1 == prof[1]:
          jax.block_until_ready(metrics)
          jax.profiler.stop_trace()
          log(f'profile of steps {prof[0]}:{prof[1]} written to {workdir / "profile"}')
        if pending is not None:
          last['loss'] = check_finite(*pending)
        pending = (step + 1, metrics)
        step += 1
        row = None
        if step % cfg.train.log_every == 0 or step == setup.total_steps:
          last['loss'] = check_finite(*pending)
          now = time.time()
          dt = (now - t_log) / max(step - step_log, 1)
          t_log, step_log = now, step
          tps = tokens_per_step / dt
          row = {'train/loss': last['loss'], 'train/grad_norm': float(metrics['grad_norm']),
                 'train/lr': float(setup.schedule(step - 1)), 'throughput/tokens_per_s': tps,
                 'throughput/step_s': dt, 'throughput/mfu': fpt * tps / (peak * jax.device_count()),
                 'tokens_seen': step * tokens_per_step}
        if step % cfg.train.eval_every == 0 or step == setup.total_steps:
          check_finite(*pending)
          row = (row or {}) | do_eval(step)
          progress.write(f'step {step}: eval loss {eval_loss:.4f}, bpb {eval_bpb:.4f}')
          t_log, step_log = time.time(), step   # eval time is not training throughput
        if row:
          writer.write(step, row)
          if 'throughput/tokens_per_s' in row:
            last['tps'], last['mfu'] = row['throughput/tokens_per_s'], row['throughput/mfu']
          progress.update(step, {'loss': f'{last["loss"]:.3f}', 'tok/s': f'{last.get("tps", 0):,.0f}',
                                 'mfu': f'{last.get("mfu", 0):.1%}'})
        if step % cfg.train.ckpt_every == 0 or step == setup.total_steps:
          check_finite(*pending)
          do_save(step)
        if step < setup.total_steps and stop.should_stop(step):
          check_finite(*pending)
          do_save(step, force=True)
          mgr.wait_until_finished()
          name = signal.Signals(stop.signum).name
          progress.write(f'{name} received: saved checkpoint at step {step} in {workdir / checkpoint.CKPT_DIR}; '
                         f're-run the same command to resume')
          exit_code = EXIT_PREEMPTED
          break
  except TrainError as e:
    mgr.wait_until_finished()
    progress.close()
    writer.close()
    print(f'error: {e}', file=sys.stderr, flush=True)
    return dict(state='diverged', step=step, error=str(e), exit_code=EXIT_DIVERGED)
  finally:
    if debug:
      jax.config.update('jax_debug_nans', False)
  mgr.wait_until_finished()
  mgr.close()
  progress.close()
  writer.close()
  if exit_code:
    return dict(state='preempted', step=step, exit_code=exit_code)

  if eval_loss is None:
    do_eval(step)
  extra_evals = {}
  for L in cfg.train.final_eval_lengths:   # length generalisation (e.g. twice the training context)
    L = int(L)
    if dims.position == 'learned' and L > T:
      value = None   # learned positions have no rows past the training length
    else:
      loader = make_eval_loader(data_dir, seq_len=L, batch_size=max(local_batch, 1), process_index=pidx,
                                process_count=nproc, max_batches=cfg.train.eval_batches,
                                document_masking=cfg.data.document_masking)
      value = evaluate(eval_step, state['params'], loader, mesh)[0] / math.log(2) / bpt_val
    extra_evals[f'eval/bpb@{L}'] = value
    if L == 2 * T:
      extra_evals['eval/bpb@2x'] = value
  if not math.isfinite(last['loss']):   # resumed a finished run: report its last logged loss
    from scaling.metrics import read_metrics
    logged = [r['train/loss'] for r in read_metrics(workdir) if 'train/loss' in r] if is_main else []
    last['loss'] = logged[-1] if logged else float('nan')
  result = {
      'state': 'done', 'step': step, 'params': counts['total'], 'non_embedding_params': counts['non_embedding'],
      'tokens': setup.total_steps * tokens_per_step, 'flops': fpt * setup.total_steps * tokens_per_step,
      'flops_per_token': fpt, 'train/loss': last['loss'], 'eval/loss': eval_loss, 'eval/bpb': eval_bpb,
      'throughput/tokens_per_s': _median_tps(workdir) if is_main else None, 'compile_s': t_compile,
      'peak_flops': peak, 'peak_source': peak_src, 'wall_s': time.time() - t_start, 'exit_code': 0,
      **extra_evals,
  }
  if is_main:
    _write_json(workdir / 'summary.json', result)
    log(f'done: {step} steps, train loss {last["loss"]:.4f}, eval loss {eval_loss:.4f}, eval bpb {eval_bpb:.4f}, '
        f'{result["wall_s"]:.0f}s')
  return result


def _median_tps(workdir):
  from scaling.metrics import read_metrics
  vals = [r['throughput/tokens_per_s'] for r in read_metrics(workdir) if 'throughput/tokens_per_s' in r]
  return float(np.median(vals)) if vals else None


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


def _sync(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
