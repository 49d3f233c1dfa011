"""The timed runs: every setting and placement compiled, warmed up, then
timed in interleaved repeats (a, b, c, a, b, c, ...) so that a noisy machine
slows all of them alike; the rows and the JSON report.

Reported per row: images/s (median over repeats and the spread), seconds per
step (= batch / median images/s), compile seconds, peak memory per device
(XLA's buffer assignment of the compiled program; plus the allocator's peak
where the backend keeps one), the step's FLOPs per image (`core.flops`, and
XLA's count beside it), and MFU: useful FLOP/s over the peak rate of the
devices used (peaks.py). `input='real'` draws every step's batch from the
input pipeline (decode, augment, host-to-device copy included).
"""

import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time

import flax
import jax
import jaxlib

from alexnet_jax.core import flops
from alexnet_jax.core import parallel
from alexnet_jax.core.network import DTYPES
from alexnet_jax.errors import UserError
from alexnet_jax.tools.benchmarking import links
from alexnet_jax.tools.benchmarking import peaks
from alexnet_jax.tools.benchmarking import placements
from alexnet_jax.tools.benchmarking import report
from alexnet_jax.tools.benchmarking import roofline

INPUTS = ('synthetic', 'real')


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
  roofline_mode: str = 'auto'  # roofline.ROOFLINE_MODES.
  link_pairs: tuple[str, ...] = ()  # links.PAIRS to predict the split on.


def check_options(settings, options: Options, num_devices: int) -> None:
  """Everything that can be wrong, before anything compiles; raises UserError."""
  for name, least in (('steps', 1), ('warmup', 0), ('repeats', 1)):
    if getattr(options, name) < least:
      raise UserError(f'--{name} must be at least {least}, got'
                      f' {getattr(options, name)}.')
  if options.input not in INPUTS:
    raise UserError(f'--input must be one of {", ".join(INPUTS)}, got'
                    f' {options.input!r}.')
  if options.roofline_mode not in roofline.ROOFLINE_MODES:
    raise UserError(f'--roofline must be one of {", ".join(roofline.ROOFLINE_MODES)},'
                    f' got {options.roofline_mode!r}.')
  if options.roofline_mode == 'on' and options.peak == 'none':
    raise UserError('--roofline=on needs a peak rate; --peak=none gives none.')
  links.check_pairs(options.link_pairs)
  if options.peak not in peaks.PEAK_MODES:
    raise UserError(f'--peak must be one of {", ".join(peaks.PEAK_MODES)}, got'
                    f' {options.peak!r}.')
  for dtype in options.dtypes:
    if dtype not in DTYPES:
      raise UserError(f'Unknown dtype {dtype!r} in --dtypes; choose from'
                      f' {", ".join(DTYPES)}.')
  if options.strategies == (placements.ALL,):
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
      placements.placements(settings, strategies=list(options.strategies),
                            num_devices=num_devices, batch_size=batch_size,
                            dtype=dtype)


def resolve_strategies(settings, options: Options, num_devices: int
                       ) -> tuple[Options, dict[str, str]]:
  """`--strategies=all`: every strategy that fits every setting, and why the
  others do not."""
  if options.strategies != (placements.ALL,):
    return options, {}
  kept, skipped = [], {}
  for strategy in parallel.STRATEGIES:
    try:
      check_options(settings, dataclasses.replace(options, strategies=(strategy,)),
                    num_devices)
      kept.append(strategy)
    except UserError as e:
      skipped[strategy] = str(e)
  return dataclasses.replace(options, strategies=tuple(kept)), skipped


