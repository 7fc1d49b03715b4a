"""The batch study's report of arms (b) and (c) (configs/sweeps/batch.py; `scaling cbs study`): REPORT.md,
batch_opt.json and three plots under the output folder.

    (b) batch_opt.study(results.jsonl rows) -> the per-(size, budget) optimum and B_opt(D) (batch_opt.py);
        loss_vs_batch.png (per size: best-over-lr loss against batch per budget with the fitted parabolas) and
        b_opt.png (B_opt in tokens against D, log-log: the cells with their intervals, the per-size and pooled fits,
        DeepSeek LLM 2024's law at each cell's C and a line of Power Lines' slope through the pooled fit's centre)
    (c) per size, the ramp run (name RAMP_NAME) against the fixed arm: (b)'s grid branch at the smallest batch, the
        middle lr arm and the largest budget (batch_ramp.compare); ramp.png (both runs' train loss against steps,
        smoothed, the target and the crossings)

jax-free (numpy; matplotlib for the plots).
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from scaling.analysis import batch_opt, batch_ramp

RAMP_NAME = 'batch-ramp'
FIXED_TOKENS = 8 * 256        # the project's studies' fixed batch: 8 sequences of 256 tokens


def _bnd(lo: float, hi: float, first: int, last: int, scale: float = 1.0) -> str:
  a = f'<{first * scale:.0f}' if lo <= 0 else f'{lo * scale:.3g}'
  b = f'>{last * scale:.0f}' if math.isinf(hi) else f'{hi * scale:.3g}'
  return f'[{a}, {b}]'


def _iv(s: dict, fmt: str = '.3f') -> str:
  lo, hi = s['interval']
  f = (lambda v: ('-inf' if v < 0 else '+inf') if math.isinf(v) else format(v, fmt))
  return f'{s["value"]:{fmt}} [{f(lo)}, {f(hi)}]'


# ----------------------------------------------------------------------------- (b) as text
def describe_opt(res: dict, implied: list[dict] | None = None) -> list[str]:
  nz = res['noise']
  out = ['## (b) The optimal batch against data', '',
         f'Per (size, budget): the best `{res["metric"]}` over the lr arms at each batch, B_opt at the vertex of a '
         f'parabola in log2 B ({"through the best batch and its neighbours" if res["fit"] == "three" else "least squares over every batch"}). '
         f'Intervals: {res["level"]:.0%} from {res["draws"]} parametric draws of seed noise, sigma = {nz["value"]:.4g} '
         f'({nz["source"]}); a draw whose minimum is at an edge of the batch grid counts as an open end. Across budgets '
         f'(laws, size test, predictions) each interval is the envelope of two noise structures: independent per '
         f'budget, and shared by the budgets of one (batch, lr) parent (the p-value is the larger of the two).', '',
         '| N | D | C | best batch (seqs) | B_opt (seqs) | interval | edge draws low/high | excess loss of each batch | lr at an edge |',
         '|---|---|---|---|---|---|---|---|---|']
  for c in res['cells']:
    bs = c['batches']
    best = bs[int(np.argmin(c['best_loss']))]
    bo = f'{c["b_opt"]:.3g}' if c['bracketed'] else f'**not bracketed** ({"<=" if c["side"] < 0 else ">="} ' \
                                                     f'{bs[0] if c["side"] < 0 else bs[-1]})'
    ex = ' '.join(f'{b}:{v:+.4f}' for b, v in c['excess_at'].items())
    lre = ', '.join(f'{b}: {f}' for b, f in zip(bs, c['lr_edge']) if f) or '-'
    out.append(f'| {c["N"]:.3g} | {c["D"]:.3g} | {c["C"]:.3g} | {best} | {bo} | '
               f'{_bnd(*c["interval"], bs[0], bs[-1])} | {c["open_draws"]["low"]:.0%}/{c["open_draws"]["high"]:.0%} | '
               f'{ex} | {lre} |')
  out += ['', '**B_opt(D) = k D^b** (B in tokens; least squares in log2 over the bracketed cells):', '']
  out += ['| fit | cells | D range | b | k | rmse (log2) | left out |', '|---|---|---|---|---|---|---|']
  for label, law in [(f'N {n:.3g}', law) for n, law in res['per_size'].items()] + [('pooled', res['pooled'])]:
    if law is None:
      out.append(f'| {label} | - | - | fewer than 2 bracketed budgets: no fit | - | - | - |')
      continue
    out.append(f'| {label} | {law["cells"]} | {law["D_range"][0]:.3g}-{law["D_range"][1]:.3g} | {_iv(law["b"])} | '
               f'{law["k"]:.3g} | {law["rmse_log2"]:.3f} | {"; ".join(law["left_out"]) or "-"} |')
  out += ['', f'Published: DeepSeek LLM 2024 B_opt = {batch_opt.DEEPSEEK[0]} C^{batch_opt.DEEPSEEK[1]} (tokens; '
          f'against compute, so at one size ~D^{batch_opt.DEEPSEEK[1]}); Bergsma et al. 2025 ("Power Lines") '
          f'B_opt ~ D^~{batch_opt.POWER_LINES_EXP}, nearly independent of N; Zhang et al. 2024: the critical batch '
          f'grows with D, not N.']
  if res['pooled']:
    lo, hi = res['pooled']['b']['interval']
    holds = {e: lo <= e <= hi for e in (batch_opt.DEEPSEEK[1], batch_opt.POWER_LINES_EXP)}
    out += ['', f'The pooled exponent\'s interval [{lo:.3f}, {hi:.3f}] '
            + '; '.join(f'{"holds" if v else "excludes"} {e}' for e, v in holds.items())
            + f' (DeepSeek\'s {batch_opt.DEEPSEEK[1]} is in C; at one size C ~ D).']
  out += _describe_size(res['size_test'])
  if implied:
    out += _describe_implied(implied)
  return out


def _describe_size(st: dict | None) -> list[str]:
  if st is None:
    return ['', 'Does B_opt depend on N at equal D: not tested (fewer than 2 sizes, 4 bracketed cells, or D and N '
            'collinear).']
  out = ['', '**Does B_opt depend on N at equal D?** Joint fit log2 B = c + b log2 D + g log2 N: '
         f'g = {_iv(st["g"])}, two-sided bootstrap p = {st["p_value"]:.3f} for g = 0; common b = {_iv(st["b_common"])}. '
         f'{"B_opt depends on N (the interval of g excludes 0)." if st["depends_on_N"] else "No dependence on N resolved (the interval of g holds 0)."}',
         '', '| sizes | at D | log2 B_opt(larger) - log2 B_opt(smaller) | resolved | extrapolated |', '|---|---|---|---|---|']
  for p in st['pairs']:
    out.append(f'| {p["N"][0]:.3g} vs {p["N"][1]:.3g} | {p["D"]:.3g} | {_iv(p["diff_log2"])} | '
               f'{"yes" if p["differs"] else "no"} | {"yes" if p["extrapolated"] else "no"} |')
  return out


def _describe_implied(implied: list[dict]) -> list[str]:
  out = ['', f'**The fixed batch of the project\'s studies** ({FIXED_TOKENS} tokens a step) at the IsoFLOP v2 budgets: '
         'the pooled law at each point\'s D, and DeepSeek\'s at its C:', '',
         '| C | width | D | B_opt (tokens, pooled law) | interval | fixed batch is | DeepSeek B_opt(C) | extrapolated |',
         '|---|---|---|---|---|---|---|---|']
  for r in implied:
    lo, hi = r.get('interval', (math.nan, math.nan))
    lo_s, hi_s = ('open' if lo <= 0 else f'{lo:.3g}'), ('open' if math.isinf(hi) else f'{hi:.3g}')
    out.append(f'| {r["budget"] or 0:.3g} | {r.get("width") or "-"} | {r["D"]:.3g} | {r.get("b_opt", math.nan):.3g} | '
               f'[{lo_s}, {hi_s}] | {r.get("verdict", "-")} | {r.get("deepseek", math.nan):.3g} | '
               f'{"yes" if r.get("extrapolated") else "no"} |')
  return out


# ----------------------------------------------------------------------------- (c) as text
def describe_ramp(width, cmp: dict) -> list[str]:
  f, r = cmp['fixed'], cmp['ramp']
  lo, hi = cmp['interval']

  def pct(v):
    return '-inf (not reached)' if math.isinf(v) else f'{v:.1%}'
  out = [f'### width {width}: {r["name"]} (ramp) against {f["name"]} (fixed)', '',
         f'Target: the fixed run\'s final smoothed train loss {cmp["target"]:.4f} ({cmp["metric"]}, window '
         f'+-{cmp["window"]:.0%} of its tokens).', '',
         '| run | steps to target | tokens | training wall (s) | total steps | final eval/loss |', '|---|---|---|---|---|---|']
  for n, v in (('fixed', f), ('ramp', r)):
    ev = '-' if v['eval_loss'] is None else f'{v["eval_loss"]:.4f}'
    out.append(f'| {n} | {v["steps"]:.0f} | {v["tokens"]:.3g} | {v["wall_s"]:.0f} | {v["total_steps"]:.0f} | {ev} |')
  rt = cmp['ratios']
  out += ['', f'Fewer gradient steps: **{pct(cmp["fewer_steps"])}**, {LEVEL_TXT} [{pct(lo)}, {pct(hi)}] '
          f'({cmp["draws"]} block-bootstrap draws, blocks of {cmp["block"]} rows; the ramp reached the target in '
          f'{cmp["reached_share"]:.0%} of them). Ramp / fixed: steps {rt["steps"]:.3f}, tokens {rt["tokens"]:.3f}, '
          f'wall {rt["wall_s"]:.3f}{"" if cmp["walls_comparable"] else " (one of the two trained packed: walls not comparable)"}.',
          f'Goal (>= {cmp["goal"]:.0%} fewer steps): **{cmp["verdict"]}**; final eval loss equal or better: '
          f'{ {None: "unknown", True: "yes", False: "no"}[cmp["eval_equal_or_better"]] }.', '']
  return out


LEVEL_TXT = f'{batch_ramp.LEVEL:.0%} interval'


# ----------------------------------------------------------------------------- plots
def plot_loss_vs_batch(res: dict, out) -> pathlib.Path:
  from scaling.analysis.run_plot import _pyplot, save_closed
  plt = _pyplot()
  sizes = sorted({c['N'] for c in res['cells']})
  fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.6), squeeze=False)
  for ax, n in zip(axes[0], sizes):
    for c in [c for c in res['cells'] if c['N'] == n]:
      x = np.log2(c['batches'])
      pts = ax.plot(2 ** x, c['best_loss'], 'o', label=f'D {c["D"]:.3g}')[0]
      if c['parabola_log2B']:
        xs = np.linspace(*c['parabola_x'], 50)
        ax.plot(2 ** xs, np.polyval(c['parabola_log2B'], xs), '-', color=pts.get_color())
      if c['bracketed']:
        ax.axvline(c['b_opt'], color=pts.get_color(), lw=0.6, ls=':')
    ax.set_xscale('log', base=2)
    ax.set_xlabel('batch (sequences)')
    ax.set_ylabel(f'best {res["metric"]} over lr')
    ax.set_title(f'N {n:.3g}')
    ax.legend(fontsize=7)
  return save_closed(plt, fig, out)


def plot_b_opt(res: dict, out) -> pathlib.Path:
  from scaling.analysis.run_plot import _pyplot, save_closed
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for n in sorted({c['N'] for c in res['cells']}):
    cs = [c for c in res['cells'] if c['N'] == n]
    col = None
    for c in cs:
      s, bs = c['seq_len'], c['batches']
      lo, hi = c['interval']
      lo, hi = (lo if lo > 0 else bs[0] / 2) * s, (hi if math.isfinite(hi) else bs[-1] * 2) * s
      y = c['b_opt'] * s if c['bracketed'] else (bs[0] if c['side'] < 0 else bs[-1]) * s
      mk = 'o' if c['bracketed'] else ('v' if c['side'] < 0 else '^')
      h = ax.errorbar([c['D']], [y], yerr=[[max(y - lo, 0)], [max(hi - y, 0)]], fmt=mk, capsize=3, color=col,
                      label=None if col else f'N {n:.3g}')
      col = h[0].get_color()
      if c['C']:
        ax.plot([c['D']], [batch_opt.DEEPSEEK[0] * c['C'] ** batch_opt.DEEPSEEK[1]], 'x', color=col, alpha=0.6)
    law = res['per_size'].get(n)
    if law:
      d = np.geomspace(*law['D_range'], 20)
      ax.plot(d, law['k'] * d ** law['b']['value'], '-', color=col, lw=0.8)
  pooled = res['pooled']
  if pooled:
    d = np.geomspace(pooled['D_range'][0] / 1.5, pooled['D_range'][1] * 1.5, 30)
    ax.plot(d, pooled['k'] * d ** pooled['b']['value'], 'k-', lw=1.5, label=f'pooled: b = {pooled["b"]["value"]:.2f}')
    d0 = math.sqrt(pooled['D_range'][0] * pooled['D_range'][1])
    y0 = pooled['k'] * d0 ** pooled['b']['value']
    ax.plot(d, y0 * (d / d0) ** batch_opt.POWER_LINES_EXP, 'k--', lw=0.8,
            label=f'slope {batch_opt.POWER_LINES_EXP} (Power Lines), through the pooled centre')
  ax.plot([], [], 'x', color='gray', label='DeepSeek 0.292 C^0.327 at each cell')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel('D (tokens)')
  ax.set_ylabel('B_opt (tokens a step)')
  ax.set_title('optimal batch against data (triangles: not bracketed)')
  ax.legend(fontsize=6)
  return save_closed(plt, fig, out)


def plot_ramps(pairs: list[tuple], out) -> pathlib.Path:
  """pairs: (width, fixed Curve, ramp Curve, compare result)."""
  from scaling.analysis.run_plot import _pyplot, save_closed
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 3.6), squeeze=False)
  for ax, (w, f, r, cmp) in zip(axes[0], pairs):
    for c, sm, lab in ((f, cmp['smoothed']['fixed'], 'fixed'), (r, cmp['smoothed']['ramp'], 'ramp')):
      line = ax.plot(c.steps, c.loss, lw=0.4, alpha=0.4)[0]
      ax.plot(c.steps, sm, lw=1.4, color=line.get_color(), label=f'{lab} (smoothed)')
      s = cmp[lab]['steps']
      if math.isfinite(s):
        ax.axvline(s, color=line.get_color(), ls=':', lw=0.8)
    ax.axhline(cmp['target'], color='k', lw=0.6, ls='--', label='target')
    lo = min(float(np.min(cmp['smoothed']['fixed'])), cmp['target'])
    ax.set_ylim(lo - 0.05, lo + 0.6)
    ax.set_xscale('log')
    ax.set_xlabel('gradient steps')
    ax.set_ylabel('train loss')
    ax.set_title(f'width {w}: {cmp["fewer_steps"]:.0%} fewer steps ({cmp["verdict"]})')
    ax.legend(fontsize=7)
  return save_closed(plt, fig, out)


# ----------------------------------------------------------------------------- finding the runs, the report
def ramp_pairs(rows: list[dict]) -> list[tuple]:
  """(width, fixed run hash, ramp run hash) per width with a finished ramp: the fixed arm is the grid's branch at
  the smallest batch, the middle lr and the largest D of that width."""
  out = []
  for r in rows:
    ov = r.get('overrides') or {}
    if (r.get('name') or ov.get('name')) != RAMP_NAME or r.get('state') != 'done':
      continue
    w = ov.get('model.d_model')
    grid = [g for g in rows if (g.get('name') or (g.get('overrides') or {}).get('name')) == batch_opt.GRID_NAME
            and (g.get('overrides') or {}).get('model.d_model') == w and g.get('state') == 'done' and g.get('tokens')]
    if not grid:
      continue
    b0 = min(g['overrides']['train.batch_size'] for g in grid)
    at = [g for g in grid if g['overrides']['train.batch_size'] == b0]
    dmax = max(g['tokens'] for g in at)
    at = [g for g in at if g['tokens'] >= 0.9 * dmax]
    lrs = sorted({g['overrides']['train.lr'] for g in at})
    fixed = next(g for g in at if g['overrides']['train.lr'] == lrs[len(lrs) // 2])
    out.append((w, fixed['run'], r['run']))
  return sorted(out, key=lambda t: (t[0] is None, t[0]))


def read_results(root) -> list[dict]:
  from scaling.base.layout import RESULTS
  p = pathlib.Path(root) / RESULTS
  if not p.is_file():
    raise batch_opt.BatchOptError(f'{p} does not exist: run `scaling sweep collect --root {root}` first')
  return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def report(root, out_dir=None, noise: float | None = None, fit: str = 'three', metric: str = batch_opt.DEFAULT_METRIC,
           targets: list[dict] | None = None, draws: int = batch_opt.DEFAULT_DRAWS,
           window: float = batch_ramp.DEFAULT_WINDOW) -> dict:
  """REPORT.md, batch_opt.json and the plots of arms (b) and (c) under out_dir (default the root)."""
  from scaling.base.files import atomic_write_json, atomic_write_text
  from scaling.base.layout import RUNS_DIR
  rows = read_results(root)
  out_dir = pathlib.Path(out_dir or root)
  out_dir.mkdir(parents=True, exist_ok=True)
  lines = ['# Batch size as a measured axis (issue #37): arms (b) and (c)', '',
           f'From `{root}` (results.jsonl and the runs\' metrics.jsonl); arm (a) is `scaling cbs report` (cbs.json).', '']
  doc: dict = {'root': str(root)}
  try:
    res = batch_opt.study(rows, metric, noise, fit, draws)
    implied = batch_opt.implications(res, targets or [], FIXED_TOKENS)
    lines += describe_opt(res, implied)
    doc['b'] = batch_opt.jsonable(res) | {'implications': implied,
                                          'png': [str(plot_loss_vs_batch(res, out_dir / 'loss_vs_batch.png')),
                                                  str(plot_b_opt(res, out_dir / 'b_opt.png'))]}
  except batch_opt.BatchOptError as e:
    lines += ['## (b) The optimal batch against data', '', f'Not estimated: {e}']
  lines += ['', '## (c) Batch ramp against the fixed batch', '']
  found = []
  for w, fixed, ramp in ramp_pairs(rows):
    f = batch_ramp.read_curve(pathlib.Path(root) / RUNS_DIR / fixed)
    r = batch_ramp.read_curve(pathlib.Path(root) / RUNS_DIR / ramp)
    f.packed, r.packed = (batch_ramp.pack_size(root, fixed), batch_ramp.pack_size(root, ramp))
    cmp = batch_ramp.compare(f, r, window)
    found.append((w, f, r, cmp))
    lines += describe_ramp(w, cmp)
  if found:
    doc['c'] = {str(w): {k: v for k, v in cmp.items() if k != 'smoothed'} for w, _, _, cmp in found}
    doc['c_png'] = str(plot_ramps(found, out_dir / 'ramp.png'))
  else:
    lines += [f'No finished ramp run (name {RAMP_NAME!r}) with a finished fixed arm yet.']
  atomic_write_json(out_dir / 'batch_opt.json', json.loads(json.dumps(doc, default=_num)), indent=1)
  atomic_write_text(out_dir / 'REPORT.md', '\n'.join(lines) + '\n')
  doc['report'] = str(out_dir / 'REPORT.md')
  return doc


def _num(o):
  if isinstance(o, (np.floating, np.integer)):
    return o.item()
  if isinstance(o, np.ndarray):
    return o.tolist()
  raise TypeError(type(o))
