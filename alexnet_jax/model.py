"""AlexNet as in Krizhevsky, Sutskever and Hinton (NIPS 2012), Fig. 2 and Sec. 3.

Every layer is two halves, "towers", stacked on the leading axis of its
parameters: conv1's kernel is (2, 11, 11, 3, 48), tower 0 first. Each tower
reads its own half of the previous layer, except conv3, fc6, fc7 and fc8,
which read both (`towers.exchange`, see parallel.py). Shapes below are for
the paper's 227x227 input, per tower, batch B:

  image                                    (B, 227, 227, 3), both towers
  conv1 11x11/4, 48, ReLU, LRN, pool 3/2   (B, 27, 27, 48)
  conv2 5x5 pad 2, 128, ReLU, LRN, pool    (B, 13, 13, 128)    own tower
  conv3 3x3 pad 1, 192, ReLU               (B, 13, 13, 192)    BOTH towers
  conv4 3x3 pad 1, 192, ReLU               (B, 13, 13, 192)    own tower
  conv5 3x3 pad 1, 128, ReLU, pool 3/2     (B, 6, 6, 128)      own tower
  fc6 2048, ReLU, dropout                  (B, 2048)           BOTH (9216 in)
  fc7 2048, ReLU, dropout                  (B, 2048)           BOTH
  fc8 500                                  (B, 500)            BOTH; softmax over 1000

The paper says 224x224 inputs, but conv1's 55 = (227 - 11) / 4 + 1 only
holds for 227 (Caffe and cuda-convnet use 227, or 224 with padding).
"""

from collections.abc import Callable
import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import parallel
from alexnet_jax.errors import UserError

LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')
# Layers that read both towers (Fig. 2); the others read their own tower.
READS_BOTH_TOWERS = ('conv3', 'fc6', 'fc7', 'fc8')


@dataclasses.dataclass(frozen=True)
class Variant:
  towers: int
  conv: tuple[int, int, int, int, int]  # Kernels per tower, conv1..conv5.
  fc: tuple[int, int]  # Units per tower, fc6, fc7.
  conv1_padding: int = 0


VARIANTS = {
    # Fig. 2: 60,965,224 parameters, like Caffe's bvlc_alexnet with group: 2.
    'two_tower': Variant(towers=2, conv=(48, 128, 192, 192, 128), fc=(2048, 2048)),
    # Sec. 3.2, footnote 2: the one-GPU net has half the kernels in conv1..conv4
    # but keeps conv5 and the fully connected layers at full size.
    'one_tower': Variant(towers=1, conv=(48, 128, 192, 192, 256), fc=(4096, 4096)),
    # torchvision's alexnet (Krizhevsky 2014, "One weird trick"): one tower,
    # conv1 padded by 2 so 224 inputs give 55x55. Its adaptive 6x6 average
    # pool is the identity at 224 and is left out; its dropout sits before
    # fc6/fc7 rather than after (not modelled).
    'owt': Variant(towers=1, conv=(64, 192, 384, 256, 256), fc=(4096, 4096),
                   conv1_padding=2),
}

# XLA's RngBitGenerator: as deterministic as threefry for a given backend and
# placement, and its samplers compile ~10x faster on CPU (threefry's normal
# took ~1 s per parameter shape), which dominates start-up at small sizes.
PRNG_IMPL = 'rbg'


def prng_key(seed: int) -> jax.Array:
  return jax.random.key(seed, impl=PRNG_IMPL)


# Sec. 3.3: k=2, n=5, alpha=1e-4, beta=0.75.
LRN_K, LRN_N, LRN_ALPHA, LRN_BETA = 2.0, 5, 1e-4, 0.75
# Sec. 5: biases 1 in conv2, conv4, conv5, fc6 and fc7 (to give ReLUs positive
# input early on), 0 elsewhere; weights N(0, 0.01).
BIAS_ONE = ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')
INIT_STDDEV = 0.01


def lrn(x: jax.Array, *, n: int = LRN_N, k: float = LRN_K,
        alpha: float = LRN_ALPHA, beta: float = LRN_BETA,
        convention: str = 'paper') -> jax.Array:
  """Local response normalisation across channels (Sec. 3.3).

  b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, over the
  channels of one tower. 'paper' uses alpha as written (as does TensorFlow's
  local_response_normalization with depth_radius=n//2); 'caffe' divides alpha
  by n (Caffe, cuda-convnet's "scale" and PyTorch).
  """
  if convention == 'caffe':
    alpha = alpha / n
  sq = jnp.square(x.astype(jnp.float32))
  half = n // 2
  window_sum = jax.lax.reduce_window(
      sq, 0.0, jax.lax.add, (1,) * (x.ndim - 1) + (n,), (1,) * x.ndim,
      [(0, 0)] * (x.ndim - 1) + [(half, half)])
  return (x / jnp.power(k + alpha * window_sum, beta).astype(x.dtype))


