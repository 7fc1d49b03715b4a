"""Tokenizers behind one small interface: sentencepiece (BPE, unigram), char, byte, tiktoken.

Every tokenizer has `encode(str) -> list[int]`, `decode(list[int]) -> str`, `vocab_size`,
special ids (`eos_id`, `bos_id`, `pad_id`, `unk_id`; None where the tokenizer has none),
`name`, `kind`, `sha256` (hash of what defines it, recorded in the shard index) and
`bytes_per_token(texts)`. `decode` drops special ids (eos/bos/pad), so decoding a stream
of documents joined by EOS gives their concatenated text.

Kinds and their choices:
- `bpe` / `unigram` (default `bpe`): sentencepiece models trained on the training split
  with sentencepiece's own trainer. Byte fallback is on (no character is ever unknown),
  digits are split, normalization is the identity and no dummy prefix is added and no
  whitespace collapsed, so `decode(encode(s)) == s` for any text that does not contain
  U+2581 ('▁', sentencepiece's whitespace marker, which decodes to a space; a known
  sentencepiece limitation). Training runs on one thread with a fixed random seed, so two
  trainings on the same text give byte-identical `.model` files. Ids: <unk>=0, <s>=1, </s>=2.
- `char`: the characters of the training split (sorted by code point) plus <unk>=0 and
  <eos>=1; characters outside that set encode to <unk> and decode to U+FFFD. Exact round
  trip on in-vocabulary text. This is the seed project's tokenizer, kept for ablations.
- `byte`: UTF-8 bytes 0..255 plus <eos>=256, <bos>=257, <pad>=258 (vocab 259). Exact round
  trip on any text.
- `tiktoken:NAME` or `tiktoken:/path/to/file.tiktoken`: an OpenAI BPE encoding whose ranks
  file is available locally (`TIKTOKEN_CACHE_DIR`, or the path). For a path, the split
  regex and special tokens come from the tiktoken encoding whose name equals the file stem
  (e.g. `cl100k_base.tiktoken`), else the GPT-2 regex with <|endoftext|> appended as EOS.
  tiktoken is imported lazily; it is an optional dependency.

Files: `save(directory)` writes `tokenizer.json` (kind, name, hash, ...) and, for
sentencepiece, `tokenizer.model` beside it; `load_tokenizer(directory)` reads them back.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from scaling.base.files import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file

TOKENIZER_JSON = 'tokenizer.json'
SPM_MODEL_FILE = 'tokenizer.model'
SPM_KINDS = ('bpe', 'unigram')
KINDS = SPM_KINDS + ('char', 'byte', 'tiktoken')


class DataError(ValueError):
  """Bad data-pipeline input (files, corpus, tokenizer, shards), raised before training."""


def parse_spec(spec: str) -> tuple[str, str]:
  """'bpe' -> ('bpe', ''); 'tiktoken:gpt2' -> ('tiktoken', 'gpt2'). Raises DataError if unknown."""
  spec = str(spec).strip()
  kind, _, arg = spec.partition(':')
  if kind not in KINDS:
    raise DataError(f'unknown tokenizer {spec!r}: use one of bpe | unigram | char | byte | '
                    'tiktoken:ENCODING | tiktoken:/path/to/file.tiktoken')
  if kind == 'tiktoken' and not arg:
    raise DataError("tokenizer 'tiktoken' needs an encoding: 'tiktoken:gpt2' or "
                    "'tiktoken:/path/to/file.tiktoken'")
  if kind != 'tiktoken' and arg:
    raise DataError(f'tokenizer {spec!r}: only tiktoken takes an argument after ":"')
  return kind, arg


class Tokenizer:
  """The interface. Subclasses set the attributes and implement encode/decode/_save."""

  kind: str = ''
  name: str = ''
  vocab_size: int = 0
  eos_id: int | None = None
  bos_id: int | None = None
  pad_id: int | None = None
  unk_id: int | None = None
  sha256: str = ''

  def encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode(self, ids: Sequence[int]) -> str:
    raise NotImplementedError

  @property
  def special_ids(self) -> frozenset[int]:
    return frozenset(i for i in (self.eos_id, self.bos_id, self.pad_id) if i is not None)

  def encode_array(self, text: str, dtype=np.int32) -> np.ndarray:
    return np.asarray(self.encode(text), dtype=dtype)

  def bytes_per_token(self, texts: Iterable[str] | str) -> float:
    """UTF-8 bytes per token over `texts` (no EOS counted): the compression ratio."""
    if isinstance(texts, str):
      texts = [texts]
    n_bytes = n_tokens = 0
    for t in texts:
      n_bytes += len(t.encode('utf-8'))
      n_tokens += len(self.encode(t))
    return n_bytes / max(n_tokens, 1)

  def info(self) -> dict[str, Any]:
    return dict(kind=self.kind, name=self.name, vocab_size=self.vocab_size, eos_id=self.eos_id,
                bos_id=self.bos_id, pad_id=self.pad_id, unk_id=self.unk_id, sha256=self.sha256)

  def save(self, directory: str) -> str:
    """Writes tokenizer.json (and the model file) into `directory`; returns the json path."""
    os.makedirs(directory, exist_ok=True)
    meta = self.info()
    meta.update(self._save(directory))
    path = os.path.join(directory, TOKENIZER_JSON)
    atomic_write_text(path, json.dumps(meta, indent=1, ensure_ascii=False))
    return path

  def _save(self, directory: str) -> dict[str, Any]:
    del directory
    return {}

  def __repr__(self) -> str:
    return f'{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})'


# --- sentencepiece ------------------------------------------------------------------------


class SentencePieceTokenizer(Tokenizer):
  """A trained sentencepiece model (BPE or unigram), held as its serialized bytes."""

  def __init__(self, model_bytes: bytes, kind: str):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self._model_bytes = model_bytes
    self._sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    self.kind = kind
    self.vocab_size = int(self._sp.get_piece_size())
    self.name = f'{kind}{self.vocab_size}'
    self.sha256 = sha256_bytes(model_bytes)
    as_id = lambda i: None if i < 0 else int(i)
    self.eos_id, self.bos_id = as_id(self._sp.eos_id()), as_id(self._sp.bos_id())
    self.pad_id, self.unk_id = as_id(self._sp.pad_id()), as_id(self._sp.unk_id())
    self._newline_ids: list[int] | None = None

  def encode(self, text: str) -> list[int]:
    if self.kind == 'bpe' and len(text) > 4096 and '\n' in text:
      return self._encode_bpe_by_lines(text)
    return self._sp.encode(text)

  def _encode_bpe_by_lines(self, text: str) -> list[int]:
    """Same ids as encoding the whole text, about twice as fast on long documents.

    No BPE piece contains a newline (training sentences are lines), so merges never cross
    one and the text can be encoded line by line, joined by the newline's byte-fallback id.
    """
    if self._newline_ids is None:
      self._newline_ids = self._sp.encode('\n')
    out: list[int] = []
    for k, ids in enumerate(self._sp.encode(text.split('\n'), num_threads=1)):
      if k:
        out += self._newline_ids
      out += ids
    return out

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])

  def _save(self, directory: str) -> dict[str, Any]:
    atomic_write_bytes(os.path.join(directory, SPM_MODEL_FILE), self._model_bytes)
    return {'model_file': SPM_MODEL_FILE}


def train_sentencepiece(lines: Iterable[str], *, kind: str, vocab_size: int,
                        max_lines: int = 4_000_000, seed: int = 0, num_threads: int = 1,
                        character_coverage: float = 1.0) -> SentencePieceTokenizer:
  """Trains a sentencepiece model on `lines` (one training sentence each, no newline).

  character_coverage < 1 leaves the rarest characters out of the pieces (byte fallback spells them).
  Deterministic: one thread, fixed seed. Raises DataError (with the trainer's reason) when
  the corpus cannot support `vocab_size` or is empty. An exception raised by `lines` (e.g.
  prepare's interrupt) is re-raised as itself, not as a training failure.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  if kind not in SPM_KINDS:
    raise DataError(f'sentencepiece kind must be bpe or unigram, got {kind!r}')
  if not isinstance(vocab_size, int) or vocab_size < 260:
    raise DataError(f'vocab_size={vocab_size!r} is too small for a sentencepiece {kind} model with '
                    'byte fallback: it needs >= 260 (256 bytes + <unk> <s> </s> + pieces); '
                    'use data.vocab_size >= 512, or tokenizer=byte')
  n_lines = [0]
  raised: list[BaseException] = []

  def counted() -> Iterator[str]:
    try:
      for line in lines:
        if line:
          n_lines[0] += 1
          yield line
    except BaseException as e:  # sentencepiece turns it into a RuntimeError: keep the original
      raised.append(e)
      raise

  spm.set_random_generator_seed(seed)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=counted(), model_writer=model, model_type=kind,
        vocab_size=vocab_size, byte_fallback=True, split_digits=True,
        normalization_rule_name='identity', add_dummy_prefix=False,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        character_coverage=character_coverage, num_threads=num_threads, input_sentence_size=max_lines,
        shuffle_input_sentence=True, max_sentence_length=1 << 15,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=True,
        minloglevel=2)
  except RuntimeError as e:
    if raised:
      raise raised[0] from None
    msg = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
    if n_lines[0] == 0:
      raise DataError('cannot train the tokenizer: the training split has no text') from e
    raise DataError(
        f'sentencepiece could not train a {kind} tokenizer with vocab_size={vocab_size} on the '
        f'training split ({n_lines[0]} lines): {msg}. The corpus is too small for this vocab: '
        'lower data.vocab_size, add text, or use tokenizer=byte/char' +
        ('; or set data.character_coverage=0.9995 (the rarest characters are spelled in bytes)'
         if 'required_chars' in msg else '') + '.') from e
  return SentencePieceTokenizer(model.getvalue(), kind)


# --- char and byte ------------------------------------------------------------------------


class CharTokenizer(Tokenizer):
  """One id per character of the training split; <unk>=0, <eos>=1, chars from 2 on."""

  kind = 'char'
  _UNK = '\ufffd'

  def __init__(self, chars: Iterable[str]):
    self.chars = sorted(set(chars))
    if any(len(c) != 1 for c in self.chars):
      raise DataError('char tokenizer vocabulary must be single characters')
    self.unk_id, self.eos_id = 0, 1
    self._offset = 2
    self._to_id = {c: i + self._offset for i, c in enumerate(self.chars)}
    self.vocab_size = len(self.chars) + self._offset
    self.name = f'char{self.vocab_size}'
    self.sha256 = sha256_bytes(json.dumps(self.chars, ensure_ascii=True).encode())

  @classmethod
  def train(cls, texts: Iterable[str]) -> 'CharTokenizer':
    chars: set[str] = set()
    for t in texts:
      chars.update(t)
    if not chars:
      raise DataError('cannot build the char tokenizer: the training split has no text')
    return cls(chars)

  def encode(self, text: str) -> list[int]:
    get = self._to_id.get
    return [get(c, 0) for c in text]

  def decode(self, ids: Sequence[int]) -> str:
    out = []
    for i in ids:
      i = int(i)
      if i == self.unk_id:
        out.append(self._UNK)
      elif i >= self._offset:
        out.append(self.chars[i - self._offset])
    return ''.join(out)

  def _save(self, directory: str) -> dict[str, Any]:
    del directory
    return {'chars': ''.join(self.chars)}


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes 0..255, then <eos>=256, <bos>=257, <pad>=258."""

  kind = 'byte'
  name = 'byte'

  def __init__(self):
    self.eos_id, self.bos_id, self.pad_id = 256, 257, 258
    self.vocab_size = 259
    self.sha256 = sha256_bytes(b'byte-tokenizer-v1')

  def encode(self, text: str) -> list[int]:
    return list(text.encode('utf-8'))

  def encode_array(self, text: str, dtype=np.int32) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), dtype=np.uint8).astype(dtype)

  def decode(self, ids: Sequence[int]) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode('utf-8', errors='replace')


# --- tiktoken -----------------------------------------------------------------------------


def _import_tiktoken():
  try:
    import tiktoken  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError('tokenizer tiktoken:... needs the optional package tiktoken: '
                    '`pip install tiktoken`') from e
  return tiktoken


class TiktokenTokenizer(Tokenizer):
  """A tiktoken Encoding; EOS is <|endoftext|>. Built from a local file or the tiktoken cache."""

  kind = 'tiktoken'

  def __init__(self, arg: str):
    tiktoken = _import_tiktoken()
    self.arg = arg
    if os.sep in arg or arg.endswith('.tiktoken') or os.path.exists(arg):
      self._enc, self.sha256 = self._from_file(tiktoken, arg)
    else:
      try:
        self._enc = tiktoken.get_encoding(arg)
      except ValueError as e:
        raise DataError(f'tiktoken has no encoding {arg!r} ({e}); use tiktoken:gpt2, '
                        'tiktoken:cl100k_base, ... or tiktoken:/path/to/file.tiktoken') from e
      except Exception as e:  # network errors when the file is not cached
        raise DataError(
            f'tiktoken encoding {arg!r} is not available locally and could not be downloaded '
            f'({type(e).__name__}: {e}). Put its file in a folder and set TIKTOKEN_CACHE_DIR '
            'to it, or use tokenizer=tiktoken:/path/to/file.tiktoken') from e
      self.sha256 = sha256_bytes(json.dumps(
          [arg, self._enc.n_vocab, self._enc._pat_str], ensure_ascii=True).encode())  # pylint: disable=protected-access
    self.name = f'tiktoken:{self._enc.name}'
    eot = self._enc._special_tokens.get('<|endoftext|>')  # pylint: disable=protected-access
    self.eos_id = None if eot is None else int(eot)
    self.vocab_size = int(self._enc.n_vocab)

  @staticmethod
  def _from_file(tiktoken, path: str):
    if not os.path.isfile(path):
      raise DataError(f'tiktoken file not found: {path}')
    import tiktoken.load  # pylint: disable=g-import-not-at-top
    try:
      ranks = tiktoken.load.load_tiktoken_bpe(path)
    except Exception as e:
      raise DataError(f'cannot read tiktoken ranks file {path}: {e}; each line must be '
                      '"<base64 token> <rank>"') from e
    if not ranks:
      raise DataError(f'tiktoken ranks file {path} is empty')
    stem = os.path.basename(path).split('.')[0]
    spec = _known_tiktoken_spec(stem, ranks)
    if spec is None:
      from tiktoken_ext import openai_public  # pylint: disable=g-import-not-at-top
      n = max(ranks.values()) + 1
      spec = dict(name=stem, pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks,
                  special_tokens={'<|endoftext|>': n})
    spec.pop('explicit_n_vocab', None)
    enc = tiktoken.Encoding(**spec)
    return enc, sha256_file(path)

  def encode(self, text: str) -> list[int]:
    return self._enc.encode_ordinary(text)

  def decode(self, ids: Sequence[int]) -> str:
    n = self._enc.max_token_value
    specials = set(self._enc._special_tokens.values())  # pylint: disable=protected-access
    return self._enc.decode([int(i) for i in ids if int(i) not in specials and int(i) <= n])

  def _save(self, directory: str) -> dict[str, Any]:
    if os.path.isfile(self.arg):
      dst = os.path.join(directory, 'tokenizer.tiktoken')
      if os.path.abspath(self.arg) != os.path.abspath(dst):
        shutil.copyfile(self.arg, dst)
      return {'tiktoken': 'tokenizer.tiktoken', 'tiktoken_name': self._enc.name}
    return {'tiktoken': self.arg}


def _known_tiktoken_spec(stem: str, ranks: dict[bytes, int]) -> dict[str, Any] | None:
  """The tiktoken constructor for encoding `stem`, fed our local ranks instead of a download."""
  try:
    from tiktoken_ext import openai_public  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  ctor = getattr(openai_public, 'ENCODING_CONSTRUCTORS', {}).get(stem)
  if ctor is None or stem == 'gpt2':  # gpt2's constructor reads two other files
    return None
  saved = openai_public.load_tiktoken_bpe
  openai_public.load_tiktoken_bpe = lambda *a, **k: ranks
  try:
    return dict(ctor())
  except Exception:  # pylint: disable=broad-except
    return None
  finally:
    openai_public.load_tiktoken_bpe = saved


# --- building and loading -----------------------------------------------------------------


def load_tokenizer(path: str) -> Tokenizer:
  """Loads the tokenizer saved in directory `path` (or from its tokenizer.json)."""
  directory = os.path.dirname(path) if path.endswith('.json') else path
  json_path = os.path.join(directory, TOKENIZER_JSON)
  if not os.path.isfile(json_path):
    raise DataError(f'no tokenizer in {directory}: {TOKENIZER_JSON} is missing; run '
                    '`scaling prepare` for this data directory first')
  with open(json_path, encoding='utf-8') as f:
    meta = json.load(f)
  kind = meta.get('kind')
  if kind in SPM_KINDS:
    model_path = os.path.join(directory, meta.get('model_file', SPM_MODEL_FILE))
    if not os.path.isfile(model_path):
      raise DataError(f'sentencepiece model file missing: {model_path}; re-run `scaling prepare`')
    with open(model_path, 'rb') as f:
      tok: Tokenizer = SentencePieceTokenizer(f.read(), kind)
  elif kind == 'char':
    tok = CharTokenizer(meta['chars'])
  elif kind == 'byte':
    tok = ByteTokenizer()
  elif kind == 'tiktoken':
    arg = meta['tiktoken']
    local = os.path.join(directory, arg)
    tok = TiktokenTokenizer(local if os.path.isfile(local) else arg)
  else:
    raise DataError(f'{json_path}: unknown tokenizer kind {kind!r}')
  if meta.get('sha256') and meta['sha256'] != tok.sha256:
    raise DataError(f'tokenizer in {directory} does not match its {TOKENIZER_JSON} '
                    f'(hash {tok.sha256[:12]} != {meta["sha256"][:12]}): the model file was '
                    'changed or corrupted; re-run `scaling prepare` into a fresh data_dir')
  return tok
