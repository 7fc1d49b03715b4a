"""`scaling prepare`: raw text -> tokenizer -> token shards, idempotently and atomically.

Steps (see corpus.py for sources and the split, shards.py for the files written):
  1. resolve the corpus (missing files, bad globs, unknown tokenizer, a data_dir holding
     other files: DataError at once);
  2. if `data_dir` was prepared from the same inputs (origin.json's stat fingerprint: the
     settings + every input file's path, size and mtime) and its files verify, do nothing and
     say so. If only the fingerprint differs (the corpus was moved or copied, or touched),
     the documents are read and hashed: the same content digest reuses the directory (its
     origin.json is updated), another one rebuilds it. A directory that fails a check is
     rebuilt with one line naming the file and the failed check;
  3. assign documents to train/validation by the hash of their location-free names;
  4. train/build the tokenizer on the training split only;
  5. encode every document, append EOS, write `train.bin`/`val.bin` (a process pool over
     chunks of documents when the corpus is larger than `parallel_threshold_mb`);
  6. write index.json, split.json, summary.json, origin.json, then rename the directory into
     place. All of it is built in a temporary directory beside `data_dir`
     (`.<name>.tmp-<host>-<pid>-*`), so an interrupted or failed prepare leaves no partial
     data directory; a temporary directory left by a killed prepare on this host is removed
     by the next one.

Interrupts: `prepare(..., stop=f)` calls `f()` between documents, chunks and shard blocks and
raises `Interrupted` (a KeyboardInterrupt) as soon as it returns true; `main_prepare` (the
CLI) turns SIGINT/SIGTERM into that, prints one line and exits 128 + signal (130 for Ctrl-C).
Without `stop`, a KeyboardInterrupt is raised wherever Python happens to be, and JAX's gc
callback swallows one that lands in it; that is why the CLI does not rely on it.

Steps 3-5 (the split, the tokenizer, the encoding and its process pool) are in encode.py; this
module holds the settings, the up-to-date checks, the directory's build and install, and the CLI.
The pool uses the 'spawn' start method (safe under a multithreaded JAX parent); a script
calling `prepare` on a corpus above the threshold needs the usual `if __name__ == '__main__'`.

`bytes_per_token_*` in the summary are UTF-8 text bytes / tokens, the EOS separators
counted as tokens: the ratio that turns a mean loss over the token stream into bits per
byte (`bits_per_byte` in loader.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from scaling.base import files
from scaling.data import corpus as corpus_lib
from scaling.data import shards
from scaling.data import tokenizer as tok_lib
from scaling.data.encode import _TOKENIZER_THREAD, _Assigner, _build_tokenizer, _encode_all, _iter_docs, _tqdm
from scaling.data.tokenizer import DataError

SUMMARY_JSON = 'summary.json'
ORIGIN_JSON = 'origin.json'
# what prepare writes into a data directory; it replaces a directory that holds only these
_KNOWN_FILES = frozenset({
    SUMMARY_JSON, ORIGIN_JSON, shards.INDEX_JSON, shards.SPLIT_JSON, tok_lib.TOKENIZER_JSON,
    tok_lib.SPM_MODEL_FILE, 'tokenizer.tiktoken', 'train.bin', 'val.bin', 'train.docs.npy',
    'val.docs.npy'})
_OWN_TEMP = re.compile(r'^[\w.]+\.tmp\d+(\.npy)?$')   # atomic-write leftovers of older versions


class Interrupted(KeyboardInterrupt):
  """prepare stopped at a check point because `stop()` returned true; nothing was kept."""


def _get(cfg: Any, name: str, default: Any) -> Any:
  """Reads cfg.name from a ConfigDict, dict or object; `default` when absent."""
  if isinstance(cfg, dict):
    return cfg.get(name, default)
  try:
    return cfg[name] if name in cfg else default
  except TypeError:
    return getattr(cfg, name, default)


def _settings(data_cfg: Any) -> dict[str, Any]:
  """The config fields that decide the prepared data, validated."""
  spec = str(_get(data_cfg, 'tokenizer', 'bpe'))
  kind, arg = tok_lib.parse_spec(spec)
  vocab_size = _get(data_cfg, 'vocab_size', 4096)
  coverage = float(_get(data_cfg, 'character_coverage', 1.0))
  if not 0.9 <= coverage <= 1.0:
    raise DataError(f'data.character_coverage={coverage} must be in [0.9, 1]; 1 keeps every character a piece, '
                    '0.9995 (as LLaMA) spells the rarest characters in bytes')
  if kind in tok_lib.SPM_KINDS:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 260:
      raise DataError(f'data.vocab_size={vocab_size!r}: a {kind} tokenizer with byte fallback '
                      'needs an integer >= 260 (256 byte pieces + specials); try 4096')
  else:
    vocab_size = None  # decided by the tokenizer
  val_fraction = float(_get(data_cfg, 'val_fraction', 0.05))
  if not 0.0 <= val_fraction < 1.0:
    raise DataError(f'data.val_fraction={val_fraction} must be in [0, 1)')
  corpus = str(_get(data_cfg, 'corpus', 'shakespeare')).strip()
  given = str(_get(data_cfg, 'tokenizer_from', '') or '')   # a tokenizer built elsewhere (a mixture's, mixture.py)
  if given:
    given = os.path.abspath(given)
    tok_lib.load_tokenizer(given)   # fail fast: missing or unreadable
  return dict(format_version=shards.FORMAT_VERSION, corpus=corpus,
              text_field=str(_get(data_cfg, 'text_field', 'text')), tokenizer=spec,
              tokenizer_kind=kind, tokenizer_arg=arg, vocab_size=vocab_size,
              val_fraction=val_fraction,
              # only when not 1: the default keeps the hashes (and cache directories) it always had
              **({'character_coverage': coverage} if coverage != 1.0 and kind in tok_lib.SPM_KINDS else {}),
              **({'tokenizer_from': given, 'tokenizer_sha256': tok_lib.load_tokenizer(given).sha256} if given else {}))


def _content_settings(settings: dict[str, Any]) -> dict[str, Any]:
  """The settings without the corpus spec and a given tokenizer's path (locations): what the data depends on."""
  return {k: v for k, v in settings.items() if k not in ('corpus', 'tokenizer_from')}


