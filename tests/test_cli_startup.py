"""`scaling --help` starts fast: it loads neither the config machinery (ml_collections, absl, yaml) nor the host
tuning nor any command's module; --config.* flags still reach the commands that take them, and a command that
takes none still refuses them."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
HEAVY = ('ml_collections', 'absl', 'yaml', 'numpy', 'jax', 'matplotlib', 'dataclasses', 'scaling.config.load',
         'scaling.base.hostmem')


def run_py(code: str) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  return subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def loaded_after(argv: list[str]) -> list[str]:
  """The HEAVY modules loaded by `scaling ARGV` (its SystemExit from --help included)."""
  r = run_py(f'import sys\nfrom scaling.cli import main\ntry:\n  main.main({argv!r})\nexcept SystemExit:\n  pass\n'
             f'print(sorted(m for m in {HEAVY!r} if m in sys.modules))')
  assert r.returncode == 0, r.stderr[-2000:]
  return eval(r.stdout.strip().splitlines()[-1])   # noqa: S307 -- our own print of a list of names


def test_help_loads_nothing_heavy():
  assert loaded_after(['--help']) == []
  assert loaded_after([]) == []            # "the following arguments are required: command"
  assert loaded_after(['nosuchcommand']) == []


def test_help_still_lists_every_command(capsys):
  from scaling.cli import main
  with pytest.raises(SystemExit):
    main.main(['--help'])
  out = capsys.readouterr().out
  for name in list(main.COMMANDS) + ['sweep']:
    assert f'    {name}' in out, name


def test_runs_and_plot_help_stay_light():
  for cmd in ('runs', 'plot'):   # a command's host tuning (scaling/base/hostmem.py) is light and may load
    assert [m for m in loaded_after([cmd, '--help']) if m != 'scaling.base.hostmem'] == [], cmd


def test_config_flags_still_parsed(capsys, tmp_path):
  from scaling.cli import main
  assert main.main(['runs', str(tmp_path), '--config.train.steps=3']) == 2
  assert '`scaling runs` takes no --config.* overrides' in capsys.readouterr().err
  assert main.main(['table', '--config.train.steps']) == 2
  assert '--config.train.steps needs a value' in capsys.readouterr().err
