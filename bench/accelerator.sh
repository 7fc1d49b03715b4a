#!/usr/bin/env bash
# One run on a lent NVIDIA H100/H200 or a TPU host: 125m, 350m and 1b, bf16, best attention,
# the largest batch that fits; one table of tokens/s, step time, MFU, peak memory, compile time.
#   bash bench/accelerator.sh                 # installs jax for the backend if needed, then runs
#   RUNGS=125m STEPS=10 bash bench/accelerator.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RUNGS=${RUNGS:-125m,350m,1b}
STEPS=${STEPS:-20}
if ! "$PY" -c 'import scaling' 2>/dev/null; then
  "$PY" -m pip install -q -e .
fi
if command -v nvidia-smi >/dev/null && ! "$PY" -c 'import jax; assert jax.default_backend() == "gpu"' 2>/dev/null; then
  "$PY" -m pip install -q 'jax[cuda12]'
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
exec "$PY" bench/accelerator.py --rungs "$RUNGS" --steps "$STEPS" "$@"