def measure(settings, options: Options, *, command: str,
            say=lambda message: None) -> dict:
  """Runs every setting and placement; returns the report (JSON-able)."""
  if jax.process_count() > 1:
    raise UserError('The benchmark runs in one process; start it on one host'
                    ' (it uses that host\'s devices).')
  num_devices = jax.device_count()
  check_options(settings, options, num_devices)
  options, skipped = resolve_strategies(settings, options, num_devices)
  for name, reason in skipped.items():
    say(f'skipping strategy {name}: {reason}')
  device = jax.devices()[0]
  peak_by_dtype = peaks.peaks(device, list(options.dtypes), options.peak,
                              options.peak_matmul_size)
  bandwidth = roofline.bandwidth(device.device_kind, options.roofline_mode)
  load_before = placements.load_average()
  if options.peak in ('auto', 'matmul'):
    size = options.peak_matmul_size or (2048 if device.platform == 'cpu' else 8192)
    for dtype, known in peak_by_dtype.items():
      if known is None:
        say(f'measuring the {dtype} peak ({size}x{size} matmul)...')
        peak_by_dtype[dtype] = peaks.measured_peak(dtype, size, device)
  say('initialising the state...')
  start = time.perf_counter()
  host_state = placements.initial_state(settings)
  init_seconds = time.perf_counter() - start

  rows = []
  for batch_size in options.batch_sizes:
    for dtype in options.dtypes:
      rows += _measure_setting(
          settings, options, host_state, batch_size=batch_size,
          dtype=dtype, peak=peak_by_dtype[dtype], bandwidth=bandwidth,
          num_devices=num_devices, say=say)
  out = _record(settings, options, rows, command=command,
                load_before=load_before, init_seconds=init_seconds,
                skipped=skipped)
  out['roofline_source'] = (
      f'{bandwidth[1]}; peak as for MFU. {roofline.COUNTED}' if bandwidth else
      'off (--roofline=off)' if options.roofline_mode == 'off' else
      roofline.unknown_reason(device.device_kind))
  if options.link_pairs:
    say('predicting the split on the named links (compiling each strategy'
        ' for two host devices)...')
    two, _ = resolve_strategies(settings, dataclasses.replace(
        options, strategies=(placements.ALL,), link_pairs=()), 2)
    out['link_prediction'] = links.predict(settings, out, options.link_pairs,
                                           two.strategies)
  return out


def _measure_setting(settings, options, host_state, *, batch_size,
                     dtype, peak, bandwidth, num_devices, say) -> list[dict]:
  runs = placements.placements(
      settings, strategies=list(options.strategies), num_devices=num_devices,
      batch_size=batch_size, dtype=dtype)
  setting = f'batch {batch_size}, {dtype}'
  batches = None
  if options.input == 'real':
    from alexnet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    # One stream for all placements: each step takes the next batch.
    first = runs[0].settings
    batches = pipeline.train_batches(first.data, seed=first.seed)
    # Compiled for the pipeline's batches: uint8, normalised in the step.
    example = next(batches)
  for p in runs:
    say(f'{setting}, {p.name}: placing the state and compiling...')
    placements.prepare(p, host_state, placements.synthetic_batch(p.settings)
                       if batches is None else example)
    say(f'{setting}, {p.name}: compiled in {p.compile_seconds:.1f} s;'
        f' {options.warmup} warm-up step(s).')
    if options.warmup:
      placements.run_steps(p, options.warmup, batches)
  for r in range(options.repeats):
    for p in runs:  # Interleaved: a noisy stretch hits every placement.
      p.seconds.append(placements.run_steps(p, options.steps, batches))
    say(f'{setting}, repeat {r + 1}/{options.repeats}: ' + ', '.join(
        f'{p.name} {options.steps * batch_size / p.seconds[-1]:.1f} images/s'
        for p in runs))
  if options.trace_dir:
    for p in runs:  # After the timings, so tracing never slows them.
      path = os.path.join(options.trace_dir, f'b{batch_size}-{dtype}-{p.name}')
      with jax.profiler.trace(path):
        placements.run_steps(p, 1, batches)
      say(f'{setting}, {p.name}: one step traced to {path}')
  rows = _rows(runs, options, batch_size=batch_size, dtype=dtype, peak=peak,
               bandwidth=bandwidth)
  for p in runs:  # Free this setting's states before the next one.
    p.state = p.batch = p.step = None
  return rows


