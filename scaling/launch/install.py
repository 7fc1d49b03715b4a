"""Putting this project on a bare TPU VM: a git checkout at a pinned commit with its own Python environment.

A TPU VM that the tpu-vm backend creates starts from a bare image (resources runtime_version, default
tpu-ubuntu2204-base: Python 3.10, no JAX), and the project needs Python >= 3.11. Before a VM's first run the
launcher installs the project on every worker of it with one idempotent script (`install_script`):

  ~/scaling                       a git clone of the repository at the pinned commit
  ~/scaling/.venv                 its own Python 3.12 (made by uv) with the project (`pip install -e .`) and jax[tpu]
  ~/scaling/.installed-<commit>   the marker: a worker that has it skips the script (a rerun costs one ssh)

and the runs train with `cd ~/scaling && .venv/bin/python -m scaling train ...`. The repository and the commit
are this checkout's: its remote 'origin' and its HEAD (`repo_source`), so the VMs run the code the sweep was
planned with; uncommitted changes, or a commit on no remote branch, are named in the plan (the VMs would not
have them). With resources remote_repo set the launcher installs nothing: that directory must already hold the
project with jax[tpu] (a shared disk, a custom image).

Only git is run here (with a timeout); nothing imports jax.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shlex
import subprocess

INSTALL_DIR = '~/scaling'              # where the project lives on a VM the launcher installs it on
VENV_TRAIN = '.venv/bin/python -m scaling train'   # the training command there (run from INSTALL_DIR)
UV_INSTALLER = 'https://astral.sh/uv/install.sh'
PYTHON = '3.12'
GIT_TIMEOUT_S = 10.0


@dataclasses.dataclass(frozen=True)
class Source:
  """Where the VMs get the project from: a git URL and a commit (None: unknown), and what the plan should warn of."""
  url: str | None
  commit: str | None
  checkout: str | None = None          # this machine's checkout they were read from
  notes: tuple[str, ...] = ()

  @property
  def short(self) -> str:
    return self.commit[:12] if self.commit else '<commit>'


def _git(repo: pathlib.Path, *args: str) -> str | None:
  """The output of `git -C repo ARGS` (stripped), or None when git is missing, fails or hangs."""
  try:
    r = subprocess.run(['git', '-C', str(repo), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S,
                       stdin=subprocess.DEVNULL)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return r.stdout.strip() if r.returncode == 0 else None


def checkout_dir() -> pathlib.Path:
  """The directory this package was imported from, one above scaling/ (a git checkout when installed with -e)."""
  return pathlib.Path(__file__).resolve().parents[2]


def repo_source(resources: dict | None = None, repo: pathlib.Path | None = None) -> Source:
  """The git URL and commit of the project the VMs install: resources repo_url / repo_commit when given, else
  this checkout's remote 'origin' and HEAD; notes for uncommitted changes and a commit on no remote branch."""
  resources = resources or {}
  repo = repo or checkout_dir()
  is_git = _git(repo, 'rev-parse', '--is-inside-work-tree') == 'true'
  url = resources.get('repo_url') or (_git(repo, 'config', '--get', 'remote.origin.url') if is_git else None)
  commit = resources.get('repo_commit') or (_git(repo, 'rev-parse', 'HEAD') if is_git else None)
  notes = []
  if not is_git and not (resources.get('repo_url') and resources.get('repo_commit')):
    notes.append(f'{repo} is no git checkout, so the repository and commit to install are unknown: install the '
                 f'project from a git checkout of it (pip install -e .)')
  elif not url:
    notes.append(f'the checkout {repo} has no remote \'origin\' to clone on the VMs: add it (git remote add origin '
                 f'URL) and push, or set --resource remote_repo=DIR to a checkout already on the VMs')
  if is_git and not resources.get('repo_commit'):
    if _git(repo, 'status', '--porcelain', '--untracked-files=no'):
      notes.append(f'{repo} has uncommitted changes: the VMs get commit {commit[:12] if commit else "?"} without '
                   f'them (commit and push them first)')
    if commit and url and not _git(repo, 'branch', '-r', '--contains', commit):
      notes.append(f'commit {commit[:12]} is on no remote branch of this checkout: push it, or the VMs cannot fetch '
                   f'it from {url}')
  return Source(url=url, commit=commit, checkout=str(repo) if is_git else None, notes=tuple(notes))


def install_script(src: Source) -> str:
  """The shell line that installs the project on one worker (idempotent: a marker per commit), run over ssh."""
  url = shlex.quote(src.url) if src.url else '<repo_url>'
  commit = shlex.quote(src.commit) if src.commit else '<commit>'
  steps = [
      'set -e', 'R=$HOME/scaling', f'C={commit}',
      'if [ -f "$R/.installed-$C" ]; then echo "scaling $C is installed in $R"; exit 0; fi',
      f'if [ ! -d "$R/.git" ]; then git clone --quiet {url} "$R"; fi',
      'cd "$R"', 'git fetch --quiet origin "$C" || git fetch --quiet origin', 'git checkout --quiet --detach "$C"',
      f'if ! command -v uv >/dev/null && [ ! -x "$HOME/.local/bin/uv" ]; then curl -LsSf {UV_INSTALLER} | sh; fi',
      'U=$(command -v uv || echo "$HOME/.local/bin/uv")',
      f'[ -x .venv/bin/python ] || "$U" venv --quiet --python {PYTHON} .venv',
      '"$U" pip install --quiet --python .venv/bin/python -e . "jax[tpu]"',
      'touch ".installed-$C"', 'echo "scaling $C installed in $R"',
  ]
  return '; '.join(steps)


def describe(src: Source) -> list[str]:
  """The plan's comment lines: where the project lives on the VMs, what is installed there, and the warnings."""
  lines = [f'# project on the VMs: {INSTALL_DIR}, a git clone of {src.url or "<repo_url>"} at commit '
           f'{src.commit or "<commit>"}, with Python {PYTHON} and jax[tpu] in {INSTALL_DIR}/.venv (uv); installed by '
           f'the ssh step after the VMs are created (again on a recreated VM); runs use {VENV_TRAIN}']
  lines += [f'# warning: {n}' for n in src.notes]
  return lines
