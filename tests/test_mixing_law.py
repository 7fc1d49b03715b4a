"""The data-mixing law's fit (scaling/analysis/mixing.py) on synthetic losses drawn from a known law."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.analysis import mixing


def _law(R, c, k, t):
  return c + k * np.exp(np.asarray(R)[:, :len(t)] @ np.asarray(t))


R2 = np.array([[r, 1 - r] for r in (0.1, 0.3, 0.5, 0.7, 0.9)])
TRUE2 = {'a': (0.9, 1.6, [-1.8]), 'b': (1.1, 0.4, [1.5])}   # a falls as r_a grows, b rises


def test_two_domains_recover_the_law_and_predict_the_held_out_mixture():
  for c, k, t in TRUE2.values():
    y = _law(R2, c, k, t)
    law = mixing.fit_law(R2, y)
    assert law.c == pytest.approx(c, abs=1e-3) and law.k == pytest.approx(k, rel=1e-3)
    np.testing.assert_allclose(law.t, t, atol=1e-3)
    out = mixing.predict_held_out(R2, y, 2, noise=0.002)
    assert abs(out['error']) < 1e-3 and out['low'] <= out['actual'] <= out['high']
    assert abs(out['error']) < abs(out['baseline_error'])   # the curve beats straight lines on a convex law


def test_three_domains_with_noise_predict_within_tolerance():
  rng = np.random.default_rng(0)
  R = rng.dirichlet([2, 2, 2], 12)
  c, k, t = 1.0, 0.8, [-1.2, 0.7]
  y = _law(R, c, k, t) + rng.normal(0, 0.003, len(R))
  law = mixing.fit_law(R[1:], y[1:])
  np.testing.assert_allclose(law.t, t, atol=0.25)
  out = mixing.predict_held_out(R, y, 0, noise=0.003)
  assert abs(out['predicted'] - _law(R[:1], c, k, t)[0]) < 0.02
  assert out['low'] < out['predicted'] < out['high']


def test_the_study_reads_collected_rows_and_writes_its_section(tmp_path):
  rows = []
  for r in R2[:, 0]:
    w = f'a={r:.1f},b={1 - r:.1f}'
    row = {'state': 'done', 'overrides': {'data.mixture_weights': w}}
    for d, (c, k, t) in TRUE2.items():
      row[f'eval/{d}/bpb'] = float(_law([[r, 1 - r]], c, k, t)[0])
    rows.append(row)
  rows.append({'state': 'failed', 'overrides': {'data.mixture_weights': 'a=1,b=0'}})
  path = tmp_path / 'results.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  names, R, Y, kept = mixing.mixture_rows(path, ['a', 'b'])
  assert names == ['a', 'b'] and len(kept) == 5
  np.testing.assert_allclose(R, R2)
  result = mixing.study(R, Y, 2, noise=0.002)
  text = mixing.write_section(tmp_path / 'out', names, R, Y, result)
  assert '| a |' in text and (tmp_path / 'out' / 'mixing.png').stat().st_size > 1000
  assert all(abs(d['error']) < 1e-3 for d in result['domains'].values())
