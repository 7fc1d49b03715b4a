"""The `slurm` backend: one batch job per run, submitted with sbatch, tracked with squeue/sacct.

The batch script (RUN_DIR/job.sbatch, text from `batch_script`) asks for the
sweep's resources (#SBATCH --nodes, --ntasks-per-node, --gpus-per-node,
--cpus-per-task, --mem, --time, --partition, --account, --qos), starts one
training process per node or per GPU with `srun`, and handles preemption:

  --requeue --signal=TERM@120     SLURM sends SIGTERM to the training tasks 120 s
                                  before the time limit; training saves a
                                  checkpoint and exits 75 (srun passes it on).
                                  SIGTERM to the batch shell itself is trapped
                                  and sent on to the tasks with `scancel -s TERM`
                                  (never to srun, which would SIGKILL its tasks);
  exit 75 -> scontrol requeue     the job goes back to the queue under the same id
                                  and resumes from the checkpoint in RUN_DIR.
  Preemption with PreemptMode=REQUEUE requeues the job by itself; training
  resumes from its latest checkpoint either way.

A cooldown branch is submitted with `--dependency=afterok:<parent job>
--kill-on-invalid-dep=yes` while its parent's checkpoint at the fork step does
not exist yet (see `dependency_args`).

The script also writes the exit code to RUN_DIR/slurm-<jobid>.rc (its only file
besides slurm-<jobid>.out), so outcomes are known without accounting.

Submission and tracking follow the queue protocol of scaling/launch/backend.py
(`QueueBackend`, shared with gke). A job's state comes from squeue (which knows
new and running jobs) and sacct (which remembers ended ones); a query that fails
or hangs past `query_timeout_s` makes the job "unknown", never "gone": it is
asked about again and not resubmitted.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys

from scaling.base.layout import EXIT_PREEMPTED, JOB_SBATCH, slurm_exit_code, slurm_output
from scaling.launch import rundir as rd_lib
from scaling.launch.backend import GONE, LIVE, UNKNOWN, JobState, QueueBackend, run_tool
from scaling.launch.rundir import RunDir
from scaling.launch.sweep import LaunchError

# Job states in which a job still holds or waits for resources.
LIVE_STATES = {'PENDING', 'RUNNING', 'REQUEUED', 'REQUEUE_FED', 'REQUEUE_HOLD', 'RESIZING', 'SUSPENDED',
               'CONFIGURING', 'COMPLETING', 'SIGNALING', 'STAGE_OUT', 'STOPPED', 'RESV_DEL_HOLD'}
INTERRUPTED_STATES = {'CANCELLED', 'PREEMPTED', 'TIMEOUT', 'NODE_FAIL', 'BOOT_FAIL', 'DEADLINE', 'REVOKED'}
FAILED_STATES = {'FAILED', 'OUT_OF_MEMORY'}
QUERY_TIMEOUT_S = 60.0


class SlurmBackend(QueueBackend):
  name = 'slurm'
  tools = ('sbatch', 'squeue')
  supports_dependencies = True
  tool_hint = ('Run on a SLURM login node, or use --backend local. For a one-node test cluster on Debian: '
               '`sudo bash ci/local-slurm/start.sh && source ${SLURM_LOCAL_DIR:-/tmp/local-slurm}/env.sh`.')

  def batch_script(self, run, rd: RunDir, sweep) -> str:
    r = self.resources
    nodes = int(r.get('nodes', 1))
    gpus = int(r.get('gpus_per_node', 0))
    procs = int(r.get('processes_per_node', gpus or 1))
    sig = int(r.get('signal_seconds', 120))
    name = f'scaling-{sweep.name}-{run.hash[:8]}'
    lines = ['#!/bin/bash',
             f'#SBATCH --job-name={name}',
             f'#SBATCH --output={rd.path}/{slurm_output()}',
             '#SBATCH --open-mode=append',
             f'#SBATCH --nodes={nodes}',
             f'#SBATCH --ntasks-per-node={procs}',
             f'#SBATCH --cpus-per-task={int(r.get("cpus_per_task", 1))}']
    if gpus:
      lines.append(f'#SBATCH --gpus-per-node={gpus}')
    for key, flag in (('mem', 'mem'), ('time', 'time'), ('partition', 'partition'), ('account', 'account'),
                      ('qos', 'qos'), ('constraint', 'constraint')):
      if r.get(key):
        lines.append(f'#SBATCH --{flag}={r[key]}')
    lines += ['#SBATCH --requeue', f'#SBATCH --signal=TERM@{sig}']
    lines += [f'#SBATCH {a}' for a in r.get('sbatch_args', [])]
    cmd = rd_lib.train_argv(rd_lib.train_prefix(), run.spec, rd.path, run.flag_list())
    srun = ['srun', f'--nodes={nodes}', f'--ntasks-per-node={procs}', '--kill-on-bad-exit=1'] + cmd
    setup = r.get('setup', '')
    rc_file = shlex.quote(str(rd.path)) + '/' + slurm_exit_code('"$SLURM_JOB_ID"')
    lines += [
        '',
        f'# run {run.hash}: {run.label}',
        f'# written by `scaling sweep --backend slurm` for {sweep.path}',
        'set -u',
        f'cd {shlex.quote(os.getcwd())}',
        *([setup] if setup else []),
        'echo "[scaling] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $(hostname) at $(date -Is)"',
        '# SIGTERM to this shell (e.g. scancel -s TERM -b) -> SIGTERM to the training tasks, which save a',
        '# checkpoint and exit 75. Not to srun: srun turns SIGTERM into SIGKILL for its tasks.',
        'trap \'echo "[scaling] SIGTERM: signalling the training tasks"; scancel --signal=TERM "$SLURM_JOB_ID"\' TERM',
        f'{shlex.join(srun)} &',
        'pid=$!',
        'wait "$pid"; rc=$?',
        'while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done  # wait returns early on a trapped signal',
        f'echo "$rc" > {rc_file}',
        'echo "[scaling] training exited with $rc at $(date -Is)"',
        f'if [ "$rc" -eq {EXIT_PREEMPTED} ]; then',
        '  echo "[scaling] preempted: requeueing job $SLURM_JOB_ID (resumes from its checkpoint)"',
        '  scontrol requeue "$SLURM_JOB_ID"',
        'fi',
        'exit "$rc"',
    ]
    return '\n'.join(lines) + '\n'

  def files_to_write(self, run, rd, sweep):
    return {JOB_SBATCH: self.batch_script(run, rd, sweep)}

  def submit_commands(self, run, rd, sweep):
    return [['sbatch', '--parsable', *self.dependency_args(run), str(rd.path / JOB_SBATCH)]]

  def dependency_args(self, run) -> list[str]:
    """A cooldown branch whose parent's checkpoint at the fork step is not there yet waits for the parent's
    job: afterok (the parent finished, so every checkpoint it keeps, the fork step's among them, exists;
    simpler than watching for the one step, and a branch of a failed parent is cancelled by SLURM
    with --kill-on-invalid-dep instead of pending forever). No dependency once the checkpoint exists."""
    gate, job = self.fork_gate(run)
    if gate == 'ready':
      return []
    job = job or f'<job of run {run.parent}>'   # a dry run before the parent was submitted
    return [f'--dependency=afterok:{job}', '--kill-on-invalid-dep=yes']

  def job_id_from_output(self, out, run, rd, sweep):
    job_id = out.strip().splitlines()[-1].split(';')[0].strip() if out.strip() else ''
    if not job_id.isdigit():
      raise LaunchError(f'sbatch --parsable printed {out!r}, not a job id')
    return job_id

  def exit_code_file(self, rd, job_id):
    try:
      return int((rd.path / slurm_exit_code(job_id)).read_text().strip())
    except (FileNotFoundError, ValueError):
      return None

  def job_states(self, job_ids):
    return slurm_job_states(job_ids, self.query_timeout_s)


def _classify(state: str, exit_code: int | None) -> str:
  state = state.split()[0].rstrip('+') if state else ''
  if state in LIVE_STATES:
    return 'live'
  if state == 'COMPLETED':
    return 'done' if not exit_code else 'failed'
  if state in INTERRUPTED_STATES:
    return 'interrupted'
  if state in FAILED_STATES:
    return 'failed'
  return 'interrupted'


def _exit_code(text: str) -> int | None:
  try:
    return int(text.split(':')[0])
  except (ValueError, IndexError):
    return None


def _sacct(ids: list[str], timeout_s: float) -> tuple[dict[str, JobState], str]:
  """sacct's view of the jobs, and '' or why the query failed (no sacct or no accounting is no failure)."""
  if not shutil.which('sacct'):
    return {}, ''
  cmd = ['sacct', '-n', '-P', '-X', '-j', ','.join(ids), '-o', 'JobIDRaw,State,ExitCode']
  r = run_tool(cmd, timeout_s)
  if not r.ok:
    if r.rc is not None and 'accounting storage is disabled' in r.err.lower():
      return {}, ''
    return {}, r.why(cmd)
  out = {}
  for line in r.out.splitlines():
    parts = line.split('|')
    if len(parts) >= 3 and parts[0] in ids:
      code = _exit_code(parts[2])
      out[parts[0]] = JobState(_classify(parts[1], code), code)
  return out, ''


