"""The coordinate check (Yang et al. 2022, "Tensor Programs V", section 5): do a model's activations
keep their size as it gets wider, at init and over the first steps of training?

    scaling coordcheck --config SPEC --widths 64,128,256,512 --steps 10 [--out DIR]

For each parametrization (sp, mup) and width, the config's model at d_model = width (head_dim fixed
at the config's, heads = width / head_dim, kv heads and d_ff in the config's ratios, mup_base_width
= the smallest width unless the config sets one) trains `steps` AdamW steps from its real init, with
a constant lr (the config's train.lr), no warmup and no gradient clipping, so the per-width rules
are what is measured. Before the first step and after each, a fixed probe batch goes through the
model and the RMS of these activations is recorded:

    embedding       the embedding output (input to the first block)
    attention/<i>   block i's attention output (what it adds to the residual stream)
    mlp/<i>         block i's MLP output
    logits          the LM head's logits

together with the RMS of each one's change since the previous step (`delta`, the per-step update
of the activation on the same inputs). Under μP both stay of the same size at every width (flat
curves); under SP the hidden updates grow ~ width and the logits with them.

Writes DIR/coordcheck.jsonl (one row per parametrization, width, step, activation), DIR/COORDCHECK.md
(a table per parametrization: RMS per activation kind and width at selected steps, and the ratio
max/min across widths), DIR/coordcheck.png (activations) and DIR/coordcheck_updates.png (deltas):
one panel per kind, width on the x axis, a line per step, SP and μP side by side.

Data: `--data corpus` (default) takes batches of the config's training split (prepared as for
`scaling train`); `--data zipf` draws i.i.d. tokens from a Zipf unigram law (no corpus needed; the
model can learn the unigram, so the updates have a consistent direction, as with text).
"""

from __future__ import annotations

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from scaling.config.load import ConfigError
from scaling.model import transformer as model_lib
from scaling.train import optim

KINDS = ('embedding', 'attention', 'mlp', 'logits')
PARAMETRIZATIONS = ('sp', 'mup')


def kind_of(name: str) -> str:
  return name.split('/')[0]


