"""The coordinate check's summaries and COORDCHECK.md (the rows of scaling/analysis/coordcheck.py; numpy only).

A kind's curve at one recorded step is the mean over its layers (attention/<i>, mlp/<i>, a stacked parameter's
layers) of a statistic, as a function of the swept axis (width or depth). Its exponent at that step is the
least-squares slope of log(statistic) against log(axis); the tables give, per parametrization, the median
exponent over the recorded steps after the first update with the range [min, max] over those steps (the
spread), the exponent at init where it applies, and the worst ratio max/min across the sweep over those steps.
"""

from __future__ import annotations

import math

import numpy as np

KINDS = ('embedding', 'attention', 'mlp', 'residual', 'logits')
PARAMETRIZATIONS = ('sp', 'mup', 'completep')
AXIS = {'width': 'width', 'depth': 'depth'}   # sweep -> the row field it varies
STAT_TEXT = {'rms': 'RMS of the activation', 'rel': 'its one-step update / its RMS',
             'delta': 'RMS of its one-step update', 'drift': 'RMS of its change since init',
             'dw': '||dW||_F / ||W||_F (one step)', 'dw_spec': '||dW||_2 / ||W||_2 (one step)'}

# What the theory fixes, as exponents of the statistic against the swept axis after the first update (μP: TP5;
# CompleteP at alpha = 1: Dey et al. 2025; dw: Adam moves every entry of a hidden matrix by ~lr x its multiplier,
# against an init of std sigma: lr / sigma under SP, (lr / m) / (sigma m^-1/2) under μP. The spectral ratio (Yang,
# Simon and Bernstein 2023's Theta(1) under μP) holds for low-rank updates only, so no exponent is listed). Keys
# (sweep, parametrizations, kind, stat); a kind or stat not listed has no fixed exponent here.
THEORY = {
    ('width', ('mup', 'completep'), kind, stat): '0' for kind in KINDS for stat in ('rms', 'rel')}
THEORY.update({
    ('width', ('mup', 'completep'), 'hidden', 'dw'): '-1/2',
    ('width', ('sp',), 'hidden', 'dw'): '0',
    ('depth', ('completep',), 'attention', 'rms'): '-1', ('depth', ('completep',), 'mlp', 'rms'): '-1',
    **{('depth', ('completep',), kind, 'rel'): '0' for kind in KINDS},
    **{('depth', ('completep',), kind, 'rms'): '0' for kind in ('embedding', 'residual', 'logits')},
})
HIDDEN = ('wq_DHK', 'wk_DGK', 'wv_DGK', 'wo_HKD', 'w_gate_DF', 'w_up_DF', 'w_down_FD')


def theory(sweep: str, par: str, kind: str, stat: str) -> str:
  kind = 'hidden' if kind in HIDDEN else kind
  for (s, pars, k, st), v in THEORY.items():
    if (s, k, st) == (sweep, kind, stat) and par in pars:
      return v
  return ''


def _pars(rows):
  return [p for p in PARAMETRIZATIONS if any(r['parametrization'] == p for r in rows)]


def _kind(r) -> str:
  return r['param'] if r['kind'] == 'weight' else r['kind']


def _ok(v) -> bool:
  return v is not None and not (isinstance(v, float) and math.isnan(v))


def kind_curves(rows: list[dict], stat: str = 'rms', sweep: str = 'width') -> dict:
  """(parametrization, kind) -> {step: {axis value: mean over that kind's layers of `stat`}}; a parameter's kind
  is its name (e.g. wq_DHK)."""
  acc: dict = {}
  axis = AXIS[sweep]
  for r in rows:
    if r.get('sweep', 'width') != sweep or not _ok(r.get(stat)):
      continue
    acc.setdefault((r['parametrization'], _kind(r)), {}).setdefault(r['step'], {}).setdefault(
        r[axis], []).append(r[stat])
  return {key: {t: {x: float(np.mean(v)) for x, v in sorted(by_x.items())} for t, by_x in sorted(steps.items())}
          for key, steps in acc.items()}


