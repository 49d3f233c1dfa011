"""The mesh, where each array lives, and where the two towers exchange data.

Two mesh axes say everything (Sec. 3.2 of the paper, Fig. 2):

  * `model`: splits the towers. With `model=2` each device holds one tower,
    i.e. half of every layer, as the two GTX 580s did in 2012.
  * `data`: splits the batch; every device along it holds the same towers.

Every parameter carries its tower on its leading axis, so one rule places all
of them: the tower axis goes to `model`. Images and labels go to `data`.

The towers talk only in `exchange` (activations, before conv3, fc6, fc7, fc8)
and `exchange_logits` (the softmax over all classes). Search for "exchange"
to find every crossing.
"""

from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from alexnet_jax.errors import UserError

DATA = 'data'
MODEL = 'model'

# Logical axis -> mesh axis: the one sharding table of the project.
TOWER_AXIS = MODEL  # The leading axis of every parameter.
BATCH_AXIS = DATA  # The leading axis of every batch.


def mesh_shape(config, num_devices: int) -> tuple[int, int]:
  """Resolves (data, model) from the config; -1 takes the devices left."""
  data, model = config.mesh.data, config.mesh.model
  if model < 1 or data == 0 or data < -1:
    raise UserError(
        f'mesh.model must be >= 1 and mesh.data >= 1 or -1 (all devices left);'
        f' got mesh.data={data}, mesh.model={model}.')
  if data == -1:
    data = max(num_devices // model, 1)
  if data * model > num_devices:
    raise UserError(
        f'The config asks for a mesh of {data} x {model} = {data * model} devices'
        f' (mesh.data x mesh.model) but JAX found {num_devices}'
        f' ({jax.default_backend()}). On a machine without enough accelerators,'
        ' give JAX host devices before it starts, e.g.'
        f' XLA_FLAGS=--xla_force_host_platform_device_count={data * model}'
        ' (the CLIs do this by themselves on CPU), or use configs/one_gpu.py,'
        ' or pass --config.mesh.model=1 --config.strategy=data.')
  return data, model


def make_mesh(config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The ('data', 'model') mesh the config asks for."""
  devices = list(devices if devices is not None else jax.devices())
  data, model = mesh_shape(config, len(devices))
  # Auto axes: XLA places whatever shard_map and the shardings leave open.
  return jax.make_mesh(
      (data, model), (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto),
      devices=devices[:data * model])


def param_sharding(mesh: Mesh) -> NamedSharding:
  """Every parameter: tower axis (leading) on `model`, replicated on `data`."""
  return NamedSharding(mesh, P(TOWER_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXIS))


def process_data_shard(mesh: Mesh) -> tuple[int, int]:
  """(index, count): which slice of each global batch this process loads.

  A process feeds the rows of the `data` positions its devices sit on. Over
  `model` it holds the same rows as its peers (towers read the same images),
  so two processes holding one tower each both load the whole batch.
  """
  data_axis = mesh.axis_names.index(DATA)
  positions = sorted({
      index[data_axis] for index, device in np.ndenumerate(mesh.devices)
      if device.process_index == jax.process_index()})
  block = len(positions)
  if positions != list(range(positions[0], positions[0] + block)) or (
      mesh.shape[DATA] % block):
    raise UserError(
        f'Process {jax.process_index()} holds data positions {positions} of'
        f' the mesh {dict(mesh.shape)}; each process must hold an equal,'
        ' contiguous block. Use the same number of devices in every process.')
  return positions[0] // block, mesh.shape[DATA] // block


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def current_mesh():
  """The mesh set with `jax.set_mesh`, or None outside one."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def model_axis_size() -> int:
  mesh = current_mesh()
  return 1 if mesh is None or MODEL not in mesh.axis_names else mesh.shape[MODEL]


# --- Where the towers talk ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Towers:
  """The towers one device computes, and how they reach the others.

  `ids` are global tower numbers (0 = the first half of every layer).
  `split` is True when the towers are spread over the `model` axis.
  """

  ids: Sequence[Any]
  split: bool = False

  def exchange(self, halves: Sequence[jax.Array], name: str) -> list[jax.Array]:
    """Each tower's half in, both towers' activations out (channels, tower 0 first).

    One of the four places where the 2012 GPUs talked: `name` is the layer
    that reads both towers (conv3, fc6, fc7 or fc8). On one device it is a
    concatenation; split over the `model` axis it is an all-gather, whose
    gradient is a reduce-scatter. The named scope puts `name` in the HLO's
    op_name, so a profile or `alexnet_jax.inspect` can say which crossing
    each collective is.
    """
    with jax.named_scope(name):
      local = jnp.concatenate(halves, axis=-1) if len(halves) > 1 else halves[0]
      if self.split:
        local = jax.lax.all_gather(local, MODEL, axis=local.ndim - 1, tiled=True)
    return [local] * len(halves)

  def exchange_logits(self, halves: Sequence[jax.Array]) -> jax.Array:
    """Each tower's fc8 logits in, all classes out, for the softmax.

    Split over devices, each writes its slice into zeros and a psum adds them:
    the sum is the same on every device by construction (JAX's replication
    check knows it), so the loss needs no further exchange and its gradient
    no collective at all.
    """
    with jax.named_scope('softmax'):
      local = jnp.concatenate(halves, axis=-1) if len(halves) > 1 else halves[0]
      if not self.split:
        return local
      width = local.shape[-1]
      start = jax.lax.axis_index(MODEL) * width
      full = jnp.zeros(local.shape[:-1] + (width * jax.lax.axis_size(MODEL),),
                       local.dtype)
      full = jax.lax.dynamic_update_slice_in_dim(full, local, start, axis=-1)
      return jax.lax.psum(full, MODEL)


def run_towers(
    fn: Callable[[Any, jax.Array, jax.Array, Towers], jax.Array],
    params: Any,
    images: jax.Array,
    rng: jax.Array,
    num_towers: int,
) -> jax.Array:
  """Runs `fn(params, images, rng, towers)` over the towers; returns logits.

  `fn` computes the towers whose parameters it is given (leading axis of
  every leaf) and calls `towers.exchange` where they must talk. Without a
  mesh, or with `model=1`, it sees every tower and the exchange concatenates
  (XLA splits the batch over `data` by itself). With `model=n`, each device
  runs `fn` on its own towers under `jax.shard_map`, and nothing else
  crosses between devices.
  """
  n = model_axis_size()
  if n == 1:
    # Fold in data shard 0, as the split path does, so both draw the same masks.
    rng = jax.random.fold_in(rng, 0)
    return fn(params, images, rng, Towers(ids=list(range(num_towers))))
  if num_towers % n:
    raise UserError(
        f'The network has {num_towers} tower(s), which cannot be split over a'
        f' model axis of {n} devices. Use --config.strategy=data with'
        ' --config.mesh.model=1 for single-tower variants.')
  per_device = num_towers // n

  def per_device_fn(params, images, rng):
    first = jax.lax.axis_index(MODEL) * per_device
    # Dropout masks differ between data shards (and, by id, between towers).
    rng = jax.random.fold_in(rng, jax.lax.axis_index(DATA))
    towers = Towers(ids=[first + i for i in range(per_device)], split=True)
    return fn(params, images, rng, towers)

  return jax.shard_map(
      per_device_fn,
      in_specs=(P(TOWER_AXIS), P(BATCH_AXIS), P()),
      out_specs=P(BATCH_AXIS),
  )(params, images, rng)


def shard_count(x: jax.Array) -> int:
  """How many distinct pieces an array is split into (for tests and inspect)."""
  return math.prod(
      x.sharding.mesh.shape[a] for a in jax.tree.leaves(tuple(x.sharding.spec)))
