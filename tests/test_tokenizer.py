"""Tokenizers: exact round trips, determinism, save/load, special ids, bad input.

References are independent of the code under test: the input string itself (round trips),
Python's own UTF-8 encoder (byte tokenizer), hand-computed BPE merges (tiktoken ranks file),
and byte counts done here (bytes_per_token).
"""

import base64
import importlib.util
import os

import numpy as np
import pytest

from scaling.data import tokenizer as tok_lib
from scaling.data.tokenizer import DataError

_WORDS = ('the king queen lord lady sword crown night day love death hath doth thou thee '
          'shall would could 1600 42 ü é ß 漢字 — naïve café').split()


def _corpus_lines(n=600, seed=0):
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(n):
    words = rng.choice(_WORDS, size=rng.integers(3, 14))
    lead = ' ' * int(rng.integers(0, 3))
    lines.append(lead + ' '.join(words) + rng.choice(['.', ',', '!', '?', '', '  ']))
  return lines


def random_unicode(rng, n):
  """A random string over ASCII, whitespace/control, Latin, Greek, CJK, emoji, combining marks.

  U+2581 is left out: sentencepiece uses it as its whitespace marker (documented limitation).
  """
  pools = [(0x20, 0x7F), (0x00, 0x20), (0xA0, 0x250), (0x370, 0x400), (0x4E00, 0x4F00),
           (0x1F600, 0x1F650), (0x300, 0x370), (0xAC00, 0xAC80)]
  out = []
  for _ in range(n):
    lo, hi = pools[int(rng.integers(len(pools)))]
    cp = int(rng.integers(lo, hi))
    out.append(chr(cp))
  s = ''.join(out)
  return s.replace('\u2581', ' ')


@pytest.fixture(scope='module')
def spm_models():
  lines = _corpus_lines()
  return {kind: tok_lib.train_sentencepiece(iter(lines), kind=kind, vocab_size=320)
          for kind in ('bpe', 'unigram')}


@pytest.mark.parametrize('kind', ['bpe', 'unigram'])
def test_sentencepiece_round_trip_arbitrary_unicode(spm_models, kind):
  tok = spm_models[kind]
  rng = np.random.default_rng(1)
  samples = [random_unicode(rng, int(rng.integers(1, 200))) for _ in range(200)]
  samples += ['', ' ', '  leading and trailing  ', 'a\n\nb\r\n\tc', 'x' * 5000, '0123456789',
              '\x00\x01 nul', 'the king 1600 ü漢字🙂']
  for s in samples:
    ids = tok.encode(s)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == s, repr(s)


def test_sentencepiece_settings(spm_models):
  tok = spm_models['bpe']
  assert tok.vocab_size == 320
  assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, None)
  # Digits are split: a number never becomes one piece.
  assert len(tok.encode('1600')) == 4
  # Identity normalization: no whitespace collapsing, no dummy prefix.
  assert tok.decode(tok.encode('a   b')) == 'a   b'
  assert tok.decode(tok.encode(' x')) == ' x'
  # Documented limitation: a literal U+2581 decodes as a space.
  assert tok.decode(tok.encode('a\u2581b')) == 'a b'
  # decode drops EOS/BOS, so a document stream decodes to the joined text.
  assert tok.decode(tok.encode('king') + [tok.eos_id] + tok.encode('queen')) == 'kingqueen'


@pytest.mark.parametrize('kind', ['bpe', 'unigram'])
def test_sentencepiece_training_is_deterministic(tmp_path, kind):
  lines = _corpus_lines(n=300, seed=3)
  paths = []
  for run in range(2):
    tok = tok_lib.train_sentencepiece(iter(lines), kind=kind, vocab_size=300)
    tok.save(str(tmp_path / f'run{run}'))
    paths.append(tmp_path / f'run{run}' / tok_lib.SPM_MODEL_FILE)
  assert paths[0].read_bytes() == paths[1].read_bytes()


def test_sentencepiece_vocab_too_large_or_small():
  with pytest.raises(DataError, match='vocab_size=5000'):
    tok_lib.train_sentencepiece(iter(['hello world', 'a b c']), kind='bpe', vocab_size=5000)
  with pytest.raises(DataError, match='too small'):
    tok_lib.train_sentencepiece(iter(['hello world']), kind='bpe', vocab_size=100)
  with pytest.raises(DataError, match='no text'):
    tok_lib.train_sentencepiece(iter(['', '']), kind='unigram', vocab_size=300)


def test_byte_tokenizer_matches_utf8_and_round_trips():
  tok = tok_lib.ByteTokenizer()
  rng = np.random.default_rng(2)
  for _ in range(50):
    s = random_unicode(rng, 100) + '\u2581'
    assert tok.encode(s) == list(s.encode('utf-8'))
    assert tok.decode(tok.encode(s)) == s
  assert tok.vocab_size == 259 and tok.eos_id == 256
  assert tok.decode([104, 105, tok.eos_id, 33]) == 'hi!'


def test_char_tokenizer():
  tok = tok_lib.CharTokenizer.train(['hello world', 'ünï 漢'])
  chars = sorted(set('hello world' + 'ünï 漢'))
  assert tok.vocab_size == len(chars) + 2
  s = 'hello ünï 漢 world'
  assert tok.decode(tok.encode(s)) == s
  assert tok.encode('helo') == [2 + chars.index(c) for c in 'helo']
  assert tok.encode('hQ') == [2 + chars.index('h'), tok.unk_id]
  assert tok.decode(tok.encode('hQ')) == 'h\ufffd'


