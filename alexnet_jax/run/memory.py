"""Will the run fit? Parameter and activation memory, from shapes alone.

Everything here is traced (`jax.eval_shape` through `core.train_state` and
`core.model.layer_shapes`), never allocated, so a config that would need
36 GiB or 2e13 parameters is refused in a second instead of crashing (or swapping)
minutes later. The estimate is a floor, not a forecast: XLA's scratch space
and the input pipeline's buffers come on top, so only a run that cannot fit
is refused.
"""

import dataclasses
import math
from pathlib import Path

import jax

from alexnet_jax.core import model
from alexnet_jax.core import train_state
from alexnet_jax.core.network import DTYPES
from alexnet_jax.errors import UserError

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Estimate:
  state: int  # Bytes per device: parameters and optimiser state, as sharded.
  gradients: int  # Bytes per device: one gradient per parameter shard.
  activations: int  # Bytes per device: what the backward pass keeps.
  devices: int  # Devices of the mesh on this host, sharing host memory on CPU.

  @property
  def per_device(self) -> int:
    return self.state + self.gradients + self.activations


def estimate(settings, mesh) -> Estimate:
  """Bytes one device of `mesh` needs for a train step of `settings`."""
  cfg = settings.model
  abstract = train_state.abstract_state(cfg, settings.optimizer)
  shardings = train_state.state_shardings(
      abstract, settings.optimizer, settings.rules, mesh)
  shard_bytes = lambda x, s: math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
  state = sum(jax.tree.leaves(jax.tree.map(shard_bytes, abstract, shardings)))
  gradients = sum(jax.tree.leaves(jax.tree.map(
      shard_bytes, abstract.params, shardings.params)))
  itemsize = jax.numpy.dtype(DTYPES[cfg.dtype]).itemsize
  # Per image: the input, then every layer's and pool's output in every
  # tower; the backward pass holds them all, and their gradients as it goes.
  per_image = 3 * cfg.image_size ** 2 * 4 + 2 * itemsize * cfg.network.towers * sum(
      math.prod(shape) for shape in model.layer_shapes(cfg).values())
  activations = settings.data.batch_size * per_image // mesh.devices.size
  local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
  return Estimate(state, gradients, activations, local)


def available() -> tuple[int | None, str]:
  """(bytes one device can hold, where that figure comes from)."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    free = stats['bytes_limit'] - stats.get('bytes_in_use', 0)
    return free, f'{device} (free of its bytes_limit)'
  return host_available(), 'this host (MemAvailable in /proc/meminfo)'


def host_available() -> int | None:
  try:
    for line in Path('/proc/meminfo').read_text().splitlines():
      if line.startswith('MemAvailable:'):
        return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def check_fits(settings, mesh) -> Estimate:
  """Raises UserError if a train step of `settings` cannot fit the devices."""
  need = estimate(settings, mesh)
  limit, where = available()
  on_host = 'host' in where
  total = need.per_device * (need.devices if on_host else 1)
  if limit is not None and total > limit:
    each = f' on each of {need.devices} devices' if need.devices > 1 else ''
    raise UserError(
        f'This config needs at least {_gib(total)} to train, more than the'
        f' {_gib(limit)} available on {where}: {_gib(need.state)} of'
        f' parameters and optimiser state, {_gib(need.gradients)} of gradients'
        f' and {_gib(need.activations)} of activations for batch_size='
        f'{settings.data.batch_size} at image_size={settings.model.image_size}'
        f'{each} (model.width={settings.model.width}). Lower batch_size, image_size'
        ' or model.width, or spread the run over more devices.')
  return need


def _gib(n: int) -> str:
  return f'{n / GiB:,.1f} GiB' if n >= GiB / 10 else f'{n / (1 << 20):,.1f} MiB'
