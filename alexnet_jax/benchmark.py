"""Train-step throughput of one network under several placements, side by side.

    python -m alexnet_jax.benchmark --config=configs/two_gpu.py \
        [--steps=10] [--warmup=2] [--repeats=3] [--json]

The same network, batch and step (train.make_train_step, as training runs it)
on up to three meshes over the devices the config's mesh uses:

  * `one_device`: data=1, model=1 on the first device, both towers on it;
    the baseline every ratio is taken against.
  * `model_split`: the config's mesh when it splits the towers (model > 1):
    one tower per device, as in 2012.
  * `data_parallel`: data=n, model=1 over the same n devices: every device
    holds both towers and a slice of the batch.

Each placement gets its own sharded copy of one initial state and a random
batch already on its devices (no dataset is read), is compiled (timed apart)
and warmed up, then
`steps` steps are timed, `repeats` times, interleaved across placements
(a, b, c, a, b, c, ...) so that a noisy machine slows all of them alike.
Reported: the median images/s per placement, its ratio to `one_device`, and
the train step's FLOPs per image from XLA's cost analysis. `--json` prints
one JSON object holding every figure and how it was obtained.

On CPU the host devices share the same cores, so a split cannot add compute:
the ratios there measure overheads, not what two GPUs would give.
"""

import dataclasses
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time

from absl import flags
import flax
import jax
import jaxlib
import numpy as np

from alexnet_jax import cli
from alexnet_jax import parallel
from alexnet_jax import validation
from alexnet_jax.errors import UserError

BASELINE = 'one_device'


@dataclasses.dataclass
class Placement:
  """One mesh under test, and what it measured."""
  name: str
  config: object  # The config with this placement's mesh and strategy.
  from_config: bool  # The mesh the config itself asks for.
  mesh: object = None
  step: object = None  # The compiled train step.
  state: object = None
  batch: object = None
  compile_seconds: float = 0.0
  compiled_flops_per_device: float | None = None
  seconds: list[float] = dataclasses.field(default_factory=list)


def with_mesh(config, data: int, model: int):
  """`config` on a (data, model) mesh, with the strategy that mesh implies."""
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.model = data, model
  config.strategy = 'towers' if model > 1 else 'data'
  return config


def placements(config, num_devices: int) -> list[Placement]:
  """The meshes to compare, each validated; raises UserError."""
  data, model = parallel.mesh_shape(config, num_devices)
  used = data * model
  wanted = [(BASELINE, 1, 1)]
  if model > 1:
    wanted.append(('model_split', data, model))
  if used >= 2:
    wanted.append(('data_parallel', used, 1))
  out = []
  for name, d, m in wanted:
    placed = with_mesh(config, d, m)
    try:
      validation.validate(placed, num_devices=num_devices)
    except UserError as e:
      raise UserError(f'The benchmark runs the config on a {name} mesh'
                      f' (mesh.data={d}, mesh.model={m}), which it rejects: {e}'
                      ) from None
    out.append(Placement(name, placed, from_config=(d, m) == (data, model)))
  return out


def synthetic_batch(config) -> dict[str, np.ndarray]:
  """Images N(0, 1) and uniform labels: the shapes input_pipeline yields."""
  rng = np.random.default_rng(config.seed)
  size, n = config.image_size, config.batch_size
  return {
      'image': rng.standard_normal((n, size, size, 3), dtype=np.float32),
      'label': rng.integers(0, config.model.num_classes, n, dtype=np.int32),
  }