def fit_slope(xs, ys) -> float:
  """Least-squares slope of log(y) against log(x): the exponent a of y ~ c x^a (nan unless every y > 0)."""
  xs, ys = np.asarray(xs, float), np.asarray(ys, float)
  if len(xs) < 2 or np.any(ys <= 0) or not np.all(np.isfinite(ys)):
    return float('nan')
  return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def exponents(rows: list[dict], stat: str, sweep: str) -> dict:
  """(parametrization, kind) -> {'init': exponent at step 0 (nan if none), 'median', 'lo', 'hi': over the steps
  >= 1, 'ratio': the worst max/min across the axis over those steps, 'n': how many steps}."""
  out = {}
  for key, by_t in kind_curves(rows, stat, sweep).items():
    slopes, ratios, init = [], [], float('nan')
    for t, by_x in by_t.items():
      xs, ys = list(by_x), list(by_x.values())
      if t == 0:
        init = fit_slope(xs, ys)
        continue
      slopes.append(fit_slope(xs, ys))
      ratios.append(max(ys) / min(ys) if min(ys) > 0 else float('inf'))
    s = [v for v in slopes if not math.isnan(v)]
    out[key] = dict(init=init, median=float(np.median(s)) if s else float('nan'), lo=min(s, default=float('nan')),
                    hi=max(s, default=float('nan')), ratio=max(ratios, default=float('nan')), n=len(s))
  return out


def width_ratios(rows: list[dict], stat: str = 'rms', steps=None, sweep: str = 'width') -> dict:
  """(parametrization, name) -> the largest max/min ratio of `stat` across the sweep's axis over `steps`
  (default every step with a value), per activation (each layer on its own)."""
  by: dict = {}
  for r in rows:
    if r.get('sweep', 'width') != sweep or not _ok(r.get(stat)) or (steps is not None and r['step'] not in steps):
      continue
    by.setdefault((r['parametrization'], r['name'], r['step']), []).append(r[stat])
  out: dict = {}
  for (par, name, _), vals in by.items():
    ratio = max(vals) / min(vals) if min(vals) > 0 else float('inf')
    out[(par, name)] = max(out.get((par, name), 0.0), ratio)
  return out


def growth(rows: list[dict], name: str, step: int, parametrization: str, stat: str = 'rms',
           sweep: str = 'width') -> float:
  """`stat` of one activation at `step`: largest / smallest axis value (> 1: grows along the sweep)."""
  axis = AXIS[sweep]
  vals = {r[axis]: r[stat] for r in rows if r['name'] == name and r['step'] == step and
          r['parametrization'] == parametrization and r.get('sweep', 'width') == sweep}
  return vals[max(vals)] / vals[min(vals)]


# ----------------------------------------------------------------------------- COORDCHECK.md
def _cell(e: dict, init: bool) -> str:
  if not e or math.isnan(e['median']):
    return ''
  head = f'{e["init"]:+.2f} → ' if init and not math.isnan(e['init']) else ''
  return f'{head}**{e["median"]:+.2f}** [{e["lo"]:+.2f}, {e["hi"]:+.2f}] · {e["ratio"]:.2g}x'


def exponent_table(rows: list[dict], sweep: str, kinds, stats) -> list[str]:
  pars = _pars(rows)
  exps = {stat: exponents(rows, stat, sweep) for stat in stats}
  out = ['| kind | stat | ' + ' | '.join(pars) + ' | theory |', '|---|---|' + '---|' * (len(pars) + 1)]
  for kind in kinds:
    for stat in stats:
      cells = [_cell(exps[stat].get((p, kind), {}), stat == 'rms') for p in pars]
      if any(cells):
        th = '; '.join(f'{p}: {v}' for p in pars if (v := theory(sweep, p, kind, stat)))
        out.append(f'| {kind} | {stat} | ' + ' | '.join(cells) + f' | {th} |')
  return out


