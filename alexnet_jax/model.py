"""AlexNet as in Krizhevsky, Sutskever and Hinton (NIPS 2012), Fig. 2 and Sec. 3.

A network is one table (`NETWORKS`): a row per layer saying its kernel,
stride, padding, LRN, pooling, dropout and whether it reads every tower.
Construction, the forward pass, the shapes (traced), the parameters'
logical axes, export and `inspect` all read that table and nothing else.

Every layer is split into towers stacked on the leading axis of its
parameters: conv1's kernel is (2, 11, 11, 3, 48), tower 0 first. Each tower
reads its own half of the previous layer, except where the table says
`reads_both` (conv3, fc6, fc7, fc8 in Fig. 2), which is where the towers
exchange activations (`towers.exchange`, parallel.py). For the paper's
227x227 input, per tower, batch B:

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
import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import parallel


@dataclasses.dataclass(frozen=True)
class Layer:
  """One row of a network's table. Order within a row: op, ReLU, LRN, pool, dropout."""
  name: str
  features: int  # Kernels or units per tower at width 1; 0: the classes / towers.
  kernel: int = 0  # Side of the square kernel; 0: fully connected.
  stride: int = 1
  padding: int = 0
  lrn: bool = False  # Sec. 3.3.
  pool: bool = False  # Sec. 3.4.
  reads_both: bool = False  # Reads every tower: an exchange before it (Fig. 2).
  dropout: bool = False  # Sec. 4.2.
  bias_one: bool = False  # Sec. 5: bias 1 under init='paper' (ReLUs start positive).

  @property
  def dense(self) -> bool:
    return self.kernel == 0


@dataclasses.dataclass(frozen=True)
class Network:
  towers: int
  layers: tuple[Layer, ...]  # The last one gives the logits (no ReLU).


def _alexnet(towers, conv, fc, conv1=(11, 4, 0)) -> Network:
  """The 2012 layer stack (Fig. 2): kernels/units per tower, conv1's (size, stride, pad)."""
  size, stride, pad = conv1
  return Network(towers, (
      Layer('conv1', conv[0], size, stride=stride, padding=pad, lrn=True, pool=True),
      Layer('conv2', conv[1], 5, padding=2, lrn=True, pool=True, bias_one=True),
      Layer('conv3', conv[2], 3, padding=1, reads_both=True),
      Layer('conv4', conv[3], 3, padding=1, bias_one=True),
      Layer('conv5', conv[4], 3, padding=1, pool=True, bias_one=True),
      Layer('fc6', fc, reads_both=True, dropout=True, bias_one=True),
      Layer('fc7', fc, reads_both=True, dropout=True, bias_one=True),
      Layer('fc8', 0, reads_both=True),
  ))


NETWORKS = {
    # Fig. 2: 60,965,224 parameters, like Caffe's bvlc_alexnet with group: 2.
    'two_tower': _alexnet(2, (48, 128, 192, 192, 128), 2048),
    # Sec. 3.2, footnote 2: the one-GPU net has half the kernels in conv1..conv4
    # but keeps conv5 and the fully connected layers at full size.
    'one_tower': _alexnet(1, (48, 128, 192, 192, 256), 4096),
    # torchvision's alexnet (Krizhevsky 2014, "One weird trick"): one tower,
    # conv1 padded by 2 so 224 inputs give 55x55. Its adaptive 6x6 average
    # pool is the identity at 224 and is left out; its dropout sits before
    # fc6/fc7 rather than after (not modelled).
    'owt': _alexnet(1, (64, 192, 384, 256, 256), 4096, conv1=(11, 4, 2)),
    # 32x32 (CIFAR-10) versions for the ablations of Sec. 3, with Fig. 2's
    # crossings: conv1 5x5 at stride 1 (maps 32 -> 15 -> 7 -> 3), two towers
    # and one tower of the same total width (Sec. 3.2's comparison).
    'cifar_two_tower': _alexnet(2, (32, 64, 96, 96, 64), 256, conv1=(5, 1, 2)),
    'cifar_one_tower': _alexnet(1, (64, 128, 192, 192, 128), 512, conv1=(5, 1, 2)),
    # Sec. 3.1 (Fig. 1) and 3.3: the four-layer CNN of the CIFAR-10 claims,
    # cuda-convnet's layers-18pct layout (three 5x5 convolutions, one
    # classifier) in this project's order (ReLU, LRN, max-pool).
    'cifar_4layer': Network(1, (
        Layer('conv1', 32, 5, padding=2, lrn=True, pool=True),
        Layer('conv2', 32, 5, padding=2, lrn=True, pool=True),
        Layer('conv3', 64, 5, padding=2, pool=True),
        Layer('fc4', 0, reads_both=True),
    )),
}