def _flops(compiled) -> float | None:
  """XLA's FLOP count for one device's program, where the backend gives one."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None  # Some backends do not implement it.
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per program.
    cost = cost[0] if cost else None
  flops = (cost or {}).get('flops')
  return float(flops) if flops and flops > 0 else None


def initial_state(config):
  """(graphdef, the train state on the host), initialised once.

  Every placement starts from these same numbers. Initialising once saves a
  compile of the initialiser per mesh (5-15 s each on a 2-core CPU).
  """
  from alexnet_jax import train  # pylint: disable=import-outside-toplevel
  mesh = parallel.make_mesh(with_mesh(config, 1, 1), devices=jax.devices())
  graphdef, state = train.create_train_state(config, mesh)
  return graphdef, jax.device_get(state)


def prepare(p: Placement, graphdef, host_state, batch: dict[str, np.ndarray]
            ) -> None:
  """State and batch on the devices, and the compiled step (timed)."""
  # Not at the top: train imports TensorFlow (input pipeline), seconds that a
  # bad config should not wait for.
  from alexnet_jax import train  # pylint: disable=import-outside-toplevel
  p.mesh = parallel.make_mesh(p.config, devices=jax.devices())
  shardings = train.state_shardings(host_state, p.mesh)
  # From host memory: a copy per placement (no buffers shared, since every
  # step donates its state), each device given only its part.
  p.state = jax.device_put(host_state, shardings)
  # The schedule is scalar arithmetic: placeholder counts spare the dataset.
  lr_fn = train.learning_rate_fn(p.config, steps_per_epoch=1, num_steps=1)
  step = train.make_train_step(p.config, graphdef, lr_fn, shardings)
  p.batch = train.device_batch(batch, p.mesh)
  jax.block_until_ready((p.state, p.batch))
  start = time.perf_counter()
  with jax.set_mesh(p.mesh):
    p.step = step.lower(p.state, p.batch).compile()
  p.compile_seconds = time.perf_counter() - start
  p.compiled_flops_per_device = _flops(p.step)


def run_steps(p: Placement, steps: int) -> float:
  """Seconds for `steps` steps, waiting for the last one to finish."""
  start = time.perf_counter()
  state, metrics = p.state, None
  for _ in range(steps):
    state, metrics = p.step(state, p.batch)  # The old state is donated.
  jax.block_until_ready((state, metrics))
  p.state = state
  return time.perf_counter() - start


def measure(config, *, steps: int, warmup: int, repeats: int,
            command: str, say=lambda message: None) -> dict:
  """Runs every placement and returns the report (plain JSON-able values)."""
  if jax.process_count() > 1:
    raise UserError('The benchmark runs in one process; start it on one host'
                    ' (it uses that host\'s devices).')
  load_before = _load_average()
  runs = placements(config, jax.device_count())
  batch = synthetic_batch(config)
  say('initialising the state...')
  start = time.perf_counter()
  graphdef, host_state = initial_state(config)
  init_seconds = time.perf_counter() - start
  for p in runs:
    say(f'{p.name}: placing the state and compiling...')
    prepare(p, graphdef, host_state, batch)
    say(f'{p.name}: compiled in {p.compile_seconds:.1f} s; {warmup} warm-up'
        ' step(s).')
    if warmup:
      run_steps(p, warmup)
  for r in range(repeats):
    for p in runs:  # Interleaved: a noisy stretch hits every placement.
      p.seconds.append(run_steps(p, steps))
    say(f'repeat {r + 1}/{repeats}: ' + ', '.join(
        f'{p.name} {steps * config.batch_size / p.seconds[-1]:.1f} images/s'
        for p in runs))
  return _report(config, runs, steps=steps, warmup=warmup, repeats=repeats,
                 command=command, load_before=load_before,
                 init_seconds=init_seconds)


def _report(config, runs, *, steps, warmup, repeats, command, load_before,
            init_seconds) -> dict:
  batch = config.batch_size
  base = runs[0]
  assert base.name == BASELINE
  # The network's work per image: the whole step on one device, where nothing
  # is repeated per device (data_parallel repeats the update on each).
  model_flops = (base.compiled_flops_per_device / batch
                 if base.compiled_flops_per_device else None)
  rates = {p.name: [steps * batch / s for s in p.seconds] for p in runs}
  base_median = statistics.median(rates[BASELINE])
  rows = []
  for p in runs:
    median = statistics.median(rates[p.name])
    n = p.mesh.devices.size
    rows.append({
        'name': p.name,
        'mesh': dict(p.mesh.shape),
        'strategy': p.config.strategy,
        'from_config': p.from_config,
        'devices': [d.id for d in p.mesh.devices.flat],
        'compile_seconds': p.compile_seconds,
        'seconds_per_repeat': p.seconds,
        'images_per_sec': rates[p.name],
        'median_images_per_sec': median,
        'median_seconds_per_step': batch / median,
        'ratio_to_one_device': median / base_median,
        # Same-repeat ratios: how much of the ratio is noise.
        'paired_ratios': [a / b for a, b in zip(rates[p.name], rates[BASELINE])],
        'compiled_flops_per_device': p.compiled_flops_per_device,
        'compiled_flops_per_image': (p.compiled_flops_per_device * n / batch
                                     if p.compiled_flops_per_device else None),
        'achieved_gflops_per_sec': (model_flops * median / 1e9
                                    if model_flops else None),
    })
  device = jax.devices()[0]
  return {
      'command': command,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'jax_version': jax.__version__,
      'jaxlib_version': jaxlib.__version__,
      'flax_version': flax.__version__,
      'python_version': platform.python_version(),
      'backend': jax.default_backend(),
      'device_kind': device.device_kind,
      'num_devices': jax.device_count(),
      'host_cpu': _cpu_name(),
      'host_cpu_count': os.cpu_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'load_average_before': load_before,
      'load_average_after': _load_average(),
      'variant': config.model.variant,
      'image_size': config.image_size,
      'width': config.model.width,
      'num_classes': config.model.num_classes,
      'batch_size': batch,
      'dtype': config.dtype,
      'steps': steps,
      'warmup': warmup,
      'repeats': repeats,
      'timing': ('wall time of `steps` steps, blocked on the last; compile and'
                 ' warm-up excluded; repeats interleaved across placements;'
                 ' median over repeats'),
      # Once for all placements (imports TensorFlow, compiles the initialiser).
      'init_seconds': init_seconds,
      'model_flops_per_image': model_flops,
      'flops_source': ("XLA cost_analysis()['flops'] of the one-device compiled"
                       ' train step (forward, backward, update) / batch_size'),
      'baseline': BASELINE,
      'placements': rows,
  }


def _load_average() -> list[float] | None:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# --- The table --------------------------------------------------------------------


def format_report(report: dict) -> str:
  r = report
  lines = [
      f'AlexNet {r["variant"]} (width {r["width"]:g}), {r["image_size"]}x'
      f'{r["image_size"]} images, batch {r["batch_size"]}, {r["dtype"]}:'
      ' train step (forward, backward, SGD update).',
      f'{r["num_devices"]} {r["backend"]} device(s) ({r["device_kind"]};'
      f' host: {r["host_cpu"]}, {r["host_cpu_count"]} CPUs), jax'
      f' {r["jax_version"]}, flax {r["flax_version"]}, {r["date"]}.',
      f'Command: {r["command"]}',
      f'Load average (1, 5, 15 min): before {r["load_average_before"]},'
      f' after {r["load_average_after"]}.',
      f'{r["repeats"]} repeat(s) of {r["steps"]} step(s) after {r["warmup"]}'
      ' warm-up step(s), interleaved across placements; medians over repeats.'
      f' State initialised once in {r["init_seconds"]:.1f} s, then copied to'
      ' each placement.',
      '']
  gflops = lambda x: f'{x:.1f}' if x is not None else 'n/a'
  rows = [[p['name'] + (' (config)' if p['from_config'] else ''),
           ' x '.join(f'{k}={v}' for k, v in p['mesh'].items()),
           ','.join(map(str, p['devices'])),
           f'{p["compile_seconds"]:.1f}',
           f'{p["median_seconds_per_step"]:.3f}',
           f'{p["median_images_per_sec"]:.1f}',
           ' '.join(f'{x:.1f}' for x in p['images_per_sec']),
           f'{p["ratio_to_one_device"]:.2f}',
           gflops(p['achieved_gflops_per_sec'])]
          for p in r['placements']]
  lines += cli.format_table(['placement', 'mesh', 'devices', 'compile s', 's/step',
                   'images/s', 'per repeat', 'vs one device', 'GFLOP/s'],
                  rows, right={3, 4, 5, 7, 8})
  lines.append('')
  if r['model_flops_per_image']:
    lines.append(f'Train-step FLOPs per image: {r["model_flops_per_image"] / 1e9:.3f}'
                 f' GFLOP ({r["flops_source"]}); GFLOP/s = that x images/s.')
  else:
    lines.append('FLOPs: this backend gives no cost analysis; GFLOP/s not shown.')
  if r['backend'] == 'cpu':
    lines.append('On CPU the host devices share the same cores: a split adds no'
                 ' compute, so these ratios measure overheads, not what separate'
                 ' accelerators would give. MFU is not meaningful here.')
  return '\n'.join(lines)


def _positive_flags() -> None:
  for name, least in (('steps', 1), ('warmup', 0), ('repeats', 1)):
    if flags.FLAGS[name].value < least:
      raise UserError(f'--{name} must be at least {least}, got'
                      f' {flags.FLAGS[name].value}.')


def main(argv):
  del argv
  config = _CONFIG.value
  _positive_flags()
  # Before JAX starts: host devices for the config's mesh, then the config as
  # given; `placements` then checks each mesh it derives from it.
  cli.check(config)
  say = lambda message: print(f'benchmark: {message}', file=sys.stderr, flush=True)
  report = measure(
      config, steps=_STEPS.value, warmup=_WARMUP.value, repeats=_REPEATS.value,
      command=shlex.join(['python', '-m', 'alexnet_jax.benchmark', *sys.argv[1:]]),
      say=say)
  print(json.dumps(report) if _JSON.value else format_report(report))
  sys.stdout.flush()


if __name__ == '__main__':
  # Flags only when run as a program, as in inspect.py.
  _CONFIG = cli.define_config_flag()
  _STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per repeat.')
  _WARMUP = flags.DEFINE_integer(
      'warmup', 2, 'Untimed steps per placement after compiling.')
  _REPEATS = flags.DEFINE_integer(
      'repeats', 3, 'Timed repeats, interleaved across placements; the median'
      ' is reported.')
  _JSON = flags.DEFINE_bool('json', False, 'Print one JSON object.')
  cli.run(main, _CONFIG)