def width_config(cfg, width: int, parametrization: str, base_width: int):
  """The config at d_model = `width`: head_dim fixed (heads = width / head_dim), kv heads and d_ff
  in the config's ratios; constant lr, no warmup, no clipping."""
  from scaling.config.load import resolved_dims, validate_config
  m = cfg.model
  dims = resolved_dims(m)
  head_dim, ratio = dims['head_dim'], m.num_heads // m.num_kv_heads
  if width % head_dim or (width // head_dim) % ratio:
    raise ConfigError(f'coordcheck width {width}: the head_dim {head_dim} (kept fixed) must divide it into a '
                      f'head count divisible by num_heads / num_kv_heads = {ratio}; pick widths that are '
                      f'multiples of {head_dim * ratio}')
  c = cfg.copy_and_resolve_references()
  with c.unlocked():
    c.model.d_model, c.model.head_dim = width, head_dim
    c.model.num_heads = width // head_dim
    c.model.num_kv_heads = c.model.num_heads // ratio
    c.model.d_ff = max(1, round(dims['d_ff'] * width / m.d_model))
    c.model.parametrization = parametrization
    c.model.mup_base_width = base_width
    c.train.schedule, c.train.warmup_steps, c.train.grad_clip = 'constant', 0, 0.0
  validate_config(c)
  return c


def activations(model: model_lib.Transformer, tokens_BT) -> dict[str, jax.Array]:
  """name -> activation of one forward pass, block by block (the path of Transformer.hidden, unrolled)."""
  dims = model.dims
  B, T = tokens_BT.shape
  positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  x_BTD = model.embed(tokens_BT, positions_BT)
  out = {'embedding': x_BTD}
  graphdef, params = nnx.split(model.blocks)
  for i in range(dims.num_layers):
    block = nnx.merge(graphdef, jax.tree.map(lambda a: a[i], params))
    h_BTD, _ = block.attention(block.attn_norm(x_BTD), positions_BT, None, None)
    x_BTD = x_BTD + h_BTD
    f_BTD = block.mlp(block.mlp_norm(x_BTD))
    x_BTD = x_BTD + f_BTD
    out[f'attention/{i}'], out[f'mlp/{i}'] = h_BTD, f_BTD
  out['logits'] = model.logits(model.final_norm(x_BTD))
  return out


def rms(x) -> jax.Array:
  x = x.astype(jnp.float32)
  return jnp.sqrt(jnp.mean(x * x))


def zipf_batches(vocab: int, batch: int, seq_len: int, seed: int):
  """Endless {'inputs', 'targets'} batches of i.i.d. tokens, P(token i) ~ 1 / (i + 1)."""
  rng = np.random.default_rng(seed)
  p = 1.0 / np.arange(1, vocab + 1)
  p /= p.sum()
  while True:
    w = rng.choice(vocab, size=(batch, seq_len + 1), p=p).astype(np.int32)
    yield {'inputs': w[:, :-1], 'targets': w[:, 1:]}


def corpus_batches(cfg, batch: int):
  """Endless train batches of the config's corpus (prepared if needed), in the training order."""
  from scaling.data.loader import make_train_loader
  from scaling.data.prepare import prepare
  summary = prepare(cfg.data, verbose=False)
  loader = make_train_loader(summary['data_dir'], seq_len=cfg.model.seq_len, batch_size=batch, seed=cfg.train.seed)
  for b in loader:
    yield {'inputs': np.asarray(b['inputs']), 'targets': np.asarray(b['targets'])}


def _loss(model, batch):
  logits = model(batch['inputs'])
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets']).mean()


def measure_width(cfg, batches: list[dict], probe_BT) -> list[dict]:
  """Trains len(batches) steps; returns one row per (step 0..len(batches), activation)."""
  dims = model_lib.ModelDims.from_config(cfg.model)
  model = model_lib.build_model(dims, seed=cfg.train.seed)
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)   # nnx.merge takes the pure dict back (as scaling/train/loop.py does)
  tx, _ = optim.make_optimizer(cfg.train, len(batches), dims)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    grads = jax.grad(lambda p: _loss(nnx.merge(graphdef, p), batch))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def probe(params):
    return activations(nnx.merge(graphdef, params), probe_BT)

  rows, prev = [], None
  for t in range(len(batches) + 1):
    if t:
      params, opt_state = step(params, opt_state, batches[t - 1])
    acts = probe(params)
    for name, a in acts.items():
      delta = float(rms(a - prev[name])) if prev is not None else float('nan')
      rows.append(dict(step=t, name=name, kind=kind_of(name), rms=float(rms(a)), delta=delta))
    prev = acts
  return rows


def coordcheck(cfg, widths: list[int], steps: int, *, parametrizations=PARAMETRIZATIONS, data: str = 'corpus',
               batch_size: int = 0, log=print) -> list[dict]:
  """Rows {parametrization, width, step, name, kind, rms, delta} for every width and parametrization;
  every run sees the same batches and probe (the first batch)."""
  if len(widths) < 2 or sorted(set(widths)) != list(widths):
    raise ConfigError(f'coordcheck --widths must be at least two increasing widths, got {widths}')
  if steps < 1:
    raise ConfigError(f'coordcheck --steps must be >= 1, got {steps}')
  base = cfg.model.mup_base_width or widths[0]
  batch = batch_size or cfg.train.batch_size
  first = width_config(cfg, widths[0], parametrizations[0], base)   # checks the data settings once
  if data == 'zipf':
    if not first.model.vocab_size:
      raise ConfigError('coordcheck --data zipf needs model.vocab_size > 0 (no tokenizer is built)')
    gen = zipf_batches(first.model.vocab_size, batch, first.model.seq_len, cfg.train.seed)
  elif data == 'corpus':
    gen = corpus_batches(first, batch)
  else:
    raise ConfigError(f'coordcheck --data {data!r}: choose corpus or zipf')
  batches = [next(gen) for _ in range(steps)]
  if not first.model.vocab_size:   # the tokenizer decided it: prepared by corpus_batches
    from scaling.data.prepare import prepare
    from scaling.data.tokenizer import load_tokenizer
    with cfg.model.unlocked():
      cfg.model.vocab_size = load_tokenizer(prepare(cfg.data, verbose=False)['data_dir']).vocab_size
  probe_BT = jnp.asarray(batches[0]['inputs'])
  rows = []
  for par in parametrizations:
    for w in widths:
      log(f'coordcheck: {par} d_model={w} ({steps} steps)')
      for r in measure_width(width_config(cfg, w, par, base), batches, probe_BT):
        rows.append(dict(parametrization=par, width=w, **r))
  return rows


