"""Where a sweep's points run: which GPUs or CPU cores each one gets.

The runner never starts JAX on a GPU itself; it reads the GPUs from
`nvidia-smi` and gives every point its own share through the environment
its training process starts with:

  * several GPUs: one point per GPU (a point of a two-device mesh takes two),
    CUDA_VISIBLE_DEVICES naming only its own;
  * one large GPU: `points_per_device` points at once, each preallocating
    only its share of the memory (XLA_PYTHON_CLIENT_MEM_FRACTION), so that
    one point running out of memory fails alone;
  * CPU: `parallel` points, each pinned to its own cores
    (sched_setaffinity), which XLA's and tf.data's thread pools size
    themselves by, so the points never oversubscribe the cores; a point
    whose mesh needs several devices gets that many host devices.

Everything is decided before any point starts; a request the machine cannot
meet is a UserError (more GPUs than there are, points that cannot fit).
"""

import dataclasses
import os
import re
import subprocess

from alexnet_jax.errors import UserError

# Of each GPU's memory, what the points sharing it may preallocate together:
# the rest is the CUDA context's and the driver's.
GPU_MEMORY_SHARE = 0.9
_HOST_DEVICES = re.compile(r'--xla_force_host_platform_device_count=\d+\s*')


@dataclasses.dataclass(frozen=True)
class Gpu:
  index: str  # As CUDA_VISIBLE_DEVICES names it.
  name: str
  memory_bytes: int


@dataclasses.dataclass(frozen=True)
class Slot:
  """What one running point gets: GPUs (and its share of each), or cores."""
  gpus: tuple[str, ...] = ()
  memory_fraction: float | None = None  # Of each of its GPUs.
  cpus: tuple[int, ...] = ()
  host_devices: int = 1

  def env(self, base: dict) -> dict:
    """The point's environment: `base` with only its devices visible."""
    env = dict(base)
    flags = _HOST_DEVICES.sub('', env.get('XLA_FLAGS', '')).strip()
    if self.gpus:
      env['CUDA_VISIBLE_DEVICES'] = ','.join(self.gpus)
      if self.memory_fraction is not None:
        env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'true'
        env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{self.memory_fraction:.2f}'
    else:
      env['CUDA_VISIBLE_DEVICES'] = ''  # CPU points never take a GPU.
      env['JAX_PLATFORMS'] = 'cpu'
      if self.host_devices > 1:
        flags = (flags + f' --xla_force_host_platform_device_count='
                 f'{self.host_devices}').strip()
    if flags:
      env['XLA_FLAGS'] = flags
    else:
      env.pop('XLA_FLAGS', None)
    return env

  def describe(self) -> str:
    if self.gpus:
      share = (f', {self.memory_fraction:.0%} of its memory'
               if self.memory_fraction is not None else '')
      return f'GPU {",".join(self.gpus)}{share}'
    return (f'CPU {",".join(map(str, self.cpus))}'
            + (f', {self.host_devices} host devices' if self.host_devices > 1 else ''))


