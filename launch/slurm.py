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

The script also writes the exit code to RUN_DIR/slurm-<jobid>.rc (its only file
besides slurm-<jobid>.out), so outcomes are known without accounting.

Submission protocol (`QueueBackend`, shared with gke): for each run, take the
run's flock (waiting up to 60 s for another launcher), re-read run.json, and
submit only if it is not done, its recorded job is not alive in squeue/sacct,
and its failures do not exceed --max-retries; the job id goes into run.json
before the lock is released. Two launchers started together therefore submit
each run once. `--wait` polls until none of the sweep's jobs is alive, records
their outcomes, resubmits the retryable ones and waits again.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from launch import rundir as rd_lib
from launch.rundir import RunDir
from launch.sweep import LaunchError

# Job states in which a job still holds or waits for resources.
LIVE_STATES = {'PENDING', 'RUNNING', 'REQUEUED', 'REQUEUE_FED', 'REQUEUE_HOLD', 'RESIZING', 'SUSPENDED',
               'CONFIGURING', 'COMPLETING', 'SIGNALING', 'STAGE_OUT', 'STOPPED', 'RESV_DEL_HOLD'}
INTERRUPTED_STATES = {'CANCELLED', 'PREEMPTED', 'TIMEOUT', 'NODE_FAIL', 'BOOT_FAIL', 'DEADLINE', 'REVOKED'}
FAILED_STATES = {'FAILED', 'OUT_OF_MEMORY'}


def missing_tool_error(tool: str, backend: str, hint: str) -> LaunchError:
  return LaunchError(f'`{tool}` is not on PATH, and the {backend} backend needs it. {hint}')


