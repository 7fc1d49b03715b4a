"""launch: scaling sweeps and the backends that run them (local, slurm, tpu-vm, gke).

A sweep file (configs/sweeps/*.py, see launch/sweep.py) expands into runs; each
run gets a directory ROOT/runs/<config hash> holding its whole state
(launch/rundir.py); a backend executes or submits the runs that are not done.
The command line is `scaling sweep ...` (launch/cli.py).
"""

from launch.sweep import LaunchError, Run, Sweep, axis, concat, load_sweep, product, zip_

__all__ = ['LaunchError', 'Run', 'Sweep', 'axis', 'concat', 'load_sweep', 'product', 'zip_']
