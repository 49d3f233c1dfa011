"""How the network is split over devices and where the devices talk
(what `python -m alexnet_jax.describe` prints).

Per layer: its output per tower, its parameters, the devices that hold each
tower and whether it reads the other tower; then the bytes each device holds,
and the collectives of the compiled train step, read from XLA's HLO (where the
devices really talk, not where we think they do). `--json` prints the same as
one JSON object. `--strategies` compiles the same network under each
strategy on the same devices and prints the bytes each collective sends, side
by side: what the 2012 split costs against the alternatives.

Nothing runs and nothing of the 61M parameters is allocated: the state and
the batch are abstract (shapes, dtypes and shardings), the train step is only
compiled; the compile is most of its time.
"""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp

from alexnet_jax.core import model
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core import steps
from alexnet_jax.core import train_state
from alexnet_jax.errors import UserError
from alexnet_jax.run.settings import with_strategy
from alexnet_jax.run import validation
from alexnet_jax.tools import hlo
from alexnet_jax.tools.tables import format_bytes, format_table


def crossings(settings) -> tuple[str, ...]:
  """The named scopes where devices may talk (parallel.Towers), from the table:
  layers that read both towers, the first fully connected layer (where the
  2014 hybrid gathers the batch), fc weights gathered by FSDP, the softmax."""
  layers = settings.model.network.layers
  dense = [l.name for l in layers if l.dense]
  names = [l.name for l in layers if l.reads_both or l.name == dense[0]]
  return tuple(names) + tuple(f'{n}_weights' for n in dense) + ('softmax',)


def abstract_train_inputs(settings, mesh):
  """(graphdef, state, batch), all abstract but sharded as the rules say."""
  state = train_state.sharded_abstract_state(
      settings.model, settings.optimizer, settings.rules, mesh)
  # The batch as data.pipeline yields it and steps.device_batch places it.
  size = settings.model.image_size
  batch_sharding = parallel.batch_sharding(mesh, settings.rules)
  # uint8 pixels and each image's (3,) offset and scale (steps.normalize).
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(
      (settings.data.batch_size, *shape), dtype, sharding=batch_sharding)
  batch = {
      'image': spec((size, size, 3), jnp.uint8),
      'pixel_offset': spec((3,), jnp.float32),
      'pixel_scale': spec((3,), jnp.float32),
      'label': spec((), jnp.int32),
  }
  return model.graphdef(settings.model), state, batch


def compiled_train_step(settings, mesh):
  """The train step exactly as training jits it, compiled, never run."""
  graphdef, state, batch = abstract_train_inputs(settings, mesh)
  # The schedule is scalar arithmetic (no collectives); placeholder epoch and
  # step counts spare reading the dataset.
  lr_fn = optim.learning_rate_fn(settings.optimizer, steps_per_epoch=1, num_steps=1)
  train_step = steps.make_train_step(
      graphdef, settings.optimizer, settings.rules, lr_fn,
      jax.tree.map(lambda x: x.sharding, state))
  with jax.set_mesh(mesh):
    return train_step.lower(state, batch).compile()


def train_step_collectives(settings, mesh) -> list[hlo.Collective]:
  return hlo.collectives(compiled_train_step(settings, mesh).as_text(),
                         dict(mesh.shape), scopes=crossings(settings),
                         data_axis=settings.rules.batch)


def _towers_by_device(x: jax.ShapeDtypeStruct) -> dict[int, list[int]]:
  """Device id -> the towers (leading-axis rows) of `x` it holds."""
  out = {}
  for device, index in x.sharding.devices_indices_map(x.shape).items():
    rows = index[0] if index else slice(None)
    out[device.id] = list(range(*rows.indices(x.shape[0])))
  return out


def _shardformat_bytes(x: jax.ShapeDtypeStruct, index) -> int:
  return math.prod(len(range(*s.indices(n))) for s, n in zip(index, x.shape))


