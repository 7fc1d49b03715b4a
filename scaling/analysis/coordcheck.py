"""The coordinate check (Yang et al. 2022, "Tensor Programs V", section 5; Dey et al. 2025 for depth): do a
model's activations and their updates keep their size as it gets wider and deeper, at init and over training?

    scaling coordcheck --config SPEC [--widths 32,64,128,256] [--depths 2,4,8] [--parametrizations sp,mup,completep]
                       [--steps 300] [--record_every 25] [--data corpus|zipf] [--out DIR]

Two sweeps, each run for every parametrization (sp, mup, completep):

    width   the config's depth, d_model = each of --widths (head_dim fixed at the config's, heads = width /
            head_dim, kv heads and d_ff in the config's ratios)
    depth   the config's width, num_layers = each of --depths

with mup_base_width = the smallest width and mup_base_depth = the config's depth in the width sweep, and
mup_base_depth = the smallest depth and mup_base_width = the config's width in the depth sweep (unless the
config sets them): each sweep moves one multiplier and keeps the other at 1, so the depth sweep's μP is SP (μP
has no depth rule) and CompleteP at the base shape is SP bit for bit; such runs train once (run_key). Every run starts from the real init and trains `steps` steps of the config's optimizer on
the same batches, with a constant lr (the config's train.lr), no warmup and no gradient clipping: a schedule
or a clip would rescale the updates by an amount that depends on the run, and the per-width and per-depth
rules themselves are what is measured.

At step 0, step 1 and every `record_every` steps (and the last), a fixed probe batch (the first training
batch) goes through the model before and after that step and, per activation

    embedding       the embedding output (input to the first block)
    attention/<i>   what block i's attention branch adds to the residual stream (CompleteP's 1/d included)
    mlp/<i>         what block i's MLP branch adds
    residual        the residual stream after the last block (before the final norm)
    logits          the LM head's logits

the record holds `rms` (of the activation after the step), `delta` (RMS of its change over that one step,
params t-1 -> t, on the same inputs), `rel` = delta / rms (the update relative to the activation) and `drift`
(RMS of its change since init, x_t - x_0: TP5's coordinate-check quantity). Per parameter (and per layer of the
stacked block parameters) it holds the step's relative weight update in the Frobenius norm, ||dW||_F / ||W||_F,
and for matrices in the spectral norm, ||dW||_2 / ||W||_2 (the spectral condition of Yang, Simon and Bernstein
2023: Theta(1) under μP for the hidden matrices).

Writes DIR/coordcheck.jsonl (one row per parametrization, sweep, shape, recorded step and activation or
parameter), DIR/COORDCHECK.md (scaling/analysis/coordcheck_table.py: the fitted exponents of each kind's RMS
and relative update against width and against depth, with their spread over the recorded steps and the
max/min across the sweep) and the PNGs of scaling/analysis/coordcheck_plots.py.

Data: `--data corpus` (default) takes batches of the config's training split with its tokenizer, vocabulary
and context (prepared as for `scaling train`); `--data zipf` draws i.i.d. tokens from a Zipf unigram law (no
corpus needed, model.vocab_size must be set).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from scaling.analysis import coordcheck_plots, coordcheck_table
from scaling.config.load import ConfigError
from scaling.model import parametrization as par_lib
from scaling.model import transformer as model_lib
from scaling.train import optim

KINDS = coordcheck_table.KINDS   # embedding, attention, mlp, residual, logits
PARAMETRIZATIONS = ('sp', 'mup', 'completep')
SWEEPS = ('width', 'depth')


def kind_of(name: str) -> str:
  return name.split('/')[0]


def shape_config(cfg, width: int, depth: int, parametrization: str, base_width: int, base_depth: int):
  """The config at d_model = `width` and num_layers = `depth`: head_dim fixed (heads = width / head_dim), kv
  heads and d_ff in the config's ratios; constant lr, no warmup, no clipping."""
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
    c.model.d_model, c.model.head_dim, c.model.num_layers = width, head_dim, depth
    c.model.num_heads = width // head_dim
    c.model.num_kv_heads = c.model.num_heads // ratio
    c.model.d_ff = max(1, round(dims['d_ff'] * width / m.d_model))
    c.model.parametrization = parametrization
    c.model.mup_base_width, c.model.mup_base_depth = base_width, base_depth
    c.train.schedule, c.train.warmup_steps, c.train.grad_clip = 'constant', 0, 0.0
  validate_config(c)
  return c


