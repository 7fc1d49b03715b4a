"""A data mixture in a training run (scaling/data/mixture.py): its size checks, its loader, its metrics.

    before preparing: check_before_prepare (each source's size in bytes bounds its windows: a source that cannot
    feed its weight over the run is an error naming it, before any tokenizing) -> prepare_mixture (run_data.py)
    -> make_loader (the exact check with the prepared windows and, on resume, each source's position; before any
    compile) -> the loop: train/<name>/loss from the step's per-source sums (train_rows), the weight changes
    said when they happen -> summary.json: the mixture's history, positions and epochs (summary_fields)

Each source's held-out split is a tagged eval set (scaling/train/evalsets.py), so eval/<name>/bpb comes with
every evaluation, in metrics.jsonl, TensorBoard, W&B, summary.json and `scaling sweep collect`.
"""

from __future__ import annotations

from scaling.config.load import parse_init_from, train_steps
from scaling.config.mixture import plan_of
from scaling.data import mixture as mixture_lib


def active(cfg) -> bool:
  return mixture_lib.is_mixture(cfg.data)


def _start_step(cfg, resume_step) -> int:
  if resume_step is not None:
    return int(resume_step)
  spec = cfg.train.get('init_from', '')
  step = parse_init_from(spec)[1] if spec else None
  return int(step or 0)


def check_before_prepare(run, resume_step) -> None:
  """MixtureError when a source's size in bytes already shows it cannot feed its weight over the run."""
  cfg = run.cfg
  if not active(cfg):
    return
  total = train_steps(cfg)
  windows = mixture_lib.estimate_windows(cfg.data, cfg.model.seq_len)
  mixture_lib.check_supply(plan_of(cfg, total), windows, rows=cfg.train.batch_size, start=_start_step(cfg, resume_step),
                           end=total, max_epochs=float(cfg.data.mixture_max_epochs), estimate=True)


def make_loader(run, summary: dict, local_batch: int, resume_step, data_state=None):
  """The MixtureLoader of a prepared mixture; MixtureError (before any compile) when a source has too few windows
  for its weight over the steps still to come (from its saved position on resume)."""
  import jax
  cfg = run.cfg
  total = train_steps(cfg)
  plan = plan_of(cfg, total)
  dirs = {n: s['data_dir'] for n, s in summary['sources'].items()}
  loader = mixture_lib.MixtureLoader(dirs, plan, seq_len=cfg.model.seq_len, batch_size=local_batch,
                                     seed=cfg.train.seed, process_index=jax.process_index(),
                                     process_count=jax.process_count(), document_masking=cfg.data.document_masking)
  state = data_state if (data_state or {}).get('kind') == 'mixture' else {}
  start = int(state.get('batch', _start_step(cfg, resume_step)))
  credit = mixture_lib._fractions(state.get('credit'))   # pylint: disable=protected-access
  mixture_lib.check_supply(plan, loader.num_windows, rows=loader.rows, start=start, end=total,
                           max_epochs=float(cfg.data.mixture_max_epochs), positions=state.get('positions'),
                           credit=credit, weights_now=mixture_lib._fractions(state.get('weights')) or None)
  run.log(f'mixture: {len(plan.names)} sources, ' + ', '.join(
      f'{n} {loader.num_windows[n]:,} windows' for n in plan.names) + f'; weights from step {start}: '
      + mixture_lib.format_weights(plan.weights_at(start))
      + (f'; stages at steps {", ".join(map(str, plan.stage_steps()))}' if plan.stages else ''))
  return loader


def train_rows(run) -> dict:
  """train/<name>/loss of the last step (its per-source sums; a source with no rows in it is left out); a weight
  change since the last call is said on the progress line."""
  m, loader = run.metrics, run.data.train_loader
  if 'source_nll' not in m:
    return {}
  nll, count = [float(x) for x in m['source_nll']], [float(x) for x in m['source_count']]
  row = {f'train/{n}/loss': s / c for n, s, c in zip(loader.names, nll, count) if c > 0}
  seen = getattr(run, '_mixture_said', 0)
  for e in loader.history[seen:]:
    if e.get('why') != 'start' and run.progress is not None:
      run.progress.write(f'step {e["step"]}: mixture weights {e.get("weights")} ({e["why"]})')
  run._mixture_said = len(loader.history)   # pylint: disable=protected-access
  return row


def summary_fields(run, rows: list[dict]) -> dict:
  """summary.json's mixture record (history of the weights, each source's position and epochs) and the last
  logged train/<name>/loss of each source."""
  loader = getattr(run.data, 'train_loader', None) if run.data is not None else None
  if not isinstance(loader, mixture_lib.MixtureLoader):
    return {}
  last = {}
  for r in rows:
    last |= {k: v for k, v in r.items() if k.startswith('train/') and k.count('/') == 2}
  return {'mixture': {'history': loader.history, 'positions': dict(loader.positions),
                      'windows': dict(loader.num_windows),
                      'epochs': {n: round(e, 4) for n, e in loader.epochs().items()}}, **last}