def _hash(obj: Any) -> str:
  return files.sha256_bytes(json.dumps(obj, sort_keys=True).encode())


def default_data_dir(data_cfg: Any) -> str:
  """$SCALING_CACHE/data/<corpus>-<tokenizer>-<hash of the settings>."""
  s = _settings(data_cfg)
  corpus = s['corpus'] if s['corpus'] == 'shakespeare' else (
      'hf' if s['corpus'].startswith('hf:') else 'files')
  tok = s['tokenizer_kind'] + (str(s['vocab_size']) if s['vocab_size'] else '')
  s.pop('tokenizer_from', None)   # a given tokenizer counts by its sha256, not where it lies
  return os.path.join(corpus_lib.cache_dir(), 'data', f'{corpus}-{tok}-{_hash(s)[:10]}')


def resolve_data_dir(data_cfg: Any) -> str:
  d = str(_get(data_cfg, 'data_dir', '') or '')
  return os.path.abspath(os.path.expanduser(d)) if d else default_data_dir(data_cfg)


def _fingerprint(settings: dict[str, Any], sources: list[corpus_lib.Source]) -> str:
  """Cheap identity of the inputs (stat of every file): equal means nothing to read."""
  inputs = [s.fingerprint() for s in sources]
  arg = settings['tokenizer_arg']
  if settings['tokenizer_kind'] == 'tiktoken' and os.path.isfile(arg):
    inputs.append(corpus_lib._stat_fp(arg))  # pylint: disable=protected-access
  return _hash([settings, inputs])


def _checker(stop: Callable[[], Any] | None) -> Callable[[], None]:
  """A check point: raises Interrupted when `stop()` is true."""
  def check() -> None:
    if stop is not None and stop():
      raise Interrupted('prepare interrupted')
  return check


# --- digests: the identity of the documents and of the split ------------------------------


def _text_sha(text: str) -> str:
  return files.sha256_bytes(text.encode('utf-8'))


