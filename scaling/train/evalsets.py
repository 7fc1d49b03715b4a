"""Tagged eval sets: held-out text of several domains, scored with the run's model and tokenizer.

A scaling study reports bits per byte on more than one domain (Paloma, Magnusson et al. 2023;
OLMo's and Levanter's tagged eval sets). `train.eval_sets` maps a tag to a corpus spec, any
`data.corpus` form: 'shakespeare', 'prose[:PARTS]' (scaling/data/prose.py), files and globs,
'hf:NAME[:CONFIG]'. Each is evaluated at `train.eval_every` and at the end, as
`eval/<tag>/loss` and `eval/<tag>/bpb` (metrics.jsonl, TensorBoard, summary.json).

Which text. A set is its corpus's held-out split: the documents `scaling prepare` would hold
out with this run's `data.val_fraction` (by the hash of their names, scaling/data/corpus.py), so
the same tag means the same text in every run of a study, and a run that trains on that corpus
never trains on its tagged set. The training corpus's own validation split is always one of the
sets, under its corpus name (`training_tag`: 'shakespeare', 'prose', a file corpus's directory
name), unless eval_sets lists the same spec under a tag of its own. The other sets' documents
are ordered by the hash of their names, so the first `train.eval_batches` batches are a uniform
sample of documents (not the first part of the corpus).

A data mixture (data.mixture, scaling/data/mixture.py) has no single training corpus: each of its sources'
held-out split is a set under the source's name (eval/<name>/bpb), all of them the training corpus's, and
eval/loss, eval/bpb are their unweighted mean (the same average whatever the weights). A train.eval_sets tag or
spec that repeats a source is left out.

A spec ending in '?' is optional: a named corpus that is not downloaded yet (prose before
`python -m scaling.data.prose`) is skipped with one line instead of fetched. The default config
lists 'prose?', so the default run gains a second domain once the prose corpus is there. An
empty spec turns a tag off.

Cache. A set is tokenized once with the run's tokenizer into
`$SCALING_CACHE/evalsets/<tag>-<hash>/` (val.bin, val.docs.npy, index.json: the shard layout
of scaling/data/shards.py, so `make_eval_loader` reads it), keyed by the spec, text field,
val_fraction and the tokenizer's sha256; `evalset.json` keeps the inputs' stat fingerprint, and
a changed corpus or a shard that fails its checks is rebuilt. Built beside the target and
renamed into place: an interrupted build leaves nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable

import numpy as np

from scaling.base.files import atomic_write_text, sha256_bytes
from scaling.config.load import check_eval_sets, split_optional
from scaling.data import corpus as corpus_lib
from scaling.data import shards
from scaling.data.tokenizer import DataError

EVALSET_JSON = 'evalset.json'
CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EvalSet:
  tag: str
  spec: str
  data_dir: str            # a prepared directory whose 'val' split is the set
  bytes_per_token: float   # UTF-8 text bytes per token of the split (EOS counted as a token)
  training: bool = False   # the training corpus's own validation split


def training_tag(corpus: str) -> str:
  """The tag of the training corpus's held-out split: its corpus name."""
  spec = str(corpus or '').strip()
  if spec.startswith('hf:'):
    name = spec[3:].replace(':', '-').split('/')[-1]
  elif spec == 'shakespeare' or spec.split(':')[0] == 'prose':
    name = spec.split(':')[0]
  else:
    entries = [e.strip() for e in spec.split(',') if e.strip()]
    if len(entries) == 1 and os.path.isfile(os.path.expanduser(entries[0])):
      name = os.path.basename(entries[0]).split('.')[0]
    else:
      name = os.path.basename(corpus_lib.corpus_root(spec) or '') or 'corpus'
  name = re.sub(r'[^A-Za-z0-9_.\-]', '_', name).lstrip('_.-')
  return name or 'corpus'


def _resolve_sources(spec: str, text_field: str, optional: bool):
  """The corpus's Sources; None when optional and a named corpus is not downloaded."""
  name, _, parts = spec.partition(':')
  if name == 'prose':   # not (yet) a data.corpus form of resolve_corpus: resolved here
    from scaling.data import prose
    if optional and any(prose.read_manifest(p) is None for p in prose.select_parts(parts or None)):
      return None
    return prose.prose_sources(parts=parts or None)
  if spec == 'shakespeare' and optional and not os.path.isfile(
      os.path.join(corpus_lib.cache_dir(), 'shakespeare', 'texts', '.complete')):
    return None
  try:
    return corpus_lib.resolve_corpus(spec, text_field)
  except DataError:
    if optional:
      return None
    raise


