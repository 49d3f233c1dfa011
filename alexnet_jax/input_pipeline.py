"""The input pipeline: tf.data under TFDS, deterministic and resumable.

Three kinds of `config.dataset`:

  * `shapes10`: built in (shapes10.py), prepared on first use in seconds.
  * `image_folder`: `config.data_dir` holds `split/class/image.jpg` (the layout
    of `tfds.folder_dataset.ImageFolder`); every file is checked once per
    process, before training, so that a bad file is named up front.
  * any other name: a TFDS dataset already prepared in `config.data_dir`.
    Nothing is ever downloaded; a missing dataset says how to get it.

The training batches are a pure function of (config, process_index,
process_count): epoch `e` reads this process's shard in an order drawn from
(config.seed, process, e), and each example's crop, flip and colour shift come
from a stateless seed of (config.seed, process, e, position in the epoch).
Resuming at step k skips the records already consumed before decoding them,
so `train_batches(config, start_step=k)` yields exactly the batches from k on.

Images (Sec. 2 and 4.1 of the paper): each image is seen as its centre square
resized to R x R, R = round(image_size * resize_ratio) (256 for 224 crops).
Training takes random image_size x image_size patches of it and random
horizontal flips, evaluation the centre patch, and the ten-patch test the four
corner and the centre patches and their reflections (`ten_crops`). Without
`random_crop`, R = image_size. Each patch is cut from the file before it is
resized: JPEGs decode only the patch's window (`tf.io.decode_and_crop_jpeg`,
with a pixel of margin so that the chroma upsampling at the window's edges
equals the full decode's), and only that window is resized to image_size,
bilinearly as Caffe did (antialiased only when shrinking more than twice).
Small images (shapes10, CIFAR's 32 px) take the same path and are enlarged.

Sec. 4.1's colour augmentation (`input.pca_lighting`, the standard deviation
of a_i; the paper's is 0.1) adds [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T to every
pixel of an image, with p_i, l_i the eigenvectors and eigenvalues of the RGB
covariance of the training set (of pixel values in 0..1, where the formula's
size is right; fb.resnet.torch applies it there too) and a_i drawn once per
image per use. Then the pixels are normalised (`input.normalization`):
`mean_pixel` subtracts the training set's mean pixel (Sec. 2), `standardize`
also divides by the per-channel standard deviation. The statistics come from
`input.stats_file` (written by `python -m alexnet_jax.data_stats`), or are
ImageNet's (the constants below) when it is empty.

Batches leave the host as uint8 pixels (each resized patch rounded to the
nearest level, as Caffe stored its 256 x 256 images), with each image's
normalisation beside it as two (3,) vectors: `pixel_offset` (the colour shift
minus the mean) and `pixel_scale` (1 / stddev, or 1). `step.normalize` applies
(pixel + offset) * scale on the device, inside the jitted step: a float32
batch is four times the bytes, and building it cost the host more than the
rest of the pipeline after the decode. Each image's steps run in one tf.data
map, with no tf.cond where a data-dependent argument does; there is no Python
per image.
"""

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
from pathlib import Path
from typing import Iterator

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import shapes10
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

# Fixed, so that the built-in dataset does not change with config.seed.
SHAPES10_SEED = 0

# JPEG's widest MCU in common files (4:2:0 and 4:2:2 chroma; 4:4:4's is 8).
_MCU_WIDTH = 16

# Formats that tf.io.decode_image reads; anything else in a folder is bad.
_IMAGE_FORMATS = 'JPEG, PNG, GIF, BMP or WebP'
_IMAGENET_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int


@dataclasses.dataclass(frozen=True)
class ImageStats:
  """RGB statistics of a training set (data_stats.py writes them as JSON)."""
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


def dataset_info(config) -> DatasetInfo:
  """Finds (or, for shapes10, prepares) the dataset; UserError if missing.

  Also reads the input settings and the stats file, so that a bad one stops
  a run before anything compiles.
  """
  image_stats(config)
  return _source(config).info


