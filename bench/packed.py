"""Packed members against separate runs (issue #32): wall time of K runs trained as one `scaling train-packed`
process, against the same K runs as the local launcher runs them today (one `scaling train` process each, at
its best --max-parallel on this machine), at the IsoFLOP CPU study's shapes.

What runs. Every run is the study's (configs/sweeps/isoflop_cpu.py, loaded by path; its own `_scratch`
builds the overrides): batch 8 x seq 256, BPE-1024 on its prose corpus, float32, its per-width lr, its WSD
schedule (warmup by its rule, a linear decay over the last 20% of the steps to 0.1 lr), its evals (at the end
only: train.eval_every=100000, train.eval_batches=24, every eval set the config names) and its checkpointing
(at the end; every 500 steps), with --steps steps and train.log_every=--log_every (the study logs every 20).
Its shape for a d_model: the plan's smallest run at that width, else its own rule (`_shape`, with the number
of layers its aspect term prefers: d_model / layers nearest 64, at least MIN_LAYERS; d_model 256 is not in
the plan and gets 4 layers). Where the prose corpus is not downloaded, the embedded default corpus
(Shakespeare) with data.tokenizer=bpe, data.vocab_size=1024 stands in, and the output says so. Every process is
started as the launcher starts it (scaling/launch/rundir.py train_argv: `python -m scaling train --config
configs/sweeps/isoflop_cpu.py --workdir DIR --no_sample --config.k=v ...`) and compiles its own step: no
persistent compile cache (the bench unsets JAX_COMPILATION_CACHE_DIR), as in the study. One untimed warm-up
run first builds the data shards, the tokenizer and the eval-set caches, so no arm pays for them.

The arms, per d_model:
  packed: one `python -m scaling train-packed --layout L --vary train.lr=...` process per K and layout
    (--layouts), the K members' lrs spread geometrically over 0.5x-2x of the study's rate (the cost does not
    depend on the values). Its wall is the process's, start to exit, as the user waits.
  unpacked: K identical runs cost the same, so not all K are run: one run alone (p=1) and two at once (p=2,
    the only --max-parallel values that make sense on 2 cores) are measured, and K runs at --max-parallel p
    are modelled as (K // p) x wall(p at once) + wall(1 alone) if p does not divide K (the last run then runs
    alone; for even K this is ceil(K/p) x wall(p)); the better p is taken. The noise of that model: the single
    run is measured twice at the smallest d_model, and the spread is printed.

Per row: the packed wall; the modelled unpacked wall and its p; their ratio; tokens/s per member in the steady
state (batch x seq / step_s, step_s the median of metrics.jsonl's 'throughput/step_s' rows after the first:
the first holds the steps just after the compile); compile seconds; and, since the ratio depends on the step
count, each arm's wall split as overhead + steps x step_s (one step count per arm: overhead = wall - steps x
step_s, everything that does not grow with the steps: start, data, compile, evals, saves) and the ratio that
split projects at the study's step counts (MIN_STEPS and the median of its plan's runs; --project_steps).
The goals of the issue (8 packed members >= 3x faster at d_model <= 64, >= 1.3x at 256) are judged from the
numbers, per layout, at the measured and at the projected step counts.

Time. Every process pays a fixed ~25-40 s on 2 cores (start, compile, evals, saves: the study's
RUN_OVERHEAD_S is 40 s), so the issue's whole grid (4 d_models x 5 K x 2 layouts = 40 packed processes, plus
the unpacked arm's 12) takes well over the ~25 minutes this bench is sized for. So it runs the goal rows first
(the unpacked arm and K=8 at every d_model), then the other K by d_model; a packed row whose estimate
(overhead + K x per-member cost, from this d_model's measured rows) exceeds --max_row_s, or that would end
past --budget_s seconds after the warm-up, is skipped and listed. --budget_s 0 --max_row_s 0 runs everything.

    python bench/packed.py [--d_models 32,64,128,256] [--ks 1,2,4,8,16] [--layouts vmap,loop] [--steps 40]
        [--log_every 10] [--max_row_s 240] [--budget_s 1500] [--project_steps 250,3938] [--corpus auto]
        [--repeats 2] [--no_warm_up] [--override KEY=VALUE ...] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, ROOT)

STUDY = 'configs/sweeps/isoflop_cpu.py'   # relative to ROOT, where every process runs
LAYOUTS = ('vmap', 'loop')
PARALLEL = (1, 2)            # --max-parallel values measured for the unpacked arm (2 cores)
GOAL_K = 8
GOALS = ((0, 64, 3.0), (256, 256, 1.3))   # d_model range (inclusive), ratio at least, at K = GOAL_K
NAME = 'bench-packed'


def _ints(text):
  return [int(x) for x in text.split(',') if x]


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--d_models', type=_ints, default=[32, 64, 128, 256], help='multiples of 32 (the study\'s rule)')
  p.add_argument('--ks', type=_ints, default=[1, 2, 4, 8, 16], help='numbers of members')
  p.add_argument('--layouts', default=','.join(LAYOUTS), help=f'comma-separated, of {", ".join(LAYOUTS)}')
  p.add_argument('--steps', type=int, default=40, help='training steps of every run')
  p.add_argument('--log_every', type=int, default=10, help='train.log_every (the steady step time needs >= 2 rows)')
  p.add_argument('--max_row_s', type=float, default=240.0,
                 help='skip a packed row whose estimated wall exceeds this (seconds; 0: no cap)')
  p.add_argument('--budget_s', type=float, default=1500.0,
                 help='skip a packed row that would end past this many seconds after the warm-up (0: no budget)')
  p.add_argument('--repeats', type=int, default=2,
                 help='times the single run is measured at the smallest d_model (its spread is the noise; >= 1)')
  p.add_argument('--no_warm_up', action='store_true',
                 help='skip the untimed warm-up run (the data shards and eval-set caches are already built)')
  p.add_argument('--project_steps', type=_ints, default=None,
                 help='step counts to project the ratio at (default: the study\'s MIN_STEPS and median run)')
  p.add_argument('--corpus', choices=('auto', 'prose', 'shakespeare'), default='auto',
                 help='auto: the study\'s prose corpus if downloaded, else the embedded Shakespeare at BPE-1024')
  p.add_argument('--override', action='append', default=[], help='config override of every run, KEY=VALUE')
  p.add_argument('--workdir', default='', help='scratch directory (default: a temporary one, removed at the end)')
  p.add_argument('--timeout', type=float, default=3600.0, help='seconds before one process is taken for hung')
  p.add_argument('--json', default='', help='also write every measurement and row to this file')
  args = p.parse_args(argv)
  args.layouts = args.layouts.split(',')
  if bad := [x for x in args.layouts if x not in LAYOUTS]:
    p.error(f'--layouts: unknown {", ".join(map(repr, bad))}; choose from {", ".join(LAYOUTS)}')
  if not args.d_models or any(d < 32 or d % 32 for d in args.d_models):
    p.error('--d_models: multiples of 32 (configs/sweeps/isoflop_cpu.py\'s shape rule)')
  if args.repeats < 1:
    p.error('--repeats must be >= 1')
  if not args.ks or min(args.ks) < 1:
    p.error('--ks: numbers of members >= 1')
  if args.log_every < 1 or args.steps < max(3, 2 * args.log_every):
    p.error('--steps must be >= 3 and >= 2 x --log_every (the steady step time is read from the rows after '
            'the first)')
  if bad := [o for o in args.override if '=' not in o]:
    p.error(f'--override {bad[0]!r}: expected KEY=VALUE')
  args.d_models, args.ks = sorted(set(args.d_models)), sorted(set(args.ks))
  return args


# ----------------------------------------------------------------------------- the study's settings
def load_study():
  from scaling.config.load import load_module
  return load_module(os.path.join(ROOT, STUDY))


def study_shape(study, plan, d: int) -> tuple[dict, str]:
  """The study's shape at d_model d and where it came from ('plan' or 'rule')."""
  runs = [r for r in plan if r['shape']['model.d_model'] == d]
  if runs:
    return dict(min(runs, key=lambda r: r['N'])['shape']), 'plan'
  layers = min(range(study.MIN_LAYERS, 13), key=lambda n: abs(math.log(d / n / 64)))
  return study._shape(layers, d), 'rule'


