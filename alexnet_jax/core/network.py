"""The networks as tables of layers, and the typed settings of one (`ModelConfig`).

A network is one table (`NETWORKS`): a row per layer saying its kernel,
stride, padding, LRN, pooling, dropout and whether it reads every tower.
Construction, the forward pass, the shapes (traced), the parameters'
logical axes, export and `describe` all read that table and nothing else
(model.py). The 2012 net of Fig. 2, per tower, for a 227x227 input:

  conv1 11x11/4, 48, ReLU, LRN, pool 3/2   (B, 27, 27, 48)
  conv2 5x5 pad 2, 128, ReLU, LRN, pool    (B, 13, 13, 128)    own tower
  conv3 3x3 pad 1, 192, ReLU               (B, 13, 13, 192)    BOTH towers
  conv4 3x3 pad 1, 192, ReLU               (B, 13, 13, 192)    own tower
  conv5 3x3 pad 1, 128, ReLU, pool 3/2     (B, 6, 6, 128)      own tower
  fc6 2048, ReLU, dropout                  (B, 2048)           BOTH (9216 in)
  fc7 2048, ReLU, dropout                  (B, 2048)           BOTH
  fc8 500                                  (B, 500)            BOTH; softmax over 1000
"""

from collections.abc import Callable
import dataclasses

import jax
import jax.numpy as jnp


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

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': jax.nn.relu,  # Sec. 3.1.
    'tanh': jnp.tanh,  # The saturating baseline of Fig. 1.
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
LRN_CONVENTIONS = ('paper', 'caffe')  # layers.lrn.
INITS = ('paper', 'he')  # model.AlexNet.
# How the towers' convolutions run where one device holds several towers
# (model.py `TowerLayer.all_towers`): one convolution per tower ('separate'),
# or one for all of them, grouped (feature_group_count) or with block-diagonal
# kernels. Every form computes the same function (Fig. 2's towers).
TOWER_CONVS = ('separate', 'grouped', 'block_diagonal')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network's settings (configs/default.py: `model.*`, `image_size`,
  `dtype`, `conv_kernel_grad`). The defaults are the paper's net, as
  configs/default.py sets it (tested). `lrn_sum`, `pool_grad`, `tower_conv`
  and `pad_conv1_channels` choose among forms of the same function (speed
  only)."""
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
  conv_kernel_grad: str = 'auto'  # 'auto' | 'xla' | 'patches': convolution.conv.
  lrn_sum: str = 'window'  # layers.LRN_SUMS.
  pool_grad: str = 'xla'  # layers.POOL_GRADS.
  tower_conv: str = 'separate'  # TOWER_CONVS.
  pad_conv1_channels: bool = False  # conv1 reads 4 channels, the 4th zero.

  @property
  def network(self) -> Network:
    return NETWORKS[self.variant]

  def features(self, layer: Layer) -> int:
    """Output channels or units per tower, width multiplier applied."""
    if layer.features == 0:  # The logits: an equal share per tower, rounded up.
      return -(-self.num_classes // self.network.towers)
    return max(1, round(layer.features * self.width))

  @property
  def dead_classes(self) -> int:
    """Logits the last tower computes beyond num_classes, where the classes
    do not divide over the towers (7 over 2: 4 and 3 + 1 dead). They are
    zero at the start, cut off before the softmax, so never trained, and
    left out of exported weights and of the parameter count (model.py)."""
    return self.features(self.network.layers[-1]) * self.network.towers - self.num_classes