# XLA's RngBitGenerator: as deterministic as threefry for a given backend and
# placement, and its samplers compile ~10x faster on CPU (threefry's normal
# took ~1 s per parameter shape), which dominates start-up at small sizes.
PRNG_IMPL = 'rbg'


def prng_key(seed: int) -> jax.Array:
  return jax.random.key(seed, impl=PRNG_IMPL)


# Sec. 3.3: k=2, n=5, alpha=1e-4, beta=0.75.
LRN_K, LRN_N, LRN_ALPHA, LRN_BETA = 2.0, 5, 1e-4, 0.75
INIT_STDDEV = 0.01  # Sec. 5: weights N(0, 0.01).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': jax.nn.relu,  # Sec. 3.1.
    'tanh': jnp.tanh,  # The saturating baseline of Fig. 1.
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
CONV_KERNEL_GRADS = ('xla', 'patches')  # See `conv`.


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network's settings (configs/default.py `model.*`, image_size, dtype)."""
  variant: str = 'two_tower'
  lrn: bool = True
  lrn_convention: str = 'paper'  # 'paper' (= TensorFlow) or 'caffe' (alpha / n).
  overlapping_pool: bool = True
  activation: str = 'relu'
  dropout_rate: float = 0.5
  width: float = 1.0
  num_classes: int = 1000
  init: str = 'paper'  # 'paper' (Sec. 5) or 'he'.
  image_size: int = 227
  dtype: str = 'float32'  # Compute dtype; parameters stay float32.
  conv_kernel_grad: str = 'xla'  # 'xla' | 'patches': how `conv` computes it.

  @property
  def network(self) -> Network:
    return NETWORKS[self.variant]

  def features(self, layer: Layer) -> int:
    """Output channels or units per tower, width multiplier applied."""
    if layer.features == 0:
      return self.num_classes // self.network.towers
    return max(1, round(layer.features * self.width))


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


def _conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _kernel_grad(x: jax.Array, dy: jax.Array, kh: int, kw: int, stride: int,
                 padding: int) -> jax.Array:
  """dL/dk from the input's patches: one matrix product per kernel row.

  dL/dk[i, j] = sum over (b, h, w) of x_padded[b, stride h + i, stride w + j]
  outer dy[b, h, w]. Row i stacks what its kw taps see, (B*H'*W', kw*C), and
  contracts it with dy, (B*H'*W', O); a loop over the rows keeps one copy of
  that code per layer. Measured on one tower at batch 32 (2-core CPU), this
  beat one product over all kh*kw taps (a larger copy) and one per tap
  (conv1's C=3 makes those too thin), and unrolled rows compiled 6x slower.
  """
  b, ho, wo, o = dy.shape
  c = x.shape[-1]
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  dy = dy.reshape(-1, o)
  span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1

  def row(i):
    seen = jax.lax.dynamic_slice_in_dim(x, i, span_h, axis=1)[:, ::stride]  # (B, H', W+2p, C)
    taps = jnp.stack([seen[:, :, j:j + span_w:stride] for j in range(kw)], axis=3)
    return jax.lax.dot_general(  # Summed in float32, also for bfloat16.
        taps.reshape(-1, kw * c), dy, (((0,), (0,)), ((), ())),
        preferred_element_type=jnp.float32)

  return jax.lax.map(row, jnp.arange(kh)).reshape(kh, kw, c, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_patches_grad(x, kernel, stride, padding):
  """`_conv`, whose kernel gradient is `_kernel_grad`'s matrix products.

  XLA's CPU backend lowers a kernel gradient as a convolution whose window
  is the whole output map (27x27 for conv2), which it runs many times slower
  than the forward pass of the same FLOPs (README, "Where the CPU step's
  time goes"); as matrix products it runs at the matmul rate.
  """
  return _conv(x, kernel, stride, padding)


def _conv_patches_grad_fwd(x, kernel, stride, padding):
  return _conv(x, kernel, stride, padding), (x, kernel)


def _conv_patches_grad_bwd(stride, padding, residuals, dy):
  x, kernel = residuals
  kh, kw, _, _ = kernel.shape
  # The input gradient as XLA derives it (a transposed convolution).
  _, input_vjp = jax.vjp(lambda x: _conv(x, kernel, stride, padding), x)
  grad = _kernel_grad(x, dy, kh, kw, stride, padding).astype(kernel.dtype)
  return input_vjp(dy)[0], grad


_conv_patches_grad.defvjp(_conv_patches_grad_fwd, _conv_patches_grad_bwd)


def _varying(x: jax.Array) -> frozenset:
  """The mesh axes `x` varies over inside shard_map (none outside)."""
  return jax.typeof(x).mat.varying


def conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
         kernel_grad: str = 'xla') -> jax.Array:
  """One tower's convolution (NHWC, HWIO); `kernel_grad` says how its kernel
  gradient is computed: 'xla' (autodiff) or 'patches' (`_kernel_grad`).

  Both give the same gradients. Under shard_map the batch varies over mesh
  axes a replicated kernel does not: both operands are first cast to vary
  over the union, as JAX casts the operands of any op, so the casts'
  transposes sum each gradient over those axes exactly where autodiff does.
  """
  if kernel_grad not in CONV_KERNEL_GRADS:
    raise ValueError(f'kernel_grad must be one of {CONV_KERNEL_GRADS}, got {kernel_grad!r}.')
  if kernel_grad == 'xla':
    return _conv(x, kernel, stride, padding)
  both = _varying(x) | _varying(kernel)
  x, kernel = (jax.lax.pcast(a, tuple(sorted(both - _varying(a))), to='varying')
               for a in (x, kernel))
  return _conv_patches_grad(x, kernel, stride, padding)


