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
1 (the workload does not exist, and also some failures of xpk itself). Exit 1
with xpk's "does not exist" message is "gone"; any other failure, or no answer
within `query_timeout_s`, is "unknown" (asked again, never resubmitted), and so
is a workload not yet listed `gone_grace_s` after its submission. Submission
follows the lock-and-record protocol of scaling/launch/backend.py, as slurm does.

A dry run says where the project lives in the pods and the commit the image should be built from (this checkout's
HEAD, scaling/launch/install.py), and runs the compile-for-the-slice check a submit runs first (SlicePreflight).
"""

from __future__ import annotations

import shlex

from scaling.launch import install
from scaling.launch.backend import GONE, LIVE, UNKNOWN, JobState, QueueBackend, SlicePreflight, remote_command, run_tool


class GkeBackend(SlicePreflight, QueueBackend):
  name = 'gke'
  tools = ('xpk',)
  tool_hint = 'Install xpk (`pip install xpk`) and gcloud, and create the cluster with `xpk cluster create`.'
  poll_s = 30.0
  gone_grace_s = 300.0   # kueue lists a new workload a little after `xpk workload create` returns

  required_resources = {'cluster': 'my-cluster', 'tpu_type': 'v5litepod-16', 'docker_image': 'gcr.io/PROJECT/scaling'}

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

  def dry_run(self, sweep) -> str:
    src = install.repo_source(self.resources)
    repo = self.resources.get('remote_repo', '/app')
    build = (f'git clone {src.url or "<repo_url>"} {shlex.quote(repo)} && cd {shlex.quote(repo)} && git checkout '
             f'{src.commit or "<commit>"} && pip install -e . "jax[tpu]"')
    where = [f'# project in the pods: {repo} (resources remote_repo) in image {self.resources["docker_image"]}, '
             f'which must hold this project at commit {src.commit or "<commit>"} with jax[tpu]; e.g. its '
             f'Dockerfile: RUN {build}']
    return '\n'.join(where + [f'# warning: {n}' for n in src.notes] + [super().dry_run(sweep)])

  def remote_command(self, run, rd) -> str:
    return remote_command(self.resources, run, rd, '/app')

  def submit_commands(self, run, rd, sweep):
    r = self.resources
    attempt = self._next_attempt(rd)
    cmd = (['xpk', 'workload', 'create'] + self._loc()
           + [f'--workload={self.workload_name(run, attempt)}', f'--tpu-type={r["tpu_type"]}',
              f'--num-slices={int(r.get("num_slices", 1))}', f'--docker-image={r["docker_image"]}',
              f'--max-restarts={int(r.get("max_restarts", 3))}'])
    if r.get('priority'):
      cmd.append(f'--priority={r["priority"]}')
    cmd.append(f'--command={self.remote_command(run, rd)}')
    return [cmd]

  def job_id_from_output(self, out, run, rd, sweep):
    return self.workload_name(run, self._next_attempt(rd))

  @staticmethod
  def _next_attempt(rd) -> int:
    rec = rd.load()
    return len(rec.attempts) + 1 if rec is not None else 1

  def status_command(self, name: str) -> list[str]:
    return ['xpk', 'workload', 'list'] + self._loc() + [f'--wait-for-job-completion={name}', '--timeout=0']

  def job_states(self, job_ids):
    out = {}
    for name in job_ids:
      cmd = self.status_command(name)
      r = run_tool(cmd, self.query_timeout_s)
      if r.rc == 124 and not r.error:
        out[name] = JobState(LIVE)
      elif r.rc == 0 and not r.error:
        out[name] = JobState('done', 0)
      elif r.rc == 125:
        out[name] = JobState('failed')
      elif r.rc == 1 and 'does not exist' in (r.out + r.err):
        out[name] = JobState(GONE)
      else:
        out[name] = JobState(UNKNOWN, why=r.why(cmd))
    return out
