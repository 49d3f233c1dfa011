"""Strategies as rules tables, the optimiser of Sec. 5, networks as tables.

Every strategy must compute the same function as one device (the reference),
and the 2014 hybrid must compile to the collectives Krizhevsky's "One weird
trick" describes. Tiny config; 16 classes so that every strategy can split
the logits over two towers and up to four devices, and 7 on two devices
for classes that do not divide over the towers.
"""

import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.core import model
from alexnet_jax.core import network
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core import steps
from alexnet_jax.core import train_state
from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.run import validation
from alexnet_jax.run.settings import Settings
from alexnet_jax.tools import placement
from configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 3


def tiny_config(strategy='data', data=1, model_axis=1, **model_overrides):
  config = default.get_config('tiny')
  config.model.num_classes = 16
  config.model.dropout_rate = 0.0  # Same function; dropout masks are tested apart.
  config.model.update(model_overrides)
  config.strategy = strategy
  config.mesh.data, config.mesh.model = data, model_axis
  return config


def tiny(strategy='data', data=1, model_axis=1, **model_overrides) -> Settings:
  return Settings.from_config(tiny_config(strategy, data, model_axis, **model_overrides))


def losses_per_strategy(strategies, num_devices, **model_overrides):
  """Train losses of STEPS steps, and the final params, per strategy and on one
  device; every run starts from the same numbers, placed by its rules."""
  reference = tiny(**model_overrides)
  one = parallel.make_mesh(reference.mesh)
  graphdef, state = train_state.create_train_state(
      reference.model, reference.optimizer, reference.seed, reference.rules, one)
  host_state = jax.device_get(state)
  rng = np.random.default_rng(0)
  batches = [{'image': rng.standard_normal((8, 67, 67, 3), np.float32),
              'label': rng.integers(0, reference.model.num_classes, 8, dtype=np.int32)}
             for _ in range(STEPS)]
  out = {}
  for name in ('one_device', *strategies):
    if name == 'one_device':
      config = reference
    else:
      shape = parallel.strategy_mesh_shape(name, num_devices, 2)
      config = tiny(name, shape['data'], shape['model'], **model_overrides)
    validation.validate(config, num_devices=num_devices)
    mesh = parallel.make_mesh(config.mesh)
    shardings = train_state.state_shardings(host_state, config.optimizer,
                                            config.rules, mesh)
    state = jax.device_put(host_state, shardings)
    train_step = steps.make_train_step(
        graphdef, config.optimizer, config.rules,
        optim.learning_rate_fn(config.optimizer, 1, STEPS), shardings)
    losses = []
    with jax.set_mesh(mesh):
      for batch in batches:
        state, metrics = train_step(state, steps.device_batch(batch, mesh, config.rules))
        losses.append(float(metrics['train_loss']))
    out[name] = losses, jax.device_get(state.params)
  return out


def assert_same_function(results):
  ref_losses, ref_params = results.pop('one_device')
  for name, (losses, params) in results.items():
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
  assert ref_losses[-1] != ref_losses[0]  # The steps did train.


@pytest.mark.slow(seconds=20)
def test_every_strategy_equals_one_device_on_two_devices():
  """With 7 classes, which do not divide over the towers: tower 0 computes 4
  logits, tower 1 3 and a dead one, zero from the start, cut off before the
  softmax and so never trained (network.ModelConfig.dead_classes)."""
  results = losses_per_strategy(list(parallel.STRATEGIES), 2, num_classes=7)
  fc8 = results['one_device'][1]['fc8']
  assert fc8['kernel'].shape[-1] == 4
  assert not np.any(fc8['kernel'][1, :, -1]) and fc8['bias'][1, -1] == 0  # Still dead.
  assert_same_function(results)


@pytest.mark.slow(seconds=15)
def test_every_strategy_equals_one_device_on_four_devices():
  """Four host devices need a fresh JAX: a subprocess. The two strategies
  that use both mesh axes or split fc units four ways (towers: data=2 x
  model=2; hybrid: data=4); data and fsdp add nothing new at four."""
  script = textwrap.dedent('''
      from tests.core.test_strategies import losses_per_strategy, assert_same_function
      assert_same_function(losses_per_strategy(['towers', 'hybrid'], 4))
      print('OK')
  ''')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


@pytest.mark.slow(seconds=10)
def test_hybrid_splits_units_that_do_not_divide_as_one_device():
  """CIFAR-10's 10 classes: fc8 has 5 per tower over 2 devices; and 97 units
  per tower in fc6 and fc7, with dropout. The dead units that pad each layer
  to an equal share change nothing, and the dropout masks are one device's."""
  assert_same_function(losses_per_strategy(
      ['hybrid'], 2, num_classes=10, width=97 / 2048, dropout_rate=0.5))