class _Digests:
  """Hashes every document (name + text) as it passes; keeps the validation documents.

  `content_digest` identifies the data settings and the documents in order: equal digests
  mean an identical data directory. `split_digest` (split_digest()) identifies the
  validation documents, names and texts.
  """

  def __init__(self, settings: dict[str, Any], is_val: Callable[[str], bool]):
    self._h = hashlib.sha256(json.dumps(_content_settings(settings), sort_keys=True).encode())
    self._is_val = is_val
    self.val: dict[str, tuple[int, str]] = {}

  def iter(self, docs: Iterator[corpus_lib.Document]) -> Iterator[corpus_lib.Document]:
    for d in docs:
      sha = _text_sha(d.text)
      self._h.update(json.dumps([d.name, sha]).encode() + b'\n')
      if d.text and self._is_val(d.name):
        self.val[d.name] = (len(d.text.encode('utf-8')), sha)
      yield d

  @property
  def content_digest(self) -> str:
    return self._h.hexdigest()

  def split_record(self, val_fraction: float, num_documents: int | None) -> dict[str, Any]:
    docs = [dict(name=n, bytes=b, sha256=h) for n, (b, h) in sorted(self.val.items())]
    return dict(val_fraction=val_fraction, num_documents=num_documents,
                num_val_documents=len(docs), split_digest=split_digest(docs),
                val_documents=docs)


def split_digest(val_documents: list[dict[str, Any]]) -> str:
  """sha256 of the validation documents' sorted (name, text sha256) list."""
  return _hash(sorted([d['name'], d['sha256']] for d in val_documents))


def _content_digest(settings, sources, check) -> str:
  """Reads and hashes every document (no tokenizing): the content digest prepare would record."""
  digests = _Digests(settings, lambda name: False)
  for _ in digests.iter(_iter_docs(sources, check)):
    pass
  return digests.content_digest


# --- is the directory up to date? ---------------------------------------------------------


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding='utf-8') as f:
      obj = json.load(f)
  except FileNotFoundError as e:
    raise shards.ShardError(f'{path} missing', path, 'presence check: the file is missing') from e
  except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
    raise shards.ShardError(f'{path} unreadable: {e}', path, f'not valid JSON ({e})') from e
  if not isinstance(obj, dict):
    raise shards.ShardError(f'{path} is not a JSON object', path, 'not a JSON object')
  return obj


def _verify(data_dir: str, summary: dict[str, Any], check) -> None:
  """Every check a reader makes (shards.open_split), plus split.json against the summary."""
  tok = tok_lib.load_tokenizer(data_dir)
  shards.check_tokenizer_hash(data_dir, tok.sha256)
  for split in shards.read_index(data_dir)['splits']:
    shards.open_split(data_dir, split, verify=True, stop=check)
  split = shards.read_split(data_dir)
  if split is None or split['split_digest'] != summary.get('split_digest'):
    path = os.path.join(data_dir, shards.SPLIT_JSON)
    raise shards.ShardError(f'{path} does not match {SUMMARY_JSON}', path,
                            f'split_digest check: not the one {SUMMARY_JSON} records')


def _up_to_date(data_dir: str, fingerprint: str, settings, sources, check,
                log) -> tuple[dict[str, Any] | None, str | None]:
  """(the stored summary, None) if data_dir holds this data and verifies, else (None, why).

  `why` is None for a directory that does not exist (nothing to explain).
  """
  if not os.path.isdir(data_dir) or not os.listdir(data_dir):
    return None, None
  try:
    origin = _read_json(os.path.join(data_dir, ORIGIN_JSON))
    summary = _read_json(os.path.join(data_dir, SUMMARY_JSON))
  except shards.ShardError as e:
    return None, f'{e.path} failed the {e.check} (an unfinished prepare, or an older version)'
  if summary.get('settings') != _content_settings(settings):
    return None, 'it was prepared with other data settings'
  moved = origin.get('fingerprint') != fingerprint
  if moved:  # moved, copied or touched: the same documents reuse the directory
    digest = _content_digest(settings, sources, check)
    if digest != summary.get('content_digest'):
      return None, (f'the documents changed (content digest {str(summary.get("content_digest"))[:16]}'
                    f' -> {digest[:16]})')
  try:
    _verify(data_dir, summary, check)
  except shards.ShardError as e:
    return None, f'{e.path} failed the {e.check}'
  except DataError as e:
    return None, str(e).splitlines()[0]
  if moved:
    log(f'prepare: {data_dir} holds the same documents (content digest '
        f'{summary["content_digest"][:16]}) as corpus {settings["corpus"]!r}; reusing it')
    origin = dict(origin, corpus=settings['corpus'],
                  corpus_root=corpus_lib.corpus_root(settings['corpus']), fingerprint=fingerprint)
    files.atomic_write_text(os.path.join(data_dir, ORIGIN_JSON), json.dumps(origin, indent=1))
  return dict(summary, **origin), None


