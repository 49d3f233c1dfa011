"""The RGB statistics of a training set, for Sec. 2 and Sec. 4.1.

`input.stats_file` (a JSON file that `python -m alexnet_jax.data_stats`
writes) gives the mean pixel, the per-channel standard deviation and the
eigenvalues and eigenvectors of the 3x3 RGB covariance; without it the
pipeline uses ImageNet's (the constants below). `pixel_sums` streams a
split once (any size, constant memory): the pixels are those of each
image's centre square resized to R x R, the picture that crops are cut
from (Sec. 2). Sums run in float64 around a grey of 128, so a billion
pixels lose nothing to rounding.
"""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from alexnet_jax.data.settings import DataConfig
from alexnet_jax.errors import UserError

# `standardize` without a stats file: torchvision's ImageNet mean and standard
# deviation per channel, in 0..255 units (0.485, 0.456, 0.406 and 0.229, 0.224,
# 0.225 of 0..1).
STANDARDIZE_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STANDARDIZE_STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# `mean_pixel` without a stats file: ILSVRC-2012's mean training pixel in
# 0..255 units, RGB. Caffe's python/caffe/imagenet/ilsvrc_2012_mean.npy (the
# mean 256x256 image of bvlc_alexnet) averaged over its positions: B 104.0070,
# G 116.6688, R 122.6789.
IMAGENET_MEAN_PIXEL = (122.6789143406786, 116.66876761696767, 104.0069879317889)

# Sec. 4.1 without a stats file: the principal components of ImageNet's RGB
# pixel values as fb.resnet.torch ships them (datasets/imagenet.lua, `pca`),
# eigenvalues for pixel values in 0..1 (times 255**2 for 0..255), eigenvectors
# as columns, rows R, G, B.
IMAGENET_EIGENVALUES = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGENVECTORS = ((-0.5675, 0.7192, 0.4009),
                         (-0.5808, -0.0045, -0.8140),
                         (-0.5836, -0.6948, 0.4203))

NORMALIZATIONS = ('standardize', 'mean_pixel')


@dataclasses.dataclass(frozen=True)
class ImageStats:
  """RGB statistics of a training set (`python -m alexnet_jax.data_stats` writes them)."""
  mean_rgb: tuple[float, ...]  # 0..255 units.
  stddev_rgb: tuple[float, ...]  # 0..255 units.
  eigenvalues: tuple[float, ...]  # Of the covariance of pixels in 0..1.
  eigenvectors: tuple[tuple[float, ...], ...]  # Columns, rows R, G, B.

  def to_json(self) -> dict:
    return {
        'mean_rgb': list(self.mean_rgb),
        'stddev_rgb': list(self.stddev_rgb),
        'eigenvalues': list(self.eigenvalues),
        'eigenvectors': [list(row) for row in self.eigenvectors],
        'units': STATS_UNITS,
    }


STATS_UNITS = ('mean_rgb and stddev_rgb in 0..255; eigenvalues and the '
               'columns of eigenvectors of the RGB covariance of pixel values '
               'in 0..1 (eigenvalues times 255**2 for 0..255)')


def image_stats(cfg: DataConfig) -> ImageStats | None:
  """The stats file's statistics, or None for ImageNet's constants. Checks
  the normalisation and colour-shift settings too."""
  if cfg.normalization not in NORMALIZATIONS:
    raise UserError(
        f'Unknown config.input.normalization={cfg.normalization!r};'
        f' choose {" or ".join(map(repr, NORMALIZATIONS))} (Sec. 2: subtract'
        ' the mean pixel).')
  if not (cfg.pca_lighting >= 0 and math.isfinite(cfg.pca_lighting)):
    raise UserError(
        'config.input.pca_lighting is the standard deviation of the colour'
        f' shift a_i (Sec. 4.1: 0.1; 0 turns it off); got'
        f' {cfg.pca_lighting!r}.')
  if not cfg.stats_file:
    return None
  return load_stats(cfg.stats_file)


def load_stats(path: str) -> ImageStats:
  """Reads and checks a stats file; UserError naming what is wrong."""
  path = Path(path).expanduser()
  remedy = ('Write it with `python -m alexnet_jax.data_stats --config=CONFIG'
            f' --out={path}`, or set config.input.stats_file=\'\' to use'
            " ImageNet's statistics.")
  try:
    raw = json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f'config.input.stats_file={str(path)!r} does not exist.'
                    f' {remedy}') from None
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f'config.input.stats_file={str(path)!r} is not readable'
                    f' JSON ({e}). {remedy}') from None
  shapes = {'mean_rgb': (3,), 'stddev_rgb': (3,), 'eigenvalues': (3,),
            'eigenvectors': (3, 3)}
  values = {}
  for key, shape in shapes.items():
    try:
      value = np.asarray(raw[key], np.float64)
    except (KeyError, TypeError, ValueError):
      value = None
    if value is None or value.shape != shape or not np.isfinite(value).all():
      found = (np.shape(raw.get(key)) if isinstance(raw, dict) and key in raw
               else 'missing')
      raise UserError(
          f'The stats file {path} needs {key!r} as {"x".join(map(str, shape))}'
          f' finite numbers; found {found}. {remedy}')
    values[key] = value
  if (values['stddev_rgb'] <= 0).any() or (values['eigenvalues'] < 0).any():
    raise UserError(f'The stats file {path} has a non-positive stddev_rgb or a'
                    f' negative eigenvalue. {remedy}')
  vectors = values['eigenvectors']
  if not np.allclose(vectors.T @ vectors, np.eye(3), atol=1e-2):
    raise UserError(f'The eigenvectors in the stats file {path} are not'
                    f' orthonormal. {remedy}')
  return ImageStats(
      tuple(values['mean_rgb'].tolist()), tuple(values['stddev_rgb'].tolist()),
      tuple(values['eigenvalues'].tolist()),
      tuple(map(tuple, vectors.tolist())))


_GREY = 128.0  # Sums are taken around it: smaller terms, less cancellation.


def pixel_sums(images, max_images: int = 0) -> dict[str, np.ndarray]:
  """Streams `images` (a tf.data dataset of (H, W, 3) images in 0..255, as
  `pipeline.square_images` gives them): the count, sum and Gram matrix of
  their pixels (minus _GREY), in float64."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
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
  count = sums['pixels']
  mean = sums['sum'] / count
  covariance = sums['gram'] / count - np.outer(mean, mean)  # 0..255 units.
  covariance_01 = covariance / 255.0**2
  values, vectors = np.linalg.eigh(covariance_01)
  order = np.argsort(values)[::-1]
  values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
  # A sign per vector, so that reruns agree: largest component positive.
  vectors *= np.sign(vectors[np.abs(vectors).argmax(0), range(3)])
  stats = ImageStats(
      tuple((mean + _GREY).tolist()), tuple(np.sqrt(np.diag(covariance)).tolist()),
      tuple(values.tolist()), tuple(map(tuple, vectors.tolist())))
  return stats, covariance_01