def test_classes_that_do_not_divide_are_saved_and_counted_without_the_dead_one():
  net = model.create(tiny(num_classes=7).model)
  flat = model.export_params(net)
  assert flat['fc8/kernel'].shape[-1] == flat['fc8/bias'].shape[-1] == 7
  assert model.count_params(net) == sum(v.size for v in flat.values())
  fresh = model.create(tiny(num_classes=7).model, seed=1)
  model.import_params(fresh, flat)
  images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 67, 67, 3), np.float32))
  assert fresh(images).shape == (2, 7)
  np.testing.assert_array_equal(fresh(images), net(images))
  inputs = flat['fc8/kernel'].shape[0]
  with pytest.raises(ValueError, match=r'of 4 along the last axis, the last 1 of them dead'):
    model.import_params(fresh, {**flat, 'fc8/kernel': np.zeros((inputs, 8))})


def test_hybrid_compiles_to_the_collectives_of_one_weird_trick():
  config = tiny('hybrid', data=2)
  found = placement.train_step_collectives(config, parallel.make_mesh(config.mesh))
  kinds = {(c.crossing, c.direction, c.kind, c.axis) for c in found}
  # Convolutions data parallel: the batch of activations is gathered before
  # fc6 (and its gradient scattered back), fc units computed per device and
  # gathered for the next layer and the softmax.
  assert ('fc6', 'forward', 'all-gather', 'data') in kinds
  assert ('fc6', 'backward', 'reduce-scatter', 'data') in kinds
  fc6 = next(c for c in found if c.crossing == 'fc6' and not c.backward)
  assert fc6.shape[0] == config.data.batch_size  # The whole batch after it.
  # Gradients summed over `data`: the conv weights', nothing of the fc layers.
  grads = [c for c in found if c.crossing == 'gradients' and c.kind == 'all-reduce']
  net = model.create(config.model)
  conv_params = sum(math.prod(x.shape) for layer in network.NETWORKS['two_tower'].layers
                    if not layer.dense
                    for x in jax.tree.leaves(getattr(net, layer.name)))
  assert sum(c.bytes for c in grads) == 4 * conv_params
  # And nothing else: no model axis, no resharding, no other crossing.
  allowed = {
      *((x, d, k, 'data') for x in ('fc6', 'fc7', 'fc8')
        for d, k in (('forward', 'all-gather'), ('backward', 'reduce-scatter'))),
      ('softmax', 'forward', 'all-gather', 'data'),
      ('gradients', 'backward', 'all-reduce', 'data'),
      ('gradients', 'backward', 'all-gather', 'data'),  # d loss / d logits, rows.
      ('loss/metrics', 'forward', 'all-reduce', 'data'),
  }
  assert kinds <= allowed, kinds - allowed


def test_fsdp_gathers_fc_weights_and_scatters_their_gradients():
  config = tiny('fsdp', data=2)
  found = placement.train_step_collectives(config, parallel.make_mesh(config.mesh))
  kinds = {(c.crossing, c.direction, c.kind) for c in found}
  for name in ('fc6', 'fc7', 'fc8'):
    assert (f'{name}_weights', 'forward', 'all-gather') in kinds
    assert (f'{name}_weights', 'backward', 'reduce-scatter') in kinds


def test_strategy_is_data_not_code():
  """A new table is a new strategy: a custom rules string equals `towers`."""
  config = tiny_config('towers', data=1, model_axis=2)
  config.sharding_rules = 'batch=data,tower=model,fc_batch=data,fc_units=,fc_in='
  assert Settings.from_config(config).rules == parallel.STRATEGIES['towers']


@pytest.mark.parametrize('overrides, words', [
    ({'sharding_rules': 'batch=rows,tower=model,fc_batch=data,fc_units=,fc_in='},
     ["'rows'", 'does not exist']),
    ({'sharding_rules': 'batch=data,tower=model'}, ['no rule covers', 'fc_units']),
    ({'sharding_rules': 'batch=data,tower=model,fc_batch=data,fc_units=,fc_in=,'
                        'heads=model'}, ['unknown logical axes', 'heads']),
    ({'strategy': 'pipeline'}, ['Unknown strategy', 'hybrid']),
    ({'strategy': 'hybrid'}, ["'model'", 'splits nothing', 'mesh.model=1']),
])
def test_bad_rules_are_one_paragraph(overrides, words):
  config = tiny_config('towers', data=1, model_axis=2)
  for key, value in overrides.items():
    setattr(config, key, value)
  with pytest.raises(UserError) as error:
    validation.validate(Settings.from_config(config), num_devices=2)
  for word in words:
    assert word in str(error.value), str(error.value)


def test_single_tower_on_a_model_axis_of_two_is_refused():
  config = tiny_config('towers', data=1, model_axis=2)
  config.model.variant = 'one_tower'
  with pytest.raises(UserError, match='mesh.model must equal the 1 tower'):
    validation.validate(Settings.from_config(config), num_devices=2)


