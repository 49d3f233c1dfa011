"""The model against references: the paper's table, Caffe, TensorFlow, and
itself on one device (the two-device split must not change a single number).

Anything compiled uses the tiny config (width 1/16, 67x67); full-size checks
go through eval_shape, so nothing of 61M parameters is computed twice.
"""

import contextlib
import math
import os
import re
import subprocess
import sys
import textwrap

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.core import convolution
from alexnet_jax.core import flops
from alexnet_jax.core import layers
from alexnet_jax.core import model
from alexnet_jax.core import network
from alexnet_jax.core import parallel
from alexnet_jax.errors import UserError
from alexnet_jax.run import validation
from alexnet_jax.run.settings import Settings
from configs import default

# One xdist worker runs this file's tests, which share costly session-scoped
# fixtures (tests/conftest.py says why).
pytestmark = [pytest.mark.xdist_group('model'),
              pytest.mark.slow(seconds=60)]  # All of this file's tests together.

LAYERS = [layer.name for layer in network.NETWORKS['two_tower'].layers]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def full_config(variant='two_tower', image_size=227):
  config = default.get_config()
  config.model.variant = variant
  config.image_size = image_size
  return config


def tiny_config(**model_overrides):
  config = default.get_config('tiny')
  for key, value in model_overrides.items():
    setattr(config.model, key, value)
  return config


def model_of(config) -> network.ModelConfig:
  return Settings.from_config(config).model


def abstract_model(config):
  """The model with shapes for parameters: nothing is allocated."""
  return nnx.eval_shape(lambda: model.AlexNet(model_of(config), rngs=nnx.Rngs(0)))


def abstract_params(config):
  return nnx.state(abstract_model(config), nnx.Param)


def random_model(config, seed):
  """The model's graph and every parameter drawn fresh, without JAX's RNG.

  The paper's init gives both towers the same constant biases, which would
  hide a swapped or mis-sliced tower; He-scaled kernels keep activations
  O(1). NumPy draws them because each jax.random shape compiles for seconds
  on CPU, and eval_shape means the init itself never runs.
  """
  graphdef, abstract = nnx.split(abstract_model(config))
  rng = np.random.default_rng(seed)

  def draw(x):
    if x.ndim == 2:  # Bias: (towers, out).
      std = 0.1
    else:  # Kernel: (towers, ..., in, out).
      std = math.sqrt(2.0 / math.prod(x.shape[1:-1]))
    return jnp.asarray(std * rng.standard_normal(x.shape, np.float32))

  return graphdef, jax.tree.map(draw, abstract)


