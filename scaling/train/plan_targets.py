"""The smallest listed target a config fits on, with its planned knobs: `scaling table --targets v5p-8,v5p-16,...`.

Per config (a ladder rung) the targets are tried smallest first (by chips, then in the order given); on each,
`scaling plan`'s search (scaling/train/plan.py, its candidates cached on disk, so a re-run compiles nothing)
looks for the fastest setting of the knobs that change memory and speed but not the math (mesh, remat,
microbatches, loss chunk, attention block). The first target with a fitting candidate is the rung's: its row
carries the winner's knobs (as overrides), bytes per chip against the HBM, the estimated step and MFU. A rung
that fits none of them says so, with the closest candidate seen on any target (its bytes over the limit).

`choose_target` takes the planning function as an argument, so the selection is tested on hand-made candidate
figures (tests/test_plan.py) without a compile.
"""

from __future__ import annotations

from scaling.base.hardware import GiB
from scaling.train import aot

FIELDS = ('rung', 'target', 'num_slices', 'chips', 'fits', 'overrides', 'knobs', 'bytes_per_chip',
          'hbm_bytes_per_chip', 'estimated_step_s', 'estimated_mfu', 'estimate', 'tried', 'note')


def ordered_targets(names, num_slices: int = 1) -> list[aot.Target]:
  """The targets parsed (a bad name fails here, before any compile), fewest chips first, ties in the given order."""
  if isinstance(names, str):
    names = [n for n in names.split(',') if n.strip()]
  if not names:
    raise aot.AotError('--targets: name at least one slice, e.g. v5p-8,v5p-16,v5p-32')
  targets = [aot.parse_target(n.strip(), num_slices) for n in names]
  return sorted(targets, key=lambda t: t.chips)   # sorted() is stable: equal sizes keep their order


def _ratio(p, row: dict) -> float:
  return row['fig']['bytes'] / p.limit(row['fig'])


def _summary(p, t: aot.Target) -> dict:
  """What one target's plan found: fits, its best (or closest) candidate's bytes, how many candidates."""
  best = p.winner or p.closest()
  out = dict(target=t.name, num_slices=t.num_slices, chips=t.chips, fits=p.winner is not None,
             candidates=len(p.rows), compiled=p.compiled, stopped=p.stopped)
  if best is not None:
    out.update(knobs=best['knobs'].label(), bytes_per_chip=best['fig']['bytes'],
               hbm_bytes_per_chip=p.limit(best['fig']))
  return out


def _row(name: str, p, t: aot.Target, r: dict, tried: list, note: str) -> dict:
  est = r['est']
  return dict(rung=name, target=t.name, num_slices=t.num_slices, chips=t.chips, fits=r['verdict'] == 'fits',
              overrides=r['knobs'].overrides(), knobs=r['knobs'].label(), bytes_per_chip=r['fig']['bytes'],
              hbm_bytes_per_chip=p.limit(r['fig']), estimated_step_s=est.get('step_s') or est.get('compute_s'),
              estimated_mfu=est.get('mfu'), estimate={k: v for k, v in est.items() if v is not None},
              tried=tried, note=note)


def choose_target(name: str, cfg, targets: list[aot.Target], plan_fn, log=lambda *a: None) -> dict:
  """The rung's row: the first of `targets` (already ordered) on which plan_fn(cfg, t) -> Planner finds a fitting
  candidate, with that winner; else fits=False, the closest candidate over all targets (least bytes per chip as a
  share of the HBM) and a note saying it fits none."""
  tried, closest = [], None
  for t in targets:
    log(f'[targets] {name} on {t.describe()}')
    p = plan_fn(cfg, t)
    tried.append(_summary(p, t))
    if p.winner is not None:
      note = p.stopped and f'plan {p.stopped}'
      return _row(name, p, t, p.winner, tried, note)
    c = p.closest()
    if c is not None and (closest is None or _ratio(p, c) < _ratio(*closest[:2])):
      closest = (p, c, t)
    log(f'[targets] {name}: nothing fits on {t.name}')
  names = ', '.join(t.name for t in targets)
  if closest is None:
    return dict(rung=name, target=None, fits=False, overrides=None, tried=tried,
                note=f'fits none of {names}: no candidate compiled (errors only)')
  p, c, t = closest
  row = _row(name, p, t, c, tried, '')
  row.update(fits=False, note=f'fits none of {names}; closest: {c["knobs"].label()} on {t.name} at '
                              f'{c["fig"]["bytes"] / GiB:.2f} of {p.limit(c["fig"]) / GiB:.1f} GiB per chip')
  return row


def target_rows(named_cfgs, targets, *, num_slices: int = 1, cache_dir: str | None = None, max_candidates: int = 24,
                refine: bool = True, hbm: int | None = None, log=lambda *a: None) -> list[dict]:
  """choose_target for each (name, cfg) with real (cached) plans."""
  from scaling.train import plan as plan_lib
  ts = ordered_targets(targets, num_slices)

  def plan_fn(cfg, t):
    return plan_lib.plan(cfg, t, cache_dir=cache_dir, hbm=hbm, max_candidates=max_candidates, refine=refine, log=log)
  return [choose_target(name, cfg, ts, plan_fn, log) for name, cfg in named_cfgs]


def _ms(s) -> str:
  if s is None:
    return '-'
  return f'{s * 1e3:.4g} ms' if s < 10 else f'{s:.4g} s'


SHORT = {'mesh.data': 'data', 'mesh.fsdp': 'fsdp', 'mesh.tensor': 'tensor', 'model.remat': 'remat',
         'train.microbatches': 'mb', 'train.loss_chunk': 'chunk', 'model.attention_block_size': 'block'}


def format_target_table(rows: list[dict]) -> str:
  """A markdown table: rung, target, the planned knobs, GiB per chip of the HBM, est. step, est. MFU, the targets
  tried (their verdict) and a note."""
  head = ['rung', 'target', 'fits', 'planned knobs', 'GiB/chip', 'of HBM', 'est. step', 'est. MFU', 'tried', 'note']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    knobs = ' '.join(f'{SHORT.get(k, k)}={v}' for k, v in (r.get('overrides') or {}).items())
    tried = ', '.join(f'{x["target"]}{"" if x["num_slices"] == 1 else "x" + str(x["num_slices"])}: '
                      f'{"fits" if x["fits"] else "no"}'
                      + (f' {x["bytes_per_chip"] / GiB:.1f}G' if x.get('bytes_per_chip') else '')
                      for x in r['tried'])
    has = r.get('bytes_per_chip') is not None
    mfu = r.get('estimated_mfu')
    cells = [r['rung'], r.get('target') or '-', 'yes' if r['fits'] else 'no', knobs or '-',
             f'{r["bytes_per_chip"] / GiB:.2f}' if has else '-',
             f'{r["hbm_bytes_per_chip"] / GiB:.1f}' if has else '-',
             _ms(r.get('estimated_step_s')) if r['fits'] else '-',
             f'{100 * mfu:.1f}%' if (mfu and r['fits']) else '-', tried, r.get('note') or '']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