@pytest.mark.parametrize('kind', ['bpe', 'char', 'byte'])
def test_save_load_round_trip(tmp_path, spm_models, kind):
  tok = {'bpe': spm_models['bpe'], 'char': tok_lib.CharTokenizer.train(['abc def']),
         'byte': tok_lib.ByteTokenizer()}[kind]
  tok.save(str(tmp_path))
  loaded = tok_lib.load_tokenizer(str(tmp_path))
  s = 'abc def fed cab'
  assert loaded.encode(s) == tok.encode(s)
  assert loaded.info() == tok.info()


def test_load_detects_changed_model_file(tmp_path, spm_models):
  spm_models['bpe'].save(str(tmp_path))
  spm_models['unigram'].save(str(tmp_path / 'other'))
  os.replace(tmp_path / 'other' / tok_lib.SPM_MODEL_FILE, tmp_path / tok_lib.SPM_MODEL_FILE)
  with pytest.raises(DataError, match='does not match'):
    tok_lib.load_tokenizer(str(tmp_path))
  with pytest.raises(DataError, match='prepare'):
    tok_lib.load_tokenizer(str(tmp_path / 'missing'))


def test_bytes_per_token(spm_models):
  tok = spm_models['bpe']
  texts = _corpus_lines(n=20, seed=9)
  n_bytes = sum(len(t.encode('utf-8')) for t in texts)
  n_tokens = sum(len(tok.encode(t)) for t in texts)
  assert tok.bytes_per_token(texts) == pytest.approx(n_bytes / n_tokens)
  assert tok_lib.ByteTokenizer().bytes_per_token('héllo') == 1.0


def test_parse_spec_errors():
  assert tok_lib.parse_spec('tiktoken:gpt2') == ('tiktoken', 'gpt2')
  for bad in ('wordpiece', 'tiktoken', 'bpe:4096'):
    with pytest.raises(DataError):
      tok_lib.parse_spec(bad)


def _write_ranks(path):
  """A tiny byte-level BPE: 256 single bytes, then merges 'h'+'e', 'l'+'l', 'he'+'ll'."""
  ranks = [bytes([b]) for b in range(256)] + [b'he', b'll', b'hell']
  with open(path, 'w') as f:
    for rank, token in enumerate(ranks):
      f.write(f'{base64.b64encode(token).decode()} {rank}\n')


def test_tiktoken_local_file(tmp_path):
  path = tmp_path / 'tiny.tiktoken'
  _write_ranks(path)
  spec = f'tiktoken:{path}'
  if importlib.util.find_spec('tiktoken') is None:
    with pytest.raises(DataError, match='pip install tiktoken'):
      tok_lib.TiktokenTokenizer(str(path))
    return
  tok = tok_lib.TiktokenTokenizer(tok_lib.parse_spec(spec)[1])
  assert tok.vocab_size == 260 and tok.eos_id == 259
  # 'hello' -> 'hell' (rank 258) + 'o'. ' hello' is one pre-token under the GPT-2 regex, and
  # no merge involves the space: ' ', 'hell', 'o'.
  assert tok.encode('hello') == [258, ord('o')]
  assert tok.encode(' hello') == [ord(' '), 258, ord('o')]
  rng = np.random.default_rng(4)
  for _ in range(50):
    s = random_unicode(rng, 80)
    assert tok.decode(tok.encode(s)) == s
  tok.save(str(tmp_path / 'saved'))
  loaded = tok_lib.load_tokenizer(str(tmp_path / 'saved'))
  assert loaded.encode('hello hell') == tok.encode('hello hell')
  with pytest.raises(DataError, match='not found'):
    tok_lib.TiktokenTokenizer(str(tmp_path / 'missing.tiktoken'))
  with pytest.raises(DataError, match='no encoding'):
    tok_lib.TiktokenTokenizer('no_such_encoding_name')


def test_bpe_line_by_line_encoding_equals_whole_text(spm_models):
  tok = spm_models['bpe']
  rng = np.random.default_rng(6)
  lines = _corpus_lines(n=400, seed=11)
  for _ in range(5):
    parts = [lines[int(rng.integers(len(lines)))] if rng.random() < 0.8 else
             random_unicode(rng, 30) for _ in range(300)]
    text = rng.choice(['\n', '\n\n', '\r\n']).join(parts) + '\n'
    assert len(text) > 4096
    # Reference: sentencepiece's own encoder on the whole string.
    assert tok.encode(text) == tok._sp.encode(text)  # pylint: disable=protected-access
    assert tok.decode(tok.encode(text)) == text


def test_character_coverage_lets_a_small_vocab_spell_rare_characters_in_bytes():
  """A corpus with more distinct characters than the vocab has room for: at coverage 1 sentencepiece
  refuses (the error names data.character_coverage); at 0.9995 the rare characters are left to byte
  fallback and still round-trip exactly."""
  rare = ''.join(chr(0x4e00 + i) for i in range(400))   # 400 CJK characters, each once
  common = ['the quick brown fox jumps over the lazy dog and runs away again'] * 20000   # rare: 0.03%
  lines = common + [rare]
  with pytest.raises(DataError, match='character_coverage=0.9995'):
    tok_lib.train_sentencepiece(iter(lines), kind='bpe', vocab_size=300)
  tok = tok_lib.train_sentencepiece(iter(lines), kind='bpe', vocab_size=300, character_coverage=0.9995)
  ids = tok.encode(rare[:5])
  assert len(ids) == 5 * 3   # three UTF-8 bytes each: spelled by the byte pieces, no <unk>
  assert tok.decode(ids) == rare[:5]
  assert tok.decode(tok.encode(common[0])) == common[0]