def width_config(cfg, width: int, parametrization: str, base_width: int):
  """shape_config at the config's depth (its own base depth)."""
  depth = cfg.model.num_layers
  return shape_config(cfg, width, depth, parametrization, base_width, cfg.model.mup_base_depth or depth)


def run_key(cfg) -> str:
  """Equal for two configs that train the same model bit for bit: μP and CompleteP at their base shape (every
  multiplier 1) are SP (tests/test_mup.py, tests/test_completep.py), so they share SP's key and run once."""
  dims = model_lib.ModelDims.from_config(cfg.model)
  model = cfg.model.to_dict()
  if (all(v == par_lib.ONE for v in par_lib.multipliers(dims).values()) and par_lib.residual_multiplier(dims) == 1
      and par_lib.output_multiplier(dims) == 1 and par_lib.attention_logit_multiplier(dims) == 1):
    model.update(parametrization='sp', mup_base_width=0, mup_base_depth=0)
  return json.dumps({'model': model, 'train': cfg.train.to_dict(), 'data': cfg.data.to_dict()}, sort_keys=True,
                    default=str)


# ----------------------------------------------------------------------------- measurements
def activations(model: model_lib.Transformer, tokens_BT) -> dict[str, jax.Array]:
  """name -> activation of one forward pass, block by block (the path of Transformer.hidden, a scan over the
  layers that also returns each branch's output)."""
  dims = model.dims
  B, T = tokens_BT.shape
  r = model_lib.residual_multiplier(dims)   # CompleteP's 1/d on each branch (1 otherwise)
  positions_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  x_BTD = model.embed(tokens_BT, positions_BT)
  graphdef, params = nnx.split(model.blocks)

  def body(x_BTD, layer_params):
    block = nnx.merge(graphdef, layer_params)
    h_BTD = r * block.attention(block.attn_norm(x_BTD), positions_BT, None, None)[0]
    x_BTD = x_BTD + h_BTD
    f_BTD = r * block.mlp(block.mlp_norm(x_BTD))
    return x_BTD + f_BTD, (h_BTD, f_BTD)

  out = {'embedding': x_BTD}
  x_BTD, (h_LBTD, f_LBTD) = jax.lax.scan(body, x_BTD, params)
  for i in range(dims.num_layers):
    out[f'attention/{i}'], out[f'mlp/{i}'] = h_LBTD[i], f_LBTD[i]
  out['residual'] = x_BTD
  out['logits'] = model.logits(model.final_norm(x_BTD))
  return out


def rms(x) -> jax.Array:
  x = x.astype(jnp.float32)
  return jnp.sqrt(jnp.mean(x * x))


def relative_update(prev, cur) -> jax.Array:
  """RMS(cur - prev) / RMS(cur): the size of an activation's change relative to the activation."""
  return rms(cur.astype(jnp.float32) - prev.astype(jnp.float32)) / rms(cur)


def weight_updates(old, new) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
  """name -> (||new - old||_F / ||old||_F, ||new - old||_2 / ||old||_2 or None), on the host (numpy: nothing to
  compile per shape), each of shape [L] for the stacked block parameters (one value per layer) and [] for the
  others. The spectral norm is taken of every matrix: the hidden ones as [prod(input axes), prod(output axes)]
  per layer (scaling/model/parametrization.py MATRIX_AXES), the embedding and the head. BLAS/LAPACK on one
  thread: these matrices are small, and on a loaded machine a thread pool's spinning cost ~100x the CPU time."""
  import threadpoolctl
  with threadpoolctl.threadpool_limits(1):
    return _weight_updates(old, new)


def _weight_updates(old, new) -> dict:
  out = {}
  for path, a in jax.tree_util.tree_flatten_with_path(old)[0]:
    keys = [str(getattr(k, 'key', k)) for k in path]
    b = new
    for k in keys:
      b = b[k]
    a = np.asarray(a, np.float64)
    d = np.asarray(b, np.float64) - a
    stacked, leaf = keys[0] == 'blocks', keys[-1]
    axes = tuple(range(1, a.ndim)) if stacked else None
    frob = np.sqrt(np.sum(d * d, axis=axes) / np.sum(a * a, axis=axes))
    spec = None
    if stacked and leaf in par_lib.MATRIX_AXES or not stacked and a.ndim == 2:
      if stacked:
        ins, outs = par_lib.MATRIX_AXES[leaf]
        shape = (a.shape[0], math.prod(a.shape[i] for i in ins), math.prod(a.shape[i] for i in outs))
        a, d = a.reshape(shape), d.reshape(shape)
      spec = np.linalg.norm(d, 2, axis=(-2, -1)) / np.linalg.norm(a, 2, axis=(-2, -1))
    out['.'.join(keys[1:] if stacked else keys)] = (frob, spec)
  return out


