"""K seeds in one program (run/seeds.py, jax.vmap) against K separate steps, side by side.

    python -m benchmarks.seeds_vmap [--seeds=3] [--repeats=10] [--variant=cifar_4layer] \\
        [--data_dir=FOLDER] [--out=benchmarks/results/FILE.json]

Compiles the train step of configs/cifar10.py:VARIANT (batch 128, one
device) twice: core's step, and run/seeds.py's step over K stacked states.
Then, alternating so that a loaded machine hits both alike, times one
vmapped step of K seeds against K plain steps one after another (the
separate runs' steady state; their start-up and K compiles are not
counted, which favours them). Batches are each seed's own from the input
pipeline (the built-in shapes10, or an image folder with --data_dir), read
before timing. Prints and writes images/s of each, their ratio, and that
both gave the same losses.
"""

import datetime
import json
import os
from pathlib import Path
import platform
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from alexnet_jax.core import model
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core import steps
from alexnet_jax.core import train_state
from alexnet_jax.run import seeds
from alexnet_jax.run.settings import Settings
from configs import cifar10


def _flag(name: str, default: str) -> str:
  prefix = f'--{name}='
  return next((a[len(prefix):] for a in sys.argv[1:] if a.startswith(prefix)), default)


def _cpu() -> str:
  for line in Path('/proc/cpuinfo').read_text().splitlines():
    if line.startswith('model name'):
      return line.split(':', 1)[1].strip()
  return platform.processor()


def main() -> dict:
  k, repeats = int(_flag('seeds', '3')), int(_flag('repeats', '10'))
  variant, data_dir = _flag('variant', 'cifar_4layer'), _flag('data_dir', '')
  config = cifar10.get_config(variant)
  config.strategy, config.mesh.data, config.mesh.model = 'data', 1, 1
  if data_dir:
    config.dataset, config.data_dir = 'image_folder', data_dir
  else:
    config.dataset, config.data_dir = 'shapes10', '/tmp/seeds_vmap_tfds'
    config.eval_split = 'validation'
  settings = Settings.from_config(config)
  mesh = parallel.make_mesh(settings.mesh)
  opt, rules = settings.optimizer, settings.rules
  abstract = train_state.sharded_abstract_state(settings.model, opt, rules, mesh)
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  graphdef, lr_fn = model.graphdef(settings.model), optim.learning_rate_fn(opt, 100, 1000)
  one = steps.make_train_step(graphdef, opt, rules, lr_fn, shardings)
  together = seeds.make_train_step(graphdef, opt, rules, lr_fn, shardings)
  ids = list(range(k))
  stream = seeds.stacked_batches(settings.data, ids, 0, 0, 1)
  host = [next(stream) for _ in range(repeats + 1)]
  states = [train_state.create_train_state(settings.model, opt, s, rules, mesh)[1]
            for s in ids]
  stacked = seeds.stack(states)
  times = {'vmap': [], 'separate': []}
  losses = {'vmap': [], 'separate': []}
  with jax.set_mesh(mesh):
    for i, batch in enumerate(host):  # Step 0 compiles both, untimed.
      start = time.perf_counter()
      stacked, metrics = together(stacked, seeds.device_batch(batch, mesh, rules))
      losses['vmap'].append(np.asarray(jax.block_until_ready(metrics['train_loss'])))
      lap = time.perf_counter() - start
      start, row = time.perf_counter(), []
      for s in ids:
        states[s], m = one(states[s], steps.device_batch(
            {key: v[s] for key, v in batch.items()}, mesh, rules))
        row.append(float(jax.block_until_ready(m['train_loss'])))
      losses['separate'].append(np.asarray(row))
      if i:
        times['vmap'].append(lap)
        times['separate'].append(time.perf_counter() - start)
  images = k * settings.data.batch_size
  rate = {how: images / statistics.median(t) for how, t in times.items()}
  diff = float(np.max(np.abs(np.stack(losses['vmap']) - np.stack(losses['separate']))))
  try:
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                            text=True, check=False).stdout.strip()
  except OSError:
    commit = ''
  result = {
      'command': ' '.join(['python', '-m', 'benchmarks.seeds_vmap', *sys.argv[1:]]),
      'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
      'commit': commit,
      'hardware': f'{os.cpu_count()}-core {_cpu()} (CPU, shared with other work)',
      'jax': jax.__version__, 'device': str(jax.devices()[0]),
      'variant': variant, 'dataset': settings.data.dataset,
      'batch_size': settings.data.batch_size, 'image_size': settings.model.image_size,
      'seeds': k, 'timed_steps': repeats,
      'images_per_sec': {how: round(r, 1) for how, r in rate.items()},
      'vmap_over_separate': round(rate['vmap'] / rate['separate'], 3),
      'median_step_s': {how: statistics.median(t) for how, t in times.items()},
      'max_train_loss_difference': diff,
  }
  print(json.dumps(result, indent=1))
  out = _flag('out', '')
  if out:
    Path(out).write_text(json.dumps(result, indent=1) + '\n')
  return result


if __name__ == '__main__':
  main()
