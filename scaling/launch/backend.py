"""What every backend shares: the base class, the queue protocol (slurm, gke), and tool calls with a timeout.

  Backend            root, resources, --max-retries, the tool check, `preflight`, and the one
                     rule for runs not to start again (`skip_finished`: done, or gave up)
  LocalBackend       (scaling/launch/local.py) runs as subprocesses; TpuVmBackend over ssh on TPU VMs
  QueueBackend       submits one job per run and tracks it by job id (SlurmBackend, GkeBackend)

Queue protocol. For each run, take the run's flock (waiting up to
`lock_timeout_s` for another launcher), re-read run.json, and submit only if it
is not done, its recorded job is not alive, and its failures do not exceed
--max-retries; the job id goes into run.json before the lock is released, so two
launchers started together submit each run once. `--wait` polls until none of
the sweep's jobs is alive, records their outcomes, resubmits the retryable ones
and waits again.

Cooldown branches (scaling/launch/sweep.py branches) need their parent's checkpoint at
the fork step. A queue that orders jobs (slurm: `supports_dependencies`) gets a
branch submitted behind its parent's open job; otherwise (gke) a branch is
submitted in the first round after that checkpoint exists (`fork_gate`), and
`--wait` keeps rounding until it has been.

A queue query answers, for every job id asked, one `JobState`: live, an ended
state (done, failed, interrupted), `gone` (the queue answered and no longer
knows the job), or `unknown` (the query failed, hung past its timeout, or the
job is too new to be listed). Unknown is never read as gone: such a job is
asked about again every `poll_s`, its run is neither recorded as ended nor
resubmitted, and after `unknown_patience_s` without an answer the launcher stops
with `QueueQueryError` naming the jobs, still without resubmitting them.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import NamedTuple

from scaling.base.files import atomic_write_text
from scaling.launch import record as rec_lib
from scaling.launch.record import Attempt, RunRecord
from scaling.launch.rundir import RunDir, effective_state, ensure_run_dir, fork_ready, train_argv
from scaling.launch.sweep import LaunchError

# JobState.state values besides the attempt outcomes 'done', 'failed', 'interrupted'.
LIVE = 'live'          # queued, running, requeued: holds or waits for resources
GONE = 'gone'          # the queue answered and does not know the job (any more)
UNKNOWN = 'unknown'    # no answer: the query failed or timed out; ask again, never resubmit


class QueueQueryError(LaunchError):
  """The queue did not say what became of a job within the patience: nothing was resubmitted."""


def missing_tool_error(tool: str, backend: str, hint: str) -> LaunchError:
  return LaunchError(f'`{tool}` is not on PATH, and the {backend} backend needs it. {hint}')


# --------------------------------------------------------------------------------------------------
# Running a tool (squeue, sacct, sbatch, xpk, gcloud) with a timeout.


class ToolResult(NamedTuple):
  rc: int | None      # exit status; None when it did not finish (timeout) or did not start
  out: str
  err: str
  error: str          # '' when the command ran to its end; else why not

  @property
  def ok(self) -> bool:
    return self.rc == 0 and not self.error

  def why(self, cmd: list[str]) -> str:
    """One line for messages: the command and what went wrong with it."""
    what = self.error or f'exit {self.rc}: {(self.err.strip() or self.out.strip())[-300:]}'
    return f'`{shlex.join(cmd)}`: {what}'


def run_tool(cmd: list[str], timeout_s: float) -> ToolResult:
  """Runs cmd to its end or for at most timeout_s (then kills its whole process group); never raises for it."""
  try:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                         start_new_session=True)
  except OSError as e:
    return ToolResult(None, '', '', f'could not start: {e}')
  try:
    out, err = p.communicate(timeout=timeout_s)
  except subprocess.TimeoutExpired:
    _kill_group(p)
    try:
      out, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:   # a grandchild left the group and holds the pipes
      out, err = '', ''
    return ToolResult(None, out or '', err or '', f'no answer within {timeout_s:g} s (killed)')
  except BaseException:
    _kill_group(p)
    raise
  return ToolResult(p.returncode, out, err, '')


def _kill_group(p: subprocess.Popen) -> None:
  try:
    os.killpg(p.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass


def remote_command(resources: dict, run, rd: RunDir, default_repo: str) -> str:
  """The shell line a worker runs (tpu-vm over ssh, gke in the pod): cd to the repo, setup, train.

  The workdir is REMOTE_ROOT/runs/<hash> (resources['remote_root'], default the local
  root) and the config spec is relative to the repo, so it names the worker's checkout.
  """
  repo = resources.get('remote_repo', default_repo)
  remote_root = resources.get('remote_root') or str(rd.root)
  train = shlex.split(resources.get('train_cmd', 'python3 -m scaling train'))
  argv = train_argv(train, run.spec_relative(), f'{remote_root}/runs/{run.hash}', run.flag_list())
  cd = f'cd {repo}' if repo.startswith('~') else f'cd {shlex.quote(repo)}'   # ~ expands on the worker
  return ' && '.join([cd] + ([resources['setup']] if resources.get('setup') else []) + [shlex.join(argv)])


# --------------------------------------------------------------------------------------------------
# The base class.


class Backend:
  """Where runs execute. Subclasses implement dry_run() and submit(); see the module docstring."""
  name = 'backend'
  tools: tuple[str, ...] = ()
  tool_hint = ''
  required_resources: dict[str, str] = {}   # resource keys this backend cannot do without -> an example value

  def __init__(self, root, resources: dict | None = None, *, max_retries: int = 2, log=print,
               placeholders: bool = False):
    if max_retries < 0:
      raise ValueError(f'--max-retries must be >= 0, got {max_retries}')
    self.root = root
    self.resources = dict(resources or {})
    self.max_retries = max_retries
    self.log = log
    self.placeholders = self._require_resources(placeholders)

  def _require_resources(self, placeholders: bool) -> list[str]:
    """Missing required resources: a LaunchError, or (for a dry run) '<key>' placeholders, listed."""
    missing = [k for k in self.required_resources if not self.resources.get(k)]
    if missing and not placeholders:
      flags = ' '.join(f'--resource {k}={self.required_resources[k]}' for k in missing)
      raise LaunchError(f"the {self.name} backend needs {', '.join(f'resources[{k!r}]' for k in missing)}: set "
                        f"{'it' if len(missing) == 1 else 'them'} in the sweep's get_resources() or on the command "
                        f"line ({flags})")
    for k in missing:
      self.resources[k] = f'<{k}>'
    return missing

  def check_tools(self) -> None:
    """The tools this backend calls are on PATH (checked before anything is written)."""
    for t in self.tools:
      if shutil.which(t) is None:
        raise missing_tool_error(t, self.name, self.tool_hint)

  def preflight(self, sweep) -> None:
    """Checks run after check_tools and before anything is written, reserved or submitted; none by default.

    The place for checks that need the backend's target, e.g. compiling each run's
    training step for the TPU topology before a VM or a slice is reserved. Raise
    LaunchError naming the run and the fix.
    """
    del sweep

  def dry_run(self, sweep) -> str:
    raise NotImplementedError

  def submit(self, sweep, wait: bool = False) -> int:
    raise NotImplementedError

  def ensure_run_dirs(self, sweep) -> None:
    for run in sweep.runs:
      ensure_run_dir(RunDir(self.root, run.hash), run, sweep)

  def skip_finished(self, run, rd: RunDir, rec: RunRecord) -> str | None:
    """The one rule for a run not to start again; the caller holds the run's lock.

    'done': summary.json exists (the record is set to done if it was not);
    'gave_up': more failed attempts than --max-retries. None: start or submit it.
    """
    if rd.summary() is not None:
      if rec.mark_done():
        rd.write(rec)
      self.log(f'[sweep] run {run.hash} ({run.label}) already done: skipped')
      return 'done'
    if rec.failures > self.max_retries:
      self.log(f'[sweep] run {run.hash} ({run.label}) failed {rec.failures} time(s), more than '
               f'--max-retries={self.max_retries}: skipped (raise --max-retries to try again)')
      return 'gave_up'
    return None


# --------------------------------------------------------------------------------------------------
# Queue backends.


AOT_OFF = ('0', 'false', 'no', 'off')


def fit_check_off(resources: dict) -> str:
  """Why the compile-for-the-slice check does nothing ('' when it runs), judged without jax the way
  scaling/train/aot_cli.py sweep_fit_problems judges it: resources aot_check (else $SCALING_AOT_CHECK) is one of
  AOT_OFF, or libtpu (which compiles for a TPU here) is not installed."""
  if 'aot_check' in resources:
    where, flag = 'resources aot_check', str(resources['aot_check'])
  else:
    where, flag = 'SCALING_AOT_CHECK', os.environ.get('SCALING_AOT_CHECK', '1')
  if flag.lower() in AOT_OFF:
    return f'{where}={flag}'
  if importlib.util.find_spec('libtpu') is None:
    return "libtpu is not installed here; pip install -e '.[tpu-aot]' turns the check on"
  return ''


def _stderr(*a) -> None:
  print(*a, file=sys.stderr, flush=True)


class SlicePreflight:
  """For the TPU backends (tpu-vm, gke): each run's step is compiled for the slice before anything is
  reserved. The launcher never imports jax: the check is handed in as `fit_check(sweep, resources, log) ->
  problems` by the command that builds the backend (`scaling sweep` hands in scaling/train/aot_cli.py's
  sweep_fit_problems, which is on when libtpu is installed; resource aot_check=0 or SCALING_AOT_CHECK=0 skips).
  A dry run runs the same check and prints its verdict for every run above the plan (`fit_verdicts`), so a
  plan the submit would refuse does not look clean."""
  fit_check = None

  def dry_run(self, sweep) -> str:
    return '\n'.join(self.fit_verdicts(sweep) + [super().dry_run(sweep)])

  def fit_verdicts(self, sweep) -> list[str]:
    """The check a submit runs first, run now: '#' lines with its verdict on each run (its progress: stderr)."""
    tpu = self.resources.get('tpu_type')
    if self.fit_check is None:
      return ['# fit check: none was handed to this launcher (`scaling sweep` hands one in), so a submit would '
              'not check that the runs fit either']
    if 'tpu_type' in getattr(self, 'placeholders', ()):
      return ['# fit check: not run, resources tpu_type is a placeholder; set it and a dry run (and a submit) '
              'compiles every run for it']
    try:
      problems = list(self.fit_check(sweep, self.resources, log=_stderr))
    except Exception as e:  # noqa: BLE001 -- shown as the verdict: the submit would stop on it the same way
      return [f'# fit check on {tpu}: FAILED ({type(e).__name__}: {e}); a submit would stop there, before '
              f'reserving anything']
    off = '' if problems else fit_check_off(self.resources)
    if off:
      return [f'# fit check on {tpu}: off ({off}): nothing compiled, and a submit would not check either']
    lines, matched = [], set()
    for run in sweep.runs:
      key = f'{run.label or run.hash}: '
      mine = [p for p in problems if p.startswith(key)]
      matched.update(mine)
      verdict = 'DOES NOT FIT: ' + '; '.join(p[len(key):] for p in mine) if mine else 'fits'
      lines.append(f'#   run {run.hash} ({run.label}): {verdict}')
    lines += [f'#   {p}' for p in problems if p not in matched]
    head = (f'# fit check on {tpu} (each run compiled for the slice, as a submit does first): '
            + (f'{len(problems)} problem(s): a submit would refuse this sweep and reserve nothing' if problems
               else f'all {len(sweep.runs)} run(s) fit'))
    return [head] + lines

  def preflight(self, sweep) -> None:
    if self.fit_check is None:
      self.log('[sweep] no compile-for-the-slice check was handed to this launcher (`scaling sweep` hands one '
               'in): the runs are not checked to fit before the slice is reserved')
      return
    problems = self.fit_check(sweep, self.resources, log=self.log)
    if not problems and (off := fit_check_off(self.resources)):
      self.log(f'[sweep] the compile-for-the-slice check is off ({off}): the runs are not checked to fit')
    if problems:
      raise LaunchError(f'{len(problems)} run(s) do not fit on {self.resources["tpu_type"]}; nothing was '
                        f'reserved:\n  ' + '\n  '.join(problems))


class JobState(NamedTuple):
  state: str                   # LIVE, 'done', 'failed', 'interrupted', GONE or UNKNOWN
  exit_code: int | None = None
  why: str = ''                # for UNKNOWN: the failed query


class QueueBackend(Backend):
  """Submits runs to a queue and tracks them by job id (slurm, gke); the protocol is in the module docstring."""
  name = 'queue'
  poll_s = 2.0                 # between queries while waiting
  lock_timeout_s = 60.0
  query_timeout_s = 60.0       # one squeue/sacct/xpk call
  submit_timeout_s = 120.0     # one sbatch/xpk create call
  unknown_patience_s = 300.0   # how long a job may stay unknown before the launcher gives up (with an error)
  gone_grace_s = 0.0           # a job this new that the queue does not list yet is unknown, not gone
  supports_dependencies = False   # True: a branch is submitted behind its parent's job (slurm --dependency)

  def __init__(self, root, resources: dict | None = None, *, max_retries: int = 2, log=print,
               placeholders: bool = False, **unused):
    del unused
    super().__init__(root, resources, max_retries=max_retries, log=log, placeholders=placeholders)

  # ---- to implement ------------------------------------------------------------------------------
  def submit_commands(self, run, rd: RunDir, sweep) -> list[list[str]]:
    raise NotImplementedError

  def files_to_write(self, run, rd: RunDir, sweep) -> dict[str, str]:
    """Files (name in the run dir -> text) written before submitting."""
    del run, rd, sweep
    return {}

  def job_id_from_output(self, out: str, run, rd: RunDir, sweep) -> str:
    raise NotImplementedError

  def job_states(self, job_ids: list[str]) -> dict[str, JobState]:
    """A JobState for every id asked (UNKNOWN when the query failed); see the module docstring."""
    raise NotImplementedError

  def exit_code_file(self, rd: RunDir, job_id: str) -> int | None:
    """The training exit code the job left in the run directory, if any."""
    del rd, job_id
    return None

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

  def submit(self, sweep, wait: bool = False) -> int:
    self.ensure_run_dirs(sweep)
    for _ in range(self.max_retries + 3):   # bounded: each round needs a failure or a lost requeue
      self._submit_round(sweep)
      if not wait:
        return 0
      self.wait_all(sweep)
      if not self._any_retryable(sweep) and not self._any_fork_ready(sweep):
        break
    return self._final_report(sweep)

  def _open_jobs(self, sweep) -> dict[str, Attempt]:
    """Run hash -> its open queue job, for the runs of the sweep that have one."""
    out = {}
    for run in sweep.runs:
      rec = RunDir(self.root, run.hash).load()
      a = rec.open_job() if rec is not None else None
      if a is not None:
        out[run.hash] = a
    return out

  def _query(self, attempts: list[Attempt]) -> dict[str, JobState]:
    """One query for the jobs of these attempts; a job too new to be listed yet is UNKNOWN, not GONE."""
    ids = sorted({a.job_id for a in attempts})
    states = self.job_states(ids) if ids else {}
    out = {i: states.get(i, JobState(UNKNOWN, why='the query did not report it')) for i in ids}
    for a in attempts:
      age = rec_lib.now() - a.start
      if out[a.job_id].state == GONE and age < self.gone_grace_s:
        out[a.job_id] = JobState(UNKNOWN, why=f'not listed {age:.0f} s after submission (allowed '
                                              f'{self.gone_grace_s:g} s to appear)')
    return out

  def _query_settled(self, attempts: list[Attempt]) -> dict[str, JobState]:
    """_query, asking again about unknown jobs every poll_s for up to unknown_patience_s."""
    states = self._query(attempts)
    t0 = last = time.monotonic()
    while True:
      unknown = [a for a in attempts if states[a.job_id].state == UNKNOWN]
      if not unknown or time.monotonic() - t0 >= self.unknown_patience_s:
        return states
      if last == t0 or time.monotonic() - last > 30:
        last = time.monotonic() + 1e-9
        self.log(f'[sweep] state of job {unknown[0].job_id} unknown ({states[unknown[0].job_id].why}); '
                 f'{len(unknown)} unknown, asking again every {self.poll_s:g} s for up to '
                 f'{self.unknown_patience_s:g} s (not resubmitting)')
      time.sleep(self.poll_s)
      states.update(self._query(unknown))

  def _unknown_error(self, jobs: dict[str, str], states: dict[str, JobState]) -> QueueQueryError:
    listed = '; '.join(f'run {h} job {j}: {states[j].why if j in states else "not queried"}'
                       for h, j in jobs.items())
    return QueueQueryError(
        f'the {self.name} queue did not say what became of {len(jobs)} job(s) within '
        f'{self.unknown_patience_s:g} s ({listed}). Nothing was resubmitted and nothing recorded: check the '
        f'jobs by hand, then run the same command again (a run is resubmitted only once its job is known to '
        f'have ended).')

  def _reconcile(self, rd: RunDir, rec: RunRecord, states: dict[str, JobState]) -> str | None:
    """Records the outcome of the run's open job if it has ended.

    Returns None (no open job), LIVE, UNKNOWN (the queue's answer is missing: nothing
    recorded) or 'ended' (the outcome is now in run.json).
    """
    a = rec.open_job()
    if a is None:
      return None
    st = states.get(a.job_id, JobState(UNKNOWN, why='not queried'))
    if st.state == LIVE:
      return LIVE
    code = self.exit_code_file(rd, a.job_id)
    queue_state = st.state if st.state not in (GONE, UNKNOWN) else None
    if rd.summary() is not None:
      outcome = 'done'
    elif st.state == UNKNOWN:
      return UNKNOWN        # an exit code file is no proof either: after exit 75 the job is requeued
    elif code is not None:
      outcome = rec_lib.outcome_of_exit(code, False)
    elif st.state == GONE:
      outcome = 'interrupted'   # the queue has forgotten the job and it left no exit code
    else:
      outcome = st.state if st.state != 'done' else 'failed'   # ended "successfully" without a summary
      code = st.exit_code
    rec.end(a, outcome, code, queue_state=queue_state)
    rd.write(rec)
    return 'ended'

  def _submit_round(self, sweep) -> int:
    """Submits every run that is not done, alive, unknown or out of retries; returns how many."""
    states = self._query_settled(list(self._open_jobs(sweep).values()))
    n_sub, unknown = 0, {}
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      with rd.locked(timeout=self.lock_timeout_s) as fd:
        if fd is None:
          self.log(f'[sweep] run {run.hash} ({run.label}): locked by another launcher for '
                   f'{self.lock_timeout_s:.0f} s: skipped')
          continue
        what, job = self._round_one(run, rd, sweep, states)
      n_sub += what == 'submitted'
      if what == UNKNOWN:
        unknown[run.hash] = job
    if unknown:
      raise self._unknown_error(unknown, states)
    return n_sub

  def _round_one(self, run, rd: RunDir, sweep, states: dict[str, JobState]) -> tuple[str, str | None]:
    """One run of a round, under its lock: (what happened, its job id)."""
    rec = rd.load()
    if rec.close_dangling(done=rd.summary() is not None):
      rd.write(rec)
    a = rec.open_job()
    if a is not None and a.job_id not in states:
      states.update(self._query_settled([a]))   # submitted by a concurrent launcher just now
    seen = self._reconcile(rd, rec, states)
    if seen == LIVE:
      self.log(f'[sweep] run {run.hash} ({run.label}): job {a.job_id} is queued/running: skipped')
      return LIVE, a.job_id
    if seen == UNKNOWN:
      self.log(f'[sweep] run {run.hash} ({run.label}): state of job {a.job_id} unknown '
               f'({states[a.job_id].why}): not resubmitted')
      return UNKNOWN, a.job_id
    if self.skip_finished(run, rd, rec):
      return 'skipped', None
    if self.fork_gate(run)[0] == 'wait':
      self.log(f'[sweep] run {run.hash} ({run.label}): waits for its parent {run.parent} (no checkpoint of step '
               f'{run.fork_step} yet, and no job of it to depend on): not submitted yet')
      return 'waiting', None
    job_id = self._submit_one(run, rd, rec, sweep)
    self.log(f'[sweep] submitted run {run.hash} ({run.label}) attempt {len(rec.attempts)}: job {job_id}')
    return 'submitted', job_id

  def fork_gate(self, run) -> tuple[str, str | None]:
    """When a cooldown branch may be submitted: ('ready', None) when it is no branch, its parent's checkpoint
    at the fork step exists or it has its own; ('after', parent job id) when the parent has an open job and
    this queue orders jobs (`supports_dependencies`); else ('wait', None): not submitted in this round."""
    if fork_ready(self.root, run):
      return 'ready', None
    prec = RunDir(self.root, run.parent).load()
    a = prec.open_job() if prec is not None else None
    if a is not None and self.supports_dependencies:
      return 'after', a.job_id
    return 'wait', None

  def _submit_one(self, run, rd: RunDir, rec: RunRecord, sweep) -> str:
    for name, text in self.files_to_write(run, rd, sweep).items():
      atomic_write_text(rd.path / name, text)
    out = ''
    for cmd in self.submit_commands(run, rd, sweep):
      r = run_tool(cmd, self.submit_timeout_s)
      if r.error and r.rc is None and 'could not start' not in r.error:
        raise QueueQueryError(f'{r.why(cmd)}: the job of run {run.hash} may or may not have been submitted, '
                              f'so none was recorded. Look for it in the queue (and cancel it if it is there) '
                              f'before running the same command again.')
      if not r.ok:
        raise LaunchError(f'{r.why(cmd)} (submitting run {run.hash}); nothing was recorded')
      out = r.out
    job_id = self.job_id_from_output(out, run, rd, sweep)
    rec.submitted(self.name, job_id)
    rd.write(rec)
    return job_id

  def wait_all(self, sweep, timeout_s: float | None = None) -> None:
    """Blocks until no job of the sweep is alive or unknown, then records their outcomes."""
    t0 = time.monotonic()
    last = 0.0
    unknown_since: dict[str, float] = {}
    while True:
      jobs = self._open_jobs(sweep)
      states = self._query(list(jobs.values()))
      live = [i for i, s in states.items() if s.state == LIVE]
      unknown = [i for i, s in states.items() if s.state == UNKNOWN]
      for i in unknown:
        if i not in unknown_since:
          self.log(f'[sweep] state of job {i} unknown ({states[i].why}); asking again every {self.poll_s:g} s '
                   f'for up to {self.unknown_patience_s:g} s (not resubmitting)')
      unknown_since = {i: unknown_since.get(i, time.monotonic()) for i in unknown}
      stale = {i for i, t in unknown_since.items() if time.monotonic() - t > self.unknown_patience_s}
      if stale:
        raise self._unknown_error({h: a.job_id for h, a in jobs.items() if a.job_id in stale}, states)
      if not live and not unknown:
        break
      if time.monotonic() - last > 30:
        last = time.monotonic()
        parts = [f'{len(live)} job(s) queued/running: {" ".join(live)}'] if live else []
        parts += [f'state unknown for {" ".join(unknown)} ({states[unknown[0]].why})'] if unknown else []
        self.log(f'[sweep] waiting: {"; ".join(parts)}')
      if timeout_s is not None and time.monotonic() - t0 > timeout_s:
        raise TimeoutError(f'jobs {live + unknown} still alive or unknown after {timeout_s} s')
      time.sleep(self.poll_s)
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      with rd.locked(timeout=self.lock_timeout_s) as fd:
        if fd is not None:
          self._reconcile(rd, rd.load(), states)

  def _any_retryable(self, sweep) -> bool:
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      rec = rd.load()
      # 'interrupted' (e.g. scancel) waits for the next explicit submission instead.
      if rd.summary() is None and rec.state in ('failed', 'preempted', 'pending'):
        if rec.failures <= self.max_retries:
          return True
    return False

  def _any_fork_ready(self, sweep) -> bool:
    """A branch that was not submitted (its parent had neither the checkpoint nor a job) and now can be."""
    for run in sweep.runs:
      rd = RunDir(self.root, run.hash)
      rec = rd.load()
      if run.parent is not None and rd.summary() is None and rec is not None and not rec.attempts \
          and fork_ready(self.root, run):
        return True
    return False

  def _final_report(self, sweep) -> int:
    states = [effective_state(RunDir(self.root, r.hash), RunDir(self.root, r.hash).load()) for r in sweep.runs]
    counts = {s: states.count(s) for s in sorted(set(states))}
    self.log(f'[sweep] finished: {counts} of {len(states)} runs (root {self.root})')
    return 0 if all(s == 'done' for s in states) else 1
