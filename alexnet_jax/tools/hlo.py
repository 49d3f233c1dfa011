"""Reads the cross-device collectives out of a compiled XLA executable's text.

    text = jax.jit(f).lower(*args).compile().as_text()
    for c in hlo.collectives(text, mesh.shape, scopes=('conv3', 'fc6')): ...

What XLA runs is the only honest answer to "where do the devices talk", so
`alexnet_jax.describe` and the tests read it here instead of trusting a list.

Every instruction of every computation is scanned, so a collective wrapped in
a fusion or an async computation is found where it sits; async pairs count
once (`all-gather-start` counts, `all-gather-done` does not). Counts are
static: an op inside a loop body counts once.

Bytes, per device and per step, are the size of the whole buffer the
collective works on: the result for all-gather (both towers' activations),
all-reduce, all-to-all and collective-permute, and the operand (= result x
group size) for reduce-scatter. `sent_bytes` is what each device puts on the
wire with ring algorithms (NCCL's bus-bandwidth factors): (n-1)/n of that for
all-gather, reduce-scatter and all-to-all, 2(n-1)/n for all-reduce, all of it
for collective-permute.

Replica groups are lists of positions in the mesh's devices, row-major (the
executable's device assignment is `mesh.devices.flat`), which is how each
collective is mapped to the mesh axes it runs over. Groups of one device move
nothing (XLA keeps such ops, e.g. `replica_groups={{0},{1}}`) and are left out.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import math
import re

import numpy as np

KINDS = ('all-gather', 'all-reduce', 'reduce-scatter', 'all-to-all',
         'ragged-all-to-all', 'collective-permute', 'collective-broadcast')

# Bits per element of each HLO element type.
_BITS = {'pred': 8, 's2': 2, 'u2': 2, 's4': 4, 'u4': 4, 's8': 8, 'u8': 8,
         's16': 16, 'u16': 16, 'f16': 16, 'bf16': 16, 's32': 32, 'u32': 32,
         'f32': 32, 's64': 64, 'u64': 64, 'f64': 64, 'c64': 64, 'c128': 128}

_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<rest>.*)$')
_ARRAY = re.compile(r'(?P<dtype>[a-z]+[0-9]*(?:e[0-9]+m[0-9]+\w*)?)\[(?P<dims>[0-9,]*)\]')
_OP_NAME = re.compile(r'op_name="(?P<op_name>(?:[^"\\]|\\.)*)"')


@dataclasses.dataclass(frozen=True)
class Collective:
  """One tensor moved by one collective (a combined op gives one per tensor)."""
  kind: str  # One of KINDS; the async `-start` form is folded in.
  instruction: str  # The HLO instruction's name.
  dtype: str  # HLO element type, e.g. 'f32'.
  shape: tuple[int, ...]  # Result shape of this tensor on one device.
  bytes: int  # Buffer size, as in the module docstring.
  sent_bytes: int  # Per device, ring algorithms.
  replica_groups: tuple[tuple[int, ...], ...]
  op_name: str  # JAX's name stack: jit(f)/.../conv3/all_gather.
  axes: tuple[str, ...]  # Mesh axes the groups span, e.g. ('model',).
  crossing: str  # What it is for; see `classify`.
  backward: bool  # A transposed (gradient) op: `transpose(` in op_name.

  @property
  def direction(self) -> str:
    return 'backward' if self.backward else 'forward'

  @property
  def axis(self) -> str:
    return '+'.join(self.axes)


def collectives(text: str, mesh_shape: Mapping[str, int], *,
                scopes: Sequence[str] = (), data_axis: str | None = None,
                ) -> list[Collective]:
  """Every collective in `text` that moves data between devices.

  `mesh_shape` is the mesh's {axis: size}, in the mesh's order. `scopes` are
  the named scopes that mark crossing points (`jax.named_scope`); a
  collective over `data_axis` outside them is 'gradients' (backward) or
  'loss/metrics' (forward); anything else is 'other'.
  """
  header = text[:text.find('\n')]
  counts = {key: int(m.group(1)) if (m := re.search(rf'\b{key}=(\d+)', header))
            else 1 for key in ('replica_count', 'num_partitions')}
  found = []
  for line in text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    shape, rest = _split_shape(match.group('rest'))
    opcode = rest.split('(', 1)[0].strip()
    kind = opcode.removesuffix('-start')
    if kind not in KINDS:
      continue
    groups = _groups(kind, rest, counts)
    if all(len(set(g)) <= 1 for g in groups):
      continue
    axes = _axes(groups, mesh_shape)
    results = _results(shape, opcode)
    op_name = (m.group('op_name') if (m := _OP_NAME.search(rest)) else '')
    names = _split_op_name(op_name, len(results))
    n = max(len(g) for g in groups)
    for (dtype, dims), name in zip(results, names):
      size = math.prod(dims) * _bits(dtype) // 8
      if kind == 'reduce-scatter':
        size *= n  # The operand: every device's full contribution.
      factor = {'all-reduce': 2 * (n - 1) / n, 'collective-permute': 1.0,
                'collective-broadcast': 1.0}.get(kind, (n - 1) / n)
      backward = 'transpose(' in name
      found.append(Collective(
          kind=kind, instruction=match.group('name'), dtype=dtype, shape=dims,
          bytes=size, sent_bytes=round(size * factor), replica_groups=groups,
          op_name=name, axes=axes,
          crossing=classify(name, axes, scopes=scopes, data_axis=data_axis),
          backward=backward))
  return found


def _bits(dtype: str) -> int:
  if dtype.startswith('f8'):
    return 8  # The float8 family: f8e4m3fn, f8e5m2, ...
  if dtype not in _BITS:
    raise ValueError(f'Unknown HLO element type {dtype!r}.')
  return _BITS[dtype]


def classify(op_name: str, axes: Sequence[str], *, scopes: Sequence[str] = (),
             data_axis: str | None = None) -> str:
  """The crossing point a collective belongs to, from its name stack."""
  for part in reversed(op_name.split('/')):
    if part in scopes:
      return part
  if data_axis is not None and tuple(axes) == (data_axis,):
    return 'gradients' if 'transpose(' in op_name else 'loss/metrics'
  return 'other'


# --- Shapes ---------------------------------------------------------------------


def _split_shape(rest: str) -> tuple[str, str]:
  """'(f32[2], f32[4]) all-gather-start(...)...' -> the shape, the rest."""
  rest = rest.lstrip()
  if not rest.startswith('('):
    shape, _, tail = rest.partition(' ')
    return shape, tail
  depth = 0
  for i, ch in enumerate(rest):
    depth += {'(': 1, ')': -1}.get(ch, 0)
    if depth == 0:
      return rest[:i + 1], rest[i + 1:]
  return rest, ''


def _tuple_elements(shape: str) -> list[str]:
  """Top-level elements of a tuple shape, or [shape] for an array."""
  shape = re.sub(r'/\*.*?\*/', '', shape).strip()
  if not shape.startswith('('):
    return [shape]
  elements, depth, start = [], 0, 1
  for i, ch in enumerate(shape):
    if ch in '({[':
      depth += 1
    elif ch in ')}]':
      depth -= 1
    if (ch == ',' and depth == 1) or (ch == ')' and depth == 0):
      if shape[start:i].strip():
        elements.append(shape[start:i].strip())
      start = i + 1
  return elements


def _arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
  out = []
  for m in _ARRAY.finditer(shape):
    dims = tuple(int(d) for d in m.group('dims').split(',') if d)
    out.append((m.group('dtype'), dims))
  return out


def _results(shape: str, opcode: str) -> list[tuple[str, tuple[int, ...]]]:
  """The result tensors. Async starts return (operands, results, context...)."""
  if opcode.endswith('-start') and not opcode.startswith('all-reduce'):
    elements = _tuple_elements(shape)
    if len(elements) > 1:
      return _arrays(elements[1])
  return _arrays(shape)


def _split_op_name(op_name: str, n: int) -> list[str]:
  """A combined op's name is 'prefix/(a:b:c)', one part per tensor."""
  m = re.fullmatch(r'(?P<prefix>.*?/)?\((?P<parts>.*)\)', op_name)
  if n > 1 and m:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(m.group('parts') + ':'):
      depth += {'(': 1, ')': -1}.get(ch, 0)
      if ch == ':' and depth == 0:
        parts.append(m.group('parts')[start:i])
        start = i + 1
    if len(parts) == n:
      return [(m.group('prefix') or '') + p for p in parts]
  return [op_name] * n


