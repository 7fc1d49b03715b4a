"""Names the launcher shares: files in a run directory and exit codes (one place for each).

`scaling train` writes config.json, metrics.jsonl, checkpoints/ and summary.json
into its workdir; the launcher adds run.json, .lock and the backends' logs. The
layout of ROOT/runs/<hash>/ is described in scaling/launch/rundir.py.
"""

# Exit codes.
from scaling.base.names import EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED  # noqa: F401  (training's codes, jax-free)

EXIT_FAILED = 1          # the sweep finished, but some run failed or could not be tracked
EXIT_USAGE = 2           # bad input: nothing was written or submitted

# Files of a sweep root.
RUNS_DIR = 'runs'
RESULTS = 'results.jsonl'

# Files of a run directory (ROOT/runs/<hash>/).
RUN_JSON = 'run.json'    # the launcher's record (scaling/launch/record.py)
LOCK = '.lock'
SUMMARY = 'summary.json'     # written by `scaling train` at the end of a run
METRICS = 'metrics.jsonl'    # written by `scaling train`, one line per logged step
HISTORY = 'history.jsonl'    # written by `scaling train`: every change of a run's config after it started
SEGMENTS = 'segments.json'   # written by `scaling train`: each start of the run (segment), its steps and times
TRAIN_LOG = 'train.log'      # local and tpu-vm output
JOB_SBATCH = 'job.sbatch'    # the SLURM batch script


def slurm_output(job_id: str = '%j') -> str:
  """The SLURM job's output file ('%j' is sbatch's placeholder for the job id)."""
  return f'slurm-{job_id}.out'


def slurm_exit_code(job_id: str) -> str:
  """The file in which the batch script leaves the training exit code of job `job_id`."""
  return f'slurm-{job_id}.rc'
