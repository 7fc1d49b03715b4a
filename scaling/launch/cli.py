"""`scaling sweep ...`: submit a sweep, show its status, collect its results.

  scaling sweep --config configs/sweeps/smoke.py --backend {local,slurm,tpu-vm,gke}
                [--root DIR] [--dry-run] [--max-parallel N] [--max-retries K]
                [--local_processes P] [--wait] [--no-pack] [--resource KEY=VALUE ...] [--config.KEY=VALUE ...]
  scaling sweep status --root DIR [--json]
  scaling sweep collect --root DIR

`--config.KEY=VALUE` flags apply to every run of the sweep (and so change
their hashes); `--resource KEY=VALUE` sets or overrides a key of the sweep's
get_resources() (e.g. `--resource tpu_type=v5litepod-16 --resource zone=us-west4-a`).
The root defaults to ./sweeps/<sweep file name>. Everything the sweep needs is
checked (every run's config, the backend's tool and resources) before anything
is written or submitted; `--dry-run` prints the exact commands (and SLURM batch
scripts) and writes nothing; resources a backend needs but the sweep does not set
appear there as placeholders (`<tpu_type>`), with the flag that fills them.

The local backend packs: runs that differ only in packable scalars (lr, Adam's scalars, weight decay,
init seed) train together in one `scaling train-packed` process per group of at most
resources['pack_max_members'] (default 8, fewer when memory is short); `--dry-run` lists the groups and
`--no-pack` trains every run alone (scaling/launch/packing.py). slurm, tpu-vm and gke train each run alone.

scaling/cli/main.py hands `scaling sweep ARGS...` to `run_sweep_cli(ARGS)`;
`python -m scaling.launch.cli ARGS...` does the same without it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from scaling.base.layout import EXIT_FAILED, EXIT_USAGE, RUNS_DIR
from scaling.launch import rundir as rd_lib
from scaling.launch.backend import QueueQueryError
from scaling.launch.sweep import LaunchError, load_sweep

BACKENDS = ('local', 'slurm', 'tpu-vm', 'gke')


def make_backend(name: str, root, resources: dict, args, placeholders: bool = False, fit_check=None) -> object:
  """Builds a backend; raises LaunchError for an unknown name or missing resources (unless `placeholders`).
  `fit_check`: the TPU backends' compile-for-the-slice preflight (backend.SlicePreflight), handed in by the command."""
  b = _make_backend(name, root, resources, args, placeholders)
  if fit_check is not None:
    b.fit_check = fit_check
  return b


def _make_backend(name: str, root, resources: dict, args, placeholders: bool) -> object:
  kw = dict(max_retries=args.max_retries, placeholders=placeholders)
  if name == 'local':
    from scaling.launch.local import LocalBackend
    return LocalBackend(root, resources, max_parallel=args.max_parallel, local_processes=args.local_processes,
                        pack=not getattr(args, 'no_pack', False), **kw)
  if name == 'slurm':
    from scaling.launch.slurm import SlurmBackend
    return SlurmBackend(root, resources, **kw)
  if name == 'tpu-vm':
    from scaling.launch.tpu_vm import TpuVmBackend
    return TpuVmBackend(root, resources, max_parallel=args.max_parallel, **kw)
  if name == 'gke':
    from scaling.launch.gke import GkeBackend
    return GkeBackend(root, resources, **kw)
  raise LaunchError(f'unknown backend {name!r}; choose one of {", ".join(BACKENDS)}')


def _submit_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='scaling sweep', description='Run a sweep of training runs.',
                              epilog='Subcommands: `scaling sweep status --root DIR`, '
                                     '`scaling sweep collect --root DIR`.')
  p.add_argument('--config', required=True, help='sweep file: path.py[:arg] with get_config() and get_sweep()')
  p.add_argument('--backend', default='local', choices=BACKENDS)
  p.add_argument('--root', default=None, help='sweep root (default ./sweeps/<sweep name>)')
  p.add_argument('--dry-run', action='store_true', help='print what would run; write and submit nothing')
  p.add_argument('--max-parallel', type=int, default=1, help='local: concurrent runs; tpu-vm: number of TPU VMs')
  p.add_argument('--max-retries', type=int, default=2, help='retries of a failed run (exit != 0, 75)')
  p.add_argument('--local_processes', '--local-processes', type=int, default=1,
                 help='local: processes per run (passed to scaling train --local_processes)')
  p.add_argument('--wait', action='store_true', help='slurm/gke: block until every job has finished '
                 '(retrying failed runs up to --max-retries)')
  p.add_argument('--no-pack', action='store_true',
                 help='local: train every run alone. By default runs that differ only in lr, Adam scalars, weight '
                      'decay or init seed train together in one `scaling train-packed` process per group (at most '
                      'resources pack_max_members, default 8, and what half the host memory holds; --dry-run lists '
                      'the groups). slurm, tpu-vm and gke always train each run alone (packing there is not '
                      'implemented yet)')
  p.add_argument('--plan', default=None, metavar='FILE',
                 help='the winner of `scaling plan` (its JSON): its overrides (mesh, remat, microbatches, ...) go to '
                      'every run; explicit --config.* flags win. `scaling sweep` applies it (this launcher never '
                      'reads it); resource plan=auto plans each run on tpu-vm/gke instead')
  p.add_argument('--resource', action='append', default=[], metavar='KEY=VALUE',
                 help="set a key of the sweep's get_resources(), e.g. --resource tpu_type=v5litepod-16 (repeatable)")
  return p


def parse_resources(items: list[str]) -> dict:
  """--resource KEY=VALUE flags -> {key: value}; values read as bool, int, float or text."""
  from scaling.launch.sweep import RESOURCE_KEYS
  out = {}
  for item in items:
    key, sep, text = item.partition('=')
    if not sep or key not in RESOURCE_KEYS:
      raise LaunchError(f'--resource {item!r}: expected KEY=VALUE with KEY one of {", ".join(RESOURCE_KEYS)}')
    out[key] = _resource_value(text)
  return out


