"""Tables and the figure of docs/results/cooldown from a root of configs/sweeps/cooldown.py.

  python docs/results/cooldown/analyze.py ROOT [OUT_DIR]

Reads ROOT/results.jsonl (`scaling sweep collect`) and each run's metrics.jsonl; writes
OUT_DIR/table.md (branch vs from-scratch WSD vs cosine per budget, relative differences, compute)
and OUT_DIR/cooldown.png. Rows whose run has not finished are listed as missing.
"""

import json
import pathlib
import sys


def load(root: pathlib.Path) -> list[dict]:
  return [json.loads(x) for x in (root / 'results.jsonl').read_text().splitlines() if x.strip()]


def steps_of(row: dict) -> int:
  return int(row['overrides'].get('train.steps'))


def arms(rows: list[dict]) -> dict[str, dict[int, dict]]:
  out: dict[str, dict[int, dict]] = {}
  for r in rows:
    out.setdefault(r.get('name') or '?', {})[steps_of(r)] = r
  return out


def table(rows: list[dict]) -> str:
  a = arms(rows)
  budgets = sorted(a.get('branch', {}))
  lines = ['| budget (steps) | tokens | branch eval loss | from-scratch WSD | cosine | branch vs WSD | '
           'branch vs cosine | branch own FLOPs | separate-run FLOPs |',
           '|---|---|---|---|---|---|---|---|---|']

  def loss(arm, b):
    r = a.get(arm, {}).get(b)
    return r.get('eval/loss') if r and r.get('state') == 'done' else None

  def rel(x, y):
    return f'{(x - y) / y:+.2%}' if x is not None and y is not None else 'missing'

  def g(v):
    return f'{v:.4f}' if isinstance(v, (int, float)) else 'missing'
  for b in budgets:
    br = a['branch'][b]
    lb, lw, lc = loss('branch', b), loss('wsd', b), loss('cosine', b)
    lines.append(f'| {b} | {br.get("tokens"):,} | {g(lb)} | {g(lw)} | {g(lc)} | {rel(lb, lw)} | {rel(lb, lc)} | '
                 f'{br.get("own_flops"):.3g} | {br.get("flops"):.3g} |')
  par = a.get('parent', {})
  parent = next(iter(par.values())) if par else None
  done = [a['branch'][b] for b in budgets if a['branch'][b].get('state') == 'done']
  if parent is not None and done:
    used = parent['own_flops'] + sum(r['own_flops'] for r in done)
    separate = sum(r['flops'] for r in done)
    lines += ['', f'Parent: {steps_of(parent)} stable steps, {parent["own_flops"]:.3g} FLOPs, eval loss '
              f'{parent.get("eval/loss"):.4f} (constant lr, never decayed; not a fit point).',
              f'Compute of the branch arm (parent once + {len(done)} decays): {used:.4g} FLOPs; {len(done)} separate '
              f'runs of the same lengths (the WSD arm, and the cosine arm): {separate:.4g} FLOPs each arm; '
              f'ratio {used / separate:.1%} ({1 - used / separate:.1%} saved).']
  return '\n'.join(lines) + '\n'


def curve(root: pathlib.Path, run: str, key: str = 'train/loss') -> tuple[list[int], list[float]]:
  p = root / 'runs' / run / 'metrics.jsonl'
  pts = []
  for line in p.read_text().splitlines() if p.exists() else []:
    try:
      r = json.loads(line)
    except json.JSONDecodeError:
      continue
    if key in r:
      pts.append((r['step'], r[key]))
  return [s for s, _ in pts], [v for _, v in pts]


def figure(root: pathlib.Path, rows: list[dict], out: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  a = arms(rows)
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
  style = {'branch': ('o-', 'C0', 'WSD branch of one stable run'), 'wsd': ('s--', 'C1', 'from-scratch WSD'),
           'cosine': ('^-', 'C2', 'from-scratch cosine')}
  for arm, (m, c, label) in style.items():
    pts = sorted((b, r['eval/loss']) for b, r in a.get(arm, {}).items() if r.get('state') == 'done')
    if pts:
      ax1.plot([p[0] for p in pts], [p[1] for p in pts], m, color=c, label=label, alpha=0.8)
  ax1.set_xscale('log', base=2)
  ax1.set_xlabel('training steps (16 x 64 tokens each)')
  ax1.set_ylabel('final eval loss (nats/token)')
  ax1.set_title('final eval loss per budget')
  ax1.legend()
  for arm, c in (('parent', 'k'), ('branch', 'C0'), ('cosine', 'C2')):
    for b, r in sorted(a.get(arm, {}).items()):
      xs, ys = curve(root, r['run'])
      if arm == 'cosine' and b != max(a['cosine']):
        continue
      label = {'parent': 'stable parent (constant lr)', 'branch': 'decay branches' if b == min(a['branch']) else None,
               'cosine': f'cosine {b} steps'}[arm]
      ax2.plot(xs, ys, color=c, lw=1, label=label)
  ax2.set_xlabel('step')
  ax2.set_ylabel('train loss (logged every 20 steps)')
  ax2.set_ylim(top=2.4)
  ax2.set_title('training curves')
  ax2.legend()
  fig.tight_layout()
  fig.savefig(out, dpi=110)


def main(argv):
  root = pathlib.Path(argv[1])
  out = pathlib.Path(argv[2]) if len(argv) > 2 else pathlib.Path(__file__).resolve().parent
  rows = load(root)
  (out / 'table.md').write_text(table(rows))
  figure(root, rows, out / 'cooldown.png')
  print((out / 'table.md').read_text())


if __name__ == '__main__':
  main(sys.argv)
