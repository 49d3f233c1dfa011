"""The mesh, the sharding rules, and where the towers exchange data.

Two mesh axes say everything: `model` and `data` (config.mesh). What lives
where is data, not code: a strategy is a table of rules mapping the logical
axes arrays carry to mesh axes (as MaxText's logical_axis_rules, big_vision's
sharding_strategy). The logical axes:

  batch     the images of a batch, in the convolutional layers
  tower     the leading axis of every parameter: the towers of Fig. 2
  fc_batch  the batch in the fully connected layers
  fc_units  the output units of the fully connected layers
  fc_in     the inputs of fully connected kernels, as stored (FSDP)

One function, `run_towers`, turns the rules into each device's program
(`jax.shard_map`); `param_shardings` and `batch_sharding` into where the
state and the batch live. A parameter axis that does not divide over its
mesh axis (fc8's 5 classes per tower over 2 devices) is stored whole; each
device pads it with dead units and computes its equal share, and the dead
units are cut off where the shares are gathered (`Towers.unit_share`).
The devices talk only in `Towers`: search for "exchange" to find every
crossing of Fig. 2. Which strategy a run uses is
resolved once from its config (run/settings.py) and handed down as `Rules`.
"""

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any

import jax
from jax import custom_batching
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from alexnet_jax.errors import UserError

DATA = 'data'
MODEL = 'model'
MESH_AXES = (DATA, MODEL)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The mesh a run asks for (configs/default.py: `mesh.*`); -1: the devices left."""
  data: int = -1
  model: int = 1


@dataclasses.dataclass(frozen=True)
class Rules:
  """Logical axis -> mesh axis (None: not split, every device holds it all)."""
  batch: str | None = DATA
  tower: str | None = None
  fc_batch: str | None = DATA
  fc_units: str | None = None
  fc_in: str | None = None


LOGICAL_AXES = tuple(f.name for f in dataclasses.fields(Rules))

STRATEGIES = {
    # 2012 (Sec. 3.2, Fig. 2): one tower per device on `model`, the batch on
    # `data`; the towers talk before conv3, fc6, fc7, fc8 and the softmax.
    'towers': Rules(batch=DATA, tower=MODEL, fc_batch=DATA),
    # Every device holds the whole net and a slice of the batch; gradients
    # are summed over `data`.
    'data': Rules(batch=DATA, fc_batch=DATA),
    # Krizhevsky 2014 ("One weird trick", arXiv 1404.5997): convolutions data
    # parallel, fully connected layers model parallel. Before fc6 every device
    # gathers the whole batch's activations and computes its share of the
    # units; no fc gradient is ever summed across devices.
    'hybrid': Rules(batch=DATA, fc_batch=None, fc_units=DATA),
    # Data parallel, but fc kernels stored split over `data` (their inputs)
    # and gathered when used: the gradients are reduce-scattered.
    'fsdp': Rules(batch=DATA, fc_batch=DATA, fc_in=DATA),
}


@dataclasses.dataclass(frozen=True)
class Logical:
  """A parameter's logical axes (a pytree leaf, unlike a tuple), and its
  shape where known: an axis whose size does not divide is not split."""
  axes: tuple[str | None, ...]
  shape: tuple[int, ...] = ()


def parse_rules(text: str) -> Rules:
  """'batch=data,tower=model,...' -> Rules; every logical axis must be named."""
  pairs = dict(item.split('=', 1) for item in text.replace(' ', '').split(',') if item)
  unknown = sorted(set(pairs) - set(LOGICAL_AXES))
  missing = [a for a in LOGICAL_AXES if a not in pairs]
  if unknown or missing:
    raise ValueError(
        f'unknown logical axes {unknown}' if unknown else
        f'no rule covers the logical axes {missing}')
  return Rules(**{k: v or None for k, v in pairs.items()})


def strategy_mesh_shape(strategy: str, num_devices: int, num_towers: int) -> dict[str, int]:
  """The usual mesh for a strategy: towers on `model`, every other device on `data`."""
  model = num_towers if STRATEGIES[strategy].tower == MODEL else 1
  return {DATA: max(num_devices // model, 1), MODEL: model}


def mesh_shape(mesh: MeshConfig, num_devices: int) -> tuple[int, int]:
  """Resolves (data, model); -1 takes the devices left.

  Raises UserError with the fix when the devices are too few.
  """
  data, model = mesh.data, mesh.model
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


def make_mesh(mesh: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The ('data', 'model') mesh asked for, over the first devices."""
  devices = list(devices if devices is not None else jax.devices())
  data, model = mesh_shape(mesh, len(devices))
  # Auto axes: XLA places whatever shard_map and the shardings leave open.
  return jax.make_mesh(
      (data, model), MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
      devices=devices[:data * model])


def spec(logical: Logical, rules: Rules, sizes=None) -> P:
  """The PartitionSpec of `logical`; with the mesh's axis `sizes`, an axis of
  the parameter that does not divide over its mesh axis stays whole."""
  names = [getattr(rules, a) if a else None for a in logical.axes]
  if sizes and logical.shape:
    names = [n if n is None or size % sizes[n] == 0 else None
             for n, size in zip(names, logical.shape)]
  return P(*names)


