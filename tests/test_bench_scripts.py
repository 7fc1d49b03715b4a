"""The accelerator benchmark is ready to run: shell syntax, argument handling, and a CPU smoke run."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, os.path.join(ROOT, 'bench'))

import accelerator  # noqa: E402


def test_shell_wrapper_parses():
  subprocess.run(['bash', '-n', os.path.join(ROOT, 'bench', 'accelerator.sh')], check=True)


@pytest.mark.parametrize('argv', [['--batches', 'x'], ['--batches', '0'], ['--steps', '0'],
                                  ['--override', 'novalue']])
def test_bad_arguments_exit_with_usage(argv):
  with pytest.raises(SystemExit) as e:
    accelerator.parse_args(argv)
  assert e.value.code == 2


def test_oom_messages_are_recognised():
  assert accelerator.is_oom(RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate'))
  assert not accelerator.is_oom(RuntimeError('shape mismatch'))


def test_cpu_smoke_run_prints_the_table(capsys):
  assert accelerator.main(['--rungs', 'nano', '--batches', '2', '--steps', '1', '--warmup', '1',
                           '--seq_len', '32', '--override', 'model.num_layers=1']) == 0
  out = capsys.readouterr().out
  row = [l for l in out.splitlines() if l.startswith('| nano')]
  assert row, out
  cells = [c.strip() for c in row[0].strip('|').split('|')]
  assert cells[2] == '32' and cells[3] == '2'   # T and batch/device as asked
  assert float(cells[5].replace(',', '')) > 0   # tokens/s
