"""Parameter counts, FLOPs, memory and time: the numbers of the scale table.

Parameter count (total, as GPT-3 counts it: embeddings included)::

    embed     V D                 token embedding
    pos       P D                 learned positions only (P rows: model.position_table, else T = seq_len)
    per layer D H K + 2 D G K + H K D          attention (q, k, v, o)
              3 D F (swiglu) | 2 D F (gelu)    MLP
              2 D (rmsnorm) | 4 D (layernorm)  the two norms
    final     D (rmsnorm) | 2 D (layernorm)
    head      V D                 untied LM head only

Non-embedding parameters (Kaplan et al. 2020) leave out the token embedding,
the learned position table and an untied LM head.

Training FLOPs per token (forward + backward = 3 x forward), causal-aware::

    C_token = 6 (N_matmul) + 6 L H K (S_avg) * 2
            = 6 N_matmul + 12 L H K S_avg

    N_matmul = L (D H K + 2 D G K + H K D + {3|2} D F) + D V   (the LM head matmul, tied or not)
    S_avg    = mean over query positions i in [0, T) of the keys it attends to
             = (T + 1) / 2 for causal attention; min(i + 1, W) averaged with a sliding window W

The attention term counts QK^T and AV: 2 matmuls x 2 FLOPs per multiply-add x
S_avg keys x K per head, times 3 for training. The embedding lookup, norms,
softmax and elementwise ops are not counted (as in PaLM / MaxText MFU).

Optimizer FLOPs per step (train.optimizer='muon', scaling/train/muon.py): each hidden matrix, L per name,
is orthogonalized once per optimizer step by k = train.muon_ns_steps Newton-Schulz iterations on X of a x b,
a = min(fan_in, fan_out) <= b = max (transposed so), each iteration X <- a0 X + (b0 A + c0 A A) X::

    A = X X^T  2 a^2 b     A A  2 a^3     (b0 A + c0 A A) X  2 a^2 b      ->  k (4 a^2 b + 2 a^3) per matrix

    matrices per layer: q D x HK, k and v D x GK, o HK x D, up D x F (and gate D x F: swiglu), down F x D

Matmul FLOPs only, like the rest (the normalization, the momentum and the elementwise terms are O(a b)); AdamW
is elementwise (0 here). `optimizer_flops_per_step`: a separate term for the MFU, per optimizer step (once per
step whatever train.microbatches): per token it is optimizer_flops_per_step / (batch_size x seq_len).

Compute-optimal tokens: D = 20 N (Hoffmann et al. 2022). Training FLOPs at
that budget: C = C_token x D.

Memory of params + Adam state: 16 bytes per parameter (float32 params,
float32 gradients, two float32 moments); activations are not included there.
`train_step_memory_bytes(cfg)` adds an estimate of one training step's activations (what the
launcher packs runs by, scaling/launch/packing.py), per token of a microbatch, in the compute
dtype (4 bytes; 2 for bfloat16)::

    per layer  6 D + 3 H K + 3 G K + {3|2} F    norms, residuals, q/k/v (and their rotated copies),
                                                the attention output, the MLP's hidden units
               + 2 H T                          scores and probabilities (xla attention only)
    remat      L D + one layer's worth instead of L layers' (the blocks' inputs are kept)
    + 2 D                                       embedding and final norm
    + 2 V per row of a loss chunk               logits and their gradient (train.loss_chunk rows)

An estimate for sizing, not a measurement: XLA fuses and frees some of these, and adds buffers.
"""

from __future__ import annotations

from scaling.base import hardware
from scaling.config.load import position_rows, resolved_dims

TOKENS_PER_PARAM = 20


def _dims(m) -> dict:
  keys = ('vocab_size', 'seq_len', 'num_layers', 'd_model', 'num_heads', 'num_kv_heads', 'norm',
          'position', 'mlp', 'tied_embeddings', 'sliding_window')
  d = {k: getattr(m, k) for k in keys}
  if hasattr(m, 'keys'):   # a ConfigDict: fill the 0 = derived fields; ModelDims has them resolved
    d.update(resolved_dims(m))
  else:
    d.update(head_dim=m.head_dim, d_ff=m.d_ff)
  d['position_rows'] = position_rows(m)   # 0 without learned positions
  return d


def count_params(m) -> dict:
  """Analytic parameter counts for a model config (ConfigDict or ModelDims)."""
  d = _dims(m)
  V, L, D = d['vocab_size'], d['num_layers'], d['d_model']
  H, G, K, F = d['num_heads'], d['num_kv_heads'], d['head_dim'], d['d_ff']
  attn = D * H * K + 2 * D * G * K + H * K * D
  mlp = (3 if d['mlp'] == 'swiglu' else 2) * D * F
  norm = D if d['norm'] == 'rmsnorm' else 2 * D
  per_layer = attn + mlp + 2 * norm
  embed = V * D
  pos = d['position_rows'] * D
  head = 0 if d['tied_embeddings'] else V * D
  total = embed + pos + L * per_layer + norm + head
  return dict(total=total, non_embedding=total - embed - pos - head, embedding=embed, position=pos,
              head=head, per_layer=per_layer, attention_per_layer=attn, mlp_per_layer=mlp)