def param_shardings(axes_tree, rules: Rules, mesh: Mesh):
  """Each parameter's NamedSharding, from its logical axes (model.param_axes)."""
  return jax.tree.map(lambda l: NamedSharding(mesh, spec(l, rules, mesh.shape)),
                      axes_tree)


def batch_sharding(mesh: Mesh, rules: Rules = STRATEGIES['towers']) -> NamedSharding:
  return NamedSharding(mesh, P(rules.batch))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_data_shard(mesh: Mesh, batch_axis: str | None = DATA) -> tuple[int, int]:
  """(index, count): which slice of each global batch this process loads.

  A process feeds the rows of the batch positions its devices sit on. Along
  other axes it holds the same rows as its peers (towers read the same
  images), so two processes holding one tower each both load the whole batch.
  """
  if batch_axis is None:
    return 0, 1
  axis = mesh.axis_names.index(batch_axis)
  positions = sorted({
      index[axis] for index, device in np.ndenumerate(mesh.devices)
      if device.process_index == jax.process_index()})
  block = len(positions)
  if positions != list(range(positions[0], positions[0] + block)) or (
      mesh.shape[batch_axis] % block):
    raise UserError(
        f'Process {jax.process_index()} holds {batch_axis} positions {positions}'
        f' of the mesh {dict(mesh.shape)}; each process must hold an equal,'
        ' contiguous block. Use the same number of devices in every process.')
  return positions[0] // block, mesh.shape[batch_axis] // block


