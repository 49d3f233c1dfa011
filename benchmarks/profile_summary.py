"""Where one train step's time goes, from a `jax.profiler` trace (CPU or GPU).

    python -m alexnet_jax.benchmark --config=configs/two_gpu.py --strategies=towers \
        --batch_sizes=32 --steps=1 --repeats=1 --trace_dir=/tmp/traces
    python -m benchmarks.profile_summary /tmp/traces/*

Reads the trace (XSpace protobuf, through jaxlib's own reader,
`jax.profiler.ProfileData`: no TensorFlow needed) of each folder and prints,
per traced step: its wall time, each timeline's busy time, how much of the
wall time had 0, 1 or 2+ ops running at once, and the ops that took the most
time, grouped by kind (`convolution`, `fusion`, `reduce-window`, ...).

Timelines: on a GPU, the device's streams, each event a kernel (named by its
HLO op where the trace says it, else by the kernel); on CPU, the worker
threads, each event an HLO op. On XLA's CPU runtime an op runs on one
thread; a convolution may also hand work to the pool's other threads, which
the trace does not show as ops, so "busy" undercounts what those use.
"""

import collections
import glob
import os
import re
import sys

OP_STAT = 'hlo_op'


def load(path: str):
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  return ProfileData.from_file(path)


def ops(space, module_prefix: str = 'jit_train_step'):
  """(timeline, op name, start ns, end ns) for every op of the step: the
  kernels on the device's streams where the trace has a device, else the
  host threads' HLO ops."""
  device, host = [], []
  for plane in space.planes:
    on_device = plane.name.startswith('/device:')
    for line in plane.lines:
      kernels = on_device and line.name.startswith('Stream')
      for event in line.events:
        stats = dict(event.stats)
        op = stats.get(OP_STAT)
        module = str(stats.get('hlo_module', ''))
        if module_prefix and module and not module.startswith(module_prefix):
          continue
        if kernels:
          device.append((f'{plane.name} {line.name}', str(op or event.name),
                         event.start_ns, event.end_ns))
        elif op is not None and module:
          host.append((line.name, str(op), event.start_ns, event.end_ns))
  return device or host


def kind(op_name: str) -> str:
  """'convolution.12' -> 'convolution'; 'loop_add_fusion.3' -> 'loop_add_fusion'."""
  return re.sub(r'\.\d+$', '', op_name)


def summarise(events) -> dict:
  if not events:
    return {}
  start = min(e[2] for e in events)
  end = max(e[3] for e in events)
  busy = collections.Counter()
  by_kind = collections.Counter()
  for thread, name, s, e in events:
    busy[thread] += e - s
    by_kind[kind(name)] += e - s
  # Sweep: time with 0, 1, 2+ ops running at once.
  edges = sorted([(s, 1) for _, _, s, _ in events] + [(e, -1) for _, _, _, e in events])
  overlap = collections.Counter()
  running, last = 0, start
  for t, delta in edges:
    overlap[min(running, 2)] += t - last
    running, last = running + delta, t
  return {'wall_ms': (end - start) / 1e6,
          'busy_ms': {k: v / 1e6 for k, v in busy.most_common()},
          'concurrency_ms': {k: overlap[k] / 1e6 for k in (0, 1, 2)},
          'by_kind_ms': {k: v / 1e6 for k, v in by_kind.most_common()}}


def main(folders: list[str]) -> None:
  for folder in folders:
    paths = sorted(glob.glob(os.path.join(folder, '**', '*.xplane.pb'),
                             recursive=True))
    if not paths:
      print(f'{folder}: no *.xplane.pb inside', file=sys.stderr)
      continue
    s = summarise(ops(load(paths[-1])))
    print(f'== {folder}: step wall {s["wall_ms"]:.2f} ms')
    print('  busy per timeline (ms): ' + ', '.join(
        f'{t if t.startswith("/") else t.split("/")[0]}#{i} {v:.2f}' for i, (t, v) in enumerate(s['busy_ms'].items())))
    c = s['concurrency_ms']
    print(f'  ops running at once: none {c[0]:.2f} ms, one {c[1]:.2f} ms,'
          f' two or more {c[2]:.2f} ms')
    total = sum(s['by_kind_ms'].values())
    for name, ms in list(s['by_kind_ms'].items())[:15]:
      print(f'  {ms:9.3f} ms  {100 * ms / total:4.1f}%  {name[:100]}')


if __name__ == '__main__':
  main(sys.argv[1:])