def max_pool(x: jax.Array, overlapping: bool) -> jax.Array:
  """Sec. 3.4: overlapping 3x3 windows with stride 2; else plain 2x2/2."""
  size = 3 if overlapping else 2
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1),
                               (1, 2, 2, 1), 'VALID')


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
  return (size + 2 * pad - kernel) // stride + 1


def spatial_sizes(config) -> dict[str, int]:
  """Side length after each stage, from the layer arithmetic alone."""
  variant = VARIANTS[config.model.variant]
  pool = (3, 2) if config.model.overlapping_pool else (2, 2)
  s = {}
  s['conv1'] = _conv_out(config.image_size, 11, 4, variant.conv1_padding)
  s['pool1'] = _conv_out(s['conv1'], *pool, 0)
  s['conv2'] = s['pool1']  # 5x5, pad 2.
  s['pool2'] = _conv_out(s['conv2'], *pool, 0)
  s['conv3'] = s['conv4'] = s['conv5'] = s['pool2']  # 3x3, pad 1.
  s['pool5'] = _conv_out(s['conv5'], *pool, 0)
  return s


def smallest_image_size(config) -> int:
  probe = config.copy_and_resolve_references()
  for size in range(1, 4096):
    probe.image_size = size
    if min(spatial_sizes(probe).values()) >= 1:
      return size
  raise AssertionError('unreachable')


def widths(config) -> dict[str, int]:
  """Output channels or units per tower for every layer, width multiplier applied."""
  variant = VARIANTS[config.model.variant]
  scale = lambda n: max(1, round(n * config.model.width))
  out = {f'conv{i + 1}': scale(c) for i, c in enumerate(variant.conv)}
  out['fc6'], out['fc7'] = (scale(f) for f in variant.fc)
  out['fc8'] = config.model.num_classes // variant.towers
  return out


def validate(config) -> None:
  """Model settings a user can get wrong, checked before anything compiles."""
  m = config.model
  if m.variant not in VARIANTS:
    raise UserError(f'Unknown model.variant {m.variant!r}; choose one of '
                    f'{", ".join(VARIANTS)}.')
  towers = VARIANTS[m.variant].towers
  if m.num_classes < 1 or m.num_classes % towers:
    raise UserError(
        f'model.num_classes={m.num_classes} must be a positive multiple of'
        f' {towers}: each of the {towers} towers computes an equal share of'
        ' the logits in fc8.')
  if m.activation not in ACTIVATIONS:
    raise UserError(f'Unknown model.activation {m.activation!r}; choose one of'
                    f' {", ".join(ACTIVATIONS)}.')
  if m.lrn_convention not in ('paper', 'caffe'):
    raise UserError(f"model.lrn_convention must be 'paper' or 'caffe', got"
                    f' {m.lrn_convention!r}.')
  if m.init not in ('paper', 'he'):
    raise UserError(f"model.init must be 'paper' or 'he', got {m.init!r}.")
  if not 0.0 <= m.dropout_rate < 1.0:
    raise UserError(f'model.dropout_rate must be in [0, 1), got {m.dropout_rate}.')
  if not m.width > 0:
    raise UserError(f'model.width must be positive, got {m.width}.')
  if config.dtype not in DTYPES:
    raise UserError(f'Unknown dtype {config.dtype!r}; choose one of'
                    f' {", ".join(DTYPES)}.')
  if min(spatial_sizes(config).values()) < 1:
    raise UserError(
        f'image_size={config.image_size} is too small for the {m.variant}'
        f' network (overlapping_pool={m.overlapping_pool}): the feature maps'
        ' shrink to nothing before pool5. The smallest image size that works'
        f' is {smallest_image_size(config)}; the paper uses 227.')


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': jax.nn.relu,  # Sec. 3.1.
    'tanh': jnp.tanh,  # The saturating baseline of Fig. 1.
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class TowerConv(nnx.Module):
  """A convolution split into towers: kernel (towers, kh, kw, in, out)."""

  def __init__(self, towers: int, size: int, in_features: int,
               out_features: int, *, stride: int, padding: int, bias: float,
               init: str, rngs: nnx.Rngs):
    fan_in = size * size * in_features
    std = INIT_STDDEV if init == 'paper' else math.sqrt(2.0 / fan_in)
    shape = (towers, size, size, in_features, out_features)
    self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), shape))
    self.bias = nnx.Param(jnp.full((towers, out_features), bias, jnp.float32))
    self.stride, self.padding = stride, padding

  def __call__(self, x: jax.Array, tower: int, dtype) -> jax.Array:
    # Two plain half-width convolutions, not one grouped convolution
    # (feature_group_count=2): on CPU the grouped form ran ~3x slower.
    y = jax.lax.conv_general_dilated(
        x.astype(dtype), self.kernel[tower].astype(dtype),
        (self.stride, self.stride), [(self.padding, self.padding)] * 2,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + self.bias[tower].astype(dtype)


class TowerDense(nnx.Module):
  """A fully connected layer split into towers: kernel (towers, in, out)."""

  def __init__(self, towers: int, in_features: int, out_features: int, *,
               bias: float, init: str, rngs: nnx.Rngs):
    std = INIT_STDDEV if init == 'paper' else math.sqrt(2.0 / in_features)
    shape = (towers, in_features, out_features)
    self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), shape))
    self.bias = nnx.Param(jnp.full((towers, out_features), bias, jnp.float32))

  def __call__(self, x: jax.Array, tower: int, dtype) -> jax.Array:
    return x.astype(dtype) @ self.kernel[tower].astype(dtype) + self.bias[tower].astype(dtype)


