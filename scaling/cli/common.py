"""What the `scaling` commands share: the --config flag and the help text about overrides (stdlib only)."""

from __future__ import annotations

OVERRIDES = """\
config: --config path/to/config.py[:arg] picks a config file (default: scaling/config/default.py;
scaling/model/ladder.py:RUNG for a rung of the ladder); any field is then overridden with
--config.section.field=value, e.g. --config.train.steps=200 --config.model.d_model=128.
scaling/config/default.py documents every field; bad values fail before any work with the field named."""



CONFIG_HELP = 'config file, path.py[:arg] (default: scaling/config/default.py)'
