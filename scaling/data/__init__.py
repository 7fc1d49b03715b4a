"""The data pipeline: corpus -> tokenizer -> token shards -> grain loader.

  from scaling.data.prepare import prepare
  from scaling.data.tokenizer import load_tokenizer
  from scaling.data.loader import make_train_loader
  summary = prepare(config.data)                   # idempotent; returns the summary dict
  tok = load_tokenizer(summary['data_dir'])
  train = make_train_loader(summary['data_dir'], seq_len=256, batch_size=16, seed=0)
  batch = next(train)                              # {'inputs', 'targets'} int32 [B, T]

See corpus.py (sources, Shakespeare, split), prepare.py (shards), shards.py (file layout and
checks), loader.py (batches), and tokenizer.py (tokenizers). Bad input raises
DataError (a ValueError) naming the file and the fix. Document names, the split and the
order do not depend on where the corpus lives; `check_split(saved_state, data_dir)` refuses
to resume a loader state saved on another split.
"""
