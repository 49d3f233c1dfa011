"""The paper's layers besides convolutions: LRN (Sec. 3.3), max-pooling (Sec. 3.4), dropout (Sec. 4.2)."""

import jax
import jax.numpy as jnp

# Sec. 3.3: k=2, n=5, alpha=1e-4, beta=0.75.
LRN_K, LRN_N, LRN_ALPHA, LRN_BETA = 2.0, 5, 1e-4, 0.75


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


def dropout(h: jax.Array, rate: float, keep: jax.Array) -> jax.Array:
  """Sec. 4.2: units outside `keep` are zeroed, the others scaled by 1 / (1 - rate)."""
  return jnp.where(keep, h / (1.0 - rate), 0).astype(h.dtype)
