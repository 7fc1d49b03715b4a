"""The sampling claim: which decoding sits closer to human text, judged by one reference for every metric.

For each metric m (rep-4, distinct-2, distinct-3 within a continuation; bits per byte under the judge, the
strongest model the study trains) and decoding mode, the statistic over the base seeds' continuations of the
prompts (the mean per continuation; for bpb, summed bits over summed bytes) sits at a distance

    D(mode, m) = | stat(mode, m) - stat(human, m) |

from the same statistic of the human continuations of the same prompts (scaling/analysis/seed/samples.py).
Mode A is closer to human text than mode B on m when D(A, m) - D(B, m) < 0 with a 90% interval that excludes
0. The interval is a hierarchical bootstrap: seeds drawn with replacement, then each drawn seed's prompts
drawn with replacement, the same draw for every mode and for the human text (paired); so it carries both the
model-to-model (seed) and the text-to-text (prompt, sampling) variation. Fewer than two seeds: no interval.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaling.analysis.seed import claims as C

MODES = ('greedy', 'topk40', 'topp0.9', 'pure')
HUMAN = 'human'
SAMPLES = 'claims/samples'
METRICS = ('rep4', 'distinct2', 'distinct3', 'judge_bpb')
COLUMNS = {'rep4': ('rep4',), 'distinct2': ('distinct2',), 'distinct3': ('distinct3',),
           'judge_bpb': ('bits', 'bytes')}


def arrays(rows: Sequence[dict]) -> tuple[dict, list[dict]] | str:
  """({name: {column: float array [seeds, prompts]}}, the rows used) from rows with claims/samples, or why not."""
  rows = [r for r in rows if isinstance(r.get(SAMPLES), dict) and isinstance(r[SAMPLES].get('stats'), dict)]
  if not rows:
    return f'no base run has {SAMPLES} (the samples beside the human continuations)'
  judges = {r[SAMPLES].get('judge') for r in rows}
  if len(judges) > 1:
    return f'the seeds were judged by different models ({sorted(map(str, judges))}): re-measure them'
  out: dict = {}
  for name in MODES + (HUMAN,):
    out[name] = {}
    for col in sorted({c for cols in COLUMNS.values() for c in cols}):
      try:
        a = np.array([[np.nan if v is None else float(v) for v in r[SAMPLES]['stats'][name][col]] for r in rows])
      except (KeyError, TypeError, ValueError):
        return f'{SAMPLES} lacks {name}/{col} in a run'
      if a.ndim != 2 or not np.isfinite(a).all():
        return f'{SAMPLES}: {name}/{col} is ragged or has missing values'
      out[name][col] = a
  return out, rows


def statistic(X: dict, metric: str, si: np.ndarray, pi: np.ndarray) -> np.ndarray:
  """The statistic per draw: si [D, S] seed indices, pi [D, S, P] prompt indices into [seeds, prompts]."""
  take = lambda col: X[col][si[:, :, None], pi]
  if metric == 'judge_bpb':
    return take('bits').sum(axis=(1, 2)) / take('bytes').sum(axis=(1, 2))
  return take(metric).mean(axis=(1, 2))


def distances(X: dict, draws: int = 2000, seed: int = 0) -> tuple[dict, dict]:
  """({(mode, metric): D at the data}, {(mode, metric): D per bootstrap draw [draws]}) and the same for the
  statistics themselves under keys (name, metric) with name a mode or 'human'."""
  S, P = X[HUMAN]['rep4'].shape
  rng = np.random.default_rng(seed)
  point_si, point_pi = np.arange(S)[None], np.broadcast_to(np.arange(P), (1, S, P))
  boot_si = rng.integers(0, S, (draws, S))
  boot_pi = rng.integers(0, P, (draws, S, P))
  point, boot = {}, {}
  for metric in METRICS:
    for name in MODES + (HUMAN,):
      point[(name, metric, 'stat')] = float(statistic(X[name], metric, point_si, point_pi)[0])
      boot[(name, metric, 'stat')] = statistic(X[name], metric, boot_si, boot_pi)
    for mode in MODES:
      point[(mode, metric)] = abs(point[(mode, metric, 'stat')] - point[(HUMAN, metric, 'stat')])
      boot[(mode, metric)] = np.abs(boot[(mode, metric, 'stat')] - boot[(HUMAN, metric, 'stat')])
  return point, boot


def closer(point: dict, boot: dict, a: str, b: str, metric: str, n_seeds: int) -> C.Effect:
  """D(a) - D(b) on one metric, percentile interval; < 0 means a is closer to human text than b."""
  kw = dict(null=0.0, side='less')
  value = point[(a, metric)] - point[(b, metric)]
  if n_seeds < 2:
    return C.Effect(value, missing='one seed: no interval over models', **kw)
  lo, hi = np.quantile(boot[(a, metric)] - boot[(b, metric)], [(1 - C.LEVEL) / 2, (1 + C.LEVEL) / 2])
  return C.Effect(value, float(lo), float(hi), **kw)


def stat_effect(point: dict, boot: dict, name: str, metric: str) -> C.Effect:
  lo, hi = np.quantile(boot[(name, metric, 'stat')], [(1 - C.LEVEL) / 2, (1 + C.LEVEL) / 2])
  return C.Effect(point[(name, metric, 'stat')], float(lo), float(hi))
