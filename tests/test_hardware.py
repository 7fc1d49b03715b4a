"""scaling/base/hardware.py (the one chip table) and the MFU peak scaling/train/metrics.py finds in it.

Expected figures are written out here from the vendors' published per-chip numbers (Cloud TPU's v4, v5p,
v5e and v6e pages; NVIDIA's A100, H100, H200 and HGX B200 data sheets), and the device-kind strings
from JAX's own lists (jax/_src/pallas/mosaic/tpu_info.py, jax/_src/mesh_utils.py; GPUs: CUDA's names).
"""

import types

import pytest

from scaling.base import hardware, hostmem
from scaling.train import metrics

GB = 1e9

# device_kind as JAX reports it -> (row, dense bf16 FLOP/s, HBM bytes/s, ICI or NVLink bytes/s)
KINDS = {
    'TPU v4': ('TPU v4', 275e12, 1200 * GB, 540 * GB),
    'TPU v5': ('TPU v5p', 459e12, 2765 * GB, 1200 * GB),
    'TPU v5p': ('TPU v5p', 459e12, 2765 * GB, 1200 * GB),
    'TPU v5 lite': ('TPU v5e', 197e12, 819 * GB, 400 * GB),
    'TPU v5e': ('TPU v5e', 197e12, 819 * GB, 400 * GB),
    'TPU v6 lite': ('TPU v6e', 918e12, 1640 * GB, 800 * GB),
    'TPU v6e': ('TPU v6e', 918e12, 1640 * GB, 800 * GB),
    'NVIDIA A100-SXM4-40GB': ('A100', 312e12, 1555 * GB, 600 * GB),
    'NVIDIA A100-PCIE-40GB': ('A100', 312e12, 1555 * GB, 600 * GB),
    'NVIDIA A100-SXM4-80GB': ('A100 80GB', 312e12, 2039 * GB, 600 * GB),
    'NVIDIA A100 80GB PCIe': ('A100 80GB PCIe', 312e12, 1935 * GB, 600 * GB),
    'NVIDIA H100 80GB HBM3': ('H100', 989e12, 3350 * GB, 900 * GB),
    'NVIDIA H100 PCIe': ('H100 PCIe', 756.5e12, 2000 * GB, 600 * GB),
    'NVIDIA H200': ('H200', 989e12, 4800 * GB, 900 * GB),
    'NVIDIA B200': ('B200', 2250e12, 8000 * GB, 1800 * GB),
}


@pytest.mark.parametrize('kind', sorted(KINDS))
def test_every_device_kind_finds_its_own_row(kind):
  row, peak, hbm_bw, link_bw = KINDS[kind]
  chip = hardware.chip_of(kind)
  assert chip is not None and chip.row == row
  assert (chip.peak_flops, chip.hbm_bandwidth, chip.ici_bandwidth) == pytest.approx((peak, hbm_bw, link_bw))
  assert hardware.peak_row(f'  {kind.upper()} ') == row   # JAX's spelling, whatever the case and spaces
  assert kind in chip.device_kinds


def test_memory_and_data_center_network_per_chip():
  GiB = 1 << 30
  by_row = hardware.ROWS
  assert [by_row[r].hbm_bytes for r in ('TPU v4', 'TPU v5p', 'TPU v5e', 'TPU v6e')] == [
      32 * GiB, 95 * GiB, 16 * GiB, 32 * GiB]
  assert by_row['B200'].hbm_bytes == 1440 * 10**9 // 8   # an HGX B200's 1,440 GB over its 8 GPUs
  # DCN, bytes/s per chip: v5p 50 Gbps; v5e 2 x 100 Gbps and v6e 4 x 200 Gbps NICs per 8-chip host
  assert [by_row[r].dcn_bandwidth for r in ('TPU v5p', 'TPU v5e', 'TPU v6e')] == [6.25e9, 3.125e9, 12.5e9]
  assert by_row['TPU v4'].dcn_bandwidth == 0   # not published per chip
  assert by_row['H100'].dcn_bandwidth == 50e9   # DGX H100: one 400 Gb/s NIC per GPU


def test_every_kind_string_is_one_chips_and_unknown_kinds_find_nothing():
  kinds = [k.lower() for c in hardware.CHIPS for k in c.device_kinds]
  assert len(kinds) == len(set(kinds))
  for kind in ('NVIDIA H100 NVL', 'NVIDIA GeForce RTX 4090', 'TPU v4 lite', 'TPU7x', 'cpu', ''):
    assert hardware.chip_of(kind) is None and hardware.peak_row(kind) is None, kind


def _fake_jax(kind, platform):
  dev = types.SimpleNamespace(device_kind=kind, platform=platform)
  return types.SimpleNamespace(devices=lambda: [dev], process_index=lambda: 0)


def test_mfu_peak_of_a_tpu_comes_from_its_row(monkeypatch):
  monkeypatch.setattr(metrics, 'jax', _fake_jax('TPU v5 lite', 'tpu'))
  assert metrics.device_peak_flops('bfloat16') == (197e12, 'table (TPU v5e)')
  assert metrics.device_peak_flops('float32') == (98.5e12, 'table (TPU v5e)')
  assert metrics.device_peak_flops('bfloat16', override=1e15) == (1e15, 'config')
  # 1,000 tokens/s at 6e10 FLOPs each on 4 chips: 6e13 / (4 x 197e12)
  assert metrics.mfu(6e10, 1000.0, 197e12, 4) == (pytest.approx(6e13 / (4 * 197e12)), False)


def test_unknown_device_kind_omits_mfu_with_one_warning(monkeypatch, capsys):
  monkeypatch.setattr(metrics, 'jax', _fake_jax('NVIDIA H100 NVL', 'gpu'))
  monkeypatch.setattr(metrics, '_WARNED', set())
  assert metrics.device_peak_flops('bfloat16') == (0.0, "unknown device kind 'NVIDIA H100 NVL'")
  assert metrics.device_peak_flops('bfloat16') == (0.0, "unknown device kind 'NVIDIA H100 NVL'")
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'NVIDIA H100 NVL' in err[0] and 'train.peak_flops' in err[0]
  assert metrics.mfu(6e10, 1000.0, 0.0, 4) == (None, False)


def test_tpu_settings_in_the_environment_count_as_a_tpu(monkeypatch, tmp_path):
  """The CLI computes on the CPU when libtpu is installed but no TPU is meant (hostmem.skip_absent_tpu):
  no TPU device files and none of the TPU variables libtpu reads."""
  monkeypatch.setattr(hostmem, 'TPU_DEVICE_GLOBS', (str(tmp_path / 'accel*'),))
  for v in hostmem.TPU_ENV:
    monkeypatch.delenv(v, raising=False)
  assert not hostmem.tpu_present()
  monkeypatch.setenv('TPU_ACCELERATOR_TYPE', 'v5p-8')
  assert hostmem.tpu_present()
