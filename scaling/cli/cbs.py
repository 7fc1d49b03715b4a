"""`scaling cbs`: the critical batch size by branching from a run's checkpoints (scaling/analysis/cbs.py).

    scaling cbs plan --parent W [--steps S1,S2,...] [--factors 1,2,4,8,16] [--window TOKENS] [--rule sqrt]
                     --out plan.json
        the branches (batch k x B from each kept checkpoint, a fixed token window each) as a sweep:
        scaling sweep --config configs/sweeps/cbs.py:plan.json --backend local --root R   (resumable)
    scaling cbs report --root R [--tolerance 0.01] [--tail 0.25] [--out DIR]
        the CBS at every fork point with its interval: a table, cbs.json and cbs.png (CBS against tokens)
    scaling cbs study --root R [--out DIR] [--noise SD] [--fit three|all] [--metric eval/loss] [--smooth 0.05]
                      [--isoflop configs/sweeps/isoflop_v2.py]
        the batch study's arms (b) and (c) (configs/sweeps/batch.py) from R/results.jsonl and the runs'
        metrics.jsonl: B_opt per (size, budget) and B_opt(D) with intervals, the ramp against the fixed batch;
        REPORT.md, batch_opt.json, loss_vs_batch.png, b_opt.png, ramp.png (scaling/analysis/batch_report.py)

Exit status: 0 done, 1 the branches cannot give an estimate (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

_ISOFLOP = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'sweeps' / 'isoflop_v2.py'


def add_args(p: argparse.ArgumentParser) -> None:
  p.description = __doc__.split('\n\n')[0]
  p.formatter_class = argparse.RawDescriptionHelpFormatter
  p.epilog = __doc__.split('\n\n', 1)[1]
  p.add_argument('action', choices=('plan', 'report', 'study'),
                 help='plan the branches, estimate from their results, or report the batch study\'s arms (b), (c)')
  p.add_argument('--parent', help='plan: the run to branch from (its workdir, with checkpoints kept at the forks)')
  p.add_argument('--steps', default='', help='plan: fork steps, comma-separated (default: every kept checkpoint '
                                             'after the warmup)')
  p.add_argument('--factors', default='1,2,4,8,16', help='plan: batch factors k (1 is the reference)')
  p.add_argument('--window', type=float, default=0, help='plan: tokens each branch trains (default: 5%% of the '
                                                         "parent's tokens at the last fork, at least a step at the largest batch)")
  p.add_argument('--rule', default='sqrt', choices=('sqrt', 'linear', 'unchanged'),
                 help='plan: the lr rule of the branches (train.batch_lr_rule)')
  p.add_argument('--out', default=None, help='plan: plan.json to write; report: the directory of cbs.json/cbs.png '
                                             '(default the root)')
  p.add_argument('--root', help='report: the sweep root holding the branches')
  p.add_argument('--tolerance', type=float, default=None, help='report: nats within the reference (default 0.01)')
  p.add_argument('--tail', type=float, default=None, help="report: share of the window averaged (default 0.25)")
  p.add_argument('--json', action='store_true', help='report: print cbs.json')
  p.add_argument('--noise', type=float, default=None,
                 help='study: the loss SD of one run (default: the pooled SD of seed repeats, else an assumption '
                      'the report states)')
  p.add_argument('--fit', default='three', choices=('three', 'all'),
                 help='study: the parabola in log2 batch through the best batch and its neighbours, or all batches')
  p.add_argument('--metric', default='eval/loss', help='study: the final loss compared (a results.jsonl key)')
  p.add_argument('--smooth', type=float, default=None,
                 help="study: the ramp's smoothing half-window, a share of the fixed run's tokens (default 0.05)")
  p.add_argument('--isoflop', default=str(_ISOFLOP),
                 help='study: a sweep file with points() (budget, width, tokens) at which to judge the fixed batch '
                      '(default configs/sweeps/isoflop_v2.py; "" for none)')


def _plan(args) -> int:
  import ml_collections

  from scaling.analysis import cbs
  from scaling.analysis.runs_table import config_of
  from scaling.config import batch as batch_lib
  from scaling.config.history import checkpoint_steps
  from scaling.config.load import train_steps
  if not args.parent or not args.out:
    raise ValueError('plan needs --parent WORKDIR and --out plan.json')
  parent = pathlib.Path(args.parent).resolve()
  cfg = config_of(parent)
  if not cfg:
    raise ValueError(f'{parent} holds no config.json: give a run\'s workdir')
  kept = checkpoint_steps(parent)
  warm = int(cfg['train'].get('warmup_steps', 0))
  forks = [int(s) for s in args.steps.split(',') if s.strip()] or [s for s in kept if s > warm]
  missing = [s for s in forks if s not in kept]
  if missing or not forks:
    raise ValueError(f'{parent} keeps checkpoints {kept}; fork steps {missing or forks} are not among them (re-run '
                     f'the parent with them in train.ckpt_steps)')
  factors = [int(k) for k in args.factors.split(',')]
  seq_len = int(cfg['model']['seq_len'])
  window = args.window or 0.05 * batch_lib.of(cfg['train']).tokens_seen(max(forks), seq_len)
  rows = cbs.plan_rows(cfg, str(parent), forks, factors, int(window), args.rule)
  total = train_steps(ml_collections.ConfigDict(cfg))
  doc = {'parent': str(parent), 'config': cfg, 'forks': forks, 'factors': sorted(set(factors)), 'rule': args.rule,
         'parent_steps': total, 'rows': rows}
  pathlib.Path(args.out).write_text(json.dumps(doc, indent=1) + '\n')
  toks = sum((r['train.steps'] - int(r['train.init_from'].rpartition(':')[2])) * batch_lib.parse(
      r['train.batch_schedule'], cfg['train']['batch_size']).batch_at(r['train.steps'] - 1) * seq_len for r in rows)
  print(f'wrote {args.out}: {len(rows)} branches ({len(forks)} forks x {len(set(factors))} batches), '
        f'{toks:.3g} tokens in all\n  scaling sweep --config configs/sweeps/cbs.py:{pathlib.Path(args.out).resolve()} '
        f'--backend local --root ROOT\n  scaling cbs report --root ROOT')
  return 0


def _report(args) -> int:
  from scaling.analysis import cbs
  if not args.root:
    raise ValueError('report needs --root (the sweep root of the branches)')
  try:
    doc = cbs.report(args.root, args.out, cbs.DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance,
                     cbs.DEFAULT_TAIL if args.tail is None else args.tail)
  except cbs.CbsError as e:
    print(f'cannot estimate: {e}', file=sys.stderr)
    return 1
  print(json.dumps(doc, indent=1) if args.json else cbs.describe(doc['points']) + f'\nwrote {doc["png"]}')
  return 0


def _targets(path: str) -> list[dict]:
  """(budget, width, tokens) of each point of a sweep file's points(); [] without one."""
  if not path or not pathlib.Path(path).is_file():
    return []
  from scaling.config.load import load_module
  return [{'budget': p['budget'], 'width': p['width'], 'tokens': p['tokens']} for p in load_module(path).points()]


def _study(args) -> int:
  from scaling.analysis import batch_opt, batch_ramp, batch_report
  if not args.root:
    raise ValueError('study needs --root (the batch sweep\'s root, after `scaling sweep collect`)')
  try:
    doc = batch_report.report(args.root, args.out, args.noise, args.fit, args.metric, _targets(args.isoflop),
                              window=batch_ramp.DEFAULT_WINDOW if args.smooth is None else args.smooth)
  except batch_opt.BatchOptError as e:
    print(f'cannot report: {e}', file=sys.stderr)
    return 1
  print(json.dumps(doc, indent=1, default=str) if args.json else pathlib.Path(doc['report']).read_text())
  return 0


def run(args) -> int:
  try:
    return {'plan': _plan, 'report': _report, 'study': _study}[args.action](args)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
