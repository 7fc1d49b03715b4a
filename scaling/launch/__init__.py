"""The launcher: sweeps and the backends that run them (local, slurm, tpu-vm, gke); never imports jax.

A sweep file (configs/sweeps/*.py, see sweep.py) expands into runs; each run gets a directory
ROOT/runs/<config hash> holding its whole state (rundir.py) with its record, run.json (record.py: RunRecord and
its transitions); a backend (backend.py: Backend, QueueBackend; local.py, slurm.py, tpu_vm.py, gke.py) executes
or submits the runs that are not done. File names and exit codes: scaling/base/layout.py. The command line is
`scaling sweep ...` (cli.py).
"""
