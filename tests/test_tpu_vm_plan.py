"""The TPU backends' plans (tpu-vm, gke): a dry run runs the fit check a submit runs and shows its verdict per run,
and the tpu-vm plan installs the project on its bare VMs from a pinned commit (scaling/launch/install.py)."""

import os
import pathlib
import shlex
import subprocess
import textwrap

import pytest

from scaling.launch import backend as backend_lib
from scaling.launch import cli as launch_cli
from scaling.launch import install
from scaling.launch import sweep as sweep_lib
from scaling.launch.backend import ToolResult
from scaling.launch.gke import GkeBackend
from scaling.launch.sweep import LaunchError
from scaling.launch.tpu_vm import TpuVmBackend

REPO = pathlib.Path(__file__).resolve().parent.parent
LADDER = REPO / 'scaling' / 'model' / 'ladder.py'
COMMIT = '0123456789abcdef0123456789abcdef01234567'
SRC = {'repo_url': 'https://example.org/scaling.git', 'repo_commit': COMMIT}
TPU = {'tpu_type': 'v5p-8', 'zone': 'z1', 'cluster': 'c1', 'docker_image': 'img'}


def make_sweep(tmp_path):
  p = tmp_path / 'sw.py'
  p.write_text(textwrap.dedent(f"""
      from scaling.launch.sweep import product
      import importlib.util

      def get_config(arg=None):
        spec = importlib.util.spec_from_file_location('_l', {str(LADDER)!r})
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        c = m.get_config('nano')
        c.train.steps = 7
        return c

      def get_sweep(arg=None):
        return product({{'rung': ['nano'], 'train.lr': [1e-3, 3e-3]}})
      """))
  return sweep_lib.load_sweep(str(p))


def backend(kind, tmp_path, **res):
  cls = TpuVmBackend if kind == 'tpu-vm' else GkeBackend
  return cls(tmp_path / 'root', dict(TPU, **SRC, **res), log=lambda *a: None)


def commands(text):
  return [shlex.split(x) for x in text.splitlines() if x and not x.startswith('#')]


# ---- the fit check in a dry run ------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['tpu-vm', 'gke'])
def test_a_dry_run_shows_the_refusal_of_the_fit_check_a_submit_would_hit(kind, tmp_path):
  sw = make_sweep(tmp_path)
  small, big = sw.runs
  calls = []

  def fit_check(sweep, resources, log):   # as scaling/train/aot_cli.py sweep_fit_problems answers: 'label: why'
    calls.append((sweep, resources['tpu_type']))
    return [f'{big.label}: needs 99 GiB per chip on v5p-8']

  b = backend(kind, tmp_path, aot_check='1')
  b.fit_check = fit_check
  text = b.dry_run(sw)
  assert calls == [(sw, 'v5p-8')]   # the same check, with what a submit hands it
  notes = [x for x in text.splitlines() if x.startswith('# fit check') or x.startswith('#   run')]
  assert notes == [
      '# fit check on v5p-8 (each run compiled for the slice, as a submit does first): 1 problem(s): a submit would '
      'refuse this sweep and reserve nothing',
      f'#   run {small.hash} ({small.label}): fits',
      f'#   run {big.hash} ({big.label}): DOES NOT FIT: needs 99 GiB per chip on v5p-8']
  with pytest.raises(LaunchError, match=f'1 run.* do not fit on v5p-8.*\n  {big.label}: needs 99 GiB'):
    b.preflight(sw)   # and the submit refuses it, as the plan said
  assert not (tmp_path / 'root').exists()


def test_a_dry_run_says_when_the_check_passes_is_off_failed_or_missing(tmp_path, monkeypatch):
  sw = make_sweep(tmp_path)
  b = backend('gke', tmp_path, aot_check='1')
  b.fit_check = lambda sweep, resources, log: []
  real_off = backend_lib.fit_check_off
  monkeypatch.setattr(backend_lib, 'fit_check_off', lambda resources: '')   # as where libtpu is installed
  verdict = [x for x in b.dry_run(sw).splitlines() if x.startswith('# fit check') or x.startswith('#   run')]
  assert verdict[0].endswith('all 2 run(s) fit') and all(x.endswith(': fits') for x in verdict[1:])
  monkeypatch.setattr(backend_lib, 'fit_check_off', real_off)
  b.resources['aot_check'] = '0'
  assert '# fit check on v5p-8: off (resources aot_check=0): nothing compiled, and a submit would not check ' \
         'either' in b.dry_run(sw).splitlines()

  def broken(sweep, resources, log):
    raise ValueError('unknown TPU type v5p-8')
  b.fit_check = broken
  assert '# fit check on v5p-8: FAILED (ValueError: unknown TPU type v5p-8); a submit would stop there, before ' \
         'reserving anything' in b.dry_run(sw).splitlines()
  b.fit_check = None
  assert any(x.startswith('# fit check: none was handed') for x in b.dry_run(sw).splitlines())


