"""The HLO text of a step, read: its computations and instructions, the FLOPs of its dots, its collectives
and the bytes they move (the groundwork of a communication plan).

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


MANUAL_BODY = 'xla.sdy.manual_computation_body'   # a shard_map body: per-device shapes, run by every device


def _operand_dims(rest: str, shapes: dict) -> list[list[int]]:
  names = [a.strip().lstrip('%') for a in rest.split(')')[0].split(',') if a.strip()]
  return [_dims(shapes.get(n, '')) for n in names]


def hlo_dot_flops(text: str, kernel_flops=None, devices: int = 1) -> tuple[float, int]:
  """(FLOPs of every dot in the module, while loops counted trip-count times; loops of unknown count).

  A dot's FLOPs are 2 x output elements x contracted size. The pre-optimization HLO (global
  shapes, before SPMD partitioning) is the intended input: its dots are the step's matmuls,
  including any recomputation that remat inserted. A shard_map body (MANUAL_BODY) has per-device
  shapes and runs on each of the `devices`: what it counts is multiplied by `devices`.

  kernel_flops(target, output dims, operand dims) -> FLOPs, when given, counts what a custom call
  computes (a Pallas kernel's matmuls are no dots of the HLO): scaling/model/splash.py kernel_flops.
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
      elif op == 'custom-call' and kernel_flops is not None:
        target = re.search(r'custom_call_target="([^"]*)"', rest)
        outs = [[int(d) for d in dims.split(',') if d] for _, dims in _ARRAY_RE.findall(shape)]
        total += kernel_flops(target.group(1) if target else '', outs, _operand_dims(rest, shapes))
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
        if m:
          total += flops(m.group(1)) * (devices if m.group(1).startswith(MANUAL_BODY) else 1)
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


_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'f8e4m3fn': 1, 'f8e5m2': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2,
                'f32': 4, 's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8, 'c64': 8, 'c128': 16}


def _array_bytes(dtype: str, dims: str) -> int:
  if dtype not in _DTYPE_BYTES:
    raise HloError(f'unknown HLO element type {dtype!r}: add its size to scaling/train/hlo.py _DTYPE_BYTES')
  return _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(',') if d)


def _result_bytes(op: str, shape: str) -> int:
  """Bytes of a collective's result on one device. An async all-gather / collective-permute start returns
  (operand, result, ...): its result is the second array; otherwise every array of the shape is a result."""
  arrays = _ARRAY_RE.findall(shape)
  if op.endswith('-start') and op[:-len('-start')] in ('all-gather', 'collective-permute') and len(arrays) > 1:
    arrays = arrays[1:2]
  return sum(_array_bytes(t, d) for t, d in arrays)


def wire_bytes(op: str, result_bytes: float, n: int) -> float:
  """Bytes one device sends for a collective over a group of n, by the bandwidth-optimal (ring) algorithm:
  all-gather (n-1)/n of its result, reduce-scatter (n-1) results (its input is n of them), all-reduce
  2 (n-1)/n (a reduce-scatter, then an all-gather), all-to-all (n-1)/n, collective-permute all of it."""
  if n <= 1 and op != 'collective-permute':
    return 0.0
  return {'all-gather': (n - 1) / n, 'reduce-scatter': n - 1, 'all-reduce': 2 * (n - 1) / n,
          'all-to-all': (n - 1) / n}.get(op, 1.0) * result_bytes   # collective-permute (and else): all of it


def executions(text: str) -> dict:
  """{computation: times it runs per run of ENTRY}: while bodies trip-count times (XLA's known_trip_count,
  else the condition's i < N; 1 when unknown), everything else a computation calls as often as it runs."""
  comps = parse_hlo(text)
  entry = next((m.group(1) for line in text.splitlines() if line.startswith('ENTRY')
                for m in [_COMP_RE.match(line)] if m), None)
  if entry is None:
    raise HloError('no ENTRY computation in the HLO text')
  return _runs(comps, entry, control_only=False)


