"""One tower's convolution, and a kernel gradient for XLA's CPU backend.

`conv(..., kernel_grad='xla')` is the plain convolution, differentiated by
JAX. XLA's CPU backend lowers its kernel gradient as a convolution whose
window is the whole output map (27x27 for conv2), which it runs many times
slower than the forward pass of the same FLOPs (profile:
benchmarks/results/cpu-profile-2026-11-26.md). `kernel_grad='patches'`
computes the same gradient as matrix products instead, at the matmul rate
(`_kernel_grad`); the input gradient stays XLA's. `kernel_grad='auto'` (the
default) takes 'patches' on CPU, where it measured faster on both CPU kinds
this project has run on (AMD EPYC and Intel Xeon, benchmarks/results/), and
'xla' elsewhere: on a GPU cuDNN's kernel gradients are the fast path, and on
a TPU XLA's are assumed to be (not measured).
"""

import functools

import jax
import jax.numpy as jnp

CONV_KERNEL_GRADS = ('auto', 'xla', 'patches')


def _conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
          groups: int = 1) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


def resolve_kernel_grad(kernel_grad: str) -> str:
  """'auto' -> 'patches' on the CPU backend, 'xla' on any other."""
  if kernel_grad != 'auto':
    return kernel_grad
  return 'patches' if jax.default_backend() == 'cpu' else 'xla'


def conv(x: jax.Array, kernel: jax.Array, stride: int, padding: int,
         kernel_grad: str = 'auto', groups: int = 1) -> jax.Array:
  """A convolution (NHWC, HWIO) of `groups` towers' channels side by side
  (feature_group_count; 1: one tower); `kernel_grad` says how its kernel
  gradient is computed: 'xla' (autodiff), 'patches' (`_kernel_grad`) or
  'auto' (`resolve_kernel_grad`).

  Both give the same gradients. Under shard_map the batch varies over mesh
  axes a replicated kernel does not: both operands are first cast to vary
  over the union, as JAX casts the operands of any op, so the casts'
  transposes sum each gradient over those axes exactly where autodiff does.
  """
  if kernel_grad not in CONV_KERNEL_GRADS:
    raise ValueError(f'kernel_grad must be one of {CONV_KERNEL_GRADS}, got {kernel_grad!r}.')
  if resolve_kernel_grad(kernel_grad) == 'xla':
    return _conv(x, kernel, stride, padding, groups)
  both = _varying(x) | _varying(kernel)
  x, kernel = (jax.lax.pcast(a, tuple(sorted(both - _varying(a))), to='varying')
               for a in (x, kernel))
  return _conv_patches_grad(x, kernel, stride, padding, groups)


def _varying(x: jax.Array) -> frozenset:
  """The mesh axes `x` varies over inside shard_map (none outside)."""
  return jax.typeof(x).mat.varying


def _kernel_grad(x: jax.Array, dy: jax.Array, kh: int, kw: int, stride: int,
                 padding: int) -> jax.Array:
  """dL/dk from the input's patches: one matrix product per kernel row.

  dL/dk[i, j] = sum over (b, h, w) of x_padded[b, stride h + i, stride w + j]
  outer dy[b, h, w]. Row i stacks what its kw taps see, (B*H'*W', kw*C), and
  contracts it with dy, (B*H'*W', O); a loop over the rows keeps one copy of
  that code per layer. On one tower at batch 32 (2-core CPU) this beat one
  product over all kh*kw taps (a larger copy) and one per tap (conv1's C=3
  makes those too thin), and unrolled rows compiled 6x slower.
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_patches_grad(x, kernel, stride, padding, groups):
  """`_conv`, whose kernel gradient is `_kernel_grad`'s matrix products."""
  return _conv(x, kernel, stride, padding, groups)


def _conv_patches_grad_fwd(x, kernel, stride, padding, groups):
  return _conv(x, kernel, stride, padding, groups), (x, kernel)


def _conv_patches_grad_bwd(stride, padding, groups, residuals, dy):
  x, kernel = residuals
  kh, kw, _, _ = kernel.shape
  # The input gradient as XLA derives it (a transposed convolution).
  _, input_vjp = jax.vjp(lambda x: _conv(x, kernel, stride, padding, groups), x)
  # Group g's kernels see only its inputs: one gradient per group, side by side.
  grad = jnp.concatenate([
      _kernel_grad(xg, dyg, kh, kw, stride, padding) for xg, dyg in zip(
          jnp.split(x, groups, axis=-1), jnp.split(dy, groups, axis=-1))],
                         axis=-1).astype(kernel.dtype)
  return input_vjp(dy)[0], grad


_conv_patches_grad.defvjp(_conv_patches_grad_fwd, _conv_patches_grad_bwd)
