"""The HLO text of a step, read: its computations and instructions, the FLOPs of its dots, its collectives.

scaling/train/aot.py counts the FLOPs of the lowered train step with `hlo_dot_flops` (XLA's own
cost_analysis() counts a while loop's body once), and tests/test_aot.py checks which collectives of a
multi-slice step cross slices with `collectives`. Text only: no jax.
"""

from __future__ import annotations

import math
import re


class HloError(ValueError):
  """HLO text this parser cannot read."""


_COMP_RE = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_INSTR_RE = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\((.*)$')
_ARRAY_RE = re.compile(r'([a-z]\w*)\[([\d,]*)\]')


def _dims(shape: str) -> list[int]:
  m = _ARRAY_RE.search(shape)
  return [int(d) for d in m.group(2).split(',') if d] if m else []


def parse_hlo(text: str) -> dict:
  """{computation: [(name, shape, op, rest of line)]} of an HLO module's text."""
  comps, cur = {}, None
  for line in text.splitlines():
    if cur is None or not line.startswith(' '):
      m = _COMP_RE.match(line)
      if m:
        cur = comps.setdefault(m.group(1), [])
      continue
    m = _INSTR_RE.match(line)
    if m:
      cur.append(m.groups())
  return comps


def _trip_count(cond: list) -> int | None:
  """The trip count of a scan's while loop: its condition is `i < constant(N)` with i from 0."""
  consts = {}
  for name, _, op, rest in cond:
    if op == 'constant':
      consts[name] = rest.split(')')[0]
  for name, _, op, rest in cond:
    if op == 'compare' and 'direction=LT' in rest:
      args = [a.strip().lstrip('%') for a in rest.split(')')[0].split(',')]
      if len(args) == 2 and args[1] in consts:
        return int(consts[args[1]])
  return None


def hlo_dot_flops(text: str) -> tuple[float, int]:
  """(FLOPs of every dot in the module, while loops counted trip-count times; loops of unknown count).

  A dot's FLOPs are 2 x output elements x contracted size. The pre-optimization HLO (global
  shapes, before SPMD partitioning) is the intended input: its dots are the step's matmuls,
  including any recomputation that remat inserted.
  """
  comps = parse_hlo(text)
  unknown = [0]
  memo: dict = {}

  def flops(comp_name: str) -> float:
    if comp_name in memo:
      return memo[comp_name]
    memo[comp_name] = 0.0   # guards recursion
    instrs = comps.get(comp_name, [])
    shapes = {name: shape for name, shape, _, _ in instrs}
    total = 0.0
    for name, shape, op, rest in instrs:
      if op == 'dot':
        lhs = rest.split(')')[0].split(',')[0].strip().lstrip('%')
        lhs_dims = _dims(shapes.get(lhs, ''))
        m = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', rest)
        contracted = math.prod(lhs_dims[int(d)] for d in m.group(1).split(',') if d) if m and lhs_dims else 0
        total += 2.0 * math.prod(_dims(shape)) * contracted
      elif op == 'while':
        body = re.search(r'body=%?([\w.\-]+)', rest).group(1)
        cond = re.search(r'condition=%?([\w.\-]+)', rest).group(1)
        n = _trip_count(comps.get(cond, []))
        if n is None:
          unknown[0] += 1
          n = 1
        total += n * flops(body)
      elif op == 'call':
        m = re.search(r'to_apply=%?([\w.\-]+)', rest)
        total += flops(m.group(1)) if m else 0.0
      elif op == 'conditional':
        m = re.search(r'branch_computations=\{([^}]*)\}', rest)
        if m:
          total += max(flops(b.strip().lstrip('%')) for b in m.group(1).split(','))
    memo[comp_name] = total
    return total

  entry = next((m.group(1) for line in text.splitlines() if line.startswith('ENTRY')
                for m in [_COMP_RE.match(line)] if m), None)
  if entry is None:
    raise HloError('no ENTRY computation in the HLO text')
  return flops(entry), unknown[0]


COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')


def _groups(rest: str, n_devices: int) -> list[list[int]]:
  m = re.search(r'replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?', rest)
  if m:   # iota form: [groups, size] <= [reshape] T(perm)
    import numpy as np
    out = [int(x) for x in m.group(1).split(',')]
    ids = np.arange(math.prod(int(x) for x in m.group(2).split(','))).reshape(
        [int(x) for x in m.group(2).split(',')])
    if m.group(3):
      ids = ids.transpose([int(x) for x in m.group(3).split(',')])
    return ids.reshape(out).tolist()
  m = re.search(r'(?:replica_groups|source_target_pairs)=\{((?:\{[\d,]*\},?)*)\}', rest)
  if m and m.group(1):
    return [[int(x) for x in g.split(',') if x] for g in re.findall(r'\{([\d,]*)\}', m.group(1))]
  return [list(range(n_devices))]   # empty groups: all devices


def collectives(text: str, slice_of: list[int]) -> list[dict]:
  """The collectives of a compiled (partitioned) HLO module, each with `cross_slice`.

  A multi-slice TPU program keeps ICI collectives (replica groups within a slice) and sends what
  crosses slices over DCN as host transfers: `send` ops tagged `_xla_megascale_transfer_type`
  (ALL_REDUCE, ALL_GATHER, ...). slice_of[i] is the slice of logical device i (the mesh, flattened).
  """
  out = []
  for comp in parse_hlo(text).values():
    for name, shape, op, rest in comp:
      dcn = re.search(r'_xla_megascale_transfer_type="(\w+)"', rest)
      if dcn and op == 'send':
        elems = math.prod(int(d) for d in _ARRAY_RE.search(shape).group(2).split(',') if d)
        out.append(dict(name=name, op=dcn.group(1).lower().replace('_', '-'), cross_slice=True, elements=elems,
                        group_size=None, op_name=''))
        continue
      base = op[:-len('-start')] if op.endswith('-start') else op
      if base not in COLLECTIVES:
        continue
      groups = _groups(rest, len(slice_of))
      cross = any(len({slice_of[d] for d in g}) > 1 for g in groups)
      elems = sum(math.prod(int(d) for d in dims.split(',') if d) for _, dims in _ARRAY_RE.findall(shape))
      meta = re.search(r'op_name="([^"]*)"', rest)
      out.append(dict(name=name, op=base, cross_slice=cross, elements=elems, group_size=len(groups[0]),
                      op_name=meta.group(1) if meta else ''))
  return out