def tower_sharding(state, mesh):
  """Where the 2012 split puts every parameter: its towers over `model`."""
  return parallel.param_shardings(model.param_axes(state),
                                  parallel.STRATEGIES['towers'], mesh)


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def named_leaves(tree):
  return [(jax.tree_util.keystr(path), leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


# --- 1. Parameter counts ------------------------------------------------------

# Fig. 2, per tower: (fan-in, outputs). conv3 and fc6..fc8 read both towers.
PAPER_TABLE = {
    'conv1': (11 * 11 * 3, 48),
    'conv2': (5 * 5 * 48, 128),
    'conv3': (3 * 3 * 256, 192),
    'conv4': (3 * 3 * 192, 192),
    'conv5': (3 * 3 * 192, 128),
    'fc6': (6 * 6 * 256, 2048),
    'fc7': (4096, 2048),
    'fc8': (4096, 500),
}


@pytest.mark.parametrize('variant, image_size, expected', [
    ('two_tower', 227, 60_965_224),  # Caffe's bvlc_alexnet (group: 2).
    ('one_tower', 227, 59_798_312),  # Sec. 3.2, footnote 2.
    ('owt', 224, 61_100_840),  # torchvision.models.alexnet.
])
def test_parameter_count(variant, image_size, expected):
  params = abstract_params(full_config(variant, image_size))
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(params)) == expected
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_parameter_count_per_layer_matches_paper_table():
  params = abstract_params(full_config())
  expected = {name: 2 * (fan_in * out + out)
              for name, (fan_in, out) in PAPER_TABLE.items()}
  got = {name: sum(math.prod(x.shape) for x in jax.tree.leaves(params[name]))
         for name in LAYERS}
  assert got == expected
  assert sum(expected.values()) == 60_965_224
  # Towers on the leading axis: (2, kh, kw, in, out) and (2, in, out).
  assert params['conv1']['kernel'].shape == (2, 11, 11, 3, 48)
  assert params['conv3']['kernel'].shape == (2, 3, 3, 256, 192)
  assert params['fc6']['kernel'].shape == (2, 9216, 2048)
  assert params['fc8']['bias'].shape == (2, 500)


# --- 2. Layer shapes ------------------------------------------------------------


def test_layer_shapes_per_tower_at_227():
  assert model.layer_shapes(model_of(full_config())) == {
      'conv1': (55, 55, 48), 'pool1': (27, 27, 48),
      'conv2': (27, 27, 128), 'pool2': (13, 13, 128),
      'conv3': (13, 13, 192), 'conv4': (13, 13, 192),
      'conv5': (13, 13, 128), 'pool5': (6, 6, 128),
      'fc6': (2048,), 'fc7': (2048,), 'fc8': (500,),
  }
  # fc6 reads pool5 of both towers: 6 * 6 * 128 * 2 = 9216.
  assert abstract_params(full_config())['fc6']['kernel'].shape == (2, 9216, 2048)


@pytest.mark.parametrize('variant, image_size, expected', [
    ('two_tower', 227, 724_406_816),  # Caffe's bvlc_alexnet: 724M multiply-adds.
    ('owt', 224, 714_188_480),  # torchvision's alexnet: "0.71 GFLOPS" (multiply-adds).
])
def test_forward_multiply_adds(variant, image_size, expected):
  cfg = model_of(full_config(variant, image_size))
  assert sum(flops.forward_macs(cfg).values()) == expected
  # Conv layers forward, with each kernel and input gradient as costly as the
  # forward, conv1's input gradient left out: the train step's useful FLOPs.
  macs = flops.forward_macs(cfg)
  assert flops.train_flops_per_image(cfg) == 6 * expected - 2 * macs['conv1']


def test_forward_multiply_adds_per_layer_match_paper_table():
  """Output positions (Fig. 2's maps) x fan-in x outputs, both towers."""
  positions = {'conv1': 55 * 55, 'conv2': 27 * 27, 'conv3': 13 * 13,
               'conv4': 13 * 13, 'conv5': 13 * 13}
  assert flops.forward_macs(model_of(full_config())) == {
      name: 2 * positions.get(name, 1) * fan_in * out
      for name, (fan_in, out) in PAPER_TABLE.items()}


def test_owt_conv1_padding_gives_55_at_224():
  shapes = model.layer_shapes(model_of(full_config('owt', 224)))
  assert shapes['conv1'] == (55, 55, 64)
  assert shapes['pool5'] == (6, 6, 256)
  assert shapes['fc8'] == (1000,)


# --- 3. LRN against TensorFlow --------------------------------------------------


@pytest.mark.parametrize('channels', [48, 7])  # 7: the window's clipped edges matter.
def test_lrn_matches_tensorflow(channels):
  import tensorflow as tf  # Slow import; only this test needs it.
  rng = np.random.default_rng(0)
  # Large activations, so alpha * sum(a^2) is comparable to k = 2.
  x = (30.0 * rng.standard_normal((2, 5, 5, channels))).astype(np.float32)

  ours = np.asarray(layers.lrn(jnp.asarray(x)))
  theirs = tf.nn.local_response_normalization(
      x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75).numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  # The test means something only if normalisation does more than scale by k.
  assert not np.allclose(ours, x, rtol=1e-2)
  assert not np.allclose(ours, x / 2.0 ** 0.75, rtol=1e-2)

  caffe = np.asarray(layers.lrn(jnp.asarray(x), convention='caffe'))
  theirs_caffe = tf.nn.local_response_normalization(
      x, depth_radius=2, bias=2.0, alpha=1e-4 / 5, beta=0.75).numpy()
  np.testing.assert_allclose(caffe, theirs_caffe, rtol=1e-5, atol=1e-5)
  assert not np.allclose(caffe, ours, rtol=1e-2)


# --- 4. Two devices against one ------------------------------------------------

MESHES = {'towers': (1, 2), 'data': (2, 1)}  # (mesh.data, mesh.model).


@pytest.fixture(scope='session')
def tiny():
  """Tiny model with random parameters, a batch and labels, on device 0."""
  config = tiny_config()
  graphdef, state = random_model(config, seed=1)
  size = config.image_size
  images = np.random.default_rng(2).standard_normal((2, size, size, 3), np.float32)
  # Rows 2, 3 repeat rows 0, 1: on the data mesh they land on the other shard.
  images = np.concatenate([images, images])
  labels = jnp.array([1, 7, 3, 9])
  device = jax.devices()[0]
  return dict(config=config, graphdef=graphdef,
              state=jax.device_put(state, device),
              images=jax.device_put(images, device),
              labels=jax.device_put(labels, device), rng=jax.random.key(3))


def loss_fn(graphdef, train):
  def loss(state, images, labels, rng):
    logits = nnx.merge(graphdef, state)(images, train=train, rng=rng)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean(), logits
  return jax.value_and_grad(loss, has_aux=True)


@pytest.fixture(scope='session')
def single_device(tiny):
  """Loss, logits and gradients on one device, no mesh, per mode."""
  out = {}
  for train in (False, True):
    fn = jax.jit(loss_fn(tiny['graphdef'], train))
    (loss, logits), grads = fn(tiny['state'], tiny['images'], tiny['labels'],
                               tiny['rng'])
    assert {d for x in jax.tree.leaves(grads) for d in x.devices()} == {jax.devices()[0]}
    out[train] = jax.device_get((loss, logits, grads))
  return out


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('mesh_name', list(MESHES))
def test_mesh_matches_single_device(tiny, single_device, mesh_name, train):
  config = tiny['config'].copy_and_resolve_references()
  config.mesh.data, config.mesh.model = MESHES[mesh_name]
  mesh = parallel.make_mesh(Settings.from_config(config).mesh)
  with jax.set_mesh(mesh):
    state = jax.device_put(tiny['state'], tower_sharding(tiny['state'], mesh))
    images = jax.device_put(tiny['images'], parallel.batch_sharding(mesh))
    labels = jax.device_put(tiny['labels'], parallel.batch_sharding(mesh))
    compiled = jax.jit(loss_fn(tiny['graphdef'], train)).lower(
        state, images, labels, tiny['rng']).compile()
    (loss, logits), grads = compiled(state, images, labels, tiny['rng'])

  hlo = compiled.as_text()
  if mesh_name == 'towers':
    # The split really happened: towers exchange activations by all-gather.
    assert 'all-gather' in hlo
    assert len(grads['fc6']['kernel'].sharding.device_set) == 2
  else:
    # The batch really was split: gradients are summed over `data`.
    assert 'all-reduce' in hlo

  ref_loss, ref_logits, ref_grads = single_device[train]
  assert rel_err(loss, ref_loss) <= 1e-5
  assert rel_err(logits, ref_logits) <= 1e-5
  for (name, g), (_, ref) in zip(named_leaves(grads), named_leaves(ref_grads)):
    assert np.abs(ref).max() > 0, name  # Every parameter gets a gradient.
    assert rel_err(g, ref) <= 1e-5, name

  # Rows 0 and 2 are the same image: equal in eval, different dropout in train.
  logits = np.asarray(logits)
  if train:
    assert not np.allclose(logits[:2], logits[2:], atol=1e-3)
  else:
    np.testing.assert_allclose(logits[:2], logits[2:], rtol=1e-5, atol=1e-6)


# --- 5. Each device holds one tower -------------------------------------------


def test_each_device_holds_half_of_every_layer(tiny):
  config = tiny['config'].copy_and_resolve_references()
  config.mesh.data, config.mesh.model = 1, 2
  mesh = parallel.make_mesh(Settings.from_config(config).mesh)
  state = jax.device_put(nnx.state(tiny['state'], nnx.Param),
                         tower_sharding(tiny['state'], mesh))
  leaves = named_leaves(state)
  assert len(leaves) == 2 * len(LAYERS)
  for name, x in leaves:
    shards = x.addressable_shards
    assert len(shards) == 2, name
    assert len({s.device for s in shards}) == 2, name
    assert math.prod(x.sharding.mesh.shape[a] for a in x.sharding.spec if a) == 2, name
    for shard in shards:
      assert shard.data.shape[0] == 1, name
      assert shard.data.size * 2 == x.size, name
      # Device at model position i holds tower i.
      tower = list(mesh.devices[0]).index(shard.device)
      assert shard.index[0] == slice(tower, tower + 1), name
      np.testing.assert_array_equal(shard.data[0], np.asarray(x)[tower])
    assert not np.array_equal(shards[0].data, shards[1].data), name


# --- 6. Dropout masks ------------------------------------------------------------


def test_dropout_masks_differ_between_towers(tiny):
  # Both towers get tower 0's parameters, so before dropout they compute the
  # same fc6; any difference after it is the mask.
  state = jax.tree.map(lambda x: jnp.stack([x[0], x[0]]), tiny['state'])
  net = nnx.merge(tiny['graphdef'], state)
  images = tiny['images'][:2]
  rng = jax.random.key(4)

  def fc6(ids, train):
    # `record` sees the first local tower; ordering ids puts either first.
    seen = {}
    net.forward(images, parallel.Towers(ids=ids), train=train, rng=rng,
                record=seen.__setitem__)
    return np.asarray(seen['fc6'])

  clean = fc6([0, 1], train=False)
  np.testing.assert_array_equal(clean, fc6([1, 0], train=False))
  assert (clean > 0).mean() > 0.3  # Enough live units to see a mask.

  tower0, tower1 = fc6([0, 1], train=True), fc6([1, 0], train=True)
  kept0, kept1 = tower0 != 0, tower1 != 0
  for out, kept in ((tower0, kept0), (tower1, kept1)):
    # Kept units are scaled by 1 / (1 - 0.5); about half the live ones drop.
    np.testing.assert_allclose(out[kept], 2 * clean[kept], rtol=1e-5)
    assert 0.3 < kept[clean > 0].mean() < 0.7
  assert (kept0 != kept1)[clean > 0].mean() > 0.3
  # Same tower, same rng: same mask (the derivation is deterministic).
  np.testing.assert_array_equal(tower0, fc6([0, 1], train=True))


def test_dropout_masks_differ_between_data_shards_when_split():
  """data=2 x model=2 needs 4 devices: a fresh JAX in a subprocess.

  Each shard_map data shard draws masks for its local batch, so without
  folding in the data index two shards holding the same image would drop
  the same units.
  """
  script = textwrap.dedent('''
      import math
      from flax import nnx
      import jax, jax.numpy as jnp, numpy as np
      from alexnet_jax.core import parallel
      from alexnet_jax.run.settings import Settings
      from configs import default
      from tests.core.test_model import random_model, rel_err, tower_sharding

      config = default.get_config('tiny')
      config.mesh.data, config.mesh.model = 2, 2
      graphdef, state = random_model(config, seed=1)
      image = np.random.default_rng(2).standard_normal((1, 67, 67, 3), np.float32)
      images = np.concatenate([image, image])  # One per data shard.
      run = lambda s, x, train: nnx.merge(graphdef, s)(
          x, train=train, rng=jax.random.key(3))
      ref = jax.jit(run, static_argnums=2)(state, images, False)
      mesh = parallel.make_mesh(Settings.from_config(config).mesh)
      assert dict(mesh.shape) == {'data': 2, 'model': 2}
      with jax.set_mesh(mesh):
        s = jax.device_put(state, tower_sharding(state, mesh))
        x = jax.device_put(images, parallel.batch_sharding(mesh))
        f = jax.jit(run, static_argnums=2)
        evals, trains = f(s, x, False), f(s, x, True)
      assert rel_err(evals, ref) <= 1e-5, rel_err(evals, ref)
      evals, trains = np.asarray(evals), np.asarray(trains)
      np.testing.assert_allclose(evals[0], evals[1], rtol=1e-6)
      assert not np.allclose(trains[0], trains[1], atol=1e-3), trains
      print('OK')
  ''')
  env = dict(os.environ)
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


# --- 7. Config validation -------------------------------------------------------


# Smallest image from the layer arithmetic: pool5 >= 1 needs pool2 >= 3 (3x3/2)
# or >= 2 (2x2/2), back through the pools and conv1 = (S + 2p - 11) // 4 + 1.
@pytest.mark.parametrize('variant, overlapping, smallest', [
    ('two_tower', True, 67),  # conv1 >= 15: S - 11 >= 56.
    ('two_tower', False, 39),  # conv1 >= 8: S - 11 >= 28.
    ('owt', True, 63),  # conv1 padded by 2: S + 4 - 11 >= 56.
])
def test_validate_image_too_small_names_smallest(variant, overlapping, smallest):
  config = full_config(variant, smallest)
  config.model.overlapping_pool = overlapping
  validation.validate_model(model_of(config))
  assert model.layer_shapes(model_of(config))['pool5'][:2] == (1, 1)
  config.image_size = smallest - 1
  with pytest.raises(UserError, match=rf'\b{smallest}\b'):
    validation.validate_model(model_of(config))


def test_validate_unknown_variant():
  config = full_config()
  config.model.variant = 'three_tower'
  with pytest.raises(UserError, match='three_tower'):
    validation.validate_model(model_of(config))


def test_validate_unknown_conv_kernel_grad():
  config = full_config()
  config.conv_kernel_grad = 'cudnn'
  with pytest.raises(UserError, match="conv_kernel_grad 'cudnn'.*auto, xla, patches"):
    validation.validate_model(model_of(config))


@pytest.mark.parametrize('key, known', [
    ('lrn_sum', 'window, banded'), ('pool_grad', 'xla, slices'),
    ('tower_conv', 'separate, grouped, block_diagonal')])
def test_validate_unknown_layer_form(key, known):
  config = full_config()
  config.model[key] = 'fused'
  with pytest.raises(UserError, match=f"model.{key} 'fused'; choose one of {known}"):
    validation.validate_model(model_of(config))


@pytest.mark.parametrize('key, known', [
    ('variant', 'two_tower, one_tower'), ('activation', 'relu, tanh'),
    ('lrn_convention', 'paper, caffe'), ('init', 'paper, he')])
def test_validate_unknown_choice_names_the_key_and_the_choices(key, known):
  config = full_config()
  config.model[key] = 'fused'
  with pytest.raises(UserError, match=f"Unknown model.{key} 'fused'; choose one of {known}"):
    validation.validate_model(model_of(config))


def test_validate_classes_any_positive_count():
  config = full_config()
  config.model.num_classes = 999  # Over two towers: 500 and 499 + 1 dead.
  validation.validate_model(model_of(config))
  assert model_of(config).dead_classes == 1
  config.model.num_classes = 0
  with pytest.raises(UserError, match='num_classes must be positive, got 0'):
    validation.validate_model(model_of(config))


# --- 8. Export ------------------------------------------------------------------


def test_export_full_size_shapes_and_count():
  # Zeros stand in for the init (NumPy allocates them lazily): export only
  # reshapes, and the full init would compile jax.random for every shape.
  graphdef, abstract = nnx.split(abstract_model(full_config()))
  state = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract)
  flat = model.export_params(nnx.merge(graphdef, state))
  assert {name: v.shape for name, v in flat.items()} == {
      'conv1/kernel': (11, 11, 3, 96), 'conv1/bias': (96,),
      'conv2/kernel': (5, 5, 48, 256), 'conv2/bias': (256,),
      'conv3/kernel': (3, 3, 256, 384), 'conv3/bias': (384,),
      'conv4/kernel': (3, 3, 192, 384), 'conv4/bias': (384,),
      'conv5/kernel': (3, 3, 192, 256), 'conv5/bias': (256,),
      'fc6/kernel': (9216, 4096), 'fc6/bias': (4096,),
      'fc7/kernel': (4096, 4096), 'fc7/bias': (4096,),
      'fc8/kernel': (4096, 1000), 'fc8/bias': (1000,),
  }
  assert sum(v.size for v in flat.values()) == 60_965_224


