"""Per-budget IsoFLOP profile checks (scaling/analysis/fit/profiles.py) on profiles simulated from a known law:
a clean design is not flagged; a top budget whose largest sizes are deeper models with a loss bonus (a shape effect
that bends the profile) is; a minimum that one run creates is. References: the generating law and its exponent,
the simulated noise level, the packaged default config and designs written here."""

import math

import numpy as np
import pytest
from known_law import ALPHA, BETA, law, law_n_opt

from scaling.analysis.fit import approaches, load, profiles
from scaling.config import default

A_EXP = BETA / (ALPHA + BETA)                            # the law's N_opt ~ C^a: 0.4516
BUDGETS = (1e18, 1e19, 1e20, 1e21)
OFFSETS = np.linspace(-0.6, 0.6, 7)
NOISE = 0.003
DEFAULTS = {'num_layers': 4, 'd_model': 256, 'num_heads': 4, 'head_dim': 0}


def simulate(seed=0, bonus=0.0, deeper=False, seeds=1, top_offsets=OFFSETS, glitch=0.0):
  """Rows {run, N, D, C, L, budget, raw{overrides}}: 7 sizes per budget around the law's optimum, head dim 64 and
  8 layers throughout, loss + N(0, NOISE). The top budget's two largest sizes can get a loss bonus (bonus, 2 x
  bonus) and deeper models (16, 24 layers); its largest run a glitch (+glitch)."""
  rng = np.random.default_rng(seed)
  rows = []
  for c in BUDGETS:
    n0 = law_n_opt(c)
    top = c == BUDGETS[-1]
    for j, off in enumerate(top_offsets if top else OFFSETS):
      n = n0 * 10 ** off
      loss, layers = law(n, c / (6 * n)), 8
      if top and j >= 5:
        loss -= bonus * (j - 4)
        layers = 8 + 8 * (j - 4) if deeper else 8
      if top and j == 6:
        loss += glitch
      for s in range(seeds):
        ov = {'model.num_layers': layers, 'model.d_model': 64 * (j + 1), 'model.num_heads': j + 1, 'train.seed': s}
        rows.append({'run': f'r{len(rows)}', 'N': n, 'D': c / (6 * n), 'C': c,
                     'L': float(loss + rng.normal(0, NOISE)), 'budget': None, 'raw': {'overrides': ov}})
  return rows


def test_a_clean_design_is_not_flagged():
  got = profiles.check_profiles(simulate(), bootstrap=0, defaults=DEFAULTS)
  assert got['flagged'] == [] and len(got['budgets']) == 4
  for b in got['budgets']:
    assert b['checked'] and b['misfit'] is False and b['misfit_ratio'] < got['k'] == 3
    assert b['leave_one_out']['tested'] and b['leave_one_out']['destroyed_by'] == []
    assert b['leave_one_out']['max_shift_log10'] < 0.05           # 7 sizes 0.2 decades apart: no run moves it far
    assert b['shape'] == {'known': True, 'constant': True, 'num_layers': [8], 'head_dim': [64],
                          'per_size': b['shape']['per_size']}
    assert b['floor_source'] == 'pooled parabola residuals'
  assert got['noise_floor']['value'] is None    # no seed replicates: each budget against the others' median
  assert got['without_flagged'] == {'left_out': [], 'same_as_headline': True}


def test_a_top_budget_bent_by_a_shape_effect_is_flagged_and_left_out():
  """The two largest sizes of the top budget are deeper models with a loss bonus (0.03, 0.06): the profile
  misfits its parabola, the shape changes, and approach 2 without that budget comes closer to the law's a."""
  rows = simulate(bonus=0.03, deeper=True)
  got = profiles.check_profiles(rows, bootstrap=0, defaults=DEFAULTS)
  assert got['flagged'] == [pytest.approx(1e21)]
  top = got['budgets'][-1]
  assert {'misfit', 'shape'} <= set(top['reasons'])
  assert top['misfit_ratio'] > 3 and top['shape']['num_layers'] == [8, 16, 24] and top['shape']['head_dim'] == [64]
  assert not any(b['flagged'] for b in got['budgets'][:3])
  a_all = approaches.fit_isoflop(rows, bootstrap=0)['a']
  without = got['without_flagged']
  assert without['left_out'] == [pytest.approx(1e21)] and without['budgets_used'] == 3
  assert without['a'] == pytest.approx(approaches.fit_isoflop([r for r in rows if r['C'] < 1e21], bootstrap=0)['a'])
  assert abs(without['a'] - A_EXP) < abs(a_all - A_EXP)       # the bent budget pulled a up; without it, closer
  assert a_all > A_EXP + 0.02
  warnings = profiles.profile_warnings(got)
  assert warnings[0].startswith('isoflop: budget C=1e+21 flagged') and 'without the 1 flagged' in warnings[1]


