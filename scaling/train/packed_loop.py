"""Training K packed members in one process: each member stays a run of its own workdir.

    members (config, workdir) -> pack.check_members -> one data loader (shared batches)
    -> restore each member's checkpoint (or init with its seed) -> stack -> packed step (packed.py)
    -> per member: metrics.jsonl, checkpoints, evals, summary.json, exactly the files a single run writes

A member's workdir is indistinguishable from a single run's: `scaling eval / sample / export` open it, a
cooldown branch forks from it, `sweep collect` reads it. A member that diverges is frozen, its summary.json
says 'diverged' (exit code 3, like a single run), and the others train on. A stop signal saves every member
at the same step; a re-run resumes them all from it. Members already finished are left alone.

Cooldown branches pack too (train.init_from, scaling/train/branch.py): every member forks at the same step,
each from its own parent (pack.check_members compares the steps). A fresh member starts from what a single
branch restores, its parent's params, optimizer state and data position at the fork (the parents' positions
must agree: one loader serves every member), and counts from the fork step: its metrics.jsonl, checkpoints,
segments and summary.json (tokens and FLOPs with the parent's steps) are a single branch's. A missing or
incomplete parent checkpoint, another model or other data settings are refused before any compile, naming the
member. Once a member has checkpoints of its own it resumes from them and its parent is not read again.

Single-process only for now (several `jax.distributed` processes: train the members as separate runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
import signal
import sys
import time
from typing import Any

import jax
import numpy as np

from scaling.base import hostmem
from scaling.base.names import EXIT_DIVERGED
from scaling.base.workdir_lock import WorkdirLock
from scaling.config import pack
from scaling.config.load import ConfigError, train_steps
from scaling.model import accounting
from scaling.train import branch, checkpoint, loop, run_data, run_end, sharding
from scaling.train import packed as packed_lib
from scaling.train.checkpoint import CheckpointError
from scaling.train.metrics import MetricsWriter, Progress, device_peak_flops, mfu
from scaling.train.runtime import Run, StepTimer, StopFlag


@dataclasses.dataclass
class Member:
  index: int
  run: Run          # the member's own Run: its config, setup (its lr schedule), workdir, writer, evals
  alive: bool = True
  error: str | None = None
  src: Any = None   # a fresh cooldown branch: its parent's checkpoint (branch.Source), found before the data


def train_packed(cfgs: list, workdirs: list, *, members_axis: str | None = None, layout: str = 'vmap',
                 quiet: bool = False) -> dict:
  """Trains (or resumes) the members (cfgs[i] in workdirs[i]) in one packed run.

  Returns {'state', 'exit_code', 'members': [each member's summary dict]}; exit code 0 when every member
  is done, else the first member's non-zero code (a diverged member: 3; a stop signal: 75).
  """
  t_start = time.time()
  workdirs = [pathlib.Path(w) for w in workdirs]
  log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
  if len(cfgs) != len(workdirs) or not cfgs:
    raise ConfigError(f'{len(cfgs)} configs for {len(workdirs)} workdirs: give one workdir per member')
  if len({w.resolve() for w in workdirs}) != len(workdirs):
    raise ConfigError('two members share a workdir: give each member its own')
  try:
    pack.check_members(cfgs)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if layout not in packed_lib.LAYOUTS:
    raise ConfigError(f'--layout {layout!r} is unknown; choose one of {", ".join(packed_lib.LAYOUTS)}')
  if jax.process_count() > 1:
    raise ConfigError('packed runs are single-process for now; with several processes train the members as '
                      'separate runs')
  todo = [i for i, (c, w) in enumerate(zip(cfgs, workdirs)) if loop.finished_summary(w, train_steps(c)) is None]
  for i in sorted(set(range(len(cfgs))) - set(todo)):
    log(f'member {i} ({workdirs[i]}): already finished; left alone')
  if not todo:
    return dict(state='done', exit_code=0, members=[json.loads((w / 'summary.json').read_text()) for w in workdirs])
  cfgs, workdirs = [cfgs[i] for i in todo], [workdirs[i] for i in todo]
  for cfg in cfgs:
    if cfg.model.vocab_size == 0 and cfg.data.tokenizer in ('bpe', 'unigram'):
      with cfg.model.unlocked():
        cfg.model.vocab_size = cfg.data.vocab_size
  srcs = _branch_sources(cfgs, workdirs, log)   # a fresh branch's parent checkpoint: checked before data or compile
  with contextlib.ExitStack() as locks:
    for w in workdirs:
      locks.enter_context(WorkdirLock(w, log=log))
    with StopFlag() as stop:
      members = _members(cfgs, workdirs, stop, log, quiet)
      for m, src in zip(members, srcs):
        m.src = src
      results = _train(members, members_axis, layout, t_start, log)
  codes = [r.get('exit_code', 0) for r in results]
  bad = [c for c in codes if c]
  state = 'done' if not bad else ('diverged' if bad[0] == EXIT_DIVERGED else results[codes.index(bad[0])]['state'])
  return dict(state=state, exit_code=bad[0] if bad else 0, members=results)


def _members(cfgs, workdirs, stop, log, quiet) -> list[Member]:
  out = []
  for i, (cfg, w) in enumerate(zip(cfgs, workdirs)):
    setup = loop.build_setup(cfg) if cfg.model.vocab_size else None
    run = Run(cfg, setup, w, stop, log if i == 0 else (lambda *a: None), True, quiet=quiet)
    out.append(Member(i, run))
  return out


def _resume_step(members: list[Member], log):
  steps = []
  for m in members:
    r = m.run
    steps.append(loop.check_workdir(r.cfg, r.workdir, log=log) if r.setup else None)
  if len(set(steps)) > 1:
    listed = ', '.join(f'{m.run.workdir}: {s}' for m, s in zip(members, steps))
    raise ConfigError(f'the members would resume from different steps ({listed}); a packed run resumes them '
                      f'together. Train them as separate runs, or move the newer checkpoints away')
  return steps[0]


def _train(members: list[Member], members_axis, layout, t_start, log) -> list[dict]:
  lead = members[0].run
  vocab_later = lead.setup is None   # the tokenizer sets the vocab (char, tiktoken): no setup, no check yet
  resume = _resume_step(members, log)
  resume = run_data.prepare_data(lead, resume)   # the lead's tokenizer may resolve the vocab of every member
  for m in members[1:]:
    if m.run.setup is None or m.run.cfg.model.vocab_size != lead.cfg.model.vocab_size:
      from scaling.config.load import resolve_vocab
      resolve_vocab(m.run.cfg, lead.data.tokenizer.vocab_size)
      m.run.setup = loop.build_setup(m.run.cfg, lead.setup.mesh)
    m.run.data, m.run.eval_sets, m.run.eval_skipped = lead.data, lead.eval_sets, lead.eval_skipped
  if vocab_later and resume is not None:   # only now can each member's checkpoint be checked against its model
    resume = _resume_step(members, log)
  for m in members[1:]:
    m.run.setup = dataclasses.replace(m.run.setup, mesh=lead.setup.mesh, graphdef=lead.setup.graphdef)
  packed = packed_lib.build_packed(lead.setup, len(members), members_axis)
  state, start = _restore_or_init(members, packed, resume, log)
  for m in members:
    loop._write_run_files(m.run)
    m.run.t_start = t_start
  k = len(members)
  forked = f'; cooldown branches from step {start}' if resume is None and start else ''
  log(f'packed: {k} member(s) in one step ({layout}), members axis {members_axis or "replicated"}; they differ in '
      f'{_differing(members) or "nothing (identical configs)"}{forked}')
  loop._describe(lead)
  state = _loop(members, packed, state, start, layout)
  return _finish(members, packed, state, t_start)


def _differing(members) -> str:
  out = []
  for key in pack.PACKABLE:
    section, _, name = key.rpartition('.')
    vals = [(m.run.cfg[section][name] if section else m.run.cfg[name]) for m in members]
    if len({json.dumps(v) for v in vals}) > 1:
      out.append(f'{key} {vals}')
  return '; '.join(out)


def _branch_sources(cfgs, workdirs, log) -> list:
  """Each member's cooldown-branch source (branch.find_source: its own parent's workdir and fork step, checked to
  be there and complete; nothing is read into memory) when it starts from train.init_from with no checkpoint of its
  own, else None. BranchError naming the member when a parent's checkpoint is missing; ConfigError when the
  members would fork at different steps (pack.check_members has compared the steps written; this compares the
  steps found, e.g. of an init_from that names no step)."""
  from scaling.config.history import checkpoint_steps
  srcs = []
  for i, (cfg, w) in enumerate(zip(cfgs, workdirs)):
    if not cfg.train.get('init_from', '') or checkpoint_steps(w):
      srcs.append(None)
      continue
    try:
      srcs.append(branch.find_source(cfg, w, log))
    except branch.BranchError as e:
      raise branch.BranchError(f'packed member {i} ({w}): {e}') from None
  forks = {s.step for s in srcs if s is not None}
  if len(forks) > 1 or (forks and None in srcs):
    listed = ', '.join(f'{w}: {f"step {s.step} of {s.workdir}" if s else "its own checkpoint"}'
                       for w, s in zip(workdirs, srcs))
    raise ConfigError(f'the packed members would start from different steps ({listed}); the cooldown branches of '
                      f'one packed run all fork at one step. Train the others as separate runs, or pack them by '
                      f'fork step')
  return srcs


def _restore_or_init(members: list[Member], packed, resume, log) -> tuple[dict, int]:
  """(the packed state, its step): each member restored from its own checkpoint of step `resume`, else started
  from its parent's checkpoint (a cooldown branch), else initialised with its seed."""
  for m in members:
    r = m.run
    r.mgr = checkpoint.manager(r.workdir, keep=r.cfg.train.keep_checkpoints, keep_steps=r.cfg.train.get('ckpt_steps', ()))
  abstract = jax.eval_shape(lambda: packed_lib.init_packed(packed, [0] * packed.K))
  one = {k: jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=s), abstract[k],
                         packed.member_sharding[k]) for k in ('params', 'opt_state')}
  if resume is None:
    srcs = [m.src for m in members]
    if any(s is None and m.run.cfg.train.get('init_from', '') for s, m in zip(srcs, members)):
      # a branch whose own checkpoints were all damaged (moved aside by check_workdir): it starts from its parent
      srcs = _branch_sources([m.run.cfg for m in members], [m.run.workdir for m in members], log)
    if srcs[0] is not None:
      return _start_branches(members, packed, srcs, one, log), srcs[0].step
    for m in members:
      r = m.run
      if (r.workdir / checkpoint.IMPORTED_DIR).exists():
        raise ConfigError(f'{r.workdir} holds imported params; a packed member cannot start from them yet')
    return packed_lib.init_packed(packed, [pack.init_seed(m.run.cfg.train) for m in members]), 0
  restored, data_state = [], None
  for m in members:
    out = checkpoint.restore(m.run.mgr, resume, params_target=one['params'], opt_target=one['opt_state'])
    restored.append(dict(params=out['params'], opt_state=out['opt_state']))
    data_state = data_state or out['data']
    m.run.start_step = m.run.step = resume
  if data_state:
    members[0].run.data.train_loader.set_state(data_state)
  log(f'resumed {len(members)} member(s) from step {resume}')
  return packed_lib.stack_members(packed, restored, resume, [True] * len(members)), resume


