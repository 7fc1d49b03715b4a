"""REPORT.md sections of the seed study (scaling/analysis/seed/study.py): rules, a verdict table, one section and
one plot per claim, and the study's wall time. Called by scaling/analysis/report.py for rows named 'seed_upgrades:*'.
"""

from __future__ import annotations

import os
from typing import Sequence

from scaling.analysis.seed import claims as C
from scaling.analysis.seed import noise as N
from scaling.analysis.seed import study as S


def _cell(s) -> str:
  return str(s).replace('|', '\\|').replace('\n', ' ')


def _short(p: dict) -> str:
  return p.get('short') or p['label']


def verdict_cell(c: dict) -> str:
  """The claim's verdict; "smaller than claimed" when it is refuted by a real effect short of the size the
  guide names; for a partly measured claim, what its measured parts show and which parts are not measured
  (RULES[5]: the measured parts' verdict is not the claim's)."""
  out = f'**{c["verdict"]}**'
  parts = c['parts']
  short = [p for p in parts if p['verdict'] == C.REFUTED and p['effect'].threshold is not None and
           (p['effect'].lo > p['effect'].null if p['effect'].side == 'greater' else p['effect'].hi < p['effect'].null)]
  if c['verdict'] == C.REFUTED and short and len(short) == sum(p['verdict'] == C.REFUTED for p in parts):
    out += ' (a real effect, smaller than claimed)'
  if c['verdict'] == C.PARTLY_MEASURED:
    shown = C.measured_verdict([p['verdict'] for p in parts])
    n = sum(p['verdict'] in C.MEASURED for p in parts)
    missing = []
    for v in C.UNMEASURED:
      names = [_short(p) for p in parts if p['verdict'] == v]
      if names:
        missing.append(f'{v}: {"; ".join(names)}')
    out += f' ({n} of {len(parts)} parts measured, which by themselves show: {shown}. {". ".join(missing)})'
  return out


def deciding(c: dict) -> dict | None:
  """The part whose number the verdict table shows: the first with the claim's verdict (for a partly measured
  claim, the first with its measured parts' verdict), else the first part."""
  parts = c['parts']
  want = C.measured_verdict([p['verdict'] for p in parts]) if c['verdict'] == C.PARTLY_MEASURED else c['verdict']
  return next((p for p in parts if p['verdict'] == want), parts[0] if parts else None)


def _noise_lines(rows) -> list[str]:
  keys = (S.BPB, S.SPAN_BPB, S.len_key(512), S.len_key(1024), S.pos_key(256, 1024))
  return ['Noise model (scaling/analysis/seed/noise.py): per metric, pooled over every configuration with >= 2 '
          'seeds:', ''] + [f'- {N.describe(N.pooled(rows, k), k)}' for k in keys] + ['']


def _wall(rows: Sequence[dict], other: Sequence[dict]) -> str:
  own = [r.get('wall_s') for r in rows if isinstance(r.get('wall_s'), (int, float))]
  meas = sum(m.get('wall_s', 0) for m in other if m.get('kind') == 'meta')
  return (f'Total wall time: {sum(own) / 3600:.2f} h of training over {len(own)} run(s) (each run\'s wall_s '
          f'in summary.json: data preparation, compile, training, final evals; not the process start) + '
          f'{meas / 60:.1f} min of claims_measure = {(sum(own) + meas) / 3600:.2f} h.')


