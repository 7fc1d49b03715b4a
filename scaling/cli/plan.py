"""`scaling plan`: the fastest fitting mesh / remat / microbatches / loss chunk / attention block for a config on a
TPU slice or N GPUs, by compiling candidates on this machine (scaling/train/plan.py).

    scaling plan --config scaling/model/ladder.py:1b --topology v5p-8 [--num_slices 2] [--max_candidates 24]
                 [--hbm_gib 80] [--out plans/1b-v5p-8.json] [--json]

Prints every candidate (knobs, bytes per chip against the HBM, estimated step time with its compute / memory /
collective parts, MFU, verdict), then the winner as `--config.*` flags and writes it as JSON (`overrides`:
{field: value}), which `scaling sweep --plan FILE` applies to a sweep's runs. Exit status 0 when something
fits, 1 when nothing does (the closest candidate and its bytes are printed).
"""

from __future__ import annotations

import json
import os
import sys

HELP = 'search mesh / remat / microbatches / loss chunk / attention block for the fastest step that fits a target'


def add_args(p) -> None:
  p.add_argument('--topology', required=True, help='as `scaling compile`: v5p-8, v5litepod-16, v6e-8, v5p:2x2x4, '
                 'h100-8 (N GPUs)')
  p.add_argument('--num_slices', type=int, default=1, help='multi-slice: data parallelism over N slices (DCN)')
  p.add_argument('--max_candidates', type=int, default=24, help='at most this many candidates (compiles)')
  p.add_argument('--hbm_gib', type=float, default=0.0, help='fit against this many GiB per chip instead of the '
                 "chip's HBM (e.g. headroom for the data loader)")
  p.add_argument('--no_refine', action='store_true', help="skip the winner's loss_chunk / block size variants")
  p.add_argument('--out', default='', help='plan JSON (default plans/<config>-<topology>.json)')
  p.add_argument('--cache_dir', default=None, help='cache of candidates (default ~/.cache/scaling/plan; '
                 'the compile figures under ~/.cache/scaling/aot)')
  p.add_argument('--json', action='store_true', help='print the plan JSON instead of the table')


def _ms(x) -> str:
  return '-' if x is None else f'{x * 1e3:.4g}'


def format_table(p) -> str:
  """The candidates, fitting ones fastest first: knobs, bytes per chip of HBM, est. step and parts, MFU."""
  from scaling.base.hardware import GiB
  head = ['#', 'data', 'fsdp', 'tensor', 'remat', 'mb', 'chunk', 'block', 'GiB/chip', 'of HBM', 'step ms',
          'compute', 'memory', 'ici', 'dcn', 'MFU', 'verdict']
  lines = [head]
  for i, r in enumerate(p.table_rows(), 1):
    k, f, e = r['knobs'], r['fig'], r['est']
    if r['verdict'] == 'error':
      lines.append([str(i), str(k.data), str(k.fsdp), str(k.tensor), k.remat, str(k.microbatches),
                    str(k.loss_chunk), str(k.block_size)] + ['-'] * 8 + ['error: ' + f['error'][:60]])
      continue
    lines.append([str(i), str(k.data), str(k.fsdp), str(k.tensor), k.remat, str(k.microbatches), str(k.loss_chunk),
                  str(k.block_size), f'{f["bytes"] / GiB:.2f}', f'{p.limit(f) / GiB:.1f}', _ms(e.get('step_s')),
                  _ms(e.get('compute_s')), _ms(e.get('memory_s')), _ms(e.get('ici_s')), _ms(e.get('dcn_s')),
                  '-' if e.get('mfu') is None else f'{100 * e["mfu"]:.1f}%',
                  r['verdict'] + (' (compiler refused)' if f.get('refused') else '')])
  widths = [max(len(row[j]) for row in lines) for j in range(len(head))]
  out = ['  '.join(c.rjust(w) if j < 16 else c for j, (c, w) in enumerate(zip(row, widths))) for row in lines]
  return '\n'.join(out)


