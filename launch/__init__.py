"""launch: scaling sweeps and the backends that run them (local, slurm, tpu-vm, gke).

A sweep file (configs/sweeps/*.py, see launch/sweep.py) expands into runs; each
run gets a directory ROOT/runs/<config hash> holding its whole state
(launch/rundir.py) with its record, run.json (launch/record.py: RunRecord and
its transitions); a backend (launch/backend.py: Backend, QueueBackend; local.py,
slurm.py, tpu_vm.py, gke.py) executes or submits the runs that are not done.
File names and exit codes: launch/layout.py. The command line is
`scaling sweep ...` (launch/cli.py).
"""

from launch.sweep import LaunchError, Run, Sweep, axis, concat, load_sweep, product, zip_

__all__ = ['LaunchError', 'Run', 'Sweep', 'axis', 'concat', 'load_sweep', 'product', 'zip_']
