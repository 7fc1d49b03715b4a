"""A run's history: which config fields change a run's math, what changed after it started, and its own config.

The workdir is the source of truth of a run: its config.json is the config a resume continues with (`scaling
train --workdir W` with no --config), and every change of that config after the run started is one JSON line
of W/history.jsonl:

    {"step": 100, "how": "extend", "fields": {"train.steps": [100, 120]}, "time": "...", "commit": "...", ...}

`how` is extend (--extend STEPS: a new total, the schedule recomputed for it), force (--force-change: any
field that changes the math), mixture (a data mixture's weights or stages: allowed on resume without a flag,
every source keeping its position; MIXTURE below) or free (a field that does not: FIELD_KINDS). A field that
changes the math is refused on resume without one of those (scaling/train/run_history.py says so before any
compile or write).
Stdlib only at import time (the launcher's `sweep collect` reads the history; ml_collections is imported
where a config is built).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import pathlib
import subprocess
from typing import NamedTuple

from scaling.base.layout import HISTORY

MATH = 'math'   # changes what the run computes: refused on resume unless --extend (steps) or --force-change
FREE = 'free'   # logging, evaluation, checkpoints, samples, labels, and how the same math is laid out or computed
# a data mixture's weights (MIXTURE_FIELDS): MATH, but every source keeps its position (scaling/data/mixture.py), so
# a resume may change them without a flag: recorded in history.jsonl as how='mixture' from the resume step on (the
# loader's state in each checkpoint keeps the weights in force and their history too); changing the sources
# themselves (data.mixture) needs --force-change or a branch
MIXTURE = 'mixture'
MIXTURE_FIELDS = ('data.mixture_weights', 'data.mixture_stages')

# Every field of the default config (tests/test_run_history.py checks that each is here), by whether changing it
# in a run in progress changes the run's math. A key that names a section covers its open map (train.eval_sets);
# a field of no entry (a config file's own) counts as MATH.
FIELD_KINDS = {
    'name': FREE,
    # the model: its function and its parameters
    'model.vocab_size': MATH, 'model.pad_vocab': MATH, 'model.seq_len': MATH, 'model.num_layers': MATH,
    'model.d_model': MATH, 'model.num_heads': MATH, 'model.num_kv_heads': MATH, 'model.head_dim': MATH,
    'model.d_ff': MATH, 'model.norm': MATH, 'model.norm_eps': MATH, 'model.position': MATH,
    'model.position_table': MATH, 'model.rope_theta': MATH, 'model.mlp': MATH, 'model.tied_embeddings': MATH,
    'model.dtype': MATH, 'model.sliding_window': MATH, 'model.init_std': MATH, 'model.parametrization': MATH,
    'model.mup_base_width': MATH, 'model.mup_base_head_dim': MATH, 'model.mup_base_depth': MATH,
    # how the same function is computed (memory, kernels, compile time): the math stays, up to float rounding
    'model.scan_layers': FREE, 'model.remat': FREE, 'model.attention': FREE, 'model.attention_block_size': FREE,
    # the data the run sees
    'data.corpus': MATH, 'data.text_field': MATH, 'data.tokenizer': MATH, 'data.vocab_size': MATH,
    'data.val_fraction': MATH, 'data.character_coverage': MATH, 'data.train_tokens': MATH,
    'data.document_masking': MATH, 'data.mixture': MATH,
    'data.mixture_weights': MATH, 'data.mixture_stages': MATH, 'data.mixture_max_epochs': FREE,
    # where the prepared data lives (the resume checks it is the same split) and how it is read
    'data.data_dir': FREE, 'data.num_workers': FREE,
    # the optimizer, the schedule, the batch, the seeds, the length
    'train.seed': MATH, 'train.init_seed': MATH, 'train.batch_size': MATH, 'train.steps': MATH,
    'train.tokens': MATH, 'train.lr': MATH, 'train.min_lr_ratio': MATH, 'train.warmup_steps': MATH,
    'train.schedule': MATH, 'train.decay_fraction': MATH, 'train.decay_steps': MATH, 'train.decay_shape': MATH,
    'train.init_from': MATH, 'train.weight_decay': MATH, 'train.b1': MATH, 'train.b2': MATH, 'train.eps': MATH,
    'train.grad_clip': MATH, 'train.z_loss': MATH, 'train.optimizer': MATH, 'train.muon_ns_steps': MATH,
    'train.muon_momentum': MATH, 'train.muon_adam_lr': MATH, 'train.batch_schedule': MATH, 'train.batch_lr_rule': MATH,
    # the same gradient, accumulated in parts or its head computed in chunks
    'train.microbatches': FREE, 'train.loss_chunk': FREE,
    # evaluation, logging, checkpoints, the MFU denominator
    'train.predict_every': FREE, 'train.eval_every': FREE, 'train.eval_batches': FREE, 'train.final_eval_lengths': FREE,
    'train.eval_sets': FREE, 'train.log_every': FREE, 'train.ckpt_every': FREE, 'train.keep_checkpoints': FREE,
    'train.ckpt_steps': FREE, 'train.peak_flops': FREE,
    'logging.wandb_project': FREE, 'logging.wandb_entity': FREE, 'logging.wandb_group': FREE,
    'logging.wandb_name': FREE, 'logging.wandb_mode': FREE,
    # the device mesh: checkpoints restore onto any mesh (elastic restarts)
    'mesh.data': FREE, 'mesh.fsdp': FREE, 'mesh.tensor': FREE,
    # the end-of-run samples
    'sample.prompts': FREE, 'sample.max_new_tokens': FREE, 'sample.temperature': FREE, 'sample.top_k': FREE,
    'sample.top_p': FREE, 'sample.seed': FREE,
}
MAP_FIELDS = ('train.eval_sets', 'data.mixture')   # tag -> spec maps: each tag is a field of its own (train.eval_sets.prose)
EXTEND_FIELDS = ('train.steps', 'train.tokens')   # what --extend changes
FREE_WORDS = ('logging, evaluation (eval_every, eval_batches, eval_sets, final_eval_lengths), checkpoints '
              '(ckpt_every, keep_checkpoints, ckpt_steps), sample.*, peak_flops, name, the mesh and how the model '
              'is computed (remat, scan_layers, attention, loss_chunk, microbatches)')
ABSENT = '(absent)'   # a field one side does not have
CONFIG_JSON = 'config.json'
CKPT_DIR = 'checkpoints'   # scaling/train/checkpoint.py CKPT_DIR (not imported: this module is jax-free)


class Change(NamedTuple):
  key: str
  old: object
  new: object
  kind: str


def kind_of(key: str) -> str:
  """MATH or FREE for a dotted field (the entry of the field, or of the map it is a key of); MATH if unknown."""
  while key:
    if key in FIELD_KINDS:
      return FIELD_KINDS[key]
    key = key.rpartition('.')[0]
  return MATH


def flatten(d: dict, prefix: str = '') -> dict:
  """A config dict (to_dict) as {dotted key: value}; sections and maps are walked, lists are values."""
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def diff(old: dict, new: dict) -> list[Change]:
  """The fields whose value differs between two config dicts (config.json and this config), sorted.

  A field the old config lacks counts at its HASH_NEUTRAL value (how runs behaved before it existed), else as
  ABSENT; a field the new one lacks is left out (this code has no such field to change). model.vocab_size 0
  (follow the tokenizer, resolved once the data is prepared) is no change.
  """
  from scaling.config.load import HASH_NEUTRAL  # ml_collections, no jax: imported only here
  fo, fn = flatten(old), flatten(new)
  out = []
  for key in sorted(fn):
    a, b = fo.get(key, HASH_NEUTRAL.get(key, ABSENT)), fn[key]
    if key == 'model.vocab_size' and b == 0:
      continue
    if a != b:
      out.append(Change(key, a, b, kind_of(key)))
  for key in sorted(set(fo) - set(fn)):
    if any(key.startswith(m + '.') for m in MAP_FIELDS):   # a tag taken out of a map
      out.append(Change(key, fo[key], ABSENT, kind_of(key)))
  return out


def describe(changes) -> str:
  """'train.steps 100 -> 120, train.lr 0.003 -> 0.01' (values as JSON)."""
  def v(x):
    return x if x == ABSENT else json.dumps(x)
  return ', '.join(f'{c.key} {v(c.old)} -> {v(c.new)}' for c in changes)


# ----------------------------------------------------------------------------- the workdir
def checkpoint_steps(workdir) -> list[int]:
  """The step directories in W/checkpoints (names only: a cut-off save's tmp dir is not one)."""
  d = pathlib.Path(workdir) / CKPT_DIR
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir()) if d.is_dir() else []