def image_stats(config) -> ImageStats | None:
  """The stats file's statistics, or None for ImageNet's constants."""
  if config.input.normalization not in NORMALIZATIONS:
    raise UserError(
        f'Unknown config.input.normalization={config.input.normalization!r};'
        f' choose {" or ".join(map(repr, NORMALIZATIONS))} (Sec. 2: subtract'
        ' the mean pixel).')
  if not (config.input.pca_lighting >= 0 and
          math.isfinite(config.input.pca_lighting)):
    raise UserError(
        'config.input.pca_lighting is the standard deviation of the colour'
        f' shift a_i (Sec. 4.1: 0.1; 0 turns it off); got'
        f' {config.input.pca_lighting!r}.')
  if not config.input.stats_file:
    return None
  return load_stats(config.input.stats_file)


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


def steps_per_epoch(config, info: DatasetInfo) -> int:
  """Optimiser steps per epoch; the remainder of each epoch is dropped."""
  return info.num_train_examples // config.batch_size


def skipped_files(config) -> list[str]:
  """Files (and empty class folders) that `skip_bad_images` left out."""
  if config.dataset != 'image_folder':
    return []
  return list(_image_folder(config).skipped)


def class_names(config) -> tuple[str, ...] | None:
  """The name of each label, or None where the dataset cannot be found.

  Reads names only: the TFDS ClassLabel (no preparation needed), the class
  folders of an image folder (no image is opened), shapes10's constants.
  """
  if config.dataset == 'shapes10':
    return shapes10.CLASS_NAMES
  if config.dataset == 'image_folder':
    root = Path(config.data_dir).expanduser()
    names = _folder_class_names(root, (config.train_split, config.eval_split))
    return tuple(names) or None
  try:
    builder = tfds.builder(config.dataset, data_dir=config.data_dir or None)
    return tuple(builder.info.features['label'].names)
  except Exception:  # pylint: disable=broad-except
    return None  # Not a TFDS name, or no ClassLabel: the caller numbers them.


def train_batches(config, *, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches of this process, from optimiser step `start_step`.

  Yields {'image': uint8 (B, S, S, 3), 'pixel_offset': float32 (B, 3),
  'pixel_scale': float32 (B, 3), 'label': int32 (B,)} with
  B = config.batch_size // process_count and S = config.image_size; the
  network's input is `step.normalize` of it.
  """
  source = _source(config)
  batch_size = _local_batch_size(config, process_count)
  steps = steps_per_epoch(config, source.info)
  if steps < 1:
    raise UserError(
        f'The {config.train_split!r} split of {config.dataset!r} has '
        f'{source.info.num_train_examples} examples, fewer than one batch of '
        f'config.batch_size={config.batch_size}. Lower config.batch_size or '
        'use a larger split.')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  stats = image_stats(config)
  # Checked here, not on the first next(): errors surface at the call.
  return _train_iterator(config, source, stats, start_step, steps, batch_size,
                         process_index, process_count)


def eval_batches(config, *, process_index: int = 0, process_count: int = 1,
                 ten_crop: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's shard of config.eval_split.

  Yields {'image', 'label', 'mask'}: the last batches are padded to full size
  with mask 0, and every process yields the same number of batches, so that
  the examples with mask 1 over all processes are the split, each once.
  Images are uint8 (B, S, S, 3) centre patches, or with `ten_crop`
  (B, 10, S, S, 3), the patches of `ten_crops`, with `pixel_offset` and
  `pixel_scale` as in `train_batches` (padding: all zeros).
  """
  source = _source(config)
  stats = image_stats(config)
  batch_size = _local_batch_size(config, process_count)
  shard, _ = source.shard(config.eval_split, process_index, process_count)
  largest = max(source.shard(config.eval_split, i, process_count)[1]
                for i in range(process_count))
  num_batches = math.ceil(largest / batch_size)

  image_fn = _ten_crop_images if ten_crop else _eval_image
  ds = source.records(shard, shuffle_seed=None, skip=0)
  offset, scale = _pixel_affine(config, stats)
  ds = ds.map(lambda ex: {
      'image': _to_pixels(image_fn(config, ex['image'])),
      'pixel_offset': offset, 'pixel_scale': scale,
      'label': tf.cast(ex['label'], tf.int32)},
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).map(functools.partial(_pad_batch, batch_size))
  patches = (10,) if ten_crop else ()
  ds = ds.concatenate(_empty_batches(config, batch_size, patches)
                      .take(num_batches))
  ds = ds.take(num_batches).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options()).as_numpy_iterator()