def plan_json(p, spec: str, t) -> dict:
  from scaling.train import plan as plan_lib

  def row(r):
    return dict(overrides=r['knobs'].overrides(), verdict=r['verdict'], bytes_per_chip=r['fig'].get('bytes'),
                hbm_limit=p.limit(r['fig']) if 'hbm' in r['fig'] else None, estimate=r['est'],
                figures={k: v for k, v in r['fig'].items() if k != 'collectives'})
  w = p.winner
  return dict(config=spec, topology=t.name, num_slices=t.num_slices, chips=t.chips, device_kind=t.chip.device_kind,
              batch_size=p.batch, seq_len=p.cfg.model.seq_len, fits=w is not None,
              overrides=w['knobs'].overrides() if w else None, winner=row(w) if w else None,
              closest=None if w or not p.closest() else row(p.closest()), stopped=p.stopped,
              candidates=[row(r) for r in p.table_rows()], versions=plan_lib.versions(),
              model='step time = max(compute at bf16 peak, HBM bytes / HBM bandwidth) + collective bytes / (ICI '
                    'one-way = half the bidirectional figure; DCN per-chip share)')


def default_out(spec: str, t) -> str:
  path, _, arg = (spec or 'default.py').partition(':')
  stem = os.path.splitext(os.path.basename(path))[0] + (f'-{arg}' if arg else '')
  return os.path.join('plans', f'{stem}-{t.name}' + (f'-x{t.num_slices}' if t.num_slices > 1 else '') + '.json')


def run(args, overrides) -> int:
  from scaling.base import files
  from scaling.base.hardware import GiB
  from scaling.config.load import load_config
  from scaling.train import aot, aot_cli
  from scaling.train import plan as plan_lib
  t = aot.parse_target(args.topology, args.num_slices)   # a bad name fails before any compile
  cfg = load_config(args.config, overrides)
  cache = args.cache_dir or plan_lib.default_cache_dir()
  aot_cli._prepare_compile(os.path.join(os.path.dirname(cache.rstrip('/')), 'aot') if args.cache_dir is None
                           else os.path.join(cache, 'aot'), t.chip.platform)
  log = lambda *a: print(*a, file=sys.stderr, flush=True)   # noqa: E731
  log(f'[plan] {args.config or "default"} on {t.describe()}, batch {cfg.train.batch_size} x {cfg.model.seq_len}; '
      f'at most {args.max_candidates} candidates')
  with aot_cli.libtpu_quieted(t):   # compile-only: libtpu's start-up lines silenced, the environment restored
    p = plan_lib.plan(cfg, t, cache_dir=cache, hbm=int(args.hbm_gib * GiB) or None,
                      max_candidates=args.max_candidates, refine=not args.no_refine, log=log)
  out = plan_json(p, args.config or '', t)
  path = args.out or default_out(args.config, t)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  files.atomic_write_json(path, out)
  if args.json:
    print(json.dumps(out, indent=1))
    return 0 if out['fits'] else 1
  print(format_table(p))
  if p.stopped:
    print(f'note: {p.stopped}; the winner is the best of those compiled')
  print(f'{p.compiled} compiled, {len(p.rows) - p.compiled} from the cache; '
        'est. step = max(compute, HBM traffic) + collectives (not overlapped)')
  if out['fits']:
    print('winner: ' + ' '.join(f'--config.{k}={v}' for k, v in out['overrides'].items()))
    print(f'plan written to {path} (scaling sweep --plan {path})')
    return 0
  c = p.closest()
  msg = f'nothing fits on {t.describe()}'
  if c:
    msg += (f'; closest: {c["knobs"].label()} at {c["fig"]["bytes"] / GiB:.2f} of {p.limit(c["fig"]) / GiB:.1f} '
            f'GiB per chip')
  print(msg)
  return 1
