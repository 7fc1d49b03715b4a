"""The seed study's sweep (configs/sweeps/seed_upgrades.py) after its second round: every committed run keeps its
hash (docs/results/seed_upgrades/results.jsonl names them), `pending` holds exactly the second round's runs."""

import json
import pathlib

import pytest

from scaling.config.load import load_module
from scaling.launch import sweep as sweep_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
SWEEP = REPO / 'configs' / 'sweeps' / 'seed_upgrades.py'
COMMITTED = REPO / 'docs' / 'results' / 'seed_upgrades' / 'results.jsonl'


@pytest.fixture(scope='module')
def committed():
  with open(COMMITTED, encoding='utf-8') as f:
    rows = [json.loads(x) for x in f if x.strip()]
  return {r['run']: r['name'].split(':', 1)[1] for r in rows}


@pytest.fixture(scope='module')
def sweeps():
  return {arg: sweep_lib.load_sweep(f'{SWEEP}' + (f':{arg}' if arg else '')) for arg in (None, 'pending')}


def test_committed_runs_keep_their_hashes(committed, sweeps):
  full = [r.hash for r in sweeps[None].runs]
  assert len(committed) == 63 == len(full)             # both rounds trained and collected
  assert set(full) == set(committed)                   # every committed run is a run of the design, by its hash


def test_pending_is_the_reruns_and_the_new_runs(committed, sweeps):
  pending = {r.hash: r for r in sweeps['pending'].runs}
  full = {r.hash for r in sweeps[None].runs}
  assert set(pending) <= full and len(pending) == 53
  # what the second round did not re-train: the first round's single-run arms and nopos seed 0
  kept = sorted(committed[h] for h in full - set(pending))
  assert kept == ['bf16', 'ctx1024', 'ctx64', 'layernorm', 'learned', 'nopos', 'rep16', 'rep4', 'size-2x',
                  'size-half']
  arms = sorted(r.overrides['name'].split(':', 1)[1] for r in pending.values())
  counts = {a: arms.count(a) for a in set(arms)}
  assert counts == {'base': 5, 'size-4x': 1, 'nopos': 2, 'learned-1024': 3, 'tok-bpe': 12, 'tok-char': 15,
                    'tok-byte': 15}


def test_wide_budget_and_plan(capsys):
  mod = load_module(str(SWEEP))
  d = mod.design(None)
  wide = mod.frontier_runs(d, d['wide_budgets'], ('char', 'byte'), d['wide_shift'])
  for r in wide:                                             # 6.3e13 FLOPs each, within the ladder's rounding
    flops = r['train.steps'] * r['train.batch_size'] * r['model.seq_len'] * mod._fpt(r)
    assert flops == pytest.approx(6.3e13, rel=0.01)
  mod.main(['pending'])
  out = capsys.readouterr().out
  assert ' rerun' in out and ' new' in out and 'to train with this argument' in out
  with pytest.raises(ValueError, match='unknown argument'):
    mod.get_sweep('nope')
