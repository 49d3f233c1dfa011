"""The RGB statistics of a training split, for Sec. 2 and Sec. 4.1.

    python -m alexnet_jax.data_stats --config=configs/cifar10.py --out=cifar10_stats.json

Streams the training split once (constant memory) and writes the mean pixel,
the per-channel standard deviation and the eigenvalues and eigenvectors of
the 3x3 RGB covariance of each image's centre square at R x R (Sec. 2) to a
small JSON file (data/pixel_stats.py); point `config.input.stats_file` at it.
"""

import json
import os
from pathlib import Path
import sys

from absl import flags

from alexnet_jax.errors import UserError
from alexnet_jax.run import cli

_OUT = flags.DEFINE_string('out', None, 'Where to write the JSON; default'
                           ' DATASET_stats.json in the current directory.')
_MAX_IMAGES = flags.DEFINE_integer(
    'max_images', 0, 'Read only the first N training images (0: all).')
_CONFIG = cli.define_config_flag()


def main(argv):
  del argv
  # Imported after the flags: TensorFlow reads its environment as it starts.
  from alexnet_jax.data import pipeline, pixel_stats  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  cfg = Settings.from_config(_CONFIG.value).data
  out = Path(_OUT.value or f'{cfg.dataset}_stats.json').expanduser()
  if out.is_dir():
    raise UserError(f'--out={out} is a folder; give a file name.')
  info = pipeline.dataset_info(cfg)
  wanted = min(_MAX_IMAGES.value or info.num_train_examples, info.num_train_examples)
  print(f'Reading {wanted} images of {cfg.dataset}:{cfg.train_split} ...',
        file=sys.stderr)
  sums = pixel_stats.pixel_sums(pipeline.square_images(cfg), _MAX_IMAGES.value)
  stats, covariance = pixel_stats.statistics(sums)
  record = {**stats.to_json(), 'covariance': covariance.tolist(),
            'dataset': cfg.dataset, 'split': cfg.train_split,
            'images': int(sums['images']), 'pixels': int(sums['pixels']),
            'square_size': cfg.square_size}
  tmp = out.with_name(out.name + '.tmp')
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp.write_text(json.dumps(record, indent=2) + '\n')
  os.replace(tmp, out)  # Whole or not at all.
  print(json.dumps({k: record[k] for k in ('mean_rgb', 'stddev_rgb',
                                           'eigenvalues', 'images')}))
  print(f'Wrote {out}; use it with --config.input.stats_file={out}', file=sys.stderr)


if __name__ == '__main__':
  cli.run(main, _CONFIG)