def test_a_network_defined_only_by_a_table_trains(tmp_path, monkeypatch):
  """Three rows, not five convolutions and three dense layers, split in two."""
  from alexnet_jax.run import loop
  table = network.Network(2, (
      network.Layer('conv1', 16, 7, stride=3, lrn=True, pool=True),
      network.Layer('conv2', 16, 3, padding=1, reads_both=True, pool=True),
      network.Layer('fc3', 0, reads_both=True),
  ))
  monkeypatch.setitem(network.NETWORKS, 'three_layer', table)
  config = default.get_config('tiny')
  config.model.variant = 'three_layer'
  config.strategy, config.mesh.model = 'towers', 2
  settings = Settings.from_config(config)
  validation.validate(settings, num_devices=2)
  shapes = model.layer_shapes(settings.model)
  assert list(shapes) == ['conv1', 'pool1', 'conv2', 'pool2', 'fc3']
  assert shapes['fc3'] == (5,)  # 10 classes over two towers.
  summary = loop.train_and_evaluate(settings, str(tmp_path / 'w'))
  assert summary['steps'] == 4 and summary['mesh'] == {'data': 1, 'model': 2}
  saved = checkpoint.load_numpy(tmp_path / 'w' / 'checkpoints' / '4')
  assert jax.tree.leaves(saved['params']['conv2']['kernel'])[0].shape == (2, 3, 3, 2, 1)  # Width 1/16: one kernel per tower.


# --- The optimiser of Sec. 5 -----------------------------------------------------


def test_update_rule_is_the_papers_with_decay_on_kernels_only():
  opt = tiny().optimizer
  lr_fn = optim.learning_rate_fn(opt, 1, 10)
  tx = optim.optimizer(opt, lr_fn)
  params = {'conv1': {'kernel': jnp.full((2, 3), 2.0), 'bias': jnp.full((2,), 2.0)}}
  grads = {'conv1': {'kernel': jnp.full((2, 3), 0.5), 'bias': jnp.full((2,), 0.5)}}
  state = tx.init(params)
  lr, wd, mu = 0.01, 5e-4, 0.9
  v = {'kernel': -lr * (0.5 + wd * 2.0), 'bias': -lr * 0.5}  # Sec. 5, step 1.
  updates, state = tx.update(grads, state, params, loss=jnp.float32(1.0))
  for part in ('kernel', 'bias'):
    np.testing.assert_allclose(updates['conv1'][part], v[part], rtol=1e-6)
  v = {k: mu * x - lr * (0.5 + (wd * 2.0 if k == 'kernel' else 0.0))
       for k, x in v.items()}  # Step 2, same w and gradient.
  updates, state = tx.update(grads, state, params, loss=jnp.float32(1.0))
  for part in ('kernel', 'bias'):
    np.testing.assert_allclose(updates['conv1'][part], v[part], rtol=1e-6)
  # A NaN loss applies nothing and keeps v.
  skipped, kept = tx.update(grads, state, params, loss=jnp.float32(np.nan))
  assert all(np.all(x == 0) for x in jax.tree.leaves(skipped))
  np.testing.assert_array_equal(kept.inner_state[3].trace['conv1']['kernel'],
                                state.inner_state[3].trace['conv1']['kernel'])


def test_plateau_divides_the_rate_by_ten_at_most_three_times():
  config = tiny_config()
  config.optimizer.plateau_patience = 1
  opt = Settings.from_config(config).optimizer
  opt_state = optim.optimizer(opt, lambda s: 0.01).init({})
  scales = []
  for top1 in (0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7):
    opt_state = optim.plateau_update(opt, opt_state, top1)
    scales.append(float(optim.learning_rate(lambda s: 1.0, 0, opt_state)))
  # Improvements keep the rate; each evaluation without one divides it.
  np.testing.assert_allclose(
      scales, [1, 1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001, 0.001], rtol=1e-5)


def test_checkpoints_of_the_old_state_format_are_refused(tmp_path, monkeypatch):
  config = tiny()
  mesh = parallel.make_mesh(config.mesh)
  _, state = train_state.create_train_state(
      config.model, config.optimizer, config.seed, config.rules, mesh)
  signature = checkpoint.param_signature(state.params)
  monkeypatch.setattr(checkpoint, 'FORMAT', 1)
  saver = checkpoint.Checkpointer(tmp_path, keep=2)
  saver.save(1, state, signature)
  saver.close()
  monkeypatch.setattr(checkpoint, 'FORMAT', 2)
  reader = checkpoint.Checkpointer(tmp_path, keep=2)
  with pytest.raises(UserError, match='earlier version of alexnet_jax'):
    reader.restore_latest(train_state.sharded_abstract_state(
        config.model, config.optimizer, config.rules, mesh), signature)
  assert (tmp_path / 'checkpoints' / '1').exists()  # Left untouched.