def describe(settings, mesh) -> dict:
  """Everything the report shows, as plain JSON-able values."""
  _, state, _ = abstract_train_inputs(settings, mesh)
  cfg = settings.model
  towers = cfg.network.towers
  reads_both = {l.name: l.reads_both for l in cfg.network.layers}
  params = state.params

  layers = []
  for name, shape in model.layer_shapes(cfg).items():  # Layers and pools, in order.
    leaves = jax.tree.leaves(params[name]) if name in reads_both else []
    size = sum(math.prod(x.shape) for x in leaves)
    by_tower = {t: set() for t in range(towers)}
    for x in leaves:
      for device, held in _towers_by_device(x).items():
        for t in held:
          by_tower[t].add(device)
    layers.append({
        'name': name,
        'output_per_tower': list(shape),
        # Fig. 2: conv3 and fc6..fc8 read both towers, the rest their own.
        'reads_other_tower': towers > 1 and reads_both.get(name, False),
        'params': size,
        'params_per_tower': size // towers,
        'devices_by_tower': ([sorted(by_tower[t]) for t in range(towers)]
                             if leaves else []),
    })

  def held_by(device, tree):
    sizes = [_shardformat_bytes(x, x.sharding.devices_indices_map(x.shape)[device])
             for x in jax.tree.leaves(tree)]
    itemsizes = [x.dtype.itemsize for x in jax.tree.leaves(tree)]
    return sum(sizes), sum(n * b for n, b in zip(sizes, itemsizes))

  devices = []
  for device in mesh.devices.flat:
    count, size = held_by(device, params)
    devices.append({'id': device.id, 'platform': device.platform,
                    'params': count, 'param_bytes': size,
                    # With the optimiser's state (Sec. 5's v), as sharded.
                    'param_and_momentum_bytes':
                        size + held_by(device, state.opt_state)[1]})

  collectives = train_step_collectives(settings, mesh)
  return {
      'variant': cfg.variant,
      'strategy': settings.strategy,
      'rules': dataclasses.asdict(settings.rules),
      'image_size': cfg.image_size,
      'batch_size': settings.data.batch_size,
      'dtype': cfg.dtype,
      'mesh': dict(mesh.shape),
      'towers': towers,
      'layers': layers,
      'params': sum(x['params'] for x in layers),
      'devices': devices,
      'collectives': [_collective_json(c) for c in collectives],
      'collectives_summary': summarize(collectives),
  }


def _collective_json(c: hlo.Collective) -> dict:
  return {'kind': c.kind, 'crossing': c.crossing, 'direction': c.direction,
          'axis': c.axis, 'instruction': c.instruction, 'dtype': c.dtype,
          'shape': list(c.shape), 'bytes': c.bytes, 'sent_bytes': c.sent_bytes,
          'replica_groups': [list(g) for g in c.replica_groups],
          'op_name': c.op_name}


def summarize(collectives: list[hlo.Collective]) -> list[dict]:
  """One row per (crossing, direction, kind, axis), in the order XLA runs them."""
  rows = {}
  for c in collectives:
    key = (c.crossing, c.direction, c.kind, c.axis)
    row = rows.setdefault(key, {
        'crossing': c.crossing, 'direction': c.direction, 'kind': c.kind,
        'axis': c.axis, 'ops': [], 'tensors': 0, 'shapes': [], 'bytes': 0,
        'sent_bytes': 0})
    if c.instruction not in row['ops']:
      row['ops'].append(c.instruction)
    row['tensors'] += 1
    row['shapes'].append(f'{c.dtype}[{",".join(map(str, c.shape))}]')
    row['bytes'] += c.bytes
    row['sent_bytes'] += c.sent_bytes
  for row in rows.values():
    row['ops'] = len(row['ops'])
  return list(rows.values())


# --- The table --------------------------------------------------------------------