def sections(rows: Sequence[dict], other: Sequence[dict], fit_result: dict | None, out_dir: str) -> list[str]:
  """Markdown lines; writes claim_<key>.png into out_dir."""
  steptimes = [o for o in other if o.get('kind') == 'steptime']
  claims = S.evaluate(rows, steptimes, fit_result)
  plots = _plots(C.by_arm(rows), steptimes, claims, out_dir)
  lines = ['## Seed guide claims, each by the comparison that can decide it', '',
           'Design: configs/sweeps/seed_upgrades.py (a BPE-4096 LLaMA-style baseline on prose with several seeds, '
           'one switch flipped per arm at equal tokens; char / byte / BPE frontiers over 10-30x of compute); '
           'measurements: scaling/analysis/seed/measure.py.', '',
           'Verdict rules (scaling/analysis/seed/claims.py), stated before any number:', '']
  lines += [f'{i}. {r}' for i, r in enumerate(C.RULES, 1)]
  lines += ['', '| claim | the guide says | verdict | deciding number (90% interval) |', '|---|---|---|---|']
  for c in claims:
    d = deciding(c)
    first = d['effect'].text() if d else '—'
    lines.append(f'| {_cell(c["title"])} | {_cell(c["quote"])} | {verdict_cell(c)} | {_cell(first)} |')
  lines += ['', _wall(rows, other), ''] + _noise_lines(rows)
  if not any(k.startswith('claims/') for r in rows for k in r):
    lines += ['**No measurements yet** (ROOT/claims.jsonl): `python -m scaling.analysis.seed.measure --root ROOT` '
              'takes the long-document evals, samples and step times; until then those parts are not measured.', '']
  for c in claims:
    lines += [f'### {c["title"]}: {c["quote"]}', '', f'Verdict: {verdict_cell(c)}.', '']
    lines += ['| part | measured (90% interval) | verdict |', '|---|---|---|']
    lines += [f'| {_cell(p["label"])} | {_cell(p["effect"].text())} | {p["verdict"]} |' for p in c['parts']]
    if c['facts']:
      lines += [''] + [f'- {_cell(f)}' for f in c['facts']]
    if c['key'] in plots:
      lines += ['', f'![{c["key"]}]({plots[c["key"]]})']
    lines.append('')
  return lines


# ----------------------------------------------------------------------------- plots
def _plots(A, steptimes, claims, out_dir) -> dict:
  try:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
  except ImportError:
    return {}
  out = {}
  for key, fn in (('tokenizer', _plot_tokenizer), ('rmsnorm', _plot_norm), ('rope', _plot_rope),
                  ('context', _plot_context), ('size', _plot_size), ('dataset', _plot_dataset),
                  ('sampling', _plot_sampling), ('precision', _plot_precision)):
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
      drew = fn(ax, A, steptimes)
    except (KeyError, TypeError, ValueError):
      drew = False
    if drew:
      name = f'claim_{key}.png'
      fig.tight_layout()
      fig.savefig(os.path.join(out_dir, name), dpi=100)
      out[key] = name
    plt.close(fig)
  return out


def _plot_tokenizer(ax, A, _):
  """Each arm's runs and frontier on the same-bytes bpb when measured (else eval/bpb, unequal bytes, said so)."""
  from scaling.analysis.seed.frontier import Layout
  key = S.SPAN_BPB if any(C.positive([r.get(S.SPAN_BPB)]) for arm in S.TOK_ARMS for r in A.get(arm, [])) \
      else S.BPB
  drew = False
  for i, arm in enumerate(S.TOK_ARMS):
    rows = [r for r in A.get(arm, []) if C.positive([r.get('flops')]) and C.positive([r.get(key)])]
    if rows:
      ax.scatter([r['flops'] for r in rows], [r[key] for r in rows], s=12, alpha=0.5, color=f'C{i}')
      fr = Layout(rows, key).points()
      ax.plot([c for c, _ in fr], [v for _, v in fr], marker='o', color=f'C{i}', label=f'{arm[4:]} frontier')
      drew = True
  label = 'bpb, the same validation bytes' if key == S.SPAN_BPB else 'eval bpb (each arm\'s own slice: not deciding)'
  ax.set(xscale='log', yscale='log', xlabel='training FLOPs', ylabel=label)
  from matplotlib.ticker import FormatStrFormatter, NullFormatter
  for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
    set_formatter(FormatStrFormatter('%.2f'))   # bpb spans < 2x: plain numbers, not powers of ten
  ax.xaxis.set_minor_formatter(NullFormatter())   # FLOPs span < 2 decades: minor labels would overlap
  if drew:
    ax.legend()
  return drew


def _bars(ax, names, values, ylabel):
  ax.bar(range(len(names)), values)
  ax.set_xticks(range(len(names)), names)
  ax.set_ylabel(ylabel)
  return bool(names)