def read_config_json(workdir) -> dict | None:
  try:
    d = json.loads((pathlib.Path(workdir) / CONFIG_JSON).read_text())
  except (OSError, ValueError):
    return None
  return d if isinstance(d, dict) else None


def existing_run(workdir) -> bool:
  """W holds a run that a resume continues: its config.json and a checkpoint."""
  return (pathlib.Path(workdir) / CONFIG_JSON).is_file() and bool(checkpoint_steps(workdir))


def load_workdir_config(workdir, overrides: dict | None = None):
  """The config of the run in `workdir` (its config.json over the default config's fields and types), with the
  --config.* overrides applied, filled and validated as load_config does. ConfigError names a bad field."""
  from scaling.config import default as default_config
  from scaling.config.load import ConfigError, apply_override, fill_vocab, validate_config
  path = pathlib.Path(workdir) / CONFIG_JSON
  saved = read_config_json(workdir)
  if saved is None:
    raise ConfigError(f'{path} is not a readable config (JSON object); give the run\'s config with --config')
  cfg = default_config.get_config()
  _overlay(cfg, saved, path)
  for k, v in (overrides or {}).items():
    apply_override(cfg, k, v)
  fill_vocab(cfg)
  validate_config(cfg)
  return cfg


def _overlay(node, saved: dict, path, prefix: str = '') -> None:
  """Sets the fields of ConfigDict `node` from `saved` (lists back to tuples, ints to floats where the default's
  type says so); a section of the saved config that `node` lacks is added as it is."""
  import ml_collections

  from scaling.config.load import ConfigError
  for k, v in saved.items():
    key = f'{prefix}{k}'
    old = node[k] if k in node else None
    with node.unlocked():
      if isinstance(old, ml_collections.ConfigDict) and isinstance(v, dict) and key not in MAP_FIELDS:
        _overlay(old, v, path, key + '.')
        continue
      if isinstance(old, tuple) and isinstance(v, list):
        v = tuple(v)
      elif isinstance(old, float) and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
      elif isinstance(v, dict):
        v = ml_collections.ConfigDict(v)
      try:
        node[k] = v
      except TypeError as e:
        raise ConfigError(f'{path}: field {key} = {v!r} does not fit this code\'s config ({e}); give the run\'s '
                          f'config with --config') from None