# --- Replica groups -------------------------------------------------------------


def _attr(rest: str, key: str) -> str | None:
  """The raw value of `key=` up to the next top-level ', name='."""
  m = re.search(rf'\b{key}=', rest)
  if not m:
    return None
  depth, i = 0, m.end()
  for j in range(m.end(), len(rest)):
    ch = rest[j]
    if ch in '({[':
      depth += 1
    elif ch in ')}]':
      depth -= 1
    elif depth == 0 and re.match(r', (?!device_ids=)[\w.]+=', rest[j:]):
      return rest[i:j]
  return rest[i:]


def _groups(kind: str, rest: str, counts: dict[str, int]) -> tuple[tuple[int, ...], ...]:
  if kind == 'collective-permute':
    pairs = _attr(rest, 'source_target_pairs') or '{}'
    return tuple(tuple(int(x) for x in re.findall(r'\d+', p))
                 for p in re.findall(r'\{[\d,\s]*\}', pairs[1:-1]))
  value = (_attr(rest, 'replica_groups') or '{}').strip()
  if value.startswith('mesh['):
    return _mesh_groups(value)
  if value.startswith('maximal_mesh'):
    return ((int(re.search(r'\d+', value).group()),),)
  if value.startswith('['):
    return _iota_groups(value)
  groups = tuple(tuple(int(x) for x in re.findall(r'\d+', g))
                 for g in re.findall(r'\{[\d,\s]*\}', value[1:-1]))
  if groups:
    return groups
  # `{}`: every participant. Cross-replica without a channel, cross-partition
  # with one, all devices with global ids.
  if 'use_global_device_ids=true' in rest:
    n = counts['replica_count'] * counts['num_partitions']
  elif 'channel_id=' in rest:
    n = counts['num_partitions']
  else:
    n = counts['replica_count']
  return (tuple(range(n)),)