# --- the directory: built beside the target, renamed into place --------------------------


def _temp_prefix(data_dir: str, kind: str) -> str:
  return f'.{os.path.basename(data_dir)}.{kind}-{socket.gethostname()}-'


def _own_temp(name: str) -> bool:
  """A temporary file an atomic write of one of prepare's files left (a kill between write and rename)."""
  if files.is_temp_name(name):   # '.<file>.<12 hex>.tmp' (scaling/base/files.py)
    return name[1:].rsplit('.', 2)[0] in _KNOWN_FILES
  return bool(_OWN_TEMP.match(name))


def _check_replaceable(data_dir: str) -> None:
  """prepare replaces data_dir as a whole: refuse one that holds anything it did not write."""
  if not os.path.lexists(data_dir):
    return
  if not os.path.isdir(data_dir) or os.path.islink(data_dir):
    raise DataError(f'data.data_dir={data_dir} exists and is not a directory: choose a new path')
  extra = sorted(f for f in os.listdir(data_dir) if f not in _KNOWN_FILES and not _own_temp(f))
  if extra:
    raise DataError(f'data.data_dir={data_dir} holds files prepare did not write ('
                    f'{", ".join(extra[:5])}{", ..." if len(extra) > 5 else ""}); prepare '
                    'replaces the whole directory, so it leaves this one alone: choose a new or '
                    'empty directory for data.data_dir')


def _remove_stale(data_dir: str, log) -> None:
  """Removes temporary directories left beside data_dir by dead prepares on this host."""
  parent = os.path.dirname(data_dir)
  if not os.path.isdir(parent):
    return
  pattern = re.compile('^(' + '|'.join(re.escape(_temp_prefix(data_dir, k)) for k in ('tmp', 'old'))
                       + r')(\d+)-')
  for name in os.listdir(parent):
    m = pattern.match(name)
    if not m:
      continue
    try:
      os.kill(int(m.group(2)), 0)
      continue   # its prepare is still running
    except ProcessLookupError:
      pass
    except PermissionError:
      continue   # alive, another user's
    shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    log(f'prepare: removed {os.path.join(parent, name)}, left by an interrupted prepare')


def _install(tmp: str, data_dir: str, existed: bool) -> None:
  """Renames the finished tmp directory to data_dir, replacing (then deleting) an old one.

  If data_dir appeared while this prepare ran (`existed` False: a concurrent prepare of the
  same target) and holds the same data (summary.json is content-derived), it is kept.
  """
  old = None
  if not existed and os.path.isdir(data_dir) and _same_file(tmp, data_dir, SUMMARY_JSON):
    shutil.rmtree(tmp, ignore_errors=True)
    return
  if os.path.lexists(data_dir):
    old = os.path.join(os.path.dirname(data_dir),
                       f'{_temp_prefix(data_dir, "old")}{os.getpid()}-{uuid.uuid4().hex[:8]}')
    os.rename(data_dir, old)
  try:
    os.rename(tmp, data_dir)
  except OSError:
    if old is not None:
      os.rename(old, data_dir)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def _same_file(a: str, b: str, name: str) -> bool:
  try:
    with open(os.path.join(a, name), 'rb') as fa, open(os.path.join(b, name), 'rb') as fb:
      return fa.read() == fb.read()
  except OSError:
    return False


# --- prepare ------------------------------------------------------------------------------


