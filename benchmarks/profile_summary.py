"""Where one train step's time goes on the XLA CPU backend, from a profiler trace.

    python -m alexnet_jax.benchmark --config=configs/two_gpu.py --strategies=towers \
        --batch_sizes=32 --steps=1 --repeats=1 --trace_dir=/tmp/traces
    python -m benchmarks.profile_summary /tmp/traces/*

Reads the `jax.profiler` trace (XSpace protobuf, parsed with TensorFlow's
copy of its schema) of each folder and prints, per traced step: its wall
time, each worker thread's busy time (time inside HLO ops), how much of the
wall time had 0, 1 or 2+ ops running at once, and the ops that took the most
time, grouped by kind (`convolution`, `fusion`, `reduce-window`, ...). On
XLA's CPU runtime an op runs on one thread; a convolution (oneDNN/Eigen) may
also hand work to the pool's other threads, which the trace does not show
as ops, so "busy" undercounts what those use.
"""

import collections
import glob
import os
import re
import sys

OP_STAT = 'hlo_op'


def load(path: str):
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel
  space = xplane_pb2.XSpace()
  with open(path, 'rb') as f:
    space.ParseFromString(f.read())
  return space


def ops(space, module_prefix: str = 'jit_train_step'):
  """(thread, op name, start ns, end ns) for every HLO op of the step."""
  out = []
  for plane in space.planes:
    stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        stats = {stat_names.get(s.metadata_id): s for s in event.stats}
        if OP_STAT not in stats:
          continue
        module = stats.get('hlo_module')
        name = stat_names.get(module.ref_value, '') if module is not None else ''
        if module_prefix and not name.startswith(module_prefix):
          continue
        start = line.timestamp_ns + event.offset_ps / 1e3
        out.append((line.name, plane.event_metadata[event.metadata_id].name,
                    start, start + event.duration_ps / 1e3))
  return out


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
    print(f'== {folder}: step wall {s["wall_ms"]:.0f} ms')
    print('  busy per thread (ms): ' + ', '.join(
        f'{t.split("/")[0]}#{i} {v:.0f}' for i, (t, v) in enumerate(s['busy_ms'].items())))
    c = s['concurrency_ms']
    print(f'  ops running at once: none {c[0]:.0f} ms, one {c[1]:.0f} ms,'
          f' two or more {c[2]:.0f} ms')
    total = sum(s['by_kind_ms'].values())
    for name, ms in list(s['by_kind_ms'].items())[:12]:
      print(f'  {ms:8.0f} ms  {100 * ms / total:4.1f}%  {name}')


if __name__ == '__main__':
  main(sys.argv[1:])