def _start_branches(members: list[Member], packed, srcs: list, one: dict, log) -> dict:
  """Fresh cooldown branches: what branch.start gives a single branch (its parent's params, optimizer state and
  data position at the fork step), for each member from its own parent, stacked. Every parent's checkpoint is
  checked against the members' model and data settings first, and their data positions must agree (the members
  share one loader). Nothing is written; each parent is only read."""
  step = srcs[0].step
  for m, src in zip(members, srcs):
    try:
      branch.check_source(src, m.run.cfg, dataclasses.asdict(m.run.setup.dims))
    except CheckpointError as e:
      raise CheckpointError(f'packed member {m.index} ({m.run.workdir}): {e}') from None
    log(f'member {m.index}: branch of {src.workdir / checkpoint.CKPT_DIR / str(step)} (train.init_from)')
    note = branch.schedule_note(src, m.run.cfg)
    if note:
      log(f'member {m.index}: {note}')
  restored, positions, data_state = [], [], None
  for src in srcs:
    out = branch.restore(src, one)
    restored.append(dict(params=out['params'], opt_state=out['opt_state']))
    positions.append({k: (out['data'] or {}).get(k) for k in ('grain', 'split_digest')})
    data_state = data_state or out['data']
  if any(p != positions[0] for p in positions):
    listed = '; '.join(f'{s.workdir}: {p}' for s, p in zip(srcs, positions))
    raise ConfigError(f'the parents\' checkpoints of step {step} are at different positions of the data ({listed}): '
                      f'the packed members share one loader, so their branches would not be the runs they are alone. '
                      f'Train these branches as separate runs')
  if data_state:
    members[0].run.data.train_loader.set_state(data_state)
  for m in members:
    m.run.start_step = m.run.step = step
  log(f'branch: {len(members)} member(s) restored from their parents\' step {step}; training steps {step + 1}..'
      f'{members[0].run.setup.total_steps} with each member\'s schedule')
  return packed_lib.stack_members(packed, restored, step, [True] * len(members))


