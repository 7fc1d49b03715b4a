"""Time and memory of each attention implementation vs sequence length.

For every implementation available on this backend (and, for 'blockwise', each
requested block size) and every T: forward and forward+backward wall time (min
over up to 5 calls of the AOT-compiled function; one call when slow) and XLA's
compiled temporary memory (`memory_analysis().temp_size_in_bytes`, which the
CPU probe found within 4-15% of measured RSS growth). On a CPU host malloc is tuned
as in training (scaling/base/hostmem.py), so freed buffers are not faulted back in per call. A pass whose compiled
temp memory exceeds --max_gb is skipped before running. Prints a markdown
table, and with --out writes it (plus the command) to a .md file and with
--plot a time/memory plot to a .png.

  .venv/bin/python bench/attention_bench.py --block_sizes 512,256 \
      --out bench/results/attention.md --plot bench/results/attention.png
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from scaling.base import hostmem  # noqa: E402
from scaling.model import attention as attn  # noqa: E402


def _parse():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--seq_lens', default='1024,2048,4096,8192,16384')
  p.add_argument('--impls', default='',
                 help="comma list; default: all available except auto (on CPU: blockwise at "
                      "cpu_block_size, in its row form up to 8 query blocks)")
  p.add_argument('--block_sizes', default='512,128',
                 help="block sizes tried for 'blockwise'")
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--kv_heads', type=int, default=8)
  p.add_argument('--head_dim', type=int, default=64)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--max_gb', type=float, default=8.0,
                 help='skip configs whose compiled temp memory exceeds this')
  p.add_argument('--time_budget_s', type=float, default=3.0,
                 help='repeat timed calls until this much time is spent (max 5)')
  p.add_argument('--out', default='', help='write markdown table here')
  p.add_argument('--plot', default='', help='write PNG plot here')
  return p.parse_args()


def _time(fn, args, budget_s):
  """Min wall time of an AOT-compiled fn; slow configs run only once."""
  times = []
  while len(times) < 5 and sum(times) < budget_s:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return min(times)


def _bench_one(impl, block, T, a):
  shape_q = (a.batch, T, a.heads, a.head_dim)
  shape_kv = (a.batch, T, a.kv_heads, a.head_dim)
  dtype = jnp.dtype(a.dtype)
  attend = lambda q, k, v: attn.attention(q, k, v, impl=impl, block_size=block)
  fwd = jax.jit(lambda q, k, v, dout: attend(q, k, v))

  @jax.jit
  def fwd_bwd(q, k, v, dout):  # a random output cotangent, as in training
    out, vjp = jax.vjp(attend, q, k, v)
    return out, vjp(dout)

  specs = (jax.ShapeDtypeStruct(shape_q, dtype), jax.ShapeDtypeStruct(shape_kv, dtype),
           jax.ShapeDtypeStruct(shape_kv, dtype), jax.ShapeDtypeStruct(shape_q, dtype))
  row = {}
  compiled = {}
  for name, fn in (('fwd', fwd), ('fwd_bwd', fwd_bwd)):
    c = fn.lower(*specs).compile()
    compiled[name] = c
    row[f'{name}_mb'] = c.memory_analysis().temp_size_in_bytes / 2**20
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  inputs = tuple(jax.random.normal(key, spec.shape, jnp.float32).astype(dtype)
                 for key, spec in zip(keys, specs))
  for name in ('fwd', 'fwd_bwd'):
    need_gb = row[f'{name}_mb'] / 1024
    if need_gb > a.max_gb:  # decided from the compiled estimate, before running
      row[f'{name}_ms'] = f'skipped: would need {need_gb:.1f} GB'
    else:
      row[f'{name}_ms'] = 1e3 * _time(compiled[name], inputs, a.time_budget_s)
  return row


def _ms(x):
  return x if isinstance(x, str) else f'{x:.1f}'


def _table(rows):
  lines = ['| impl | T | fwd ms | fwd+bwd ms | fwd temp MiB | fwd+bwd temp MiB |',
           '|---|---:|---:|---:|---:|---:|']
  for r in rows:
    lines.append(f"| {r['label']} | {r['T']} | {_ms(r['fwd_ms'])} | "
                 f"{_ms(r['fwd_bwd_ms'])} | {r['fwd_mb']:.1f} | {r['fwd_bwd_mb']:.1f} |")
  return '\n'.join(lines)


def _plot(rows, path, title):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  labels = list(dict.fromkeys(r['label'] for r in rows))
  for i, label in enumerate(labels):
    rs = [r for r in rows if r['label'] == label]
    color = f'C{i}'
    for key, style, name in (('fwd_bwd_ms', 'o-', 'fwd+bwd'), ('fwd_ms', 'x--', 'fwd')):
      timed = [r for r in rs if not isinstance(r[key], str)]
      ax_t.plot([r['T'] for r in timed], [r[key] for r in timed], style,
                color=color, label=f'{label} {name}')
    ax_m.plot([r['T'] for r in rs], [r['fwd_bwd_mb'] for r in rs], 'o-',
              color=color, label=f'{label} fwd+bwd')
  for ax, ylabel in ((ax_t, 'time (ms, min of repeats)'),
                     (ax_m, 'XLA temp memory (MiB, compiled)')):
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('sequence length T')
    ax.set_ylabel(ylabel)
    ax.grid(True, which='both', alpha=0.3)
  ax_t.legend(fontsize=7)
  ax_m.legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main():
  a = _parse()
  backend = jax.default_backend()
  hostmem.hold_heap()   # freed buffers stay mapped, as in training (scaling/base/hostmem.py): no page faults per call
  impls = (a.impls.split(',') if a.impls else   # 'auto' only when asked for: it is one of the others
           [i for i in attn.available_implementations(backend) if i != 'auto'])
  configs = []
  for impl in impls:
    attn.resolve_impl(impl, backend)  # clear error if unavailable
    blocks = [int(b) for b in a.block_sizes.split(',')] if impl == 'blockwise' else [512]
    for b in blocks:
      label = {'blockwise': f'blockwise (block {b})', 'auto': f'auto ({attn.resolve_impl("auto", backend)})'}
      configs.append((impl, b, label.get(impl, impl)))
  title = (f'{backend}: B={a.batch} H={a.heads} G={a.kv_heads} K={a.head_dim} '
           f'{a.dtype}, causal')
  print(f'# attention benchmark, {title}', flush=True)
  rows = []
  for T in [int(t) for t in a.seq_lens.split(',')]:
    for impl, block, label in configs:
      t0 = time.perf_counter()
      row = dict(label=label, T=T, **_bench_one(impl, block, T, a))
      rows.append(row)
      status = (f"fwd {_ms(row['fwd_ms'])}, fwd+bwd {_ms(row['fwd_bwd_ms'])} "
                '(ms)')
      print(f'{label:22s} T={T:6d}: {status}; temp fwd {row["fwd_mb"]:.0f} MiB, '
            f'fwd+bwd {row["fwd_bwd_mb"]:.0f} MiB ({time.perf_counter() - t0:.0f} s)',
            flush=True)
  table = _table(rows)
  print(table)
  if a.out:
    cmd = ' '.join(['.venv/bin/python'] + sys.argv)
    with open(a.out, 'w') as f:
      f.write(f'# Attention benchmark ({title})\n\nCommand: `{cmd}`\n\n'
              f'jax {jax.__version__}, {os.cpu_count()} CPU cores. Times: min over '
              'up to 5 calls (one if it exceeds the time budget), compile '
              'excluded. Memory: XLA compiled temp bytes.\n\n'
              f'{table}\n')
  if a.plot:
    _plot(rows, a.plot, title)


if __name__ == '__main__':
  hostmem.tune_malloc()   # as `scaling train` does on a CPU host, before JAX starts its threads
  main()
