"""Which runs can train together as members of one packed run (scaling/train/packed.py), and their scalars.

Members of a packed run share every shape, the batch, the sequence length, the step count, the schedule's
shape and the data order; they differ only in the PACKABLE fields, scalars that the training step reads as
numbers (a learning rate, Adam's betas, the weight decay, the init seed) or that are labels (the name). Two
configs whose every other field is equal have the same `pack_key`; `check_members` says which field
differs otherwise. jax-free: the launcher groups a sweep's runs with it.

`train.seed` is not packable: it sets the data order as well as the init. Sweep `train.init_seed` (the init
alone) to pack seeds that share their batches.

Cooldown branches (`train.init_from='WORKDIR:STEP'`, scaling/train/branch.py) pack by their fork STEP: each
member starts from its own parent's checkpoint (WORKDIR is per member), but every member forks at the same
step. `shared_fields` holds the step as 'train.init_from' (None: no branch; -1: the parent's latest step,
whose step is known only once its checkpoints are read: scaling/train/packed_loop.py checks it then).
"""

from __future__ import annotations

import json

from scaling.base.files import sha256_bytes

# field -> what it is; every other field must be equal across the members of one packed run
PACKABLE = {
    'name': 'the run label',
    'train.lr': 'peak learning rate',
    'train.min_lr_ratio': 'final lr / peak lr',
    'train.b1': "Adam's beta1",
    'train.b2': "Adam's beta2",
    'train.eps': "Adam's epsilon",
    'train.weight_decay': 'decoupled weight decay',
    'train.init_seed': 'the seed of the parameter init (-1: train.seed)',
}
# the packed step reads these as numbers (per member, traced); the rest of PACKABLE are labels
STEP_SCALARS = ('lr', 'min_lr_ratio', 'b1', 'b2', 'eps', 'weight_decay')


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out |= _flat(v, key + '.')
    else:
      out[key] = v
  return out


def _as_dict(cfg) -> dict:
  return cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)


INIT_FROM = 'train.init_from'


def fork_step(spec) -> int | None:
  """The fork step of a train.init_from (None: not a branch; -1: the parent's latest checkpoint)."""
  if not spec:
    return None
  from scaling.config.load import parse_init_from
  step = parse_init_from(spec)[1]
  return -1 if step is None else step


def shared_fields(cfg) -> dict:
  """Every field of `cfg` but the packable ones (flattened, 'section.name' -> value); train.init_from as its fork
  step (the parent's workdir is each member's own)."""
  out = {k: v for k, v in _flat(_as_dict(cfg)).items() if k not in PACKABLE}
  if INIT_FROM in out:
    out[INIT_FROM] = fork_step(out[INIT_FROM])
  return out


def pack_key(cfg, n: int = 12) -> str:
  """Equal for two configs exactly when they can be members of one packed run."""
  blob = json.dumps(shared_fields(cfg), sort_keys=True, separators=(',', ':'), default=str)
  return sha256_bytes(blob.encode())[:n]


def check_members(cfgs: list) -> None:
  """ValueError naming the first field (other than PACKABLE) on which two members differ; the fork step of
  cooldown branches first."""
  if not cfgs:
    raise ValueError('a packed run needs at least one member')
  if any(len(c.data.get('mixture', None) or {}) for c in cfgs):   # the packed step has no per-source loss
    raise ValueError('a data mixture (data.mixture) is not trained packed: its loader and per-source metrics are a '
                     'single run\'s. Train the members as separate runs (a sweep does: scaling/launch/packing.py)')
  for i, c in enumerate(cfgs):   # one batch for every member and step (scaling/config/batch.py)
    if (c.train.get('batch_schedule', '') or '').strip():
      raise ValueError(f'member {i} has train.batch_schedule={c.train.batch_schedule!r}: a packed run takes one batch '
                       f'throughout. Train it as a separate run (a sweep does: scaling/launch/packing.py)')
  first = shared_fields(cfgs[0])
  for i, cfg in enumerate(cfgs[1:], 1):
    other = shared_fields(cfg)
    if first.get(INIT_FROM) != other.get(INIT_FROM):   # first: branches of other budgets differ in steps too
      raise ValueError(_fork_mismatch(cfgs[0], cfg, i))
    for k in sorted(set(first) | set(other)):
      if first.get(k) != other.get(k):
        raise ValueError(
            f'members 0 and {i} differ in {k} ({first.get(k)!r} vs {other.get(k)!r}), which is not packable: '
            f'members share everything but {", ".join(PACKABLE)}. Train them as separate runs')


def _fork_mismatch(a, b, i: int) -> str:
  def said(cfg):
    spec = cfg.train.get('init_from', '')
    step = fork_step(spec)
    return ('no branch (train.init_from unset)' if step is None else
            f'{spec!r}, the parent\'s latest step' if step < 0 else f'{spec!r}, step {step}')
  return (f'members 0 and {i} fork at different steps: member 0 from {said(a)}, member {i} from {said(b)}. The '
          f'cooldown branches of one packed run each start from their own parent, all at one fork step (the same '
          f'train.init_from STEP); train the others as separate runs or in a pack of their own fork step')


def init_seed(train_cfg) -> int:
  """The seed of the parameter init: train.init_seed when >= 0, else train.seed."""
  s = int(train_cfg.get('init_seed', -1))
  return s if s >= 0 else int(train_cfg.seed)


def member_scalars(cfgs: list) -> dict[str, list[float]]:
  """STEP_SCALARS -> one float per member."""
  return {k: [float(c.train[k]) for c in cfgs] for k in STEP_SCALARS}