def _loss(model, batch):
  logits = model(batch['inputs'])
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets']).mean()


def record_steps(steps: int, every: int) -> list[int]:
  """0, 1, every, 2 every, ..., and the last step."""
  return sorted({0, 1, steps, *range(every, steps + 1, max(every, 1))})


def _act_rows(t, stats) -> list[dict]:
  """stats: name -> (rms, RMS of the step's change, RMS of the change since init), on the host."""
  rows = []
  for name, (r, delta, drift) in jax.device_get(stats).items():
    r, delta, drift = float(r), (float(delta) if t else float('nan')), (float(drift) if t else 0.0)
    rows.append(dict(step=t, name=name, kind=kind_of(name), rms=r, delta=delta,
                     rel=delta / r if r > 0 else float('nan'), drift=drift))
  return rows


def _weight_rows(t, ups) -> list[dict]:
  rows = []
  for name, (frob, spec) in ups.items():
    frob, stacked = np.asarray(frob), np.ndim(frob) == 1
    spec = None if spec is None else np.asarray(spec)
    for i in range(len(frob) if stacked else 1):
      f, s = (frob[i], None if spec is None else spec[i]) if stacked else (frob, spec)
      rows.append(dict(step=t, name=f'{name}/{i}' if stacked else name, kind='weight', param=name,
                       dw=float(f), dw_spec=None if s is None else float(s)))
  return rows


def measure(cfg, batches: list[dict], probe_BT, record: list[int]) -> list[dict]:
  """Trains len(batches) steps; one row per (recorded step, activation) and per (recorded step >= 1,
  parameter[/layer])."""
  dims = model_lib.ModelDims.from_config(cfg.model)
  graphdef, state = nnx.split(model_lib.build_model(dims, seed=cfg.train.seed))
  params = nnx.to_pure_dict(state)   # nnx.merge takes the pure dict back (as scaling/train/loop.py does)
  tx, _ = optim.make_optimizer(cfg.train, len(batches), dims)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    grads = jax.grad(lambda p: _loss(nnx.merge(graphdef, p), batch))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def probe(params, before, init):   # one program per run: the activations and their statistics
    acts = activations(nnx.merge(graphdef, params), probe_BT)
    return acts, {n: jnp.stack([rms(a), rms(a - before[n]), rms(a - init[n])]) for n, a in acts.items()}

  acts = init = jax.eval_shape(lambda p: activations(nnx.merge(graphdef, p), probe_BT), params)
  acts = init = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), acts)
  acts, stats = probe(params, acts, init)
  init, rows, recorded = acts, _act_rows(0, stats), set(record)
  for t in range(1, len(batches) + 1):
    if t in recorded:
      before = acts if t - 1 in recorded else probe(params, init, init)[0]
      old = jax.device_get(params)
    params, opt_state = step(params, opt_state, batches[t - 1])
    if t in recorded:
      acts, stats = probe(params, before, init)
      rows += _act_rows(t, stats) + _weight_rows(t, weight_updates(old, jax.device_get(params)))
  return rows


# ----------------------------------------------------------------------------- the sweeps
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


def _batches(cfg, data: str, batch: int, steps: int) -> list[dict]:
  """`steps` batches of the config's data; fills cfg.model.vocab_size from the tokenizer where it is 0."""
  if data == 'zipf':
    if not cfg.model.vocab_size:
      raise ConfigError('coordcheck --data zipf needs model.vocab_size > 0 (no tokenizer is built)')
    gen = zipf_batches(cfg.model.vocab_size, batch, cfg.model.seq_len, cfg.train.seed)
  elif data == 'corpus':
    gen = corpus_batches(cfg, batch)
  else:
    raise ConfigError(f'coordcheck --data {data!r}: choose corpus or zipf')
  batches = [next(gen) for _ in range(steps)]
  if not cfg.model.vocab_size:   # the tokenizer decided it: prepared by corpus_batches
    from scaling.data.prepare import prepare
    from scaling.data.tokenizer import load_tokenizer
    with cfg.model.unlocked():
      cfg.model.vocab_size = load_tokenizer(prepare(cfg.data, verbose=False)['data_dir']).vocab_size
  return batches


