"""The seed study's measurements that training does not take: `python -m scaling.analysis.seed.measure --root ROOT`.

After (or while) `scaling sweep` runs configs/sweeps/seed_upgrades.py, this goes over the finished runs of
ROOT and measures, from each checkpoint (scaling/analysis/seed/study.py reads the keys):

  every run               claims/span_bpb (+ _bytes, _docs, _tokens, _digest, _unk): bits per byte of one fixed
                          span of the validation text, the same bytes whatever the tokenizer
                          (scaling/analysis/seed/span.py); claims/bytes_per_token, claims/seq_len
  every equal-token arm   claims/len@L: bpb of the same long-document tokens (the first 1024 targets of
                          each validation document that long) scored by windows of L = 256, 512, 1024
                          (only where the positions cover L); claims/pos@a-b: bpb at document positions
                          [a, b) scored by windows of the run's own context (positions.window_nll)
  the base seeds          claims/samples: per prompt, the continuations of greedy / top-k 40 / top-p 0.9 /
                          T = 1 decoding and the human continuation, their rep-4, distinct-2/3 and bits
                          under the judge, the strongest run with the base's tokenizer (lowest eval/bpb;
                          scaling/analysis/seed/samples.py)
  base, layernorm, bf16   claims/curve: the training loss curve (metrics.jsonl)
  once per ROOT           interleaved step times of the sweep's steptime_pairs() (scaling/analysis/seed/steptime.py)

Each run's numbers are cached in its directory (claims.json, keyed by this code's VERSION, the checkpoint step
and the judge), so a second call measures only what is new; ROOT/claims.jsonl holds them all (one row per
run, plus the step time rows), which `scaling report` merges with results.jsonl by run hash.
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
VERSION = 2                   # 2: the same-bytes span, samples beside human text, the judge by eval/bpb
LONG = 1024                   # scored targets per long document
MAX_DOCS = 64
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


def _curve(path) -> list:
  from scaling.train.metrics import read_metrics
  return [[r['step'], r['train/loss']] for r in read_metrics(path) if 'train/loss' in r and 'step' in r]


def _data_key(cfg) -> tuple:
  d = cfg.get('data', {})
  return (str(d.get('corpus')), str(d.get('tokenizer')), d.get('vocab_size'))


def _judge(found) -> tuple:
  """(run hash, workdir) of the finished run with the base's tokenizer and the lowest eval/bpb whose context
  holds a prompt and its continuation (the strongest model the study trains), or (None, None)."""
  from scaling.analysis.seed.samples import NEW_TOKENS, PROMPT_LEN
  configs = [(rd, rec.config or {}) for rd, rec in found]
  base = next((cfg for _, cfg in configs if _arm(cfg) == 'base'), None)
  best = None
  for rd, cfg in configs:
    summ = rd.summary()
    bpb = (summ or {}).get('eval/bpb')
    if base is None or _arm(cfg) is None or not isinstance(bpb, (int, float)) or _data_key(cfg) != _data_key(base):
      continue
    if int(cfg.get('model', {}).get('seq_len', 0)) >= PROMPT_LEN + NEW_TOKENS and (best is None or bpb < best[0]):
      best = (bpb, rd.hash, rd.path)
  return (best[1], best[2]) if best else (None, None)


class Span:
  """The span's texts per (corpus, split digest), read once per measure_root."""

  def __init__(self):
    self.texts: dict[tuple, list[str]] = {}

  def metrics(self, model, tok, cfg, summ) -> dict:
    from scaling.analysis.seed import span
    key = (str(cfg.data.corpus), summ.get('split_digest'))
    if key not in self.texts:
      self.texts[key] = span.span_texts(cfg.data, summ['data_dir'])
    return span.span_bpb(model, tok, self.texts[key], int(cfg.model.seq_len))


def measure_run(rd, arm: str, judge: tuple, spans: Span, log=print) -> dict:
  """The measurements of one finished run (see the module docstring)."""
  from scaling.data.prepare import prepare
  from scaling.inference.run import load_for_inference
  model, cfg, tok = load_for_inference(rd.path)
  summ = prepare(cfg.data, verbose=False)
  bpt = summ.get('bytes_per_token_val') or summ.get('bytes_per_token')
  out = {'claims/bytes_per_token': bpt, 'claims/seq_len': int(cfg.model.seq_len)}
  out |= spans.metrics(model, tok, cfg, summ)
  if not arm.startswith(NO_LENGTHS):
    out |= long_doc_metrics(model, summ['data_dir'], bpt, int(cfg.model.seq_len))
  if arm == 'base' and judge[0]:
    from scaling.analysis.seed.samples import SAMPLES, sample_records
    from scaling.data.shards import open_split
    judge_model = load_for_inference(judge[1])[0]
    val = open_split(summ['data_dir'], 'val', verify=False)
    out[SAMPLES] = {'judge': judge[0], **sample_records(model, tok, judge_model, val)}
    out['claims/judge'] = judge[0]
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


def _steptimes(old: list[dict], sweep: str | None, steptime: bool, log) -> list[dict]:
  times = [r for r in old if r.get('kind') == 'steptime']
  if steptime and sweep and not any(r.get('backend') == 'cpu' for r in times):
    from scaling.analysis.seed import steptime as st
    from scaling.config.load import load_module
    spec, _, arg = sweep.partition(':')
    for name, cfgs in load_module(spec).steptime_pairs(arg or None).items():
      log(f'claims_measure: step times of {name} ({", ".join(cfgs)}) ...')
      times.append({'kind': 'steptime', 'pair': name, **st.compare(cfgs)})
  return times


def measure_root(root: str, sweep: str | None = None, *, steptime: bool = True, log=print) -> str:
  """Measures every finished, not yet measured run of ROOT; writes ROOT/claims.jsonl; returns its path."""
  from scaling.launch import rundir
  from scaling.train import checkpoint
  t0 = time.time()
  found = rundir.scan(root)
  judge = _judge(found)
  spans = Span()
  rows = []
  for rd, rec in found:
    arm = _arm(rec.config or {})
    if arm is None or rd.summary() is None:
      continue
    key = {'version': VERSION, 'step': checkpoint.latest_step(rd.path), 'judge': judge[0] if arm == 'base' else None}
    cached = _cached(rd, key)
    if cached is None:
      log(f'claims_measure: {rd.hash} ({arm}) ...')
      cached = {'key': key, 'values': measure_run(rd, arm, judge, spans, log)}
      atomic_write_json(rd.path / CACHE, cached)
    rows.append({'kind': 'run', 'run': rd.hash, 'arm': arm, **cached['values']})
  path = os.path.join(root, 'claims.jsonl')
  old = []
  if os.path.isfile(path):
    with open(path, encoding='utf-8') as f:
      old = [json.loads(x) for x in f if x.strip()]
  times = _steptimes(old, sweep, steptime, log)
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