def prepare(data_cfg: Any, *, verbose: bool = True, force: bool = False,
            stop: Callable[[], Any] | None = None) -> dict[str, Any]:
  """Prepares tokenizer + shards for `data_cfg` (scaling/config/default.py `c.data`); returns summary.

  Idempotent: with the same inputs and settings a second call verifies the shards, prints
  that the data is up to date and returns the stored summary with `skipped=True`. The
  summary is summary.json + origin.json + `data_dir` and `tokenizer_path`.
  `stop`: called at check points; when it returns true, prepare removes what it wrote and
  raises Interrupted. Extra optional fields: `prepare_workers` (0: auto),
  `parallel_threshold_mb` (64).
  """
  t_start = time.time()
  log = (lambda msg: print(msg, flush=True)) if verbose else (lambda msg: None)
  cap = _get(data_cfg, 'train_tokens', 0)
  if cap:   # a fixed slice of the full directory's training split (scaling/data/subset.py)
    from scaling.data.subset import with_train_subset
    full = prepare({**{k: _get(data_cfg, k, None) for k in data_cfg}, 'train_tokens': 0}, verbose=verbose,
                   force=force, stop=stop)
    return with_train_subset(full, cap, log)
  check = _checker(stop)
  settings = _settings(data_cfg)
  if settings['tokenizer_kind'] == 'tiktoken':
    tok_lib.TiktokenTokenizer(settings['tokenizer_arg'])  # fail fast: missing file / package
  sources = corpus_lib.resolve_corpus(settings['corpus'], settings['text_field'])
  data_dir = resolve_data_dir(data_cfg)
  target = os.path.realpath(data_dir)   # a symlinked data_dir: build beside what it points to
  _check_replaceable(target)
  existed = os.path.lexists(target)
  fingerprint = _fingerprint(settings, sources)
  _remove_stale(target, log)
  why = 'forced (--force)' if force and os.path.isdir(data_dir) else None
  if not force:
    summary, why = _up_to_date(data_dir, fingerprint, settings, sources, check, log)
    if summary is not None:
      log(f'prepare: {data_dir} is up to date (same inputs and tokenizer); nothing to do')
      return _result(summary, data_dir, skipped=True)
  if why:
    log(f'prepare: rebuilding {data_dir}: {why}')
  os.makedirs(os.path.dirname(target), exist_ok=True)
  tmp = os.path.join(os.path.dirname(target),
                     f'{_temp_prefix(target, "tmp")}{os.getpid()}-{uuid.uuid4().hex[:8]}')
  os.mkdir(tmp)   # (not mkdtemp: the directory keeps the umask's permissions, not 0700)
  try:
    log(f'prepare: corpus {", ".join(s.label for s in sources)} -> {data_dir}')
    summary, encode_s, workers = _build(tmp, data_cfg, settings, sources, check, log, verbose)
    origin = dict(corpus=settings['corpus'], corpus_root=corpus_lib.corpus_root(settings['corpus']),
                  fingerprint=fingerprint, encode_workers=workers, encode_seconds=round(encode_s, 2),
                  seconds=round(time.time() - t_start, 2))
    files.atomic_write_text(os.path.join(tmp, ORIGIN_JSON), json.dumps(origin, indent=1))
    check()
    _install(tmp, target, existed)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  result = _result(dict(summary, **origin), data_dir, skipped=False)
  log(format_summary(result))
  return result


def _result(summary: dict[str, Any], data_dir: str, *, skipped: bool) -> dict[str, Any]:
  return dict(summary, data_dir=data_dir,
              tokenizer_path=os.path.join(data_dir, tok_lib.TOKENIZER_JSON), skipped=skipped)


def _build(tmp: str, data_cfg, settings, sources, check, log,
           verbose: bool) -> tuple[dict[str, Any], float, int]:
  """Tokenizer, shards, index.json, split.json and summary.json into `tmp`."""
  assigner = _Assigner(sources, settings['val_fraction'])
  tok = _build_tokenizer(settings, sources, assigner, check, log)
  tok.save(tmp)
  dtype = shards.token_dtype(tok.vocab_size)
  total_bytes = sum(s.size_bytes() for s in sources)
  workers = int(_get(data_cfg, 'prepare_workers', 0)) or min(os.cpu_count() or 1, 16)
  if total_bytes < float(_get(data_cfg, 'parallel_threshold_mb', 64)) * 2**20:
    workers = 1
  writers = {s: shards.ShardWriter(tmp, s, dtype) for s in shards.SPLITS}
  digests = _Digests(settings, assigner.is_val)
  t0 = time.time()
  try:
    with _tqdm(None if assigner.streamed else assigner.num_known, verbose) as progress:
      docs = digests.iter(_iter_docs(sources, check))
      _encode_all(tok, docs, assigner, writers, tmp, dtype, workers, progress, check)
  except BaseException:
    for w in writers.values():
      w.abort()
    raise
  metas = {s: w.close() for s, w in writers.items()}
  encode_s = time.time() - t0
  train, val = metas['train'], metas['val']
  if train['num_tokens'] == 0:
    raise DataError(f'the training split of corpus {settings["corpus"]!r} is empty (all '
                    'documents empty or in validation)')
  if settings['val_fraction'] > 0 and val['num_tokens'] == 0:
    raise DataError(f'the validation split of corpus {settings["corpus"]!r} is empty: its '
                    'documents are empty; raise data.val_fraction or add documents')
  if not settings['val_fraction']:
    del metas['val']
  index = dict(format_version=shards.FORMAT_VERSION, vocab_size=tok.vocab_size,
               eos_id=tok.eos_id, tokenizer_sha256=tok.sha256, splits=metas)
  files.atomic_write_text(os.path.join(tmp, shards.INDEX_JSON), json.dumps(index, indent=1))
  split = digests.split_record(settings['val_fraction'],
                               None if assigner.streamed else assigner.num_known)
  files.atomic_write_text(os.path.join(tmp, shards.SPLIT_JSON),
                            json.dumps(split, indent=1, ensure_ascii=False))
  summary = _summary(settings, tok, dtype, train, val, split, digests.content_digest)
  files.atomic_write_text(os.path.join(tmp, SUMMARY_JSON),
                            json.dumps(summary, indent=1, ensure_ascii=False))
  return summary, encode_s, workers


