"""The `scaling` command: a table of subcommands; running one imports only the module that implements it.

    scaling table    [--config SPEC] [--json]            the scale table of the ladder
    scaling prepare  [--config SPEC] [--config.x=v]      corpus -> tokenizer -> token shards
    scaling train    [--config SPEC] [--workdir DIR] ... train (resumes from the workdir's checkpoint)
    scaling train-packed --members FILE | --vary F=a,b  K runs in one packed step (lr, betas, wd, seeds)
    scaling eval     --workdir DIR [--seq_len L]         validation loss / bits per byte
                     [--sets] [--tasks T1,T2]            ... on tagged eval sets; lm-eval tasks in-process
    scaling sample   --workdir DIR --prompt TEXT ...     continuations with a KV cache
    scaling sweep    --config SWEEP --backend B ...      grids of runs (local, slurm, tpu-vm, gke)
    scaling compile  --config SPEC --topology v5p-8      the train step compiled for a TPU slice / GPUs
    scaling plan     --config SPEC --topology v5p-8      the fastest knobs (mesh, remat, microbatches) that fit
    scaling coordcheck --config SPEC --widths 64,128,... activation sizes and updates across width and depth
    scaling fit      --results results.jsonl             scaling-law fits and plots
    scaling predict  --runs DIR... --schedule SPEC       a loss-curve law: final loss under another schedule
    scaling report   --root DIR                          REPORT.md of a sweep
    scaling runs     DIR [--json]                        the runs under DIR: state, step, losses, tokens, wall
    scaling plot     --workdir W | --root R              loss (and lr) against tokens, as a PNG
    scaling cbs      plan --parent W --out P | report | study --root R   critical and optimal batch, ramps
    scaling export   --workdir DIR --out HF_DIR          Hugging Face (Llama) checkpoint
    scaling import   --hf HF_DIR --workdir DIR           the reverse

SPEC is `path/to/config.py[:arg]` (default scaling/config/default.py); any field is
overridden with `--config.section.field=value`.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import sys

from scaling.cli.common import CONFIG_HELP, OVERRIDES

DESCRIPTION = """\
Language-model scaling experiments in JAX: train, evaluate and sample a model on one host,
launch sweeps over the model ladder (local, SLURM, TPU VM, GKE), fit scaling laws.

Start with `scaling train` (the default model on the embedded Shakespeare corpus, a few
minutes on a laptop CPU), then `scaling sample --workdir workdir --prompt "ROMEO:"`.
`scaling COMMAND --help` describes each command."""


# module: imported only when this command runs (or its --help is asked for); config: takes --config SPEC and
# --config.x=v overrides, run(args, overrides); add_args, run: the module's functions. A namedtuple, not a
# dataclass: `dataclasses` (with `inspect`) would be a fifth of `scaling --help`'s time.
Command = collections.namedtuple('Command', 'module help config add_args run', defaults=(False, 'add_args', 'run'))


COMMANDS = {
    'table': Command('scaling.cli.table', 'print the scale table (parameters, FLOPs, tokens, memory, time)', True),
    'compile': Command('scaling.train.aot_cli', 'compile the train step for a TPU slice on this machine: fits? '
                       'how fast?', True, 'add_compile_args', 'run_compile'),
    'plan': Command('scaling.cli.plan', 'search mesh, remat, microbatches, loss chunk and attention block for the '
                    'fastest train step that fits a TPU slice or N GPUs (compiled here)', True),
    'coordcheck': Command('scaling.analysis.coordcheck', 'coordinate check: activation sizes and their updates '
                          'across width and depth, sp vs mup vs completep (exponent tables, PNGs)', True,
                          'add_coordcheck_args', 'run_coordcheck'),
    'prepare': Command('scaling.cli.prepare', 'tokenize a corpus into shards (idempotent)', True),
    'train': Command('scaling.cli.train', 'train (or resume) a model', True),
    'train-packed': Command('scaling.cli.train_packed', 'train runs that differ only in lr, Adam scalars, weight '
                            'decay or init seed as one packed run (K members, one step)', True),
    'eval': Command('scaling.cli.eval', 'evaluate a trained workdir (loss, bits per byte), optionally at another '
                    'length'),
    'sample': Command('scaling.inference.generate', 'continue prompts from a trained workdir', False,
                      'add_sample_args', 'run_sample'),
    'fit': Command('scaling.analysis.fit.command', 'fit scaling laws to results.jsonl', False, 'add_fit_args',
                   'run_fit'),
    'report': Command('scaling.analysis.report', 'write REPORT.md for a sweep root', False, 'add_report_args',
                      'run_report'),
    'runs': Command('scaling.cli.runs', 'list the runs under a directory: state, step, final losses, tokens, wall'),
    'plot': Command('scaling.cli.plot', "plot a run's train/eval loss and lr against tokens, or every run of a "
                    'sweep root (PNG)'),
    'predict': Command('scaling.cli.predict', 'predict the final loss of a run under another lr schedule or length '
                       'from a few runs\' loss curves (with an interval); preregister a sweep\'s predictions'),
    'cbs': Command('scaling.cli.cbs', 'the critical batch size by branching from a run\'s checkpoints: plan the '
                   'branches (a sweep), then report the CBS against tokens (PNG); `study`: the optimal batch against data and a '
                   'batch ramp against the fixed batch (docs/results/batch)'),
    'export': Command('scaling.inference.hf_export', 'export a workdir as a Hugging Face Llama checkpoint', False,
                      'add_export_args', 'run_export'),
    'import': Command('scaling.inference.hf_import', 'import a Hugging Face Llama checkpoint into a workdir', False,
                      'add_import_args', 'run_import'),
}
SWEEP_HELP = 'run a sweep: see `scaling sweep --help`'


def _sweep_fit_check(sweep, resources, log):
  """The TPU launchers' preflight, handed to the launcher (which never imports jax): jax loads only here."""
  from scaling.train.aot_cli import sweep_fit_problems
  return sweep_fit_problems(sweep, resources, log=log)