def current_mesh():
  """The mesh set with `jax.set_mesh`, or None outside one."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


# --- Where the devices talk -------------------------------------------------------


def _size(axis_name: str | None) -> int:
  """Devices along a mesh axis, inside `run_towers` (1: not split)."""
  return jax.lax.axis_size(axis_name) if axis_name else 1


def _gather(x: jax.Array, axis_name: str | None, axis: int,
            to: str = 'varying') -> jax.Array:
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=axis, tiled=True, to=to)


@dataclasses.dataclass(frozen=True)
class Towers:
  """The towers one device computes, and how it reaches the other devices.

  `ids` are global tower numbers (0 = the first half of every layer); the
  other fields are the mesh axes the rules split things over (None: not).
  """

  ids: Sequence[Any]
  rules: Rules = Rules(batch=None, fc_batch=None)

  @property
  def split(self) -> bool:
    return self.rules.tower is not None

  def unit_share(self, kernel: jax.Array, bias: jax.Array,
                 units: int) -> tuple[jax.Array, jax.Array]:
    """This device's share of a fully connected layer's `units` (per tower).

    Where fc units are split (hybrid) but do not divide over the devices,
    the layer arrives whole (`spec`): it is padded with dead units (zero
    kernel and bias) to the next multiple, and this device takes its equal
    share. The dead units' outputs are cut off once the shares are gathered
    (`_whole_units`), so they change nothing, their gradients included.
    """
    n = _size(self.rules.fc_units)
    if units % n == 0:
      return kernel, bias
    share = -(-units // n)
    pad = lambda x: jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, share * n - units)])
    take = lambda x: jax.lax.dynamic_slice_in_dim(
        pad(x), jax.lax.axis_index(self.rules.fc_units) * share, share, x.ndim - 1)
    return take(kernel), take(bias)

  def _whole_units(self, h: jax.Array, units: int | None,
                   to: str = 'varying') -> jax.Array:
    """Every device's share of a layer's units gathered, dead units cut off."""
    h = _gather(h, self.rules.fc_units, 1, to)
    return h if units is None else h[:, :units]

  def exchange(self, halves: Sequence[jax.Array], name: str, *,
               both: bool = True, units: int | None = None) -> list[jax.Array]:
    """Each tower's activations in; what layer `name` reads out.

    One of the places where the 2012 GPUs talked: `name` is the layer that
    reads both towers (conv3, fc6, fc7 or fc8). On one device it is a
    concatenation (channels, tower 0 first); split over the tower axis it is
    an all-gather, whose gradient is a reduce-scatter. Where fc units are
    split (hybrid), each tower's units are gathered first. The named scope
    puts `name` in the HLO's op_name, so `alexnet_jax.describe` can say which
    crossing each collective is. `units`: the units per tower of the layer
    the halves come from.
    """
    with jax.named_scope(name):
      if halves[0].ndim == 2:  # Fully connected outputs, perhaps split by unit.
        halves = [self._whole_units(h, units) for h in halves]
      if not both:
        return list(halves)
      local = jnp.concatenate(halves, axis=-1) if len(halves) > 1 else halves[0]
      local = _gather(local, self.rules.tower, local.ndim - 1)
    return [local] * len(halves)

  def enter_dense(self, hs: Sequence[jax.Array], name: str) -> list[jax.Array]:
    """The hook of the 2014 hybrid: gather the batch before the first fc layer."""
    if self.rules.fc_batch == self.rules.batch:
      return list(hs)
    with jax.named_scope(name):
      return [_gather(h, self.rules.batch, 0) for h in hs]

  def gather_weights(self, kernel: jax.Array, name: str, inputs: int) -> jax.Array:
    """FSDP: an fc kernel stored split over its inputs, gathered for use
    (one whose `inputs` do not divide over the devices is stored whole)."""
    if self.rules.fc_in is None or kernel.shape[0] == inputs:
      return kernel
    with jax.named_scope(f'{name}_weights'):
      return _gather(kernel, self.rules.fc_in, 0)

  def exchange_logits(self, halves: Sequence[jax.Array],
                      units: int | None = None) -> jax.Array:
    """Each tower's logits (`units` per tower) in, all classes out, for the softmax.

    Split over devices, each writes its slice into zeros and a psum adds them:
    the sum is the same on every device by construction (JAX's replication
    check knows it), so the loss needs no further exchange and its gradient
    no collective at all.
    """
    with jax.named_scope('softmax'):
      # The hybrid's logits hold the whole batch: the same on every device.
      to = 'invarying' if self.rules.fc_batch is None else 'varying'
      halves = [self._whole_units(h, units, to) for h in halves]
      local = jnp.concatenate(halves, axis=-1) if len(halves) > 1 else halves[0]
      if not self.split:
        return local
      width = local.shape[-1]
      start = jax.lax.axis_index(self.rules.tower) * width
      full = jnp.zeros(local.shape[:-1] + (width * jax.lax.axis_size(self.rules.tower),),
                       local.dtype)
      full = jax.lax.dynamic_update_slice_in_dim(full, local, start, axis=-1)
      return jax.lax.psum(full, self.rules.tower)

  def dropout_keep(self, rng: jax.Array, layer: int, local: int, shape,
                   rate: float, units: int | None = None) -> jax.Array:
    """Sec. 4.2's mask for one tower's fully connected outputs (`shape`, local;
    `units` per tower, dead ones of `unit_share` not counted).

    Drawn for the whole batch and all units from (layer, tower) alone, then
    this device's block is kept: every strategy and mesh drops the same
    units of the same images, so all of them compute the same function.
    """
    key = jax.random.fold_in(jax.random.fold_in(rng, layer), self.ids[local])
    split = [(0, self.rules.fc_batch), (len(shape) - 1, self.rules.fc_units)]
    full = list(shape)
    for axis, name in split:
      full[axis] *= _size(name)
    padded, full[-1] = full[-1], units or full[-1]
    keep = _bernoulli(key, 1.0 - rate, tuple(full))
    keep = jnp.pad(keep, [(0, 0)] * (keep.ndim - 1) + [(0, padded - full[-1])])
    for axis, name in split:
      if name:
        keep = jax.lax.dynamic_slice_in_dim(
            keep, jax.lax.axis_index(name) * shape[axis], shape[axis], axis)
    return keep


def _bernoulli(key: jax.Array, p: float, shape: tuple[int, ...]) -> jax.Array:
  """`jax.random.bernoulli`, drawn key by key under `jax.vmap`.

  The 'rbg' keys' bits come from XLA's RngBitGenerator, whose batching rule
  draws a whole batch of keys from the first key alone: seeds trained side
  by side under vmap (run/seeds.py) would all drop the units of the first.
  Drawn one key at a time (a loop of the same draws), each seed drops what
  its own run drops; without vmap this is the plain draw.
  """
  return custom_batching.sequential_vmap(
      lambda k: jax.random.bernoulli(k, p, shape))(key)


def run_towers(
    fn: Callable[[Any, jax.Array, jax.Array, Towers], jax.Array],
    params: Any,
    axes: Any,
    images: jax.Array,
    rng: jax.Array,
    num_towers: int,
    rules: Rules | None = None,
) -> jax.Array:
  """Runs `fn(params, images, rng, towers)` as the rules place it; returns logits.

  `fn` computes the towers whose parameters it is given (leading axis of
  every leaf) and calls the `towers` methods where devices must talk.
  Outside a mesh it sees every tower and the exchanges concatenate. Inside
  one, each device runs `fn` on its own part (`jax.shard_map`, in_specs
  from each parameter's logical `axes`), and nothing else crosses.
  """
  mesh = current_mesh()
  if mesh is None:
    return fn(params, images, rng, Towers(ids=list(range(num_towers))))
  if rules is None:
    rules = STRATEGIES['towers' if mesh.shape.get(MODEL, 1) > 1 else 'data']
  n = mesh.shape[rules.tower] if rules.tower else 1
  if num_towers % n:
    raise ValueError(f'{num_towers} tower(s) cannot be split over {n} devices.')
  per_device = num_towers // n

  def per_device_fn(params, images, rng):
    first = jax.lax.axis_index(rules.tower) * per_device if rules.tower else 0
    return fn(params, images, rng,
              Towers(ids=[first + i for i in range(per_device)], rules=rules))

  return jax.shard_map(
      per_device_fn,
      in_specs=(jax.tree.map(lambda l: spec(l, rules, mesh.shape), axes),
                P(rules.batch), P()),
      out_specs=P(rules.fc_batch),
  )(params, images, rng)

