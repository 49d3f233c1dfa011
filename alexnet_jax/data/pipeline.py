"""The input pipeline: tf.data under TFDS, deterministic and resumable.

The training batches are a pure function of (cfg, seed, process_index,
process_count): epoch `e` reads this process's shard in an order drawn from
(seed, process, e), and each example's crop, flip and colour shift come from
a stateless seed of (seed, process, e, position in the epoch). Resuming at
step k skips the records already consumed before decoding them, so
`train_batches(cfg, seed=s, start_step=k)` yields exactly the batches from k
on. Where the records come from is sources.py; what is done to each image,
preprocess.py.
"""

import functools
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data import pixel_stats
from alexnet_jax.data import preprocess
from alexnet_jax.data import shapes10
from alexnet_jax.data import sources
from alexnet_jax.data.settings import DataConfig
from alexnet_jax.data.sources import DatasetInfo
from alexnet_jax.errors import UserError


def dataset_info(cfg: DataConfig) -> DatasetInfo:
  """Finds (or, for shapes10, prepares) the dataset; UserError if missing.

  Also reads the input settings and the stats file, so that a bad one stops
  a run before anything compiles.
  """
  pixel_stats.image_stats(cfg)
  return sources.source(cfg).info


def steps_per_epoch(cfg: DataConfig, info: DatasetInfo) -> int:
  """Optimiser steps per epoch; the remainder of each epoch is dropped."""
  return info.num_train_examples // cfg.batch_size


def skipped_files(cfg: DataConfig) -> list[str]:
  """Files (and empty class folders) that `skip_bad_images` left out."""
  if cfg.dataset != 'image_folder':
    return []
  return list(sources.image_folder(cfg).skipped)


def class_names(cfg: DataConfig) -> tuple[str, ...] | None:
  """The name of each label, or None where the dataset cannot be found.

  Reads names only: the TFDS ClassLabel (no preparation needed), the class
  folders of an image folder (no image is opened), shapes10's constants.
  """
  if cfg.dataset == 'shapes10':
    return shapes10.CLASS_NAMES
  if cfg.dataset == 'image_folder':
    root = Path(cfg.data_dir).expanduser()
    names = sources.folder_class_names(root, (cfg.train_split, cfg.eval_split))
    return tuple(names) or None
  try:
    builder = tfds.builder(cfg.dataset, data_dir=cfg.data_dir or None)
    return tuple(builder.info.features['label'].names)
  except Exception:  # pylint: disable=broad-except
    return None  # Not a TFDS name, or no ClassLabel: the caller numbers them.


def train_batches(cfg: DataConfig, *, seed: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches of this process, from optimiser step `start_step`.

  Yields {'image': uint8 (B, S, S, 3), 'pixel_offset': float32 (B, 3),
  'pixel_scale': float32 (B, 3), 'label': int32 (B,)} with
  B = cfg.batch_size // process_count and S = cfg.image_size; the
  network's input is `core.steps.normalize` of it.
  """
  source = sources.source(cfg)
  batch_size = _local_batch_size(cfg, process_count)
  steps = steps_per_epoch(cfg, source.info)
  if steps < 1:
    raise UserError(
        f'The {cfg.train_split!r} split of {cfg.dataset!r} has '
        f'{source.info.num_train_examples} examples, fewer than one batch of '
        f'config.batch_size={cfg.batch_size}. Lower config.batch_size or '
        'use a larger split.')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  stats = pixel_stats.image_stats(cfg)
  # Checked here, not on the first next(): errors surface at the call.
  return _train_iterator(cfg, seed, source, stats, start_step, steps,
                         batch_size, process_index, process_count)


def eval_batches(cfg: DataConfig, *, process_index: int = 0,
                 process_count: int = 1, ten_crop: bool = False
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's shard of cfg.eval_split.

  Yields {'image', 'label', 'mask'}: the last batches are padded to full size
  with mask 0, and every process yields the same number of batches, so that
  the examples with mask 1 over all processes are the split, each once.
  Images are uint8 (B, S, S, 3) centre patches, or with `ten_crop`
  (B, 10, S, S, 3), the patches of `preprocess.ten_crops`, with
  `pixel_offset` and `pixel_scale` as in `train_batches` (padding: zeros).
  """
  source = sources.source(cfg)
  stats = pixel_stats.image_stats(cfg)
  batch_size = _local_batch_size(cfg, process_count)
  shard, _ = source.shard(cfg.eval_split, process_index, process_count)
  largest = max(source.shard(cfg.eval_split, i, process_count)[1]
                for i in range(process_count))
  num_batches = math.ceil(largest / batch_size)

  image_fn = preprocess.ten_crop_patches if ten_crop else preprocess.eval_patch
  ds = source.records(shard, shuffle_seed=None, skip=0)
  offset, scale = preprocess.pixel_affine(cfg, stats)
  ds = ds.map(lambda ex: {
      'image': preprocess.to_pixels(image_fn(cfg, ex['image'])),
      'pixel_offset': offset, 'pixel_scale': scale,
      'label': tf.cast(ex['label'], tf.int32)},
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).map(functools.partial(_pad_batch, batch_size))
  patches = (10,) if ten_crop else ()
  ds = ds.concatenate(_empty_batches(cfg, batch_size, patches)
                      .take(num_batches))
  ds = ds.take(num_batches).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options()).as_numpy_iterator()