def sweep_plan_overrides(argv: list[str], overrides: dict) -> tuple[list[str], dict]:
  """`scaling sweep --plan FILE`: the `overrides` of a plan written by `scaling plan` (mesh, remat, microbatches,
  loss chunk, attention block) join the sweep's --config.* overrides (which win), for every run of the sweep;
  (argv without --plan, overrides). Jax-free: the plan is a JSON file."""
  import json
  rest, path = [], None
  it = iter(argv)
  for a in it:
    if a == '--plan':
      path = next(it, None)
      if path is None:
        raise ValueError('--plan needs a file (a plan JSON written by `scaling plan`)')
    elif a.startswith('--plan='):
      path = a.split('=', 1)[1]
    else:
      rest.append(a)
  if path is None:
    return argv, overrides
  with open(path) as f:
    plan = json.load(f)
  if not isinstance(plan.get('overrides'), dict):
    raise ValueError(f'{path} has no winner (`overrides`): the plan found nothing that fits')
  return rest, {**{k: str(v) for k, v in plan['overrides'].items()}, **overrides}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
  """The `scaling` parser: every subcommand is listed, and only `command`'s arguments are built (its module
  imported); parsing another command's name fails in argparse as an unknown choice would not, so pass it."""
  parser = argparse.ArgumentParser(prog='scaling', description=DESCRIPTION, epilog=OVERRIDES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  for name, c in COMMANDS.items():
    if c.config:
      p = sub.add_parser(name, help=c.help, description=c.help, epilog=OVERRIDES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    else:
      p = sub.add_parser(name, help=c.help)
    if name == command:
      if c.config:
        p.add_argument('--config', default=None, help=CONFIG_HELP)
      getattr(importlib.import_module(c.module), c.add_args)(p)
  sub.add_parser('sweep', help=SWEEP_HELP, add_help=False)
  return parser


def config_flag_hint(unknown: list[str]) -> str:
  """For unknown flags that name a config field (`--steps 20`, `--train.lr=1e-3`): the override to write
  instead ('; did you mean --config.train.steps=20?'), else ''."""
  from scaling.config.default import get_config
  fields = []
  def walk(d, prefix=''):
    for k, v in d.items():
      if isinstance(v, dict) and v:
        walk(v, f'{prefix}{k}.')
      else:
        fields.append(f'{prefix}{k}')
  walk(get_config().to_dict())
  hints = []
  for i, tok in enumerate(unknown):
    if not tok.startswith('--'):
      continue
    name, eq, value = tok[2:].partition('=')
    name = name.replace('-', '_')
    if not eq and i + 1 < len(unknown) and not unknown[i + 1].startswith('-'):
      value = unknown[i + 1]
    match = [f for f in fields if f == name or f.endswith('.' + name)]
    if len(match) == 1:
      hints.append(f'--config.{match[0]}={value or "VALUE"}')
    elif match:
      hints.append(' or '.join(f'--config.{m}={value or "VALUE"}' for m in match))
  return f'; config fields are set with --config.SECTION.FIELD=VALUE: did you mean {", ".join(hints)}?' if hints else ''


def _prepare_host() -> None:
  """Before a command that may start JAX: its module (and its add_args) may import jax."""
  from scaling.base import hostmem
  hostmem.skip_absent_tpu()   # libtpu installed only to compile for a TPU: compute on the CPU, quietly
  hostmem.tune_malloc()   # before JAX starts its threads: step buffers get reused (scaling/base/hostmem.py)


def main(argv=None) -> int:
  # `scaling --help` and a mistyped command stay fast (tests/test_cli_startup.py): the config machinery
  # (ml_collections, absl, yaml) loads only when a --config.* flag is given, the host tuning only for a command.
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides, rest = {}, argv
  if any(a.startswith('--config.') for a in argv):
    from scaling.config.load import ConfigError, parse_override_flags
    try:
      overrides, rest = parse_override_flags(argv)
    except ConfigError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
  if rest and rest[0] == 'sweep':
    _prepare_host()
    from scaling.launch.cli import run_sweep_cli
    try:
      rest, overrides = sweep_plan_overrides(rest, overrides)
    except (OSError, ValueError) as e:
      print(f'scaling sweep: error: --plan: {e}', file=sys.stderr)
      return 2
    return run_sweep_cli(rest[1:] + [f'--config.{k}={v}' for k, v in overrides.items()], fit_check=_sweep_fit_check)
  command = next((a for a in rest if not a.startswith('-')), None)
  if command in COMMANDS:
    _prepare_host()
  parser = build_parser(command if command in COMMANDS else None)
  args, unknown = parser.parse_known_args(rest)
  if unknown:
    hint = config_flag_hint(unknown) if COMMANDS.get(command) and COMMANDS[command].config else ''
    parser.error(f'unrecognized arguments: {" ".join(unknown)}{hint}')
  c = COMMANDS[args.command]
  try:
    if not c.config and overrides:   # overrides were parsed: scaling.config.load is imported
      from scaling.config.load import ConfigError
      raise ConfigError(f'`scaling {args.command}` takes no --config.* overrides')
    run = getattr(importlib.import_module(c.module), c.run)
    return run(args, overrides) if c.config else run(args)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    # every project error class derives from ValueError/RuntimeError: print the message, not a traceback
    if getattr(args, 'debug', False):
      raise
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
