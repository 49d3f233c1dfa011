"""The roofline bound of a train step: no step can beat its FLOPs at the peak
rate, nor its bytes at the memory bandwidth, layer by layer.

Per layer and step (batch B, compute dtype of b bytes per element; activation
and kernel sizes summed over the towers, as each tower's op reads them):

    FLOPs  core.flops.train_flops_per_layer x B (forward, kernel and input
           gradients: the convolutions and matrix products only)
    bytes  b x (B x (2 in + 2 out + din) + 3 W), the least each op must move:
           forward reads its input (in) and kernel (W) and writes its output
           (out); backward reads the output gradient (out) and the input (in)
           and the kernel (W), writes the input gradient (din = in; none at
           conv1) and the kernel gradient (W). Biases count in W.
    update 5 x 4 bytes per parameter (float32 parameters, momentum and
           gradient read; parameters and momentum written), no FLOPs counted.

Not counted: ReLU, LRN, pooling, dropout and the loss, which would move no
extra bytes if fused into the convolutions' epilogues; so the bound is a
floor, and the gap to it includes their traffic. On n devices both work and
bytes are taken as divided evenly (n x peak, n x bandwidth).

bound(layer) = max(FLOPs / peak, bytes / bandwidth); the step's bound is the
sum over layers plus the update (the layers run one after another). A row's
fraction of the roofline reached = bound / measured seconds per step.

Memory bandwidth per device kind is from the vendors' datasheets and Google's
TPU pages, each row naming its source; CPUs are not in the table (their
bandwidth depends on the board, channels and DIMMs): there is no roofline on
CPU, never an invented one.
"""

import dataclasses
import math
import re

from alexnet_jax.core import flops
from alexnet_jax.core import model
from alexnet_jax.core.network import ModelConfig
from alexnet_jax.errors import UserError

ROOFLINE_MODES = ('auto', 'on', 'off')  # auto: where the device kind is known.
UPDATE_BYTES_PER_PARAM = 5 * 4
_BYTES = {'float32': 4, 'bfloat16': 2}
COUNTED = ('Roofline bytes: each convolution and matrix product reads its'
           ' input and kernel and writes its output, backward reads the output'
           ' gradient, input and kernel and writes the input and kernel'
           ' gradients, in the compute dtype; the update moves 20 bytes per'
           ' parameter (float32); ReLU, LRN, pooling and the loss are not'
           ' counted (a floor); work and bytes divided evenly over the devices')


@dataclasses.dataclass(frozen=True)
class Bandwidth:
  """Peak memory bandwidth of one JAX device (one GPU, one TPU chip)."""
  kind: str  # A regular expression on `jax.Device.device_kind`.
  name: str
  bytes_per_sec: float
  source: str


_TPU_DOC = 'Google Cloud TPU documentation, {} system architecture: HBM bandwidth per chip'
# First match wins: specific kinds before the families that contain them.
BANDWIDTHS = (
    Bandwidth(r'H100.*NVL', 'H100 NVL', 3.9e12, 'NVIDIA H100 Tensor Core GPU datasheet'),
    Bandwidth(r'H100.*PCIe', 'H100 PCIe', 2.0e12, 'NVIDIA H100 Tensor Core GPU datasheet'),
    Bandwidth(r'H100', 'H100 SXM', 3.35e12, 'NVIDIA H100 Tensor Core GPU datasheet'),
    Bandwidth(r'H200', 'H200 (SXM or NVL)', 4.8e12, 'NVIDIA H200 Tensor Core GPU datasheet'),
    Bandwidth(r'A100.*SXM.*80GB', 'A100 80GB SXM', 2.039e12,
              'NVIDIA A100 Tensor Core GPU datasheet'),
    Bandwidth(r'A100.*80GB', 'A100 80GB PCIe', 1.935e12,
              'NVIDIA A100 Tensor Core GPU datasheet'),
    Bandwidth(r'A100', 'A100 40GB', 1.555e12, 'NVIDIA A100 Tensor Core GPU datasheet'),
    Bandwidth(r'V100', 'V100 (SXM2 or PCIe)', 900e9,
              'NVIDIA V100 Tensor Core GPU datasheet'),
    Bandwidth(r'^TPU v4$', 'TPU v4', 1.2e12, _TPU_DOC.format('v4')),
    Bandwidth(r'^TPU v5 ?lite|v5e', 'TPU v5e', 819e9, _TPU_DOC.format('v5e')),
    Bandwidth(r'^TPU v5p?$', 'TPU v5p', 2.765e12, _TPU_DOC.format('v5p')),
    Bandwidth(r'^TPU v6 ?lite|v6e', 'TPU v6e', 1.64e12, _TPU_DOC.format('v6e (Trillium)')),
)


