"""The network's useful work, counted from its table: what MFU divides.

XLA's own count of a compiled program misses what runs in libraries (on GPUs
the cuDNN convolutions) and counts every data-parallel device's update, so
benchmarks count FLOPs here instead.
"""

import math

from alexnet_jax.core import model
from alexnet_jax.core.network import ModelConfig


def forward_macs(cfg: ModelConfig) -> dict[str, int]:
  """Multiply-adds per image of each layer's convolution or matrix product,
  all towers: output positions x kernel taps x inputs x outputs, per tower."""
  inputs, outputs = model.input_shapes(cfg), model.layer_shapes(cfg)
  macs = {}
  for layer in cfg.network.layers:
    taps = 1 if layer.dense else layer.kernel ** 2
    positions = 1 if layer.dense else math.prod(outputs[layer.name][:-1])
    macs[layer.name] = (cfg.network.towers * positions * taps
                        * inputs[layer.name][-1] * outputs[layer.name][-1])
  return macs


def train_flops_per_layer(cfg: ModelConfig) -> dict[str, int]:
  """The useful FLOPs of one image's train step per layer: 2 x its
  multiply-adds forward, as many for the kernel gradient and as many for the
  input gradient, except conv1's (the images need none)."""
  first = cfg.network.layers[0].name
  return {name: 2 * m * (2 if name == first else 3)
          for name, m in forward_macs(cfg).items()}


def train_flops_per_image(cfg: ModelConfig) -> int:
  """The useful FLOPs of one image's train step, what MFU counts: the sum of
  `train_flops_per_layer`. LRN, pooling, ReLU, the loss and the update are
  left out (well under 1%)."""
  return sum(train_flops_per_layer(cfg).values())
