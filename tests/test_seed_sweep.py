"""The seed study's sweep (configs/sweeps/seed_upgrades.py) after its second round: every committed run keeps its
hash (docs/results/seed_upgrades/results.jsonl names them), `pending` holds exactly the runs still to train."""

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
  assert len(committed) == 41
  assert set(full[:41]) == set(committed)             # the first round, first, its hashes unchanged


def test_pending_is_the_reruns_and_the_new_runs(committed, sweeps):
  pending = {r.hash: r for r in sweeps['pending'].runs}
  full = {r.hash for r in sweeps[None].runs}
  assert set(pending) <= full
  rerun = {h for h, arm in committed.items() if arm in ('base', 'size-4x') or arm.startswith('tok-')}
  assert len(rerun) == 31                                   # 27 frontier runs, 3 base seeds, the judge
  assert set(pending) & set(committed) == rerun
  new = [r for h, r in pending.items() if h not in committed]
  assert set(full) - set(committed) == {r.hash for r in new}
  arms = sorted(r.overrides['name'].split(':', 1)[1] for r in new)
  wide = [r for r in new if r.overrides['name'].endswith(('tok-char', 'tok-byte')) and 'train.seed' not in r.overrides]
  assert len(wide) == 6 and {r.overrides['name'][-4:] for r in wide} == {'char', 'byte'}
  assert arms.count('base') == 2 and arms.count('nopos') == 2 and arms.count('tok-bpe') == 3


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
