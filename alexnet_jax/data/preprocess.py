"""Each image, from its encoded bytes to the uint8 patch the network sees.

Sec. 2 and 4.1 of the paper: each image is seen as its centre square resized
to R x R, R = round(image_size * resize_ratio) (256 for 224 crops). Training
takes random image_size x image_size patches of it and random horizontal
flips, evaluation the centre patch, and the ten-patch test the four corner
and the centre patches and their reflections (`ten_crops`). Without
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
also divides by the per-channel standard deviation.

Patches leave the host as uint8 pixels (each resized patch rounded to the
nearest level, as Caffe stored its 256 x 256 images), with each image's
normalisation beside it as two (3,) vectors: `pixel_offset` (the colour shift
minus the mean) and `pixel_scale` (1 / stddev, or 1). `core.steps.normalize`
applies (pixel + offset) * scale on the device, inside the jitted step: a
float32 batch is four times the bytes, and building it cost the host more
than the rest of the pipeline after the decode. Each image's steps run in
one tf.data map, with no tf.cond where a data-dependent argument does;
there is no Python per image.
"""

import numpy as np
import tensorflow as tf

from alexnet_jax.data import pixel_stats
from alexnet_jax.data.settings import DataConfig

# JPEG's widest MCU in common files (4:2:0 and 4:2:2 chroma; 4:4:4's is 8).
_MCU_WIDTH = 16


def window(shape, outer, size, offset):
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


def decode(encoded):
  # The folder check decodes with this very call, so what passed it decodes.
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def decode_window(encoded, window_fn):
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
    cropped = tf.io.decode_and_crop_jpeg(
        encoded, tf.concat([start, stop - start], 0), channels=3)
    return tf.slice(cropped, tf.concat([top_left - start, [0]], 0),
                    tf.concat([size, [3]], 0))

  def other():
    image = decode(encoded)
    top_left, size = window_fn(tf.shape(image))
    return tf.slice(image, tf.concat([top_left, [0]], 0),
                    tf.concat([size, [3]], 0))

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def resize(patch, size):
  """uint8 (h, w, 3) -> float32 (size, size, 3): bilinear, as Caffe resized
  (the identity at h = w = size); antialiased when shrinking more than twice,
  where bilinear skips pixels."""
  image = tf.cond(
      tf.reduce_any(tf.shape(patch)[:2] > 2 * size),
      lambda: tf.image.resize(patch, (size, size), antialias=True),
      lambda: tf.image.resize(patch, (size, size)))
  return tf.ensure_shape(image, (size, size, 3))


def to_pixels(image):
  """A resized float32 patch -> uint8, rounded. Both resizes weigh pixels
  with non-negative weights summing to 1, so values stay in 0..255."""
  return tf.cast(tf.round(image), tf.uint8)


def train_patch(cfg: DataConfig, stats, encoded, seed):
  """Sec. 4.1: a random patch, flipped half the time, with its colour shift:
  (uint8 patch, pixel_offset, pixel_scale), all drawn from `seed`."""
  size, outer = cfg.image_size, cfg.square_size
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  if cfg.random_crop:
    # A random patch of the R x R image; the offsets that
    # tf.image.stateless_random_crop would draw on it.
    draw = tf.random.stateless_uniform(
        [3], crop_seed, maxval=tf.int32.max, dtype=tf.int32)
    offset = draw[:2] % (outer - size + 1)
  else:
    offset = (0, 0)
  patch = decode_window(encoded, lambda shape: window(shape, outer, size, offset))
  image = to_pixels(resize(patch, size))
  if cfg.random_flip:  # Horizontal reflections.
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    # Of the resized uint8 patch, fewer bytes than the window (resizing
    # commutes with the flip). A tf.cond, so that unflipped patches are not
    # copied: tf.reverse along no axis copies through Eigen's slow generic
    # path (3% of the pipeline in `perf`).
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  shift = None
  if cfg.pca_lighting:
    shift = pca_shift(cfg, stats, tf.random.experimental.stateless_fold_in(seed, 2))
  return (image, *pixel_affine(cfg, stats, shift))


def pca_shift(cfg: DataConfig, stats, seed):
  """Sec. 4.1: [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T, a_i ~ N(0, pca_lighting),
  computed in 0..1 units and returned in 0..255: (3,)."""
  values, vectors = ((pixel_stats.IMAGENET_EIGENVALUES, pixel_stats.IMAGENET_EIGENVECTORS)
                     if stats is None else (stats.eigenvalues, stats.eigenvectors))
  alpha = cfg.pca_lighting * tf.random.stateless_normal([3], seed)
  return tf.linalg.matvec(tf.constant(vectors, tf.float32),
                          alpha * tf.constant(values, tf.float32)) * 255.0


def pixel_affine(cfg: DataConfig, stats, shift=None):
  """(pixel_offset, pixel_scale), float32 (3,) each: the network sees
  (pixel + offset) * scale (`core.steps.normalize`). The offset is the
  colour shift (Sec. 4.1), if any, minus the mean pixel (Sec. 2); the scale
  divides by the per-channel standard deviation under `standardize`, by 1
  otherwise."""
  if cfg.normalization == 'mean_pixel':  # Sec. 2.
    mean = pixel_stats.IMAGENET_MEAN_PIXEL if stats is None else stats.mean_rgb
    stddev = (1.0, 1.0, 1.0)
  elif stats is None:
    mean, stddev = pixel_stats.STANDARDIZE_MEAN_RGB, pixel_stats.STANDARDIZE_STDDEV_RGB
  else:
    mean, stddev = stats.mean_rgb, stats.stddev_rgb
  offset = -tf.constant(mean, tf.float32)
  if shift is not None:
    offset += shift
  return offset, tf.constant(1 / np.asarray(stddev), tf.float32)


def eval_patch(cfg: DataConfig, encoded):
  """The centre patch, resized to image_size, as float32."""
  size, outer = cfg.image_size, cfg.square_size
  centre = ((outer - size) // 2,) * 2
  patch = decode_window(encoded, lambda shape: window(shape, outer, size, centre))
  return resize(patch, size)


def square_window(cfg: DataConfig, encoded):
  """The centre square of an encoded image, as uint8, not resized."""
  outer = cfg.square_size
  return decode_window(encoded, lambda shape: window(shape, outer, outer, (0, 0)))


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
    top_left, height_width = window(tf.shape(square), outer, size, offset)
    patch = tf.slice(square, tf.concat([top_left, [0]], 0),
                     tf.concat([height_width, [3]], 0))
    patches.append(resize(patch, size))
  patches = tf.stack(patches)
  return tf.concat([patches, tf.reverse(patches, [2])], 0)


def ten_crop_patches(cfg: DataConfig, encoded):
  return ten_crops(square_window(cfg, encoded), cfg.image_size, cfg.square_size)
