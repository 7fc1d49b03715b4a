"""`scaling fit`'s outputs: written whole and only by a fit that succeeded, and the headline lines it prints.

A failing fit (a requested fit the data cannot support, no fit at all, a malformed results file, a plot that
raises) must leave an existing fit.json and PNG byte-identical and no temporary file; a successful one replaces
them. The printed power-law line is checked against numbers computed here from the rows and from fit.json."""

import argparse
import json
import os

import numpy as np
import pytest

from scaling.analysis.fit import command, plots

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
SENTINEL_JSON = b'{"sentinel": "an earlier fit"}\n'
SENTINEL_PNG = b'not a png: an earlier plot \x00\x01\x02'


def write_jsonl(path, rows):
  with open(path, 'w') as f:
    for r in rows:
      f.write((r if isinstance(r, str) else json.dumps(r)) + '\n')
  return str(path)


def result_row(i, n, d, loss):
  return {'run': f'r{i}', 'overrides': {}, 'state': 'done', 'params': n * 1.2, 'non_embedding_params': n,
          'tokens': d, 'flops': 6 * n * d, 'train/loss': loss, 'eval/loss': loss, 'eval/bpb': loss,
          'wall_s': 10.0}


def power_law_rows():
  """2 sizes x 2 token budgets (no two at one compute budget): per-group power laws only (4 points are too few
  for the parametric law, and no budget has 3 sizes)."""
  rng = np.random.default_rng(5)
  rows = []
  for d in (1e9, 4e9):
    for n in (1e7, 3e7):
      loss = 9.0 * n ** -0.1 + 40.0 * d ** -0.15
      rows.append(result_row(len(rows), n, d, float(loss * np.exp(rng.normal(0, 0.01)))))
  return rows


def distinct_rows():
  """Every N and D distinct: no fit is possible."""
  return [result_row(i, n, 20 * n, 4.0 - i * 0.1) for i, n in enumerate((1e7, 3e7, 1e8, 3e8))]


def run(argv):
  return command.run_fit(command.add_fit_args(argparse.ArgumentParser()).parse_args(argv))


def seed_outputs(out):
  os.makedirs(out, exist_ok=True)
  with open(out / 'fit.json', 'wb') as f:
    f.write(SENTINEL_JSON)
  with open(out / 'loss_vs_compute.png', 'wb') as f:
    f.write(SENTINEL_PNG)


def read(path):
  with open(path, 'rb') as f:
    return f.read()


def assert_untouched(out):
  assert read(out / 'fit.json') == SENTINEL_JSON
  assert read(out / 'loss_vs_compute.png') == SENTINEL_PNG
  assert sorted(os.listdir(out)) == ['fit.json', 'loss_vs_compute.png']   # nothing new, no temporary file


def assert_one_unchanged_line(err):
  lines = [ln for ln in err.splitlines() if 'nothing written' in ln]
  assert len(lines) == 1 and 'unchanged' in lines[0], err


@pytest.mark.parametrize('case', ['explicit_fit_impossible', 'no_fit_possible', 'malformed'])
def test_a_failing_fit_leaves_fit_json_and_plots_byte_identical(tmp_path, capsys, case):
  out = tmp_path / 'out'
  seed_outputs(out)
  if case == 'explicit_fit_impossible':
    path, extra, rc = write_jsonl(tmp_path / 'results.jsonl', power_law_rows()), ['--fits', 'chinchilla'], 1
  elif case == 'no_fit_possible':
    path, extra, rc = write_jsonl(tmp_path / 'results.jsonl', distinct_rows()), [], 1
  else:
    path, extra, rc = write_jsonl(tmp_path / 'results.jsonl', [*power_law_rows(), '{"run": "half a line']), [], 2
  assert run(['--results', path, '--out', str(out), '--bootstrap', '0', *extra]) == rc
  captured = capsys.readouterr()
  assert_untouched(out)
  assert_one_unchanged_line(captured.err)
  if case == 'no_fit_possible':   # says in one line why no number
    why = [ln for ln in captured.out.splitlines() if ln.startswith('no law fitted: ')]
    assert len(why) == 1 and 'only 4 point' in why[0] and 'power_law: no group' in why[0], captured.out


def test_a_plot_that_raises_leaves_the_outputs_and_no_temporary_file(tmp_path, capsys, monkeypatch):
  out = tmp_path / 'out'
  seed_outputs(out)
  path = write_jsonl(tmp_path / 'results.jsonl', power_law_rows())

  def broken(*args, **kwargs):   # after loss_vs_compute.png was drawn into its temporary file
    raise RuntimeError('the plot broke')
  monkeypatch.setattr(plots, '_plot_parity_residuals', broken)
  assert run(['--results', path, '--out', str(out), '--bootstrap', '0']) == 2
  err = capsys.readouterr().err
  assert 'the plot broke' in err
  assert_untouched(out)
  assert_one_unchanged_line(err)


def test_a_successful_fit_replaces_the_outputs_and_prints_the_power_law_exponents(tmp_path, capsys):
  out = tmp_path / 'out'
  seed_outputs(out)
  rows = power_law_rows()
  path = write_jsonl(tmp_path / 'results.jsonl', rows)
  assert run(['--results', path, '--out', str(out), '--bootstrap', '0']) == 0
  printed = capsys.readouterr().out
  saved = json.loads(read(out / 'fit.json'))
  assert saved['errors'] == [] and saved['plots'] and 'skipped' in saved['chinchilla']
  assert 'skipped' in saved['isoflop']
  for name in saved['plots']:
    assert read(out / name)[:8] == PNG_MAGIC, name
  assert read(out / 'loss_vs_compute.png')[:8] == PNG_MAGIC
  assert sorted(os.listdir(out)) == sorted(['fit.json', *saved['plots']])   # no temporary file

  for key, by, x, law in (('vs_N', 'tokens', 'non_embedding_params', 'L ~ N^-b at equal tokens'),
                          ('vs_D', 'non_embedding_params', 'tokens', 'L ~ D^-b at equal N')):
    groups = saved['power_law'][key]['groups']
    # each group's b: minus the slope of the line through its two (log x, log L), from the rows themselves
    slopes = []
    for value in sorted({r[by] for r in rows}):
      g = sorted((r for r in rows if r[by] == value), key=lambda r: r[x])
      slopes.append(-(np.log(g[1]['eval/bpb']) - np.log(g[0]['eval/bpb'])) / (np.log(g[1][x]) - np.log(g[0][x])))
    assert sorted(g['b'] for g in groups) == pytest.approx(sorted(slopes), rel=1e-9)
    bs = [g['b'] for g in groups]
    line = (f'power law {law}: b = {float(np.median(bs)):.4g} (median of {len(bs)} groups, '
            f'range [{min(bs):.4g}, {max(bs):.4g}])')
    assert line in printed.splitlines(), printed
  assert 'no law fitted' not in printed


def test_no_fit_possible_records_why_only_where_no_fit_json_is(tmp_path, capsys):
  out = tmp_path / 'out'
  path = write_jsonl(tmp_path / 'results.jsonl', distinct_rows())
  assert run(['--results', path, '--out', str(out), '--bootstrap', '0']) == 1
  assert 'to record why' in capsys.readouterr().err
  saved = json.loads(read(out / 'fit.json'))
  assert saved['errors'] and saved['plots'] == [] and 'skipped' in saved['chinchilla']
  assert os.listdir(out) == ['fit.json']
