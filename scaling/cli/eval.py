"""`scaling eval`: a trained workdir's loss and bits per byte, at other lengths, on its tagged eval sets, or on
lm-evaluation-harness tasks (scaling/inference/evaluate.py)."""

from __future__ import annotations

HELP = 'evaluate a trained workdir (loss, bits per byte), optionally at another length'


def add_args(p) -> None:
  p.add_argument('--workdir', required=True)
  p.add_argument('--seq_len', type=int, action='append', default=None, help='evaluation length(s)')
  p.add_argument('--step', type=int, default=None)
  p.add_argument('--batches', type=int, default=0, help='0: the whole validation split')
  p.add_argument('--json', action='store_true', help='one JSON object per length instead of a table')
  p.add_argument('--sets', nargs='?', const='all', default=None,
                 help="the run's tagged eval sets (train.eval_sets, scaling/train/evalsets.py): all, or comma-separated tags")
  p.add_argument('--tasks', default='', help='lm-evaluation-harness tasks, in-process (scaling/inference/harness.py, needs '
                 ".[eval]): comma-separated names (hellaswag,arc_easy) or task YAML files, as lm-eval's --tasks")
  p.add_argument('--limit', type=float, default=None, help='--tasks: at most this many examples per task (< 1: a fraction)')
  p.add_argument('--num_fewshot', type=int, default=None, help="--tasks: few-shot examples (default: each task's own)")
  p.add_argument('--eval_batch_size', type=int, default=16, help='--tasks: requests per jitted batch')


def run(args) -> int:
  from scaling.inference.evaluate import run_eval
  return run_eval(args)
