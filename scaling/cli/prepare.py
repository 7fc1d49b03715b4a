"""`scaling prepare`: corpus -> tokenizer -> token shards (idempotent)."""

from __future__ import annotations

HELP = 'tokenize a corpus into shards (idempotent)'


def add_args(p) -> None:
  p.add_argument('--force', action='store_true', help='rebuild even when up to date')


def run(args, overrides) -> int:
  from scaling.config.load import load_config
  from scaling.data.prepare import main_prepare
  cfg = load_config(args.config, overrides)
  if len(cfg.data.get('mixture', None) or {}):   # a data mixture: its tokenizer and every source
    from scaling.data.mixture import main_prepare_mixture
    main_prepare_mixture(cfg.data, force=args.force)
    return 0
  main_prepare(cfg, force=args.force)
  return 0