def _squeue(job_id: str, timeout_s: float) -> tuple[str, str]:
  """(squeue's state of the job or '' when squeue does not know it, '' or why the query failed)."""
  cmd = ['squeue', '-h', '-j', str(job_id), '-o', '%T']
  r = run_tool(cmd, timeout_s)
  if r.ok:
    return r.out.strip(), ''
  if r.rc is not None and 'invalid job id' in r.err.lower():
    return '', ''          # slurmctld answered: no such job (any more)
  return '', r.why(cmd)


def slurm_job_states(job_ids: list[str], timeout_s: float = QUERY_TIMEOUT_S) -> dict[str, JobState]:
  """Job id -> JobState for every id: squeue first (authoritative for jobs it shows), then sacct.

  A job neither shows is GONE only when both answered; when either query failed it is UNKNOWN.
  """
  ids = sorted({str(i) for i in job_ids if i})
  if not ids:
    return {}
  acct, acct_err = _sacct(ids, timeout_s)
  out = {}
  for i in ids:
    st, q_err = _squeue(i, timeout_s)
    if st:
      cls = _classify(st, None)
      out[i] = JobState(cls, acct[i].exit_code if i in acct else None) if cls == LIVE or i not in acct else acct[i]
    elif q_err and not (i in acct and acct[i].state == LIVE):
      out[i] = JobState(UNKNOWN, why=q_err)
    elif i in acct:
      out[i] = acct[i]
    elif acct_err:
      out[i] = JobState(UNKNOWN, why=acct_err)
    else:
      out[i] = JobState(GONE)
  return out


def squeue_state(job_id: str, timeout_s: float = 10.0) -> str | None:
  """The job's state as squeue shows it (e.g. 'PENDING', 'RUNNING'), or None when squeue does not know it."""
  if not shutil.which('squeue'):
    return None
  st, _ = _squeue(job_id, timeout_s)
  return st or None


def main_debug():  # pragma: no cover - manual helper: python -m scaling.launch.slurm JOBID...
  print(json.dumps({k: v._asdict() for k, v in slurm_job_states(sys.argv[1:]).items()}, indent=1))


if __name__ == '__main__':  # pragma: no cover
  main_debug()
