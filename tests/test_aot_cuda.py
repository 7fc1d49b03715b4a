"""scaling/train/aot.py on GPU targets (h100-N, h200-N): what a machine without the `cuda-aot` extra is told, the
cuDNN attention kernels' FLOPs, and (with the extra) cuDNN attention compiled for 8 H100s without a GPU.

The FLOP references are the matmul formula worked out by hand from the shapes; the end-to-end test needs the
CUDA plugin and cuDNN of `pip install -e ".[cuda-aot]"` and is skipped, saying so, without them.
"""

import importlib.util

import pytest

from scaling.config.load import load_config
from scaling.model import attention, splash
from scaling.train import aot
from scaling.train import hlo as hlo_lib

has_cuda_aot = aot.cuda_plugin_available() and importlib.util.find_spec('nvidia.cudnn') is not None
needs_cuda_aot = pytest.mark.skipif(
    not has_cuda_aot, reason='the cuda-aot extra (CUDA plugin, cuDNN) is not installed: pip install -e ".[cuda-aot]"')

# nano (d_model 128, 4 heads of 32, 2 kv heads), one layer of 128 tokens: one 128 x 128 cuDNN tile
NANO = {'model.num_layers': '1', 'model.seq_len': '128', 'train.batch_size': '8', 'model.remat': 'none'}
B, T, H, G, K = 8, 128, 4, 2, 32


def test_a_gpu_target_without_the_cuda_plugin_names_the_extra(monkeypatch, capsys):
  from scaling.cli import main as cli
  monkeypatch.setattr(aot, 'cuda_plugin_available', lambda: False)
  assert cli.main(['compile', '--config', 'scaling/model/ladder.py:nano', '--topology', 'h100-8']) == 2
  err = capsys.readouterr().err
  assert 'pip install -e ".[cuda-aot]"' in err and 'no GPU or driver is needed' in err


def test_cudnn_attention_without_cudnn_names_the_extra_and_the_alternative(monkeypatch):
  """With the plugin but not cuDNN, JAX's cuDNN attention fails while tracing ('cuDNN not found.', from the
  plugin's version check): the step is traced here on CPU devices as for a GPU (attention 'auto' -> cudnn)."""
  import jax
  from jax._src.cudnn import fused_attention_stablehlo as fa

  def not_found():
    raise RuntimeError('cuDNN not found.')
  monkeypatch.setattr(fa, 'check_cudnn_version', not_found)
  cfg = aot.target_config(load_config('scaling/model/ladder.py:nano', NANO))
  with pytest.raises(aot.AotError) as e:
    aot.lower_step(cfg, aot.parse_target('h100-8'), devices=jax.devices()[:8])
  msg = str(e.value)
  assert "model.attention='auto'" in msg and '".[cuda-aot]"' in msg and 'nvidia-cudnn-cu13' in msg
  assert '--config.model.attention=xla' in msg and 'cuDNN not found.' in msg


def test_cudnn_kernel_flops_by_hand():
  """Forward (o, logsumexp): q k^T and p v; backward (dq, dk, dv): q k^T, dO v^T, p^T dO, ds^T q, ds k; 2 B H K
  FLOPs per computed position, the positions of the 128 x 128 tiles on or below the causal diagonal."""
  q, k, lse = [B, 512, H, K], [B, 512, G, K], [B, H, 512]
  tiles = 4 * 5 // 2   # 512 tokens: 4 x 4 tiles, 10 of them with a visible key
  assert splash.visited_positions(512, 512, 128, 128) == tiles * 128 * 128
  scalars = [[0], [0], [], []]
  target = 'CustomSPMDPartitioning'
  assert attention.cudnn_kernel_flops(target, [q, lse], [q, k, k] + scalars) == 2 * 2 * B * H * K * tiles * 128 * 128
  backward = attention.cudnn_kernel_flops(target, [q, k, k], [q, k, k, q, q] + scalars)
  assert backward == 5 * 2 * B * H * K * tiles * 128 * 128
  # a window of 128 keys: the diagonal tile and the one before it per query tile (1 + 2 + 2 + 2)
  assert attention.cudnn_kernel_flops(target, [q, lse], [q, k, k], window=128) == 2 * 2 * B * H * K * 7 * 128 * 128
  # not cuDNN attention: another target, or shapes that are no q, k, v
  assert attention.cudnn_kernel_flops('tpu_custom_call', [q, lse], [q, k, k]) == 0.0
  assert attention.cudnn_kernel_flops(target, [[B, 512, 8]], [[B, 512, 8], [8, 8], [8, 8]]) == 0.0
  assert attention.cudnn_kernel_flops(target, [q], [q, k, [B, 512, G, 16]]) == 0.0
  # as it reaches hlo_dot_flops: the custom call of the pre-optimization HLO
  call = f'custom-call(q, k, k, c, c), custom_call_target="{target}", backend_config="1"'
  hlo = f"""
ENTRY main {{
  q = bf16[{B},512,{H},{K}]{{3,2,1,0}} parameter(0)
  k = bf16[{B},512,{G},{K}]{{3,2,1,0}} parameter(1)
  c = bf16[0]{{0}} constant({{}})
  ROOT f = (bf16[{B},512,{H},{K}]{{3,2,1,0}}, f32[{B},{H},512]{{2,1,0}}) {call}
}}
"""
  assert hlo_lib.hlo_dot_flops(hlo, attention.cudnn_kernel_flops) == (2 * 2 * B * H * K * tiles * 128 * 128, 0)


@needs_cuda_aot
def test_cudnn_attention_compiles_for_8_h100_without_a_gpu(monkeypatch):
  """'auto' on an H100 is cuDNN flash attention: its custom calls reach the compiled program (per layer a
  forward and a backward, 7 products of 2 B H K FLOPs per position of the one tile), and the step fits."""
  monkeypatch.setitem(aot._CACHE, 'dir', None)   # compile it here (a CLI test in this process may enable the cache)
  cfg = aot.target_config(load_config('scaling/model/ladder.py:nano', NANO))
  t = aot.parse_target('h100-8')
  c = aot.compile_step(cfg, t)
  text = c.compiled.as_text()
  assert '__cudnn$fmhaSoftmax"' in text and '__cudnn$fmhaSoftmaxBackward"' in text
  assert c.kernel_flops == 7 * 2 * B * H * K * T * T
  r = aot.report(c, cfg, t)
  assert r['fits'] and r['mesh'] == {'data': 8, 'fsdp': 1, 'tensor': 1}
  assert r['xla_flops_per_step'] > r['accounting_flops_per_step'] and 0 < r['estimated_mfu'] < 1


def test_the_figures_cache_key_of_a_gpu_step():
  """cuDNN attention's custom_partitioning names its partitioner in the HLO by a Python object id, new in every
  process: the key ignores it (else no cuDNN step is ever read back); h100-8 and h200-8 (both 1x1x8) differ."""
  hlo = 'x = (bf16[8]) custom-call(a), custom_call_target="CustomSPMDPartitioning", backend_config="{}"'
  h100, h200 = aot.parse_target('h100-8'), aot.parse_target('h200-8')
  assert aot._cache_key(hlo.format(140653095906960), h100) == aot._cache_key(hlo.format(140652730150544), h100)
  assert aot._cache_key(hlo.format(1), h100) != aot._cache_key(hlo.format(1), h200)
