"""`scaling report`'s compute-saved section for cooldown branches, and what the fit makes of parent rows."""

import json

from scaling.analysis import report
from scaling.analysis.fit import load as fit_lib


def rows():
  """A parent of 16 steps and branches of 10 and 20 steps forked at 8 and 16; 1 FLOP per step (x 1e9)."""
  g = 1e9
  base = dict(params=1000, non_embedding_params=900)
  return [
      dict(base, run='p', state='parent', role='parent', parent=None, fork_step=None, tokens=16e3, flops=16 * g,
           own_flops=16 * g, own_tokens=16e3, **{'eval/loss': 3.0, 'eval/bpb': 2.0}),
      dict(base, run='b10', state='done', role='branch', parent='p', fork_step=8, tokens=10e3, flops=10 * g,
           own_flops=2 * g, own_tokens=2e3, **{'eval/loss': 2.5, 'eval/bpb': 1.8}),
      dict(base, run='b20', state='done', role='branch', parent='p', fork_step=16, tokens=20e3, flops=20 * g,
           own_flops=4 * g, own_tokens=4e3, **{'eval/loss': 2.2, 'eval/bpb': 1.6}),
  ]


def test_section_states_the_compute_of_branches_against_separate_runs():
  text = '\n'.join(report._branches_section(rows()))
  # (16 + 2 + 4) / (10 + 20) = 22 / 30
  assert '2 finished branch(es) of 1 stable parent(s)' in text
  assert '73% of the compute, 27% saved' in text
  assert '| b20 | p | 16 |' in text
  assert report._branches_section([dict(r, role=None) for r in rows()]) == []   # no branches: no section
  part = '\n'.join(report._branches_section([dict(r, state='running') if r['run'] == 'b20' else r for r in rows()]))
  # b10 alone: (16 + 2) / 10, and the note that the parent's compute is not yet shared by b20
  assert 'took 18B FLOPs' in part and '180% of the compute' in part
  assert '1 more branch(es) of these parents have not finished' in part


def test_render_report_includes_the_section():
  text = report.render_report(rows(), None, title='t', notes=[])
  assert '## Compute saved by cooldown branches' in text


def test_fit_reads_branch_rows_unchanged_and_leaves_the_parent_out(tmp_path):
  path = tmp_path / 'results.jsonl'
  path.write_text(''.join(json.dumps(dict(r, overrides={}, name=None)) + '\n' for r in rows()))
  notes = []
  loaded = fit_lib.load_results(str(path), metric='eval/loss', notes=notes)
  assert sorted(r['run'] for r in loaded) == ['b10', 'b20']
  assert {r['run']: r['D'] for r in loaded} == {'b10': 10e3, 'b20': 20e3}   # D includes the parent's tokens
  assert any("state 'parent'" in n for n in notes)