class AlexNet(nnx.Module):
  """The network of Fig. 2, any variant of VARIANTS, split or not.

  Call it inside `jax.set_mesh(mesh)` with a `model` axis of 2 to run one
  tower per device; outside a mesh (or with `model=1`) it runs every tower
  on each device with the same parameters and the same result.
  """

  def __init__(self, config, *, rngs: nnx.Rngs):
    validate(config)
    m = config.model
    self.variant = VARIANTS[m.variant]
    self.num_towers = t = self.variant.towers
    self.lrn_on, self.lrn_convention = m.lrn, m.lrn_convention
    self.overlapping_pool = m.overlapping_pool
    self.activation = m.activation
    self.dropout_rate = m.dropout_rate
    self.dtype = config.dtype
    w = widths(config)
    pool5 = spatial_sizes(config)['pool5']
    # 'he' (He et al. 2015, as torchvision) starts every bias at 0.
    bias = lambda name: 1.0 if m.init == 'paper' and name in BIAS_ONE else 0.0
    conv = lambda name, size, cin, stride=1, pad=0: TowerConv(
        t, size, cin, w[name], stride=stride, padding=pad, bias=bias(name),
        init=m.init, rngs=rngs)
    # fc8 keeps N(0, 0.01) under 'he' too, so the first logits are near zero.
    dense = lambda name, cin: TowerDense(
        t, cin, w[name], bias=bias(name),
        init='paper' if name == 'fc8' else m.init, rngs=rngs)
    self.conv1 = conv('conv1', 11, 3, stride=4, pad=self.variant.conv1_padding)
    self.conv2 = conv('conv2', 5, w['conv1'], pad=2)
    self.conv3 = conv('conv3', 3, t * w['conv2'], pad=1)  # Reads both towers.
    self.conv4 = conv('conv4', 3, w['conv3'], pad=1)
    self.conv5 = conv('conv5', 3, w['conv4'], pad=1)
    self.fc6 = dense('fc6', t * w['conv5'] * pool5 * pool5)  # Reads both towers.
    self.fc7 = dense('fc7', t * w['fc6'])  # Reads both towers.
    self.fc8 = dense('fc8', t * w['fc7'])  # Reads both towers.

  def __call__(self, images: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> jax.Array:
    """(B, S, S, 3) images -> (B, num_classes) float32 logits."""
    if train and self.dropout_rate > 0 and rng is None:
      raise ValueError('Training with dropout needs an `rng` key.')
    rng = prng_key(0) if rng is None else rng
    graphdef, params = nnx.split(self)

    def towers_fn(params, images, rng, towers):
      return nnx.merge(graphdef, params).forward(images, towers, train=train,
                                                 rng=rng)

    return parallel.run_towers(towers_fn, params, images, rng, self.num_towers)

  def forward(self, x: jax.Array, towers: parallel.Towers, *, train: bool,
              rng: jax.Array, record: Callable[[str, jax.Array], None] | None = None,
              ) -> jax.Array:
    """The towers in `towers.ids`; this module holds exactly their parameters."""
    dtype = DTYPES[self.dtype]
    act = ACTIVATIONS[self.activation]
    local = range(len(towers.ids))
    record = record or (lambda name, h: None)

    def norm(h):
      return lrn(h, convention=self.lrn_convention) if self.lrn_on else h

    def pool(h):
      return max_pool(h, self.overlapping_pool)

    def dropout(h, layer, i):
      if not train or self.dropout_rate == 0:
        return h
      # Independent masks per layer, tower and (see run_towers) data shard.
      key = jax.random.fold_in(jax.random.fold_in(rng, layer), towers.ids[i])
      keep = jax.random.bernoulli(key, 1.0 - self.dropout_rate, h.shape)
      return jnp.where(keep, h / (1.0 - self.dropout_rate), 0).astype(h.dtype)

    def per_tower(name, f, hs):
      out = [f(h, i) for h, i in zip(hs, local)]
      record(name, out[0])
      return out

    x = x.astype(dtype)  # (B, 227, 227, 3), both towers read the image.
    h = per_tower('conv1', lambda x, i: act(self.conv1(x, i, dtype)), [x] * len(local))  # (B, 55, 55, 48)
    h = per_tower('pool1', lambda h, i: pool(norm(h)), h)  # (B, 27, 27, 48)
    h = per_tower('conv2', lambda h, i: act(self.conv2(h, i, dtype)), h)  # (B, 27, 27, 128)
    h = per_tower('pool2', lambda h, i: pool(norm(h)), h)  # (B, 13, 13, 128)
    h = towers.exchange(h, 'conv3')  # conv3 reads both towers: (B, 13, 13, 256)
    h = per_tower('conv3', lambda h, i: act(self.conv3(h, i, dtype)), h)  # (B, 13, 13, 192)
    h = per_tower('conv4', lambda h, i: act(self.conv4(h, i, dtype)), h)  # (B, 13, 13, 192)
    h = per_tower('conv5', lambda h, i: act(self.conv5(h, i, dtype)), h)  # (B, 13, 13, 128)
    h = per_tower('pool5', lambda h, i: pool(h), h)  # (B, 6, 6, 128)
    h = towers.exchange(h, 'fc6')  # fc6 reads both towers: (B, 6, 6, 256)
    h = [h.reshape(h.shape[0], -1) for h in h]  # (B, 9216)
    h = per_tower('fc6', lambda h, i: dropout(act(self.fc6(h, i, dtype)), 6, i), h)  # (B, 2048)
    h = towers.exchange(h, 'fc7')  # fc7 reads both towers: (B, 4096)
    h = per_tower('fc7', lambda h, i: dropout(act(self.fc7(h, i, dtype)), 7, i), h)  # (B, 2048)
    h = towers.exchange(h, 'fc8')  # fc8 reads both towers: (B, 4096)
    h = per_tower('fc8', lambda h, i: self.fc8(h, i, dtype), h)  # (B, 500)
    return towers.exchange_logits(h).astype(jnp.float32)  # Softmax over all classes.


def layer_shapes(config) -> dict[str, tuple[int, ...]]:
  """Output shape per tower of every layer and pool, batch 1, traced."""
  shapes = {}

  def trace():
    model = AlexNet(config, rngs=nnx.Rngs(prng_key(0)))
    towers = parallel.Towers(ids=list(range(model.num_towers)))
    x = jnp.zeros((1, config.image_size, config.image_size, 3))
    return model.forward(x, towers, train=False, rng=prng_key(0),
                         record=lambda name, h: shapes.__setitem__(name, h.shape[1:]))

  jax.eval_shape(trace)
  return shapes


def create(config, seed: int | None = None) -> AlexNet:
  """Builds and initialises the model on the default device."""
  return AlexNet(config, rngs=nnx.Rngs(prng_key(config.seed if seed is None else seed)))


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
  for name in LAYERS:
    layer = getattr(model, name)
    kernel = np.asarray(layer.kernel[...])
    flat[f'{name}/kernel'] = np.concatenate(list(kernel), axis=-1)
    flat[f'{name}/bias'] = np.concatenate(list(np.asarray(layer.bias[...])), axis=-1)
  return flat


def import_params(model: AlexNet, flat: dict[str, np.ndarray]) -> None:
  """Loads `export_params`' layout into `model` in place (towers split again).

  Read `.npz` files with `np.load(path, allow_pickle=False)`: weights are
  plain arrays, and nothing in them is executed.
  """
  for name in LAYERS:
    layer = getattr(model, name)
    for part in ('kernel', 'bias'):
      variable = getattr(layer, part)
      towers, *shape, out = variable[...].shape
      value = np.asarray(flat[f'{name}/{part}'], np.float32)
      if value.shape != (*shape, towers * out):
        raise UserError(
            f'{name}/{part} has shape {value.shape}, which does not fit this'
            f' model (expects {(*shape, towers * out)}: {towers} tower(s) of'
            f' {out} along the last axis).')
      variable[...] = jnp.asarray(np.stack(np.split(value, towers, axis=-1)))


def count_params(model: AlexNet) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