def avg_attended_keys(seq_len: int, window: int = 0) -> float:
  """Mean number of keys a query attends to under a causal mask (and a sliding window)."""
  T = seq_len
  if not window or window >= T:
    return (T + 1) / 2
  W = window
  # positions 0..W-1 attend to i+1 keys, the rest to W keys
  return (W * (W + 1) / 2 + (T - W) * W) / T


def matmul_params(m) -> int:
  """Parameters used in matmuls per token: the blocks' projections plus the LM head (tied or not)."""
  d = _dims(m)
  p = count_params(m)
  return d['num_layers'] * (p['attention_per_layer'] + p['mlp_per_layer']) + d['vocab_size'] * d['d_model']


def flops_per_token(m, seq_len: int | None = None) -> float:
  """Training FLOPs per token (forward + backward), causal-aware; see the module docstring."""
  d = _dims(m)
  T = seq_len or d['seq_len']
  attn = 12 * d['num_layers'] * d['num_heads'] * d['head_dim'] * avg_attended_keys(T, d['sliding_window'])
  return 6 * matmul_params(m) + attn



def hidden_matrix_shapes(m) -> dict[str, tuple[int, int]]:
  """One layer's hidden matrices (scaling/model/parametrization.py MATRIX_AXES) as (fan_in, fan_out)."""
  d = _dims(m)
  D, H, G, K, F = d['d_model'], d['num_heads'], d['num_kv_heads'], d['head_dim'], d['d_ff']
  out = {'wq_DHK': (D, H * K), 'wk_DGK': (D, G * K), 'wv_DGK': (D, G * K), 'wo_HKD': (H * K, D),
         'w_up_DF': (D, F), 'w_down_FD': (F, D)}
  if d['mlp'] == 'swiglu':
    out['w_gate_DF'] = (D, F)
  return out


def newton_schulz_flops(fan_in: int, fan_out: int, steps: int) -> int:
  """Matmul FLOPs of `steps` quintic Newton-Schulz iterations on one fan_in x fan_out matrix (docstring)."""
  a, b = min(fan_in, fan_out), max(fan_in, fan_out)
  return steps * (4 * a * a * b + 2 * a ** 3)


def optimizer_flops_per_step(m, optimizer: str = 'adamw', ns_steps: int = 5) -> int:
  """The optimizer's matmul FLOPs per optimizer step: Muon's Newton-Schulz on every hidden matrix of every
  layer; 0 for AdamW (elementwise). `m` a model section or ModelDims."""
  if optimizer == 'adamw':
    return 0
  if optimizer != 'muon':
    raise ValueError(f'unknown optimizer {optimizer!r}')
  per_layer = sum(newton_schulz_flops(i, o, ns_steps) for i, o in hidden_matrix_shapes(m).values())
  return _dims(m)['num_layers'] * per_layer


def forward_flops_per_token(m, seq_len: int | None = None) -> float:
  return flops_per_token(m, seq_len) / 3


def train_memory_bytes(m) -> int:
  """float32 params + float32 grads + Adam's two float32 moments (16 bytes/param)."""
  return 16 * count_params(m)['total']