def test_export_values_tower_0_first(tiny):
  net = nnx.merge(tiny['graphdef'], tiny['state'])
  flat = model.export_params(net)
  for name in LAYERS:
    layer = getattr(net, name)
    for part in ('kernel', 'bias'):
      towers = np.asarray(getattr(layer, part)[...])
      exported = flat[f'{name}/{part}']
      assert type(exported) is np.ndarray, name
      assert exported.dtype == np.float32, name
      width = towers.shape[-1]
      np.testing.assert_array_equal(exported[..., :width], towers[0])
      np.testing.assert_array_equal(exported[..., width:], towers[1])


# --- 9. bfloat16 compute --------------------------------------------------------


def test_bfloat16_compute_keeps_float32_params(tiny):
  config = tiny['config'].copy_and_resolve_references()
  config.dtype = 'bfloat16'
  graphdef, state = nnx.split(abstract_model(config))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))

  def logits(graphdef):
    return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))

  f16 = logits(graphdef)
  assert 'bf16' in f16.lower(tiny['state'], tiny['images']).as_text()
  low = f16(tiny['state'], tiny['images'])
  high = logits(tiny['graphdef'])(tiny['state'], tiny['images'])
  assert low.dtype == jnp.float32
  assert np.all(np.isfinite(low))
  assert not np.array_equal(low, high)  # bfloat16 really was used.
  assert rel_err(low, high) < 0.05