def _check_axis(flag: str, values: list[int]) -> None:
  if values and (len(values) < 2 or sorted(set(values)) != list(values) or values[0] < 1):
    raise ConfigError(f'coordcheck --{flag} must be at least two increasing positive values, got {values}')


def coordcheck(cfg, widths: list[int], steps: int, *, depths=(), parametrizations=PARAMETRIZATIONS,
               data: str = 'corpus', batch_size: int = 0, record_every: int = 1, cache: dict | None = None,
               log=print, on_rows=None) -> list[dict]:
  """Rows {parametrization, sweep, width, depth, step, name, kind, ...} of the width sweep (at the config's
  depth) and the depth sweep (at the config's width); every run sees the same batches and probe (the first
  batch). Runs that are the same model bit for bit on the same data (run_key) train once; `cache` (run key ->
  rows, filled here) carries them across calls; `on_rows(rows)` gets each run's rows as it finishes."""
  widths, depths = list(widths), list(depths)
  _check_axis('widths', widths)
  _check_axis('depths', depths)
  if not widths and not depths:
    raise ConfigError('coordcheck: nothing to sweep (give --widths, --depths or both)')
  if steps < 1 or record_every < 1:
    raise ConfigError(f'coordcheck --steps and --record_every must be >= 1, got {steps}, {record_every}')
  cfg = cfg.copy_and_resolve_references()
  m = cfg.model
  # (sweep, width, depth, base width, base depth): each sweep's own axis has its smallest value as the base and
  # the other axis is at its base (multiplier 1), unless the config sets the bases
  shapes = [('width', w, m.num_layers, m.mup_base_width or widths[0], m.mup_base_depth or m.num_layers)
            for w in widths] + [('depth', m.d_model, d, m.mup_base_width or m.d_model, m.mup_base_depth or depths[0])
                                for d in depths]
  first = shape_config(cfg, *shapes[0][1:3], parametrizations[0], *shapes[0][3:])   # checks the data settings
  batches = _batches(first, data, batch_size or cfg.train.batch_size, steps)
  with cfg.model.unlocked():
    cfg.model.vocab_size = first.model.vocab_size
  probe_BT, record, rows = jnp.asarray(batches[0]['inputs']), record_steps(steps, record_every), []
  done = {} if cache is None else cache
  data_key = f'|{data}|{batch_size or cfg.train.batch_size}|{steps}|{record}'
  # cheapest shapes first (width^2 x depth), every parametrization at each: a run cut short keeps whole
  # comparisons over the smaller range (the rows of each finished run go to on_rows)
  for sweep, w, d, base_w, base_d in sorted(shapes, key=lambda s: s[1] ** 2 * s[2]):
    for par in parametrizations:
      c = shape_config(cfg, w, d, par, base_w, base_d)
      key = run_key(c) + data_key
      if key not in done:
        log(f'coordcheck: {par} d_model={w} num_layers={d} ({steps} steps)')
        done[key] = measure(c, batches, probe_BT, record)
      new = [dict(parametrization=par, sweep=sweep, width=w, depth=d, **r) for r in done[key]]
      rows += new
      if on_rows:
        on_rows(new)
  return rows


# ----------------------------------------------------------------------------- outputs and the command
def write_outputs(rows: list[dict], out_dir, meta: dict | None = None) -> dict:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {'rows': out / 'coordcheck.jsonl', 'table': out / 'COORDCHECK.md'}
  _write_rows(paths['rows'], rows, 'w')
  if meta:
    (out / 'meta.json').write_text(json.dumps(meta, indent=1) + '\n')
  paths['table'].write_text(coordcheck_table.table_md(rows, meta) + '\n')
  paths.update(coordcheck_plots.plot_all(rows, out))
  return paths


def _write_rows(path, rows: list[dict], mode: str) -> None:
  with open(path, mode) as f:
    for r in rows:
      f.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}) + '\n')