class QueueBackend:
  """Submits runs to a queue and tracks them by job id (slurm, gke)."""
  name = 'queue'
  tools: tuple[str, ...] = ()
  tool_hint = ''
  poll_s = 2.0
  lock_timeout_s = 60.0

  def __init__(self, root, resources: dict | None = None, *, max_retries: int = 2, log=print, **unused):
    del unused
    if max_retries < 0:
      raise ValueError(f'--max-retries must be >= 0, got {max_retries}')
    self.root = root
    self.resources = dict(resources or {})
    self.max_retries = max_retries
    self.log = log

  def check_tools(self) -> None:
    for t in self.tools:
      if shutil.which(t) is None:
        raise missing_tool_error(t, self.name, self.tool_hint)

  # ---- to implement ----------------------------------------------------------------------------
  def submit_commands(self, run, rd: RunDir, sweep) -> list[list[str]]:
    raise NotImplementedError

  def files_to_write(self, run, rd: RunDir, sweep) -> dict[str, str]:
    """Files (name in the run dir -> text) written before submitting."""
    return {}

  def job_id_from_output(self, out: str, run, rd: RunDir, sweep) -> str:
    raise NotImplementedError

  def job_states(self, job_ids: list[str]) -> dict[str, tuple[str, int | None]]:
    """job id -> ('live' | 'done' | 'failed' | 'interrupted', exit code or None); unknown ids absent."""
    raise NotImplementedError

  # ---- shared logic ------------------------------------------------------------------------------
  def dry_run(self, sweep) -> str:
    out = []
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      out.append(f'# run {run.hash} ({run.label}) -> {rd.path}')
      for name, text in self.files_to_write(run, rd, sweep).items():
        out.append(f'# --- {rd.path / name} ---')
        out.append(text.rstrip('\n'))
        out.append('# ---')
      out += [shlex.join(c) for c in self.submit_commands(run, rd, sweep)]
    return '\n'.join(out)

  def _reconcile(self, rd: RunDir, rec: dict, states: dict) -> bool:
    """Records the outcome of the last attempt if its job has ended; returns True if it is still alive."""
    a = rd_lib.last_attempt(rec)
    if not a or 'job_id' not in a or a.get('outcome'):
      return False
    st = states.get(a['job_id'])
    if st is not None and st[0] == 'live':
      return True
    code = self.exit_code_file(rd, a['job_id'])
    if rd.summary() is not None:
      outcome = 'done'
    elif code is not None:
      outcome = rd_lib.outcome_of_exit(code, False)
    elif st is not None:
      outcome = st[0] if st[0] != 'done' else 'failed'  # ended "successfully" without a summary
      code = st[1]
    else:
      outcome = 'interrupted'   # the queue has forgotten the job and it left no exit code
    a.update(end=rd_lib.now(), exit_code=code, outcome=outcome)
    if st is not None:
      a['queue_state'] = st[0]
    rec['state'] = outcome
    rd.write(rec)
    return False

  def exit_code_file(self, rd: RunDir, job_id: str) -> int | None:
    del rd, job_id
    return None

  def submit(self, sweep, wait: bool = False) -> int:
    for run in sweep.runs:
      rd_lib.ensure_run_dir(RunDir(self.root, run.hash), run, sweep)
    for _ in range(self.max_retries + 3):   # bounded: each round needs a failure or a lost requeue
      self._submit_round(sweep)
      if not wait:
        return 0
      self.wait_all(sweep)
      if not self._any_retryable(sweep):
        break
    return self._final_report(sweep)

  def _job_ids(self, sweep) -> list[str]:
    ids = []
    for run in sweep.runs:
      rec = RunDir(self.root, run.hash).read() or {}
      a = rd_lib.last_attempt(rec)
      if a and a.get('job_id') and not a.get('outcome'):
        ids.append(a['job_id'])
    return ids

  def _submit_round(self, sweep) -> int:
    states = self.job_states(self._job_ids(sweep))
    n_sub = 0
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      with rd.locked(timeout=self.lock_timeout_s) as fd:
        if fd is None:
          self.log(f'[sweep] run {run.hash} ({run.label}): locked by another launcher for '
                   f'{self.lock_timeout_s:.0f} s: skipped')
          continue
        rec = rd.read()
        if rd_lib.close_dangling_attempt(rec, done=rd.summary() is not None):
          rd.write(rec)
        a = rd_lib.last_attempt(rec)
        if a and a.get('job_id') and not a.get('outcome') and a['job_id'] not in states:
          states.update(self.job_states([a['job_id']]))   # submitted by a concurrent launcher just now
        if self._reconcile(rd, rec, states):
          self.log(f'[sweep] run {run.hash} ({run.label}): job {a["job_id"]} is queued/running: skipped')
          continue
        if rd.summary() is not None:
          if rec['state'] != 'done':
            rec['state'] = 'done'
            rd.write(rec)
          self.log(f'[sweep] run {run.hash} ({run.label}) already done: skipped')
          continue
        if rd_lib.failures(rec) > self.max_retries:
          self.log(f'[sweep] run {run.hash} ({run.label}) failed {rd_lib.failures(rec)} time(s), more than '
                   f'--max-retries={self.max_retries}: skipped (raise --max-retries to try again)')
          continue
        job_id = self._submit_one(run, rd, rec, sweep)
        n_sub += 1
        self.log(f'[sweep] submitted run {run.hash} ({run.label}) attempt {len(rec["attempts"])}: job {job_id}')
    return n_sub

  def _submit_one(self, run, rd: RunDir, rec: dict, sweep) -> str:
    for name, text in self.files_to_write(run, rd, sweep).items():
      tmp = rd.path / f'.{name}.tmp'
      tmp.write_text(text)
      os.replace(tmp, rd.path / name)
    out = ''
    for cmd in self.submit_commands(run, rd, sweep):
      p = subprocess.run(cmd, capture_output=True, text=True)
      if p.returncode != 0:
        raise LaunchError(f'{shlex.join(cmd)} failed (exit {p.returncode}): {p.stderr.strip() or p.stdout.strip()}')
      out = p.stdout
    job_id = self.job_id_from_output(out, run, rd, sweep)
    rec['attempts'].append({'n': len(rec['attempts']) + 1, 'backend': self.name, 'start': rd_lib.now(),
                            'job_id': job_id})
    rec['state'] = 'submitted'
    rd.write(rec)
    return job_id

  def wait_all(self, sweep, timeout_s: float | None = None) -> None:
    """Blocks until no job of the sweep is alive, then records their outcomes."""
    t0 = time.monotonic()
    last = 0.0
    while True:
      ids = self._job_ids(sweep)
      states = self.job_states(ids)
      live = [i for i in ids if states.get(i, ('',))[0] == 'live']
      if not live:
        break
      if time.monotonic() - last > 30:
        last = time.monotonic()
        self.log(f'[sweep] waiting for {len(live)} job(s): {" ".join(live)}')
      if timeout_s is not None and time.monotonic() - t0 > timeout_s:
        raise TimeoutError(f'jobs {live} still alive after {timeout_s} s')
      time.sleep(self.poll_s)
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      with rd.locked(timeout=self.lock_timeout_s) as fd:
        if fd is not None:
          self._reconcile(rd, rd.read(), states)

  def _any_retryable(self, sweep) -> bool:
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      rec = rd.read()
      # 'interrupted' (e.g. scancel) waits for the next explicit submission instead.
      if rd.summary() is None and rec['state'] in ('failed', 'preempted', 'pending'):
        if rd_lib.failures(rec) <= self.max_retries:
          return True
    return False

  def _final_report(self, sweep) -> int:
    states = [rd_lib.effective_state(RunDir(self.root, r.hash), RunDir(self.root, r.hash).read())
              for r in sweep.runs]
    counts = {s: states.count(s) for s in sorted(set(states))}
    self.log(f'[sweep] finished: {counts} of {len(states)} runs (root {self.root})')
    return 0 if all(s == 'done' for s in states) else 1


