"""The data pipeline: corpus -> tokenizer -> token shards -> grain loader.

  from scaling.data import prepare, load_tokenizer, make_train_loader, make_eval_loader
  summary = prepare(config.data)                   # idempotent; returns the summary dict
  tok = load_tokenizer(summary['data_dir'])
  train = make_train_loader(summary['data_dir'], seq_len=256, batch_size=16, seed=0)
  batch = next(train)                              # {'inputs', 'targets'} int32 [B, T]

See corpus.py (sources, Shakespeare, split), prepare.py (shards), shards.py (file layout and
checks), loader.py (batches), and scaling/tokenizer.py (tokenizers). Bad input raises
DataError (a ValueError) naming the file and the fix. Document names, the split and the
order do not depend on where the corpus lives; `check_split(saved_state, data_dir)` refuses
to resume a loader state saved on another split.
"""

from scaling.data.loader import (
    EvalLoader,
    TrainLoader,
    bits_per_byte,
    check_split,
    make_eval_loader,
    make_train_loader,
    split_digest_of,
)
from scaling.data.prepare import Interrupted, default_data_dir, main_prepare, prepare, resolve_data_dir
from scaling.data.shards import open_split
from scaling.tokenizer import DataError, Tokenizer, load_tokenizer

__all__ = [
    'DataError', 'EvalLoader', 'Interrupted', 'Tokenizer', 'TrainLoader', 'bits_per_byte',
    'check_split', 'default_data_dir', 'load_tokenizer', 'main_prepare', 'make_eval_loader',
    'make_train_loader', 'open_split', 'prepare', 'resolve_data_dir', 'split_digest_of',
]
