"""Shows how the network is split over devices and where the devices talk.

    python -m alexnet_jax.inspect --config=configs/two_gpu.py [--json]

Per layer: its output per tower, its parameters, the devices that hold each
tower and whether it reads the other tower; then the bytes each device holds,
and the collectives of the compiled train step, read from XLA's HLO (where the
devices really talk, not where we think they do). `--json` prints the same as
one JSON object.

Nothing runs and nothing of the 61M parameters is allocated: the state and
the batch are abstract (shapes, dtypes and shardings), the train step is only
compiled. About a minute on a 2-core CPU at full size, mostly the compile.
"""

import json
import math
import sys

from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp

from alexnet_jax import cli
from alexnet_jax import hlo
from alexnet_jax import model as model_lib
from alexnet_jax import parallel

# Where the towers exchange data: the layers that read both (model.py) and
# the softmax over all classes (parallel.Towers.exchange_logits). Each is a
# named scope, so the HLO's op_name says which crossing a collective is.
CROSSINGS = model_lib.READS_BOTH_TOWERS + ('softmax',)
# Rows of the layer table: the layers and, between them, the pools.
ROWS = ('conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool5',
        'fc6', 'fc7', 'fc8')


def abstract_train_inputs(config, mesh):
  """(graphdef, state, batch, state shardings), all abstract but sharded."""
  # Not at the top: train imports TensorFlow (input pipeline), seconds that a
  # bad config should not wait for.
  from alexnet_jax import train  # pylint: disable=import-outside-toplevel
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_lib.create(config)))
  abstract = train.abstract_state(config)
  shardings = train.state_shardings(abstract, mesh)
  state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, shardings)
  # The batch as input_pipeline yields it and train.device_batch places it.
  size, batch_sharding = config.image_size, parallel.batch_sharding(mesh)
  batch = {
      'image': jax.ShapeDtypeStruct((config.batch_size, size, size, 3),
                                    jnp.float32, sharding=batch_sharding),
      'label': jax.ShapeDtypeStruct((config.batch_size,), jnp.int32,
                                    sharding=batch_sharding),
  }
  return graphdef, state, batch, shardings


def compiled_train_step(config, mesh):
  """The train step exactly as train.py jits it, compiled, never run."""
  from alexnet_jax import train  # pylint: disable=import-outside-toplevel
  graphdef, state, batch, shardings = abstract_train_inputs(config, mesh)
  # The schedule is scalar arithmetic (no collectives); placeholder epoch and
  # step counts spare reading the dataset.
  lr_fn = train.learning_rate_fn(config, steps_per_epoch=1, num_steps=1)
  step = train.make_train_step(config, graphdef, lr_fn, shardings)
  with jax.set_mesh(mesh):
    return step.lower(state, batch).compile()


def train_step_collectives(config, mesh) -> list[hlo.Collective]:
  return hlo.collectives(compiled_train_step(config, mesh).as_text(),
                         dict(mesh.shape), scopes=CROSSINGS,
                         data_axis=parallel.DATA)


def _towers_by_device(x: jax.ShapeDtypeStruct) -> dict[int, list[int]]:
  """Device id -> the towers (leading-axis rows) of `x` it holds."""
  out = {}
  for device, index in x.sharding.devices_indices_map(x.shape).items():
    rows = index[0] if index else slice(None)
    out[device.id] = list(range(*rows.indices(x.shape[0])))
  return out


def _shard_size(x: jax.ShapeDtypeStruct, index) -> int:
  return math.prod(len(range(*s.indices(n))) for s, n in zip(index, x.shape))


def describe(config, mesh) -> dict:
  """Everything the report shows, as plain JSON-able values."""
  _, state, _, _ = abstract_train_inputs(config, mesh)
  towers = model_lib.VARIANTS[config.model.variant].towers
  shapes = model_lib.layer_shapes(config)
  params = state.params

  layers = []
  for name in ROWS:
    leaves = jax.tree.leaves(params[name]) if name in model_lib.LAYERS else []
    size = sum(math.prod(x.shape) for x in leaves)
    by_tower = {t: set() for t in range(towers)}
    for x in leaves:
      for device, held in _towers_by_device(x).items():
        for t in held:
          by_tower[t].add(device)
    layers.append({
        'name': name,
        'output_per_tower': list(shapes[name]),
        # Fig. 2: conv3 and fc6..fc8 read both towers, the rest their own.
        'reads_other_tower': towers > 1 and name in model_lib.READS_BOTH_TOWERS,
        'params': size,
        'params_per_tower': size // towers,
        'devices_by_tower': ([sorted(by_tower[t]) for t in range(towers)]
                             if leaves else []),
    })

  def held_by(device, tree):
    sizes = [_shard_size(x, x.sharding.devices_indices_map(x.shape)[device])
             for x in jax.tree.leaves(tree)]
    itemsizes = [x.dtype.itemsize for x in jax.tree.leaves(tree)]
    return sum(sizes), sum(n * b for n, b in zip(sizes, itemsizes))

  devices = []
  for device in mesh.devices.flat:
    count, size = held_by(device, params)
    devices.append({'id': device.id, 'platform': device.platform,
                    'params': count, 'param_bytes': size,
                    # Sec. 5's momentum v, as the train state shards it.
                    'param_and_momentum_bytes':
                        size + held_by(device, state.momentum)[1]})

  collectives = train_step_collectives(config, mesh)
  return {
      'variant': config.model.variant,
      'image_size': config.image_size,
      'batch_size': config.batch_size,
      'dtype': config.dtype,
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


def _size(n: float) -> str:
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if n < 1024 or unit == 'GiB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024
  raise AssertionError('unreachable')


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
  lines += cli.format_table(['layer', 'out per tower', 'reads other tower', 'params', 'per tower',
                   'held by device'], rows, right={3, 4})

  lines += ['', 'Held by each device (parameters, and with the momentum of Sec. 5):']
  lines += cli.format_table(
      ['device', 'params', 'bytes', 'with momentum'],
      [[str(d['id']), f'{d["params"]:,}', _size(d['param_bytes']),
        _size(d['param_and_momentum_bytes'])] for d in report['devices']],
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
             _size(r['bytes']), _size(r['sent_bytes'])] for r in summary]
    lines += cli.format_table(['crossing', 'pass', 'kind', 'axis', 'ops', 'result shape',
                     'bytes', 'sent'], rows, right={4, 6, 7})
    for axis in report['mesh']:
      sent = sum(r['sent_bytes'] for r in summary if r['axis'] == axis)
      if sent:
        lines.append(f'Over {axis}: {_size(sent)} sent per device per step.')
  return '\n'.join(lines)


def main(argv):
  del argv
  config = _CONFIG.value
  cli.check(config)  # Before JAX starts: host devices, then the config.
  report = describe(config, parallel.make_mesh(config))
  print(json.dumps(report) if _JSON.value else format_report(report))
  sys.stdout.flush()


if __name__ == '__main__':
  # Flags only when run as a program: tests import the functions above next
  # to main.py, which defines its own --config.
  _CONFIG = cli.define_config_flag()
  _JSON = flags.DEFINE_bool('json', False, 'Print one JSON object.')
  cli.run(main, _CONFIG)
