"""Where the devices talk, read from the compiled train step's HLO.

Fig. 2 of the paper: the towers exchange activations only before conv3, fc6,
fc7 and fc8, plus the logits for the softmax over all classes. XLA could add
a collective anywhere (a resharding, a gathered parameter), so the test reads
what it compiled rather than what core/parallel.py means to do. Tiny config
(width 1/16, 67x67); nothing is run, only compiled.
"""

import collections
import json
import math
import subprocess

from flax import nnx
import jax
import pytest

from clirun import finish, start_module

from alexnet_jax.core import model
from alexnet_jax.core import parallel
from alexnet_jax.run.settings import Settings
from alexnet_jax.tools import hlo
from alexnet_jax.tools import placement
from configs import two_gpu

# One xdist worker runs this file's tests, which share costly session-scoped
# fixtures (tests/conftest.py says why).
pytestmark = [pytest.mark.xdist_group('placement'),
              pytest.mark.slow(seconds=20)]  # All of this file's tests together.

FLOAT32 = 4
# Fig. 2, written out here as the reference the compiled program must match.
READS_BOTH_TOWERS = ('conv3', 'fc6', 'fc7', 'fc8')
LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')
ROWS = ('conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool5',
        'fc6', 'fc7', 'fc8')


def spatial_sizes(config):
  """The 2012 stack's side lengths by hand: conv1 11x11/4, then 3x3/2 pools."""
  after = lambda s, k, stride: (s - k) // stride + 1
  pool1 = after(after(config.image_size, 11, 4), 3, 2)
  pool2 = after(pool1, 3, 2)  # conv2..conv5 keep the size (padding).
  return {'pool2': pool2, 'pool5': after(pool2, 3, 2)}


def widths(config):
  scale = lambda n: max(1, round(n * config.model.width))
  return {'conv2': scale(128), 'conv5': scale(128), 'fc6': scale(2048),
          'fc7': scale(2048)}


def tiny_config(data, model_axis):
  config = two_gpu.get_config('tiny')
  config.mesh.data, config.mesh.model = data, model_axis
  config.strategy = 'towers' if model_axis > 1 else 'data'
  return config


def compiled_collectives(config):
  settings = Settings.from_config(config)
  return placement.train_step_collectives(settings, parallel.make_mesh(settings.mesh))


def tally(collectives):
  return collections.Counter(
      (c.crossing, c.direction, c.kind, c.axis) for c in collectives)


# What the split must compile to: one all-gather per crossing forward, its
# transpose (a reduce-scatter) backward, one all-reduce for the logits.
SPLIT = {
    **{(x, 'forward', 'all-gather', 'model'): 1 for x in READS_BOTH_TOWERS},
    ('softmax', 'forward', 'all-reduce', 'model'): 1,
    **{(x, 'backward', 'reduce-scatter', 'model'): 1
       for x in READS_BOTH_TOWERS},
}


def exchanged(config) -> dict[str, tuple[int, ...]]:
  """Per crossing, the activation both towers see (per data shard), from the
  layer arithmetic: what each all-gather must produce."""
  b = config.batch_size // config.mesh.data
  s, w = spatial_sizes(config), widths(config)
  return {
      'conv3': (b, s['pool2'], s['pool2'], 2 * w['conv2']),
      'fc6': (b, s['pool5'], s['pool5'], 2 * w['conv5']),
      'fc7': (b, 2 * w['fc6']),
      'fc8': (b, 2 * w['fc7']),
      'softmax': (b, config.model.num_classes),
  }


