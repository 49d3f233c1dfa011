"""Train-step throughput, compile time, memory and MFU, per placement and setting.

    python -m alexnet_jax.benchmark --config=configs/two_gpu.py \
        [--strategies=all|towers,data,...] [--batch_sizes=128,256] \
        [--dtypes=float32,bfloat16] [--input=synthetic|real] \
        [--steps=10] [--warmup=2] [--repeats=3] [--json=FILE] [--peak=auto]

The same network and step (step.make_train_step, as training runs it) under
each strategy of parallel.STRATEGIES (`towers` as in 2012, `data`, `hybrid`
as in Krizhevsky 2014, `fsdp`), each on its usual mesh over all devices
(parallel.strategy_mesh_shape), plus the one-device baseline (`one_device`:
both towers and the whole batch on the first device), for every batch size
x dtype, in one table. `--strategies=all` (default) runs every strategy that
fits the config and says why the others do not.

Per setting, every placement gets its own sharded copy of one initial state
and a batch on its devices, is compiled (timed apart) and warmed up; then
`steps` steps are timed, `repeats` times, interleaved across placements
(a, b, c, a, b, c, ...) so that a noisy machine slows all of them alike.

Reported per row: images/s (median over repeats and the spread), seconds per
step (= batch / median images/s), compile seconds, peak memory per device
(XLA's buffer assignment of the compiled program; plus the allocator's peak
where the backend keeps one), the step's FLOPs per image from XLA's cost
analysis, and MFU: useful FLOP/s (the one-device program's FLOPs per image x
images/s) over the peak rate of the devices used. The peak comes from
`PEAKS` (vendor figures per device kind) or, with `--peak=matmul` and on CPU,
from a large matrix product timed here; every row says which.

`--input=synthetic` (default) times the model alone on a batch that stays on
the devices; `--input=real` draws every step's batch from
`input_pipeline.train_batches` (decode, augment, host-to-device copy
included), the throughput a training run can reach.

On CPU the host devices share the same cores, so a split cannot add compute:
the ratios there measure overheads, not what two accelerators would give.
`--markdown_from=FILE` prints a saved `--json` report as the README's table.
"""

import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import sys
import time

from absl import flags
import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from alexnet_jax import cli
from alexnet_jax import model as model_lib
from alexnet_jax import parallel
from alexnet_jax import step as step_lib
from alexnet_jax import validation
from alexnet_jax.errors import UserError

BASELINE = 'one_device'
ALL = 'all'  # --strategies=all: every strategy of parallel.STRATEGIES that fits.
INPUTS = ('synthetic', 'real')
PEAK_MODES = ('auto', 'table', 'matmul', 'none')


