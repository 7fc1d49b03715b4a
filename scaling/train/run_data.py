"""The data phase of a run: the checks before compiling (check_workdir), data preparation and the train
loader (prepare_data), the eval loader, and the barrier between processes. Used by loop.py and packed_loop.py.
"""

from __future__ import annotations

import dataclasses

import jax

from scaling.config.load import resolve_vocab
from scaling.train import checkpoint, evalsets, mixture_run, run_history
from scaling.train.runtime import Data, Run
from scaling.train.step import build_setup, resolve_dims


def check_workdir(cfg, workdir, log=print, *, allow=frozenset()) -> int | None:
  """Before compiling: the step to resume from, whose checkpoint must belong to this model and data settings.

  Returns None for a fresh workdir. The newest checkpoint that restores completely is chosen
  (checkpoint.select_resume_step: damaged newer steps are moved aside, one line each); if none
  is intact, CheckpointError names the steps tried and nothing is changed. A config that changes the
  math of the run (its config.json) beyond what `allow` permits is refused (run_history.check_changes).
  """
  step = checkpoint.select_resume_step(workdir, log=log)
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
  # the global batch of the checkpoint's last step and its data position (train.batch_schedule)
  from scaling.train import batch_schedule
  checkpoint.check_data_state(
      data_state, dict(seq_len=cfg.model.seq_len, global_batch_size=batch_schedule.expected_batch(cfg, step),
                       seed=cfg.train.seed, document_masking=cfg.data.document_masking), workdir)
  batch_schedule.check_data_position(data_state, cfg, step, workdir)
  run_history.check_changes(cfg, workdir, allow)   # after the checkpoint's own checks: they name what cannot work
  return step


def prepare_data(run: Run, resume_step):
  """Prepares (or verifies) the data on the main process first; builds the train loader.

  Returns the resume step (re-checked when the model's vocab size came from the tokenizer).
  """
  from scaling.data import shards
  from scaling.data.loader import check_split, make_train_loader
  from scaling.data.mixture import prepare_any as prepare  # a data mixture too (scaling/data/mixture.py)
  from scaling.data.tokenizer import load_tokenizer
  cfg = run.cfg
  mixture_run.check_before_prepare(run, resume_step)   # a mixture source too small for its weight: before any work
  if run.is_main:
    summary = prepare(cfg.data, verbose=not run.quiet)
  sync('prepare')
  if not run.is_main:
    summary = prepare(cfg.data, verbose=False)
  data_dir = summary['data_dir']
  tokenizer = load_tokenizer(data_dir)
  if cfg.model.vocab_size == 0:   # follow the tokenizer (char, tiktoken: known only now)
    resolve_vocab(cfg, tokenizer.vocab_size)
    run.setup = build_setup(cfg)
    resume_step = check_workdir(cfg, run.workdir, log=run.log, allow=run.allow_change)
  else:
    resolve_vocab(cfg, tokenizer.vocab_size)   # an explicit size: errors naming both fields
  data_state = None
  if resume_step is not None:   # before anything is written: the checkpoint's data must be this split
    mgr = checkpoint.manager(run.workdir, async_save=False)
    data_state = checkpoint.read_meta(mgr, resume_step, 'data')
    mgr.close()
    check_split(data_state, data_dir, run.workdir)
  nproc, pidx = jax.process_count(), jax.process_index()
  local_batch = cfg.train.batch_size // nproc
  if summary.get('mixture'):   # each source's own order and position (scaling/train/mixture_run.py)
    loader = mixture_run.make_loader(run, summary, local_batch, resume_step, data_state)
  else:
    loader = make_train_loader(data_dir, seq_len=cfg.model.seq_len, batch_size=local_batch, seed=cfg.train.seed,
                               process_index=pidx, process_count=nproc, document_masking=cfg.data.document_masking)
    from scaling.train import batch_schedule
    loader = batch_schedule.wrap(cfg, loader, nproc, run.log)   # train.batch_schedule: the batch of every step
  bpt = summary.get('bytes_per_token_val') or summary.get('bytes_per_token')
  run.data = Data(data_dir, tokenizer, loader, bpt, local_batch)
  if 'val' in shards.read_index(data_dir).get('splits', {}):
    run.eval_sets = evalsets.prepare_eval_sets(cfg, summary, tokenizer, is_main=run.is_main, sync=sync,
                                               log=run.log)
  else:   # data.val_fraction=0: nothing held out, here nor of the tagged sets (evalsets.py refuses them)
    run.eval_skipped = 'data.val_fraction=0: no validation split'
    run.log(f'{run.eval_skipped}: the evaluations (train.eval_every, the end of the run, train.eval_sets) are '
            f'skipped; eval/loss and eval/bpb are null in summary.json')
  return resume_step


def eval_loader(run: Run, seq_len: int, data_dir: str | None = None):
  from scaling.data.loader import make_eval_loader
  return make_eval_loader(data_dir or run.data.data_dir, seq_len=seq_len, batch_size=max(run.data.local_batch, 1),
                          process_index=jax.process_index(), process_count=jax.process_count(),
                          max_batches=run.cfg.train.eval_batches, document_masking=run.cfg.data.document_masking)


def sync(name: str):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