def test_exported_weights_round_trip_through_npz_without_pickle(tmp_path):
  from configs import two_gpu
  config = two_gpu.get_config('tiny')
  source, target = (model.create(model_of(config), seed) for seed in (1, 2))
  path = tmp_path / 'weights.npz'
  np.savez(path, **model.export_params(source))
  with np.load(path, allow_pickle=False) as flat:
    model.import_params(target, dict(flat))
  x = jnp.ones((2, config.image_size, config.image_size, 3))
  np.testing.assert_array_equal(np.asarray(source(x)), np.asarray(target(x)))
  with pytest.raises(ValueError, match='does not fit'):
    model.import_params(target, {**model.export_params(source),
                                 'conv1/kernel': np.zeros((11, 11, 3, 7))})


def test_imported_weights_missing_odd_or_non_finite_are_refused_in_a_sentence():
  from configs import two_gpu
  config = two_gpu.get_config('tiny')
  source, target = (model.create(model_of(config), seed) for seed in (1, 2))
  good = model.export_params(source)
  shape = good['fc8/bias'].shape
  with pytest.raises(ValueError, match=re.escape(
      f'fc8/bias is missing: expected an array of shape {shape}, float32')):
    model.import_params(target, {k: v for k, v in good.items() if k != 'fc8/bias'})
  odd = np.empty(shape, dtype=object)
  with pytest.raises(ValueError, match='fc8/bias has dtype object.*float32'):
    model.import_params(target, {**good, 'fc8/bias': odd})
  nan = good['fc8/bias'].copy()
  nan[0] = np.nan
  with pytest.raises(ValueError, match='fc8/bias holds 1 NaN or Inf'):
    model.import_params(target, {**good, 'fc8/bias': nan})
  model.import_params(target, {**good, 'fc8/bias': nan}, allow_non_finite=True)
  assert np.isnan(np.asarray(target.fc8.bias[...])).sum() == 1


