#!/usr/bin/env bash
# The seed study's two speed claims on a lent GPU or TPU (issue #19): interleaved training-step times of
# RMSNorm vs LayerNorm and float32 vs bfloat16 (scaling/analysis/seed/steptime.py), at the study's baseline dims and, by
# default, also at GPT-2-small-like dims (12 x 768, batch 16 x 1024), where the accelerator is not idle.
#   bash bench/seed_claims_accelerator.sh                    # writes steptime_accelerator.jsonl
#   cat steptime_accelerator.jsonl >> sweeps/seed_upgrades/claims.jsonl && scaling report --root sweeps/seed_upgrades
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-steptime_accelerator.jsonl}
if ! "$PY" -c 'import scaling' 2>/dev/null; then
  "$PY" -m pip install -q -e .
fi
if command -v nvidia-smi >/dev/null && ! "$PY" -c 'import jax; assert jax.default_backend() == "gpu"' 2>/dev/null; then
  "$PY" -m pip install -q 'jax[cuda12]'
fi
"$PY" -m scaling.analysis.seed.steptime --config configs/sweeps/seed_upgrades.py --json "$OUT" --rounds 10 --steps 20
"$PY" -m scaling.analysis.seed.steptime --config configs/sweeps/seed_upgrades.py --json "$OUT" --rounds 10 --steps 10 \
  --override model.num_layers=12 --override model.d_model=768 --override model.num_heads=12 \
  --override model.num_kv_heads=4 --override model.seq_len=1024