# ----------------------------------------------------------------------------- summaries
def kind_curves(rows: list[dict], stat: str = 'rms') -> dict:
  """(parametrization, kind) -> {step: {width: mean over that kind's layers of `stat`}}."""
  acc: dict = {}
  for r in rows:
    if math.isnan(r[stat]):
      continue
    acc.setdefault((r['parametrization'], r['kind']), {}).setdefault(r['step'], {}).setdefault(
        r['width'], []).append(r[stat])
  return {key: {t: {w: float(np.mean(v)) for w, v in sorted(by_w.items())} for t, by_w in sorted(steps.items())}
          for key, steps in acc.items()}


def width_ratios(rows: list[dict], stat: str = 'rms', steps=None) -> dict:
  """(parametrization, name) -> the largest max/min ratio of `stat` across widths over `steps`
  (default every step with a value), per activation (each layer on its own)."""
  by: dict = {}
  for r in rows:
    if math.isnan(r[stat]) or (steps is not None and r['step'] not in steps):
      continue
    by.setdefault((r['parametrization'], r['name'], r['step']), []).append(r[stat])
  out: dict = {}
  for (par, name, _), vals in by.items():
    ratio = max(vals) / min(vals) if min(vals) > 0 else float('inf')
    out[(par, name)] = max(out.get((par, name), 0.0), ratio)
  return out


def growth(rows: list[dict], name: str, step: int, parametrization: str, stat: str = 'rms') -> float:
  """`stat` of one activation at `step`: widest / narrowest width (> 1: grows with width)."""
  vals = {r['width']: r[stat] for r in rows if r['name'] == name and r['step'] == step
          and r['parametrization'] == parametrization}
  return vals[max(vals)] / vals[min(vals)]