# --- 10. Convolution kernel gradients as one matrix product -----------------------


@pytest.mark.parametrize('stride, padding, dtype', [  # conv1's and conv2's.
    (4, 0, 'float32'), (1, 2, 'float32'), (1, 2, 'bfloat16')])
def test_conv_patches_kernel_gradient_equals_autodiff(stride, padding, dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 19, 19, 3)), dtype)
  k = jnp.asarray(rng.standard_normal((5, 5, 3, 4)), dtype)
  loss = lambda how: lambda x, k: jnp.sum(jnp.sin(
      convolution.conv(x, k, stride, padding, how).astype(jnp.float32)))
  want = jax.grad(loss('xla'), argnums=(0, 1))(x, k)
  got = jax.grad(loss('patches'), argnums=(0, 1))(x, k)
  for w, g in zip(want, got):
    assert g.dtype == w.dtype
    assert rel_err(g, w) <= (1e-6 if dtype == 'float32' else 1e-2)


# The one-device model (no mesh), and the two ways strategies place the
# convolutions on 2 devices: `towers` splits the towers, `data` the batch
# (`hybrid` and `fsdp` place them as `data` does).
PLACEMENTS = [None, 'towers', 'data']


def placed_loss_and_grads(tiny, config, strategy, check=lambda jaxpr, rules: None):
  """The loss and gradients of `config`'s model with tiny's parameters and
  batch, on one device (strategy None) or placed by `strategy` on 2 devices;
  `check(jaxpr, rules)` sees the traced step."""
  graphdef = nnx.graphdef(abstract_model(config))
  state, images, labels = tiny['state'], tiny['images'], tiny['labels']
  rules, mesh = None, None
  if strategy:
    config.strategy = strategy
    config.mesh.data, config.mesh.model = parallel.strategy_mesh_shape(
        strategy, 2, 2).values()
    settings = Settings.from_config(config)
    mesh, rules = parallel.make_mesh(settings.mesh), settings.rules
    state = jax.device_put(state, parallel.param_shardings(
        model.param_axes(state), rules, mesh))
    images, labels = jax.device_put((images, labels), parallel.batch_sharding(mesh, rules))

  def loss(state, images, labels):
    logits = nnx.merge(graphdef, state)(images, train=True, rng=tiny['rng'], rules=rules)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()

  with jax.set_mesh(mesh) if mesh else contextlib.nullcontext():
    traced = jax.jit(jax.value_and_grad(loss)).trace(state, images, labels)
    check(traced.jaxpr, rules)
    return traced.lower().compile()(state, images, labels)


