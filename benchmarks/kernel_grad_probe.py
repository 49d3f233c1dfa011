"""conv2 of one tower, forward + backward: XLA's kernel gradient against one matmul.

    python -m benchmarks.kernel_grad_probe [--repeats=5]

The profile of the CPU train step (README, "Where the CPU step's time goes")
found conv2's kernel gradient at 38% of the one-device step. This times
conv2 of one tower (batch 32, 27x27x48 -> 27x27x128, 5x5, pad 2) with the
gradient as XLA lowers it, and with the kernel gradient computed as
patches(x)^T @ dL/dy (`conv_kernel_grad_as_matmul`), and checks both give the
same gradients. Outside shard_map only: inside it the custom rule would also
have to sum over the mesh axes the batch varies on, which is not done here.
"""

import functools
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp


def xla_conv(x, kernel, stride, padding):
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_kernel_grad_as_matmul(x, kernel, stride, padding):
  return xla_conv(x, kernel, stride, padding)


def _fwd(x, kernel, stride, padding):
  return xla_conv(x, kernel, stride, padding), (x, kernel)


def _bwd(stride, padding, residuals, g):
  x, kernel = residuals
  kh, kw, c, o = kernel.shape
  # The input gradient as XLA derives it (not through this rule again).
  _, input_grad = jax.vjp(lambda x: xla_conv(x, kernel, stride, padding), x)
  # dL/dk = patches(x)^T @ dL/dy: one (C*kh*kw, B*H*W) x (B*H*W, O) product.
  patches = jax.lax.conv_general_dilated_patches(
      x, (kh, kw), (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))  # (B, H, W, C*kh*kw), C major.
  grad = patches.reshape(-1, c * kh * kw).T @ g.reshape(-1, o)
  return input_grad(g)[0], grad.reshape(c, kh, kw, o).transpose(1, 2, 0, 3)


conv_kernel_grad_as_matmul.defvjp(_fwd, _bwd)


def main(repeats: int) -> None:
  x = jax.random.normal(jax.random.key(0), (32, 27, 27, 48))
  k = jax.random.normal(jax.random.key(1), (5, 5, 48, 128)) * 0.01
  loss = lambda f: lambda x, k: jnp.sum(jax.nn.relu(f(x, k, 1, 2)) ** 2)
  seconds, grads = {}, {}
  for name, f in (('xla', xla_conv), ('matmul', conv_kernel_grad_as_matmul)):
    step = jax.jit(jax.grad(loss(f), argnums=(0, 1))).lower(x, k).compile()
    grads[name] = jax.block_until_ready(step(x, k))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(step(x, k))
      times.append(time.perf_counter() - start)
    seconds[name] = statistics.median(times)
  err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
            for a, b in zip(grads['xla'], grads['matmul']))
  print(json.dumps({'seconds_xla': seconds['xla'], 'seconds_matmul': seconds['matmul'],
                    'speedup': seconds['xla'] / seconds['matmul'],
                    'max_relative_error': err}))


if __name__ == '__main__':
  main(int(next((a.split('=')[1] for a in sys.argv[1:] if a.startswith('--repeats=')), 5)))
