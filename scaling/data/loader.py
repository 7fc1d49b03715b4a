"""Batches from prepared shards: a shuffled, sharded, resumable train loader (grain) and a
one-pass validation loader; plus bits per byte.

Train: the train token stream is cut into non-overlapping windows of `seq_len + 1` tokens
(window w = tokens[w*T : w*T + T + 1], so consecutive windows share one token and every
token is a target once per epoch). A grain `MapDataset` shuffles the window indices with
`seed` (a new permutation each epoch, grain's per-epoch reseeding) and repeats forever.
Process p of P takes positions p, p+P, p+2P, ... of that global order, so at step s the
P processes together hold positions [s*B*P, (s+1)*B*P): disjoint, covering, and the same
windows a single process with batch B*P would see. The iterator state is grain's
(`{'next_index': k}`) plus the settings and the data directory's `split_digest`
(shards.SPLIT_JSON), JSON-serialisable; restoring it gives the same next batches, and
restoring it onto data with another split is refused (`check_split`), naming both digests.

Eval: the validation stream cut the same way, the last window padded; window i goes to
process i % P; every process yields the same number of batches (padded rows have mask 0),
so collective eval steps line up across hosts. Over all processes and batches, mask sums to
exactly num_val_tokens - 1 targets: the split is covered once.

Batches are dicts of numpy arrays: 'inputs', 'targets' int32 [B, T] (targets = inputs
shifted by one), 'mask' float32 [B, T] (eval always; train is all ones and omitted), and with
document_masking 'segment_ids' int32 [B, T], 1-based per document within the row.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from scaling.data import shards
from scaling.data.tokenizer import DataError


def bits_per_byte(mean_loss_nats_per_token: float, bytes_per_token: float) -> float:
  """Converts a mean next-token loss (nats/token) to bits per UTF-8 byte of text."""
  if bytes_per_token <= 0:
    raise ValueError(f'bytes_per_token must be > 0, got {bytes_per_token}')
  return float(mean_loss_nats_per_token) / math.log(2.0) / float(bytes_per_token)


def split_digest_of(data_dir: str) -> str | None:
  """The split digest recorded in a prepared directory (None: prepared before it was recorded)."""
  split = shards.read_split(data_dir)
  return None if split is None else split['split_digest']


def check_split(saved_state: dict[str, Any] | None, data_dir: str, workdir: Any = None) -> None:
  """Refuses to resume a data state saved on another train/validation split than data_dir's.

  `saved_state` is a TrainLoader state (the checkpoint's 'data' item); a state without a
  split digest (saved before digests were recorded) is accepted. Raises DataError naming
  both digests.
  """
  saved = (saved_state or {}).get('split_digest')
  if not saved:
    return
  now = split_digest_of(data_dir)
  if now == saved:
    return
  split = shards.read_split(data_dir) or {}
  names = [d['name'] for d in split.get('val_documents', [])]
  shown = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
  where = f'the checkpoint in {workdir}' if workdir is not None else 'the checkpoint'
  raise DataError(
      f'{where} was trained on a split with digest {saved[:16]}, but {data_dir} holds split '
      f'{(now or "none (prepared before splits were recorded)")[:16]} (validation: {shown or "-"}): '
      'resuming would evaluate on other documents and may train on held-out ones. Prepare the '
      'same corpus (the same files, wherever they live) and settings, or use another --workdir.')


def _process_defaults(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise DataError(f'process_index={process_index} must be in [0, process_count={process_count})')
  return int(process_index), int(process_count)


def _check_shape(seq_len: int, batch_size: int) -> None:
  for name, v in (('seq_len', seq_len), ('batch_size', batch_size)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise DataError(f'{name}={v!r} must be a positive integer')


def segment_ids_for(doc_offsets: np.ndarray, start: int, length: int) -> np.ndarray:
  """1-based document ids of tokens[start:start+length], renumbered within the window."""
  pos = np.arange(start, start + length)
  doc = np.searchsorted(doc_offsets, pos, side='right') - 1
  return (doc - doc[0] + 1).astype(np.int32)


class _Window:
  """Element function: window index -> T+1 tokens (and T segment ids with masking)."""

  def __init__(self, tokens: np.ndarray, doc_offsets: np.ndarray, seq_len: int, masking: bool):
    self.tokens, self.doc_offsets = tokens, doc_offsets
    self.seq_len, self.masking = seq_len, masking

  def __call__(self, w: int) -> dict[str, np.ndarray]:
    start = int(w) * self.seq_len
    out = {'window': np.asarray(self.tokens[start:start + self.seq_len + 1])}
    if self.masking:
      out['segment_ids'] = segment_ids_for(self.doc_offsets, start, self.seq_len)
    return out


def _to_batch(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  w = x['window'].astype(np.int32)
  out = {'inputs': w[:, :-1], 'targets': w[:, 1:]}
  if 'segment_ids' in x:
    out['segment_ids'] = x['segment_ids']
  return out


class TrainLoader:
  """Infinite iterator of train batches with get_state()/set_state(); see module docstring."""

  def __init__(self, data_dir: str, *, seq_len: int, batch_size: int, seed: int,
               process_index: int | None = None, process_count: int | None = None,
               document_masking: bool = False, num_threads: int = 1,
               prefetch: int = 8, verify: bool = True, start: int = 0):
    import grain  # pylint: disable=g-import-not-at-top
    _check_shape(seq_len, batch_size)
    self.start = int(start)   # the global window position of the first batch (a batch schedule's segment: at_position)
    if self.start < 0:
      raise DataError(f'start={start} must be >= 0')
    self._read_args = dict(num_threads=num_threads, prefetch=prefetch)
    self.process_index, self.process_count = _process_defaults(process_index, process_count)
    self.split = shards.open_split(data_dir, 'train', verify=verify)
    self.data_dir = data_dir
    self.split_digest = split_digest_of(data_dir)
    self.seq_len, self.batch_size, self.seed = int(seq_len), int(batch_size), int(seed)
    self.document_masking = bool(document_masking)
    n = self.split.num_tokens
    self.num_windows = (n - 1) // self.seq_len if n > 1 else 0
    if self.num_windows < 1:
      raise DataError(f'{self.split.path}: the train split has {n} tokens, fewer than '
                      f'seq_len + 1 = {self.seq_len + 1}; lower seq_len or add text')
    if not 0 <= self.seed < 2**32:
      raise DataError(f'seed={seed} must be in [0, 2**32)')
    ds = grain.MapDataset.range(self.num_windows).shuffle(seed=self.seed).repeat()
    ds = ds[self.start + self.process_index::self.process_count]
    ds = ds.map(_Window(self.split.tokens, self.split.doc_offsets, self.seq_len,
                        self.document_masking))
    ds = ds.batch(self.batch_size, drop_remainder=True).map(_to_batch)
    self._dataset = ds
    self._read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    self._it = iter(ds.to_iter_dataset(self._read_options))

  @property
  def windows_per_epoch(self) -> int:
    return self.num_windows

  @property
  def steps_per_epoch(self) -> float:
    return self.num_windows / (self.batch_size * self.process_count)

  def __iter__(self) -> 'TrainLoader':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  def batch_at(self, step: int) -> dict[str, np.ndarray]:
    """The batch this process gets at `step` (random access; the iterator is untouched)."""
    return self._dataset[step]

  def _settings(self) -> dict[str, Any]:
    return dict(seq_len=self.seq_len, batch_size=self.batch_size, seed=self.seed,
                process_index=self.process_index, process_count=self.process_count,
                num_tokens=self.split.num_tokens, document_masking=self.document_masking)

  def get_state(self) -> dict[str, Any]:
    state = self._it.get_state()
    return {'grain': {k: int(v) if isinstance(v, (int, np.integer)) else v
                      for k, v in state.items()}, **self._settings(),
            'split_digest': self.split_digest, 'start': self.start, 'position': self.position}

  @property
  def position(self) -> int:
    """Windows of the global order consumed so far by all processes: start + batches x global batch."""
    return self.start + int(self._it.get_state()['next_index']) * self.batch_size * self.process_count

  def at_position(self, position: int, batch_size: int | None = None) -> 'TrainLoader':
    """A loader of the same data and order whose first batch starts at global window `position`, with per-process
    `batch_size` (default this one's): a batch schedule's change (scaling/train/batch_schedule.py)."""
    return TrainLoader(self.data_dir, seq_len=self.seq_len, batch_size=batch_size or self.batch_size, seed=self.seed,
                       process_index=self.process_index, process_count=self.process_count,
                       document_masking=self.document_masking, verify=False, start=position, **self._read_args)

  def set_state(self, state: dict[str, Any]) -> None:
    """Restores get_state(); also with another process count (elastic restart) if the global batch is the same.

    The grain state counts batches, and batch b of every process holds global positions
    [b*B*P, (b+1)*B*P): the same windows for any split of one global batch B*P. So the
    state of any process (a checkpoint holds process 0's) resumes every process. A state saved
    on another split is refused (check_split).
    """
    check_split(state, self.data_dir)
    mine = self._settings()
    elastic = ('process_index', 'process_count', 'batch_size')
    diff = {k: (state.get(k), v) for k, v in mine.items() if k not in elastic and state.get(k) != v}
    saved_global = state.get('batch_size', 0) * state.get('process_count', 1)
    if saved_global != self.batch_size * self.process_count:
      diff['global batch_size (batch_size x process_count)'] = (saved_global, self.batch_size * self.process_count)
    if int(state.get('start', 0)) != self.start:   # a batch schedule's segment: state_position / at_position
      diff['start'] = (int(state.get('start', 0)), self.start)
    if diff:
      raise DataError(f'cannot restore the train loader: the saved state was made with other '
                      f'settings (saved, now): {diff}')
    self._it.set_state(dict(state['grain']))


class EvalLoader:
  """Iterable over the validation split once (fresh pass on every `iter`)."""

  def __init__(self, data_dir: str, *, seq_len: int, batch_size: int,
               process_index: int | None = None, process_count: int | None = None,
               max_batches: int = 0, document_masking: bool = False, split: str = 'val',
               verify: bool = True):
    _check_shape(seq_len, batch_size)
    self.process_index, self.process_count = _process_defaults(process_index, process_count)
    self.split = shards.open_split(data_dir, split, verify=verify)
    self.seq_len, self.batch_size = int(seq_len), int(batch_size)
    self.document_masking = bool(document_masking)
    n = self.split.num_tokens
    if n < 2:
      raise DataError(f'{self.split.path}: the {split} split has {n} tokens; nothing to evaluate')
    self.num_windows = -(-(n - 1) // self.seq_len)
    per_step = self.batch_size * self.process_count
    self.num_batches = -(-self.num_windows // per_step)
    if max_batches and max_batches > 0:
      self.num_batches = min(self.num_batches, int(max_batches))

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self):
    tokens, T = self.split.tokens, self.seq_len
    n = tokens.shape[0]
    P, B = self.process_count, self.batch_size
    for b in range(self.num_batches):
      inputs = np.zeros((B, T), np.int32)
      targets = np.zeros((B, T), np.int32)
      mask = np.zeros((B, T), np.float32)
      seg = np.zeros((B, T), np.int32) if self.document_masking else None
      for r in range(B):
        w = (b * B + r) * P + self.process_index
        if w >= self.num_windows:
          break
        start = w * T
        window = np.asarray(tokens[start:min(start + T + 1, n)], dtype=np.int32)
        k = window.size - 1  # targets in this window (T, or fewer in the last one)
        inputs[r, :k], targets[r, :k], mask[r, :k] = window[:-1], window[1:], 1.0
        if seg is not None:
          seg[r, :k] = segment_ids_for(self.split.doc_offsets, start, k)
      batch = {'inputs': inputs, 'targets': targets, 'mask': mask}
      if seg is not None:
        batch['segment_ids'] = seg
      yield batch


def state_position(state: dict[str, Any]) -> int:
  """The global window position of a TrainLoader state (also of one saved before states recorded it)."""
  return (int(state.get('start', 0)) + int(state['grain']['next_index']) * int(state['batch_size'])
          * int(state.get('process_count', 1)))


def make_train_loader(data_dir: str, *, seq_len: int, batch_size: int, seed: int,
                      process_index: int | None = None, process_count: int | None = None,
                      document_masking: bool = False, num_threads: int = 1) -> TrainLoader:
  """Shuffled, sharded, infinite train batches; `batch_size` is per process."""
  return TrainLoader(data_dir, seq_len=seq_len, batch_size=batch_size, seed=seed,
                     process_index=process_index, process_count=process_count,
                     document_masking=document_masking, num_threads=num_threads)


def make_eval_loader(data_dir: str, *, seq_len: int, batch_size: int,
                     process_index: int | None = None, process_count: int | None = None,
                     max_batches: int = 0, document_masking: bool = False) -> EvalLoader:
  """One pass over the validation split (max_batches > 0 truncates); includes 'mask'."""
  return EvalLoader(data_dir, seq_len=seq_len, batch_size=batch_size,
                    process_index=process_index, process_count=process_count,
                    max_batches=max_batches, document_masking=document_masking)