def _layer_op(layer: Layer, x: jax.Array, kernel: jax.Array, bias: jax.Array,
              conv_kernel_grad: str = 'xla') -> jax.Array:
  """conv (NHWC, HWIO) or matrix product, plus bias: one tower of one layer."""
  if layer.dense:
    return x @ kernel + bias
  # Two plain half-width convolutions, not one grouped convolution
  # (feature_group_count=2): on CPU the grouped form ran ~3x slower.
  return conv(x, kernel, layer.stride, layer.padding, conv_kernel_grad) + bias


class TowerLayer(nnx.Module):
  """One row of the table, split into towers: kernel (towers, [kh, kw,] in, out)."""

  def __init__(self, layer: Layer, towers: int, in_features: int,
               out_features: int, *, bias: float, std: float, rngs: nnx.Rngs,
               conv_kernel_grad: str = 'xla'):
    shape = (() if layer.dense else (layer.kernel, layer.kernel)) + (in_features, out_features)
    self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), (towers, *shape)))
    self.bias = nnx.Param(jnp.full((towers, out_features), bias, jnp.float32))
    self.layer = layer
    self.conv_kernel_grad = conv_kernel_grad

  def __call__(self, x: jax.Array, tower: int, towers: parallel.Towers, dtype) -> jax.Array:
    kernel = self.kernel[tower]
    if self.layer.dense:  # FSDP stores fc kernels split over their inputs.
      kernel = towers.gather_weights(kernel, self.layer.name)
    return _layer_op(self.layer, x.astype(dtype), kernel.astype(dtype),
                     self.bias[tower].astype(dtype), self.conv_kernel_grad)


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
      setattr(self, layer.name, TowerLayer(
          layer, net.towers, in_features, cfg.features(layer),
          bias=1.0 if cfg.init == 'paper' and layer.bias_one else 0.0,
          std=math.sqrt(2.0 / fan_in) if he else INIT_STDDEV, rngs=rngs,
          conv_kernel_grad=cfg.conv_kernel_grad))

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
  layers = cfg.network.layers
  hs = [x.astype(dtype)] * len(local)  # Every tower reads the image.
  for index, layer in enumerate(layers):
    if layer.dense and hs[0].ndim > 2:  # Entering the fully connected part.
      hs = towers.enter_dense(hs, layer.name)
    hs = towers.exchange(hs, layer.name, both=layer.reads_both)
    hs = [h.reshape(h.shape[0], -1) if layer.dense else h for h in hs]
    hs = [module(layer.name)(h, i, towers, dtype) for h, i in zip(hs, local)]
    if layer is layers[-1]:
      record(layer.name, hs[0])
      break
    hs = [act(h) for h in hs]
    if layer.lrn and cfg.lrn:
      hs = [lrn(h, convention=cfg.lrn_convention) for h in hs]
    if layer.pool:
      record(layer.name, hs[0])
      hs = [max_pool(h, cfg.overlapping_pool) for h in hs]
    if layer.dropout and train and cfg.dropout_rate > 0:
      hs = [_dropout(h, cfg.dropout_rate, towers.dropout_keep(
          rng, index, i, h.shape, cfg.dropout_rate)) for h, i in zip(hs, local)]
    record(f'pool{layer.name.removeprefix("conv")}' if layer.pool else layer.name, hs[0])
  return towers.exchange_logits(hs).astype(jnp.float32)  # Softmax over all classes.