# ----------------------------------------------------------------------------- history.jsonl
def history_path(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / HISTORY


def read_history(workdir) -> list[dict]:
  """The entries of W/history.jsonl since the run last started from scratch (a 'restart' entry); [] if none.
  A line that does not parse is skipped (a cut-off append)."""
  try:
    lines = history_path(workdir).read_text().splitlines()
  except OSError:
    return []
  out = []
  for line in lines:
    try:
      e = json.loads(line)
    except ValueError:
      continue
    if isinstance(e, dict):
      out = [] if e.get('how') == 'restart' else out + [e]
  return out


def append_history(workdir, entry: dict) -> None:
  """One line appended to W/history.jsonl and synced (main process)."""
  with open(history_path(workdir), 'a') as f:
    f.write(json.dumps(entry, sort_keys=True) + '\n')
    f.flush()
    os.fsync(f.fileno())


def entry(step: int, how: str, changes, **extra) -> dict:
  """A history line: the step the change applies from, how, each field's [old, new], when, and the code."""
  rev = code_revision()
  return dict(step=int(step), how=how, fields={c.key: [c.old, c.new] for c in changes},
              time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              commit=rev['commit'], dirty=rev['dirty'], **extra)


def summarize(entries: list[dict]) -> list[dict]:
  """The history as a results row carries it: [{step, how, fields: {key: [old, new]}}] (no times or commits)."""
  return [dict(step=e.get('step'), how=e.get('how'), fields=e.get('fields') or {}) for e in entries]


@functools.lru_cache(maxsize=1)
def code_revision() -> dict:
  """{commit, dirty} of the git checkout whose top level holds this `scaling` package; None where there is none."""
  root = str(pathlib.Path(__file__).resolve().parents[2])

  def git(*args):
    try:
      r = subprocess.run(['git', '-C', root, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
      return None
    return r.stdout.strip() if r.returncode == 0 else None
  top = git('rev-parse', '--show-toplevel')
  if not top or os.path.realpath(top) != os.path.realpath(root):
    return {'commit': None, 'dirty': None}
  commit = git('rev-parse', 'HEAD')
  status = git('status', '--porcelain', '--', 'scaling') if commit else None
  return {'commit': commit, 'dirty': None if status is None else bool(status)}


# ----------------------------------------------------------------------------- the refusal
def refusal(workdir, step: int, math: list[Change], schedule: str, new_steps: int) -> str:
  """The error of a resume whose config changes the math: each field named, and the three ways to change a run."""
  w = pathlib.Path(workdir)
  only_length = all(c.key in EXTEND_FIELDS for c in math)
  extend = (f'--extend {new_steps}' if only_length else '--extend STEPS (for train.steps/tokens only)')
  ways = [f'{extend} continues it to that many steps in all, with the schedule defined for the new length '
          f'(train.schedule={schedule}: cosine and wsd are recomputed for the new total, so the lr changes from step '
          f'{step + 1} on; constant keeps it), recorded in {w / HISTORY}',
          f"--config.train.init_from='{w}:{step}' with a new --workdir branches a new run from this checkpoint under "
          f'the new config',
          f'--force-change applies the changes to this run from step {step} on and records them in {w / HISTORY}']
  return (f'{w} holds a run (newest checkpoint: step {step}; its config: {w / CONFIG_JSON}), and this config would '
          f'change its math: {describe(math)}. Nothing was changed. To resume it unchanged, run `scaling train '
          f'--workdir {w}` (no --config: its own config.json) or the command that started it. To change the run, say '
          f'how: ' + '; '.join(ways) + f'. Free to change on resume (recorded too): {FREE_WORDS}.')