def table_bandwidth(device_kind: str) -> tuple[float, str] | None:
  """(bytes/s, source) for one device of this kind, or None if not listed."""
  for b in BANDWIDTHS:
    if re.search(b.kind, device_kind):
      return b.bytes_per_sec, f'table: {b.name}; {b.source}'
  return None


def bandwidth(device_kind: str, mode: str) -> tuple[float, str] | None:
  """The bandwidth the roofline uses, None where it is not known (mode auto)
  or not wanted (off); raises UserError for mode 'on' on an unknown kind."""
  if mode == 'off':
    return None
  found = table_bandwidth(device_kind)
  if found is None and mode == 'on':
    kinds = ', '.join(b.name for b in BANDWIDTHS)
    raise UserError(
        f'No memory bandwidth is known for device kind {device_kind!r} (known:'
        f' {kinds}; CPUs are not listed, their bandwidth depends on the'
        ' board), so no roofline bound can be given; the benchmark does not'
        ' guess one. Pass --roofline=auto to run without it.')
  return found


def unknown_reason(device_kind: str) -> str:
  return (f'no roofline: the memory bandwidth of device kind {device_kind!r}'
          ' is not in the table (tools/benchmarking/roofline.py), and none is'
          ' guessed')


def layer_costs(cfg: ModelConfig, batch_size: int, dtype: str) -> list[dict]:
  """FLOPs and the least bytes of each layer's train step, plus the update;
  see the module docstring for what is counted."""
  b = _BYTES[dtype]
  towers = cfg.network.towers
  inputs, outputs = model.input_shapes(cfg), model.layer_shapes(cfg)
  layer_flops = flops.train_flops_per_layer(cfg)
  first = cfg.network.layers[0].name
  rows, params = [], 0
  for layer in cfg.network.layers:
    cin, cout = inputs[layer.name][-1], outputs[layer.name][-1]
    taps = 1 if layer.dense else layer.kernel ** 2
    weights = towers * (taps * cin + 1) * cout  # Kernel and bias.
    params += weights
    act_in = towers * math.prod(inputs[layer.name][1:])
    act_out = towers * math.prod(outputs[layer.name])
    activations = 2 * act_in + 2 * act_out + (0 if layer.name == first else act_in)
    rows.append({'layer': layer.name, 'flops': layer_flops[layer.name] * batch_size,
                 'bytes': b * (batch_size * activations + 3 * weights)})
  rows.append({'layer': 'update', 'flops': 0,
               'bytes': UPDATE_BYTES_PER_PARAM * params})
  return rows


def bound(costs: list[dict], peak: float, bytes_per_sec: float,
          devices: int = 1) -> dict:
  """Per layer: seconds at the roofline and which limit it is; the step's."""
  layers = []
  for c in costs:
    compute = c['flops'] / (devices * peak)
    memory = c['bytes'] / (devices * bytes_per_sec)
    layers.append(c | {
        'flops_per_byte': c['flops'] / c['bytes'],
        'bound_seconds': max(compute, memory),
        'limited_by': 'compute' if compute >= memory else 'memory'})
  return {'layers': layers,
          'bound_seconds': sum(l['bound_seconds'] for l in layers),
          'flops': sum(c['flops'] for c in costs),
          'bytes': sum(c['bytes'] for c in costs)}