def _steptime_bars(ax, steptimes, pair):
  names, vals = [], []
  for s in steptimes:
    if s.get('pair') == pair:
      for n, t in s['times'].items():
        names.append(f'{n} ({s.get("backend")})')
        vals.append(1e3 * sorted(t)[len(t) // 2])
  return _bars(ax, names, vals, 'median ms per step (interleaved rounds)')


def _curves(ax, A, arms):
  drew = False
  for arm in arms:
    for r in A.get(arm, [])[:1]:
      c = r.get('claims/curve') or []
      if c:
        ax.plot([x[0] for x in c], [x[1] for x in c], label=arm, lw=1)
        drew = True
  ax.set(xlabel='step', ylabel='train loss (nats/token)')
  if drew:
    ax.legend()
  return drew


def _plot_norm(ax, A, steptimes):
  return _steptime_bars(ax, steptimes, 'norm') or _curves(ax, A, ('base', 'layernorm'))


def _plot_precision(ax, A, steptimes):
  return _curves(ax, A, ('base', 'bf16')) or _steptime_bars(ax, steptimes, 'precision')


def _plot_rope(ax, A, _):
  drew = False
  for arm in ('base', S.LEARNED_LONG, 'learned', 'nopos'):
    pts = [(L, S._mean(A.get(arm, []), S.len_key(L))) for L in S.LENGTHS]
    pts = [(L, v) for L, v in pts if v]
    if pts:
      ax.plot(*zip(*pts), marker='o', label={'base': 'RoPE', 'learned': 'learned (256 rows)',
                                             S.LEARNED_LONG: 'learned (1024 rows)'}.get(arm, arm))
      drew = True
  ax.set(xscale='log', xlabel='evaluation window (tokens; trained at 256)', ylabel='bpb, same tokens')
  if drew:
    ax.legend()
  return drew


def _plot_context(ax, A, _):
  drew = False
  labels = [f'{a}-{b}' for a, b in S.BUCKETS]
  for arm in ('ctx64', 'base', 'ctx1024'):
    v = [S._mean(A.get(arm, []), S.pos_key(a, b)) for a, b in S.BUCKETS]
    if any(v):
      ax.plot(labels, [x if x else float('nan') for x in v], marker='o', label=arm.replace('base', 'ctx256'))
      drew = True
  ax.set(xlabel='position in the document', ylabel='bpb')
  if drew:
    ax.legend()
  return drew


def _plot_size(ax, A, _):
  pts = sorted((r['non_embedding_params'], r[S.BPB]) for arm in ('size-half', 'base', 'size-2x', 'size-4x')
               for r in A.get(arm, []) if r.get(S.BPB) and r.get('non_embedding_params'))
  if pts:
    ax.plot(*zip(*pts), 'o-', label='equal tokens')
  for c, g in C.budget_groups(A.get('tok-bpe', [])):
    q = sorted((r['non_embedding_params'], r[S.BPB]) for r in g if r.get(S.BPB))
    if q:
      ax.plot(*zip(*q), '.--', label=f'BPE frontier, C={c:.2g}')
  ax.set(xscale='log', xlabel='non-embedding parameters', ylabel='bpb')
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  return bool(pts)


def _plot_dataset(ax, A, _):
  names = [a for a in ('base', 'rep4', 'rep16') if A.get(a)]
  return _bars(ax, [n.replace('base', 'once') for n in names], [S._mean(A[n], S.BPB) for n in names],
               'bpb at equal tokens')


def _plot_sampling(ax, A, _):
  """Each mode's distance to human text per metric (relative to greedy's), when the samples were measured."""
  from scaling.analysis.seed import decoding as D
  got = D.arrays(A.get('base', []))
  if isinstance(got, str):
    return False
  point, _ = D.distances(got[0], draws=1)
  width = 0.8 / len(D.MODES)
  for i, mode in enumerate(D.MODES):
    ax.bar([k + i * width for k in range(len(D.METRICS))],
           [point[(mode, m)] / max(point[('greedy', m)], 1e-12) for m in D.METRICS], width, label=mode)
  ax.set_xticks([k + 0.4 - width / 2 for k in range(len(D.METRICS))], D.METRICS)
  ax.set_ylabel('distance to human text / greedy\'s')
  ax.legend(fontsize=7)
  return True