def test_a_bend_without_a_shape_change_is_a_misfit_only():
  top = profiles.profile_diagnostics(simulate(bonus=0.03), defaults=DEFAULTS)['budgets'][-1]
  assert 'misfit' in top['reasons'] and 'shape' not in top['reasons'] and top['shape']['constant'] is True


def test_a_minimum_created_by_one_run_is_flagged():
  """The top budget sampled only below its optimum (loss falls across all 7 sizes) and its largest run 0.05 worse:
  the profile now has an interior minimum, which disappears when that run is left out."""
  rows = simulate(top_offsets=OFFSETS - 0.8, glitch=0.05)
  got = profiles.profile_diagnostics(rows, defaults=DEFAULTS)
  top = got['budgets'][-1]
  glitch_run = rows[-1]['run']
  assert top['flagged'] and 'one_run' in top['reasons'] and glitch_run in top['reasons']['one_run']
  assert glitch_run in [g['run'] for g in top['leave_one_out']['destroyed_by']]
  assert not any(b['flagged'] for b in got['budgets'][:3])
  # without the glitch the loss falls to the end: no bracketed minimum, nothing to take away
  clean = profiles.profile_diagnostics(simulate(top_offsets=OFFSETS - 0.8), defaults=DEFAULTS)['budgets'][-1]
  assert clean['leave_one_out']['tested'] is False and 'one_run' not in clean['reasons']


def test_seed_replicates_give_the_noise_floor():
  """3 seeds per size: the floor is the pooled within-size SD, the simulated NOISE (56 dof: within ~25%)."""
  rows = simulate(seeds=3)
  floor = profiles.seed_noise_floor(rows)
  assert floor['source'] == 'seed replicates' and floor['dof'] == 4 * 7 * 2
  assert floor['value'] == pytest.approx(NOISE, rel=0.25)
  ref = [np.array([r['L'] for r in rows[i:i + 3]]) for i in range(0, len(rows), 3)]
  assert floor['value'] == pytest.approx(math.sqrt(sum(((v - v.mean()) ** 2).sum() for v in ref) / 56), rel=1e-12)
  got = profiles.profile_diagnostics(rows, defaults=DEFAULTS)
  assert got['noise_floor']['source'] == 'seed replicates'
  assert all(b['floor'] == floor['value'] and b['misfit'] is False for b in got['budgets'])


def test_a_given_floor_is_used_and_a_bad_one_is_an_error():
  rows = simulate(bonus=0.03, deeper=True)
  got = profiles.profile_diagnostics(rows, noise_floor=1.0, defaults=DEFAULTS)
  assert got['noise_floor']['source'] == 'given' and all(b['misfit'] is False for b in got['budgets'])
  assert set(got['budgets'][-1]['reasons']) >= {'shape'}
  with pytest.raises(load.FitError, match='noise_floor must be a positive'):
    profiles.profile_diagnostics(rows, noise_floor=-1.0)


def test_replicates_differ_only_in_seed():
  base = {'model.d_model': 64, 'train.lr': 1e-3}
  raw = [dict(base, **{'train.seed': 0}), dict(base, **{'train.seed': 1}), dict(base, **{'train.seed': 1}),
         dict(base, **{'train.seed': 2, 'train.lr': 2e-3}), dict(base)]
  rows = [{'run': str(i), 'N': 1.0, 'D': 1.0, 'C': 1.0, 'L': 1.0, 'raw': {'overrides': o}} for i, o in enumerate(raw)]
  assert profiles.replicate_groups(rows) == [[0, 1, 2]]   # the lr-changed row and the seedless row are no one's
  assert profiles.replicate_groups(rows[1:3]) == []       # one seed twice is not seed noise


def test_model_shape_reads_overrides_over_the_packaged_defaults():
  m = default.model()
  got = profiles.model_shape({'overrides': {'model.d_model': 96, 'model.num_heads': 6}})
  assert got == {'num_layers': m.num_layers, 'd_model': 96, 'num_heads': 6, 'head_dim': 16}
  got = profiles.model_shape({'overrides': {'model': {'num_layers': 3, 'head_dim': 32}}})
  assert got == {'num_layers': 3, 'd_model': m.d_model, 'num_heads': m.num_heads, 'head_dim': 32}
  assert profiles.model_shape({'run': 'x'}) is None
  same = [{'run': str(i), 'N': n, 'raw': {'overrides': {'train.lr': 1e-3}}} for i, n in enumerate((1.0, 2.0, 3.0))]
  assert profiles.shape_check(same, [0, 1, 2])['known'] is False   # the overrides do not name the model
