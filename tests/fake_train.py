"""A stand-in for `scaling train` that honours its contract in milliseconds (for launcher tests).

  python tests/fake_train.py --config SPEC --workdir DIR [--config.k=v ...] [--local_processes P] [--no_sample]

Contract kept: resolves the config with scaling.config.load (unknown keys fail),
writes DIR/config.json, appends one JSON line per step to DIR/metrics.jsonl,
"checkpoints" its step to DIR/progress.json after every step and resumes from
it, writes DIR/summary.json (state 'done') at the end and exits 0; SIGTERM or
SIGINT -> saves progress and exits 75.

Test hooks (environment):
  FAKE_TRAIN_STEP_S      seconds per step (default 0.02)
  FAKE_TRAIN_FAIL_SEEDS  comma-separated train.seed values that fail with exit 3 after 2 steps
  FAKE_TRAIN_HOLD        a path: while that file exists, training waits before each step (still
                         stoppable by a signal), so a test can keep runs alive as long as it needs
Every start appends a line to DIR/starts.jsonl (pid, step resumed from, the fork step of a
branch), so tests can count how often a run was executed. Checkpoints: DIR/checkpoints/<step>/
every train.ckpt_every steps, at train.ckpt_steps and at the end (the newest train.keep_checkpoints and the
train.ckpt_steps kept), renamed
into place as orbax does. A branch (train.init_from='PARENT:STEP', relative to DIR) without
progress of its own starts at STEP if PARENT/checkpoints/STEP exists, else exits 1.
"""

import json
import os
import pathlib
import signal
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from scaling.base.files import atomic_write_json  # noqa: E402
from scaling.config.load import config_hash, load_config, parse_override_flags, to_dict, train_steps  # noqa: E402


def _write_json(path: pathlib.Path, obj) -> None:
  atomic_write_json(path, obj, indent=1)


def _checkpoint(workdir: pathlib.Path, step: int, keep: int, keep_steps=()) -> None:
  """DIR/checkpoints/<step>/ (renamed into place, as orbax does), keeping the newest `keep` and `keep_steps`."""
  ckpt = workdir / 'checkpoints'
  ckpt.mkdir(exist_ok=True)
  tmp = ckpt / f'{step}.orbax-checkpoint-tmp-0'
  tmp.mkdir(exist_ok=True)
  (tmp / 'meta.json').write_text(json.dumps({'step': step}))
  os.replace(tmp, ckpt / str(step))
  steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  for old in [x for x in steps[:-keep] if x not in keep_steps] if keep > 0 else []:
    (ckpt / str(old) / 'meta.json').unlink()
    (ckpt / str(old)).rmdir()


def _branch_start(cfg, workdir: pathlib.Path) -> int | None:
  """train.init_from='PARENT[:STEP]' (relative to the workdir): the fork step, if that checkpoint exists."""
  path, _, step = cfg.train.init_from.rpartition(':')
  parent = (workdir / path).resolve()
  if not (parent / 'checkpoints' / step).is_dir():
    print(f'fake_train: train.init_from={cfg.train.init_from!r}: no checkpoint {parent}/checkpoints/{step}',
          file=sys.stderr, flush=True)
    return None
  _write_json(workdir / 'progress.json', {'step': int(step)})
  return int(step)


def main(argv):
  overrides, rest = parse_override_flags(argv)
  args = {}
  i = 0
  while i < len(rest):
    a = rest[i]
    if a in ('--config', '--workdir', '--local_processes'):
      args[a[2:]] = rest[i + 1]
      i += 2
    elif a == '--no_sample':
      i += 1
    else:
      print(f'fake_train: unknown argument {a!r}', file=sys.stderr)
      return 2
  cfg = load_config(args['config'], overrides)
  workdir = pathlib.Path(args['workdir'])
  workdir.mkdir(parents=True, exist_ok=True)
  steps = train_steps(cfg)
  progress = workdir / 'progress.json'
  start = json.loads(progress.read_text())['step'] if progress.exists() else 0
  branched = None
  if not progress.exists() and cfg.train.init_from:
    branched = _branch_start(cfg, workdir)
    if branched is None:
      return 1
    start = branched
  with open(workdir / 'starts.jsonl', 'a') as f:
    f.write(json.dumps({'pid': os.getpid(), 'resumed_from': start, 'time': time.time(), 'branched_from': branched,
                        'local_processes': int(args.get('local_processes', 1))}) + '\n')
  _write_json(workdir / 'config.json', to_dict(cfg))

  stop = []
  for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda *_: stop.append(1))
  fail = {int(x) for x in os.environ.get('FAKE_TRAIN_FAIL_SEEDS', '').split(',') if x.strip()}
  dt = float(os.environ.get('FAKE_TRAIN_STEP_S', '0.02'))
  hold = os.environ.get('FAKE_TRAIN_HOLD')
  t0 = time.time()
  tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
  loss = None
  for step in range(start + 1, steps + 1):
    if stop:
      print(f'fake_train: signal at step {step - 1}: saved, exiting 75', flush=True)
      return 75
    time.sleep(dt)
    while hold and os.path.exists(hold) and not stop:
      time.sleep(0.02)
    loss = 10.0 / (1.0 + step * cfg.train.lr * 100)   # decreasing, depends on lr
    _write_json(progress, {'step': step})   # before the metrics line: a step that is logged is resumable
    with open(workdir / 'metrics.jsonl', 'a') as f:    # (tests that kill after N logged steps rely on it)
      f.write(json.dumps({'step': step, 'train/loss': loss, 'tokens_seen': step * tokens_per_step}) + '\n')
    if step % cfg.train.ckpt_every == 0 or step == steps or step in cfg.train.ckpt_steps:
      _checkpoint(workdir, step, cfg.train.keep_checkpoints, cfg.train.ckpt_steps)
    print(f'step {step}/{steps} loss={loss:.4f}', flush=True)
    if cfg.train.seed in fail and step >= start + 2:
      print('fake_train: failing on purpose (FAKE_TRAIN_FAIL_SEEDS)', flush=True)
      return 3
  params = 1000 * cfg.model.d_model
  summary = {'state': 'done', 'step': steps, 'params': params, 'non_embedding_params': params // 2,
             'tokens': steps * tokens_per_step, 'flops': 6.0 * params * steps * tokens_per_step,
             'train/loss': loss, 'eval/loss': loss + 0.5, 'eval/bpb': (loss + 0.5) / 2,   # eval differs from train
             'throughput/tokens_per_s': 1000.0, 'wall_s': time.time() - t0, 'config_hash': config_hash(cfg)}
  _write_json(workdir / 'summary.json', summary)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
