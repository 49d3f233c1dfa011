"""AlexNet as in Krizhevsky, Sutskever and Hinton (NIPS 2012), Fig. 2 and Sec. 3.

Any network of `network.NETWORKS`, built and run from its table: every layer
is split into towers stacked on the leading axis of its parameters (conv1's
kernel is (2, 11, 11, 3, 48), tower 0 first). Each tower reads its own half
of the previous layer, except where the table says `reads_both` (conv3, fc6,
fc7, fc8 in Fig. 2): there the towers exchange activations
(`towers.exchange`, parallel.py). Shapes in the comments are per tower.

The paper says 224x224 inputs, but conv1's 55 = (227 - 11) / 4 + 1 only
holds for 227 (Caffe and cuda-convnet use 227, or 224 with padding).
"""

from collections.abc import Callable
import dataclasses
import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.core import convolution
from alexnet_jax.core import layers
from alexnet_jax.core import parallel
from alexnet_jax.core.network import ACTIVATIONS, DTYPES, Layer, ModelConfig

# XLA's RngBitGenerator: as deterministic as threefry for a given backend and
# placement, and its samplers compile ~10x faster on CPU (threefry's normal
# took ~1 s per parameter shape), which dominates start-up at small sizes.
PRNG_IMPL = 'rbg'
INIT_STDDEV = 0.01  # Sec. 5: weights N(0, 0.01).


def prng_key(seed: int) -> jax.Array:
  return jax.random.key(seed, impl=PRNG_IMPL)


def _layer_op(layer: Layer, x: jax.Array, kernel: jax.Array, bias: jax.Array,
              conv_kernel_grad: str = 'auto', pad_inputs: int = 0,
              groups: int = 1) -> jax.Array:
  """conv (NHWC, HWIO) or matrix product, plus bias: one tower of one layer
  (or `groups` towers side by side, `TowerLayer.all_towers`)."""
  if layer.dense:
    return x @ kernel + bias
  if pad_inputs:  # Zero channels times zero kernels: the same sums.
    x = jnp.pad(x, ((0, 0),) * 3 + ((0, pad_inputs),))
    kernel = jnp.pad(kernel, ((0, 0),) * 2 + ((0, pad_inputs), (0, 0)))
  # Default: two plain half-width convolutions, not one grouped convolution
  # (feature_group_count=2): on CPU the grouped form ran ~3x slower.
  return convolution.conv(x, kernel, layer.stride, layer.padding,
                          conv_kernel_grad, groups) + bias


def _block_diagonal(kernels) -> jax.Array:
  """(kh, kw, n*C, n*O): tower i's inputs reach only tower i's outputs."""
  return jnp.concatenate([jnp.concatenate(
      [k if j == i else jnp.zeros_like(k) for j in range(len(kernels))], axis=-1)
                          for i, k in enumerate(kernels)], axis=2)


class TowerLayer(nnx.Module):
  """One row of the table, split into towers: kernel (towers, [kh, kw,] in, out)."""

  def __init__(self, layer: Layer, towers: int, in_features: int,
               out_features: int, *, bias: float, std: float, rngs: nnx.Rngs,
               conv_kernel_grad: str = 'auto', pad_inputs: int = 0):
    shape = (() if layer.dense else (layer.kernel, layer.kernel)) + (in_features, out_features)
    self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), (towers, *shape)))
    self.bias = nnx.Param(jnp.full((towers, out_features), bias, jnp.float32))
    self.layer = layer
    self.units = out_features
    self.conv_kernel_grad = conv_kernel_grad
    self.pad_inputs = pad_inputs  # Zero input channels added (model.pad_conv1_channels).

  def _weights(self, tower: int, towers: parallel.Towers, dtype, inputs: int = 0):
    kernel, bias = self.kernel[tower], self.bias[tower]
    if self.layer.dense:  # FSDP stores fc kernels split over their inputs.
      kernel = towers.gather_weights(kernel, self.layer.name, inputs)
      kernel, bias = towers.unit_share(kernel, bias, self.units)  # Hybrid.
    return kernel.astype(dtype), bias.astype(dtype)

  def __call__(self, x: jax.Array, tower: int, towers: parallel.Towers, dtype) -> jax.Array:
    return _layer_op(self.layer, x.astype(dtype), *self._weights(tower, towers, dtype, x.shape[-1]),
                     self.conv_kernel_grad, self.pad_inputs)

  def all_towers(self, hs, local, towers: parallel.Towers, dtype, form: str) -> list[jax.Array]:
    """Every local tower of a convolution as one convolution (`form`:
    network.TOWER_CONVS), split back into towers; the same function as one
    `__call__` per tower. Towers that read the same array (the image, or
    both towers after an exchange, Fig. 2) share it: their kernels side by
    side. Towers that read their own halves (conv2, conv4, conv5) read the
    halves side by side, through groups or block-diagonal kernels, so no
    tower sees the other's channels.
    """
    kernels, biases = zip(*(self._weights(i, towers, dtype) for i in local))
    n, groups = len(hs), 1
    if all(h is hs[0] for h in hs):
      x, kernel = hs[0], jnp.concatenate(kernels, axis=-1)
    elif form == 'grouped':
      x, kernel, groups = jnp.concatenate(hs, axis=-1), jnp.concatenate(kernels, axis=-1), n
    else:
      x, kernel = jnp.concatenate(hs, axis=-1), _block_diagonal(kernels)
    y = _layer_op(self.layer, x.astype(dtype), kernel, jnp.concatenate(biases),
                  self.conv_kernel_grad, self.pad_inputs, groups)
    return jnp.split(y, n, axis=-1)