def _iota(spec: str) -> np.ndarray:
  """'[4,2]<=[2,4]T(1,0)' -> iota(8) reshaped to [2,4], transposed, to [4,2]."""
  m = re.fullmatch(r'\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?', spec.strip())
  if not m:
    raise ValueError(f'Unrecognised iota device list {spec!r}.')
  shape, reshape = ([int(x) for x in g.split(',')] for g in m.groups()[:2])
  ids = np.arange(math.prod(reshape)).reshape(reshape)
  if m.group(3):
    ids = ids.transpose([int(x) for x in m.group(3).split(',')])
  return ids.reshape(shape)


def _iota_groups(spec: str) -> tuple[tuple[int, ...], ...]:
  ids = _iota(spec)
  return tuple(tuple(int(x) for x in row) for row in ids.reshape(ids.shape[0], -1))


def _mesh_groups(value: str) -> tuple[tuple[int, ...], ...]:
  """"mesh['a'=2,'b'=2], device_ids=(...) {'b'}": groups vary 'b', fix 'a'.

  A grouped axis may be a sub-axis, 'a':(pre)size: axis `a` seen as
  (pre, size, rest), major to minor, of which the group spans `size`.
  """
  m = re.match(r"mesh\[(?P<axes>[^\]]*)\]", value)
  axes = [(a.strip().strip('\'"'), int(n)) for a, n in
          (item.rsplit('=', 1) for item in m.group('axes').split(',') if item)]
  names, sizes = [a for a, _ in axes], [n for _, n in axes]
  tail = value[m.end():]
  brace = tail.rfind('{')
  ids_spec = tail[:brace]
  if 'device_ids=(' in ids_spec:
    inner = ids_spec[ids_spec.index('device_ids=(') + len('device_ids=('):
                     ids_spec.rindex(')')]
    ids = (_iota(inner) if '<=' in inner
           else np.array([int(x) for x in re.findall(r'\d+', inner)]))
  else:
    ids = np.arange(math.prod(sizes))
  # Each grouped (sub-)axis is a range [pre, pre * size) of its axis's
  # major-to-minor strides; cut every axis at all such boundaries.
  spans = {i: [] for i in range(len(sizes))}
  refs = re.findall(r"(?:'[^']*'|\"[^\"]*\"|[^,\s']+)(?::\(\d+\)\d+)?",
                    tail[brace + 1:tail.rindex('}')])
  for ref in refs:
    sub = re.fullmatch(r"(?P<name>.+?)(?::\((?P<pre>\d+)\)(?P<size>\d+))?", ref)
    axis = names.index(sub.group('name').strip('\'"'))
    pre = int(sub.group('pre') or 1)
    spans[axis].append((pre, pre * int(sub.group('size') or sizes[axis])))
  dims, group_dims = [], []
  for axis, n in enumerate(sizes):
    cuts = sorted({1, n} | {b for span in spans[axis] for b in span})
    for lo, hi in zip(cuts, cuts[1:]):
      if any(a <= lo and hi <= b for a, b in spans[axis]):
        group_dims.append(len(dims))
      dims.append(hi // lo)
  ids = ids.reshape(dims) if dims else ids
  others = [d for d in range(len(dims)) if d not in group_dims]
  ids = ids.transpose(others + group_dims)
  group_size = math.prod(dims[d] for d in group_dims)
  return tuple(tuple(int(x) for x in row) for row in ids.reshape(-1, group_size))


def _axes(groups, mesh_shape: Mapping[str, int]) -> tuple[str, ...]:
  """The mesh axes along which members of some group differ."""
  names, sizes = tuple(mesh_shape), tuple(mesh_shape.values())
  total = math.prod(sizes)
  spanned = set()
  for group in groups:
    if any(i >= total for i in group):
      return ('?',)  # Not a device of this mesh: say so rather than guess.
    coords = np.array(np.unravel_index(list(group), sizes)).T
    spanned |= {names[d] for d in range(len(sizes))
                if len(set(coords[:, d])) > 1}
  return tuple(n for n in names if n in spanned)
