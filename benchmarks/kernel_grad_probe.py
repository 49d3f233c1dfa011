"""Each convolution of one tower, forward + backward: kernel gradients by XLA or as patches.

    python -m benchmarks.kernel_grad_probe [--batch=32] [--repeats=5]

Times `core.convolution.conv` with `kernel_grad='xla'` (autodiff) and `'patches'`
(the kernel gradient as one matrix product patches(x)^T @ dL/dy) for conv1
to conv5 of one tower of the full two-tower network (227x227, the shapes
from `core.model.input_shapes`), alternating, and checks that both give the same
gradients. conv1's input gradient is left out, as in the train step (nothing
reads the image's gradient). Prints one JSON line per layer.
"""

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.core import convolution
from alexnet_jax.core import model
from alexnet_jax.core.network import ModelConfig


def _flag(name: str, default: int) -> int:
  prefix = f'--{name}='
  return int(next((a[len(prefix):] for a in sys.argv[1:] if a.startswith(prefix)), default))


def main(batch: int, repeats: int) -> None:
  cfg = ModelConfig()
  shapes = model.input_shapes(cfg)
  rng = np.random.default_rng(0)
  for layer in cfg.network.layers:
    if layer.dense:
      continue
    _, h, w, c = shapes[layer.name]
    x = jnp.asarray(rng.standard_normal((batch, h, w, c)), jnp.float32)
    k = jnp.asarray(0.01 * rng.standard_normal(
        (layer.kernel, layer.kernel, c, cfg.features(layer))), jnp.float32)
    argnums = (1,) if layer.name == 'conv1' else (0, 1)
    steps, grads = {}, {}
    for how in convolution.CONV_KERNEL_GRADS:
      loss = lambda x, k, how=how: jnp.sum(jax.nn.relu(
          convolution.conv(x, k, layer.stride, layer.padding, how)) ** 2)
      steps[how] = jax.jit(jax.grad(loss, argnums=argnums)).lower(x, k).compile()
      grads[how] = jax.block_until_ready(steps[how](x, k))
    seconds = {how: [] for how in steps}
    for _ in range(repeats):  # Alternating: load hits both alike.
      for how, fn in steps.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(x, k))
        seconds[how].append(time.perf_counter() - start)
    err = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
              for a, b in zip(grads['xla'], grads['patches']))
    xla, patches = (statistics.median(seconds[h]) for h in ('xla', 'patches'))
    print(json.dumps({
        'layer': layer.name, 'input': [batch, h, w, c], 'kernel': list(k.shape),
        'stride': layer.stride, 'seconds_xla': round(xla, 4),
        'seconds_patches': round(patches, 4), 'speedup': round(xla / patches, 2),
        'relative_error': err}), flush=True)


if __name__ == '__main__':
  main(_flag('batch', 32), _flag('repeats', 5))
