"""scaling/model/ladder.py TARGETS / TARGET_SLICES / PLANNED: every named rung has a recommended target that is a
known slice of the hardware table, and its planned knobs change memory and speed only, never the math. jax-free."""

import math

from scaling.base.hardware import SHAPES_3D, TPUS
from scaling.config import history
from scaling.config import load as config_lib
from scaling.train import aot

LADDER = config_lib.load_module(config_lib.REPO_ROOT / 'scaling' / 'model' / 'ladder.py')


def test_every_named_rung_has_a_known_target():
  assert set(LADDER.TARGETS) == set(LADDER.BIG_RUNGS)
  known = set(aot.known_targets())
  for rung, name in LADDER.TARGETS.items():
    assert name in known and name in LADDER.TARGET_SLICES, (rung, name)
    t = aot.parse_target(name)
    # v5p-N counts TensorCores, two per chip (Cloud TPU's naming), laid out as the hardware table's torus
    assert t.chip is TPUS['v5p'] and t.chips == int(name.split('-')[1]) // 2 and t.shape == SHAPES_3D[t.chips]


def test_target_slices_smallest_first_and_bigger_rungs_never_get_smaller_slices():
  chips = [aot.parse_target(n).chips for n in LADDER.TARGET_SLICES]
  assert chips == sorted(chips) and len(set(chips)) == len(chips)
  order = list(LADDER.BIG_RUNGS)   # 125m ... 7b, growing
  sizes = [aot.parse_target(LADDER.TARGETS[r]).chips for r in order]
  assert sizes == sorted(sizes)


def test_planned_knobs_change_no_math_and_are_the_rungs_values():
  for rung, knobs in LADDER.PLANNED.items():
    assert rung in LADDER.BIG_RUNGS
    cfg = config_lib.load_config(f'scaling/model/ladder.py:{rung}')
    for field, value in knobs.items():
      assert history.kind_of(field) == history.FREE, field
      section, key = field.split('.')
      assert cfg[section][key] == value


def test_each_rung_is_a_valid_setting_on_its_target():
  """The mesh fills the target's chips and the batch splits evenly over data parallelism x microbatches, the heads
  over the tensor axis (what `scaling compile` would otherwise refuse before compiling)."""
  for rung, name in LADDER.TARGETS.items():
    cfg = config_lib.load_config(f'scaling/model/ladder.py:{rung}')
    chips = aot.parse_target(name).chips
    sizes = [cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor]
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      sizes[sizes.index(-1)] = chips // fixed
    data, fsdp, tensor = sizes
    assert data * fsdp * tensor == chips, rung
    assert cfg.train.batch_size % (data * fsdp * cfg.train.microbatches) == 0, rung
    assert cfg.model.num_heads % tensor == 0 and cfg.model.num_kv_heads % tensor == 0, rung