def eval_image(config, encoded: bytes) -> dict[str, np.ndarray]:
  """One encoded image as evaluation sees it: {'image': uint8 (S, S, 3),
  'pixel_offset', 'pixel_scale'}, one example of `eval_batches`.

  Raises tf.errors.InvalidArgumentError if the bytes are not a readable image.
  """
  offset, scale = _pixel_affine(config, image_stats(config))
  return {'image': _to_pixels(_eval_image(config, tf.constant(encoded))).numpy(),
          'pixel_offset': offset.numpy(), 'pixel_scale': scale.numpy()}


def ten_crops(square, size: int, outer: int):
  """Sec. 4.1's ten test patches of an image's centre square, as float32.

  `square` (m, m, 3) is seen at outer x outer; the patches are the size x size
  windows at its four corners (top-left, top-right, bottom-left,
  bottom-right) and its centre, cut at that scale and resized to size x size,
  then the same five reflected horizontally: (10, size, size, 3).
  """
  far, centre = outer - size, (outer - size) // 2
  patches = []
  for offset in ((0, 0), (0, far), (far, 0), (far, far), (centre, centre)):
    top_left, height_width = _window(tf.shape(square), outer, size, offset)
    window = tf.slice(square, tf.concat([top_left, [0]], 0),
                      tf.concat([height_width, [3]], 0))
    patches.append(_resize(window, size))
  patches = tf.stack(patches)
  return tf.concat([patches, tf.reverse(patches, [2])], 0)


def _train_iterator(config, source, stats, start_step, steps, batch_size,
                    process_index, process_count):
  shard, _ = source.shard(config.train_split, process_index, process_count)
  epoch, step_in_epoch = divmod(start_step, steps)
  while True:
    shuffle_seed, augment_seed = _epoch_seeds(config.seed, process_index, epoch)
    skip = step_in_epoch * batch_size
    ds = source.records(shard, shuffle_seed=shuffle_seed, skip=skip)
    ds = ds.enumerate(start=skip)  # Position in the epoch: the augment seed.

    def preprocess(position, ex, augment_seed=augment_seed):
      seed = tf.random.experimental.stateless_fold_in(augment_seed, position)
      image, offset, scale = _train_image(config, stats, ex['image'], seed)
      return {'image': image, 'pixel_offset': offset, 'pixel_scale': scale,
              'label': tf.cast(ex['label'], tf.int32)}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).take(steps - step_in_epoch)
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
    yield from ds.as_numpy_iterator()
    epoch, step_in_epoch = epoch + 1, 0


def _epoch_seeds(seed, process_index, epoch):
  """A tf.data shuffle seed and a stateless augmentation seed per epoch."""
  state = np.random.SeedSequence([seed, process_index, epoch]).generate_state(3)
  return int(state[0]), tf.constant(state[1:], tf.int64)


def _options():
  options = tf.data.Options()
  options.deterministic = True  # Parallel maps keep their order.
  return options


def _local_batch_size(config, process_count):
  if config.batch_size % process_count:
    raise UserError(
        f'config.batch_size={config.batch_size} does not split evenly over '
        f'{process_count} processes. Set config.batch_size to a multiple of '
        f'{process_count}.')
  return config.batch_size // process_count


# Images.


def outer_size(config):
  """R: the side of the centre square that patches are taken from (Sec. 2)."""
  if config.input.random_crop:
    return round(config.image_size * config.input.resize_ratio)
  return config.image_size