# --- Peak rates ----------------------------------------------------------------


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
  a, b = (jax.device_put(jax.random.normal(k, (size, size), model_lib.DTYPES[dtype]),
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


# --- What is compared ----------------------------------------------------------


@dataclasses.dataclass
class Placement:
  """One mesh under one setting, and what it measured."""
  name: str
  config: object  # The config with this placement's mesh, strategy, batch, dtype.
  mesh: object = None
  step: object = None  # The compiled train step.
  state: object = None
  batch: object = None
  compile_seconds: float = 0.0
  compiled_flops_per_device: float | None = None
  compiled_peak_bytes: int | None = None
  seconds: list[float] = dataclasses.field(default_factory=list)


def placed(config, *, strategy: str, data: int, model: int, batch_size: int,
           dtype: str):
  """`config` with this mesh, strategy, batch and dtype."""
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.model = data, model
  config.strategy = strategy
  if 'sharding_rules' in config:
    config.sharding_rules = ''  # The strategy's own table, not an override.
  config.batch_size = batch_size
  config.dtype = dtype
  return config


def placements(config, *, strategies: list[str], num_devices: int,
               batch_size: int, dtype: str) -> list[Placement]:
  """The baseline and each strategy's mesh, each validated; raises UserError."""
  towers = model_lib.NETWORKS[config.model.variant].towers
  wanted = [(BASELINE, 'data', 1, 1)]
  for s in strategies:
    mesh = parallel.strategy_mesh_shape(s, num_devices, towers)
    wanted.append((s, s, mesh[parallel.DATA], mesh[parallel.MODEL]))
  out = []
  for name, strategy, d, m in wanted:
    p = placed(config, strategy=strategy, data=d, model=m,
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


def _allocator_peaks(devices) -> list[int] | None:
  """The allocator's peak bytes per device since the process started."""
  peaks_ = []
  for d in devices:
    stats = d.memory_stats()
    if not stats or 'peak_bytes_in_use' not in stats:
      return None  # CPU keeps none.
    peaks_.append(int(stats['peak_bytes_in_use']))
  return peaks_


def initial_state(config):
  """The train state on the host, initialised once.

  Every placement and setting starts from these same numbers: parameters are
  float32 whatever the compute dtype or kernel gradient (those live in the
  modules, so in each placement's graphdef, not in the state). Initialising
  once saves a compile of the initialiser per mesh (5-15 s each on a 2-core
  CPU).
  """
  one = placed(config, strategy='data', data=1, model=1,
               batch_size=config.batch_size, dtype=config.dtype)
  _, state = step_lib.create_train_state(one, parallel.make_mesh(one))
  return jax.device_get(state)


def prepare(p: Placement, host_state, batch: dict[str, np.ndarray]) -> None:
  """State and batch on the devices, and the compiled step (timed).

  The step is built from the placement's own graphdef: its config's compute
  dtype and kernel gradient are in the modules, so one graphdef shared by
  every setting would silently time one setting again and again.
  """
  p.mesh = parallel.make_mesh(p.config, devices=jax.devices())
  shardings = step_lib.state_shardings(
      p.config, step_lib.abstract_state(p.config), p.mesh)
  # From host memory: a copy per placement (no buffers shared, since every
  # step donates its state), each device given only its part.
  p.state = jax.device_put(host_state, shardings)
  # The schedule is scalar arithmetic: placeholder counts spare the dataset.
  lr_fn = step_lib.learning_rate_fn(p.config, steps_per_epoch=1, num_steps=1)
  step = step_lib.make_train_step(
      p.config, step_lib.model_graphdef(p.config), lr_fn, shardings)
  p.batch = step_lib.device_batch(batch, p.mesh, p.config)
  jax.block_until_ready((p.state, p.batch))
  start = time.perf_counter()
  with jax.set_mesh(p.mesh):
    p.step = step.lower(p.state, p.batch).compile()
  p.compile_seconds = time.perf_counter() - start
  p.compiled_flops_per_device = _flops(p.step)
  p.compiled_peak_bytes = _compiled_peak_bytes(p.step)


def run_steps(p: Placement, steps: int, batches=None) -> float:
  """Seconds for `steps` steps, waiting for the last one to finish.

  With `batches` (real input), each step first takes the next batch from
  the pipeline and copies it to the devices, inside the timing.
  """
  start = time.perf_counter()
  state, metrics = p.state, None
  for _ in range(steps):
    batch = (p.batch if batches is None
             else step_lib.device_batch(next(batches), p.mesh, p.config))
    state, metrics = p.step(state, batch)  # The old state is donated.
  jax.block_until_ready((state, metrics))
  p.state = state
  return time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class Options:
  strategies: tuple[str, ...]
  batch_sizes: tuple[int, ...]
  dtypes: tuple[str, ...]
  steps: int = 10
  warmup: int = 2
  repeats: int = 3
  input: str = 'synthetic'
  peak: str = 'auto'
  peak_matmul_size: int = 0  # 0: 8192 on accelerators, 2048 on CPU.
  trace_dir: str = ''  # Where to write a jax.profiler trace of one step each.


def check_options(config, options: Options, num_devices: int) -> None:
  """Everything that can be wrong, before anything compiles; raises UserError."""
  for name, least in (('steps', 1), ('warmup', 0), ('repeats', 1)):
    if getattr(options, name) < least:
      raise UserError(f'--{name} must be at least {least}, got'
                      f' {getattr(options, name)}.')
  if options.input not in INPUTS:
    raise UserError(f'--input must be one of {", ".join(INPUTS)}, got'
                    f' {options.input!r}.')
  if options.peak not in PEAK_MODES:
    raise UserError(f'--peak must be one of {", ".join(PEAK_MODES)}, got'
                    f' {options.peak!r}.')
  for dtype in options.dtypes:
    if dtype not in model_lib.DTYPES:
      raise UserError(f'Unknown dtype {dtype!r} in --dtypes; choose from'
                      f' {", ".join(model_lib.DTYPES)}.')
  if options.strategies == (ALL,):
    return  # `resolve_strategies` keeps the ones that fit.
  for strategy in options.strategies:
    if strategy not in parallel.STRATEGIES:
      raise UserError(f'Unknown strategy {strategy!r} in --strategies; choose'
                      f' from {", ".join(parallel.STRATEGIES)}.')
  if not options.batch_sizes or min(options.batch_sizes) < 1:
    raise UserError(f'--batch_sizes must be positive integers, got'
                    f' {list(options.batch_sizes)}.')
  for batch_size in options.batch_sizes:
    for dtype in options.dtypes:
      placements(config, strategies=list(options.strategies),
                 num_devices=num_devices, batch_size=batch_size, dtype=dtype)


def resolve_strategies(config, options: Options, num_devices: int
                       ) -> tuple[Options, dict[str, str]]:
  """`--strategies=all`: every strategy that fits every setting, and why the
  others do not."""
  if options.strategies != (ALL,):
    return options, {}
  kept, skipped = [], {}
  for strategy in parallel.STRATEGIES:
    try:
      check_options(config, dataclasses.replace(options, strategies=(strategy,)),
                    num_devices)
      kept.append(strategy)
    except UserError as e:
      skipped[strategy] = str(e)
  return dataclasses.replace(options, strategies=tuple(kept)), skipped


def measure(config, options: Options, *, command: str,
            say=lambda message: None) -> dict:
  """Runs every setting and placement; returns the report (JSON-able)."""
  if jax.process_count() > 1:
    raise UserError('The benchmark runs in one process; start it on one host'
                    ' (it uses that host\'s devices).')
  num_devices = jax.device_count()
  check_options(config, options, num_devices)
  options, skipped = resolve_strategies(config, options, num_devices)
  for name, reason in skipped.items():
    say(f'skipping strategy {name}: {reason}')
  device = jax.devices()[0]
  peak_by_dtype = peaks(device, list(options.dtypes), options.peak,
                        options.peak_matmul_size)
  load_before = _load_average()
  if options.peak in ('auto', 'matmul'):
    size = options.peak_matmul_size or (2048 if device.platform == 'cpu' else 8192)
    for dtype, known in peak_by_dtype.items():
      if known is None:
        say(f'measuring the {dtype} peak ({size}x{size} matmul)...')
        peak_by_dtype[dtype] = measured_peak(dtype, size, device)
  say('initialising the state...')
  start = time.perf_counter()
  host_state = initial_state(config)
  init_seconds = time.perf_counter() - start

  rows = []
  for batch_size in options.batch_sizes:
    for dtype in options.dtypes:
      rows += _measure_setting(
          config, options, host_state, batch_size=batch_size,
          dtype=dtype, peak=peak_by_dtype[dtype], num_devices=num_devices,
          say=say)
  return _report(config, options, rows, command=command,
                 load_before=load_before, init_seconds=init_seconds,
                 skipped=skipped)


def _measure_setting(config, options, host_state, *, batch_size,
                     dtype, peak, num_devices, say) -> list[dict]:
  runs = placements(config, strategies=list(options.strategies),
                    num_devices=num_devices, batch_size=batch_size, dtype=dtype)
  setting = f'batch {batch_size}, {dtype}'
  batches = None
  if options.input == 'real':
    from alexnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
    # One stream for all placements: each step takes the next batch.
    batches = input_pipeline.train_batches(runs[0].config)
    # Compiled for the pipeline's batches: uint8, normalised in the step.
    example = next(batches)
  for p in runs:
    say(f'{setting}, {p.name}: placing the state and compiling...')
    prepare(p, host_state,
            synthetic_batch(p.config) if batches is None else example)
    say(f'{setting}, {p.name}: compiled in {p.compile_seconds:.1f} s;'
        f' {options.warmup} warm-up step(s).')
    if options.warmup:
      run_steps(p, options.warmup, batches)
  for r in range(options.repeats):
    for p in runs:  # Interleaved: a noisy stretch hits every placement.
      p.seconds.append(run_steps(p, options.steps, batches))
    say(f'{setting}, repeat {r + 1}/{options.repeats}: ' + ', '.join(
        f'{p.name} {options.steps * batch_size / p.seconds[-1]:.1f} images/s'
        for p in runs))
  if options.trace_dir:
    for p in runs:  # After the timings, so tracing never slows them.
      path = os.path.join(options.trace_dir, f'b{batch_size}-{dtype}-{p.name}')
      with jax.profiler.trace(path):
        run_steps(p, 1, batches)
      say(f'{setting}, {p.name}: one step traced to {path}')
  rows = _rows(runs, options, batch_size=batch_size, dtype=dtype, peak=peak)
  for p in runs:  # Free this setting's states before the next one.
    p.state = p.batch = p.step = None
  return rows


def _rows(runs, options, *, batch_size, dtype, peak) -> list[dict]:
  base = runs[0]
  assert base.name == BASELINE
  # The network's useful work per image, counted from the layer table: XLA's
  # count of a compiled program misses what runs in libraries (on GPUs the
  # cuDNN convolutions) and counts each data-parallel device's update.
  model_flops = model_lib.train_flops_per_image(step_lib.model_config(base.config))
  rates = {p.name: [options.steps * batch_size / s for s in p.seconds]
           for p in runs}
  base_median = statistics.median(rates[BASELINE])
  rows = []
  for p in runs:
    median = statistics.median(rates[p.name])
    devices = list(p.mesh.devices.flat)
    # Host devices share the host's cores: its one peak is the ceiling.
    chips = 1 if devices[0].platform == 'cpu' else len(devices)
    achieved = model_flops * median
    rows.append({
        'name': p.name,
        'strategy': p.config.strategy,
        'mesh': dict(p.mesh.shape),
        'devices': [d.id for d in devices],
        'batch_size': batch_size,
        'dtype': dtype,
        'input': options.input,
        'compile_seconds': p.compile_seconds,
        'seconds_per_repeat': p.seconds,
        'images_per_sec': rates[p.name],
        'median_images_per_sec': median,
        'min_images_per_sec': min(rates[p.name]),
        'max_images_per_sec': max(rates[p.name]),
        # (max - min) / median over the repeats.
        'spread': (max(rates[p.name]) - min(rates[p.name])) / median,
        'seconds_per_step': batch_size / median,
        'ratio_to_one_device': median / base_median,
        # Same-repeat ratios: how much of the ratio is noise.
        'paired_ratios': [a / b for a, b in zip(rates[p.name], rates[BASELINE])],
        'compiled_flops_per_device': p.compiled_flops_per_device,
        'compiled_flops_per_image': (
            p.compiled_flops_per_device * len(devices) / batch_size
            if p.compiled_flops_per_device else None),
        'model_flops_per_image': model_flops,
        'achieved_flops_per_sec': achieved,
        'peak_flops_per_sec': peak[0] * chips if peak else None,
        'peak_source': (peak[1] + (f' x {chips} devices' if chips > 1 else ''))
                       if peak else None,
        'mfu': achieved / (peak[0] * chips) if peak else None,
        'compiled_peak_bytes_per_device': p.compiled_peak_bytes,
        'allocator_peak_bytes_per_device': _allocator_peaks(devices),
    })
  return rows


def _report(config, options, rows, *, command, load_before,
            init_seconds, skipped) -> dict:
  from jax.extend import backend  # pylint: disable=import-outside-toplevel
  device = jax.devices()[0]
  return {
      'command': command,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'jax_version': jax.__version__,
      'jaxlib_version': jaxlib.__version__,  # XLA is built into jaxlib.
      'platform_version': backend.get_backend().platform_version,
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
      'strategies': [BASELINE, *options.strategies],
      'skipped_strategies': skipped,  # --strategies=all: name -> why.
      'batch_sizes': list(options.batch_sizes),
      'dtypes': list(options.dtypes),
      'input': options.input,
      'input_description': (
          'synthetic: one random batch kept on the devices (the model alone)'
          if options.input == 'synthetic' else
          'real: each step draws its batch from input_pipeline.train_batches'
          f' ({config.dataset}: decode, augment, copy to the devices)'),
      'steps': options.steps,
      'warmup': options.warmup,
      'repeats': options.repeats,
      'timing': ('wall time of `steps` steps, blocked on the last; compile and'
                 ' warm-up excluded; repeats interleaved across placements;'
                 ' median over repeats; spread = (max - min) / median'),
      # Once for all placements (imports TensorFlow, compiles the initialiser).
      'init_seconds': init_seconds,
      'flops_source': (
          'model.train_flops_per_image: the convolutions and matrix products'
          ' of the layer table, 2 x multiply-adds forward, as many for the'
          ' kernel gradients and for the input gradients (none at conv1);'
          ' MFU counts these as the useful work. compiled_flops_per_image:'
          " XLA's cost_analysis() of each compiled step, all devices; it"
          ' omits work done in libraries (cuDNN on GPUs)'),
      'memory_source': ('compiled_peak_bytes_per_device: the compiled program\'s'
                        ' memory_analysis() (XLA buffer assignment, per device);'
                        ' allocator_peak_bytes_per_device: device.memory_stats()'
                        '["peak_bytes_in_use"], the peak since the process'
                        ' started (earlier settings included), where the backend'
                        ' keeps one'),
      'baseline': BASELINE,
      'rows': rows,
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


# --- The tables -------------------------------------------------------------------


def _mib(x) -> str:
  if not x:
    return 'n/a'
  return f'{x / 2**20:,.0f}' if x >= 10 * 2**20 else f'{x / 2**20:.2f}'


def _mfu(x) -> str:
  return f'{100 * x:.1f}%' if x is not None else 'n/a'


def format_report(report: dict) -> str:
  r = report
  lines = [
      f'AlexNet {r["variant"]} (width {r["width"]:g}), {r["image_size"]}x'
      f'{r["image_size"]} images: train step (forward, backward, SGD update);'
      f' input {r["input_description"]}.',
      f'{r["num_devices"]} {r["backend"]} device(s) ({r["device_kind"]};'
      f' host: {r["host_cpu"]}, {r["host_cpu_count"]} CPUs), jax'
      f' {r["jax_version"]}, jaxlib {r["jaxlib_version"]}'
      f' ({r["platform_version"]}), flax {r["flax_version"]}, {r["date"]}.',
      f'Command: {r["command"]}',
      f'Load average (1, 5, 15 min): before {r["load_average_before"]},'
      f' after {r["load_average_after"]}.',
      f'{r["repeats"]} repeat(s) of {r["steps"]} step(s) after {r["warmup"]}'
      ' warm-up step(s), interleaved across placements; median images/s over'
      ' repeats, spread = (max - min) / median.',
      '']
  rows = [[p['name'], ' x '.join(f'{k}={v}' for k, v in p['mesh'].items()),
           str(p['batch_size']), p['dtype'],
           f'{p["median_images_per_sec"]:.1f}', f'{100 * p["spread"]:.0f}%',
           f'{p["seconds_per_step"]:.3f}', f'{p["ratio_to_one_device"]:.2f}',
           f'{p["compile_seconds"]:.1f}', _mib(p['compiled_peak_bytes_per_device']),
           _mfu(p['mfu'])]
          for p in r['rows']]
  lines += cli.format_table(
      ['placement', 'mesh', 'batch', 'dtype', 'images/s', 'spread', 's/step',
       'vs one device', 'compile s', 'MiB/device', 'MFU'],
      rows, right={2, 4, 5, 6, 7, 8, 9, 10})
  lines.append('')
  flops = sorted({p['model_flops_per_image'] for p in r['rows']})
  lines.append('Train-step FLOPs per image: ' + ', '.join(
      f'{f / 1e9:.4g}' for f in flops) + f' GFLOP ({r["flops_source"]}).')
  for name, reason in r['skipped_strategies'].items():
    lines.append(f'Not run: strategy {name} ({reason})')
  for source in dict.fromkeys(p['peak_source'] for p in r['rows']):
    if source:
      lines.append(f'Peak for MFU: {source}.')
  lines.append(f'Memory: {r["memory_source"]}.')
  if r['backend'] == 'cpu':
    lines.append('On CPU the host devices share the same cores: a split adds no'
                 ' compute, so these ratios measure overheads, not what separate'
                 ' accelerators would give; MFU is over the whole host.')
  return '\n'.join(lines)


def format_markdown(report: dict) -> str:
  """The README's results table for a saved report (one line per row)."""
  r = report
  lines = [
      '| placement | mesh | batch | dtype | images/s (median, min-max) | s/step'
      ' | vs one device | compile s | MiB/device | MFU |',
      '|---|---|---|---|---|---|---|---|---|---|']
  for p in r['rows']:
    mesh = ' x '.join(f'{k}={v}' for k, v in p['mesh'].items())
    lines.append(
        f'| {p["name"]} | {mesh} | {p["batch_size"]} | {p["dtype"]} |'
        f' {p["median_images_per_sec"]:.1f} ({p["min_images_per_sec"]:.1f}-'
        f'{p["max_images_per_sec"]:.1f}) | {p["seconds_per_step"]:.3f} |'
        f' {p["ratio_to_one_device"]:.2f} | {p["compile_seconds"]:.1f} |'
        f' {_mib(p["compiled_peak_bytes_per_device"])} | {_mfu(p["mfu"])} |')
  return '\n'.join(lines)


def provide_host_devices(config, strategies, num_devices: int = 0) -> None:
  """On CPU, before JAX starts: `num_devices` host devices, or as many as the
  config's mesh or the towers strategy needs (no effect on accelerators)."""
  network = model_lib.NETWORKS.get(config.model.variant)
  wanted = num_devices or max(
      network.towers if network and ({'towers', ALL} & set(strategies)) else 1,
      max(config.mesh.data, 1) * config.mesh.model)
  probe = config.copy_and_resolve_references()
  probe.mesh.data, probe.mesh.model = wanted, 1
  cli.provide_host_devices(probe)


def _csv(text: str, parse=str) -> tuple:
  try:
    return tuple(parse(x.strip()) for x in text.split(',') if x.strip())
  except ValueError:
    raise UserError(f'Expected a comma-separated list, got {text!r}.') from None


def main(argv):
  del argv
  if _MARKDOWN_FROM.value:
    try:
      with open(_MARKDOWN_FROM.value) as f:
        print(format_markdown(json.load(f)))
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f'--markdown_from={_MARKDOWN_FROM.value} could not be'
                      f' read as a benchmark report: {e}') from None
    return
  config = _CONFIG.value
  if config is None:
    raise UserError('Pass --config=FILE, e.g. --config=configs/two_gpu.py.')
  options = Options(
      strategies=_csv(_STRATEGIES.value),
      batch_sizes=_csv(_BATCH_SIZES.value, int) or (config.batch_size,),
      dtypes=_csv(_DTYPES.value) or (config.dtype,),
      steps=_STEPS.value, warmup=_WARMUP.value, repeats=_REPEATS.value,
      input=_INPUT.value, peak=_PEAK.value,
      peak_matmul_size=_PEAK_MATMUL_SIZE.value, trace_dir=_TRACE_DIR.value)
  provide_host_devices(config, options.strategies, _NUM_DEVICES.value)
  num_devices = _NUM_DEVICES.value or jax.device_count()
  if num_devices > jax.device_count():
    raise UserError(f'--num_devices={num_devices} but JAX found'
                    f' {jax.device_count()} {jax.default_backend()} device(s).')
  if num_devices < jax.device_count():
    raise UserError(f'--num_devices={num_devices}: the benchmark uses every'
                    f' device JAX found ({jax.device_count()}); hide the others'
                    ' (e.g. CUDA_VISIBLE_DEVICES) instead.')
  say = lambda message: print(f'benchmark: {message}', file=sys.stderr, flush=True)
  report = measure(
      config, options,
      command=shlex.join(['python', '-m', 'alexnet_jax.benchmark', *sys.argv[1:]]),
      say=say)
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(report, f, indent=1)
      f.write('\n')
    say(f'wrote {_JSON.value}')
  print(format_report(report))
  sys.stdout.flush()


if __name__ == '__main__':
  # Flags only when run as a program, as in inspect.py.
  _CONFIG = cli.define_config_flag()
  _STRATEGIES = flags.DEFINE_string(
      'strategies', ALL, 'Comma-separated strategies (parallel.STRATEGIES) to'
      ' compare with the one-device baseline, each on its usual mesh over all'
      ' devices (parallel.strategy_mesh_shape); "all": every one that fits the'
      ' config (the others are listed with the reason); empty: the baseline'
      ' only.')
  _BATCH_SIZES = flags.DEFINE_string(
      'batch_sizes', '', 'Comma-separated global batch sizes (default: the'
      " config's batch_size).")
  _DTYPES = flags.DEFINE_string(
      'dtypes', '', 'Comma-separated compute dtypes, float32 and/or bfloat16'
      " (default: the config's dtype).")
  _NUM_DEVICES = flags.DEFINE_integer(
      'num_devices', 0, 'Devices to use (0: all; on CPU, how many host devices'
      ' to make).')
  _INPUT = flags.DEFINE_string(
      'input', 'synthetic', 'synthetic: one batch kept on the devices; real:'
      ' every step draws from the input pipeline (config.dataset).')
  _PEAK = flags.DEFINE_string(
      'peak', 'auto', 'Peak rate for MFU: auto (the table for known'
      ' accelerators, measured on CPU), table, matmul (measured), none.')
  _PEAK_MATMUL_SIZE = flags.DEFINE_integer(
      'peak_matmul_size', 0, 'Side of the measured matmul (0: 8192 on'
      ' accelerators, 2048 on CPU).')
  _TRACE_DIR = flags.DEFINE_string(
      'trace_dir', '', 'After timing, trace one more step of each placement'
      ' with jax.profiler into DIR/b{batch}-{dtype}-{placement}'
      ' (benchmarks/profile_summary.py reads them).')
  _STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per repeat.')
  _WARMUP = flags.DEFINE_integer(
      'warmup', 2, 'Untimed steps per placement after compiling.')
  _REPEATS = flags.DEFINE_integer(
      'repeats', 3, 'Timed repeats, interleaved across placements; the median'
      ' is reported.')
  _JSON = flags.DEFINE_string('json', '', 'Also write the report to this file'
                              ' (JSON).')
  _MARKDOWN_FROM = flags.DEFINE_string(
      'markdown_from', '', 'Print the markdown table of a saved --json report'
      ' and exit (runs nothing).')
  cli.run(main, _CONFIG)