@pytest.mark.parametrize('strategy', PLACEMENTS, ids=lambda s: s or 'one_device')
def test_patches_kernel_gradients_equal_autodiff_in_every_placement(
    tiny, single_device, strategy):
  """Under shard_map the rule's gradient is summed over the mesh axes the
  batch is split on, as autodiff sums it: the same gradients as autodiff on
  one device (a missing sum would be off by about half)."""
  config = tiny['config'].copy_and_resolve_references()
  config.conv_kernel_grad = 'patches'

  def check(jaxpr, rules):
    # The rule is in use: its loop over kernel rows, per convolution and tower.
    towers_here = 1 if rules and rules.tower else 2
    assert str(jaxpr).count('scan[') == 5 * towers_here

  got_loss, got = placed_loss_and_grads(tiny, config, strategy, check)
  ref_loss, _, ref_grads = single_device[True]
  assert rel_err(got_loss, ref_loss) <= 1e-6
  for (name, g), (_, ref) in zip(named_leaves(got), named_leaves(ref_grads)):
    assert rel_err(g, ref) <= (1e-6 if strategy is None else 1e-5), name


def test_auto_kernel_gradient_is_patches_on_cpu_and_xla_elsewhere(monkeypatch):
  assert convolution.resolve_kernel_grad('auto') == 'patches'  # Tests run on CPU.
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert convolution.resolve_kernel_grad('auto') == 'xla'
  assert convolution.resolve_kernel_grad('patches') == 'patches'


