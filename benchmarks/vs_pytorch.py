"""This project's train step against the same network in PyTorch, side by side.

    pip install -r requirements.txt -r benchmarks/requirements.txt
    python -m benchmarks.vs_pytorch --config=configs/two_gpu.py \
        [--batch_size=32] [--dtype=float32] [--strategies=towers] \
        [--steps=3] [--warmup=1] [--repeats=5] [--json=FILE] \
        [--kernel_grads=xla,patches] [--notorch_compile]

1. Builds the network of `config.model.variant` in PyTorch from the same
   layer table (core/network.py NETWORKS): one `nn.Conv2d` per layer, `groups=2` where
   a layer reads only its own tower (conv2, conv4, conv5 of Fig. 2), so the
   2012 net has Caffe's 60,965,224 parameters. LRN runs over each tower's
   channels; PyTorch divides alpha by n, so the paper's alpha is passed as
   alpha * n (`--config.model.lrn_convention=caffe` passes it unchanged).
2. Loads this project's weights into it (`core.model.export_params`, the layout
   the README's "Python API" documents) and checks that both give the same
   logits on a fixed batch, dropout off: both sides then time the same
   function.
3. Times both train steps (forward, backward, SGD with momentum 0.9 and
   weight decay on kernels) in this one process, on the same device, batch
   and dtype: PyTorch eager, PyTorch under `torch.compile` (inductor;
   `--notorch_compile` leaves it out), then each JAX placement, repeated and
   alternating, so a noisy machine slows all of them alike. On a GPU PyTorch
   runs with AMP (autocast to the dtype) and channels_last; on CPU bfloat16
   is autocast too. If torch.compile fails on the machine, its row says so
   and why, and the rest is timed.
   JAX placements are alexnet_jax.benchmark's (tools/benchmarking): `one_device` and each of
   `--strategies` on its usual mesh.

Prints images/s per run (median over repeats) and the ratios to PyTorch
eager and compiled.
PyTorch is not a dependency of the project: `benchmarks/requirements.txt`
pins the build this was tested with.
"""

import dataclasses
import json
import os
import shlex
import statistics
import sys
import time

from absl import flags
from flax import nnx
import jax
import numpy as np

from alexnet_jax.core import convolution
from alexnet_jax.core import layers
from alexnet_jax.core import model
from alexnet_jax.core.network import ModelConfig
from alexnet_jax.errors import UserError
from alexnet_jax.run import cli
from alexnet_jax.tools.benchmarking import placements
from alexnet_jax.tools.benchmarking import timing
from alexnet_jax.tools.tables import format_table

# Images of this scale make the LRN term matter in the agreement check:
# alpha * sum(a^2) is then of the order of k, so a wrong alpha convention
# (paper vs PyTorch's alpha / n) changes the logits far beyond the tolerance.
CHECK_IMAGE_SCALE = 30.0
CHECK_RTOL = 1e-3  # Of the largest logit: float32, different summation orders.
EAGER, COMPILED = 'pytorch', 'pytorch+compile'
TORCH_RUNS = (EAGER, COMPILED)


def _torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError(
        'PyTorch is not installed; it is not a dependency of the project.'
        ' Install it next to it: pip install -r benchmarks/requirements.txt'
        ' (the CPU build; on a GPU machine see benchmarks/gpu.sh).') from None
  return torch


def lrn_alpha_for_torch(cfg: ModelConfig) -> float:
  """PyTorch's LocalResponseNorm divides alpha by n; the paper's does not."""
  if cfg.lrn_convention == 'paper':
    return layers.LRN_ALPHA * layers.LRN_N
  return layers.LRN_ALPHA