def _window(shape, outer, size, offset):
  """Where, in an image of `shape`, the size x size patch at `offset` (y, x)
  of its centre square resized to outer x outer lies: (top, left), (h, w).

  The patch's edges are scaled to the image and rounded, so patches of the
  same size may differ by a pixel in the image; each is resized to size.
  """
  hw = tf.cast(shape[:2], tf.int32)
  side = tf.reduce_min(hw)
  scale = tf.cast(side, tf.float64) / outer
  offset = tf.constant(offset, tf.int32) if isinstance(offset, tuple) else offset
  start = tf.cast(tf.round(tf.cast(offset, tf.float64) * scale), tf.int32)
  stop = tf.cast(tf.round(tf.cast(offset + size, tf.float64) * scale), tf.int32)
  stop = tf.maximum(stop, start + 1)  # Images smaller than outer / size px.
  return (hw - side) // 2 + start, stop - start


def _decode_window(encoded, window_fn):
  """Decodes the window `window_fn(shape)` of an encoded image, as uint8."""

  def jpeg():
    shape = tf.io.extract_jpeg_shape(encoded)
    top_left, size = window_fn(shape)
    # One pixel of margin: without it the window's last row and column
    # differ from the full decode (up to 60 levels with 4:2:0 chroma).
    start = tf.maximum(top_left - 1, 0)
    # And the left edge on an MCU column (16 px covers 4:4:4 to 4:2:0):
    # libjpeg-turbo crops only at MCU columns, and TensorFlow then copies
    # every row of an unaligned window to shift it, which cost as much as
    # an eighth of the pipeline (a memmove per row, seen in `perf`).
    start = start - start % [1, _MCU_WIDTH]
    stop = tf.minimum(top_left + size + 1, tf.cast(shape[:2], tf.int32))
    window = tf.io.decode_and_crop_jpeg(
        encoded, tf.concat([start, stop - start], 0), channels=3)
    return tf.slice(window, tf.concat([top_left - start, [0]], 0),
                    tf.concat([size, [3]], 0))

  def other():
    image = _decode(encoded)
    top_left, size = window_fn(tf.shape(image))
    return tf.slice(image, tf.concat([top_left, [0]], 0),
                    tf.concat([size, [3]], 0))

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def _resize(window, size):
  """uint8 (h, w, 3) -> float32 (size, size, 3): bilinear, as Caffe resized
  (the identity at h = w = size); antialiased when shrinking more than twice,
  where bilinear skips pixels."""
  image = tf.cond(
      tf.reduce_any(tf.shape(window)[:2] > 2 * size),
      lambda: tf.image.resize(window, (size, size), antialias=True),
      lambda: tf.image.resize(window, (size, size)))
  return tf.ensure_shape(image, (size, size, 3))


def _to_pixels(image):
  """A resized float32 patch -> uint8, rounded. Both resizes weigh pixels
  with non-negative weights summing to 1, so values stay in 0..255."""
  return tf.cast(tf.round(image), tf.uint8)


def _train_image(config, stats, encoded, seed):
  size, outer = config.image_size, outer_size(config)
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  if config.input.random_crop:
    # Sec. 4.1: a random patch of the R x R image; the offsets that
    # tf.image.stateless_random_crop would draw on it.
    draw = tf.random.stateless_uniform(
        [3], crop_seed, maxval=tf.int32.max, dtype=tf.int32)
    offset = draw[:2] % (outer - size + 1)
  else:
    offset = (0, 0)
  window = _decode_window(
      encoded, lambda shape: _window(shape, outer, size, offset))
  image = _to_pixels(_resize(window, size))
  if config.input.random_flip:  # Sec. 4.1: horizontal reflections.
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    # Of the resized uint8 patch, fewer bytes than the window (resizing
    # commutes with the flip). A tf.cond, so that unflipped patches are not
    # copied: tf.reverse along no axis copies through Eigen's slow generic
    # path (3% of the pipeline in `perf`).
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  shift = None
  if config.input.pca_lighting:
    shift = _pca_shift(config, stats,
                       tf.random.experimental.stateless_fold_in(seed, 2))
  return (image, *_pixel_affine(config, stats, shift))


def _pca_shift(config, stats, seed):
  """Sec. 4.1: [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, a_i ~ N(0, pca_lighting),
  computed in 0..1 units and returned in 0..255: (3,)."""
  values, vectors = ((IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS)
                     if stats is None else (stats.eigenvalues, stats.eigenvectors))
  alpha = config.input.pca_lighting * tf.random.stateless_normal([3], seed)
  return tf.linalg.matvec(tf.constant(vectors, tf.float32),
                          alpha * tf.constant(values, tf.float32)) * 255.0