# ----------------------------------------------------------------------------- the loop
@dataclasses.dataclass
class _Loop:
  """What the packed loop's steps share."""
  members: list
  packed: Any
  progress: Any
  timer: StepTimer
  fpt: float
  peak: float
  pending: list = dataclasses.field(default_factory=list)   # (step, metrics) not yet read back
  shown: dict = dataclasses.field(default_factory=dict)


def _loop(members: list[Member], packed, state, start: int, layout: str):
  """Steps until the end, a stop signal, or every member diverged; returns the packed state."""
  lead = members[0].run
  total, t = lead.setup.total_steps, lead.cfg.train
  for m in members:
    m.run.writer = MetricsWriter(m.run.workdir, start_step=start, config=m.run.cfg)
  peak, _ = device_peak_flops(lead.setup.dims.dtype, t.peak_flops)
  lp = _Loop(members, packed, Progress(total, start, enabled=not lead.quiet), StepTimer(),
             accounting.flops_per_token(lead.setup.dims), peak)
  scalars = packed_lib.scalars_array(packed, [m.run.cfg for m in members])
  step_fn, step = None, start
  try:
    while step < total:
      local = next(lead.data.train_loader)
      if step_fn is None:
        step_fn = packed_lib.jit_packed_step(packed, tuple(sorted(local)), layout)
      t0 = time.time()
      state, metrics = step_fn(state, scalars, sharding.global_batch(local, packed.setup.mesh))
      if lead.t_compile is None:
        jax.block_until_ready(metrics)
        lead.t_compile = time.time() - t0
        lead.log(f'first step (compile) {lead.t_compile:.1f}s')
        hostmem.hold_heap()
        lp.timer.mark(step + 1)
        lp.progress.start_timing(step + 1)
      step += 1
      for m in members:
        checkpoint.check_pending_save(m.run.mgr)   # a failed async save stops now, not at the next save
      lp.pending.append((step, metrics))
      _check(members, lp.pending, before=step)
      _after_step(lp, state, step, total)
      if step < total and lead.stop.should_stop(step):
        _stop(lp, state, step)
        break
      if not any(m.alive for m in members):
        break
  finally:
    for m in members:
      m.run.mgr.wait_until_finished()
      m.run.writer.close()
    lp.progress.close()
  return state