# ----------------------------------------------------------------------------- the held-out documents
def _held_out(sources, val_fraction: float):
  """(name, text) of the held-out documents, ordered by the hash of their names."""
  if val_fraction <= 0:
    raise DataError('an eval set is its corpus\'s held-out split, and data.val_fraction=0 holds out nothing; '
                    'set data.val_fraction > 0 (e.g. 0.05)')
  known = [n for s in sources if (names := s.names()) is not None for n in names]
  val = corpus_lib.split_documents(known, val_fraction) if known else set()
  docs = []
  for s in sources:
    if isinstance(s, corpus_lib.TextFiles):   # read only the held-out files
      pairs = [(n, p) for n, p in zip(s.names(), s.paths) if n in val]
      sub = corpus_lib.TextFiles([p for _, p in pairs], [n for n, _ in pairs], gutenberg=s.gutenberg)
      docs.extend((d.name, d.text) for d in sub)
      continue
    streamed = s.names() is None
    for d in s:
      if (corpus_lib.is_val_by_threshold(d.name, val_fraction) if streamed else d.name in val):
        docs.append((d.name, d.text))
  docs = [d for d in docs if d[1]]
  docs.sort(key=lambda d: corpus_lib.name_key(d[0]))
  return docs


def _write_split(tmp: str, docs, tokenizer) -> dict:
  dtype = shards.token_dtype(tokenizer.vocab_size)
  writer = shards.ShardWriter(tmp, 'val', dtype)
  eos = tokenizer.eos_id if tokenizer.eos_id is not None else 0
  try:
    for _, text in docs:
      ids = np.append(tokenizer.encode_array(text, dtype=np.int64), eos)   # documents end in EOS, as in prepare
      writer.add(ids, len(text.encode('utf-8')))
  except BaseException:
    writer.abort()
    raise
  meta = writer.close()
  index = dict(format_version=shards.FORMAT_VERSION, vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id,
               tokenizer_sha256=tokenizer.sha256, splits={'val': meta})
  atomic_write_text(os.path.join(tmp, shards.INDEX_JSON), json.dumps(index, indent=1))
  return meta


# ----------------------------------------------------------------------------- the cache
def _key(spec: str, text_field: str, val_fraction: float, tokenizer) -> dict:
  return dict(version=CACHE_VERSION, format_version=shards.FORMAT_VERSION, spec=spec, text_field=text_field,
              val_fraction=float(val_fraction), tokenizer_sha256=tokenizer.sha256)


def _cached(path: str, key: dict, fingerprint) -> dict | None:
  try:
    with open(os.path.join(path, EVALSET_JSON)) as f:
      record = json.load(f)
    if record.get('key') != key or record.get('fingerprint') != fingerprint:
      return None
    shards.open_split(path, 'val', verify=True)
  except (OSError, ValueError):   # missing, unreadable, or a shard that fails its checks (ShardError)
    return None
  return record


def build_eval_set(tag: str, spec: str, tokenizer, *, text_field: str = 'text', val_fraction: float = 0.05,
                   cache: str | None = None, log: Callable = print) -> EvalSet | None:
  """The tagged set `spec` tokenized with `tokenizer` (cached); None when optional and not available."""
  spec, optional = split_optional(spec)
  sources = _resolve_sources(spec, text_field, optional)
  if sources is None:
    log(f'eval set {tag}: corpus {spec!r} is not downloaded; skipped (optional). '
        + ('`python -m scaling.data.prose` fetches it' if spec.startswith('prose') else ''))
    return None
  key = _key(spec, text_field, val_fraction, tokenizer)
  try:
    fingerprint = json.loads(json.dumps([s.fingerprint() for s in sources]))
  except OSError as e:
    raise DataError(f'eval set {tag}: corpus {spec!r}: {e} (a file listed by the corpus is missing: a '
                    f'damaged download cache? fetch or prepare that corpus again)') from e
  digest = sha256_bytes(json.dumps(key, sort_keys=True).encode())[:12]
  root = os.path.join(cache or corpus_lib.cache_dir(), 'evalsets')
  path = os.path.join(root, f'{tag}-{digest}')
  record = _cached(path, key, fingerprint)
  if record is None:
    record = _build(path, key, fingerprint, sources, tokenizer, tag, log)
  return EvalSet(tag, spec, path, record['bytes_per_token'])