class AlexNet(nnx.Module):
  """Any network of NETWORKS, split over devices or not.

  Call it inside `jax.set_mesh(mesh)` to run it as the strategy's `rules`
  place it (default: one tower per device on a `model` axis of 2); outside
  a mesh it runs every tower on each device, with the same result.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    net = cfg.network
    in_shapes = input_shapes(cfg)
    for layer in net.layers:
      in_features = in_shapes[layer.name][-1]  # After its exchange (and flattening).
      fan_in = in_features * (1 if layer.dense else layer.kernel ** 2)
      he = cfg.init == 'he' and layer is not net.layers[-1]  # The logits keep N(0, 0.01).
      pad = cfg.pad_conv1_channels and layer is net.layers[0] and in_features == 3
      setattr(self, layer.name, TowerLayer(
          layer, net.towers, in_features, cfg.features(layer),
          bias=1.0 if cfg.init == 'paper' and layer.bias_one else 0.0,
          std=math.sqrt(2.0 / fan_in) if he else INIT_STDDEV, rngs=rngs,
          conv_kernel_grad=cfg.conv_kernel_grad, pad_inputs=int(pad)))
    if cfg.dead_classes:  # network.ModelConfig.dead_classes: zero, and kept so.
      logits = getattr(self, net.layers[-1].name)
      for part in (logits.kernel, logits.bias):
        part[...] = part[...].at[-1, ..., -cfg.dead_classes:].set(0.0)

  def __call__(self, images: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None,
               rules: parallel.Rules | None = None) -> jax.Array:
    """(B, S, S, 3) images -> (B, num_classes) float32 logits."""
    if train and self.cfg.dropout_rate > 0 and rng is None:
      raise ValueError('Training with dropout needs an `rng` key.')
    rng = prng_key(0) if rng is None else rng
    graphdef, params = nnx.split(self)

    def towers_fn(params, images, rng, towers):
      return nnx.merge(graphdef, params).forward(images, towers, train=train, rng=rng)

    return parallel.run_towers(towers_fn, params, param_axes(params), images,
                               rng, self.cfg.network.towers, rules)

  def forward(self, x: jax.Array, towers: parallel.Towers, *, train: bool,
              rng: jax.Array, record: Callable[[str, jax.Array], None] | None = None,
              ) -> jax.Array:
    """The towers in `towers.ids`; this module holds exactly their parameters."""
    return _forward(self.cfg, lambda name: getattr(self, name), x, towers,
                    train=train, rng=rng, record=record)


def _forward(cfg: ModelConfig, module, x, towers, *, train, rng, record=None):
  """The table, row by row: exchange where it says, then op, ReLU, LRN, pool, dropout.

  `module(name)(h, i, towers, dtype)` applies one tower of a layer;
  `record(name, h)` sees tower 0's output of each layer and pool.
  """
  dtype = DTYPES[cfg.dtype]
  act = ACTIVATIONS[cfg.activation]
  local = range(len(towers.ids))
  record = record or (lambda name, h: None)
  table = cfg.network.layers
  hs = [x.astype(dtype)] * len(local)  # Every tower reads the image.
  units = None  # Per tower, of the fully connected layer before.
  for index, layer in enumerate(table):
    if layer.dense and hs[0].ndim > 2:  # Entering the fully connected part.
      hs = towers.enter_dense(hs, layer.name)
    hs = towers.exchange(hs, layer.name, both=layer.reads_both, units=units)
    units = cfg.features(layer)
    hs = [h.reshape(h.shape[0], -1) if layer.dense else h for h in hs]
    if cfg.tower_conv != 'separate' and len(local) > 1 and not layer.dense:
      hs = module(layer.name).all_towers(hs, local, towers, dtype, cfg.tower_conv)
    else:
      hs = [module(layer.name)(h, i, towers, dtype) for h, i in zip(hs, local)]
    if layer is table[-1]:
      record(layer.name, hs[0])
      break
    hs = [act(h) for h in hs]
    if layer.lrn and cfg.lrn:
      hs = [layers.lrn(h, convention=cfg.lrn_convention, sum_form=cfg.lrn_sum) for h in hs]
    if layer.pool:
      record(layer.name, hs[0])
      hs = [layers.max_pool(h, cfg.overlapping_pool, cfg.pool_grad) for h in hs]
    if layer.dropout and train and cfg.dropout_rate > 0:
      hs = [layers.dropout(h, cfg.dropout_rate, towers.dropout_keep(
          rng, index, i, h.shape, cfg.dropout_rate, units)) for h, i in zip(hs, local)]
    record(f'pool{layer.name.removeprefix("conv")}' if layer.pool else layer.name, hs[0])
  logits = towers.exchange_logits(hs, units)[:, :cfg.num_classes]  # Dead ones cut.
  return logits.astype(jnp.float32)  # Softmax over all classes.


def _trace(cfg: ModelConfig):
  """(what each layer's op reads, what each layer and pool gives), per tower,
  batch 1: the table's forward pass traced with zero kernels, never run.
  Every form of a layer has the same shapes: the plain ones are traced."""
  return _traced(dataclasses.replace(cfg, tower_conv='separate'), cfg.network)


@functools.lru_cache(maxsize=256)  # Keyed by the table too: a test may add one.
def _traced(cfg: ModelConfig, network):
  table = {l.name: l for l in network.layers}
  inputs, outputs = {}, {}

  def module(name):
    def apply(h, i, towers, dtype):
      inputs[name] = h.shape
      layer = table[name]
      size = (() if layer.dense else (layer.kernel,) * 2) + (h.shape[-1], cfg.features(layer))
      return _layer_op(layer, h, jnp.zeros(size, dtype), jnp.zeros(size[-1:], dtype))
    return apply

  towers = parallel.Towers(ids=list(range(cfg.network.towers)))
  x = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
  jax.eval_shape(lambda x: _forward(
      cfg, module, x, towers, train=False, rng=prng_key(0),
      record=lambda name, h: outputs.__setitem__(name, h.shape[1:])), x)
  return inputs, outputs


def input_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """What each layer's op reads, per tower (after its exchange), batch 1."""
  return dict(_trace(cfg)[0])


def layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Output shape per tower of every layer and pool, without the batch."""
  return dict(_trace(cfg)[1])


def path_names(path) -> list[str]:
  """('conv1', 'kernel') from a parameter's pytree path (nnx adds `.value`)."""
  return [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]


def param_axes(params) -> object:
  """The logical axes of every parameter; parallel.py maps them onto the mesh.

  Every leading axis is the tower. Fully connected kernels also name their
  inputs (`fc_in`, FSDP stores them split) and outputs (`fc_units`, the 2014
  hybrid computes them split); convolutions are never split inside a tower.
  """
  def axes(path, x):
    layer, part = path_names(path)[:2]
    dense = params[layer]['kernel'].ndim == 3
    if part == 'kernel':
      return parallel.Logical(('tower', 'fc_in', 'fc_units') if dense
                              else ('tower',) + (None,) * (x.ndim - 1), x.shape)
    return parallel.Logical(('tower', 'fc_units') if dense else ('tower', None),
                            x.shape)
  return jax.tree_util.tree_map_with_path(axes, params)


def create(cfg: ModelConfig, seed: int = 0) -> AlexNet:
  """Builds and initialises the model on the default device."""
  return AlexNet(cfg, rngs=nnx.Rngs(prng_key(seed)))


def graphdef(cfg: ModelConfig) -> nnx.GraphDef:
  """The model's structure, with nothing computed. The compute dtype and the
  kernel gradient live in the modules: each setting has its own graphdef."""
  return nnx.graphdef(nnx.eval_shape(lambda: create(cfg)))


def export_params(model: AlexNet) -> dict[str, np.ndarray]:
  """Flat numpy weights, `conv1/kernel` ... `fc8/bias`, towers merged.

  Layout: conv kernels HWIO (kh, kw, in per tower, out), dense kernels
  (in, out), biases (out,). Each layer's towers are concatenated along the
  output axis, tower 0 first, as Caffe's `group: 2` stores them. A layer that
  reads one tower has `in` = that tower's channels (grouped convolution);
  fc6's rows are (h, w, c) with c running over tower 0's channels, then
  tower 1's.
  """
  flat = {}
  for layer in model.cfg.network.layers:
    for part in ('kernel', 'bias'):
      value = np.asarray(getattr(getattr(model, layer.name), part)[...])
      whole = np.concatenate(list(value), axis=-1)
      flat[f'{layer.name}/{part}'] = whole[..., :_units(model.cfg, layer)]
  return flat


def _units(cfg: ModelConfig, layer: Layer) -> int:
  """A layer's outputs over all towers, dead classes left out."""
  return cfg.features(layer) * cfg.network.towers - (
      cfg.dead_classes if layer is cfg.network.layers[-1] else 0)


def import_params(model: AlexNet, flat: dict[str, np.ndarray],
                  allow_non_finite: bool = False) -> None:
  """Loads `export_params`' layout into `model` in place (towers split again).

  Read `.npz` files with `np.load(path, allow_pickle=False)`: weights are
  plain arrays, and nothing in them is executed. Raises ValueError, one
  sentence naming the key, its expected shape and dtype, on a missing key,
  a shape that does not fit, a non-numeric dtype (object arrays) or a NaN
  or Inf (unless `allow_non_finite`). Checks every key before changing any.
  """
  values = {}
  for layer in model.cfg.network.layers:
    for part in ('kernel', 'bias'):
      key = f'{layer.name}/{part}'
      towers, *shape, out = getattr(getattr(model, layer.name), part)[...].shape
      units = _units(model.cfg, layer)
      expected = f'an array of shape {(*shape, units)}, float32'
      if key not in flat:
        raise ValueError(f'{key} is missing: expected {expected}.')
      raw = np.asarray(flat[key])
      if not (np.issubdtype(raw.dtype, np.floating)
              or np.issubdtype(raw.dtype, np.integer)):
        raise ValueError(f'{key} has dtype {raw.dtype}: expected {expected}.')
      value = raw.astype(np.float32)
      if value.shape != (*shape, units):
        raise ValueError(
            f'{key} has shape {value.shape}, which does not fit'
            f' this model (expects {(*shape, units)}: {towers} tower(s)'
            f' of {out} along the last axis{_dead_note(towers * out - units)}).')
      bad = int(np.sum(~np.isfinite(value)))
      if bad and not allow_non_finite:
        raise ValueError(
            f'{key} holds {bad} NaN or Inf values: expected {expected} of'
            ' finite values (pass allow_non_finite=True to load them anyway).')
      value = np.pad(value, [(0, 0)] * len(shape) + [(0, towers * out - units)])
      values[layer.name, part] = np.stack(np.split(value, towers, axis=-1))
  for (name, part), value in values.items():
    getattr(getattr(model, name), part)[...] = jnp.asarray(value)


def _dead_note(dead: int) -> str:
  return f', the last {dead} of them dead' if dead else ''


def count_params(model: AlexNet) -> int:
  """The trained parameters: dead classes (ModelConfig.dead_classes) not counted."""
  total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  fc8 = getattr(model, model.cfg.network.layers[-1].name)
  return total - model.cfg.dead_classes * (fc8.kernel[...].shape[-2] + 1)