def _summary(settings, tok, dtype, train, val, split, content_digest) -> dict[str, Any]:
  """summary.json: location-free (no paths, no timings), so a moved corpus gives the same bytes."""
  bpt = lambda m: round(m['text_bytes'] / max(m['num_tokens'], 1), 4)
  return dict(
      settings=_content_settings(settings), tokenizer=settings['tokenizer'],
      tokenizer_kind=tok.kind, tokenizer_name=tok.name,
      vocab_size=tok.vocab_size, eos_id=tok.eos_id, bos_id=tok.bos_id, dtype=dtype.name,
      train_tokens=train['num_tokens'], val_tokens=val['num_tokens'],
      train_bytes=train['text_bytes'], val_bytes=val['text_bytes'],
      train_docs=train['num_docs'], val_docs=val['num_docs'],
      bytes_per_token_train=bpt(train), bytes_per_token_val=bpt(val),
      val_documents=[d['name'] for d in split['val_documents']][:50],
      split_digest=split['split_digest'], content_digest=content_digest)


def format_summary(summary: dict[str, Any]) -> str:
  keys = ('data_dir', 'corpus', 'tokenizer_path', 'tokenizer_kind', 'vocab_size', 'train_docs',
          'val_docs', 'train_tokens', 'val_tokens', 'train_bytes', 'val_bytes',
          'bytes_per_token_train', 'bytes_per_token_val', 'split_digest', 'seconds')
  width = max(len(k) for k in keys)
  lines = ['prepare summary:'] + [f'  {k:<{width}}  {summary.get(k)}' for k in keys]
  return '\n'.join(lines)


def run_stoppable(work: Callable, message: Callable[[str], str]):
  """work(stop) with SIGINT/SIGTERM turned into `stop()` being true (a second signal raises at once); on
  Interrupted, `message(signal name)` on stderr and SystemExit(128 + signal number) (an abandoned sentencepiece
  training: os._exit, no interpreter teardown under it). The previous handlers come back in every case."""
  got: list[int] = []

  def on_signal(signum, frame):
    del frame
    if got:
      raise KeyboardInterrupt  # a second one: the user insists
    got.append(signum)

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    return work(lambda: got)
  except Interrupted:
    name = signal.Signals(got[0]).name if got else 'signal'
    print(message(name), file=sys.stderr, flush=True)
    status = 128 + (got[0] if got else signal.SIGINT)
    if any(t.name == _TOKENIZER_THREAD and t.is_alive() for t in threading.enumerate()):
      sys.stdout.flush()
      os._exit(status)
    raise SystemExit(status) from None
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def main_prepare(config: Any, *, force: bool = False) -> dict[str, Any]:
  """CLI entry: `config` is the full run config (uses config.data) or a data config.

  Prints the summary exactly once (prepare prints it after real work; here when skipped).
  SIGINT/SIGTERM stop prepare at its next check point: one line on stderr, nothing left
  behind, SystemExit(128 + signal number) (130 for Ctrl-C). A second signal raises at once.
  """
  data_cfg = _get(config, 'data', None)
  if data_cfg is None:
    data_cfg = config
  summary = run_stoppable(
      lambda stop: prepare(data_cfg, verbose=True, force=force, stop=stop),
      lambda name: f'prepare: interrupted by {name}: stopped, {resolve_data_dir(data_cfg)} left as it was '
                   '(nothing partial written); re-run to prepare')
  if summary.get('skipped'):
    print(format_summary(summary))
  return summary
