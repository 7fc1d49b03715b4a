"""Data mixtures (scaling/data/mixture.py, mixture_spec.py): the config's checks, the sampler's proportions and
order (stages, resumes with new weights, processes) against orders computed here, the size checks, and the
per-source losses of the step.

The loader is read on synthetic prepared directories whose token at offset i of source k is k * 1000 + i, so a
row's first input names its source and window: the order is decoded from the batches themselves.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction

import numpy as np
import pytest

from scaling.config.load import ConfigError, config_hash, load_config
from scaling.data import shards
from scaling.data.mixture import MixtureLoader, check_supply, source_seed
from scaling.data.mixture_spec import MixtureError, batch_counts, make_plan, parse_weights
from scaling.data.tokenizer import DataError

T = 4
BASE = {'a': 0, 'b': 1000, 'c': 2000}
SOURCES = {'a': 'prose:linux', 'b': 'prose:kjv'}


def _prepared(root, name: str, num_tokens: int, digest: str = 'd0') -> str:
  d = os.path.join(root, name)
  os.makedirs(d, exist_ok=True)
  w = shards.ShardWriter(d, 'train', np.uint16)
  w.add(BASE[name] + np.arange(num_tokens), num_tokens)
  meta = w.close()
  index = dict(format_version=shards.FORMAT_VERSION, vocab_size=4000, eos_id=0, tokenizer_sha256='x',
               splits={'train': meta})
  with open(os.path.join(d, shards.INDEX_JSON), 'w') as f:
    json.dump(index, f)
  with open(os.path.join(d, shards.SPLIT_JSON), 'w') as f:
    json.dump({'split_digest': f'{name}-{digest}'}, f)
  return d


@pytest.fixture
def dirs(tmp_path):
  return {'a': _prepared(tmp_path, 'a', 4 * 60 + 1), 'b': _prepared(tmp_path, 'b', 4 * 90 + 1)}


def _loader(dirs, weights, stages='', *, batch=8, pidx=0, pcount=1, seed=3):
  plan = make_plan({n: n for n in dirs}, weights, stages)
  return MixtureLoader(dirs, plan, seq_len=T, batch_size=batch, seed=seed, process_index=pidx,
                       process_count=pcount)


def _decode(batch) -> list[tuple[str, int]]:
  """(source, window) of every row, from its first input token."""
  out = []
  for row, src in zip(batch['inputs'], batch['source']):
    name = 'abc'[int(np.argmax(src))]
    assert row[0] // 1000 == 'abc'.index(name)   # the one-hot names the source the tokens came from
    out.append((name, int(row[0] - BASE[name]) // T))
  return out


def _perm(seed: int, name: str, n: int) -> list[int]:
  """A source's window order: grain's seeded shuffle (the stack's), read here without the loader."""
  import grain
  ds = grain.MapDataset.range(n).shuffle(seed=source_seed(seed, name)).repeat()
  return [int(ds[k]) for k in range(2 * n)]


def _expected(counts_per_batch, seed, windows) -> list[list[tuple[str, int]]]:
  """The global batches a sampler with these per-batch counts must give: each source's next windows in its own
  order, rows grouped by source (a, then b)."""
  pos = {n: 0 for n in windows}
  perms = {n: _perm(seed, n, w) for n, w in windows.items()}
  out = []
  for counts in counts_per_batch:
    rows = []
    for n in sorted(counts):
      rows += [(n, perms[n][pos[n] + j]) for j in range(counts[n])]
      pos[n] += counts[n]
    out.append(rows)
  return out


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize('weights, words', [
    ('a=0.7,b=-0.3', ["'b'", 'below 0']),
    ('a=0.7,b=0.2', ['sums to 0.9', 'sum to 1']),
    ('a=0.7,web=0.3', ["unknown source 'web'", 'add it to data.mixture']),
    ('a=1', ['no weight for b']),
])
def test_bad_weights_fail_at_load_naming_the_source_and_the_fix(weights, words):
  with pytest.raises(ConfigError) as e:
    load_config(None, {'data.mixture': str(SOURCES), 'data.mixture_weights': weights})
  for w in words:
    assert w in str(e.value)


def test_mixture_fields_keep_the_hash_of_runs_without_one_and_enter_it_with_one():
  plain = load_config(None)
  spelled = load_config(None, {'data.mixture_weights': '', 'data.mixture_stages': '', 'data.mixture_max_epochs': 1.0})
  assert config_hash(plain) == config_hash(spelled)
  a = load_config(None, {'data.mixture': str(SOURCES), 'data.mixture_weights': 'a=0.5,b=0.5'})
  b = load_config(None, {'data.mixture.a': 'prose:linux', 'data.mixture.b': 'prose:kjv',
                         'data.mixture_weights': 'a=1/2,b=1/2'})
  assert config_hash(a) != config_hash(plain)
  assert a.data.mixture.to_dict() == b.data.mixture.to_dict()
  with pytest.raises(ConfigError, match='stage at step 500 never starts'):
    load_config(None, {'data.mixture': str(SOURCES), 'data.mixture_weights': 'a=0.5,b=0.5',
                       'data.mixture_stages': '500:a=1,b=0'})
  with pytest.raises(ConfigError, match='data.mixture is empty'):
    load_config(None, {'data.mixture_weights': 'a=1'})


def test_weights_are_exact_fractions_normalised_to_one():
  w = parse_weights('a=0.333333,b=0.333333,c=0.333334', ['a', 'b', 'c'])
  assert sum(w.values()) == 1
  assert parse_weights('a=1/3,b=2/3', ['a', 'b']) == {'a': Fraction(1, 3), 'b': Fraction(2, 3)}


# ----------------------------------------------------------------------------- proportions
@pytest.mark.parametrize('weights, rows', [({'a': Fraction(3, 10), 'b': Fraction(7, 10)}, 16),
                                           ({'a': Fraction(1, 3), 'b': Fraction(1, 6), 'c': Fraction(1, 2)}, 7)])
def test_counts_stay_within_one_row_of_the_weights_over_any_number_of_batches(weights, rows):
  credit, seen = {}, {n: 0 for n in weights}
  for b in range(1, 200):
    counts, credit = batch_counts(weights, rows, credit)
    assert sum(counts.values()) == rows
    for n in weights:
      seen[n] += counts[n]
      assert abs(seen[n] - weights[n] * rows * b) < 1   # the cumulative count: within one row


def test_every_batch_holds_exactly_weight_x_batch_rows_when_that_is_whole(dirs):
  loader = _loader(dirs, 'a=0.25,b=0.75', batch=8)
  for _ in range(10):
    names = [n for n, _ in _decode(next(loader))]
    assert names.count('a') == 2 and names.count('b') == 6


# ----------------------------------------------------------------------------- order
def test_a_stage_changes_the_counts_and_every_source_keeps_its_position(dirs):
  loader = _loader(dirs, 'a=0.25,b=0.75', '4:a=0.75,b=0.25', batch=8)
  got = [_decode(next(loader)) for _ in range(8)]
  counts = [{'a': 2, 'b': 6}] * 4 + [{'a': 6, 'b': 2}] * 4
  assert got == _expected(counts, 3, loader.num_windows)
  assert [h['why'] for h in loader.history] == ['start', 'stage']
  assert loader.history[1] == {'step': 4, 'weights': 'a=0.75,b=0.25', 'why': 'stage'}


def test_a_resume_with_new_weights_repeats_and_skips_nothing(dirs):
  first = _loader(dirs, 'a=0.5,b=0.5', batch=8)
  got = [_decode(next(first)) for _ in range(3)]
  state = json.loads(json.dumps(first.get_state()))   # as a checkpoint holds it
  second = _loader(dirs, 'a=0.125,b=0.875', batch=8)
  second.set_state(state)
  got += [_decode(next(second)) for _ in range(4)]
  counts = [{'a': 4, 'b': 4}] * 3 + [{'a': 1, 'b': 7}] * 4
  assert got == _expected(counts, 3, first.num_windows)
  assert second.history[-1] == {'step': 3, 'weights': 'a=0.125,b=0.875', 'why': 'changed'}
  # the same weights resume exactly where an uninterrupted run would be, credit included (non-whole counts)
  whole, cut = _loader(dirs, 'a=0.3,b=0.7', batch=8), _loader(dirs, 'a=0.3,b=0.7', batch=8)
  ref = [_decode(next(whole)) for _ in range(9)]
  part = [_decode(next(cut)) for _ in range(4)]
  again = _loader(dirs, 'a=0.3,b=0.7', batch=8)
  again.set_state(json.loads(json.dumps(cut.get_state())))
  assert part + [_decode(next(again)) for _ in range(5)] == ref


def test_processes_split_each_global_batch_between_them(dirs):
  one = _loader(dirs, 'a=0.25,b=0.75', batch=8)
  two = [_loader(dirs, 'a=0.25,b=0.75', batch=4, pidx=p, pcount=2) for p in range(2)]
  for _ in range(3):
    rows = _decode(next(one))
    assert _decode(next(two[0])) == rows[0::2] and _decode(next(two[1])) == rows[1::2]


def test_a_checkpoint_of_another_split_is_refused_naming_the_source(dirs, tmp_path):
  state = _loader(dirs, 'a=0.5,b=0.5').get_state()
  other = dict(dirs, b=_prepared(tmp_path / 'other', 'b', 4 * 90 + 1, digest='d1'))
  with pytest.raises(DataError, match="source 'b'"):
    _loader(other, 'a=0.5,b=0.5').set_state(state)


def test_a_new_source_starts_at_zero_and_the_others_keep_their_place(dirs, tmp_path):
  first = _loader(dirs, 'a=0.5,b=0.5', batch=8)
  for _ in range(2):
    next(first)
  more = dict(dirs, c=_prepared(tmp_path, 'c', 4 * 30 + 1))
  branch = _loader(more, 'a=0.25,b=0.25,c=0.5', batch=8)
  branch.set_state(json.loads(json.dumps(first.get_state())))
  assert branch.positions == {'a': 8, 'b': 8, 'c': 0}
  rows = _decode(next(branch))
  assert [n for n, _ in rows].count('c') == 4 and rows[0] == ('a', _perm(3, 'a', 60)[8])


# ----------------------------------------------------------------------------- enough data
def test_a_source_too_small_for_its_weight_is_an_error_naming_it_and_the_fix(dirs):
  loader = _loader(dirs, 'a=0.75,b=0.25', batch=8)   # a: 60 windows, 6 rows per step
  check_supply(loader.plan, loader.num_windows, rows=8, start=0, end=10, max_epochs=1.0)   # 60 windows: enough
  with pytest.raises(MixtureError) as e:
    check_supply(loader.plan, loader.num_windows, rows=8, start=0, end=11, max_epochs=1.0)
  msg = str(e.value)
  assert "source 'a'" in msg and 'Lower its weight' in msg and 'data.mixture_max_epochs' in msg
  check_supply(loader.plan, loader.num_windows, rows=8, start=0, end=20, max_epochs=2.0)
  for _ in range(5):   # a resume counts the windows already taken
    next(loader)
  with pytest.raises(MixtureError, match="source 'a'"):
    check_supply(loader.plan, loader.num_windows, rows=8, start=5, end=10, max_epochs=1.0,
                 positions={'a': 31, 'b': 10})


# ----------------------------------------------------------------------------- per-source losses
def test_per_source_losses_sum_token_weighted_to_the_batch_loss():
  import jax
  import jax.numpy as jnp

  from scaling.train.loss import cross_entropy, fused_cross_entropy
  rng = np.random.default_rng(0)
  B, Tn, D, V, S = 6, 8, 16, 32, 3
  x = jnp.asarray(rng.normal(size=(B, Tn, D)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(D, V)) * 0.3, jnp.float32)
  t = jnp.asarray(rng.integers(0, V, (B, Tn)), jnp.int32)
  src = jax.nn.one_hot(jnp.asarray([0, 2, 2, 1, 0, 2]), S)
  logits = np.asarray(x @ w, np.float64)
  lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  nll = lse - np.take_along_axis(logits, np.asarray(t)[..., None], -1)[..., 0]   # the textbook NLL, in numpy
  want = [nll[np.asarray(src)[:, s] > 0].sum() for s in range(S)]
  for loss, (sum_nll, count, nll_s, count_s) in (cross_entropy(x @ w, t, source_BS=src),
                                                 fused_cross_entropy(x, w, t, chunk_rows=12, source_BS=src)):
    np.testing.assert_allclose(nll_s, want, rtol=1e-5)
    np.testing.assert_allclose(count_s, [2 * Tn, Tn, 3 * Tn])
    np.testing.assert_allclose(float(jnp.sum(nll_s) / jnp.sum(count_s)), float(loss), rtol=1e-6)
  plain, _ = fused_cross_entropy(x, w, t, chunk_rows=12)   # without sources: the same loss
  np.testing.assert_allclose(float(plain), float(loss), rtol=1e-6)
