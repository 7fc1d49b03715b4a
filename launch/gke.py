"""The `gke` backend: one xpk workload per run on a GKE cluster with TPU node pools.

  xpk workload create --cluster C --workload scaling-<hash8>-<attempt> --tpu-type T
      --num-slices S --docker-image IMG --max-restarts R
      --command 'cd /app && python3 -m scaling train --config ... --workdir REMOTE_ROOT/runs/<hash> ...'

The image must contain this repo (resources['remote_repo'], default /app) and
REMOTE_ROOT (resources['remote_root']) must be storage the pods and this machine
both see (e.g. a gcsfuse mount), so a restarted workload resumes from its
checkpoint and `status`/`collect` work here. xpk restarts preempted workloads
itself (--max-restarts). A workload's liveness and outcome come from
`xpk workload list --wait-for-job-completion=NAME --timeout=0`, whose exit code
is 0 (succeeded), 124 (not finished), 125 (finished, not successfully) or
1 (unknown). Submission follows the same lock-and-record protocol as slurm.
"""

from __future__ import annotations

import shlex
import subprocess

from launch.rundir import train_argv
from launch.slurm import QueueBackend
from launch.sweep import LaunchError


class GkeBackend(QueueBackend):
  name = 'gke'
  tools = ('xpk',)
  tool_hint = 'Install xpk (`pip install xpk`) and gcloud, and create the cluster with `xpk cluster create`.'
  poll_s = 30.0

  def __init__(self, root, resources=None, **kw):
    super().__init__(root, resources, **kw)
    for key in ('cluster', 'tpu_type', 'docker_image'):
      if not self.resources.get(key):
        raise LaunchError(f"the gke backend needs resources['{key}'] in the sweep's get_resources() "
                          f"(cluster='my-cluster', tpu_type='v5litepod-16', docker_image='gcr.io/PROJECT/scaling')")

  def _loc(self) -> list[str]:
    r = self.resources
    out = [f'--cluster={r["cluster"]}']
    if r.get('project'):
      out.append(f'--project={r["project"]}')
    if r.get('zone'):
      out.append(f'--zone={r["zone"]}')
    return out

  def workload_name(self, run, attempt: int) -> str:
    # xpk: lowercase letters, digits and '-', starting with a letter, at most 40 characters.
    return f'scaling-{run.hash[:12]}-a{attempt}'

  def remote_command(self, run, rd) -> str:
    r = self.resources
    repo = r.get('remote_repo', '/app')
    remote_root = r.get('remote_root') or str(rd.root)
    train = shlex.split(r.get('train_cmd', 'python3 -m scaling train'))
    argv = train_argv(train, run.spec_relative(), f'{remote_root}/runs/{run.hash}', run.flag_list())
    parts = [f'cd {shlex.quote(repo)}'] + ([r['setup']] if r.get('setup') else []) + [shlex.join(argv)]
    return ' && '.join(parts)

  def submit_commands(self, run, rd, sweep):
    r = self.resources
    rec = rd.read() or {}
    attempt = len(rec.get('attempts', [])) + 1
    cmd = (['xpk', 'workload', 'create'] + self._loc()
           + [f'--workload={self.workload_name(run, attempt)}', f'--tpu-type={r["tpu_type"]}',
              f'--num-slices={int(r.get("num_slices", 1))}', f'--docker-image={r["docker_image"]}',
              f'--max-restarts={int(r.get("max_restarts", 3))}'])
    if r.get('priority'):
      cmd.append(f'--priority={r["priority"]}')
    cmd.append(f'--command={self.remote_command(run, rd)}')
    return [cmd]

  def job_id_from_output(self, out, run, rd, sweep):
    rec = rd.read() or {}
    return self.workload_name(run, len(rec.get('attempts', [])) + 1)

  def status_command(self, name: str) -> list[str]:
    return ['xpk', 'workload', 'list'] + self._loc() + [f'--wait-for-job-completion={name}', '--timeout=0']

  def job_states(self, job_ids):
    out = {}
    for name in job_ids:
      p = subprocess.run(self.status_command(name), capture_output=True, text=True)
      if p.returncode == 124:
        out[name] = ('live', None)
      elif p.returncode == 0:
        out[name] = ('done', 0)
      elif p.returncode == 125:
        out[name] = ('failed', None)
    return out