def _after_step(lp: _Loop, state, step: int, total: int) -> None:
  """The periodic actions, in a single run's order: log row, checkpoint, eval; then each member's row."""
  members, lead = lp.members, lp.members[0].run
  t, last = lead.cfg.train, step == total
  row = {}
  if (t.log_every > 0 and step % t.log_every == 0) or last:
    _check(members, lp.pending)
    row = {'tokens_seen': step * lead.tokens_per_step}
    dt = lp.timer.seconds_per_step(step)
    if dt is not None:
      tps = lead.tokens_per_step / dt   # each member's tokens/s; the device does K times as much
      util, _ = mfu(lp.fpt, tps * len(members), lp.peak, jax.device_count())
      row |= {'throughput/tokens_per_s': tps, 'throughput/step_s': dt}
      lp.shown = {'tok/s/member': f'{tps:,.0f}'}
      if util is not None:   # None: a device kind without a known peak (metrics.device_peak_flops warned)
        row['throughput/mfu'], lp.shown['mfu'] = util, f'{util:.1%}'
  if (t.ckpt_every > 0 and step % t.ckpt_every == 0) or last or step in t.get('ckpt_steps', ()):
    _check(members, lp.pending)
    _save_all(members, lp.packed, state, step)
  rows = {m.index: dict(row) for m in members if m.alive}
  if row:
    for m in members:
      if m.alive:
        r = m.run
        rows[m.index] |= {'train/loss': r.loss, 'train/grad_norm': r.grad_norm,
                          'train/lr': float(r.setup.schedule(step - 1))}
  if lead.eval_sets and ((t.eval_every > 0 and step % t.eval_every == 0) or last):
    _check(members, lp.pending)
    _eval_all(members, lp.packed, state, step, rows, lp.progress)
    lp.timer.mark(step)   # eval time is not training throughput
  for m in members:
    if m.alive:
      m.run.step = step
      if rows.get(m.index):
        m.run.writer.write(step, rows[m.index])
  if row:
    losses = [m.run.loss for m in members if m.alive]
    shown_loss = f'{min(losses):.3f}..{max(losses):.3f}' if losses else '-'
    lp.progress.update(step, {'loss': shown_loss, 'alive': f'{len(losses)}/{len(members)}', **lp.shown})


