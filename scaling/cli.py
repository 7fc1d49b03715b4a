"""The `scaling` command: parses arguments and dispatches; no logic of its own.

    scaling table    [--config SPEC] [--json]            the scale table of the ladder
    scaling prepare  [--config SPEC] [--config.x=v]      corpus -> tokenizer -> token shards
    scaling train    [--config SPEC] [--workdir DIR] ... train (resumes from the workdir's checkpoint)
    scaling eval     --workdir DIR [--seq_len L]         validation loss / bits per byte
                     [--sets] [--tasks T1,T2]            ... on tagged eval sets; lm-eval tasks in-process
    scaling sample   --workdir DIR --prompt TEXT ...     continuations with a KV cache
    scaling sweep    --config SWEEP --backend B ...      grids of runs (local, slurm, tpu-vm, gke)
    scaling coordcheck --config SPEC --widths 64,128,... activation sizes across widths, sp vs mup
    scaling fit      --results results.jsonl             scaling-law fits and plots
    scaling report   --root DIR                          REPORT.md of a sweep
    scaling export   --workdir DIR --out HF_DIR          Hugging Face (Llama) checkpoint
    scaling import   --hf HF_DIR --workdir DIR           the reverse

SPEC is `path/to/config.py[:arg]` (default configs/default.py); any field is
overridden with `--config.section.field=value`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

DESCRIPTION = """\
Language-model scaling experiments in JAX: train, evaluate and sample a model on one host,
launch sweeps over the model ladder (local, SLURM, TPU VM, GKE), fit scaling laws.