def default_projection(study, plan) -> list[int]:
  mains = [r['steps'] for r in plan if r.get('role') != 'parent']
  return sorted({int(study.MIN_STEPS), int(round(statistics.median(mains)))})


def prose_ready() -> bool:
  from scaling.data import prose
  return all(prose.read_manifest(p) is not None for p in prose.select_parts())


def run_overrides(study, shape: dict, steps: int, args, corpus: str) -> dict:
  """The study's overrides of one from-scratch run (its `_scratch`) at this shape and step count."""
  decay = max(int(round(study.DECAY_FRACTION * steps)), 1)
  warmup = min(max(10, min(100, steps // 10)), steps - decay)   # the study's rule, inside a short run
  r = dict(shape=shape, lr=study.lr_for(shape['model.d_model']), warmup=warmup, steps=steps, decay=decay)
  ov = study._scratch(r, NAME)
  ov['train.log_every'] = args.log_every
  if corpus != 'prose':
    ov.update({'data.corpus': corpus, 'data.tokenizer': 'bpe', 'data.vocab_size': study.VOCAB})
  ov.update(o.split('=', 1) for o in args.override)
  return ov


def member_lrs(lr: float, k: int) -> list[str]:
  """k learning rates spread geometrically over 0.5x-2x of lr (3 significant digits; just lr for k = 1)."""
  if k == 1:
    return [f'{lr:.3g}']
  return [f'{lr * 2 ** (2 * i / (k - 1) - 1):.3g}' for i in range(k)]


# ----------------------------------------------------------------------------- processes
def child_env() -> dict:
  env = dict(os.environ)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)   # each process compiles, as the study's runs do
  env['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
  return env


def run_together(argvs: list, logs: list, timeout: float) -> list[float]:
  """Starts every command at once (from ROOT, output to its log); each one's wall seconds, start to exit."""
  procs, files = [], []
  try:
    for argv, log in zip(argvs, logs):
      files.append(open(log, 'w'))
      procs.append((subprocess.Popen(argv, cwd=ROOT, stdout=files[-1], stderr=subprocess.STDOUT,
                                     env=child_env()), time.perf_counter()))
    walls = [None] * len(procs)
    while None in walls:
      for i, (proc, t0) in enumerate(procs):
        if walls[i] is None and proc.poll() is not None:
          walls[i] = time.perf_counter() - t0
          if proc.returncode:
            tail = pathlib.Path(logs[i]).read_text()[-3000:]
            raise RuntimeError(f'{" ".join(map(str, argvs[i]))} exited {proc.returncode}:\n{tail}')
        elif walls[i] is None and time.perf_counter() - t0 > timeout:
          raise RuntimeError(f'{" ".join(map(str, argvs[i]))} still running after {timeout:.0f}s: taken for hung')
      time.sleep(0.02)
    return walls
  finally:
    for proc, _ in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    for f in files:
      f.close()


def read_run(workdir) -> dict:
  """What one run (or packed member) wrote: steady step_s, tokens/s, compile_s, batch, seq, state."""
  w = pathlib.Path(workdir)
  summary = json.loads((w / 'summary.json').read_text())
  cfg = json.loads((w / 'config.json').read_text())
  rows = [json.loads(line) for line in (w / 'metrics.jsonl').read_text().splitlines() if line.strip()]
  times = [r['throughput/step_s'] for r in rows if r.get('throughput/step_s') is not None]
  if len(times) < 2:
    raise RuntimeError(f'{w}: {len(times)} throughput row(s) in metrics.jsonl; the steady step time needs 2 '
                       '(raise --steps or lower --log_every)')
  batch, seq = cfg['train']['batch_size'], cfg['model']['seq_len']
  step_s = statistics.median(times[1:])
  t = cfg['train']
  return dict(step_s=step_s, tokens_per_s=batch * seq / step_s, compile_s=summary['compile_s'], batch=batch,
              seq=seq, steps=summary['step'], state=summary['state'], layers=cfg['model']['num_layers'],
              evals=dict(eval_every=t['eval_every'], eval_batches=t['eval_batches'], eval_sets=t['eval_sets']))


# ----------------------------------------------------------------------------- the measurements
@dataclasses.dataclass
class Bench:
  args: argparse.Namespace
  study: object
  plan: list
  corpus: str
  scratch: pathlib.Path
  project: list
  shapes: dict = dataclasses.field(default_factory=dict)       # d_model -> (shape, 'plan' | 'rule')
  step_guess: dict = dataclasses.field(default_factory=dict)   # d_model -> the study's step_s estimate
  unpacked: list = dataclasses.field(default_factory=list)     # one entry per measurement (p runs at once)
  packed: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)
  t0: float = 0.0                                              # after the warm-up
  clock: object = time.perf_counter

  def flags(self, d: int, steps: int | None = None, drop=()) -> list[str]:
    ov = run_overrides(self.study, self.shapes[d][0], steps or self.args.steps, self.args, self.corpus)
    return [f'--config.{k}={v}' for k, v in ov.items() if k not in drop]

  def lr(self, d: int) -> float:
    return self.study.lr_for(d)


def measure_unpacked(b: Bench, d: int, p: int, rep: int) -> dict:
  """p identical single runs started at once (p = 1: one alone), as the launcher starts them."""
  from scaling.launch.rundir import train_argv, train_prefix
  dirs = [b.scratch / f'd{d}-p{p}-rep{rep}-run{i}' for i in range(p)]
  argvs = [train_argv(train_prefix(), STUDY, str(w), b.flags(d)) for w in dirs]
  walls = run_together(argvs, [f'{w}.log' for w in dirs], b.args.timeout)
  runs = [read_run(w) for w in dirs]
  step_s = statistics.mean(r['step_s'] for r in runs)
  wall = max(walls)
  return dict(d_model=d, p=p, rep=rep, walls_s=walls, wall_s=wall, step_s=step_s, steps=runs[0]['steps'],
              overhead_s=wall - runs[0]['steps'] * step_s, compile_s=statistics.mean(r['compile_s'] for r in runs),
              tokens_per_s_run=statistics.mean(r['tokens_per_s'] for r in runs), batch=runs[0]['batch'],
              seq=runs[0]['seq'], layers=runs[0]['layers'], evals=runs[0]['evals'], workdirs=[str(w) for w in dirs])


def measure_packed(b: Bench, d: int, k: int, layout: str) -> dict:
  """One `scaling train-packed` process of k members (lrs over 0.5x-2x of the study's)."""
  root = b.scratch / f'd{d}-k{k}-{layout}'
  argv = [sys.executable, '-m', 'scaling', 'train-packed', '--config', STUDY, '--workdir', str(root), '--layout',
          layout, '--vary', 'train.lr=' + ','.join(member_lrs(b.lr(d), k)), *b.flags(d, drop=('train.lr',))]
  (wall,) = run_together([argv], [f'{root}.log'], b.args.timeout)
  members = [json.loads((root / f'member-{i}' / 'summary.json').read_text()) for i in range(k)]
  lead = read_run(root / 'member-0')   # every member logs the packed step's time
  return dict(d_model=d, K=k, layout=layout, wall_s=wall, step_s=lead['step_s'], steps=lead['steps'],
              overhead_s=wall - lead['steps'] * lead['step_s'], compile_s=lead['compile_s'],
              tokens_per_s_member=lead['tokens_per_s'], batch=lead['batch'], seq=lead['seq'], layers=lead['layers'],
              members_done=sum(m.get('state') == 'done' for m in members), workdir=str(root))


def arms(b: Bench, d: int) -> dict:
  """{p: wall_s, step_s, overhead_s, tokens_per_s_run} of the unpacked arm at d (repeats averaged)."""
  out = {}
  for p in PARALLEL:
    ms = [m for m in b.unpacked if m['d_model'] == d and m['p'] == p]
    if ms:
      wall, step = statistics.mean(m['wall_s'] for m in ms), statistics.mean(m['step_s'] for m in ms)
      out[p] = dict(wall_s=wall, step_s=step, overhead_s=wall - ms[0]['steps'] * step,
                    tokens_per_s_run=statistics.mean(m['tokens_per_s_run'] for m in ms))
  return out


def unpacked_wall(k: int, p: int, walls: dict) -> float:
  """k identical runs at --max-parallel p: k // p rounds of p at once, then the rest (fewer than p) at once."""
  full, rest = divmod(k, p)
  return full * walls[p] + (walls[rest] if rest else 0.0)


def best_unpacked(k: int, walls: dict) -> tuple[float, int]:
  """(modelled wall, p) at the best p of those measured."""
  return min((unpacked_wall(k, p, walls), p) for p in sorted(walls))


def make_row(b: Bench, m: dict) -> dict:
  """A packed measurement against the modelled unpacked arm, measured and projected at b.project steps."""
  a = arms(b, m['d_model'])
  wall, p = best_unpacked(m['K'], {q: x['wall_s'] for q, x in a.items()})
  projected = {}
  for s in b.project:
    packed = m['overhead_s'] + s * m['step_s']
    unpacked, q = best_unpacked(m['K'], {q: x['overhead_s'] + s * x['step_s'] for q, x in a.items()})
    projected[str(s)] = dict(packed_s=packed, unpacked_s=unpacked, p=q, ratio=unpacked / packed)
  return {**m, 'unpacked_wall_s': wall, 'p': p, 'ratio': wall / m['wall_s'],
          'tokens_per_s_run_unpacked': a[p]['tokens_per_s_run'], 'projected': projected}


# ----------------------------------------------------------------------------- the schedule
def tasks(b: Bench) -> list[tuple]:
  """Goal rows first (the unpacked arm and K = GOAL_K at every d_model), then the other K."""
  out = []
  for d in b.args.d_models:
    out.append(('unpacked', d))
    out += [('packed', d, GOAL_K, layout) for layout in b.args.layouts if GOAL_K in b.args.ks]
  for d in b.args.d_models:
    out += [('packed', d, k, layout) for k in b.args.ks if k != GOAL_K for layout in b.args.layouts]
  return out


def estimate(b: Bench, task: tuple) -> float:
  """Seconds a task should take: overhead f + K members x c. f and c from this d_model's single run
  (its overhead; steps x its step time), or the study's own model before it ran (RUN_OVERHEAD_S and its
  tokens/s); once a packed row of the layout ran here, c = (its wall - f) / its K, from its largest K."""
  d = task[1]
  one = arms(b, d).get(1)
  f, c = ((one['overhead_s'], b.args.steps * one['step_s']) if one else
          (b.study.RUN_OVERHEAD_S, b.args.steps * b.step_guess[d]))
  if task[0] == 'unpacked':
    return (b.args.repeats if d == b.args.d_models[0] else 1) * (f + c) + f + 2 * c
  k, layout = task[2], task[3]
  done = [m for m in b.packed if m['d_model'] == d and m['layout'] == layout]
  if done:
    big = max(done, key=lambda m: m['K'])
    c = max((big['wall_s'] - f) / big['K'], 0.0) or c
  return f + k * c


def _mmss(s: float) -> str:
  return f'{int(s // 60)}m{int(s % 60):02d}s'


def run_all(b: Bench) -> None:
  todo = tasks(b)
  for i, task in enumerate(todo):
    est, elapsed = estimate(b, task), b.clock() - b.t0
    eta = sum(estimate(b, t) for t in todo[i:])
    if b.args.budget_s:   # rows past the budget are skipped
      eta = min(eta, max(b.args.budget_s - elapsed, est))
    what = f'd_model {task[1]} unpacked (1 alone, 2 at once)' if task[0] == 'unpacked' else \
        f'd_model {task[1]} K={task[2]} {task[3]}'
    if task[0] == 'packed':
      why = ('over --max_row_s' if b.args.max_row_s and est > b.args.max_row_s else
             'past --budget_s' if b.args.budget_s and elapsed + est > b.args.budget_s else '')
      if why:
        b.skipped.append(dict(d_model=task[1], K=task[2], layout=task[3], estimate_s=est, why=why))
        print(f'[{i + 1}/{len(todo)}] {what}: skipped, estimated {est:.0f}s ({why})', file=sys.stderr, flush=True)
        continue
    print(f'[{i + 1}/{len(todo)}] {what}: estimated {est:.0f}s; elapsed {_mmss(elapsed)}, ETA ~{_mmss(eta)}',
          file=sys.stderr, flush=True)
    if task[0] == 'unpacked':
      d = task[1]
      b.unpacked.append(measure_unpacked(b, d, 1, 0))
      b.unpacked.append(measure_unpacked(b, d, 2, 0))
      for rep in range(1, b.args.repeats if d == b.args.d_models[0] else 1):   # the noise: the single run again
        b.unpacked.append(measure_unpacked(b, d, 1, rep))
    else:
      try:
        b.packed.append(measure_packed(b, *task[1:]))
      except RuntimeError as e:   # a packed row that fails (e.g. out of memory) is reported; the others run on
        first = str(e).splitlines()[0][-200:]
        b.skipped.append(dict(d_model=task[1], K=task[2], layout=task[3], estimate_s=est, why=f'failed: {first}'))
        print(f'[{i + 1}/{len(todo)}] {what}: failed\n{e}', file=sys.stderr, flush=True)


def warm_up(b: Bench) -> float:
  """An untimed short run at the smallest d_model: prepares the shards and tokenizer, builds the eval-set
  caches and warms the file cache, so no timed arm pays for them. Its seconds."""
  from scaling.launch.rundir import train_argv, train_prefix
  d, w = b.args.d_models[0], b.scratch / 'warm-up'
  print(f'warm-up: a 2-step run at d_model {d} (prepare, eval-set caches)', file=sys.stderr, flush=True)
  (wall,) = run_together([train_argv(train_prefix(), STUDY, str(w), b.flags(d, steps=2))], [f'{w}.log'],
                         b.args.timeout)
  return wall


# ----------------------------------------------------------------------------- the report
def cpu_model() -> str:
  from train_step import cpu_model as model_name  # bench/ is this script's sys.path[0]
  return model_name()


def noise(b: Bench) -> dict | None:
  """The single run measured twice at the smallest d_model: its two walls and step times, and their spread."""
  ms = [m for m in b.unpacked if m['d_model'] == b.args.d_models[0] and m['p'] == 1]
  if len(ms) < 2:
    return None
  spread = lambda xs: (max(xs) - min(xs)) / statistics.mean(xs)
  walls, steps = [m['wall_s'] for m in ms], [m['step_s'] for m in ms]
  return dict(d_model=ms[0]['d_model'], walls_s=walls, step_s=steps, wall_spread=spread(walls),
              step_spread=spread(steps))


def _evals(e: dict | None) -> str:
  if not e:
    return '-'
  sets = ', '.join(e['eval_sets']) or 'none'
  return (f'train.eval_every={e["eval_every"]}, train.eval_batches={e["eval_batches"]}, the training corpus\'s '
          f'split and eval sets: {sets}')


def header(b: Bench, warm_s: float, loads: tuple) -> list[str]:
  a, m = b.args, (b.unpacked or [{}])[0]
  corpus = ('the study\'s prose corpus at BPE-1024' if b.corpus == 'prose' else
            'the embedded default corpus (Shakespeare) with data.tokenizer=bpe, data.vocab_size=1024'
            + (': the study\'s prose corpus is not downloaded here' if a.corpus == 'auto' else ' (--corpus)'))
  shapes = '; '.join(f'{d}: {s["model.num_layers"]} layers, {s["model.num_heads"]}/{s["model.num_kv_heads"]} heads '
                     f'({"its plan" if src == "plan" else "its rule"})' for d, (s, src) in b.shapes.items())
  n = noise(b)
  return [
      f'# packed members against separate runs, at the IsoFLOP CPU study\'s runs ({STUDY})',
      f'# CPU: {cpu_model()}, {os.cpu_count()} cores; load average (1 min) {loads[0]:.2f} before, {loads[1]:.2f} after',
      f'# corpus: {corpus}',
      f'# every run: batch {m.get("batch")} x seq {m.get("seq")}, {a.steps} steps, the study\'s WSD schedule and '
      f'per-width lr, train.log_every {a.log_every}; evals as the study\'s runs, at the end only '
      f'({_evals(m.get("evals"))}), in every arm; every process compiles (no persistent compile cache)',
      f'# shapes (d_model: the study\'s): {shapes}; overrides: {", ".join(a.override) or "none"}',
      '# packed: one `scaling train-packed` process per row, K members with train.lr over 0.5x-2x of the study\'s '
      'rate; its wall from process start to exit',
      '# unpacked: `python -m scaling train --no_sample` per run (the local launcher\'s command), 1 alone and 2 at once '
      'measured, not all K: K runs at --max-parallel p are modelled as (K // p) x wall(p at once) + wall(1 alone) '
      'if p does not divide K (= ceil(K/p) x wall(p) for even K), the better p taken; the runs are identical in '
      'cost, so the model is exact up to noise',
      (f'# noise: the single run at d_model {n["d_model"]} twice: wall {" / ".join(f"{w:.1f}" for w in n["walls_s"])} s '
       f'(spread {n["wall_spread"]:.1%}), step {" / ".join(f"{s * 1e3:.1f}" for s in n["step_s"])} ms '
       f'(spread {n["step_spread"]:.1%})') if n else '# noise: not measured (--repeats 1)',
      f'# tokens/s: batch x seq / step_s, step_s the median of metrics.jsonl\'s throughput rows after the first; '
      f'overhead = wall - steps x step_s (start, data, compile, evals, saves); projected wall = overhead + S x '
      f'step_s at the study\'s step counts S (MIN_STEPS {b.study.MIN_STEPS}, its plan\'s median run '
      f'{default_projection(b.study, b.plan)[-1]}): {", ".join(map(str, b.project))}',
      f'# warm-up (untimed: prepare, eval-set caches) {warm_s:.0f}s' if not a.no_warm_up else '# no warm-up run',
  ]


def unpacked_table(b: Bench) -> list[str]:
  lines = ['| arm | d_model | layers | wall s | step ms | tok/s/run | compile s | overhead s |',
           '|---|---:|---:|---:|---:|---:|---:|---:|']
  for m in b.unpacked:
    walls = ' / '.join(f'{w:.1f}' for w in m['walls_s'])
    arm = '1 alone' if m['p'] == 1 else f'{m["p"]} at once'
    lines.append(f'| {arm} | {m["d_model"]} | {m["layers"]} | {walls} | '
                 f'{m["step_s"] * 1e3:.1f} | {m["tokens_per_s_run"]:,.0f} | {m["compile_s"]:.1f} | '
                 f'{m["overhead_s"]:.1f} |')
  return lines


def main_table(b: Bench, rows: list) -> list[str]:
  cols = ['d_model', 'layers', 'K', 'layout', 'packed s', 'unpacked s', 'p', 'unpacked / packed', 'tok/s/member',
          'tok/s/run unpacked', 'compile s', 'overhead s'] + [f'ratio @{s} steps' for s in b.project]
  lines = ['| ' + ' | '.join(cols) + ' |', '|' + ''.join('---|' if c == 'layout' else '---:|' for c in cols)]
  for r in rows:
    cells = [r['d_model'], r['layers'], r['K'], r['layout'], f'{r["wall_s"]:.1f}', f'{r["unpacked_wall_s"]:.1f}',
             r['p'], f'{r["ratio"]:.2f}x', f'{r["tokens_per_s_member"]:,.0f}', f'{r["tokens_per_s_run_unpacked"]:,.0f}',
             f'{r["compile_s"]:.1f}', f'{r["overhead_s"]:.1f}']
    cells += [f'{r["projected"][str(s)]["ratio"]:.2f}x (p={r["projected"][str(s)]["p"]})' for s in b.project]
    lines.append('| ' + ' | '.join(map(str, cells)) + ' |')
  return lines


def goals(b: Bench, rows: list) -> list[dict]:
  """Each goal per layout and step count: the ratios at K = GOAL_K over its d_models, met or not."""
  out = []
  for lo, hi, need in GOALS:
    ds = [d for d in b.args.d_models if lo <= d <= hi]
    if not ds:
      continue
    for layout in b.args.layouts:
      got = {r['d_model']: r for r in rows if r['K'] == GOAL_K and r['layout'] == layout and lo <= r['d_model'] <= hi}
      for steps, projected in [(b.args.steps, False)] + [(s, True) for s in b.project]:
        ratios = {d: (got[d]['projected'][str(steps)]['ratio'] if projected else got[d]['ratio'])
                  for d in ds if d in got}
        verdict = ('not measured' if len(ratios) < len(ds) else 'met' if min(ratios.values()) >= need else 'not met')
        out.append(dict(d_models=ds, need=need, layout=layout, steps=steps, ratios=ratios, verdict=verdict,
                        projected=projected))
  return out


def goal_lines(gs: list) -> list[str]:
  lines = []
  for g in gs:
    where = f'd_model <= {g["d_models"][-1]}' if len(g['d_models']) > 1 else f'd_model {g["d_models"][0]}'
    got = ', '.join(f'{v:.2f}x (d {d})' for d, v in g['ratios'].items()) or '-'
    how = 'projected' if g['projected'] else 'measured'
    lines.append(f'# goal K={GOAL_K} at {where} >= {g["need"]}x, {g["layout"]}, {how} at {g["steps"]} steps: '
                 f'{got}: {g["verdict"]}')
  return lines


def step_guess(study, shape: dict) -> float:
  """The study's own estimate of a step's seconds at this shape (its FLOP rate, capped tokens/s)."""
  from scaling.model.accounting import flops_per_token
  return study.BATCH * study.SEQ_LEN / study._tokens_per_s(flops_per_token(study._model(shape)))


def report(b: Bench, rows: list, warm_s: float, loads: tuple, elapsed: float) -> tuple[list[str], dict]:
  gs = goals(b, rows)
  lines = header(b, warm_s, loads) + [f'# measured in {_mmss(elapsed)} after the warm-up', '']
  lines += ['## unpacked arm (each run: `scaling train`, as the launcher starts it)', ''] + unpacked_table(b) + ['']
  lines += ['## packed against unpacked', ''] + main_table(b, rows) + ['']
  lines += [f'# skipped: d_model {s["d_model"]} K={s["K"]} {s["layout"]}: estimated {s["estimate_s"]:.0f}s '
            f'({s["why"]})' for s in b.skipped]
  lines += [f'# note: d_model {r["d_model"]} K={r["K"]} {r["layout"]}: {r["members_done"]} of {r["K"]} members '
            'finished (see its log)' for r in rows if r['members_done'] != r['K']]
  lines += goal_lines(gs)
  data = dict(setup=dict(study=STUDY, corpus=b.corpus, steps=b.args.steps, log_every=b.args.log_every,
                         overrides=b.args.override, shapes={str(d): s for d, (s, _) in b.shapes.items()},
                         project_steps=b.project, parallel=list(PARALLEL), cpu=cpu_model(), cores=os.cpu_count(),
                         load_before=loads[0], load_after=loads[1], warm_up_s=warm_s, elapsed_s=elapsed),
              noise=noise(b), unpacked=b.unpacked, rows=rows, skipped=b.skipped, goals=gs)
  return lines, data


def main(argv=None):
  args = parse_args(argv)
  study = load_study()
  plan = study.plan()
  corpus = 'prose' if args.corpus == 'prose' or (args.corpus == 'auto' and prose_ready()) else 'shakespeare'
  scratch = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='bench-packed-'))
  scratch.mkdir(parents=True, exist_ok=True)
  b = Bench(args, study, plan, corpus, scratch, args.project_steps or default_projection(study, plan))
  for d in args.d_models:
    b.shapes[d] = study_shape(study, plan, d)
    b.step_guess[d] = step_guess(study, b.shapes[d][0])
  load0 = os.getloadavg()[0]
  try:
    warm_s = 0.0 if args.no_warm_up else warm_up(b)
    b.t0 = b.clock()
    run_all(b)
    elapsed = b.clock() - b.t0
  finally:
    if not args.workdir:
      shutil.rmtree(scratch, ignore_errors=True)
  rows = sorted((make_row(b, m) for m in b.packed), key=lambda r: (r['d_model'], r['K'], LAYOUTS.index(r['layout'])))
  lines, data = report(b, rows, warm_s, (load0, os.getloadavg()[0]), elapsed)
  print('\n'.join(lines))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(data, indent=1) + '\n')


if __name__ == '__main__':
  main()