def _runs(comps: dict, entry: str, control_only: bool) -> dict:
  """{computation: runs per run of `entry`}. control_only: only what control flow runs (while bodies and
  conditions, calls, branches), not fusion bodies or reducers, whose instructions stay on chip; else every
  computation an instruction calls (to_apply, calls, branches, while bodies)."""
  runs: dict = {}

  def visit(name: str, n: int, depth: int = 0):
    if depth > 64 or name not in comps:
      return
    runs[name] = runs.get(name, 0) + n
    for _, _, op, rest in comps[name]:
      if op == 'while':
        known = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
        cond = re.search(r'condition=%?([\w.\-]+)', rest).group(1)
        trips = int(known.group(1)) if known else (_trip_count(comps.get(cond, [])) or 1)
        visit(re.search(r'body=%?([\w.\-]+)', rest).group(1), n * trips, depth + 1)
        if control_only:
          visit(cond, n * trips, depth + 1)
        continue
      if control_only and op not in ('call', 'conditional'):
        continue
      for key in (('to_apply',) if control_only else ('to_apply', 'calls')):
        for callee in re.findall(key + r'=%?([\w.\-]+)', rest):
          visit(callee, n, depth + 1)
      m = re.search(r'branch_computations=\{([^}]*)\}', rest)
      for b in (m.group(1).split(',') if m else ()):
        visit(b.strip().lstrip('%'), n, depth + 1)
  visit(entry, 1)
  return runs


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
                        group_size=None, op_name='', bytes=_array_bytes(*_ARRAY_RE.search(shape).groups())))
        continue
      base = op[:-len('-start')] if op.endswith('-start') else op
      if base not in COLLECTIVES:
        continue
      groups = _groups(rest, len(slice_of))
      cross = any(len({slice_of[d] for d in g}) > 1 for g in groups)
      elems = sum(math.prod(int(d) for d in dims.split(',') if d) for _, dims in _ARRAY_RE.findall(shape))
      meta = re.search(r'op_name="([^"]*)"', rest)
      out.append(dict(name=name, op=base, cross_slice=cross, elements=elems, group_size=len(groups[0]),
                      op_name=meta.group(1) if meta else '', bytes=_result_bytes(op, shape)))
  return out


def collective_bytes(text: str, slice_of: list[int]) -> dict:
  """Per step, bytes each device sends in the collectives of a compiled (partitioned) module:
  {(op, 'dcn' or 'ici'): {'count': runs, 'bytes': result bytes, 'wire_bytes': sent (see wire_bytes)}},
  every collective counted as many times as its computation runs (layers scanned: once per layer)."""
  runs = executions(text)
  where = {name: comp for comp, instrs in parse_hlo(text).items() for name, *_ in instrs}
  totals: dict = {}
  for c in collectives(text, slice_of):
    n = runs.get(where.get(c['name']), 0)
    key = (c['op'], 'dcn' if c['cross_slice'] else 'ici')
    t = totals.setdefault(key, dict(count=0, bytes=0, wire_bytes=0.0))
    t['count'] += n
    t['bytes'] += n * c['bytes']
    # a DCN send (group_size None) is one slice's part of a collective over the slices
    t['wire_bytes'] += n * wire_bytes(c['op'], c['bytes'], c['group_size'] or len(set(slice_of)))
  return totals



# ops that move no HBM bytes of their own (control flow, tuples, aliases, async halves counted at their start)
_NO_TRAFFIC = ('parameter', 'constant', 'tuple', 'get-tuple-element', 'bitcast', 'while', 'call', 'conditional',
               'after-all', 'partition-id', 'replica-id', 'iota', 'copy-done', 'all-gather-done', 'all-reduce-done',
               'collective-permute-done', 'send-done', 'recv-done', 'async-done', 'opt-barrier')


def _control_runs(comps: dict, entry: str) -> dict:
  """{computation: runs per step} of the computations control flow runs (entry, while bodies and conditions,
  calls, branches): not fusion bodies or reducers, whose instructions stay on chip."""
  return _runs(comps, entry, control_only=True)


def memory_traffic(text: str) -> tuple[float, float]:
  """(bytes read and written per step, loops counted trip-count times; the same with every computation
  counted once) of a compiled (partitioned, per-device) HLO module.

  Each instruction that control flow runs (fusions, copies, collectives, custom calls, ...) reads its operands
  and writes its result, as XLA's cost analysis counts 'bytes accessed'; that analysis counts a while body
  once, so the ratio of the two figures here scales its 'bytes accessed' to the step (scaling/train/plan.py).
  """
  comps = parse_hlo(text)
  entry = next((m.group(1) for line in text.splitlines() if line.startswith('ENTRY')
                for m in [_COMP_RE.match(line)] if m), None)
  if entry is None:
    raise HloError('no ENTRY computation in the HLO text')
  weighted = once = 0.0
  for comp, n in _control_runs(comps, entry).items():
    shapes = {name: shape for name, shape, _, _ in comps[comp]}
    total = 0.0
    for _, shape, op, rest in comps[comp]:
      if op in _NO_TRAFFIC:
        continue
      names = [a.strip().lstrip('%') for a in rest.split(')')[0].split(',') if a.strip()]
      arrays = _ARRAY_RE.findall(shape) + [a for nm in names for a in _ARRAY_RE.findall(shapes.get(nm, ''))]
      total += sum(_array_bytes(t, d) for t, d in arrays if t in _DTYPE_BYTES)
    weighted += n * total
    once += total
  return weighted, once