# --- 10b. Alternative forms of the same layers ------------------------------------

# Each form against the default on one device and split over 2 host devices:
# `towers` (one tower per device) for the per-tower layers, `data` (both
# towers on each device, the only placement where the towers' convolutions
# can merge) for `tower_conv`. The forms differ from the default in the
# order of float32 sums only.
FORMS = {
    'lrn_banded': ({'lrn_sum': 'banded'}, 'towers'),
    'pool_slices': ({'pool_grad': 'slices'}, 'towers'),
    'conv1_4_channels': ({'pad_conv1_channels': True}, 'towers'),
    'grouped': ({'tower_conv': 'grouped'}, 'data'),
    'block_diagonal': ({'tower_conv': 'block_diagonal'}, 'data'),
}


@pytest.mark.slow(seconds=20)
@pytest.mark.parametrize('form', list(FORMS))
def test_each_layer_form_gives_the_defaults_loss_and_gradients(tiny, single_device, form):
  overrides, split = FORMS[form]
  ref_loss, _, ref_grads = single_device[True]
  for strategy in (None, split):
    config = tiny['config'].copy_and_resolve_references()
    config.model.update(overrides)
    assert model_of(config) != model_of(tiny['config'])
    got_loss, got = placed_loss_and_grads(tiny, config, strategy)
    assert rel_err(got_loss, ref_loss) <= 1e-6, strategy
    for (name, g), (_, ref) in zip(named_leaves(got), named_leaves(ref_grads)):
      assert rel_err(g, ref) <= 1e-5, (strategy, name)


