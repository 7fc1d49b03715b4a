"""The `tpu-vm` backend: Cloud TPU VMs driven with `gcloud compute tpus`.

With --max-parallel K the launcher keeps K TPU VMs, NAME-0 .. NAME-(K-1)
(NAME = resources['tpu_name'], default scaling-<sweep>), creates the missing
ones (directly, or through queued resources when resources['queued']), and runs
each run on a free VM over ssh on every worker at once:

  gcloud compute tpus tpu-vm ssh NAME-i --zone Z --project P --worker=all \
      --command 'cd REPO && python3 -m scaling train --config ... --workdir REMOTE_ROOT/runs/<hash> ...'

JAX initialises multi-host TPU slices on its own, so the same command runs on
every worker. REMOTE_ROOT (resources['remote_root'], default: the local root
path) must be storage every worker and this machine see (a shared disk or a
gcsfuse mount), so checkpoints survive a preempted VM and `status` works here.
The VMs are deleted at the end unless resources['keep_tpu'].

Runs execute through the local backend's machinery (locks, retries, exit 75 =
resumable), so the same protocol applies.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time

from launch.local import LocalBackend
from launch.rundir import train_argv
from launch.slurm import missing_tool_error
from launch.sweep import LaunchError


class TpuVmBackend(LocalBackend):
  name = 'tpu-vm'
  tools = ('gcloud',)

  def __init__(self, root, resources=None, **kw):
    kw.pop('local_processes', None)
    super().__init__(root, resources, **kw)
    r = self.resources
    for key in ('tpu_type', 'zone'):
      if not r.get(key):
        raise LaunchError(f"the tpu-vm backend needs resources['{key}'] in the sweep's get_resources() "
                          f"(e.g. tpu_type='v5litepod-16', zone='us-west4-a')")

  def check_tools(self) -> None:
    if shutil.which('gcloud') is None:
      raise missing_tool_error('gcloud', self.name, 'Install the Google Cloud SDK and run `gcloud auth login`.')

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

  def remote_command(self, run, rd) -> str:
    r = self.resources
    repo = r.get('remote_repo', '~/scaling')
    remote_root = r.get('remote_root') or str(rd.root)
    train = shlex.split(r.get('train_cmd', 'python3 -m scaling train'))
    argv = train_argv(train, run.spec_relative(), f'{remote_root}/runs/{run.hash}', run.flag_list())
    cd = f'cd {repo}' if repo.startswith('~') else f'cd {shlex.quote(repo)}'
    parts = [cd] + ([r['setup']] if r.get('setup') else []) + [shlex.join(argv)]
    return ' && '.join(parts)

  def command(self, run, rd, slot):
    name = self.vm_name(self._sweep, slot)
    return (['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', name] + self._loc()
            + ['--worker=all', f'--command={self.remote_command(run, rd)}'])

  def prepare_commands(self, sweep):
    self._sweep = sweep
    return [self.create_command(self.vm_name(sweep, s)) for s in range(self.max_parallel)]

  def finish_commands(self, sweep):
    if self.resources.get('keep_tpu'):
      return []
    return [self.delete_command(self.vm_name(sweep, s)) for s in range(self.max_parallel)]

  def _prepare(self, sweep) -> None:
    """Creates the VMs that do not exist yet and waits until each is READY."""
    self._sweep = sweep
    for s in range(self.max_parallel):
      name = self.vm_name(sweep, s)
      p = subprocess.run(self.describe_command(name), capture_output=True, text=True)
      if p.returncode != 0:
        cmd = self.create_command(name)
        self.log(f'[sweep] {shlex.join(cmd)}')
        subprocess.run(cmd, check=True)
      for _ in range(720):   # queued resources may take a while to be granted
        p = subprocess.run(self.describe_command(name), capture_output=True, text=True)
        if p.returncode == 0 and p.stdout.strip() == 'READY':
          break
        time.sleep(10)
      else:
        raise LaunchError(f'TPU VM {name} did not become READY within 2 h')

  def dry_run(self, sweep):
    self._sweep = sweep
    return super().dry_run(sweep)

  def submit(self, sweep, wait=True):
    self._sweep = sweep
    return super().submit(sweep, wait)