def values_table(rows: list[dict], sweep: str, par: str, stat: str, steps) -> list[str]:
  curves = kind_curves([r for r in rows if r['parametrization'] == par], stat, sweep)
  xs = sorted({r[AXIS[sweep]] for r in rows if r.get('sweep', 'width') == sweep})
  out = ['| kind | step | ' + ' | '.join(f'{sweep[0]}={x}' for x in xs) + ' |', '|---|---|' + '---|' * len(xs)]
  for kind in KINDS:
    for t in steps:
      vals = curves.get((par, kind), {}).get(t)
      if vals:
        out.append(f'| {kind} | {t} | ' + ' | '.join(f'{vals[x]:.3g}' if x in vals else '' for x in xs) + ' |')
  return out


def _header(rows: list[dict], meta: dict) -> list[str]:
  last = max(r['step'] for r in rows)
  recorded = sorted({r['step'] for r in rows})
  out = ['# Coordinate check', '']
  if meta:
    out += ['```', meta.get('command', ''), '```', '',
            (f'Wall time {meta["wall_s"] / 60:.1f} min' if meta.get('wall_s') else 'Not finished (the rows of '
             'the runs that finished)') + f'. Config `{meta.get("config")}`, data {meta.get("corpus")}, '
            f'context {meta.get("seq_len")}, batch {meta.get("batch_size")}, {meta.get("optimizer")} at a constant lr '
            f'{meta.get("lr")} (no warmup, no clipping: the per-width/depth rules are what is measured), '
            f'{meta.get("steps")} steps recorded at {len(recorded)} steps (0, 1, every {meta.get("record_every")}).', '']
  for sweep in ('width', 'depth'):
    sub = [r for r in rows if r.get('sweep', 'width') == sweep]
    if sub:
      xs, fixed = sorted({r[AXIS[sweep]] for r in sub}), sorted({r['depth' if sweep == 'width' else 'width']
                                                                  for r in sub})
      out.append(f'- {sweep} sweep: {sweep} {", ".join(map(str, xs))} ({xs[-1] / xs[0]:g}x) at '
                 f'{"depth" if sweep == "width" else "width"} {", ".join(map(str, fixed))}')
  return out + ['', f'Cells: exponent of the statistic against the swept axis, **median over steps 1..{last}** '
                '[min, max over those steps] · the worst max/min across the sweep over those steps; for `rms` '
                'the exponent at init comes first (init → trained). A kind is the mean over its layers. `rms`: '
                + STAT_TEXT['rms'] + '; `rel`: ' + STAT_TEXT['rel'] + '; `drift`: ' + STAT_TEXT['drift'] +
                '; `dw`: ' + STAT_TEXT['dw'] + '; `dw_spec`: ' + STAT_TEXT['dw_spec'] + '. `theory`: the '
                'exponent the theory fixes (TP5 across width; CompleteP, alpha = 1, across depth: each branch '
                'carries 1/depth, its update relative to it stays put, the residual stream keeps its size).', '']


def table_md(rows: list[dict], meta: dict | None = None) -> str:
  """COORDCHECK.md: the exponent tables per sweep (activations, then parameters), then the values per kind and
  axis value at init, after the first step and at the last step."""
  out = _header(rows, meta or {})
  last = max(r['step'] for r in rows)
  params = sorted({r['param'] for r in rows if r['kind'] == 'weight'}, key=lambda p: (p not in HIDDEN, p))
  for sweep in ('width', 'depth'):
    sub = [r for r in rows if r.get('sweep', 'width') == sweep]
    if not sub:
      continue
    out += [f'## Across {sweep}: activations', ''] + exponent_table(sub, sweep, KINDS, ('rms', 'rel', 'drift'))
    if params:
      out += ['', f'## Across {sweep}: relative weight updates', ''] + \
          exponent_table(sub, sweep, params, ('dw', 'dw_spec'))
    for par in _pars(sub):
      for stat, steps in (('rms', (0, 1, last)), ('rel', (1, last))):
        out += ['', f'### {par}, across {sweep}: {stat} ({STAT_TEXT[stat]})', ''] + \
            values_table(sub, sweep, par, stat, steps)
    out.append('')
  return '\n'.join(out)