def test_fit_check_off_reasons(monkeypatch):
  monkeypatch.delenv('SCALING_AOT_CHECK', raising=False)
  assert backend_lib.fit_check_off({'aot_check': 'No'}) == 'resources aot_check=No'
  monkeypatch.setenv('SCALING_AOT_CHECK', 'off')
  assert backend_lib.fit_check_off({}) == 'SCALING_AOT_CHECK=off'
  has_libtpu = __import__('importlib').util.find_spec('libtpu') is not None
  assert backend_lib.fit_check_off({'aot_check': 1}) == ('' if has_libtpu else
                                                         "libtpu is not installed here; pip install -e '.[tpu-aot]' "
                                                         'turns the check on')


# ---- the install step ------------------------------------------------------------------------------------------

def test_tpu_vm_plan_installs_the_pinned_commit_on_each_vm_before_its_runs(tmp_path):
  sw = make_sweep(tmp_path)
  b = TpuVmBackend(tmp_path / 'root', dict(TPU, **SRC), max_parallel=2, log=lambda *a: None)
  text = b.dry_run(sw)
  assert f'# project on the VMs: ~/scaling, a git clone of https://example.org/scaling.git at commit {COMMIT}' in text
  cmds = commands(text)
  verbs = [(c[3], c[4], c[5]) for c in cmds]
  assert verbs[:4] == [('tpu-vm', 'create', 'scaling-sw-0'), ('tpu-vm', 'create', 'scaling-sw-1'),
                       ('tpu-vm', 'ssh', 'scaling-sw-0'), ('tpu-vm', 'ssh', 'scaling-sw-1')]
  script = cmds[2][-1].removeprefix('--command=')
  assert cmds[2][-2] == '--worker=all'
  assert f'C={COMMIT}' in script and 'git clone --quiet https://example.org/scaling.git "$R"' in script
  assert 'git checkout --quiet --detach "$C"' in script and '-e . "jax[tpu]"' in script
  run0 = cmds[4][-1].removeprefix('--command=')
  assert run0.startswith('cd ~/scaling && .venv/bin/python -m scaling train --config scaling/model/ladder.py:nano')


def test_tpu_vm_with_a_remote_repo_installs_nothing_and_says_so(tmp_path):
  sw = make_sweep(tmp_path)
  b = TpuVmBackend(tmp_path / 'root', dict(TPU, remote_repo='/mnt/scaling'), log=lambda *a: None)
  text = b.dry_run(sw)
  assert '# project on the VMs: /mnt/scaling (resources remote_repo), not installed by the launcher' in text
  cmds = commands(text)
  assert [c[4] for c in cmds] == ['create', 'ssh', 'ssh', 'delete']
  assert cmds[1][-1].removeprefix('--command=').startswith('cd /mnt/scaling && python3 -m scaling train ')


def test_gke_plan_names_the_image_and_the_commit(tmp_path):
  sw = make_sweep(tmp_path)
  text = backend('gke', tmp_path).dry_run(sw)
  assert (f'# project in the pods: /app (resources remote_repo) in image img, which must hold this project at '
          f'commit {COMMIT}') in text
  assert len(commands(text)) == 2   # one workload per run, as before