def _resource_value(text: str):
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def _root_parser(cmd: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=f'scaling sweep {cmd}')
  p.add_argument('--root', required=True, help='sweep root (the --root given when submitting)')
  if cmd == 'status':
    p.add_argument('--json', action='store_true', help='one JSON object per run instead of a table')
  return p


def cmd_submit(argv: list[str], fit_check=None) -> int:
  from scaling.config.load import parse_override_flags
  overrides, rest = parse_override_flags(argv)
  args = _submit_parser().parse_args(rest)
  if args.plan:   # `scaling sweep` takes --plan out and applies it; this entry point cannot (it reads no plan)
    print('error: --plan is applied by `scaling sweep --plan FILE`; here, pass its overrides as --config.* flags',
          file=sys.stderr)
    return 2
  sweep = load_sweep(args.config, overrides)          # validates every run's config
  sweep.resources.update(parse_resources(args.resource))
  root = pathlib.Path(args.root or pathlib.Path('sweeps') / sweep.name).absolute()
  adopted = sweep.adopt_existing(lambda h: (root / RUNS_DIR / h).is_dir())
  if adopted:
    print(f'[sweep] {len(adopted)} run(s) continue in directories named by an earlier version of the config '
          f'hash (before fields at their neutral value were left out of it): '
          + ', '.join(f'{new}->{old}' for new, old in adopted[:4]) + (', ...' if len(adopted) > 4 else ''), flush=True)
  backend = make_backend(args.backend, root, sweep.resources, args, placeholders=args.dry_run, fit_check=fit_check)
  if args.dry_run:
    print(f'# sweep {sweep.path}: {len(sweep.runs)} runs, backend {args.backend}, root {root}')
    if backend.placeholders:
      print(f'# placeholders: {", ".join(f"<{k}>" for k in backend.placeholders)}; fill them in get_resources() '
            f'of the sweep file or with ' + ' '.join(f'--resource {k}={backend.required_resources[k]}'
                                                 for k in backend.placeholders))
    print(backend.dry_run(sweep))
    return 0
  backend.check_tools()
  backend.preflight(sweep)
  print(f'[sweep] {sweep.path}: {len(sweep.runs)} runs, backend {args.backend}, root {root}', flush=True)
  root.mkdir(parents=True, exist_ok=True)
  return backend.submit(sweep, wait=args.wait)


def _parse_root(cmd: str, argv: list[str]) -> tuple[argparse.Namespace, pathlib.Path]:
  args = _root_parser(cmd).parse_args(argv)
  root = pathlib.Path(args.root)
  if not (root / RUNS_DIR).is_dir():
    raise LaunchError(f'{root} has no {RUNS_DIR}/ directory: is it the --root of a submitted sweep?')
  return args, root


def cmd_status(argv: list[str]) -> int:
  args, root = _parse_root('status', argv)
  rows = rd_lib.status_rows(root)
  for r in rows:   # jobs still in a SLURM queue: show the queue's view when squeue is here
    if r['state'] == 'submitted' and r['job']:
      from scaling.launch.slurm import squeue_state
      st = squeue_state(str(r['job']))
      if st:
        r['state'] = f'submitted ({st.lower()})'
  if args.json:
    for r in rows:
      print(json.dumps(r))
  else:
    table = [dict(r, overrides=r['label']) for r in rows]
    print(rd_lib.format_table(table, ['run', 'overrides', 'state', 'step', 'train_loss', 'eval_loss', 'attempts',
                                      'job']))
    counts = {}
    for r in rows:
      counts[r['state']] = counts.get(r['state'], 0) + 1
    print(f'{len(rows)} runs: ' + ', '.join(f'{v} {k}' for k, v in sorted(counts.items())))
  return 0


def cmd_collect(argv: list[str]) -> int:
  _, root = _parse_root('collect', argv)
  out = rd_lib.write_results(root)
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  done = sum(r['state'] == 'done' for r in rows)
  print(f'wrote {out}: {len(rows)} runs ({done} done)')
  saved = rd_lib.branch_compute(rows)
  if saved:
    print(f'cooldown branches: {saved["branches"]} from {saved["parents"]} parent(s) took '
          f'{saved["sweep_flops"]:.3g} FLOPs, against {saved["separate_flops"]:.3g} as separate runs '
          f'({saved["fraction"]:.0%}; parent compute counted once)' +
          (f'; {saved["unfinished"]} branch(es) of these parents not finished yet, so the parents\' share is '
           f'not spread over all their branches' if saved['unfinished'] else ''))
  return 0


def run_sweep_cli(argv: list[str], fit_check=None) -> int:
  """Entry point for `scaling sweep ARGV...`; returns the exit status. `fit_check`: see make_backend."""
  argv = list(argv)
  try:
    if argv and argv[0] == 'status':
      return cmd_status(argv[1:])
    if argv and argv[0] == 'collect':
      return cmd_collect(argv[1:])
    if argv and argv[0] == 'submit':
      argv = argv[1:]
    return cmd_submit(argv, fit_check)
  except QueueQueryError as e:   # the sweep started, but a queue did not answer: nothing was resubmitted
    print(f'scaling sweep: error: {e}', file=sys.stderr)
    return EXIT_FAILED
  except (LaunchError, ValueError) as e:   # ConfigError is a ValueError
    print(f'scaling sweep: error: {e}', file=sys.stderr)
    return EXIT_USAGE


def main() -> None:
  sys.exit(run_sweep_cli(sys.argv[1:]))


if __name__ == '__main__':
  main()
