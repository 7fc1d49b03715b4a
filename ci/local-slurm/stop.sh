#!/usr/bin/env bash
# Stops the cluster started by ci/local-slurm/start.sh: cancels queued/running
# jobs, then signals only the pids recorded in $SLURM_LOCAL_DIR/run/*.pid, and
# only when the process name matches what start.sh started.
#   --purge   also delete $SLURM_LOCAL_DIR (config, state, database, logs)
set -uo pipefail
D=${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/local-slurm}
export PATH=$PATH:/usr/sbin:/sbin
export SLURM_CONF=$D/etc/slurm.conf
[ -d "$D/run" ] || { echo "nothing to stop in $D"; exit 0; }

stop() {  # pidfile-name expected-comm
  local f=$D/run/$1.pid pid comm
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" != "$2" ]; then echo "$1: pid $pid not running (comm='$comm'), skipping"; rm -f "$f"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then echo "$1: pid $pid still alive after 20 s, SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$f"; echo "stopped $1 (pid $pid)"
}

# Cancel jobs first so no slurmstepd outlives slurmd.
if [ -s "$D/run/slurmctld.pid" ] && kill -0 "$(cat "$D/run/slurmctld.pid")" 2>/dev/null; then
  jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// }" ]; then
    echo "cancelling jobs: $jobs"; scancel $jobs
    for _ in $(seq 1 40); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
stop slurmd slurmd
stop slurmctld slurmctld
stop slurmdbd slurmdbd
stop mysqld mariadbd
stop munged munged
if [ "${1:-}" = "--purge" ]; then rm -rf "$D"; echo "removed $D"; fi