def torch_network(cfg: ModelConfig, flat: dict[str, np.ndarray], *,
                  lrn_alpha: float | None = None):
  """The network of `cfg` in PyTorch, holding the weights `flat`
  (model.export_params layout); eval mode, float32, on the CPU."""
  torch = _torch()
  nn, F = torch.nn, torch.nn.functional
  towers = cfg.network.towers
  alpha = lrn_alpha_for_torch(cfg) if lrn_alpha is None else lrn_alpha
  activation = {'relu': F.relu, 'tanh': torch.tanh}[cfg.activation]
  pool = (3, 2) if cfg.overlapping_pool else (2, 2)
  table = cfg.network.layers
  # What the first fully connected layer reads, per tower: (h, w, c).
  convs = [l for l in table if not l.dense]
  last = convs[-1].name
  h, w, c = model.layer_shapes(cfg)[
      f'pool{last.removeprefix("conv")}' if convs[-1].pool else last]

  class Net(nn.Module):
    """The layer table, row by row: op, activation, LRN, pool, dropout."""

    def __init__(self):
      super().__init__()
      self.ops = nn.ModuleDict()
      channels = 3
      for layer in table:
        kernel = flat[f'{layer.name}/kernel']
        if layer.dense:
          if layer is next(l for l in table if l.dense):
            # Rows (h, w, c) here, c over tower 0 first; torch flattens (c, h, w).
            kernel = kernel.reshape(h, w, c * towers, -1).transpose(
                2, 0, 1, 3).reshape(kernel.shape)
          op = nn.Linear(*kernel.shape)
          weight = kernel.T
        else:
          # A layer reading its own tower sees one tower's share of the
          # channels: a grouped convolution, towers first.
          op = nn.Conv2d(channels, kernel.shape[3], kernel.shape[0],
                         stride=layer.stride, padding=layer.padding,
                         groups=channels // kernel.shape[2])
          weight = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
          channels = kernel.shape[3]
        with torch.no_grad():
          op.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
          op.bias.copy_(torch.from_numpy(np.ascontiguousarray(
              flat[f'{layer.name}/bias'])))
        self.ops[layer.name] = op

    def _after(self, layer, x):
      if layer is table[-1]:
        return x  # The logits.
      x = activation(x)
      if layer.lrn and cfg.lrn:
        # Over each tower's channels only, as the towers of Fig. 2 do.
        n, ch, hh, ww = x.shape
        x = F.local_response_norm(
            x.reshape(n * towers, ch // towers, hh, ww), layers.LRN_N,
            alpha=alpha, beta=layers.LRN_BETA, k=layers.LRN_K
        ).reshape(n, ch, hh, ww)
      if layer.pool:
        x = F.max_pool2d(x, *pool)
      if layer.dropout and cfg.dropout_rate > 0:
        x = F.dropout(x, cfg.dropout_rate, training=self.training)
      return x

    def forward(self, x):  # (N, 3, S, S) -> (N, classes)
      for layer in table:
        if layer.dense and x.ndim > 2:
          x = torch.flatten(x, 1)
        x = self._after(layer, self.ops[layer.name](x))
      return x

  return Net().eval()


def count_params(net) -> int:
  return sum(p.numel() for p in net.parameters())


def fixed_batch(cfg: ModelConfig, batch_size: int, seed: int = 0,
                scale: float = CHECK_IMAGE_SCALE) -> np.ndarray:
  rng = np.random.default_rng(seed)
  size = cfg.image_size
  return (scale * rng.standard_normal((batch_size, size, size, 3))).astype(np.float32)


def agreement(settings, *, batch_size: int = 4, lrn_alpha: float | None = None
              ) -> dict:
  """Logits of this project's network and of its PyTorch twin, same weights."""
  torch = _torch()
  # float32: the check compares the function, not rounding.
  cfg = dataclasses.replace(settings.model, dtype='float32')
  net = model.create(cfg, settings.seed)
  flat = model.export_params(net)
  images = fixed_batch(cfg, batch_size)
  # Full float32 products: on GPUs JAX's default is TF32 (about 1e-3 off).
  with jax.default_matmul_precision('highest'):
    ours = np.asarray(jax.jit(lambda x: net(x))(images), np.float32)
  twin = torch_network(cfg, flat, lrn_alpha=lrn_alpha)
  with torch.no_grad():
    theirs = twin(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  scale = float(np.max(np.abs(ours)))
  diff = float(np.max(np.abs(ours - theirs)))
  return {
      'batch_size': batch_size,
      'image_scale': CHECK_IMAGE_SCALE,
      'max_abs_logit': scale,
      'max_abs_diff': diff,
      'relative_diff': diff / scale,
      'agrees': diff <= CHECK_RTOL * scale,
      'params_torch': count_params(twin),
      'params_jax': model.count_params(net),
  }


# --- Timing -----------------------------------------------------------------------


def torch_train_step(net, settings, device, dtype: str):
  """One SGD step of `net` as the paper's recipe runs it; returns the loss.

  Momentum 0.9 and weight decay on kernels only, as alexnet_jax does.
  PyTorch's SGD keeps v = 0.9 v + g and steps by lr v, the paper's rule
  with v scaled by lr: the same work per step.
  """
  torch = _torch()
  opt = settings.optimizer
  kernels = [p for n, p in net.named_parameters() if n.endswith('weight')]
  biases = [p for n, p in net.named_parameters() if n.endswith('bias')]
  sgd = torch.optim.SGD(
      [{'params': kernels, 'weight_decay': opt.weight_decay},
       {'params': biases, 'weight_decay': 0.0}],
      lr=opt.learning_rate, momentum=opt.momentum)
  amp = dtype == 'bfloat16'

  def train_step(images, labels):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
      loss = torch.nn.functional.cross_entropy(net(images), labels)
    sgd.zero_grad(set_to_none=True)
    loss.backward()
    sgd.step()
    return loss

  return train_step


def run_torch(train_step, images, labels, steps: int, device) -> float:
  torch = _torch()
  start, loss = time.perf_counter(), None
  for _ in range(steps):
    loss = train_step(images, labels)
  if loss is not None:  # --warmup=0 runs no step.
    loss.item()  # Waits for the last step.
  if device.type == 'cuda':
    torch.cuda.synchronize()
  return time.perf_counter() - start


def jax_runs(settings, strategies, batch_size, dtype, kernel_grads=()):
  """The JAX placements to time (placements.Placement, not yet compiled),
  each once per `conv_kernel_grad` setting in kernel_grads (named
  `placement+setting` unless it is the config's own; empty: the config's
  alone). Their settings hold the setting and the dtype: placements.prepare
  builds each step from its own graphdef."""
  runs = []
  own = settings.model.conv_kernel_grad
  for kernel_grad in kernel_grads or (own,):
    variant = dataclasses.replace(settings, model=dataclasses.replace(
        settings.model, conv_kernel_grad=kernel_grad))
    for p in placements.placements(variant, strategies=list(strategies),
                                  num_devices=jax.device_count(),
                                  batch_size=batch_size, dtype=dtype):
      if kernel_grad != own:
        p.name = f'{p.name}+{kernel_grad}'
      runs.append(p)
  return runs


def torch_runs(settings, flat, device, dtype, images, labels, *, warmup: int,
               compile_backend: str | None, say=lambda message: None):
  """PyTorch's train steps, warmed up: eager, and under torch.compile unless
  `compile_backend` is None. Each has its own copy of the weights `flat` and
  its own optimizer. Returns ({name: step}, {name: compile seconds},
  {name: why it failed}): torch.compile failing is a row, not an error.
  """
  torch = _torch()
  cfg = dataclasses.replace(settings.model, dtype='float32')
  layout = torch.channels_last if device.type == 'cuda' else torch.contiguous_format
  torch_steps, compile_seconds, failed = {}, {}, {}
  for name in TORCH_RUNS if compile_backend else TORCH_RUNS[:1]:
    # Each its own copy of the weights and its own optimizer.
    net = torch_network(cfg, flat).train().to(device, memory_format=layout)
    try:
      if name == COMPILED:
        say(f'PyTorch: torch.compile ({compile_backend}), compiling...')
        net = torch.compile(net, backend=compile_backend)
      step = torch_train_step(net, settings, device, dtype)
      started = time.perf_counter()
      # At least one step: torch.compile compiles on the first call.
      run_torch(step, images, labels, max(warmup, 1 if name == COMPILED else 0),
                device)
      if name == COMPILED:
        compile_seconds[name] = time.perf_counter() - started
      torch_steps[name] = step
    except Exception as e:  # pylint: disable=broad-except
      if name != COMPILED:
        raise
      # The comparison goes on without it; its row says why.
      failed[name] = f'{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}'
      say(f'PyTorch: torch.compile failed ({failed[name]}); timing the rest.')

  return torch_steps, compile_seconds, failed


def compare(settings, *, strategies, batch_size, dtype, steps, warmup, repeats,
            command, kernel_grads=(), compile_backend='inductor',
            say=lambda message: None) -> dict:
  """Agreement check, then alternating timings; returns the report.

  PyTorch runs eager and, unless `compile_backend` is None, under
  `torch.compile(backend=compile_backend)` (inductor, the default; the tests
  use a quicker one): each from the same weights, alternating with the JAX
  runs. If
  torch.compile fails here, its row says why (`failed`) and the rest is
  timed all the same.

  `kernel_grads`: the `conv_kernel_grad` settings to time, each JAX placement
  once per setting (named `placement+setting` unless it is the config's own);
  empty: the config's alone.
  """
  torch = _torch()
  say('checking that both networks give the same logits...')
  check = agreement(settings)
  if not check['agrees'] or check['params_torch'] != check['params_jax']:
    raise SystemExit(
        f'vs_pytorch: the PyTorch network does not compute the same function'
        f' ({check}); not timing it.')
  say(f'logits agree: max |diff| {check["max_abs_diff"]:.2e} of'
      f' {check["max_abs_logit"]:.2f}; {check["params_torch"]:,} parameters'
      ' on both sides.')

  backend = jax.default_backend()
  device = torch.device('cuda' if backend == 'gpu' else 'cpu')
  if backend not in ('cpu', 'gpu'):
    raise UserError(f'vs_pytorch runs on CPU or an NVIDIA GPU; JAX is on'
                    f' {backend}.')
  if device.type == 'cuda' and not torch.cuda.is_available():
    raise UserError('JAX runs on a GPU but this PyTorch has no CUDA: install'
                    ' the CUDA build (benchmarks/gpu.sh does).')
  runs = jax_runs(settings, strategies, batch_size, dtype, kernel_grads)
  # The same numbers for every run (parameters are float32 in any setting).
  host_state = placements.initial_state(settings)
  host = placements.synthetic_batch(runs[0].settings)
  for p in runs:
    say(f'JAX {p.name}: compiling...')
    placements.prepare(p, host_state, host)
    say(f'JAX {p.name}: compiled in {p.compile_seconds:.1f} s.')
    placements.run_steps(p, warmup)

  cfg = dataclasses.replace(settings.model, dtype='float32')
  # The very weights the JAX runs start from, not a second initialisation.
  flat = model.export_params(nnx.merge(model.graphdef(cfg), host_state.params))
  layout = torch.channels_last if device.type == 'cuda' else torch.contiguous_format
  images = torch.from_numpy(host['image'].transpose(0, 3, 1, 2).copy()).to(
      device, memory_format=layout)
  labels = torch.from_numpy(host['label'].astype(np.int64)).to(device)
  torch_steps, compile_seconds, failed = torch_runs(
      settings, flat, device, dtype, images, labels, warmup=warmup,
      compile_backend=compile_backend, say=say)
  seconds = {name: [] for name in torch_steps} | {p.name: [] for p in runs}
  for r in range(repeats):
    for name, step in torch_steps.items():
      seconds[name].append(run_torch(step, images, labels, steps, device))
    for p in runs:  # Alternating: a noisy stretch hits both frameworks.
      seconds[p.name].append(placements.run_steps(p, steps))
    say(f'repeat {r + 1}/{repeats}: ' + ', '.join(
        f'{name} {steps * batch_size / s[-1]:.1f} images/s'
        for name, s in seconds.items()))
  rates = {k: [steps * batch_size / s for s in v] for k, v in seconds.items()}
  torch_median = statistics.median(rates[EAGER])
  compiled_median = (statistics.median(rates[COMPILED]) if COMPILED in rates
                     else None)
  rows = []
  for name, r in rates.items():
    run = next((p for p in runs if p.name == name), None)
    median = statistics.median(r)
    rows.append({
        'name': name,
        'framework': 'pytorch' if run is None else 'jax',
        'devices': 1 if run is None else run.mesh.devices.size,
        'conv_kernel_grad': None if run is None else run.settings.model.conv_kernel_grad,
        # PyTorch's: the warm-up, whose first compiled call compiles.
        'compile_seconds': (compile_seconds.get(name) if run is None
                            else run.compile_seconds),
        'images_per_sec': r,
        'median_images_per_sec': median,
        'ratio_to_pytorch': median / torch_median,
        'ratio_to_pytorch_compiled': (median / compiled_median
                                      if compiled_median else None),
        'paired_ratios': [a / b for a, b in zip(r, rates[EAGER])],
    })
  for name, reason in failed.items():
    rows.append({'name': name, 'framework': 'pytorch', 'devices': 1,
                 'failed': reason})
  return {
      'command': command,
      'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
      'jax_version': jax.__version__,
      'torch_version': torch.__version__,
      'torch_threads': torch.get_num_threads(),
      'backend': backend,
      'device_kind': jax.devices()[0].device_kind,
      'host_cpu': placements.cpu_name(),
      'variant': settings.model.variant,
      'image_size': settings.model.image_size,
      'width': settings.model.width,
      'batch_size': batch_size,
      'dtype': dtype,
      'pytorch_setup': ('AMP autocast to bfloat16' if dtype == 'bfloat16'
                        else 'float32') + (
                            ', channels_last' if device.type == 'cuda' else '')
                       + (f'; eager, and torch.compile ({compile_backend}) of'
                          ' the network (forward and backward; the optimizer'
                          ' step eager)' if compile_backend else '; eager'),
      'steps': steps, 'warmup': warmup, 'repeats': repeats,
      'agreement': check,
      'rows': rows,
  }


def format_report(r: dict) -> str:
  lines = [
      f'AlexNet {r["variant"]} (width {r["width"]:g}), {r["image_size"]}x'
      f'{r["image_size"]}, batch {r["batch_size"]}, {r["dtype"]}; train step'
      f' (forward, backward, SGD momentum), synthetic batch on the device.',
      f'{r["backend"]} ({r["device_kind"]}; host {r["host_cpu"]}), jax'
      f' {r["jax_version"]}, torch {r["torch_version"]} ({r["pytorch_setup"]},'
      f' {r["torch_threads"]} threads), {r["date"]}.',
      f'Command: {r["command"]}',
      f'Same weights, same logits: max |diff| {r["agreement"]["max_abs_diff"]:.2e}'
      f' of max |logit| {r["agreement"]["max_abs_logit"]:.2f} on'
      f' {r["agreement"]["batch_size"]} images; {r["agreement"]["params_torch"]:,}'
      ' parameters on both sides.',
      f'{r["repeats"]} repeat(s) of {r["steps"]} step(s) after {r["warmup"]}'
      ' warm-up step(s), alternating; medians over repeats.',
      '']
  timed = [p for p in r['rows'] if 'failed' not in p]
  ratio = lambda x: '' if x is None else f'{x:.2f}'
  rows = [[p['name'], p['framework'], str(p['devices']),
           '' if p.get('compile_seconds') is None else f'{p["compile_seconds"]:.1f}',
           f'{p["median_images_per_sec"]:.1f}',
           ' '.join(f'{x:.1f}' for x in p['images_per_sec']),
           ratio(p['ratio_to_pytorch']), ratio(p.get('ratio_to_pytorch_compiled')),
           ' '.join(f'{x:.2f}' for x in p['paired_ratios'])]
          for p in timed]
  lines += format_table(
      ['run', 'framework', 'devices', 'compile s', 'images/s', 'per repeat',
       'vs eager', 'vs compiled', 'per-repeat ratios vs eager'], rows,
      right={2, 3, 4, 6, 7})
  for p in r['rows']:
    if 'failed' in p:
      lines.append(f'{p["name"]}: not timed, it failed here: {p["failed"]}')
  return '\n'.join(lines)


def main(argv):
  del argv
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  settings = Settings.from_config(_CONFIG.value)
  dtype = _DTYPE.value or settings.model.dtype
  batch_size = _BATCH_SIZE.value or settings.data.batch_size
  strategies = tuple(s for s in _STRATEGIES.value.split(',') if s)
  kernel_grads = tuple(k for k in _KERNEL_GRADS.value.split(',') if k)
  for kernel_grad in kernel_grads:
    if kernel_grad not in convolution.CONV_KERNEL_GRADS:
      raise UserError(f'--kernel_grads: unknown conv_kernel_grad {kernel_grad!r};'
                      f' choose from {", ".join(convolution.CONV_KERNEL_GRADS)}.')
  options = timing.Options(strategies=strategies, batch_sizes=(batch_size,),
                           dtypes=(dtype,), steps=_STEPS.value,
                           warmup=_WARMUP.value, repeats=_REPEATS.value)
  # On a GPU both frameworks share its memory: JAX would take 75% up front.
  os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.45')
  placements.provide_host_devices(settings, strategies)
  timing.check_options(settings, options, jax.device_count())
  _torch()  # Before anything compiles.
  say = lambda message: print(f'vs_pytorch: {message}', file=sys.stderr, flush=True)
  report = compare(
      settings, strategies=strategies, batch_size=batch_size, dtype=dtype,
      steps=_STEPS.value, warmup=_WARMUP.value, repeats=_REPEATS.value,
      command=shlex.join(['python', '-m', 'benchmarks.vs_pytorch', *sys.argv[1:]]),
      kernel_grads=kernel_grads, compile_backend='inductor' if _TORCH_COMPILE.value else None, say=say)
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(report, f, indent=1)
      f.write('\n')
  print(format_report(report))


if __name__ == '__main__':
  _CONFIG = cli.define_config_flag()
  _BATCH_SIZE = flags.DEFINE_integer('batch_size', 0, "Global batch (0: the config's).")
  _DTYPE = flags.DEFINE_string('dtype', '', "float32 or bfloat16 (default: the config's).")
  _STRATEGIES = flags.DEFINE_string(
      'strategies', 'towers', 'JAX placements besides one_device, comma-separated'
      ' (parallel.STRATEGIES), each on its usual mesh over all devices.')
  _STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per repeat.')
  _WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed steps after compiling.')
  _REPEATS = flags.DEFINE_integer('repeats', 5, 'Alternating repeats; medians reported.')
  _JSON = flags.DEFINE_string('json', '', 'Also write the report to this file.')
  _TORCH_COMPILE = flags.DEFINE_bool(
      'torch_compile', True, 'Also time PyTorch under torch.compile (inductor).')
  _KERNEL_GRADS = flags.DEFINE_string(
      'kernel_grads', '', 'conv_kernel_grad settings to time side by side,'
      ' comma-separated (e.g. xla,patches); empty: the config\'s alone.')
  cli.run(main, _CONFIG)