def _pixel_affine(config, stats, shift=None):
  """(pixel_offset, pixel_scale), float32 (3,) each: the network sees
  (pixel + offset) * scale (`step.normalize`). The offset is the colour shift
  (Sec. 4.1), if any, minus the mean pixel (Sec. 2); the scale divides by
  the per-channel standard deviation under `standardize`, by 1 otherwise."""
  if config.input.normalization == 'mean_pixel':  # Sec. 2.
    mean = IMAGENET_MEAN_PIXEL if stats is None else stats.mean_rgb
    stddev = (1.0, 1.0, 1.0)
  elif stats is None:
    mean, stddev = STANDARDIZE_MEAN_RGB, STANDARDIZE_STDDEV_RGB
  else:
    mean, stddev = stats.mean_rgb, stats.stddev_rgb
  offset = -tf.constant(mean, tf.float32)
  if shift is not None:
    offset += shift
  return offset, tf.constant(1 / np.asarray(stddev), tf.float32)


def _eval_image(config, encoded):
  size, outer = config.image_size, outer_size(config)
  centre = ((outer - size) // 2,) * 2
  window = _decode_window(
      encoded, lambda shape: _window(shape, outer, size, centre))
  return _resize(window, size)


def square_images(config):
  """The training split's images as Sec. 2 prepares them, unshuffled: each
  centre square resized to R x R, float32 in 0..255 (for data_stats)."""
  ds, _ = _squares(config, config.train_split)
  return ds.map(lambda ex: ex['image'])


def square_pixels(config, split):
  """Sec. 2's down-sampling of `split`, in its order (for `downsample`): a
  dataset of {'image': each centre square resized to R x R and rounded to
  uint8, 'label'}, its size, and the image files' paths in the same order
  (None for a TFDS dataset, whose records have no file names)."""
  ds, count = _squares(config, split)
  ds = ds.map(lambda ex: {**ex, 'image': _to_pixels(ex['image'])},
              num_parallel_calls=tf.data.AUTOTUNE)
  paths = (list(_image_folder(config).paths[split])
           if config.dataset == 'image_folder' else None)
  return ds, count, paths


def _squares(config, split):
  """{'image': each centre square resized to R x R (float32), 'label'} of
  `split` in its order, and how many."""
  source = _source(config)
  shard, count = source.shard(split, 0, 1)
  outer = outer_size(config)
  ds = source.records(shard, shuffle_seed=None, skip=0).map(
      lambda ex: {'image': _resize(_square_window(config, ex['image']), outer),
                  'label': ex['label']},
      num_parallel_calls=tf.data.AUTOTUNE)
  return ds.with_options(_options()), count


def _square_window(config, encoded):
  """The centre square of an encoded image, as uint8, not resized."""
  outer = outer_size(config)
  return _decode_window(
      encoded, lambda shape: _window(shape, outer, outer, (0, 0)))


def _ten_crop_images(config, encoded):
  return ten_crops(_square_window(config, encoded), config.image_size,
                   outer_size(config))


def _decode(encoded):
  # Same call as the folder check, so that what passed the check decodes.
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _pad_batch(batch_size, batch):
  real = tf.shape(batch['label'])[0]
  pad = batch_size - real
  padded = {key: tf.ensure_shape(
      tf.pad(value, [[0, pad]] + [[0, 0]] * (value.shape.rank - 1)),
      (batch_size,) + value.shape[1:]) for key, value in batch.items()}
  mask = tf.concat([tf.ones([real]), tf.zeros([pad])], axis=0)
  return {**padded, 'mask': tf.ensure_shape(mask, (batch_size,))}


def _empty_batches(config, batch_size, patches=()):
  size = config.image_size
  return tf.data.Dataset.from_tensors({
      'image': tf.zeros((batch_size, *patches, size, size, 3), tf.uint8),
      'pixel_offset': tf.zeros((batch_size, 3)),
      'pixel_scale': tf.zeros((batch_size, 3)),
      'label': tf.zeros((batch_size,), tf.int32),
      'mask': tf.zeros((batch_size,)),
  }).repeat()


# Sources: where the undecoded records come from.


@dataclasses.dataclass(frozen=True)
class _TfdsSource:
  """A prepared TFDS dataset; records hold the encoded image bytes."""
  builder: tfds.core.DatasetBuilder
  info: DatasetInfo
  shuffle_buffer: int

  def shard(self, split, process_index, process_count):
    """This process's part of `split`, and how many examples it holds."""
    part = tfds.even_splits(split, process_count)[process_index]
    return part, self.builder.info.splits[part].num_examples

  def records(self, part, shuffle_seed, skip):
    # The file order is shuffled with the seed too, except in ordered
    # datasets (shapes10), where TFDS refuses; a seeded tf.data shuffle is
    # deterministic as long as nothing calls tf.random.set_seed.
    shuffle_files = (shuffle_seed is not None
                     and not self.builder.info.disable_shuffling)
    ds = self.builder.as_dataset(
        split=part, shuffle_files=shuffle_files,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed))
    ds = ds.map(lambda ex: {'image': ex['image'], 'label': ex['label']})
    if shuffle_seed is not None:
      ds = ds.shuffle(self.shuffle_buffer, seed=shuffle_seed)
    return ds.skip(skip)  # Still undecoded: skipping costs reads only.