def format_report(report: dict) -> str:
  mesh = ' x '.join(f'{k}={v}' for k, v in report['mesh'].items())
  platform = report['devices'][0]['platform']
  lines = [
      f'AlexNet {report["variant"]}: {report["image_size"]}x{report["image_size"]}'
      f' images, batch {report["batch_size"]} ({report["dtype"]}),'
      f' {report["towers"]} tower(s), mesh {mesh} on {len(report["devices"])}'
      f' {platform} device(s).', '']

  def held(layer):
    if not layer['devices_by_tower']:
      return ''
    return ', '.join(f'tower {t}: {"+".join(map(str, d))}'
                     for t, d in enumerate(layer['devices_by_tower']))

  rows = [[l['name'], 'x'.join(map(str, l['output_per_tower'])),
           'yes' if l['reads_other_tower'] else 'no',
           f'{l["params"]:,}' if l['params'] else '',
           f'{l["params_per_tower"]:,}' if l['params'] else '', held(l)]
          for l in report['layers']]
  rows.append(['total', '', '', f'{report["params"]:,}',
               f'{report["params"] // report["towers"]:,}', ''])
  lines += format_table(['layer', 'out per tower', 'reads other tower', 'params', 'per tower',
                   'held by device'], rows, right={3, 4})

  lines += ['', 'Held by each device (parameters, and with the momentum of Sec. 5):']
  lines += format_table(
      ['device', 'params', 'bytes', 'with momentum'],
      [[str(d['id']), f'{d["params"]:,}', format_bytes(d['param_bytes']),
        format_bytes(d['param_and_momentum_bytes'])] for d in report['devices']],
      right={1, 2, 3})

  summary = report['collectives_summary']
  lines += ['', 'Collectives in the compiled train step, read from its HLO'
            ' (bytes per device per step: the gathered or reduced buffer;'
            ' "sent" is what each device puts on the wire):']
  if not summary:
    lines.append('  none: no device talks to another.')
  else:
    rows = [[r['crossing'], r['direction'], r['kind'], r['axis'], str(r['ops']),
             r['shapes'][0] if r['tensors'] == 1 else f'{r["tensors"]} tensors',
             format_bytes(r['bytes']), format_bytes(r['sent_bytes'])] for r in summary]
    lines += format_table(['crossing', 'pass', 'kind', 'axis', 'ops', 'result shape',
                     'bytes', 'sent'], rows, right={4, 6, 7})
    for axis in report['mesh']:
      sent = sum(r['sent_bytes'] for r in summary if r['axis'] == axis)
      if sent:
        lines.append(f'Over {axis}: {format_bytes(sent)} sent per device per step.')
  return '\n'.join(lines)


def compare(settings, strategies: list[str], num_devices: int) -> dict[str, dict]:
  """describe() of the same network under each strategy, on its usual mesh
  over the same devices (parallel.strategy_mesh_shape)."""
  towers = settings.model.network.towers
  out = {}
  for name in strategies:
    shape = parallel.strategy_mesh_shape(name, num_devices, towers)
    placed = with_strategy(
        settings, name, data=shape[parallel.DATA], model=shape[parallel.MODEL])
    validation.validate(placed, num_devices=num_devices)
    out[name] = describe(placed, parallel.make_mesh(placed.mesh))
  return out


def format_comparison(reports: dict[str, dict]) -> str:
  """One row per crossing, one column of bytes sent per device per step per strategy."""
  keys = []
  for report in reports.values():
    for r in report['collectives_summary']:
      key = (r['crossing'], r['direction'], r['kind'], r['axis'])
      if key not in keys:
        keys.append(key)
  sent = {name: {(r['crossing'], r['direction'], r['kind'], r['axis']): r['sent_bytes']
                 for r in report['collectives_summary']}
          for name, report in reports.items()}
  rows = [[*key] + [format_bytes(sent[n][key]) if key in sent[n] else '-' for n in reports]
          for key in keys]
  rows.append(['total', '', '', ''] + [
      format_bytes(sum(sent[n].values())) for n in reports])
  first = next(iter(reports.values()))
  meshes = ', '.join(f'{n}: ' + ' x '.join(f'{k}={v}' for k, v in r['mesh'].items())
                     for n, r in reports.items())
  lines = [f'AlexNet {first["variant"]}, batch {first["batch_size"]}'
           f' ({first["dtype"]}): bytes each device sends per train step, by'
           f' strategy ({meshes}).', '']
  lines += format_table(['crossing', 'pass', 'kind', 'axis', *reports], rows,
                            right=set(range(4, 4 + len(reports))))
  return '\n'.join(lines)


def report(settings, strategies: str = '', as_json: bool = False) -> str:
  """What `describe` prints: the report of `settings` on its mesh, or with
  `strategies` (comma-separated) the comparison of those strategies."""
  if strategies:
    names = [n for n in strategies.split(',') if n]
    unknown = [n for n in names if n not in parallel.STRATEGIES]
    if unknown:
      raise UserError(f'Unknown strategies {unknown} in --strategies; choose'
                      f' from {", ".join(parallel.STRATEGIES)}.')
    mesh = parallel.make_mesh(settings.mesh)
    reports = compare(settings, names, len(mesh.devices.flat))
    return json.dumps(reports) if as_json else format_comparison(reports)
  described = describe(settings, parallel.make_mesh(settings.mesh))
  return json.dumps(described) if as_json else format_report(described)
