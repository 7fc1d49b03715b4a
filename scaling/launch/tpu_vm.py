"""The `tpu-vm` backend: Cloud TPU VMs driven with `gcloud compute tpus`.

With --max-parallel K the launcher keeps K TPU VMs, NAME-0 .. NAME-(K-1)
(NAME = resources['tpu_name'], default scaling-<sweep>), creates the missing
ones (directly, or through queued resources when resources['queued']), and runs
each run on a free VM over ssh on every worker at once:

  gcloud compute tpus tpu-vm ssh NAME-i --zone Z --project P --worker=all \
      --command 'cd ~/scaling && .venv/bin/python -m scaling train --config ... --workdir REMOTE_ROOT/runs/<hash> ...'

The VMs start bare: once a VM is READY (created, or recreated after a preemption) the launcher installs the
project on all its workers over ssh, a git clone of this checkout's remote at its HEAD commit in ~/scaling with
its own Python and jax[tpu] (scaling/launch/install.py; the plan names the commit). With resources['remote_repo']
set nothing is installed: that directory must hold the project already, and runs use `python3 -m scaling train`
(or resources['train_cmd']) there.

JAX initialises multi-host TPU slices on its own, so the same command runs on
every worker. REMOTE_ROOT (resources['remote_root'], default: the local root
path) must be storage every worker and this machine see (a shared disk or a
gcsfuse mount), so checkpoints survive a preempted VM and `status` works here.
The VMs are deleted at the end unless resources['keep_tpu'].

Runs execute through the local backend's machinery (locks, retries, exit 75 =
resumable), so the same protocol applies. Every gcloud call has a timeout. A VM's
state comes from `gcloud ... describe`: READY; missing (NOT_FOUND: created);
PREEMPTED or TERMINATED (deleted and created again, and a run whose ssh ended
because its VM went away counts as preempted, not failed, and resumes); or unknown
(describe failed or hung: asked again, and after `unknown_patience_s` a clear
error; a failed describe is never read as "no VM", so nothing is created twice).
"""

from __future__ import annotations

import shlex
import time

from scaling.launch import install
from scaling.launch.backend import UNKNOWN, Backend, QueueQueryError, SlicePreflight, remote_command, run_tool
from scaling.launch.local import LocalBackend
from scaling.launch.sweep import LaunchError

GONE_STATES = ('PREEMPTED', 'TERMINATED', 'NOT_FOUND')   # the VM (and what ran on it) is gone: recreate it