@dataclasses.dataclass(frozen=True)
class _FolderSource:
  """A folder of images; records hold paths, read after the skip."""
  folder: '_Folder'
  info: DatasetInfo

  def shard(self, split, process_index, process_count):
    count = len(self.folder.paths[split])
    start = count * process_index // process_count
    stop = count * (process_index + 1) // process_count
    return (split, start, stop), stop - start

  def records(self, part, shuffle_seed, skip):
    split, start, stop = part
    # Bytes, as the file system has them: a name that is not UTF-8 (held in
    # str as surrogate escapes) reaches tf.io.read_file unchanged.
    paths = np.asarray([os.fsencode(p) for p in
                        self.folder.paths[split][start:stop]], dtype=object)
    labels = np.asarray(self.folder.labels[split][start:stop], np.int64)
    # A full permutation of the file list: the paths are in memory.
    if shuffle_seed is not None:
      order = np.random.default_rng(shuffle_seed).permutation(len(paths))
      paths, labels = paths[order], labels[order]
    ds = tf.data.Dataset.from_tensor_slices(
        {'path': paths[skip:], 'label': labels[skip:]})
    return ds.map(lambda ex: {'image': tf.io.read_file(ex['path']),
                              'label': ex['label']},
                  num_parallel_calls=tf.data.AUTOTUNE)


def _source(config):
  _hide_accelerators_from_tf()
  if config.dataset == 'image_folder':
    folder = _image_folder(config)
    info = DatasetInfo(len(folder.class_names),
                       len(folder.paths[config.train_split]),
                       len(folder.paths[config.eval_split]))
    return _FolderSource(folder, info)
  if config.dataset == 'shapes10':
    builder = _shapes10_builder(config)
  else:
    builder = _prepared_tfds_builder(config)
  return _TfdsSource(builder, _tfds_info(config, builder),
                     config.input.shuffle_buffer)