def _stop(lp: _Loop, state, step: int) -> None:
  """A stop signal: every live member saved at this step (waited for), then the loop ends."""
  _check(lp.members, lp.pending)
  _save_all(lp.members, lp.packed, state, step, force=True)
  for m in lp.members:
    m.run.mgr.wait_until_finished()
  lead = lp.members[0].run
  lp.progress.write(f'{signal.Signals(lead.stop.signum).name} received: saved every member at step {step}; '
                    f're-run the same command to resume')
  lead.stopped = True


def _check(members: list[Member], pending: list, before: int | None = None) -> None:
  """Reads each dispatched step's per-member losses (one step late, like check_finite): the members whose
  loss or gradient norm went non-finite are marked diverged at that step."""
  while pending and (before is None or pending[0][0] < before):
    step, metrics = pending.pop(0)
    loss, gnorm, ok = (np.asarray(metrics[k]) for k in ('loss', 'grad_norm', 'ok'))
    for m in members:
      if not m.alive:
        continue
      if not ok[m.index]:
        _diverged(m, step, float(loss[m.index]), float(gnorm[m.index]))
      else:
        m.run.loss, m.run.grad_norm = float(loss[m.index]), float(gnorm[m.index])


def _diverged(m: Member, step: int, loss: float, grad_norm: float) -> None:
  r = m.run
  what = f'loss is {loss}' if not math.isfinite(loss) else f'gradient norm is {grad_norm} (loss {loss:.4g})'
  m.alive = False
  m.error = (f'{what} at step {step}: training diverged. The last good checkpoint is kept in '
             f'{r.workdir / checkpoint.CKPT_DIR}; lower train.lr or raise warmup, then re-run to resume.')
  print(f'error: member {m.index} ({r.workdir}): {m.error} (the other members train on)', file=sys.stderr,
        flush=True)
  loop._write_json(r.workdir / 'summary.json', dict(state='diverged', step=step, error=m.error,
                                                    exit_code=EXIT_DIVERGED))


def _save_all(members: list[Member], packed, state, step: int, force: bool = False) -> None:
  for m in members:
    if m.alive:
      m.run.state = packed_lib.member_state(packed, state, m.index)
      loop._save(m.run, step, force=force)
      m.run.state = None


def _eval_all(members: list[Member], packed, state, step: int, rows: dict, progress) -> None:
  shown = []
  for m in members:
    if not m.alive:
      continue
    r = m.run
    r.state = packed_lib.member_state(packed, state, m.index)
    lead = members[0].run
    lead.eval_step = lead.eval_step or loop.jit_eval_step(lead.setup)   # one compile: the members share shapes
    r.eval_step = lead.eval_step
    result, row = run_end.do_eval_sets(r)
    r.state = None
    if result is not None:
      r.eval_loss, r.eval_bpb = result.loss, result.bpb
    rows[m.index] = rows.get(m.index, {}) | row
    shown.append(run_end.fmt(r.eval_bpb))
  progress.write(f'step {step}: eval bpb of the members {", ".join(shown)}')


def _finish(members: list[Member], packed, state, t_start) -> list[dict]:
  out = []
  lead = members[0].run
  for m in members:
    r = m.run
    if not m.alive:
      out.append(dict(state='diverged', step=r.step, error=m.error, exit_code=EXIT_DIVERGED))
      continue
    if lead.stopped:
      out.append(loop._stop_result(lead.stop.signum, r.step))
      continue
    r.t_compile = lead.t_compile
    r.state = packed_lib.member_state(packed, state, m.index)
    run_end.summary(r, {}, t_start, quiet=True)
    try:
      extra = run_end.final_evals(r)
    except Exception as e:   # noqa: BLE001  (the member is finished and saved)
      loop._end_failed(r, 'the final evaluation', e)
      extra = {}
    out.append(run_end.summary(r, extra, t_start))
    r.state = None
  for m in members:
    m.run.mgr.close()
  return out