def test_install_script_clones_checks_out_installs_once_and_skips_a_second_time(tmp_path):
  """The script itself, on a 'VM' that is this machine: HOME in tmp, the repository a local one, uv a fake."""
  origin = tmp_path / 'origin'
  git = lambda *a: subprocess.run(['git', *a], cwd=origin, check=True, capture_output=True, text=True)  # noqa: E731
  origin.mkdir()
  git('init', '-q')
  (origin / 'pyproject.toml').write_text('v1\n')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'one')
  first = git('rev-parse', 'HEAD').stdout.strip()
  (origin / 'pyproject.toml').write_text('v2\n')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qam', 'two')
  home, bin_ = tmp_path / 'home', tmp_path / 'bin'
  home.mkdir()
  bin_.mkdir()
  (bin_ / 'uv').write_text('#!/bin/sh\necho "$@" >> "$HOME/uv.log"\n'
                           'if [ "$1" = venv ]; then mkdir -p .venv/bin && touch .venv/bin/python && '
                           'chmod +x .venv/bin/python; fi\n')
  (bin_ / 'uv').chmod(0o755)
  script = install.install_script(install.Source(url=str(origin), commit=first))
  env = dict(os.environ, HOME=str(home), PATH=f'{bin_}:{os.environ["PATH"]}')
  r = subprocess.run(['bash', '-c', script], env=env, capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  assert (home / 'scaling' / 'pyproject.toml').read_text() == 'v1\n'   # the pinned commit, not the newest
  assert (home / 'scaling' / f'.installed-{first}').exists()
  log = (home / 'uv.log').read_text().splitlines()
  assert log == ['venv --quiet --python 3.12 .venv', 'pip install --quiet --python .venv/bin/python -e . jax[tpu]']
  r = subprocess.run(['bash', '-c', script], env=env, capture_output=True, text=True, timeout=60)
  assert r.returncode == 0 and 'is installed' in r.stdout
  assert len((home / 'uv.log').read_text().splitlines()) == 2   # nothing installed again


def test_repo_source_reads_the_checkout_and_names_what_the_vms_would_miss(tmp_path):
  repo = tmp_path / 'repo'
  repo.mkdir()
  git = lambda *a: subprocess.run(['git', *a], cwd=repo, check=True, capture_output=True, text=True)  # noqa: E731
  git('init', '-q')
  (repo / 'f').write_text('a')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'one')
  head = git('rev-parse', 'HEAD').stdout.strip()
  src = install.repo_source({}, repo)
  assert (src.url, src.commit) == (None, head)
  assert len(src.notes) == 1 and "has no remote 'origin'" in src.notes[0]
  git('remote', 'add', 'origin', 'https://example.org/r.git')
  (repo / 'f').write_text('b')   # uncommitted, and the commit was never pushed
  src = install.repo_source({}, repo)
  assert src.url == 'https://example.org/r.git' and len(src.notes) == 2
  assert 'has uncommitted changes: the VMs get commit' in src.notes[0]
  assert f'commit {head[:12]} is on no remote branch of this checkout: push it' in src.notes[1]
  src = install.repo_source({}, tmp_path / 'nogit')
  assert src.url is None and 'no git checkout' in src.notes[0]


def test_tpu_vm_submit_without_a_repository_to_clone_stops_before_any_vm(tmp_path, monkeypatch, capsys):
  sw = make_sweep(tmp_path)
  bin_ = tmp_path / 'bin'
  bin_.mkdir()
  (bin_ / 'gcloud').write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/calls"\nexit 1\n')
  (bin_ / 'gcloud').chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_}:{os.environ["PATH"]}')
  monkeypatch.setattr(install, 'checkout_dir', lambda: tmp_path / 'nogit')
  checked = []
  argv = ['--config', str(sw.path), '--backend', 'tpu-vm', '--root', str(tmp_path / 'root'), '--resource',
          'tpu_type=v5p-8', '--resource', 'zone=z1']
  assert launch_cli.run_sweep_cli(argv, fit_check=lambda *a, **k: checked.append(1) or []) == 2
  assert 'installs the project on its VMs from git, but ' in capsys.readouterr().err
  assert checked == [] and not (bin_ / 'calls').exists() and not (tmp_path / 'root').exists()   # nothing done
  b = TpuVmBackend(tmp_path / 'root', dict(TPU, remote_repo='/mnt/scaling'), log=lambda *a: None)
  b.check_tools()   # a checkout already on the VMs: nothing to install, nothing to clone


def test_tpu_vm_installs_once_per_vm_and_again_on_a_recreated_one(tmp_path, monkeypatch):
  import scaling.launch.tpu_vm as tpu_vm
  logs, calls = [], []
  b = TpuVmBackend(tmp_path / 'root', dict(TPU, **SRC), log=logs.append)
  b.vm_poll_s = 0.0
  states = iter(['READY', 'READY', 'PREEMPTED', 'CREATING', 'READY'])
  monkeypatch.setattr(b, 'vm_state', lambda name: (next(states), ''))

  def tool(cmd, timeout_s):
    calls.append(cmd[4] if cmd[3] == 'tpu-vm' else cmd[3])
    return ToolResult(0, '', '', '')
  monkeypatch.setattr(tpu_vm, 'run_tool', tool)
  b._ensure_vm('vm-0')
  b._ensure_vm('vm-0')   # ready and installed: nothing
  b._ensure_vm('vm-0')   # preempted: deleted, created, installed again
  assert calls == ['ssh', 'delete', 'create', 'ssh']
  assert sum('installing the project on TPU VM vm-0 (commit 0123456789ab' in x for x in logs) == 2

  monkeypatch.setattr(tpu_vm, 'run_tool', lambda cmd, t: ToolResult(1, '', 'Permission denied (publickey)', ''))
  b._installed.clear()
  states = iter(['READY'])
  with pytest.raises(LaunchError, match='installing the project on TPU VM vm-0 failed: .*Permission denied'):
    b._ensure_vm('vm-0')