def find_gpus(env=None) -> list[Gpu]:
  """The GPUs `nvidia-smi` lists, restricted to CUDA_VISIBLE_DEVICES if set."""
  env = os.environ if env is None else env
  try:
    out = subprocess.run(
        ['nvidia-smi', '--query-gpu=index,name,memory.total',
         '--format=csv,noheader,nounits'], capture_output=True, text=True,
        timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  gpus = []
  for line in out.strip().splitlines():
    parts = [p.strip() for p in line.split(',')]
    if len(parts) == 3 and parts[2].isdigit():
      gpus.append(Gpu(parts[0], parts[1], int(parts[2]) << 20))
  visible = env.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    wanted = [v.strip() for v in visible.split(',') if v.strip()]
    gpus = [g for g in gpus if g.index in wanted]
  return gpus


def device_need(config) -> int:
  """Devices one point's mesh takes (mesh.data -1: all it is given, one)."""
  data = config.mesh.data if config.mesh.data > 0 else 1
  return max(1, data * config.mesh.model)


def plan(devices: str, *, need: int, parallel: int, points_per_device: int,
         gpus: list[Gpu], cpus: list[int]) -> list[Slot]:
  """The slots points run in, at most one point per slot at a time.

  `devices`: 'auto' (the GPUs if there are any, else the CPU), 'cpu', 'gpu'
  (every GPU) or GPU indices '0,2'. `need`: devices of the largest point.
  `parallel`: points at once (0: as many as the devices hold; on CPU, 1).
  """
  if points_per_device < 1:
    raise UserError(f'--points_per_device must be at least 1, got'
                    f' {points_per_device}.')
  if parallel < 0:
    raise UserError(f'--parallel must be 0 (as many as the devices hold) or'
                    f' more, got {parallel}.')
  if devices == 'auto':
    devices = 'gpu' if gpus else 'cpu'
  if devices == 'cpu':
    return _cpu_slots(need, parallel or 1, points_per_device, cpus)
  if devices == 'gpu':
    chosen = gpus
    if not chosen:
      raise UserError('--devices=gpu, but nvidia-smi lists no GPU on this'
                      ' machine (or CUDA_VISIBLE_DEVICES hides them all).'
                      ' Use --devices=cpu, or run where there is a GPU.')
  else:
    wanted = [d.strip() for d in devices.split(',') if d.strip()]
    by_index = {g.index: g for g in gpus}
    missing = [d for d in wanted if d not in by_index]
    if not wanted or missing or len(set(wanted)) != len(wanted):
      raise UserError(
          f'--devices={devices} asks for GPU {", ".join(missing or wanted)},'
          f' but this machine has {len(gpus)} visible GPU'
          f'{"s" if len(gpus) != 1 else ""}'
          + (f' ({", ".join(g.index for g in gpus)})' if gpus else '')
          + ". Give 'auto', 'cpu', 'gpu' (all of them) or indices of GPUs"
          ' that exist, each once.')
    chosen = [by_index[d] for d in wanted]
  if need > len(chosen):
    raise UserError(
        f'A point of this sweep needs {need} devices (mesh.model x mesh.data),'
        f' but only {len(chosen)} GPU{"s are" if len(chosen) != 1 else " is"}'
        ' given. Give more GPUs, or run both towers on one device: --set'
        ' strategy=data --set mesh.model=1 (the same function, Sec. 3.2\'s'
        ' split is placement only).')
  groups = [tuple(g.index for g in chosen[i:i + need])
            for i in range(0, len(chosen) - need + 1, need)]
  # Rounded down to a percent: the shares never add up to more than 0.9.
  share = (int(GPU_MEMORY_SHARE / points_per_device * 100 + 1e-9) / 100
           if points_per_device > 1 else None)
  slots = [Slot(gpus=g, memory_fraction=share)
           for _ in range(points_per_device) for g in groups]
  if parallel and parallel > len(slots):
    raise UserError(
        f'--parallel={parallel} asks for more points at once than the'
        f' {len(slots)} the GPUs hold ({len(groups)} group'
        f'{"s" if len(groups) != 1 else ""} of {need} GPU'
        f'{"s" if need != 1 else ""}, {points_per_device} point(s) each);'
        ' raise --points_per_device or leave --parallel out.')
  return slots[:parallel] if parallel else slots


def _cpu_slots(need, parallel, points_per_device, cpus) -> list[Slot]:
  if points_per_device != 1:
    raise UserError('--points_per_device shares a GPU; on the CPU the points'
                    ' share the cores: give --parallel=N instead (each point'
                    ' then gets its own cores).')
  if parallel > len(cpus):
    raise UserError(
        f'--parallel={parallel} points on the CPU, but this process may use'
        f' {len(cpus)} core{"s" if len(cpus) != 1 else ""}'
        f' ({",".join(map(str, cpus))}): the points would oversubscribe them'
        f' and all run slower. Give --parallel={len(cpus)} or fewer.')
  each = len(cpus) // parallel
  return [Slot(cpus=tuple(cpus[i * each:(i + 1) * each]), host_devices=need)
          for i in range(parallel)]


def check_fits(slots: list[Slot], gpus: list[Gpu], need_bytes: int,
               points_per_device: int) -> None:
  """Refuses points that cannot fit their share of a GPU (need_bytes: the
  largest point's floor per device, run/memory.py's estimate)."""
  if not slots or not slots[0].gpus or points_per_device == 1:
    return
  by_index = {g.index: g for g in gpus}
  smallest = min(by_index[i].memory_bytes for s in slots for i in s.gpus)
  share = slots[0].memory_fraction * smallest
  if need_bytes > share:
    fit = max(0, int(GPU_MEMORY_SHARE * smallest // max(need_bytes, 1)))
    raise UserError(
        f'--points_per_device={points_per_device}: each point would get'
        f' {share / (1 << 30):.1f} GiB of a {smallest / (1 << 30):.0f} GiB GPU,'
        f' but its largest point needs at least {need_bytes / (1 << 30):.1f} GiB'
        ' (parameters, optimiser state, gradients and activations). '
        + (f'Give --points_per_device={fit} or fewer' if fit > 1 else
           'Leave --points_per_device out (one point per GPU)')
        + ', or a smaller batch_size.'
        if fit else
        f'The sweep\'s largest point needs at least {need_bytes / (1 << 30):.1f}'
        f' GiB per device, more than a GPU here holds.')
