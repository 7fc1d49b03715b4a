"""Data pipeline benchmark: tokenizer training and encoding speed, prepare time, loader speed.

  python bench/data_bench.py [--vocab 4096] [--batches 300] [--out bench/results/data.md]

Uses the Shakespeare corpus (downloaded once into $SCALING_CACHE) and temporary data
directories. Prints markdown tables. A training step on CPU consumes one batch every
~0.3-1.5 s, so any loader above a few hundred batches/s is far from the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402

from scaling.data import corpus as corpus_lib  # noqa: E402
from scaling.data import tokenizer as tok_lib  # noqa: E402
from scaling.data.loader import make_eval_loader, make_train_loader
from scaling.data.prepare import prepare  # noqa: E402


def _texts():
  (src,) = corpus_lib.resolve_corpus('shakespeare')
  return [d.text for d in src]


def bench_tokenizers(texts, vocab):
  rows = []
  lines = [line for t in texts for line in t.split('\n')]
  mb = sum(len(t.encode('utf-8')) for t in texts) / 1e6
  toks = {}
  for kind in ('bpe', 'unigram'):
    t0 = time.perf_counter()
    toks[kind] = tok_lib.train_sentencepiece(iter(lines), kind=kind, vocab_size=vocab)
    rows.append([f'{kind} {vocab}', f'{time.perf_counter() - t0:.2f}'])
  t0 = time.perf_counter()
  toks['char'] = tok_lib.CharTokenizer.train(texts)
  rows.append([f'char ({toks["char"].vocab_size})', f'{time.perf_counter() - t0:.2f}'])
  toks['byte'] = tok_lib.ByteTokenizer()
  rows.append(['byte (259)', '0'])
  try:
    toks['tiktoken:gpt2'] = tok_lib.TiktokenTokenizer('gpt2')
    rows.append(['tiktoken:gpt2 (local file)', 'n/a'])
  except tok_lib.DataError as e:
    print(f'(tiktoken:gpt2 not benchmarked: {str(e)[:80]}...)')
  enc_rows = []
  for name, tok in toks.items():
    t0 = time.perf_counter()
    n = sum(tok.encode_array(t).size for t in texts)
    dt = time.perf_counter() - t0
    enc_rows.append([name, f'{tok.vocab_size}', f'{mb / dt:.2f}', f'{mb * 1e6 / n:.3f}'])
  return rows, enc_rows, mb


def bench_prepare(tmp, vocab):
  rows = []
  for kind, workers in (('bpe', 1), ('bpe', 2), ('byte', 1)):
    c = ml_collections.ConfigDict(dict(
        corpus='shakespeare', text_field='text', tokenizer=kind, vocab_size=vocab,
        data_dir=os.path.join(tmp, f'{kind}{workers}'), val_fraction=0.05,
        document_masking=False, num_workers=0, prepare_workers=workers,
        parallel_threshold_mb=0 if workers > 1 else 1e9))
    t0 = time.perf_counter()
    s = prepare(c, verbose=False)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = prepare(c, verbose=False)
    second = time.perf_counter() - t0
    assert again['skipped']
    rows.append([kind, str(workers), f'{first:.2f}', f'{s["encode_seconds"]:.2f}',
                 f'{second * 1e3:.0f} ms', f'{s["train_tokens"]:,}'])
  return rows, os.path.join(tmp, 'bpe1')


def _rate(it, n):
  next(it)  # warm-up (thread start, first reads)
  t0 = time.perf_counter()
  for _ in range(n):
    next(it)
  return n / (time.perf_counter() - t0)


def bench_loaders(data_dir, n):
  rows = []
  for B, T in ((16, 256), (8, 1024)):
    for threads in (0, 1):
      for masking in (False, True):
        loader = make_train_loader(data_dir, seq_len=T, batch_size=B, seed=0, process_index=0,
                                   process_count=1, document_masking=masking,
                                   num_threads=threads)
        r = _rate(loader, n)
        rows.append([f'train {B} x {T}', str(threads), 'yes' if masking else 'no', f'{r:,.0f}',
                     f'{r * B * T / 1e6:.1f}'])
    ev = make_eval_loader(data_dir, seq_len=T, batch_size=B, process_index=0, process_count=1)
    t0 = time.perf_counter()
    k = sum(1 for _ in ev)
    r = k / (time.perf_counter() - t0)
    rows.append([f'eval {B} x {T} (whole val, {k} batches)', '-', 'no', f'{r:,.0f}',
                 f'{r * B * T / 1e6:.1f}'])
  return rows


def table(header, rows):
  out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  out += ['| ' + ' | '.join(r) + ' |' for r in rows]
  return '\n'.join(out)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--vocab', type=int, default=4096)
  ap.add_argument('--batches', type=int, default=300)
  ap.add_argument('--out', default='')
  args = ap.parse_args()
  load = os.getloadavg()[0]
  texts = _texts()
  train_rows, enc_rows, mb = bench_tokenizers(texts, args.vocab)
  with tempfile.TemporaryDirectory() as tmp:
    prep_rows, data_dir = bench_prepare(tmp, args.vocab)
    load_rows = bench_loaders(data_dir, args.batches)
  parts = [
      f'Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; '
      f'load average at start {load:.1f} (a shared machine: timings are noisy); '
      f'corpus: Shakespeare, {len(texts)} works, {mb:.2f} MB.',
      '', '### Tokenizer training (whole corpus, 1 thread, deterministic)', '',
      table(['tokenizer', 'train s'], train_rows),
      '', '### Encoding (whole documents, one process)', '',
      table(['tokenizer', 'vocab', 'encode MB/s', 'bytes/token'], enc_rows),
      '', '### `prepare` end to end (download cached; train tokenizer + encode + write)', '',
      table(['tokenizer', 'encode processes', 'first run s', 'of which encode s',
             'second run (no-op)', 'train tokens'], prep_rows),
      '', f'### Loader ({args.batches} batches after one warm-up; bpe {args.vocab} shards)', '',
      table(['loader', 'grain threads', 'segment ids', 'batches/s', 'Mtokens/s'], load_rows),
      '', 'A CPU training step takes ~0.3-1.5 s, i.e. consumes ~1-3 batches/s: the loader '
      'is two to three orders of magnitude faster than needed.',
  ]
  report = '\n'.join(parts)
  print(report)
  if args.out:
    cmd = 'python bench/data_bench.py ' + ' '.join(sys.argv[1:])
    with open(args.out, 'w', encoding='utf-8') as f:
      f.write(f'## Data pipeline\n\nCommand: `{cmd.strip()}`\n\n{report}\n')


if __name__ == '__main__':
  main()
