"""What the benchmark compares: placements of one network, each compiled and run.

A placement is one strategy's rules on its usual mesh over all devices
(`parallel.strategy_mesh_shape`), or the one-device baseline (`one_device`:
both towers and the whole batch on the first device), at one batch size and
dtype. Each gets its own sharded copy of one initial state and a batch on
its devices, and the train step exactly as training builds it
(`core.steps.make_train_step`), compiled from its own graphdef.
"""

import dataclasses
import os
import time

import jax
import numpy as np

from alexnet_jax.core import model
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core import steps
from alexnet_jax.core import train_state
from alexnet_jax.core.network import NETWORKS
from alexnet_jax.errors import UserError
from alexnet_jax.run import launch
from alexnet_jax.run import validation
from alexnet_jax.run.settings import with_strategy

BASELINE = 'one_device'
ALL = 'all'  # --strategies=all: every strategy of parallel.STRATEGIES that fits.


@dataclasses.dataclass
class Placement:
  """One mesh under one setting, and what it measured."""
  name: str
  settings: object  # With this placement's mesh, strategy, batch, dtype.
  mesh: object = None
  step: object = None  # The compiled train step.
  state: object = None
  batch: object = None
  compile_seconds: float = 0.0
  compiled_flops_per_device: float | None = None
  compiled_peak_bytes: int | None = None
  seconds: list[float] = dataclasses.field(default_factory=list)


def placed(settings, *, strategy: str, data: int, model_axis: int,
           batch_size: int, dtype: str):
  """`settings` with this mesh, strategy (its own table), batch and dtype."""
  settings = with_strategy(settings, strategy, data=data, model=model_axis)
  return dataclasses.replace(
      settings, model=dataclasses.replace(settings.model, dtype=dtype),
      data=dataclasses.replace(settings.data, batch_size=batch_size))


def placements(settings, *, strategies: list[str], num_devices: int,
               batch_size: int, dtype: str) -> list[Placement]:
  """The baseline and each strategy's mesh, each validated; raises UserError."""
  towers = settings.model.network.towers
  wanted = [(BASELINE, 'data', 1, 1)]
  for s in strategies:
    mesh = parallel.strategy_mesh_shape(s, num_devices, towers)
    wanted.append((s, s, mesh[parallel.DATA], mesh[parallel.MODEL]))
  out = []
  for name, strategy, d, m in wanted:
    p = placed(settings, strategy=strategy, data=d, model_axis=m,
               batch_size=batch_size, dtype=dtype)
    try:
      validation.validate(p, num_devices=num_devices)
    except UserError as e:
      raise UserError(
          f'The benchmark runs {name} (strategy={strategy}, mesh.data={d},'
          f' mesh.model={m}) at batch {batch_size}, {dtype}, which the config'
          f' checks reject: {e}') from None
    out.append(Placement(name, p))
  return out


def synthetic_batch(settings) -> dict[str, np.ndarray]:
  """Images N(0, 1) and uniform labels: the shapes the pipeline yields."""
  rng = np.random.default_rng(settings.seed)
  size, n = settings.model.image_size, settings.data.batch_size
  return {
      'image': rng.standard_normal((n, size, size, 3), dtype=np.float32),
      'label': rng.integers(0, settings.model.num_classes, n, dtype=np.int32),
  }


def compiled_flops(compiled) -> float | None:
  """XLA's FLOP count for one device's program, where the backend gives one."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None  # Some backends do not implement it.
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def _compiled_peak_bytes(compiled) -> int | None:
  """Per device: XLA's peak of the program's buffers (arguments included)."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if stats is None:
    return None
  peak = getattr(stats, 'peak_memory_in_bytes', 0)
  if peak > 0:
    return int(peak)
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def allocator_peaks(devices) -> list[int] | None:
  """The allocator's peak bytes per device since the process started."""
  found = []
  for d in devices:
    stats = d.memory_stats()
    if not stats or 'peak_bytes_in_use' not in stats:
      return None  # CPU keeps none.
    found.append(int(stats['peak_bytes_in_use']))
  return found


def initial_state(settings):
  """The train state on the host, initialised once.

  Every placement and setting starts from these same numbers: parameters are
  float32 whatever the compute dtype or kernel gradient (those live in the
  modules, so in each placement's graphdef, not in the state). Initialising
  once saves a compile of the initialiser per mesh.
  """
  one = placed(settings, strategy='data', data=1, model_axis=1,
               batch_size=settings.data.batch_size, dtype=settings.model.dtype)
  _, state = train_state.create_train_state(
      one.model, one.optimizer, one.seed, one.rules, parallel.make_mesh(one.mesh))
  return jax.device_get(state)


def prepare(p: Placement, host_state, batch: dict[str, np.ndarray]) -> None:
  """State and batch on the devices, and the compiled step (timed).

  The step is built from the placement's own graphdef: its compute dtype and
  kernel gradient are in the modules, so one graphdef shared by every
  setting would time one setting again and again.
  """
  s = p.settings
  p.mesh = parallel.make_mesh(s.mesh, devices=jax.devices())
  shardings = train_state.state_shardings(
      train_state.abstract_state(s.model, s.optimizer), s.optimizer, s.rules, p.mesh)
  # From host memory: a copy per placement (no buffers shared, since every
  # step donates its state), each device given only its part.
  p.state = jax.device_put(host_state, shardings)
  # The schedule is scalar arithmetic: placeholder counts spare the dataset.
  lr_fn = optim.learning_rate_fn(s.optimizer, steps_per_epoch=1, num_steps=1)
  train_step = steps.make_train_step(
      model.graphdef(s.model), s.optimizer, s.rules, lr_fn, shardings)
  p.batch = steps.device_batch(batch, p.mesh, s.rules)
  jax.block_until_ready((p.state, p.batch))
  start = time.perf_counter()
  with jax.set_mesh(p.mesh):
    p.step = train_step.lower(p.state, p.batch).compile()
  p.compile_seconds = time.perf_counter() - start
  p.compiled_flops_per_device = compiled_flops(p.step)
  p.compiled_peak_bytes = _compiled_peak_bytes(p.step)


def run_steps(p: Placement, count: int, batches=None) -> float:
  """Seconds for `count` steps, waiting for the last one to finish.

  With `batches` (real input), each step first takes the next batch from
  the pipeline and copies it to the devices, inside the timing.
  """
  start = time.perf_counter()
  state, metrics = p.state, None
  for _ in range(count):
    batch = (p.batch if batches is None
             else steps.device_batch(next(batches), p.mesh, p.settings.rules))
    state, metrics = p.step(state, batch)  # The old state is donated.
  jax.block_until_ready((state, metrics))
  p.state = state
  return time.perf_counter() - start


def provide_host_devices(settings, strategies, num_devices: int = 0,
                         cpus: int = 1) -> None:
  """Before JAX starts: `num_devices` host devices, or as many as the
  settings' mesh or the towers strategy needs, and at least `cpus` (host
  devices exist beside accelerators too: the link prediction compiles on them)."""
  network = NETWORKS.get(settings.model.variant)
  wanted = num_devices or max(
      cpus, network.towers if network and ({'towers', ALL} & set(strategies)) else 1,
      max(settings.mesh.data, 1) * settings.mesh.model)
  launch.provide_host_devices(parallel.MeshConfig(data=wanted, model=1))


def cpu_name() -> str:
  """The host CPU's model name, as /proc/cpuinfo says it."""
  import platform  # pylint: disable=import-outside-toplevel
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None
