"""The paper's layers besides convolutions: LRN (Sec. 3.3), max-pooling (Sec. 3.4), dropout (Sec. 4.2)."""

import functools

import jax
import jax.numpy as jnp

# Sec. 3.3: k=2, n=5, alpha=1e-4, beta=0.75.
LRN_K, LRN_N, LRN_ALPHA, LRN_BETA = 2.0, 5, 1e-4, 0.75
# How LRN sums its n squares: a sliding window over channels, or a matrix
# product with a banded (C, C) matrix of ones (the same sums, another kernel).
LRN_SUMS = ('window', 'banded')
# How max-pooling is differentiated: XLA's select-and-scatter, or a
# custom_vjp built from the window's strided slices (`_max_pool_slices`).
POOL_GRADS = ('xla', 'slices')


def lrn(x: jax.Array, *, n: int = LRN_N, k: float = LRN_K,
        alpha: float = LRN_ALPHA, beta: float = LRN_BETA,
        convention: str = 'paper', sum_form: str = 'window') -> jax.Array:
  """Local response normalisation across channels (Sec. 3.3).

  b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, over the
  channels of one tower. 'paper' uses alpha as written (as does TensorFlow's
  local_response_normalization with depth_radius=n//2); 'caffe' divides alpha
  by n (Caffe, cuda-convnet's "scale" and PyTorch). `sum_form` (LRN_SUMS)
  says how the sum is computed; both give the same sums (float32).
  """
  if convention == 'caffe':
    alpha = alpha / n
  sq = jnp.square(x.astype(jnp.float32))
  half = n // 2
  if sum_form == 'banded':
    c = x.shape[-1]
    offset = jnp.arange(c)[:, None] - jnp.arange(c)[None, :]
    band = (jnp.abs(offset) <= half).astype(jnp.float32)  # Channels past the edges: none.
    window_sum = jnp.einsum('...c,cd->...d', sq, band,
                            precision=jax.lax.Precision.HIGHEST)
  else:
    window_sum = jax.lax.reduce_window(
        sq, 0.0, jax.lax.add, (1,) * (x.ndim - 1) + (n,), (1,) * x.ndim,
        [(0, 0)] * (x.ndim - 1) + [(half, half)])
  return (x / jnp.power(k + alpha * window_sum, beta).astype(x.dtype))


def max_pool(x: jax.Array, overlapping: bool, grad: str = 'xla') -> jax.Array:
  """Sec. 3.4: overlapping 3x3 windows with stride 2; else plain 2x2/2.

  `grad` (POOL_GRADS) says how it is differentiated; both give the same
  gradient, ties included.
  """
  size = 3 if overlapping else 2
  if grad == 'slices':
    return _max_pool_slices(x, size)
  return _max_pool(x, size)


def _max_pool(x: jax.Array, size: int) -> jax.Array:
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1),
                               (1, 2, 2, 1), 'VALID')


def _window_taps(x: jax.Array, size: int, out_h: int, out_w: int) -> list[jax.Array]:
  """What each of the size*size window positions sees, row-major: strided slices."""
  b, _, _, c = x.shape
  return [jax.lax.slice(x, (0, i, j, 0), (b, i + 2 * (out_h - 1) + 1,
                                          j + 2 * (out_w - 1) + 1, c), (1, 2, 2, 1))
          for i in range(size) for j in range(size)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_slices(x, size):
  """`_max_pool`, differentiated without select-and-scatter.

  Each window's gradient goes to one input: the first maximum in row-major
  order, as XLA's select-and-scatter picks it (JAX selects with `>=`, so the
  first of tied maxima is kept). The backward pass compares each window
  position's strided slice with the pooled maximum and sends dy through the
  first that matches; a strided slice transposes to a padding, not a scatter.
  """
  return _max_pool(x, size)


def _max_pool_slices_fwd(x, size):
  y = _max_pool(x, size)
  return y, (x, y)


def _max_pool_slices_bwd(size, residuals, dy):
  x, y = residuals
  taps, taps_vjp = jax.vjp(lambda x: _window_taps(x, size, *y.shape[1:3]), x)
  taken = jnp.zeros(y.shape, bool)
  cotangents = []
  for tap in taps:
    first = (tap == y) & ~taken
    taken = taken | first
    cotangents.append(jnp.where(first, dy, jnp.zeros_like(dy)))
  return taps_vjp(cotangents)


_max_pool_slices.defvjp(_max_pool_slices_fwd, _max_pool_slices_bwd)


def dropout(h: jax.Array, rate: float, keep: jax.Array) -> jax.Array:
  """Sec. 4.2: units outside `keep` are zeroed, the others scaled by 1 / (1 - rate)."""
  return jnp.where(keep, h / (1.0 - rate), 0).astype(h.dtype)