def eval_image(cfg: DataConfig, encoded: bytes) -> dict[str, np.ndarray]:
  """One encoded image as evaluation sees it: {'image': uint8 (S, S, 3),
  'pixel_offset', 'pixel_scale'}, one example of `eval_batches`.

  Raises tf.errors.InvalidArgumentError if the bytes are not a readable image.
  """
  offset, scale = preprocess.pixel_affine(cfg, pixel_stats.image_stats(cfg))
  image = preprocess.to_pixels(preprocess.eval_patch(cfg, tf.constant(encoded)))
  return {'image': image.numpy(), 'pixel_offset': offset.numpy(),
          'pixel_scale': scale.numpy()}


def square_images(cfg: DataConfig):
  """The training split's images as Sec. 2 prepares them, unshuffled: each
  centre square resized to R x R, float32 in 0..255 (for data_stats)."""
  ds, _ = _squares(cfg, cfg.train_split)
  return ds.map(lambda ex: ex['image'])


def square_pixels(cfg: DataConfig, split: str, skip: int = 0):
  """Sec. 2's down-sampling of `split`, in its order (for `downsample`): a
  dataset of {'image': each centre square resized to R x R and rounded to
  uint8, 'label'} (from record `skip` on, the first ones never read), the
  split's size, and the image files' paths in the same order (None for a
  TFDS dataset, whose records have no file names)."""
  ds, count = _squares(cfg, split, skip)
  ds = ds.map(lambda ex: {**ex, 'image': preprocess.to_pixels(ex['image'])},
              num_parallel_calls=tf.data.AUTOTUNE)
  paths = (list(sources.image_folder(cfg).paths[split])
           if cfg.dataset == 'image_folder' else None)
  return ds, count, paths


def _squares(cfg: DataConfig, split: str, skip: int = 0):
  """{'image': each centre square resized to R x R (float32), 'label'} of
  `split` in its order from record `skip` on, and how many in all."""
  source = sources.source(cfg)
  shard, count = source.shard(split, 0, 1)
  outer = cfg.square_size
  ds = source.records(shard, shuffle_seed=None, skip=skip).map(
      lambda ex: {'image': preprocess.resize(preprocess.square_window(cfg, ex['image']), outer),
                  'label': ex['label']},
      num_parallel_calls=tf.data.AUTOTUNE)
  return ds.with_options(_options()), count


def _train_iterator(cfg, seed, source, stats, start_step, steps, batch_size,
                    process_index, process_count):
  shard, _ = source.shard(cfg.train_split, process_index, process_count)
  epoch, step_in_epoch = divmod(start_step, steps)
  while True:
    shuffle_seed, augment_seed = _epoch_seeds(seed, process_index, epoch)
    skip = step_in_epoch * batch_size
    ds = source.records(shard, shuffle_seed=shuffle_seed, skip=skip)
    ds = ds.enumerate(start=skip)  # Position in the epoch: the augment seed.

    def example(position, ex, augment_seed=augment_seed):
      patch_seed = tf.random.experimental.stateless_fold_in(augment_seed, position)
      image, offset, scale = preprocess.train_patch(cfg, stats, ex['image'], patch_seed)
      return {'image': image, 'pixel_offset': offset, 'pixel_scale': scale,
              'label': tf.cast(ex['label'], tf.int32)}

    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
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


def _local_batch_size(cfg: DataConfig, process_count: int) -> int:
  if cfg.batch_size % process_count:
    raise UserError(
        f'config.batch_size={cfg.batch_size} does not split evenly over '
        f'{process_count} processes. Set config.batch_size to a multiple of '
        f'{process_count}.')
  return cfg.batch_size // process_count


def _pad_batch(batch_size, batch):
  real = tf.shape(batch['label'])[0]
  pad = batch_size - real
  padded = {key: tf.ensure_shape(
      tf.pad(value, [[0, pad]] + [[0, 0]] * (value.shape.rank - 1)),
      (batch_size,) + value.shape[1:]) for key, value in batch.items()}
  mask = tf.concat([tf.ones([real]), tf.zeros([pad])], axis=0)
  return {**padded, 'mask': tf.ensure_shape(mask, (batch_size,))}


def _empty_batches(cfg: DataConfig, batch_size, patches=()):
  size = cfg.image_size
  return tf.data.Dataset.from_tensors({
      'image': tf.zeros((batch_size, *patches, size, size, 3), tf.uint8),
      'pixel_offset': tf.zeros((batch_size, 3)),
      'pixel_scale': tf.zeros((batch_size, 3)),
      'label': tf.zeros((batch_size,), tf.int32),
      'mask': tf.zeros((batch_size,)),
  }).repeat()
