"""Accelerator facts in one table: peak FLOP/s, HBM and its bandwidth, ICI/NVLink and DCN bandwidth, every
device kind JAX reports for the chip and, for `scaling compile`, the topology.

Free of JAX on purpose (the accounting and the launchers read it). Its readers:

- scaling/model/accounting.py: the scale table's hours columns (`hours_H100`, ...) at a row's peak;
- scaling/train/metrics.py: MFU's peak, found from JAX's device kind (`chip_of`; an unknown kind finds
  nothing, and MFU is then not reported rather than computed against another chip's peak);
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
  peak_flops: float       # dense bf16 FLOP/s per chip
  peak_flops_f32: float   # dense float32 FLOP/s
  device_kind: str = ''   # as JAX reports it (`jax.devices()[0].device_kind`); '' for none
  hbm_bytes: int = 0
  generation: str = ''    # `scaling compile`'s name (libtpu's topology prefix: v4, v5p, v5e, v6e; h100, h200);
  #                         '' for a chip it cannot compile for
  counts_cores: bool = False   # the Cloud TPU accelerator name counts TensorCores (2 per chip), not chips
  ndim: int = 0                # torus dimensions (GPUs: 1, the GPUs of the nodes)
  platform: str = 'tpu'        # tpu, cuda or cpu
  hbm_bandwidth: float = 0.0   # bytes/s per chip
  ici_bandwidth: float = 0.0   # bytes/s per chip, both directions of all its links: TPU ICI, GPU NVLink
  dcn_bandwidth: float = 0.0   # bytes/s per chip off the slice / node (a host's NICs shared by its chips);
  #                              0: not published per chip
  kinds: tuple = ()            # other device_kind spellings JAX uses for this chip

  @property
  def peaks(self) -> dict:
    """{dtype: dense peak FLOP/s}."""
    return {'bfloat16': self.peak_flops, 'float32': self.peak_flops_f32}

  @property
  def device_kinds(self) -> tuple:
    return tuple(k for k in (self.device_kind,) + self.kinds if k)


# The one table. Per chip, from the vendors' pages (GB/s = 1e9 bytes/s; Gbps = 1e9 bits/s):
# - TPUs: cloud.google.com/tpu/docs/{v4,v5p,v5e,v6e} (peak bf16, HBM, HBM bandwidth, "bidirectional ICI
#   bandwidth per chip", DCN); their device kinds are the strings JAX matches in
#   jax/_src/pallas/mosaic/tpu_info.py `chip_version_from_device_kind` ("TPU v5" | "TPU v5p",
#   "TPU v5 lite" | "TPU v5e", "TPU v6 lite" | "TPU v6e") and jax/_src/mesh_utils.py.
# - GPUs: NVIDIA's data sheets (A100: "NVIDIA A100 Tensor Core GPU", H100/H200: "H100 Tensor Core GPU" /
#   "H200 Tensor Core GPU", B200: "HGX B200"); device kinds are the CUDA device names. A GPU's memory
#   is the device_memory_size of XLA's gpu_specs where `scaling compile` compiles for it (H100, H200).
#   DCN: the reference DGX systems' one NIC per GPU (DGX A100: 200 Gb/s; DGX H100/H200/B200: 400 Gb/s).
_GB, _Gb = 1e9, 1e9 / 8
CHIPS = (
    # H100 SXM5: 1,979 TFLOP/s bf16 "with sparsity" halved, 67 TFLOP/s fp32; 80 GB HBM3 at 3.35 TB/s;
    # NVLink 900 GB/s
    Chip('H100', 989e12, 67e12, 'NVIDIA H100 80GB HBM3', 85520809984, 'h100', False, 1, 'cuda',
         hbm_bandwidth=3.35e12, ici_bandwidth=900 * _GB, dcn_bandwidth=400 * _Gb),
    # H100 PCIe: 1,513 TFLOP/s bf16 with sparsity halved, 51 TFLOP/s fp32; 80 GB HBM2e at 2 TB/s; NVLink
    # bridge 600 GB/s
    Chip('H100 PCIe', 756.5e12, 51e12, 'NVIDIA H100 PCIe', 80 * GiB, platform='cuda',
         hbm_bandwidth=2.0e12, ici_bandwidth=600 * _GB),
    # H200 SXM: the H100 SXM's compute; 141 GB HBM3e at 4.8 TB/s; NVLink 900 GB/s
    Chip('H200', 989e12, 67e12, 'NVIDIA H200', 150754820096, 'h200', False, 1, 'cuda',
         hbm_bandwidth=4.8e12, ici_bandwidth=900 * _GB, dcn_bandwidth=400 * _Gb),
    # B200 (HGX, 1,000 W): 4.5 PFLOP/s bf16 with sparsity halved, 80 TFLOP/s fp32; 180 GB HBM3e
    # (1,440 GB per 8 GPUs) at 8 TB/s; NVLink 5 1.8 TB/s
    Chip('B200', 2250e12, 80e12, 'NVIDIA B200', 180 * 10**9, platform='cuda',
         hbm_bandwidth=8e12, ici_bandwidth=1800 * _GB, dcn_bandwidth=400 * _Gb),
    # A100 40GB (SXM4 and PCIe): 312 TFLOP/s bf16 dense, 19.5 TFLOP/s fp32; 1,555 GB/s; NVLink 600 GB/s
    Chip('A100', 312e12, 19.5e12, 'NVIDIA A100-SXM4-40GB', 40 * GiB, platform='cuda',
         hbm_bandwidth=1555 * _GB, ici_bandwidth=600 * _GB, dcn_bandwidth=200 * _Gb, kinds=('NVIDIA A100-PCIE-40GB',)),
    # A100 80GB SXM4: the same compute; 2,039 GB/s
    Chip('A100 80GB', 312e12, 19.5e12, 'NVIDIA A100-SXM4-80GB', 80 * GiB, platform='cuda',
         hbm_bandwidth=2039 * _GB, ici_bandwidth=600 * _GB, dcn_bandwidth=200 * _Gb),
    # A100 80GB PCIe: 1,935 GB/s
    Chip('A100 80GB PCIe', 312e12, 19.5e12, 'NVIDIA A100 80GB PCIe', 80 * GiB, platform='cuda',
         hbm_bandwidth=1935 * _GB, ici_bandwidth=600 * _GB),
    # v4: 275 TFLOP/s, 32 GiB at 1,200 GB/s; 6 ICI links (3D torus) of 45 GB/s each way (jax-ml.github.io/
    # scaling-book/tpus, "TPU specs"); its DCN is not published per chip
    Chip('TPU v4', 275e12, 275e12 / 2, 'TPU v4', 32 * GiB, 'v4', True, 3,
         hbm_bandwidth=1200 * _GB, ici_bandwidth=6 * 2 * 45 * _GB),
    # v5p: 459 TFLOP/s, 95 GiB at 2,765 GB/s, ICI 1,200 GB/s, DCN 50 Gbps per chip
    Chip('TPU v5p', 459e12, 459e12 / 2, 'TPU v5', 95 * GiB, 'v5p', True, 3,
         hbm_bandwidth=2765 * _GB, ici_bandwidth=1200 * _GB, dcn_bandwidth=50 * _Gb, kinds=('TPU v5p',)),
    # v5e: 197 TFLOP/s, 16 GiB at 819 GB/s, ICI 400 GB/s; DCN 2 x 100 Gbps NICs per 8-chip host
    Chip('TPU v5e', 197e12, 197e12 / 2, 'TPU v5 lite', 16 * GiB, 'v5e', False, 2,
         hbm_bandwidth=819 * _GB, ici_bandwidth=400 * _GB, dcn_bandwidth=2 * 100 * _Gb / 8, kinds=('TPU v5e',)),
    # v6e (Trillium): 918 TFLOP/s, 32 GiB at 1,640 GB/s, ICI 800 GB/s; DCN 4 x 200 Gbps NICs per 8-chip host
    Chip('TPU v6e', 918e12, 918e12 / 2, 'TPU v6 lite', 32 * GiB, 'v6e', False, 2,
         hbm_bandwidth=1640 * _GB, ici_bandwidth=800 * _GB, dcn_bandwidth=4 * 200 * _Gb / 8, kinds=('TPU v6e',)),
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


KINDS = {k.lower(): c for c in CHIPS for k in c.device_kinds}   # every device_kind JAX reports -> its chip


def chip_of(device_kind: str) -> Chip | None:
  """The chip of a JAX device_kind ('TPU v5 lite', 'NVIDIA H100 80GB HBM3', ...) or a row name ('TPU v5e'),
  or None: an unknown kind matches nothing (no substring guess: 'NVIDIA H100 NVL' is not an H100 SXM)."""
  kind = device_kind.strip().lower()
  return KINDS.get(kind) or next((c for c in CHIPS if c.platform != 'cpu' and c.row.lower() == kind), None)


def peak_row(device_kind: str) -> str | None:
  """The table row of a JAX device_kind (see chip_of), or None."""
  c = chip_of(device_kind)
  return c.row if c else None