def train_activation_bytes(m, batch_size: int, *, microbatches: int = 1, loss_chunk: int = 0) -> int:
  """Activations one training step keeps for the backward pass (estimate; see the module docstring)."""
  d = _dims(m)
  L, D, V, T = d['num_layers'], d['d_model'], d['vocab_size'], d['seq_len']
  H, G, K, F = d['num_heads'], d['num_kv_heads'], d['head_dim'], d['d_ff']
  get = m.get if hasattr(m, 'get') else lambda name, default=None: getattr(m, name, default)
  per_layer = 6 * D + 3 * H * K + 3 * G * K + (3 if d['mlp'] == 'swiglu' else 2) * F
  if get('attention', 'auto') in ('auto', 'xla'):
    per_layer += 2 * H * min(T, d['sliding_window'] or T)
  layers = L * per_layer if get('remat', 'none') == 'none' else L * D + per_layer
  rows = max(int(batch_size) // max(int(microbatches), 1), 1) * T
  logit_rows = min(int(loss_chunk), rows) if loss_chunk else rows
  elem = 2 if get('dtype', 'auto') == 'bfloat16' else 4
  return elem * (rows * (layers + 2 * D) + 2 * logit_rows * V)


def train_step_memory_bytes(cfg) -> dict:
  """One run's training memory (estimate) from its whole config: {'params_adam', 'activations', 'total'}.

  model.vocab_size 0 (follow the tokenizer) counts data.vocab_size rows (bpe/unigram; also a generous
  bound for char/byte), or 200,000 for tiktoken (its largest encodings).
  """
  import copy
  m = copy.deepcopy(cfg.model)
  if not m.vocab_size:
    with m.unlocked():
      m.vocab_size = 200_000 if str(cfg.data.tokenizer).startswith('tiktoken') else int(cfg.data.vocab_size)
  t = cfg.train
  params_adam = train_memory_bytes(m)
  act = train_activation_bytes(m, t.batch_size, microbatches=t.get('microbatches', 1),
                               loss_chunk=t.get('loss_chunk', 0))
  return dict(params_adam=params_adam, activations=act, total=params_adam + act)


def wallclock_seconds(total_flops: float, accelerator: str, *, devices: int = 1, mfu: float = 0.4,
                      dtype: str = 'bfloat16') -> float:
  peak = hardware.peak_flops(accelerator, dtype)   # a row of the accelerator table (scaling/base/hardware.py)
  return total_flops / (peak * devices * mfu)


def table_row(name: str, m, *, accelerators=('H100', 'H200', 'TPU v5p', 'CPU'), mfu: float = 0.4) -> dict:
  """One row of the scale table (field names documented in README.md)."""
  d = _dims(m)
  p = count_params(m)
  fpt = flops_per_token(m)
  tokens = TOKENS_PER_PARAM * p['total']
  total_flops = fpt * tokens
  row = dict(
      rung=name, layers=d['num_layers'], d_model=d['d_model'], heads=d['num_heads'],
      kv_heads=d['num_kv_heads'], head_dim=d['head_dim'], d_ff=d['d_ff'], vocab=d['vocab_size'],
      seq_len=d['seq_len'], tied=bool(d['tied_embeddings']), parametrization=parametrization_label(m),
      params=p['total'],
      non_embedding_params=p['non_embedding'], flops_per_token=fpt, chinchilla_tokens=tokens,
      train_flops=total_flops, param_adam_bytes=train_memory_bytes(m), assumed_mfu=mfu,
  )
  for acc in accelerators:
    row[f'hours_{acc.replace(" ", "_")}'] = wallclock_seconds(total_flops, acc, mfu=mfu) / 3600
  return row


def parametrization_label(m) -> str:
  """'sp', or 'mup/<base width>' (model.parametrization, model.mup_base_width; 0: this d_model)."""
  par = getattr(m, 'parametrization', 'sp')
  return par if par == 'sp' else f"{par}/{getattr(m, 'mup_base_width', 0) or getattr(m, 'd_model')}"


def human(n: float, unit: str = '') -> str:
  for div, suffix in ((1e24, 'Y'), (1e21, 'Z'), (1e18, 'E'), (1e15, 'P'), (1e12, 'T'), (1e9, 'B' if not unit else 'G'),
                      (1e6, 'M'), (1e3, 'K')):
    if abs(n) >= div:
      return f'{n / div:.3g}{suffix}{unit}'
  return f'{n:.3g}{unit}'


def human_time(hours: float) -> str:
  if hours < 1 / 60:
    return f'{hours * 3600:.0f}s'
  if hours < 1:
    return f'{hours * 60:.0f}m'
  if hours < 48:
    return f'{hours:.1f}h'
  return f'{hours / 24:.1f}d'


def format_table(rows: list[dict]) -> str:
  cols = [('rung', str), ('layers', str), ('d_model', str), ('heads', str), ('kv_heads', str),
          ('head_dim', str), ('d_ff', str), ('vocab', str), ('seq_len', str), ('tied', str),
          ('parametrization', str), ('params', human), ('non_embedding_params', human), ('flops_per_token', human),
          ('chinchilla_tokens', human), ('train_flops', human), ('param_adam_bytes', lambda b: human(b, 'B'))]
  hour_cols = [k for k in rows[0] if k.startswith('hours_')]
  header = ['rung', 'L', 'd', 'H', 'G', 'K', 'd_ff', 'V', 'T', 'tied', 'param.', 'params', 'non-emb', 'FLOPs/tok',
            'tokens (20N)', 'train FLOPs', 'params+Adam'] + [
                k[len('hours_'):].replace('_', ' ') + f' @{int(rows[0]["assumed_mfu"] * 100)}%' for k in hour_cols]
  topo = rows[0].get('topology')   # `scaling table --topology`: compiled for a TPU slice (scaling/train/aot_cli.py)
  if topo:
    header += [f'fits {topo}', 'HBM/chip', 'est. step', 'est. MFU', 'note']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for r in rows:
    cells = [fmt(r[c]) for c, fmt in cols] + [human_time(r[k]) for k in hour_cols]
    if topo:
      cells += topology_cells(r)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def topology_cells(r: dict) -> list[str]:
  """fits / HBM per chip / estimated step / estimated MFU / note of a row compiled for a TPU slice."""
  if r.get('fits') is None:
    return ['-', '-', '-', '-', r.get('note', '')]
  step = r['estimated_step_s']
  return ['yes' if r['fits'] else 'no', human(r['hbm_bytes_per_chip'], 'B'),
          f'{step * 1e3:.3g}ms' if step < 10 else f'{step:.3g}s',
          f'{100 * r["estimated_mfu"]:.0f}%' if r.get('estimated_mfu') else '-', r.get('note', '')]
