"""Accelerator facts in one table: peak FLOP/s, memory, JAX's device kind and, for `scaling compile`, the topology.

Free of JAX on purpose (the accounting and the launchers read it). Its readers:

- scaling/model/accounting.py: the scale table's hours columns (`hours_H100`, ...) at a row's peak;
- scaling/train/metrics.py: MFU's peak, found from JAX's device kind (`peak_row`);
- scaling/train/aot.py: the targets `scaling compile` compiles for (a chip's HBM, bf16 peak, torus and,
  for GPUs, the description the CUDA plugin compiles for).

Peaks are dense (no sparsity), from the vendors' data sheets: the H100 SXM's 989 TFLOP/s bf16 is its
1,979 TFLOP/s "with sparsity" halved. A TPU's float32 peak is taken as half its bf16 peak.
"""

from __future__ import annotations

import dataclasses

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  row: str                # its name in the tables: 'TPU v5p', 'H100', 'CPU'
  peak_flops: float       # dense bf16 FLOP/s per chip (GPU)
  peak_flops_f32: float   # dense float32 FLOP/s
  device_kind: str = ''   # as JAX reports it (GPU rows are also found by their row name within the kind)
  hbm_bytes: int = 0
  generation: str = ''    # `scaling compile`'s name (libtpu's topology prefix: v4, v5p, v5e, v6e; h100, h200);
  #                         '' for a chip it cannot compile for
  counts_cores: bool = False   # the Cloud TPU accelerator name counts TensorCores (2 per chip), not chips
  ndim: int = 0                # torus dimensions (GPUs: 1, the GPUs of the nodes)
  platform: str = 'tpu'        # tpu, cuda or cpu

  @property
  def peaks(self) -> dict:
    """{dtype: dense peak FLOP/s}."""
    return {'bfloat16': self.peak_flops, 'float32': self.peak_flops_f32}


# The one table. A GPU's memory is its device_memory_size in XLA's gpu_specs (what the CUDA plugin compiles for).
CHIPS = (
    Chip('H100', 989e12, 67e12, 'NVIDIA H100 80GB HBM3', 85520809984, 'h100', False, 1, 'cuda'),   # H100 SXM
    Chip('H200', 989e12, 67e12, 'NVIDIA H200', 150754820096, 'h200', False, 1, 'cuda'),   # H100 SXM's compute
    Chip('A100', 312e12, 19.5e12, platform='cuda'),
    Chip('TPU v4', 275e12, 275e12 / 2, 'TPU v4', 32 * GiB, 'v4', True, 3),
    Chip('TPU v5p', 459e12, 459e12 / 2, 'TPU v5', 95 * GiB, 'v5p', True, 3),
    Chip('TPU v5e', 197e12, 197e12 / 2, 'TPU v5 lite', 16 * GiB, 'v5e', False, 2),
    Chip('TPU v6e', 918e12, 918e12 / 2, 'TPU v6 lite', 32 * GiB, 'v6e', False, 2),
    Chip('CPU', 0.4e12, 0.2e12, platform='cpu'),   # the 2-core CI machine, measured (see BENCHMARKS.md)
)
ROWS = {c.row: c for c in CHIPS}
# `scaling compile`'s targets by generation, in the order its messages list them
TPUS = {c.generation: c for c in CHIPS if c.platform == 'tpu'}
GPUS = {c.generation: c for c in CHIPS if c.platform == 'cuda' and c.generation}
ALIASES = {'v5litepod': 'v5e'}   # Cloud TPU's accelerator names -> generation

# chips -> physical shape, as Cloud TPU lays out the standard slices
SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
             256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}
SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}

# What the CUDA plugin needs beyond the table to compile for an H100/H200 SXM (XLA's gpu_specs)
GPU_SPEC = dict(core_count=132, clock_rate_ghz=1.98, l2_cache_size=52428800,
                memory_bandwidth={'h100': 3352320000000, 'h200': 4800000000000})


def peak_flops(row: str, dtype: str = 'bfloat16') -> float:
  """The dense peak FLOP/s of a table row ('H100', 'TPU v5p', 'CPU') in dtype ('bfloat16' or 'float32')."""
  return ROWS[row].peaks[dtype]


def peak_row(device_kind: str) -> str | None:
  """The table row of a JAX device_kind ('TPU v5 lite', 'NVIDIA H100 80GB HBM3', ...), or None.

  A TPU is found by its device kind or its row name ('TPU v5e'); a GPU by its row name within the kind.
  """
  kind = device_kind.strip().lower()
  for c in CHIPS:
    if c.platform == 'tpu' and kind in (c.device_kind.lower(), c.row.lower()):
      return c.row
  return next((c.row for c in CHIPS if c.platform == 'cuda' and c.row.lower() in kind), None)