# ----------------------------------------------------------------------------- outputs
def table_md(rows: list[dict], steps_shown=None) -> str:
  """COORDCHECK.md: per parametrization and stat, the RMS per kind (mean over its layers) and width at
  selected steps, and the worst max/min ratio across widths over steps 1.. (after the first update)."""
  widths = sorted({r['width'] for r in rows})
  last = max(r['step'] for r in rows)
  steps_shown = steps_shown or sorted({0, 1, last // 2, last})
  out = ['# Coordinate check', '',
         f'Widths {", ".join(map(str, widths))} ({widths[-1] // widths[0]}x), steps 0..{last}; RMS of each '
         'activation on a fixed probe batch (`rms`) and of its change since the previous step (`delta`), the '
         'attention and MLP outputs averaged over the layers. `ratio` is max/min across widths, the worst '
         f'over steps 1..{last} (`step 0 ratio`: at init).', '']
  ratios = {stat: width_ratios(rows, stat, steps=range(1, last + 1)) for stat in ('rms', 'delta')}
  init = width_ratios(rows, 'rms', steps=[0])
  for par in sorted({r['parametrization'] for r in rows}, key=PARAMETRIZATIONS.index):
    for stat in ('rms', 'delta'):
      curves = kind_curves([r for r in rows if r['parametrization'] == par], stat)
      out += [f'## {par}: {stat}', '',
              '| kind | step | ' + ' | '.join(f'd={w}' for w in widths) + ' |',
              '|---|---|' + '---|' * len(widths)]
      for kind in KINDS:
        for t in steps_shown:
          vals = curves.get((par, kind), {}).get(t)
          if vals:
            out.append(f'| {kind} | {t} | ' + ' | '.join(f'{vals[w]:.4g}' for w in widths) + ' |')
      out += ['', '| activation | ratio (steps 1..) |' + (' step 0 ratio |' if stat == 'rms' else ''),
              '|---|---|' + ('---|' if stat == 'rms' else '')]
      for (p, name), v in sorted(ratios[stat].items()):
        if p == par:
          out.append(f'| {name} | {v:.3g} |' + (f' {init[(p, name)]:.3g} |' if stat == 'rms' else ''))
      out.append('')
  return '\n'.join(out)


def plot(rows: list[dict], path, stat: str = 'rms') -> None:
  """One panel per activation kind (columns) and parametrization (rows): `stat` against width, a line per step."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  pars = [p for p in PARAMETRIZATIONS if any(r['parametrization'] == p for r in rows)]
  fig, axes = plt.subplots(len(pars), len(KINDS), figsize=(4 * len(KINDS), 3.2 * len(pars)), squeeze=False)
  last = max(r['step'] for r in rows)
  cmap = plt.get_cmap('viridis')
  for i, par in enumerate(pars):
    curves = kind_curves([r for r in rows if r['parametrization'] == par], stat)
    for j, kind in enumerate(KINDS):
      ax = axes[i][j]
      for t, by_w in curves.get((par, kind), {}).items():
        ws = sorted(by_w)
        ax.plot(ws, [by_w[w] for w in ws], marker='o', ms=3, color=cmap(t / max(last, 1)), label=f't={t}')
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_title(f'{par}: {kind}')
      ax.set_xlabel('width (d_model)')
      if j == 0:
        ax.set_ylabel(f'{stat} ' + ('of the activation' if stat == 'rms' else 'of its per-step change'))
  axes[0][-1].legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_outputs(rows: list[dict], out_dir) -> dict:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {'rows': out / 'coordcheck.jsonl', 'table': out / 'COORDCHECK.md', 'png': out / 'coordcheck.png',
           'updates_png': out / 'coordcheck_updates.png'}
  with open(paths['rows'], 'w') as f:
    for r in rows:
      f.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}) + '\n')
  paths['table'].write_text(table_md(rows) + '\n')
  plot(rows, paths['png'], 'rms')
  plot(rows, paths['updates_png'], 'delta')
  return paths


def _ints(text: str) -> list[int]:
  try:
    return [int(x) for x in text.split(',') if x.strip()]
  except ValueError:
    raise ConfigError(f'coordcheck --widths {text!r}: expected comma-separated integers, e.g. 64,128,256,512') from None


def add_coordcheck_args(p) -> None:
  p.add_argument('--widths', default='64,128,256,512', help='comma-separated d_model values (increasing)')
  p.add_argument('--steps', type=int, default=10, help='optimizer steps per width (constant lr = train.lr)')
  p.add_argument('--parametrizations', default='sp,mup', help='comma-separated: sp, mup')
  p.add_argument('--data', default='corpus', choices=('corpus', 'zipf'),
                 help="corpus: the config's training split; zipf: i.i.d. Zipf tokens (no corpus)")
  p.add_argument('--batch_size', type=int, default=0, help='sequences per step (0: train.batch_size)')
  p.add_argument('--out', default='coordcheck', help='output directory (table, rows, PNGs)')


def run_coordcheck(args, overrides) -> int:
  from scaling.config.load import load_config
  cfg = load_config(args.config, overrides)
  pars = tuple(p.strip() for p in args.parametrizations.split(',') if p.strip())
  if not pars or any(p not in PARAMETRIZATIONS for p in pars):
    raise ConfigError(f'coordcheck --parametrizations {args.parametrizations!r}: choose from sp, mup')
  rows = coordcheck(cfg, _ints(args.widths), args.steps, parametrizations=pars, data=args.data,
                    batch_size=args.batch_size)
  paths = write_outputs(rows, args.out)
  print(table_md(rows))
  print('wrote ' + ', '.join(str(p) for p in paths.values()))
  return 0