Start with `scaling train` (the default model on the embedded Shakespeare corpus, a few
minutes on a laptop CPU), then `scaling sample --workdir workdir --prompt "ROMEO:"`.
`scaling COMMAND --help` describes each command."""

OVERRIDES = """\
config: --config path/to/config.py[:arg] picks a config file (default: configs/default.py;
configs/ladder.py:RUNG for a rung of the ladder); any field is then overridden with
--config.section.field=value, e.g. --config.train.steps=200 --config.model.d_model=128.
configs/default.py documents every field; bad values fail before any work with the field named."""


def _config_parser(name, sub, help_):
  p = sub.add_parser(name, help=help_, description=help_, epilog=OVERRIDES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', default=None, help='config file, path.py[:arg] (default: configs/default.py)')
  return p


def cmd_table(args, overrides):
  from scaling import accounting
  from scaling.config import load_config, load_module, split_spec
  if args.config:
    named = [(args.config, load_config(args.config, overrides))]
  else:
    path, _ = split_spec('ladder.py')
    mod = load_module(path)
    names = args.rungs.split(',') if args.rungs else list(mod.RUNGS)
    named = [(r, load_config(f'{path}:{r}', overrides)) for r in names]
  rows = [accounting.table_row(name, cfg.model, mfu=args.mfu) for name, cfg in named]
  if args.topology:   # compile each rung for the slice (scaling/aot.py)
    from scaling.aot import add_topology_columns
    add_topology_columns(rows, named, args.topology, args.num_slices)
  if args.json:
    print(json.dumps(rows, indent=1))
  else:
    print(accounting.format_table(rows))
  return 0


def cmd_compile(args, overrides):
  from scaling.aot import run_compile
  return run_compile(args, overrides)


def cmd_prepare(args, overrides):
  from scaling.config import load_config
  from scaling.data import main_prepare
  main_prepare(load_config(args.config, overrides), force=args.force)
  return 0


def cmd_train(args, overrides):
  from scaling import distributed
  if args.local_processes > 1:
    return distributed.launch_local(args.local_processes, sys.argv[1:])
  distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  from scaling.config import load_config
  from scaling.train import train
  cfg = load_config(args.config, overrides)
  workdir = args.workdir or 'workdir'
  sample = args.sample and bool(cfg.sample.prompts)   # sample.prompts=() skips the samples, like --no_sample
  result = train(cfg, workdir, debug=args.debug, profile_steps=args.profile_steps, final_model=sample)
  code = result['exit_code']
  if result['state'] == 'done' and sample and distributed.is_main():
    try:
      _print_samples(result['model'], result['tokenizer'], cfg)
    except KeyboardInterrupt:
      print('interrupted (SIGINT) during the end-of-run samples; the training run itself is finished and saved',
            file=sys.stderr, flush=True)
      code = 130
  distributed.end_of_run()   # main-only work is done: all processes reach jax's shutdown barrier together
  return code


def _print_samples(model, tok, cfg):
  from scaling.generate import generate
  s = cfg.sample
  prompts = list(s.prompts)
  for label, temp, top_p in (('greedy', 0.0, 1.0), (f'top-p {s.top_p}, T={s.temperature}', s.temperature, s.top_p)):
    outs = generate(model, tok, prompts, max_new_tokens=s.max_new_tokens, temperature=temp, top_k=s.top_k,
                    top_p=top_p, seed=s.seed)
    print(f'\n=== samples ({label}) ===')
    for p, o in zip(prompts, outs):
      print(f'--- {p!r}\n{p}{o}')


def cmd_eval(args, overrides):
  from scaling.evaluate import run_eval
  return run_eval(args)


def main(argv=None) -> int:
  from scaling import hostmem
  hostmem.skip_absent_tpu()   # libtpu installed only to compile for a TPU: compute on the CPU, quietly
  hostmem.tune_malloc()   # before JAX starts its threads: step buffers get reused (scaling/hostmem.py)
  from scaling.config import ConfigError, parse_override_flags
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    overrides, rest = parse_override_flags(argv)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if rest and rest[0] == 'sweep':
    from launch.cli import run_sweep_cli
    return run_sweep_cli(rest[1:] + [f'--config.{k}={v}' for k, v in overrides.items()])
  parser, lazy = build_parser()
  args = parser.parse_args(rest)
  handlers = dict(table=cmd_table, prepare=cmd_prepare, train=cmd_train, eval=cmd_eval, compile=cmd_compile,
                  coordcheck=lambda a, o: importlib.import_module('scaling.coordcheck').run_coordcheck(a, o))
  try:
    if args.command in handlers:
      return handlers[args.command](args, overrides)
    if overrides:
      raise ConfigError(f'`scaling {args.command}` takes no --config.* overrides')
    return lazy[args.command](args)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    # every project error class derives from ValueError/RuntimeError: print the message, not a traceback
    if getattr(args, 'debug', False):
      raise
    print(f'error: {e}', file=sys.stderr)
    return 2


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
  """The `scaling` parser with every subcommand, and {name: run(args)} of those whose code lives elsewhere."""
  parser = argparse.ArgumentParser(prog='scaling', description=DESCRIPTION, epilog=OVERRIDES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)

  p = _config_parser('table', sub, 'print the scale table (parameters, FLOPs, tokens, memory, time)')
  p.add_argument('--json', action='store_true', help='a JSON list of row objects instead of a table')
  p.add_argument('--mfu', type=float, default=0.4, help='assumed MFU for the wall-clock estimate')
  p.add_argument('--rungs', default='', help='comma-separated ladder rungs (default: all)')
  p.add_argument('--topology', default='', help='also compile each rung for this TPU slice (see `scaling compile`)')
  p.add_argument('--num_slices', type=int, default=1, help='with --topology: number of slices')

  p = _config_parser('compile', sub, 'compile the train step for a TPU slice on this machine: fits? how fast?')
  importlib.import_module('scaling.aot').add_compile_args(p)

  p = _config_parser('coordcheck', sub, 'coordinate check: activation sizes across widths, sp vs mup (table, PNG)')
  importlib.import_module('scaling.coordcheck').add_coordcheck_args(p)

  p = _config_parser('prepare', sub, 'tokenize a corpus into shards (idempotent)')
  p.add_argument('--force', action='store_true', help='rebuild even when up to date')

  p = _config_parser('train', sub, 'train (or resume) a model')
  p.add_argument('--workdir', default=None, help='run directory (default: ./workdir)')
  p.add_argument('--debug', action='store_true', help='un-jitted step with NaN checks; print param shardings')
  p.add_argument('--profile_steps', default='', help='A:B writes a profiler trace of steps A..B-1')
  p.add_argument('--no_sample', dest='sample', action='store_false', help='skip the samples at the end')
  p.add_argument('--local_processes', type=int, default=1, help='start N processes on this host (multi-host test)')
  p.add_argument('--coordinator', default=None, help='HOST:PORT of process 0 for jax.distributed')
  p.add_argument('--num_processes', type=int, default=None)
  p.add_argument('--process_id', type=int, default=None)

  p = sub.add_parser('eval', help='evaluate a trained workdir (loss, bits per byte), optionally at another length')
  p.add_argument('--workdir', required=True)
  p.add_argument('--seq_len', type=int, action='append', default=None, help='evaluation length(s)')
  p.add_argument('--step', type=int, default=None)
  p.add_argument('--batches', type=int, default=0, help='0: the whole validation split')
  p.add_argument('--json', action='store_true', help='one JSON object per length instead of a table')
  p.add_argument('--sets', nargs='?', const='all', default=None,
                 help="the run's tagged eval sets (train.eval_sets, scaling/evalsets.py): all, or comma-separated tags")
  p.add_argument('--tasks', default='', help='lm-evaluation-harness tasks, in-process (scaling/harness.py, needs '
                 ".[eval]): comma-separated names (hellaswag,arc_easy) or task YAML files, as lm-eval's --tasks")
  p.add_argument('--limit', type=float, default=None, help='--tasks: at most this many examples per task (< 1: a fraction)')
  p.add_argument('--num_fewshot', type=int, default=None, help="--tasks: few-shot examples (default: each task's own)")
  p.add_argument('--eval_batch_size', type=int, default=16, help='--tasks: requests per jitted batch')

  # subcommands whose arguments live beside their code: (name, module, add_args, run, help)
  delegated = (
      ('sample', 'generate', 'add_sample_args', 'run_sample', 'continue prompts from a trained workdir'),
      ('fit', 'fit', 'add_fit_args', 'run_fit', 'fit scaling laws to results.jsonl'),
      ('report', 'report', 'add_report_args', 'run_report', 'write REPORT.md for a sweep root'),
      ('export', 'hf', 'add_export_args', 'run_export', 'export a workdir as a Hugging Face Llama checkpoint'),
      ('import', 'hf', 'add_import_args', 'run_import', 'import a Hugging Face Llama checkpoint into a workdir'),
  )
  lazy = {}
  for name, module, add_args, run, help_ in delegated:
    mod = importlib.import_module(f'scaling.{module}')
    getattr(mod, add_args)(sub.add_parser(name, help=help_))
    lazy[name] = getattr(mod, run)
  sub.add_parser('sweep', help='run a sweep: see `scaling sweep --help`', add_help=False)
  return parser, lazy


if __name__ == '__main__':
  sys.exit(main())
