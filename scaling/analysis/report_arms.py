"""The report's learning-rate section: every point's arms, which arm won, and the LR law fitted over them
(fit.json `lr_arms`, scaling/analysis/fit/arms.py)."""

from __future__ import annotations

from typing import Any

DEEPSEEK_GAMMA = -0.125   # DeepSeek LLM 2024: eta_opt = 0.3118 C^-0.125 along their compute-optimal path


def _ci(rec: dict, key: str) -> str:
  ci = (rec.get(f'ci_{key}') or {}).get('ci')
  return f'{ci[0]:.3g} – {ci[1]:.3g}' if ci and None not in ci else 'no interval'


def _law_lines(law: dict) -> list[str]:
  if 'skipped' in law:
    return [f'- LR law not fitted: {law["skipped"]}.']
  out = [f'- **LR law** log10 lr_opt = {law["c"]:.3g} + α log10 N + β log10 D over {law["points"]} points '
         f'({law["interior"]} with the best arm interior; {law["clamped"]} clamped to an end arm): '
         f'α = {law["alpha"]:.3g} ({_ci(law, "alpha")}), β = {law["beta"]:.3g} ({_ci(law, "beta")}), '
         f'rmse {law["rmse_log10"]:.3g} decades.']
  if 'gamma' in law:
    out.append(f'- Along the fitted compute-optimal path lr_opt ∝ C^γ with γ = α a + β b = {law["gamma"]:.3g} '
               f'({_ci(law, "gamma")}); DeepSeek LLM 2024 report γ = {DEEPSEEK_GAMMA} (their eta_opt = 0.3118 '
               f'C^-0.125, batch also tuned).')
  if 'clamped_share' in law:
    out.append(f'- Interval: seed-noise draws at sd {law["noise_sd"]:.3g} ({law["draws"]} draws, every point\'s '
               f'optimum re-derived per draw; {100 * law["clamped_share"]:.1f}% of point-draws fell on an end arm and '
               'count at that arm).')
  return out


def arms_section(result: dict | None) -> list[str]:
  rec: Any = (result or {}).get('lr_arms')
  if not rec:
    return []
  lines = ['### Learning-rate arms: the rate tuned at every point', '',
           f'{rec["rows_in"]} runs are {rec["points_out"]} points, each trained at {"/".join(map(str, rec["arms_per_point"]))} '
           f'learning rates; a point\'s loss is its {"best arm" if rec["estimator"] == "best" else "parabola minimum in log lr"} '
           '(the seed-noise intervals redraw every arm and pick again). ' + rec['note'] + '.', '',
           '| N | D | arms (lr: loss) | best | lr_opt (log-lr parabola) |', '|---|---|---|---|---|']
  for p in rec['points']:
    arms = ', '.join(f'{a:.3g}: {l:.4f}' for a, l in zip(p['arms'], p['arm_L']))
    best = f'{p["best_lr"]:.3g}' + (f' ({p["edge"]} end)' if p['edge'] else '')
    opt = f'{p["lr_opt"]:.3g}' if p['lr_opt'] else '—'
    lines.append(f'| {p["N"]:.3g} | {p["D"]:.3g} | {arms} | {best} | {opt} |')
  lines.append('')
  lines += _law_lines(rec.get('law') or {'skipped': 'not computed'})
  other = rec.get('other_estimator')
  if other and 'a' in other:
    lines.append(f'- With each point at its {other["estimator"]} estimate instead, a = {other["a"]:.4g}, b = '
                 f'{other["b"]:.4g} (inside the headline\'s systematic interval).')
  return lines