def read_rows(path) -> list[dict]:
  """The rows of a coordcheck.jsonl (None back to nan)."""
  return [{k: (float('nan') if v is None and k in ('delta', 'rel') else v) for k, v in json.loads(line).items()}
          for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def _ints(flag: str, text: str) -> list[int]:
  try:
    return [int(x) for x in text.split(',') if x.strip()]
  except ValueError:
    raise ConfigError(f'coordcheck --{flag} {text!r}: expected comma-separated integers, e.g. 32,64,128') from None


def add_coordcheck_args(p) -> None:
  p.add_argument('--widths', default='32,64,128,256',
                 help="comma-separated d_model values (increasing), at the config's depth; '' skips the sweep")
  p.add_argument('--depths', default='2,4,8',
                 help="comma-separated num_layers values (increasing), at the config's width; '' skips the sweep")
  p.add_argument('--steps', type=int, default=300, help='optimizer steps per run (constant lr = train.lr)')
  p.add_argument('--record_every', type=int, default=25,
                 help='record steps 0, 1, N, 2N, ... and the last (each record: the probe before and after '
                      'that step)')
  p.add_argument('--parametrizations', default=','.join(PARAMETRIZATIONS), help='comma-separated: sp, mup, completep')
  p.add_argument('--data', default='corpus', choices=('corpus', 'zipf'),
                 help="corpus: the config's training split and tokenizer; zipf: i.i.d. Zipf tokens (no corpus)")
  p.add_argument('--batch_size', type=int, default=0, help='sequences per step (0: train.batch_size)')
  p.add_argument('--out', default='coordcheck', help='output directory (table, rows, PNGs); each finished '
                 "run's rows are appended to OUT/coordcheck.partial.jsonl as it goes")
  p.add_argument('--replot', default='', help='a coordcheck.jsonl (or .partial.jsonl) to write the table and PNGs '
                 'from, into --out, without training (meta.json beside it, if any, gives the header)')


def _meta(args, cfg) -> dict:
  """COORDCHECK.md's header: the command as run (with the XLA/malloc settings of its environment) and the setup."""
  import os
  env = ' '.join(f'{k}={os.environ[k]}' for k in ('XLA_FLAGS', 'SCALING_MALLOC_TUNING') if os.environ.get(k))
  m, t = cfg.model, cfg.train
  return {'command': (env + ' ' if env else '') + 'scaling coordcheck ' +
                     ' '.join(sys.argv[2:] if sys.argv[1:2] == ['coordcheck'] else sys.argv[1:]),
          'wall_s': None, 'config': args.config, 'data': args.data,
          'corpus': f'{cfg.data.corpus} ({cfg.data.tokenizer}-{m.vocab_size or cfg.data.vocab_size})'
                    if args.data == 'corpus' else 'zipf',
          'seq_len': m.seq_len, 'batch_size': args.batch_size or t.batch_size, 'lr': t.lr,
          'optimizer': t.get('optimizer', 'adamw'), 'steps': args.steps, 'record_every': args.record_every,
          'width': m.d_model, 'depth': m.num_layers}


def run_coordcheck(args, overrides) -> int:
  from scaling.config.load import load_config
  cfg = load_config(args.config, overrides)
  pars = tuple(p.strip() for p in args.parametrizations.split(',') if p.strip())
  if not pars or any(p not in PARAMETRIZATIONS for p in pars):
    raise ConfigError(f'coordcheck --parametrizations {args.parametrizations!r}: choose from '
                      f'{", ".join(PARAMETRIZATIONS)}')
  out = pathlib.Path(args.out)
  if args.replot:
    src = pathlib.Path(args.replot)
    meta = json.loads((src.parent / 'meta.json').read_text()) if (src.parent / 'meta.json').exists() else {}
    paths = write_outputs(read_rows(src), out, meta)
    print('wrote ' + ', '.join(str(p) for p in paths.values()))
    return 0
  t0, meta, partial = time.time(), _meta(args, cfg), out / 'coordcheck.partial.jsonl'
  out.mkdir(parents=True, exist_ok=True)
  (out / 'meta.json').write_text(json.dumps(meta, indent=1) + '\n')
  partial.write_text('')
  rows = coordcheck(cfg, _ints('widths', args.widths), args.steps, depths=_ints('depths', args.depths),
                    parametrizations=pars, data=args.data, batch_size=args.batch_size,
                    record_every=args.record_every, on_rows=lambda new: _write_rows(partial, new, 'a'))
  meta['wall_s'] = time.time() - t0
  paths = write_outputs(rows, out, meta)
  partial.unlink()
  print(coordcheck_table.table_md(rows, meta))
  print('wrote ' + ', '.join(str(p) for p in paths.values()))
  return 0