def test_grouped_tower_convolutions_are_one_convolution_per_layer():
  """With both towers on one device, `tower_conv` runs each conv layer once:
  conv2, conv4, conv5 grouped (feature_group_count=2), conv1 and conv3 with
  both towers' kernels side by side."""
  config = tiny_config(tower_conv='grouped')
  cfg = model_of(config)
  net = model.create(cfg)
  x = jnp.ones((1, cfg.image_size, cfg.image_size, 3))
  jaxpr = str(jax.make_jaxpr(lambda x: net(x))(x))
  assert jaxpr.count('conv_general_dilated[') == 5
  assert jaxpr.count('feature_group_count=2') == 3


@pytest.mark.parametrize('overlapping', [True, False])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_max_pool_slices_gradient_breaks_ties_as_xla(overlapping, dtype):
  """Small integers make most windows hold tied maxima: each window's
  gradient must reach the same input as select-and-scatter's (the first
  maximum, row-major), exactly."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 3, (2, 13, 13, 4)), dtype)
  dy = jnp.asarray(rng.standard_normal((2, 6, 6, 4)), dtype)  # 13 -> 6 either way.
  outs, grads = [], []
  for grad in layers.POOL_GRADS:
    y, vjp = jax.vjp(lambda x, grad=grad: layers.max_pool(x, overlapping, grad), x)
    outs.append(y)
    grads.append(vjp(dy)[0])
  np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(outs[1]))
  np.testing.assert_array_equal(np.asarray(grads[0], np.float32), np.asarray(grads[1], np.float32))


def test_lrn_banded_sum_equals_the_window_sum():
  x = jnp.asarray(30 * np.random.default_rng(0).standard_normal((2, 5, 5, 16)), jnp.float32)
  loss = lambda form: lambda x: jnp.sum(jnp.sin(layers.lrn(x, sum_form=form)))
  want, got = (jax.value_and_grad(loss(form))(x) for form in layers.LRN_SUMS)
  assert rel_err(got[0], want[0]) <= 1e-6
  assert rel_err(got[1], want[1]) <= 1e-6


# --- 11. The Python API as docs/api.md shows it -----------------------------------


def test_the_python_api_of_docs_runs():
  """The first code block of docs/api.md, run as it stands."""
  import re
  from pathlib import Path
  text = (Path(ROOT) / 'docs' / 'api.md').read_text()
  code = re.search(r'```python\n(.*?)```', text, re.S).group(1)
  scope = {}
  exec(compile(code, 'docs/api.md', 'exec'), scope)  # pylint: disable=exec-used
  assert set(scope['weights']) == {f'{l}/{p}' for l in LAYERS for p in ('kernel', 'bias')}
