"""Hugging Face interop: export a workdir as a Llama checkpoint, import one back.

    scaling export --workdir DIR --out HF_DIR [--step N] [--dtype float32|bfloat16] [--max_shard_size 2GB]
    scaling import --hf HF_DIR --workdir DIR [--config FILE.py[:ARG]]

Every model built with the default architecture (RMSNorm, RoPE, SwiGLU, grouped-
query attention, tied or untied LM head, no biases) is a `LlamaForCausalLM`; other
choices (LayerNorm, learned or no positions, GELU, sliding window) have no Llama
equivalent and are refused with an error naming the config field.

Weight layout. Our block parameters are stacked along a leading layers axis and
keep heads as separate axes; Hugging Face stores one `nn.Linear` weight per
layer as [out_features, in_features] (y = x W^T):

    ours                          HF name (layer i)                          HF shape
    embed_VD                      model.embed_tokens.weight                  [V, D]
    blocks.wq_DHK[i]              model.layers.i.self_attn.q_proj.weight     [H*K, D]
    blocks.wk_DGK[i] / wv_DGK[i]  ... k_proj.weight / v_proj.weight          [G*K, D]
    blocks.wo_HKD[i]              ... o_proj.weight                          [D, H*K]
    blocks.w_gate_DF[i] / w_up_DF ... mlp.gate_proj.weight / up_proj.weight  [F, D]
    blocks.w_down_FD[i]           ... mlp.down_proj.weight                   [D, F]
    blocks.attn_norm.scale[i]     ... input_layernorm.weight                 [D]
    blocks.mlp_norm.scale[i]      ... post_attention_layernorm.weight        [D]
    final_norm.scale              model.norm.weight                          [D]
    lm_head_DV (untied only)      lm_head.weight                             [V, D]

No permutation of the q/k rows is needed: our RoPE rotates the pairs (i, i + K/2)
("rotate_half"), which is exactly what `LlamaAttention` does, and query head h
reads kv head h // (H/G) in both (the tests check the logits against
transformers).

Files. Weights go to `model.safetensors`, or above `--max_shard_size` to
`model-0000k-of-0000n.safetensors` shards with a `model.safetensors.index.json`,
written with the safetensors library (numpy arrays; bfloat16 through ml_dtypes).
Only safetensors are read or written: never pickle (no `pytorch_model.bin`).
A sentencepiece tokenizer is exported as `tokenizer.model` plus a
`tokenizer_config.json` for `LlamaTokenizer` (BPE) that reproduces our ids: no
BOS/EOS added (our documents are only EOS-terminated), `add_prefix_space=False`
and `legacy=False` (our models are trained without sentencepiece's dummy prefix,
with identity normalization). A unigram model gets `PreTrainedTokenizerFast`,
which transformers builds from the sentencepiece proto. char/byte/tiktoken
tokenizers have no Llama form: the weights are exported without a tokenizer.

μP. A model trained with model.parametrization='mup' exports as a plain Llama: its forward
multipliers are folded into the exported weights (`mup_folding`): the attention logit factor
into q_proj (RoPE is linear, so scaling q before or after it is the same), the output
multiplier into lm_head. A tied μP model whose output multiplier is not 1 is exported untied
(embed_tokens the embedding, lm_head the embedding times the multiplier), since one tensor
cannot be both. The hidden matrices' init and learning-rate rules do not change the forward,
so nothing else moves. `scaling import` then gives an 'sp' model with the same logits.

Both directions write into a temporary folder beside the target and rename it at
the end, so a failure leaves nothing at the target. Before the rename, the folder and
its files get the modes that mkdir/open give under the process umask (755/644 under
the usual 022), not the private 700/600 of mkdtemp and safetensors.

The code: hf.py holds what both directions share (file names, HFError, the layer prefix, the target
folders); hf_export.py writes a workdir's checkpoint as Llama (`scaling export`); hf_import.py reads
one back into a workdir (`scaling import`).
"""

from __future__ import annotations

import os
import pathlib
import tempfile

WEIGHTS_NAME = 'model.safetensors'
INDEX_NAME = 'model.safetensors.index.json'
CONFIG_NAME = 'config.json'
SPM_FILE = 'tokenizer.model'


class HFError(ValueError):
  """Bad export/import input; the message names the problem and the fix."""


def _layer(i: int) -> str:
  return f'model.layers.{i}.'


# ----------------------------------------------------------------------------- target folders
def _check_target(path: pathlib.Path, what: str) -> None:
  if path.exists() and (not path.is_dir() or any(path.iterdir())):
    raise HFError(f'{what} {path} already exists and is not empty; give a new or empty folder')


def _tmp_beside(path: pathlib.Path) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  return pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.tmp-', dir=path.parent))


def _umask() -> int:
  """The process umask, read without changing it where Linux shows it (os.umask alone must set one)."""
  try:
    with open('/proc/self/status', encoding='ascii') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _modes_as_umask_allows(root: pathlib.Path) -> None:
  """Folders 0777 and files 0666 less the umask under `root`, as a plain mkdir/open would make them:
  mkdtemp makes its folder private (0700) and safetensors writes its files 0600."""
  mask = _umask()
  for dirpath, _, filenames in os.walk(root):
    os.chmod(dirpath, 0o777 & ~mask)
    for name in filenames:
      path = os.path.join(dirpath, name)
      if not os.path.islink(path):
        os.chmod(path, 0o666 & ~mask)


def _move_into_place(tmp: pathlib.Path, path: pathlib.Path, what: str) -> None:
  _modes_as_umask_allows(tmp)
  if path.exists():
    _check_target(path, what)  # still empty (nobody wrote there meanwhile)
    path.rmdir()
  os.replace(tmp, path)
