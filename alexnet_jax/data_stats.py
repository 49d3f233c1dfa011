"""The RGB statistics of a training split, for Sec. 2 and Sec. 4.1.

    python -m alexnet_jax.data_stats --config=configs/cifar10.py --out=cifar10_stats.json

Streams the training split once (any size, constant memory) and writes the
mean pixel, the per-channel standard deviation and the eigenvalues and
eigenvectors of the 3x3 RGB covariance to a small JSON file; point
`config.input.stats_file` at it. The pixels are those of each image's centre
square resized to R x R, the picture that crops are cut from (Sec. 2; R is
`round(image_size * input.resize_ratio)`). Sums run in float64 around a
grey of 128, so a billion pixels lose nothing to rounding.
"""

import json
import os
from pathlib import Path
import sys

from absl import flags
import numpy as np

from alexnet_jax import cli
from alexnet_jax.errors import UserError

_GREY = 128.0  # Sums are taken around it: smaller terms, less cancellation.


def pixel_sums(config, max_images: int = 0) -> dict[str, np.ndarray]:
  """Streams the training split: the count, sum and Gram matrix of its pixels
  (minus _GREY, 0..255 units), in float64."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from alexnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  images = input_pipeline.square_images(config)
  if max_images:
    images = images.take(max_images)

  def sums(image):
    pixels = tf.reshape(tf.cast(image, tf.float64), [-1, 3]) - _GREY
    return {'images': tf.ones([], tf.float64),
            'pixels': tf.cast(tf.shape(pixels)[0], tf.float64),
            'sum': tf.reduce_sum(pixels, 0),
            'gram': tf.linalg.matmul(pixels, pixels, transpose_a=True)}

  ds = images.map(sums, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  ds = ds.map(lambda b: {k: tf.reduce_sum(v, 0) for k, v in b.items()})
  total = None
  for part in ds.prefetch(2).as_numpy_iterator():
    total = part if total is None else {k: total[k] + part[k] for k in total}
  return total


def statistics(sums: dict[str, np.ndarray]):
  """Sums -> ImageStats (eigenvalues descending) and the 0..1 covariance."""
  from alexnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  count = sums['pixels']
  mean = sums['sum'] / count
  covariance = sums['gram'] / count - np.outer(mean, mean)  # 0..255 units.
  covariance_01 = covariance / 255.0**2
  values, vectors = np.linalg.eigh(covariance_01)
  order = np.argsort(values)[::-1]
  values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
  # A sign per vector, so that reruns agree: largest component positive.
  vectors *= np.sign(vectors[np.abs(vectors).argmax(0), range(3)])
  stats = input_pipeline.ImageStats(
      tuple((mean + _GREY).tolist()), tuple(np.sqrt(np.diag(covariance)).tolist()),
      tuple(values.tolist()), tuple(map(tuple, vectors.tolist())))
  return stats, covariance_01


def _define_flags():
  """Defined only when this module runs; the tests import its functions."""
  return (
      flags.DEFINE_string(
          'out', None, 'Where to write the JSON; default DATASET_stats.json'
          ' in the current directory.'),
      flags.DEFINE_integer(
          'max_images', 0, 'Read only the first N training images (0: all).'),
      cli.define_config_flag(),
  )


def main(argv):
  del argv
  config = _CONFIG.value
  out = Path(_OUT.value or f'{config.dataset}_stats.json').expanduser()
  if out.is_dir():
    raise UserError(f'--out={out} is a folder; give a file name.')
  from alexnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  info = input_pipeline.dataset_info(config)
  wanted = min(_MAX_IMAGES.value or info.num_train_examples,
               info.num_train_examples)
  print(f'Reading {wanted} images of {config.dataset}:{config.train_split}'
        ' ...', file=sys.stderr)
  sums = pixel_sums(config, _MAX_IMAGES.value)
  stats, covariance = statistics(sums)
  record = {
      **stats.to_json(),
      'covariance': covariance.tolist(),
      'dataset': config.dataset,
      'split': config.train_split,
      'images': int(sums['images']),
      'pixels': int(sums['pixels']),
      'square_size': input_pipeline.outer_size(config),
  }
  tmp = out.with_name(out.name + '.tmp')
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp.write_text(json.dumps(record, indent=2) + '\n')
  os.replace(tmp, out)  # Whole or not at all.
  print(json.dumps({k: record[k] for k in ('mean_rgb', 'stddev_rgb',
                                           'eigenvalues', 'images')}))
  print(f'Wrote {out}; use it with --config.input.stats_file={out}',
        file=sys.stderr)


if __name__ == '__main__':
  _OUT, _MAX_IMAGES, _CONFIG = _define_flags()
  cli.run(main, _CONFIG)
