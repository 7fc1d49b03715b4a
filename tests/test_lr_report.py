"""Tests of scaling/analysis/lr_report.py (the LR-transfer report) against losses built from known parabolas.

References: a loss that is exactly quadratic in log2(lr) with its vertex at a chosen lr (the
parabola through any three of its points has that vertex); hand-computed ratios of the optima.
"""

import json
import math

import pytest

from scaling.analysis import lr_report
from scaling.analysis import report as report_lib

LRS = [1.25e-3 * 2 ** i for i in range(6)]


def _loss(lr, opt, floor):
  return floor + 0.1 * (math.log2(lr) - math.log2(opt)) ** 2


def _rows(optima: dict, floors: dict) -> list[dict]:
  rows = []
  for (par, width), opt in optima.items():
    for lr in LRS:
      rows.append({'state': 'done', 'eval/loss': _loss(lr, opt, floors[(par, width)]), 'run': f'{par}{width}{lr}',
                   'overrides': {'model.parametrization': par, 'model.d_model': width, 'train.lr': lr}})
  return rows


def test_optimum_is_the_vertex_of_the_parabola_in_log_lr():
  curve = {lr: _loss(lr, 7e-3, 5.0) for lr in LRS}
  o = lr_report.optimum(curve)
  assert o['method'] == 'parabola' and o['bracketed']
  assert o['lr'] == pytest.approx(7e-3, rel=1e-9) and o['loss'] == pytest.approx(5.0, abs=1e-12)
  # the best measured point: 5e-3 (log2 distance 0.485 from 7e-3, vs 0.515 for 1e-2)
  assert o['best_lr'] == pytest.approx(5e-3)
  # hand-worked: points (0, 3), (1, 1), (2, 2) in x = log2(lr): y = 1.5 x^2 - 3.5 x + 3, vertex x = 7/6,
  # minimum 3 - 3.5^2 / 6 = 0.958333...
  o = lr_report.optimum({1.0: 3.0, 2.0: 1.0, 4.0: 2.0, 8.0: 9.0})
  assert o['lr'] == pytest.approx(2 ** (7 / 6)) and o['loss'] == pytest.approx(3 - 3.5 ** 2 / 6)
  # the best point at the grid's edge: flagged, the vertex is an extrapolation beyond the grid
  edge = lr_report.optimum({lr: _loss(lr, 1e-3, 5.0) for lr in LRS})
  assert not edge['bracketed'] and edge['best_lr'] == LRS[0] and edge['lr'] == pytest.approx(1e-3)
  # a cliff past the optimum: the three lowest losses (2.5e-3, 5e-3, 1e-2) all lie left of it; the best
  # point's neighbours bracket it: (-1, 5.549), (0, 5.463), (1, 5.838) around x = log2(1e-2) = 0 give
  # a = (5.549 + 5.838 - 2 x 5.463) / 2 = 0.2305, b = (5.838 - 5.549) / 2 = 0.1445, vertex x = -0.31345
  cliff = {1.25e-3: 6.008, 2.5e-3: 5.667, 5e-3: 5.549, 1e-2: 5.463, 2e-2: 5.838, 4e-2: 5.976}
  o = lr_report.optimum(cliff)
  assert o['bracketed'] and o['lr'] == pytest.approx(1e-2 * 2 ** (-0.1445 / (2 * 0.2305)), rel=1e-9)
  assert o['loss'] == pytest.approx(5.463 - 0.1445 ** 2 / (4 * 0.2305), rel=1e-12)
  # two points: the best one
  assert lr_report.optimum({1.0: 2.0, 2.0: 1.0}) == dict(lr=2.0, loss=1.0, best_lr=2.0, best_loss=1.0, n=2,
                                                         bracketed=False, method='best point')


def test_summary_ratio_and_goal(tmp_path):
  widths = (32, 64, 128, 256)
  optima = {('sp', w): 1e-2 / (w / 32) for w in widths}                 # SP: 1e-2 .. 1.25e-3, 8x
  optima.update({('mup', w): 8e-3 * (1.5 if w == 64 else 1.0) for w in widths})   # μP: 8e-3, 1.2e-2: 1.5x
  floors = {(p, w): 5.0 - 0.1 * i - (0.05 if p == 'mup' else 0.0) for p in ('sp', 'mup')
            for i, w in enumerate(widths)}
  rows = _rows(optima, floors)
  rows.append({'state': 'failed', 'overrides': {'model.parametrization': 'sp', 'model.d_model': 32,
                                                'train.lr': 9.0}})   # unfinished rows are left out
  assert lr_report.is_lr_transfer(rows)
  assert not lr_report.is_lr_transfer([r for r in rows if r['overrides']['model.parametrization'] == 'sp'])
  s = lr_report.summarize(lr_report.points(rows))
  assert s['sp']['ratio'] == pytest.approx(8.0) and s['mup']['ratio'] == pytest.approx(1.5)
  assert s['sp']['widths'][32]['n'] == 6
  g = lr_report.goal(s)
  assert g['ratio_ok'] and g['loss_ok'] and g['width'] == 256

  # `scaling report` hands the sweep to lr_report: REPORT.md names both ratios, the PNG is written
  (tmp_path / 'results.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  path = report_lib.write_report(str(tmp_path), fit=False)
  text = open(path).read()
  assert '**SP 8.00x**' in text and '**μP 1.50x**' in text and 'Goal' in text
  assert (tmp_path / 'lr_transfer.png').stat().st_size > 1000
  saved = json.loads((tmp_path / 'lr_transfer.json').read_text())
  assert saved['summary']['mup']['ratio'] == pytest.approx(1.5)


def test_goal_not_met_when_mup_optimum_is_at_the_edge():
  optima = {('sp', 32): 4e-3, ('sp', 256): 4e-3, ('mup', 32): 4e-3, ('mup', 256): 1e-3}   # below the grid
  floors = {k: 5.0 for k in optima}
  g = lr_report.goal(lr_report.summarize(lr_report.points(_rows(optima, floors))))
  assert g['measured'] and not g['ratio_ok']