def _dropout(h, rate, keep):
  return jnp.where(keep, h / (1.0 - rate), 0).astype(h.dtype)


def _trace(cfg: ModelConfig):
  """(what each layer's op reads, what each layer and pool gives), per tower,
  batch 1: the table's forward pass traced with zero kernels, never run."""
  layers = {l.name: l for l in cfg.network.layers}
  inputs, outputs = {}, {}

  def module(name):
    def apply(h, i, towers, dtype):
      inputs[name] = h.shape
      layer = layers[name]
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
  return _trace(cfg)[0]


def layer_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Output shape per tower of every layer and pool, without the batch."""
  return _trace(cfg)[1]


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
                              else ('tower',) + (None,) * (x.ndim - 1))
    return parallel.Logical(('tower', 'fc_units') if dense else ('tower', None))
  return jax.tree_util.tree_map_with_path(axes, params)


def create(cfg: ModelConfig, seed: int = 0) -> AlexNet:
  """Builds and initialises the model on the default device."""
  return AlexNet(cfg, rngs=nnx.Rngs(prng_key(seed)))


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
      flat[f'{layer.name}/{part}'] = np.concatenate(list(value), axis=-1)
  return flat


def import_params(model: AlexNet, flat: dict[str, np.ndarray]) -> None:
  """Loads `export_params`' layout into `model` in place (towers split again).

  Read `.npz` files with `np.load(path, allow_pickle=False)`: weights are
  plain arrays, and nothing in them is executed. Raises ValueError on a
  shape that does not fit.
  """
  for layer in model.cfg.network.layers:
    for part in ('kernel', 'bias'):
      variable = getattr(getattr(model, layer.name), part)
      towers, *shape, out = variable[...].shape
      value = np.asarray(flat[f'{layer.name}/{part}'], np.float32)
      if value.shape != (*shape, towers * out):
        raise ValueError(
            f'{layer.name}/{part} has shape {value.shape}, which does not fit'
            f' this model (expects {(*shape, towers * out)}: {towers} tower(s)'
            f' of {out} along the last axis).')
      variable[...] = jnp.asarray(np.stack(np.split(value, towers, axis=-1)))


def count_params(model: AlexNet) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def forward_macs(cfg: ModelConfig) -> dict[str, int]:
  """Multiply-adds per image of each layer's convolution or matrix product,
  all towers: output positions x kernel taps x inputs x outputs, per tower."""
  inputs, outputs = _trace(cfg)
  macs = {}
  for layer in cfg.network.layers:
    taps = 1 if layer.dense else layer.kernel ** 2
    positions = 1 if layer.dense else math.prod(outputs[layer.name][:-1])
    macs[layer.name] = (cfg.network.towers * positions * taps
                        * inputs[layer.name][-1] * outputs[layer.name][-1])
  return macs


def train_flops_per_image(cfg: ModelConfig) -> int:
  """The useful FLOPs of one image's train step, what MFU counts: per layer
  2 x its multiply-adds forward, as many for the kernel gradient and as many
  for the input gradient, except conv1's (the images need none). LRN,
  pooling, ReLU, the loss and the update are left out (well under 1%)."""
  macs = forward_macs(cfg)
  first = cfg.network.layers[0].name
  return sum(2 * m * (2 if name == first else 3) for name, m in macs.items())
