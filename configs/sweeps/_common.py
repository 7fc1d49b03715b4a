"""Helpers shared by the sweep files (not a sweep itself)."""



def load_config_file(name: str, arg=None):
  """get_config(arg) of a packaged config file by name: 'default' or 'ladder' (scaling/config/load.py)."""
  from scaling.config import load as config_lib
  path, _ = config_lib.split_spec(f'{name}.py')
  return config_lib.load_module(path).get_config(arg)


def resolved(base, overrides: dict):
  """The base config with the overrides applied (to size token budgets from FLOPs)."""
  from scaling.config.load import apply_override
  cfg = base() if callable(base) else base
  cfg = cfg.copy_and_resolve_references()
  for k, v in overrides.items():
    if k != 'rung':
      apply_override(cfg, k, v)
  return cfg


# Settings for short CPU runs: log often, evaluate on a fixed slice of the validation plays at the end,
# checkpoint rarely, and a fixed CPU peak (MFU only; saves each run measuring the machine).
CPU_RUN = {
    'train.log_every': 20,
    'train.eval_every': 100000,
    'train.eval_batches': 24,
    'train.ckpt_every': 500,
    'train.peak_flops': 2e11,
    'train.warmup_steps': 30,
}