class TpuVmBackend(SlicePreflight, LocalBackend):
  name = 'tpu-vm'
  tools = ('gcloud',)
  tool_hint = 'Install the Google Cloud SDK and run `gcloud auth login`.'
  query_timeout_s = 120.0       # one describe
  create_timeout_s = 1800.0     # one create (gcloud waits for the VM)
  delete_timeout_s = 900.0
  vm_poll_s = 10.0              # between describes while a VM is being created
  ready_timeout_s = 7200.0      # queued resources may take a while to be granted
  unknown_patience_s = 600.0    # describe may fail this long before the launcher gives up
  install_timeout_s = 1800.0    # the project's install on a new VM (clone, Python, jax[tpu])

  required_resources = {'tpu_type': 'v5litepod-16', 'zone': 'us-west4-a'}
  packs = False                 # each run on its own VM: packing (scaling/launch/packing.py) is local only for now

  def __init__(self, root, resources=None, **kw):
    kw.pop('local_processes', None)
    super().__init__(root, resources, **kw)
    self._installed: set[str] = set()   # VMs the project was installed on by this launcher
    self._source = None

  @property
  def installs(self) -> bool:
    """Whether the launcher installs the project on its VMs (no resources['remote_repo'] naming a checkout there)."""
    return not self.resources.get('remote_repo')

  def source(self) -> install.Source:
    """The repository and commit the VMs install (read from this checkout once)."""
    if self._source is None:
      self._source = install.repo_source(self.resources)
    return self._source

  def check_tools(self) -> None:
    """gcloud on PATH, and (when the launcher installs the project on its VMs) a repository and commit to install:
    checked before anything is written, compiled or created."""
    Backend.check_tools(self)
    if self.installs:
      self._check_source()
      for note in self.source().notes:
        self.log(f'[sweep] warning: {note}')

  def _loc(self) -> list[str]:
    loc = [f'--zone={self.resources["zone"]}']
    if self.resources.get('project'):
      loc.append(f'--project={self.resources["project"]}')
    return loc

  def vm_name(self, sweep, slot: int) -> str:
    base = self.resources.get('tpu_name') or f'scaling-{sweep.name}'
    return f'{base}-{slot}'.lower().replace('_', '-')

  def create_command(self, name: str) -> list[str]:
    r = self.resources
    version = r.get('runtime_version', 'tpu-ubuntu2204-base')
    spot = ['--spot'] if r.get('spot') else []
    if r.get('queued'):
      return (['gcloud', 'compute', 'tpus', 'queued-resources', 'create', name, f'--node-id={name}']
              + self._loc() + [f'--accelerator-type={r["tpu_type"]}', f'--runtime-version={version}'] + spot)
    return (['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', name] + self._loc()
            + [f'--accelerator-type={r["tpu_type"]}', f'--version={version}'] + spot)

  def describe_command(self, name: str) -> list[str]:
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', name] + self._loc() + ['--format=value(state)']

  def delete_command(self, name: str) -> list[str]:
    if self.resources.get('queued'):
      return ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', name] + self._loc() + ['--force', '--quiet']
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', name] + self._loc() + ['--quiet']

  def install_command(self, name: str) -> list[str]:
    """Installs the project on every worker of VM `name` (idempotent; scaling/launch/install.py)."""
    return (['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', name] + self._loc()
            + ['--worker=all', f'--command={install.install_script(self.source())}'])

  def remote_command(self, run, rd) -> str:
    res = dict(self.resources)
    if self.installs:
      res.setdefault('train_cmd', install.VENV_TRAIN)
    return remote_command(res, run, rd, install.INSTALL_DIR)

  def command(self, run, rd, slot):
    name = self.vm_name(self._sweep, slot)
    return (['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', name] + self._loc()
            + ['--worker=all', f'--command={self.remote_command(run, rd)}'])

  def prepare_commands(self, sweep):
    self._sweep = sweep
    names = [self.vm_name(sweep, s) for s in range(self.max_parallel)]
    return [self.create_command(n) for n in names] + ([self.install_command(n) for n in names] if self.installs else [])

  def finish_commands(self, sweep):
    if self.resources.get('keep_tpu'):
      return []
    return [self.delete_command(self.vm_name(sweep, s)) for s in range(self.max_parallel)]

  # ---- the VMs -----------------------------------------------------------------------------------
  def vm_state(self, name: str) -> tuple[str, str]:
    """(READY, CREATING, PREEMPTED, ... or NOT_FOUND or UNKNOWN, why it is unknown)."""
    cmd = self.describe_command(name)
    r = run_tool(cmd, self.query_timeout_s)
    if r.ok and r.out.strip():
      return r.out.strip().split()[0].upper(), ''
    if r.rc is not None and 'NOT_FOUND' in r.err:
      return 'NOT_FOUND', ''
    return UNKNOWN, r.why(cmd)

  def _gcloud(self, cmd: list[str], timeout_s: float, what: str) -> None:
    """Runs a create/delete; a failure other than 'already exists' / 'not found' is a LaunchError."""
    self.log(f'[sweep] {shlex.join(cmd)}')
    r = run_tool(cmd, timeout_s)
    if r.ok or (r.rc is not None and ('ALREADY_EXISTS' in r.err or 'NOT_FOUND' in r.err)):
      return
    if r.rc is None and r.error.startswith('no answer'):
      self.log(f'[sweep] {what}: {r.why(cmd)}; checking the VM state instead')
      return
    raise LaunchError(f'{what} failed: {r.why(cmd)}')

  def _ensure_vm(self, name: str) -> None:
    """Returns once VM `name` is READY: creates it when missing, recreates it when preempted."""
    t0 = time.monotonic()
    unknown_since = last_log = None
    created = False
    while True:
      st, why = self.vm_state(name)
      if st == 'READY':
        self._install(name)
        return
      if st == UNKNOWN:
        unknown_since = unknown_since or time.monotonic()
        if time.monotonic() - unknown_since > self.unknown_patience_s:
          raise QueueQueryError(f'could not learn the state of TPU VM {name} for {self.unknown_patience_s:g} s '
                                f'({why}); nothing was created or started on it. Check `gcloud auth list` and the '
                                f'VM (`{shlex.join(self.describe_command(name))}`), then run the same command again.')
        if last_log is None or time.monotonic() - last_log > 30:
          last_log = time.monotonic()
          self.log(f'[sweep] state of TPU VM {name} unknown ({why}); asking again every {self.vm_poll_s:g} s '
                   f'for up to {self.unknown_patience_s:g} s (creating nothing meanwhile)')
      else:
        unknown_since = None
        if st in ('PREEMPTED', 'TERMINATED'):
          self.log(f'[sweep] TPU VM {name} is {st}: deleting and creating it again')
          self._gcloud(self.delete_command(name), self.delete_timeout_s, f'deleting TPU VM {name}')
          st, created = 'NOT_FOUND', False
          self._installed.discard(name)   # a new VM: bare again
        if st == 'NOT_FOUND' and not created:
          self._gcloud(self.create_command(name), self.create_timeout_s, f'creating TPU VM {name}')
          created = True
      if time.monotonic() - t0 > self.ready_timeout_s:
        raise LaunchError(f'TPU VM {name} did not become READY within {self.ready_timeout_s:g} s (last state {st})')
      time.sleep(self.vm_poll_s)

  def _install(self, name: str) -> None:
    """The project on READY VM `name`, once per VM for this launcher (the script itself skips a done install)."""
    if not self.installs or name in self._installed:
      return
    self._check_source()
    cmd = self.install_command(name)
    self.log(f'[sweep] installing the project on TPU VM {name} (commit {self.source().short}, {install.INSTALL_DIR})')
    r = run_tool(cmd, self.install_timeout_s)
    if not r.ok:
      raise LaunchError(f'installing the project on TPU VM {name} failed: {r.why(cmd)}. Fix the cause (the VM can '
                        f'reach {self.source().url}? the commit is pushed?) and run the same command again, or set '
                        f'--resource remote_repo=DIR to a checkout already on the VMs')
    self._installed.add(name)

  def _check_source(self) -> None:
    """A LaunchError when the repository or commit to install is unknown (before any VM is created)."""
    src = self.source()
    if not src.url or not src.commit:
      why = src.notes[0] if src.notes else f'the commit of {src.checkout} is unknown (git rev-parse HEAD fails)'
      raise LaunchError(f'the tpu-vm backend installs the project on its VMs from git, but {why}')

  def _prepare(self, sweep) -> None:
    """Creates the VMs that do not exist yet and waits until each is READY."""
    self._sweep = sweep
    for s in range(self.max_parallel):
      self._ensure_vm(self.vm_name(sweep, s))

  def _before_start(self, slot: int) -> None:
    self._ensure_vm(self.vm_name(self._sweep, slot))   # one describe when it is READY

  def _outcome(self, a, rc: int) -> str:
    """A run whose ssh failed because its VM was preempted is 'preempted' (resumes), not 'failed'."""
    outcome = super()._outcome(a, rc)
    if outcome == 'failed':
      name = self.vm_name(self._sweep, a.slot)
      st, _ = self.vm_state(name)
      if st in GONE_STATES:
        self.log(f'[sweep] TPU VM {name} is {st}: run {a.run.hash} was preempted (exit {rc}); it resumes')
        return 'preempted'
    return outcome

  def _finish(self, sweep) -> None:
    for cmd in self.finish_commands(sweep):
      self.log(f'[sweep] {shlex.join(cmd)}')
      r = run_tool(cmd, self.delete_timeout_s)
      if not r.ok:
        self.log(f'[sweep] warning: {r.why(cmd)}; delete the VM by hand if it still exists')

  def dry_run(self, sweep):
    self._sweep = sweep
    where = (install.describe(self.source()) if self.installs else
             [f'# project on the VMs: {self.resources["remote_repo"]} (resources remote_repo), not installed by the '
              f'launcher: it must hold this project with jax[tpu] on every worker'])
    return '\n'.join(where + [super().dry_run(sweep)])

  def submit(self, sweep, wait=True):
    self._sweep = sweep
    return super().submit(sweep, wait)
