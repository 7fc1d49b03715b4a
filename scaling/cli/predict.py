"""`scaling predict`: the final loss of a run of one model size under another schedule or length, predicted from the
loss curves of a few finished runs of that size (scaling/analysis/curves/), with an interval.

    scaling predict --runs DIR [DIR ...] --schedule SPEC [--steps N] [--law multipower|tissue] [--out DIR]
        fit the runs' curves, predict the final loss of a run with schedule SPEC (prediction.json, prediction.png)
    scaling predict --sweep CONFIG.py[:arg] --from DIR [DIR ...] --out predictions.jsonl [--root ROOT]
        preregister: every run of the sweep's predicted final loss, written before the sweep trains
    scaling predict --score predictions.jsonl --results results.jsonl
        score preregistered predictions against a collected sweep (error per run, interval coverage)
    scaling predict --validate DIR [DIR ...] [--fit_on DIR [DIR ...]] --out DIR
        fit on a parent and one branch, predict the other runs, compare with naive baselines (validation.md)

Exit status: 0 predicted (or written), 1 the data cannot support the prediction (the reason is printed and
written; no number), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os

SCHEDULE_HELP = ('constant | cosine | wsd, each optionally :KEY=V,... (warmup=N, lr=X, min_lr=R; for wsd decay=FRACTION '
                 'or decay_steps=N, shape=linear|cosine|1-sqrt), or run:DIR (that run\'s schedule) or config:FILE '
                 '(a config.json, run dir or config .py[:arg]). E.g. wsd:decay=0.2,shape=1-sqrt')


def add_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
  p.description = __doc__.split('\n\n')[0]
  p.formatter_class = argparse.RawDescriptionHelpFormatter
  p.epilog = __doc__.split('\n\n', 1)[1]
  what = p.add_mutually_exclusive_group(required=True)
  what.add_argument('--schedule', help=f'the schedule to predict: {SCHEDULE_HELP}')
  what.add_argument('--sweep', help='preregister: a sweep file (CONFIG.py[:arg]) whose every run is predicted')
  what.add_argument('--score', metavar='PREDICTIONS', help='score a predictions.jsonl against --results')
  what.add_argument('--validate', nargs='+', metavar='DIR', help='validation study over these run directories')
  p.add_argument('--runs', '--from', nargs='+', dest='runs', metavar='DIR',
                 help='the finished runs to fit (one model size and lr): a parent, its branches, a cosine run, ...')
  p.add_argument('--steps', type=int, default=None, help='length of the predicted run (default: the longest source)')
  p.add_argument('--law', default='multipower', choices=('multipower', 'tissue'),
                 help='multipower (Luo et al. 2025, default) or tissue (Tissue et al. 2024)')
  p.add_argument('--metric', default='train/loss', choices=('train/loss', 'eval/loss'),
                 help='the curve to fit: train/loss (every log_every steps) or eval/loss (every eval_every)')
  p.add_argument('--out', default=None, help='output directory (--schedule, --validate) or predictions.jsonl '
                                             '(--sweep); default ./prediction for --schedule')
  p.add_argument('--bootstrap', type=int, default=100, help='bootstrap refits for the intervals (at least 20)')
  p.add_argument('--seed', type=int, default=0, help='bootstrap seed')
  p.add_argument('--root', default=None, help='--sweep: the sweep root, checked to hold no started run')
  p.add_argument('--results', default=None, help='--score: results.jsonl of `scaling sweep collect`')
  p.add_argument('--fit_on', nargs='+', default=None, metavar='DIR',
                 help='--validate: the runs to fit (default: the parent and its shortest branch)')
  p.add_argument('--no_plot', dest='plot', action='store_false', help='no PNG')
  return p


def _check(args) -> None:
  if args.bootstrap < 20:
    raise ValueError(f'--bootstrap {args.bootstrap}: an interval needs at least 20 refits')
  needs_runs = args.schedule is not None or args.sweep is not None
  if needs_runs and not args.runs:
    raise ValueError('name the finished runs to fit with --runs DIR [DIR ...] (or --from)')
  if not needs_runs and args.runs:
    raise ValueError('--runs/--from go with --schedule or --sweep (--validate takes its runs, --fit_on its fitted)')
  if args.sweep is not None and not args.out:
    raise ValueError('--sweep needs --out predictions.jsonl (where the preregistered predictions go)')
  if args.score is not None and not args.results:
    raise ValueError('--score needs --results results.jsonl (`scaling sweep collect` writes it)')


def _print_prediction(pred: dict) -> None:
  if pred['state'] != 'predicted':
    print(f'cannot predict {pred["schedule"]}: {pred["reason"]}')
    return
  lo, hi = pred['pi']
  clo, chi = pred['ci']
  print(f'{pred["schedule"]}: final {pred["metric"]} {pred["point"]:.4f}, 90% interval {lo:.4f}-{hi:.4f} '
        f'(law only {clo:.4f}-{chi:.4f}; {pred["law"]} law, {pred["draws"] - pred["failed_draws"]} of '
        f'{pred["draws"]} refits)')
  for n in pred.get('notes') or []:
    print(f'  note: {n}')


def _run_schedule(args) -> int:
  from scaling.analysis.curves.fitting import CannotPredict, bootstrap, fit_curves
  from scaling.analysis.curves.forecast import cannot, fit_record, predict_final
  from scaling.analysis.curves.laws import make_law
  from scaling.analysis.curves.runs import load_sources
  from scaling.analysis.curves.spec import parse_schedule
  from scaling.base.files import atomic_write_text
  curves = load_sources(args.runs, args.metric)
  longest = max(curves, key=lambda c: c.schedule.total).schedule.total
  target = parse_schedule(args.schedule, curves[0].config, args.steps, default_steps=longest)
  out = args.out or 'prediction'
  os.makedirs(out, exist_ok=True)
  try:
    fit = bootstrap(fit_curves(make_law(args.law), curves), draws=args.bootstrap, seed=args.seed)
    pred, record = predict_final(fit, target.schedule, seed=args.seed), fit_record(fit)
  except CannotPredict as e:
    fit, record = None, None
    pred = cannot(str(e), steps=target.steps, schedule=target.schedule.label, metric=args.metric, law=args.law)
  result = {'prediction': pred, 'spec': args.schedule, 'fit': record}
  atomic_write_text(os.path.join(out, 'prediction.json'), json.dumps(result, indent=1) + '\n')
  _print_prediction(pred)
  if fit is not None and args.plot:
    from scaling.analysis.curves.plots import plot_prediction
    plot_prediction(os.path.join(out, 'prediction.png'), fit, [(target.schedule, pred)],
                    f'{args.law} law fitted on {", ".join(c.name for c in curves)}')
  print(f'wrote {os.path.join(out, "prediction.json")}' + (' and prediction.png' if fit and args.plot else ''))
  return 0 if pred['state'] == 'predicted' else 1


def _run_score(args) -> int:
  from scaling.analysis.curves.prereg import score_predictions
  scored = score_predictions(args.score, args.results)
  for r in scored['runs']:
    print(f'{r["run"]} {r.get("label") or ""}: predicted {r["predicted"]:.4f}, measured {r["measured"]:.4f} '
          f'({100 * r["rel_error"]:+.2f}%), interval {"covers" if r["covered"] else "misses"}')
  s = scored['summary']
  mare = '-' if s['mean_abs_rel_error'] is None else f'{100 * s["mean_abs_rel_error"]:.2f}%'
  cov = '-' if s['coverage'] is None else f'{s["coverage"]:.2f}'
  print(f'{s["scored"]} scored of {s["predictions"]} ({s["missing"]} not finished, {s["cannot_predict"]} cannot '
        f'predict): mean |error| {mare}, coverage {cov} (nominal 0.90)')
  if args.out:
    from scaling.base.files import atomic_write_text
    atomic_write_text(args.out, json.dumps(scored, indent=1) + '\n')
  return 0


def run(args) -> int:
  _check(args)
  if args.schedule is not None:
    return _run_schedule(args)
  if args.score is not None:
    return _run_score(args)
  if args.sweep is not None:
    from scaling.analysis.curves.prereg import preregister
    preregister(args.sweep, args.runs, args.out, law=args.law, metric=args.metric, draws=args.bootstrap,
                seed=args.seed, root=args.root)
    return 0
  from scaling.analysis.curves.validate import validate
  validate(args.validate, args.out or 'validation', fit_on=args.fit_on, law=args.law, metric=args.metric,
           draws=args.bootstrap, seed=args.seed, plot=args.plot)
  return 0