def _build(path, key, fingerprint, sources, tokenizer, tag, log) -> dict:
  docs = _held_out(sources, key['val_fraction'])
  if not docs:
    raise DataError(f'eval set {tag}: corpus {key["spec"]!r} holds out no non-empty document at '
                    f'data.val_fraction={key["val_fraction"]}; give it more documents')
  with shards.staged_dir(path) as tmp:
    meta = _write_split(tmp, docs, tokenizer)
    record = dict(key=key, fingerprint=fingerprint, tag=tag, documents=meta['num_docs'], tokens=meta['num_tokens'],
                  text_bytes=meta['text_bytes'], bytes_per_token=meta['text_bytes'] / max(meta['num_tokens'], 1))
    atomic_write_text(os.path.join(tmp, EVALSET_JSON), json.dumps(record, indent=1))
  log(f'eval set {tag}: {meta["num_docs"]} held-out documents of {key["spec"]!r}, {meta["num_tokens"]:,} tokens '
      f'-> {path}')
  return record


# ----------------------------------------------------------------------------- a run's sets
def resolve_eval_sets(cfg, data_summary: dict, tokenizer, *, log: Callable = print,
                      cache: str | None = None) -> list[EvalSet]:
  """The run's sets: the training corpus's validation split first, then train.eval_sets in order."""
  d = cfg.data
  corpus = str(d.corpus).strip()
  wanted = dict(cfg.train.get('eval_sets', None) or {})
  check_eval_sets(wanted)
  if data_summary.get('mixture'):   # a data mixture: each source's held-out split, under its name
    sets = mixture_sets(data_summary)
    own, corpus = None, None
  else:
    own = next((t for t, s in wanted.items() if split_optional(s)[0] == corpus), None) or training_tag(corpus)
    bpt = data_summary.get('bytes_per_token_val') or data_summary.get('bytes_per_token')
    sets = [EvalSet(own, corpus, data_summary['data_dir'], bpt, training=True)]
  taken = {s.tag for s in sets} | {s.spec for s in sets}
  for tag, spec in wanted.items():
    spec_only = split_optional(spec)[0]
    if tag == own or not spec_only or spec_only == corpus or tag in taken or spec_only in taken:
      continue
    s = build_eval_set(tag, spec, tokenizer, text_field=d.get('text_field', 'text'),
                       val_fraction=d.get('val_fraction', 0.05), cache=cache, log=log)
    if s is not None:
      sets.append(s)
  return sets


def mixture_sets(data_summary: dict) -> list[EvalSet]:
  """A mixture's sets (scaling/data/mixture.py prepare_mixture's summary): each source's own held-out split, all
  counted as the training corpus's (eval/loss and eval/bpb are their mean)."""
  out = []
  for name, s in data_summary['sources'].items():
    if s.get('val_tokens'):
      out.append(EvalSet(name, s.get('corpus') or (s.get('settings') or {}).get('corpus', name), s['data_dir'],
                         s.get('bytes_per_token_val') or s.get('bytes_per_token'), training=True))
  return out


def prepare_eval_sets(cfg, data_summary, tokenizer, *, is_main: bool, sync: Callable, log: Callable = print):
  """resolve_eval_sets on the main process first (it builds the caches), then on the others."""
  sets = resolve_eval_sets(cfg, data_summary, tokenizer, log=log) if is_main else None
  sync('eval sets')
  if not is_main:
    sets = resolve_eval_sets(cfg, data_summary, tokenizer, log=lambda *a: None)
  return sets


def evaluate_sets(sets: list[EvalSet], eval_step, params, make_loader: Callable[[str], Any], *, mesh=None):
  """(the training set's EvalResult, metrics row) over every set with one compiled eval step.

  `make_loader(data_dir)` gives a set's batches (the same shapes for every set: no recompile). The row
  holds eval/<tag>/loss and eval/<tag>/bpb for each set, plus eval/loss and eval/bpb of the training
  corpus's split (the keys from before tagged sets); a data mixture's sources are all training sets, and
  eval/loss, eval/bpb their unweighted mean (the same average for every mixture of the sources).
  """
  from scaling.train.evaluate import EvalResult, evaluate
  row, own = {}, []
  for s in sets:
    r = evaluate(eval_step, params, make_loader(s.data_dir), bytes_per_token=s.bytes_per_token, mesh=mesh)
    row |= r.row(f'eval/{s.tag}/')
    if s.training:
      own.append(r)
  main = None
  if own:
    main = own[0] if len(own) == 1 else EvalResult(sum(r.loss for r in own) / len(own),
                                                   sum(r.bpb for r in own) / len(own), sum(r.tokens for r in own))
    row |= main.row()
  return main, row


def describe(row: dict, sets: list[EvalSet]) -> str:
  """'shakespeare 2.31, prose 3.05' (bits per byte of each set) for the progress line."""
  return ', '.join(f'{s.tag} {row[f"eval/{s.tag}/bpb"]:.4f}' for s in sets if f'eval/{s.tag}/bpb' in row)