def test_towers_talk_only_at_the_crossings(cli_json):
  del cli_json  # Started here to overlap its compile with this one.
  config = tiny_config(data=1, model_axis=2)
  found = compiled_collectives(config)
  # Exactly these and nothing else: no collective-permute, no all-reduce of
  # gradients or parameters over `model`, no resharding anywhere.
  assert tally(found) == SPLIT, [(c.kind, c.op_name) for c in found]
  expected = exchanged(config)
  for c in found:
    assert c.replica_groups == ((0, 1),), c
    assert c.dtype == 'f32'
    size = FLOAT32 * math.prod(expected[c.crossing])
    # The gradient of an exchanged activation is as large as the activation.
    assert c.bytes == size, (c.crossing, c.direction, c.bytes, size)
    if c.kind == 'all-gather':
      assert c.shape == expected[c.crossing], c
      assert c.sent_bytes == size // 2  # Each device sends its own tower.
    if c.kind == 'reduce-scatter':
      assert c.shape == expected[c.crossing][:-1] + (expected[c.crossing][-1] // 2,)
  # The 2012 numbers, for a reader: fc6's all-gather is B * 6 * 6 * 128 * 2
  # floats at full size, here with the tiny widths.
  fc6 = next(c for c in found if c.crossing == 'fc6' and not c.backward)
  s, w = spatial_sizes(config), widths(config)
  assert fc6.bytes == config.batch_size * s['pool5'] ** 2 * w['conv5'] * 2 * FLOAT32


def test_one_device_has_no_collectives():
  assert compiled_collectives(tiny_config(data=1, model_axis=1)) == []


def test_data_parallel_reduces_only_gradients_and_the_loss():
  config = tiny_config(data=2, model_axis=1)
  found = compiled_collectives(config)
  assert {(c.kind, c.axis) for c in found} == {('all-reduce', 'data')}
  assert {(c.crossing, c.direction) for c in found} == {
      ('gradients', 'backward'), ('loss/metrics', 'forward')}
  # Every parameter's gradient is summed over `data` once.
  grads = [c for c in found if c.crossing == 'gradients']
  params = model.count_params(model.create(Settings.from_config(config).model))
  assert sum(c.bytes for c in grads) == FLOAT32 * params
  # The batch means of train_loss and train_top1: two scalars.
  metrics = [c for c in found if c.crossing == 'loss/metrics']
  assert [(c.dtype, c.shape) for c in metrics] == [('f32', ())] * 2
  # The loss is reduced inside value_and_grad (jvp), top-1 outside it.
  assert sorted('jvp()' in c.op_name for c in metrics) == [False, True]
  assert all(c.replica_groups == ((0, 1),) for c in found)


# --- The HLO reader on forms this CPU build does not print ---------------------


def test_hlo_reader_handles_async_iota_and_mesh_groups():
  text = '\n'.join([
      'HloModule m, num_partitions=4',
      '  %ag = (f32[2,3]{1,0}, f32[2,6]{1,0}) all-gather-start(%x), channel_id=1,'
      ' replica_groups=[2,2]<=[4], dimensions={1}, use_global_device_ids=true,'
      ' metadata={op_name="jit(f)/shard_map/fc7/all_gather"}',
      '  %agd = f32[2,6]{1,0} all-gather-done(%ag)',
      '  %ar = f32[8]{0} all-reduce(%y), channel_id=2, replica_groups='
      "mesh['axis_0'=2,'axis_1'=2] {'axis_0'}, use_global_device_ids=true,"
      ' to_apply=%add, metadata={op_name="jit(f)/transpose(jvp())/psum"}',
      '  %one = f32[8]{0} all-reduce(%y), channel_id=3, replica_groups={{0},{1},{2},{3}},'
      ' use_global_device_ids=true, to_apply=%add',
      '  %cp = (bf16[4]{0}, bf16[4]{0}, u32[], u32[]) collective-permute-start(%z),'
      ' channel_id=4, source_target_pairs={{0,1},{1,0},{2,3},{3,2}}',
  ])
  found = hlo.collectives(text, {'data': 2, 'model': 2}, scopes=('fc7',),
                          data_axis='data')
  assert [(c.kind, c.shape, c.bytes, c.axis, c.crossing, c.direction)
          for c in found] == [
              ('all-gather', (2, 6), 48, 'model', 'fc7', 'forward'),
              ('all-reduce', (8,), 32, 'data', 'gradients', 'backward'),
              ('collective-permute', (4,), 8, 'model', 'other', 'forward'),
          ]
  assert found[1].replica_groups == ((0, 2), (1, 3))


# --- The command line ---------------------------------------------------------


def start_cli(*args) -> subprocess.Popen:
  return start_module('alexnet_jax.describe', *args)


@pytest.fixture(scope='session')
def cli_json():
  """The CLI at the tiny size, in a subprocess that runs beside the tests
  compiling in this process (two cores: ~15 s saved)."""
  process = start_cli('--config=configs/two_gpu.py:tiny', '--json')
  yield process
  if process.poll() is None:
    process.kill()
    process.communicate()


def test_cli_json_describes_the_split(cli_json):
  returncode, stdout, stderr = finish(cli_json)
  assert returncode == 0, stderr[-3000:]
  report = json.loads(stdout)
  config = two_gpu.get_config('tiny')

  assert report['mesh'] == {'data': 1, 'model': 2}
  layers = {l['name']: l for l in report['layers']}
  assert list(layers) == list(ROWS)
  settings = Settings.from_config(config)
  for name, shape in model.layer_shapes(settings.model).items():
    assert tuple(layers[name]['output_per_tower']) == shape, name
  net = model.create(settings.model)
  assert report['params'] == model.count_params(net)
  for name in LAYERS:
    state = nnx.state(getattr(net, name), nnx.Param)
    params = sum(x.size for x in jax.tree.leaves(state))
    assert layers[name]['params'] == params, name
    assert layers[name]['params_per_tower'] * 2 == params, name
    assert layers[name]['devices_by_tower'] == [[0], [1]], name
    assert layers[name]['reads_other_tower'] == (name in READS_BOTH_TOWERS)
  # Each device holds exactly one tower: half of everything.
  assert [d['params'] * 2 for d in report['devices']] == [report['params']] * 2
  assert {(c['crossing'], c['direction'], c['kind'], c['axis'])
          for c in report['collectives']} == set(SPLIT)
  assert len(report['collectives']) == sum(SPLIT.values())


def test_cli_bad_variant_is_one_paragraph():
  returncode, stdout, stderr = finish(start_cli(
      '--config=configs/two_gpu.py:tiny', '--config.model.variant=nope'))
  assert returncode == 2, stderr[-3000:]
  message = stderr.strip()
  assert message.startswith('error:') and "'nope'" in message, message
  assert 'Traceback' not in message and '\n\n' not in message
  assert stdout == ''
