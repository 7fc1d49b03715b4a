"""Multi-process runs: `jax.distributed` initialization and a local multi-process launcher.

One process per host (or per GPU) runs the same `scaling train`; JAX's
multi-controller runtime makes the devices of all processes one mesh.

* explicit: `--coordinator HOST:PORT --num_processes N --process_id I`;
* automatic: under SLURM (`srun`, SLURM_NTASKS > 1), on Cloud TPU VMs and on GKE,
  `jax.distributed.initialize()` finds the cluster itself;
* `--local_processes N`: this module starts N processes on this host, each
  with its share of the CPU devices, to test the multi-host path without a
  cluster. If one of them dies, the others are killed and the exit status
  names the process that failed, instead of a hang in a collective.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax

_INITIALIZED = False


def _auto_cluster() -> bool:
  env = os.environ
  if int(env.get('SLURM_NTASKS', '1') or 1) > 1 and 'SLURM_JOB_ID' in env:
    return True
  if env.get('TPU_WORKER_HOSTNAMES') or env.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return True
  if env.get('JOBSET_NAME') or env.get('JAX_COORDINATOR_ADDRESS'):
    return True
  return False


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  global _INITIALIZED
  if _INITIALIZED:
    return
  env = os.environ
  coordinator = coordinator or env.get('SCALING_COORDINATOR')
  if num_processes is None and env.get('SCALING_NUM_PROCESSES'):
    num_processes = int(env['SCALING_NUM_PROCESSES'])
  if process_id is None and env.get('SCALING_PROCESS_ID'):
    process_id = int(env['SCALING_PROCESS_ID'])
  if coordinator:
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator needs --num_processes and --process_id too')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id {process_id} is outside [0, {num_processes})')
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=120)
    _INITIALIZED = True
  elif _auto_cluster():
    jax.distributed.initialize()
    _INITIALIZED = True


def is_main() -> bool:
  return jax.process_index() == 0


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _strip_flag(argv: list[str], flag: str) -> list[str]:
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
      continue
    if a == flag:
      skip = True
      continue
    if a.startswith(flag + '='):
      continue
    out.append(a)
  return out


def child_env(base: dict, n: int, i: int, port: int) -> dict:
  """The environment of local process i of n: its own share of the fake CPU devices."""
  env = dict(base)
  flags = env.get('XLA_FLAGS', '')
  m = re.search(r'--xla_force_host_platform_device_count=(\d+)', flags)
  total = int(m.group(1)) if m else n
  if total % n:
    raise ValueError(f'{total} CPU devices do not split over {n} local processes')
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', flags).strip()
  env['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={total // n}'.strip()
  env['SCALING_COORDINATOR'] = f'127.0.0.1:{port}'
  env['SCALING_NUM_PROCESSES'] = str(n)
  env['SCALING_PROCESS_ID'] = str(i)
  env.setdefault('JAX_PLATFORMS', 'cpu')
  return env


def launch_local(n: int, argv: list[str], *, poll_s: float = 0.2) -> int:
  """Runs `scaling <argv>` as n processes on this host; returns the first failure's exit code (or 0)."""
  argv = _strip_flag(argv, '--local_processes')
  port = free_port()
  procs = [subprocess.Popen([sys.executable, '-m', 'scaling', *argv], env=child_env(os.environ, n, i, port))
           for i in range(n)]
  forwarded = {}

  def forward(signum, frame):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
  for s in (signal.SIGTERM, signal.SIGINT):
    forwarded[s] = signal.signal(s, forward)
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, c = failed[0]
        time.sleep(1.0)   # give a preempted group the chance to finish its own exit
        for p in procs:
          if p.poll() is None:
            p.kill()
        for p in procs:
          p.wait()
        if c == 75 and all(p.returncode in (0, 75) for p in procs):
          return 75
        print(f'error: local process {i} of {n} exited with status {c}; stopped the other processes',
              file=sys.stderr, flush=True)
        return c if c > 0 else 1
      if all(c == 0 for c in codes):
        return 0
      time.sleep(poll_s)
  finally:
    for s, h in forwarded.items():
      signal.signal(s, h)