class SlurmBackend(QueueBackend):
  name = 'slurm'
  tools = ('sbatch', 'squeue')
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
             f'#SBATCH --output={rd.path}/slurm-%j.out',
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
        f'echo "$rc" > {shlex.quote(str(rd.path))}/slurm-"$SLURM_JOB_ID".rc',
        'echo "[scaling] training exited with $rc at $(date -Is)"',
        f'if [ "$rc" -eq {rd_lib.EXIT_PREEMPTED} ]; then',
        '  echo "[scaling] preempted: requeueing job $SLURM_JOB_ID (resumes from its checkpoint)"',
        '  scontrol requeue "$SLURM_JOB_ID"',
        'fi',
        'exit "$rc"',
    ]
    return '\n'.join(lines) + '\n'

  def files_to_write(self, run, rd, sweep):
    return {'job.sbatch': self.batch_script(run, rd, sweep)}

  def submit_commands(self, run, rd, sweep):
    return [['sbatch', '--parsable', str(rd.path / 'job.sbatch')]]

  def job_id_from_output(self, out, run, rd, sweep):
    job_id = out.strip().splitlines()[-1].split(';')[0].strip() if out.strip() else ''
    if not job_id.isdigit():
      raise LaunchError(f'sbatch --parsable printed {out!r}, not a job id')
    return job_id

  def exit_code_file(self, rd, job_id):
    try:
      return int((rd.path / f'slurm-{job_id}.rc').read_text().strip())
    except (FileNotFoundError, ValueError):
      return None

  def job_states(self, job_ids):
    return slurm_job_states(job_ids)


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


def slurm_job_states(job_ids: list[str]) -> dict[str, tuple[str, int | None]]:
  """Job id -> (live/done/failed/interrupted, exit code): squeue first (knows new jobs), then sacct."""
  ids = sorted({str(i) for i in job_ids if i})
  if not ids:
    return {}
  out: dict[str, tuple[str, int | None]] = {}
  raw: dict[str, str] = {}
  if shutil.which('sacct'):
    p = subprocess.run(['sacct', '-n', '-P', '-X', '-j', ','.join(ids), '-o', 'JobIDRaw,State,ExitCode'],
                       capture_output=True, text=True)
    if p.returncode == 0:
      for line in p.stdout.splitlines():
        parts = line.split('|')
        if len(parts) >= 3 and parts[0] in ids:
          raw[parts[0]] = parts[1]
          out[parts[0]] = (_classify(parts[1], _exit_code(parts[2])), _exit_code(parts[2]))
  for i in ids:   # squeue is authoritative for jobs it still shows (sacct lags behind slurmctld)
    p = subprocess.run(['squeue', '-h', '-j', i, '-o', '%T'], capture_output=True, text=True)
    st = p.stdout.strip()
    if p.returncode == 0 and st:
      cls = _classify(st, None)
      if cls == 'live' or i not in out:
        out[i] = (cls, out.get(i, (None, None))[1])
  return out


def squeue_state(job_id: str) -> str | None:
  """The job's state as squeue shows it (e.g. 'PENDING', 'RUNNING'), or None when squeue does not know it."""
  if not shutil.which('squeue'):
    return None
  p = subprocess.run(['squeue', '-h', '-j', str(job_id), '-o', '%T'], capture_output=True, text=True)
  st = p.stdout.strip()
  return st if p.returncode == 0 and st else None


def main_debug():  # pragma: no cover - manual helper: python -m launch.slurm JOBID...
  print(json.dumps(slurm_job_states(sys.argv[1:]), indent=1))


if __name__ == '__main__':  # pragma: no cover
  main_debug()
