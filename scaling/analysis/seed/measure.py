"""The seed study's measurements that training does not take: `python -m scaling.analysis.seed.measure --root ROOT`.

After (or while) `scaling sweep` runs configs/sweeps/seed_upgrades.py, this goes over the finished runs of
ROOT and measures, from each checkpoint (scaling/analysis/seed/study.py reads the keys):

  every equal-token arm   claims/len@L: bpb of the same long-document tokens (the first 1024 targets of
                          each validation document that long) scored by windows of L = 256, 512, 1024
                          (only where the positions cover L); claims/pos@a-b: bpb at document positions
                          [a, b) scored by windows of the run's own context (evaluate.window_nll)
  the base seeds          samples of 32 prompts x 128 tokens, greedy / top-k 40 / top-p 0.9 / T = 1:
                          claims/sample/<mode>/{rep4, distinct2, distinct3, judge_bpb, self_bpb}, the
                          judge the largest size arm (scaling/analysis/seed/sample_stats.py)
  base, layernorm, bf16   claims/curve: the training loss curve (metrics.jsonl)
  every run               claims/bytes_per_token, claims/seq_len
  once per ROOT           interleaved step times of the sweep's steptime_pairs() (scaling/analysis/seed/steptime.py)

Each run's numbers are cached in its directory (claims.json, keyed by checkpoint step and judge), so a
second call measures only what is new; ROOT/claims.jsonl holds them all (one row per run, plus the step
time rows), which `scaling report` merges with results.jsonl by run hash.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from scaling.analysis.seed import study as S
from scaling.base.files import atomic_write_json, atomic_write_text

CACHE = 'claims.json'
LONG = 1024                   # scored targets per long document
MAX_DOCS = 64
PROMPTS, PROMPT_LEN, NEW_TOKENS = 32, 32, 128
MODES = {'greedy': (0.0, 0, 1.0), 'topk40': (1.0, 40, 1.0), 'topp0.9': (1.0, 0, 0.9), 'pure': (1.0, 0, 1.0)}
NO_LENGTHS = ('tok-',)        # arms that need no long-document evals (the tokenizer frontier)


def _arm(cfg) -> str | None:
  from scaling.analysis.seed.claims import PREFIX
  name = str(cfg.get('name', ''))
  return name[len(PREFIX):] if name.startswith(PREFIX) else None


def long_doc_metrics(model, data_dir: str, bpt: float, own_T: int) -> dict:
  from scaling.analysis.seed.positions import bucket_bpb, long_documents, window_nll
  from scaling.train.evaluate import positions_cover
  docs = long_documents(data_dir, LONG, MAX_DOCS)
  out = {'claims/long_docs': int(docs.shape[0])}
  if not docs.shape[0]:
    return out
  by_window = {}
  for L in sorted(set(S.LENGTHS) | {own_T}):
    if LONG % L == 0 and positions_cover(model.dims, L):
      by_window[L] = window_nll(model, docs, L)
  for L in S.LENGTHS:
    if L in by_window:
      out[S.len_key(L)] = float(by_window[L].mean()) / math.log(2) / bpt
  if own_T in by_window:
    for (a, b), v in bucket_bpb(by_window[own_T], S.BUCKETS, bpt).items():
      out[S.pos_key(a, b)] = v
  return out


def _prompts(data_dir: str):
  import numpy as np

  from scaling.data.shards import open_split
  s = open_split(data_dir, 'val', verify=False)
  n = s.num_tokens - PROMPT_LEN
  starts = np.linspace(0, max(n - 1, 0), PROMPTS).astype(int)
  return np.stack([np.asarray(s.tokens[a:a + PROMPT_LEN], np.int32) for a in starts])


def sample_metrics(model, tokenizer, judge, data_dir: str, seed: int = 0) -> dict:
  import jax
  import numpy as np

  from scaling.analysis.seed import sample_stats as st
  from scaling.inference.generate import generate_tokens
  prompts = _prompts(data_dir)
  lens = np.full((prompts.shape[0],), PROMPT_LEN, np.int32)
  out = {}
  for mode, (temp, k, p) in MODES.items():
    toks, _ = generate_tokens(model, prompts, lens, max_new_tokens=NEW_TOKENS, temperature=temp, top_k=k,
                              top_p=p, rng=jax.random.key(seed), eos_id=None,
                              vocab_limit=min(int(tokenizer.vocab_size), model.dims.vocab_size))
    conts = [list(map(int, row)) for row in toks]
    texts = [tokenizer.decode(c) for c in conts]
    reps = [r for r in (st.rep_n(c, 4) for c in conts) if r is not None]
    out[S.sample_key(mode, 'rep4')] = float(np.mean(reps)) if reps else None
    out[S.sample_key(mode, 'distinct2')] = st.distinct_n(conts, 2)
    out[S.sample_key(mode, 'distinct3')] = st.distinct_n(conts, 3)
    pr = [list(map(int, r)) for r in prompts]
    out[S.sample_key(mode, 'self_bpb')] = st.bits_per_byte(st.continuation_nll(model, pr, conts), texts)
    if judge is not None:
      out[S.sample_key(mode, 'judge_bpb')] = st.bits_per_byte(st.continuation_nll(judge, pr, conts), texts)
  return out


def _curve(path) -> list:
  from scaling.train.metrics import read_metrics
  return [[r['step'], r['train/loss']] for r in read_metrics(path) if 'train/loss' in r and 'step' in r]


def _judge(found) -> tuple:
  """(run hash, workdir) of the finished size arm with the most non-embedding parameters, or (None, None)."""
  best = None
  for rd, rec in found:
    summ = rd.summary()
    arm = _arm((rec.config or {}))
    if summ and arm and arm.startswith('size-'):
      if best is None or summ.get('non_embedding_params', 0) > best[0]:
        best = (summ.get('non_embedding_params', 0), rd.hash, rd.path)
  return (best[1], best[2]) if best else (None, None)


def measure_run(rd, arm: str, judge_dir, judge_hash, log=print) -> dict:
  """The measurements of one finished run (see the module docstring)."""
  from scaling.data.prepare import prepare
  from scaling.train import checkpoint
  model, cfg, tok = checkpoint.load_for_inference(rd.path)
  summ = prepare(cfg.data, verbose=False)
  bpt = summ.get('bytes_per_token_val') or summ.get('bytes_per_token')
  out = {'claims/bytes_per_token': bpt, 'claims/seq_len': int(cfg.model.seq_len)}
  if not arm.startswith(NO_LENGTHS):
    out |= long_doc_metrics(model, summ['data_dir'], bpt, int(cfg.model.seq_len))
  if arm == 'base':
    judge = checkpoint.load_for_inference(judge_dir)[0] if judge_dir else None
    out |= sample_metrics(model, tok, judge, summ['data_dir'])
    out['claims/judge'] = judge_hash
  if arm in ('base', 'layernorm', 'bf16'):
    out['claims/curve'] = _curve(rd.path)
  return out


def _cached(rd, key: dict) -> dict | None:
  try:
    with open(rd.path / CACHE, encoding='utf-8') as f:
      c = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return c if c.get('key') == key else None


def measure_root(root: str, sweep: str | None = None, *, steptime: bool = True, log=print) -> str:
  """Measures every finished, not yet measured run of ROOT; writes ROOT/claims.jsonl; returns its path."""
  from scaling.launch import rundir
  from scaling.train import checkpoint
  t0 = time.time()
  found = rundir.scan(root)
  judge_hash, judge_dir = _judge(found)
  rows = []
  for rd, rec in found:
    arm = _arm(rec.config or {})
    if arm is None or rd.summary() is None:
      continue
    key = {'step': checkpoint.latest_step(rd.path), 'judge': judge_hash if arm == 'base' else None}
    cached = _cached(rd, key)
    if cached is None:
      log(f'claims_measure: {rd.hash} ({arm}) ...')
      cached = {'key': key, 'values': measure_run(rd, arm, judge_dir, judge_hash, log)}
      atomic_write_json(rd.path / CACHE, cached)
    rows.append({'kind': 'run', 'run': rd.hash, 'arm': arm, **cached['values']})
  path = os.path.join(root, 'claims.jsonl')
  old = []
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      old = [json.loads(x) for x in f if x.strip()]
  times = [r for r in old if r.get('kind') == 'steptime']
  if steptime and sweep and not any(r.get('backend') == 'cpu' for r in times):
    from scaling.analysis.seed import steptime as st
    from scaling.config.load import load_module
    spec, _, arg = sweep.partition(':')
    for name, cfgs in load_module(spec).steptime_pairs(arg or None).items():
      log(f'claims_measure: step times of {name} ({", ".join(cfgs)}) ...')
      times.append({'kind': 'steptime', 'pair': name, **st.compare(cfgs)})
  meta = [r for r in old if r.get('kind') == 'meta']
  wall = sum(m.get('wall_s', 0) for m in meta) + (time.time() - t0)
  atomic_write_text(path, ''.join(json.dumps(r) + '\n' for r in rows + times + [{'kind': 'meta', 'wall_s': wall}]))
  return path


def main(argv=None) -> int:
  from scaling.base import hostmem
  hostmem.skip_absent_tpu()   # as the `scaling` command: libtpu without a TPU computes on the CPU, quietly
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--root', required=True, help='the sweep root (ROOT/runs/...)')
  p.add_argument('--config', default='configs/sweeps/seed_upgrades.py',
                 help='the sweep file[:arg] (its steptime_pairs)')
  p.add_argument('--no_steptime', dest='steptime', action='store_false')
  args = p.parse_args(argv)
  if not os.path.isdir(os.path.join(args.root, 'runs')):
    p.error(f'--root {args.root} has no runs/ directory: run `scaling sweep` into it first')
  print(f'wrote {measure_root(args.root, args.config, steptime=args.steptime)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