def _hide_accelerators_from_tf():
  """Keeps TensorFlow off the GPUs, whose memory belongs to JAX."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already started; it did not see GPUs through us.
    if tf.config.get_visible_devices('GPU'):
      logging.warning('TensorFlow initialised GPUs before the input pipeline '
                      'could hide them; it may hold accelerator memory.')


def _shapes10_builder(config):
  size = outer_size(config)  # Drawn at the size crops are taken from.
  make = lambda: shapes10.Shapes10(
      config=shapes10.builder_config(
          size, config.input.shapes_train_examples,
          config.input.shapes_eval_examples, SHAPES10_SEED),
      data_dir=config.data_dir or None)
  if make().is_prepared():
    # Built again: a builder reads the dataset's info when it is made, and
    # the one just asked may predate another process's last rename (its
    # splits then empty).
    return make()
  # Every command (train, evaluate, data_stats, ...) prepares here, so two
  # runs, or the processes of one run, on a fresh data_dir take turns: the
  # first prepares, the others wait, then read its files.
  with _prepare_lock(Path(config.data_dir or tfds.core.constants.DATA_DIR)):
    builder = make()  # Sees what another process prepared meanwhile.
    if not builder.is_prepared():
      logging.info('Preparing shapes10 in %s.', builder.data_dir)
      builder.download_and_prepare()
  return builder


@contextlib.contextmanager
def _prepare_lock(data_dir: Path):
  """Holds DATA_DIR/.prepare.lock (`flock`, waiting for it).

  The kernel releases it when its holder dies, so it is never stale.
  """
  data_dir.mkdir(parents=True, exist_ok=True)
  fd = os.open(data_dir / '.prepare.lock',
               os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)  # Blocks until the other has finished.
    yield
  finally:
    os.close(fd)


def _prepared_tfds_builder(config):
  name, data_dir = config.dataset, config.data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    raise UserError(
        f'config.dataset={name!r} is neither a TFDS dataset nor one of the '
        "built-in kinds 'shapes10' (no download) and 'image_folder' (a folder "
        'of split/class/image files in config.data_dir). Check the name '
        f'against https://www.tensorflow.org/datasets/catalog. ({e})'
        .replace('\n', ' ')) from None
  if builder.is_prepared():
    return builder
  root = builder.data_dir_root
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    manual_dir = root / 'downloads' / 'manual'
    if name.split(':')[0].split('/')[0] == 'imagenet2012':
      missing = [f for f in _IMAGENET_FILES if not (manual_dir / f).exists()]
      what = (f'Put {" and ".join(_IMAGENET_FILES)} (from '
              'https://image-net.org/download-images, after registering) in '
              f'{manual_dir}' + (f' (missing now: {", ".join(missing)})'
                                 if missing else ''))
    else:
      what = (f'Put the files it needs in {manual_dir}: ' +
              ' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
    raise UserError(
        f'The TFDS dataset {name!r} is not prepared in {root} (looked for '
        f'{builder.data_dir}). It needs a manual download. {what}, then '
        f'prepare it once with `tfds build {name} --data_dir={root}` (no '
        'internet needed for that step) and run again, with '
        'config.data_dir pointing at that folder.')
  raise UserError(
      f'The TFDS dataset {name!r} is not prepared in {root} (looked for '
      f'{builder.data_dir}), and this program never downloads. On a machine '
      f'with internet access run `tfds build {name} --data_dir=DIR`, copy '
      f'DIR/{builder.name} into {root} (or set config.data_dir to DIR), and '
      "run again. For a quick run without any download, use "
      "config.dataset='shapes10'.")


def _tfds_info(config, builder):
  features = builder.info.features
  if not {'image', 'label'} <= set(features.keys()) or not isinstance(
      features['label'], tfds.features.ClassLabel):
    raise UserError(
        f'The TFDS dataset {config.dataset!r} has features '
        f'{sorted(features.keys())}; this pipeline reads image '
        "classification datasets with an 'image' and a class 'label' "
        'feature. Choose such a dataset (imagenet2012, cifar10, ...).')
  splits = builder.info.splits
  for key in ('train_split', 'eval_split'):
    split = config[key]
    try:
      splits[split]
    except (KeyError, ValueError, AssertionError):
      raise UserError(
          f'config.{key}={split!r} is not a split of the TFDS dataset '
          f'{config.dataset!r} in {builder.data_dir}; it has '
          f'{sorted(splits.keys())}. Set config.{key} to one of them (TFDS '
          "slices such as 'train[:90%]' work too).") from None
  return DatasetInfo(features['label'].num_classes,
                     splits[config.train_split].num_examples,
                     splits[config.eval_split].num_examples)


# Folder datasets.


@dataclasses.dataclass(frozen=True)
class _Folder:
  class_names: tuple[str, ...]
  paths: dict[str, list[str]]  # Split -> sorted image paths.
  labels: dict[str, list[int]]
  skipped: tuple[str, ...]


def _image_folder(config) -> _Folder:
  if not config.data_dir:
    raise UserError(
        "config.dataset='image_folder' reads images from config.data_dir, "
        'which is empty. Set config.data_dir to a folder holding '
        f'{config.train_split}/<class>/<image> and '
        f'{config.eval_split}/<class>/<image>.')
  return _scan_folder(str(Path(config.data_dir).expanduser().resolve()),
                      (config.train_split, config.eval_split),
                      config.input.skip_bad_images)


@functools.lru_cache(maxsize=8)  # Once per process: the check decodes all.
def _scan_folder(root, splits, skip_bad_images) -> _Folder:
  root_path = Path(root)
  if not root_path.is_dir():
    raise UserError(
        f"config.dataset='image_folder' but config.data_dir={root} is not a "
        'folder. Point config.data_dir at a folder holding '
        f'{splits[0]}/<class>/<image> and {splits[1]}/<class>/<image>.')
  for split in splits:
    if not (root_path / split).is_dir():
      found = sorted(p.name for p in root_path.iterdir() if p.is_dir())
      raise UserError(
          f'The image folder {root} has no split folder {split!r} (it has '
          f'{found}). Each split is a folder of class folders; set '
          'config.train_split and config.eval_split to their names.')
  # Labels: the sorted union of class folders over both splits, as
  # tfds.folder_dataset.ImageFolder does.
  class_names = _folder_class_names(root_path, splits)
  if not class_names:
    raise UserError(
        f'The image folder {root} has no class folders in {splits[0]}/ or '
        f'{splits[1]}/. Put each image in a folder named after its class: '
        f'{root}/{splits[0]}/<class>/<image>.')

  paths, labels, bad = {}, {}, []
  for split in dict.fromkeys(splits):  # train and eval may be one folder.
    paths[split], labels[split] = [], []
    for label, name in enumerate(class_names):
      class_dir = root_path / split / name
      files = sorted(str(p) for p in class_dir.glob('*')
                     if p.is_file() and not p.name.startswith('.'))
      if class_dir.is_dir() and not files:
        bad.append((str(class_dir), 'an empty class folder'))
      paths[split] += files
      labels[split] += [label] * len(files)
  unreadable = _undecodable([p for s in paths for p in paths[s]])
  bad += [(p, f'not a readable {_IMAGE_FORMATS} image') for p in unreadable]
  if bad and not skip_bad_images:
    listing = '; '.join(f'{path} ({why})' for path, why in bad[:5])
    more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
    raise UserError(
        f'The image folder {root} has {len(bad)} bad entries: '
        f'{listing}{more}. Remove or replace them, or set '
        'config.input.skip_bad_images=True to skip them (they are counted '
        'and logged).')
  if bad:
    logging.warning('Skipped %d bad entries in the image folder %s: %s',
                    len(bad), root, ', '.join(p for p, _ in bad))
  unreadable = set(unreadable)
  for split in paths:
    keep = [i for i, p in enumerate(paths[split]) if p not in unreadable]
    paths[split] = [paths[split][i] for i in keep]
    labels[split] = [labels[split][i] for i in keep]
  for split in splits:
    if not paths[split]:
      raise UserError(
          f'The split folder {root_path / split} holds no readable images. '
          f'Put {_IMAGE_FORMATS} files in {root_path / split}/<class>/.')
  return _Folder(tuple(class_names), paths, labels,
                 tuple(p for p, _ in bad))


def _folder_class_names(root: Path, splits) -> list[str]:
  return sorted({p.name for split in splits if (root / split).is_dir()
                 for p in (root / split).iterdir()
                 if p.is_dir() and not p.name.startswith('.')})


def _undecodable(paths):
  """The paths that tf.io.decode_image cannot read, decoded in parallel."""
  if not paths:
    return []

  def check(index, path):
    return index, tf.shape(_decode(tf.io.read_file(path)))

  ds = tf.data.Dataset.from_tensor_slices(
      (np.arange(len(paths)), np.asarray([os.fsencode(p) for p in paths],
                                         dtype=object)))
  ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  ds = ds.map(lambda index, _: index).batch(4096)
  good = np.zeros(len(paths), bool)
  for indices in ds.as_numpy_iterator():
    good[indices] = True
  return [p for p, ok in zip(paths, good) if not ok]