def _rows(runs, options, *, batch_size, dtype, peak, bandwidth=None) -> list[dict]:
  base = runs[0]
  assert base.name == placements.BASELINE
  # The network's useful work per image, counted from the layer table: XLA's
  # count of a compiled program misses what runs in libraries (on GPUs the
  # cuDNN convolutions) and counts each data-parallel device's update.
  model_flops = flops.train_flops_per_image(base.settings.model)
  rates = {p.name: [options.steps * batch_size / s for s in p.seconds]
           for p in runs}
  base_median = statistics.median(rates[placements.BASELINE])
  costs = roofline.layer_costs(base.settings.model, batch_size, dtype)
  rows = []
  for p in runs:
    median = statistics.median(rates[p.name])
    devices = list(p.mesh.devices.flat)
    # Host devices share the host's cores: its one peak is the ceiling.
    chips = 1 if devices[0].platform == 'cpu' else len(devices)
    achieved = model_flops * median
    bound = (roofline.bound(costs, peak[0], bandwidth[0], chips)
             if peak and bandwidth else None)
    rows.append({
        'name': p.name,
        'strategy': p.settings.strategy,
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
        'paired_ratios': [a / b for a, b in zip(rates[p.name],
                                                rates[placements.BASELINE])],
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
        'allocator_peak_bytes_per_device': placements.allocator_peaks(devices),
        # Seconds per step no program can beat on these devices, per layer
        # and in all (roofline.py); reached = bound / measured.
        'roofline': bound,
        'roofline_fraction': (bound['bound_seconds'] * median / batch_size
                              if bound else None),
    })
  return rows


def _record(settings, options, rows, *, command, load_before,
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
      'host_cpu': placements.cpu_name(),
      'host_cpu_count': os.cpu_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'load_average_before': load_before,
      'load_average_after': placements.load_average(),
      'variant': settings.model.variant,
      'image_size': settings.model.image_size,
      'width': settings.model.width,
      'num_classes': settings.model.num_classes,
      'strategies': [placements.BASELINE, *options.strategies],
      'skipped_strategies': skipped,  # --strategies=all: name -> why.
      'batch_sizes': list(options.batch_sizes),
      'dtypes': list(options.dtypes),
      'input': options.input,
      'input_description': (
          'synthetic: one random batch kept on the devices (the model alone)'
          if options.input == 'synthetic' else
          'real: each step draws its batch from data.pipeline.train_batches'
          f' ({settings.data.dataset}: decode, augment, copy to the devices)'),
      'steps': options.steps,
      'warmup': options.warmup,
      'repeats': options.repeats,
      'timing': ('wall time of `steps` steps, blocked on the last; compile and'
                 ' warm-up excluded; repeats interleaved across placements;'
                 ' median over repeats; spread = (max - min) / median'),
      # Once for all placements (imports TensorFlow, compiles the initialiser).
      'init_seconds': init_seconds,
      'flops_source': (
          'core.flops.train_flops_per_image: the convolutions and matrix products'
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
      'baseline': placements.BASELINE,
      'rows': rows,
  }


def benchmark(settings, options: Options, *, num_devices: int, command: str,
              json_path: str = '') -> dict:
  """Everything `python -m alexnet_jax.benchmark` does after the flags:
  host devices, the checks, every timed run; writes the report to
  `json_path` (if given), prints its table, returns it."""
  placements.provide_host_devices(settings, options.strategies, num_devices,
                                  cpus=2 if options.link_pairs else 1)
  found = jax.device_count()
  if num_devices > found:
    raise UserError(f'--num_devices={num_devices} but JAX found'
                    f' {found} {jax.default_backend()} device(s).')
  if num_devices and num_devices < found:
    raise UserError(f'--num_devices={num_devices}: the benchmark uses every'
                    f' device JAX found ({found}); hide the others'
                    ' (e.g. CUDA_VISIBLE_DEVICES) instead.')
  say = lambda message: print(f'benchmark: {message}', file=sys.stderr, flush=True)
  result = measure(settings, options, command=command, say=say)
  if json_path:
    with open(json_path, 'w') as f:
      json.dump(result, f, indent=1)
      f.write('\n')
    say(f'wrote {json_path}')
  print(report.format_report(result))
  sys.stdout.flush()
  return result
