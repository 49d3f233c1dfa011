"""Peak FLOP/s per device kind, what MFU divides by: the table, or measured.

Dense (no sparsity) figures from the vendors' datasheets and Google's TPU
pages, each row naming its source; on CPUs, which vary too much for a
table, a large matrix product is timed instead.
"""

import dataclasses
import re
import time

import jax

from alexnet_jax.core.network import DTYPES
from alexnet_jax.errors import UserError

PEAK_MODES = ('auto', 'table', 'matmul', 'none')


@dataclasses.dataclass(frozen=True)
class Peak:
  """Dense (no sparsity) peak FLOP/s of one JAX device, by compute dtype."""
  kind: str  # A regular expression on `jax.Device.device_kind`.
  name: str
  flops: dict[str, float]  # dtype -> FLOP/s; a dtype missing has no fast path.
  source: str


# First match wins: specific kinds before the families that contain them.
# NVIDIA lists tensor-core rates "with sparsity"; the dense rate is half of
# that. float32 on A100/H100/H200 is TF32, what XLA uses for float32
# convolutions and matmuls at JAX's default precision; V100 has no TF32 and
# no bfloat16 tensor cores. On TPUs a JAX device is one chip, and float32 at
# the default precision is one bfloat16 pass on the MXU, so both use the
# bfloat16 rate.
_NV_H100 = 'NVIDIA H100 Tensor Core GPU datasheet (dense = sparsity figure / 2)'
_NV_H200 = 'NVIDIA H200 Tensor Core GPU datasheet (dense = sparsity figure / 2)'
_TPU_DOC = 'Google Cloud TPU documentation, {} system architecture: peak bf16 per chip'
PEAKS = (
    Peak(r'H100.*NVL', 'H100 NVL', {'bfloat16': 835e12, 'float32': 418e12}, _NV_H100),
    Peak(r'H100.*PCIe', 'H100 PCIe', {'bfloat16': 756e12, 'float32': 378e12}, _NV_H100),
    Peak(r'H100', 'H100 SXM', {'bfloat16': 989e12, 'float32': 495e12}, _NV_H100),
    Peak(r'H200.*NVL', 'H200 NVL', {'bfloat16': 835e12, 'float32': 418e12}, _NV_H200),
    Peak(r'H200', 'H200 SXM', {'bfloat16': 989e12, 'float32': 495e12}, _NV_H200),
    Peak(r'A100', 'A100 (SXM or PCIe)', {'bfloat16': 312e12, 'float32': 156e12},
         'NVIDIA A100 Tensor Core GPU datasheet (dense = sparsity figure / 2)'),
    Peak(r'V100.*PCIE', 'V100 PCIe', {'float32': 14e12},
         'NVIDIA V100 Tensor Core GPU datasheet (FP32; no bf16 tensor cores)'),
    Peak(r'V100', 'V100 SXM2', {'float32': 15.7e12},
         'NVIDIA V100 Tensor Core GPU datasheet (FP32; no bf16 tensor cores)'),
    Peak(r'^TPU v4$', 'TPU v4', {'bfloat16': 275e12, 'float32': 275e12},
         _TPU_DOC.format('v4')),
    Peak(r'^TPU v5 ?lite|v5e', 'TPU v5e', {'bfloat16': 197e12, 'float32': 197e12},
         _TPU_DOC.format('v5e')),
    Peak(r'^TPU v5p?$', 'TPU v5p', {'bfloat16': 459e12, 'float32': 459e12},
         _TPU_DOC.format('v5p')),
    Peak(r'^TPU v6 ?lite|v6e', 'TPU v6e', {'bfloat16': 918e12, 'float32': 918e12},
         _TPU_DOC.format('v6e (Trillium)')),
)


def table_peak(device_kind: str, dtype: str) -> tuple[float, str] | None:
  """(FLOP/s, source) for one device of this kind, or None if not listed."""
  for peak in PEAKS:
    if re.search(peak.kind, device_kind) and dtype in peak.flops:
      return peak.flops[dtype], f'table: {peak.name}, {dtype}; {peak.source}'
  return None


def measured_peak(dtype: str, size: int, device) -> tuple[float, str]:
  """FLOP/s of a size x size matrix product on `device`: best of 3 timings."""
  key = jax.random.split(jax.random.key(0))
  a, b = (jax.device_put(jax.random.normal(k, (size, size), DTYPES[dtype]),
                         device) for k in key)
  matmul = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(matmul(a, b))
  # Several products back to back, so dispatch does not count on fast devices.
  iters = 2 if device.platform == 'cpu' else 20
  best = float('inf')
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(iters):
      out = matmul(a, b)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / iters)
  return 2 * size ** 3 / best, (f'measured: {size}x{size} {dtype} matmul on one'
                                f' {device.platform} device, best of 3')


def peaks(device, dtypes: list[str], mode: str, matmul_size: int
          ) -> dict[str, tuple[float, str] | None]:
  """The peak per dtype that MFU divides by; raises UserError if unknown."""
  out = {}
  for dtype in dtypes:
    if mode == 'none':
      out[dtype] = None
      continue
    listed = table_peak(device.device_kind, dtype)
    # CPUs vary too much for a table: measure them unless told otherwise.
    if mode == 'matmul' or (mode == 'auto' and device.platform == 'cpu'):
      out[dtype] = None  # Measured later, once everything is validated.
    elif listed is None:
      kinds = ', '.join(sorted({p.name for p in PEAKS}))
      raise UserError(
          f'No peak rate is known for {dtype} on device kind'
          f' {device.device_kind!r} (known: {kinds}), so MFU cannot be given.'
          ' Pass --peak=matmul to measure one with a large matrix product, or'
          ' --peak=none to leave MFU out.')
    else:
      out[dtype] = listed
  return out
