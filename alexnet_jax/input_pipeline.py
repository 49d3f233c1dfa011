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
(config.seed, process, e), and each example's crop and flip come from a
stateless seed of (config.seed, process, e, position in the epoch). Resuming at
step k skips the records already consumed before decoding them, so
`train_batches(config, start_step=k)` yields exactly the batches from k on.

Images (Sec. 2 and 4.1 of the paper): the shorter side is resized to
R = round(image_size * resize_ratio) and the centre R x R kept; training takes
random image_size crops of it and random horizontal flips, evaluation the
centre crop. Without `random_crop`, the shorter side goes to image_size and the
centre is kept. Small images (shapes10, CIFAR's 32 px) take the same path, so
they are resized up to R before cropping.
"""

import dataclasses
import functools
import math
from pathlib import Path
from typing import Iterator

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax import shapes10
from alexnet_jax.errors import UserError

# Per-channel statistics of ImageNet in 0..255 units, used for every dataset:
# they only need to bring inputs near zero mean and unit variance.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# Fixed, so that the built-in dataset does not change with config.seed.
SHAPES10_SEED = 0

# Formats that tf.io.decode_image reads; anything else in a folder is bad.
_IMAGE_FORMATS = 'JPEG, PNG, GIF, BMP or WebP'
_IMAGENET_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int


def dataset_info(config) -> DatasetInfo:
  """Finds (or, for shapes10, prepares) the dataset; UserError if missing."""
  return _source(config).info


def steps_per_epoch(config, info: DatasetInfo) -> int:
  """Optimiser steps per epoch; the remainder of each epoch is dropped."""
  return info.num_train_examples // config.batch_size


def skipped_files(config) -> list[str]:
  """Files (and empty class folders) that `skip_bad_images` left out."""
  if config.dataset != 'image_folder':
    return []
  return list(_image_folder(config).skipped)


def train_batches(config, *, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches of this process, from optimiser step `start_step`.

  Yields {'image': float32 (B, S, S, 3), 'label': int32 (B,)} with
  B = config.batch_size // process_count and S = config.image_size.
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
  # Checked here, not on the first next(): errors surface at the call.
  return _train_iterator(config, source, start_step, steps, batch_size,
                         process_index, process_count)


def eval_batches(config, *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's shard of config.eval_split.

  Yields {'image', 'label', 'mask'}: the last batches are padded to full size
  with mask 0, and every process yields the same number of batches, so that
  the examples with mask 1 over all processes are the split, each once.
  """
  source = _source(config)
  batch_size = _local_batch_size(config, process_count)
  shard, _ = source.shard(config.eval_split, process_index, process_count)
  largest = max(source.shard(config.eval_split, i, process_count)[1]
                for i in range(process_count))
  num_batches = math.ceil(largest / batch_size)

  ds = source.records(shard, shuffle_seed=None, skip=0)
  ds = ds.map(lambda ex: {'image': _eval_image(config, _decode(ex['image'])),
                          'label': tf.cast(ex['label'], tf.int32)},
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size).map(functools.partial(_pad_batch, batch_size))
  ds = ds.concatenate(_empty_batches(config, batch_size).take(num_batches))
  ds = ds.take(num_batches).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options()).as_numpy_iterator()


def _train_iterator(config, source, start_step, steps, batch_size,
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
      return {'image': _train_image(config, _decode(ex['image']), seed),
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


def _resize_shorter_side(image, size):
  """Resizes uint8 or float (H, W, 3) so that min(H, W) = size, as float32."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  new_shape = tf.cast(tf.round(shape * size / tf.reduce_min(shape)), tf.int32)
  new_shape = tf.maximum(new_shape, size)  # Guards against rounding down.
  # Images already at size (shapes10) skip the resampling, an identity that
  # costs a fifth of the pipeline's time.
  return tf.cond(
      tf.reduce_all(tf.shape(image)[:2] == new_shape),
      lambda: tf.cast(image, tf.float32),
      lambda: tf.image.resize(image, new_shape, antialias=True))


def _centre_crop(image, size):
  top = (tf.shape(image)[0] - size) // 2
  left = (tf.shape(image)[1] - size) // 2
  return image[top:top + size, left:left + size]


def _normalise(image):
  return (image - MEAN_RGB) / STDDEV_RGB


def _outer_size(config):
  """R: the side of the centre square that crops are taken from (Sec. 2)."""
  if config.input.random_crop:
    return round(config.image_size * config.input.resize_ratio)
  return config.image_size


def _train_image(config, image, seed):
  size, outer = config.image_size, _outer_size(config)
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  image = _centre_crop(_resize_shorter_side(image, outer), outer)
  if config.input.random_crop:  # Sec. 4.1: random patches of the R x R image.
    image = tf.image.stateless_random_crop(image, (size, size, 3), crop_seed)
  if config.input.random_flip:  # Sec. 4.1: horizontal reflections.
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  image = tf.ensure_shape(image, (size, size, 3))
  return _normalise(image)


def _eval_image(config, image):
  outer = _outer_size(config)
  image = _centre_crop(_resize_shorter_side(image, outer), config.image_size)
  image = tf.ensure_shape(image, (config.image_size, config.image_size, 3))
  return _normalise(image)


def _decode(encoded):
  # Same call as the folder check, so that what passed the check decodes.
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _pad_batch(batch_size, batch):
  real = tf.shape(batch['label'])[0]
  pad = batch_size - real
  image = tf.pad(batch['image'], [[0, pad], [0, 0], [0, 0], [0, 0]])
  label = tf.pad(batch['label'], [[0, pad]])
  mask = tf.concat([tf.ones([real]), tf.zeros([pad])], axis=0)
  return {'image': tf.ensure_shape(image, (batch_size,) + image.shape[1:]),
          'label': tf.ensure_shape(label, (batch_size,)),
          'mask': tf.ensure_shape(mask, (batch_size,))}


def _empty_batches(config, batch_size):
  size = config.image_size
  return tf.data.Dataset.from_tensors({
      'image': tf.zeros((batch_size, size, size, 3)),
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
    paths = np.asarray(self.folder.paths[split][start:stop])
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
  size = _outer_size(config)  # Drawn at the size crops are taken from.
  builder = shapes10.Shapes10(
      config=shapes10.builder_config(
          size, config.input.shapes_train_examples,
          config.input.shapes_eval_examples, SHAPES10_SEED),
      data_dir=config.data_dir or None)
  if not builder.is_prepared():
    logging.info('Preparing shapes10 in %s.', builder.data_dir)
    builder.download_and_prepare()
  return builder


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
  class_names = sorted({p.name for split in splits
                        for p in (root_path / split).iterdir()
                        if p.is_dir() and not p.name.startswith('.')})
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


def _undecodable(paths):
  """The paths that tf.io.decode_image cannot read, decoded in parallel."""
  if not paths:
    return []

  def check(index, path):
    return index, tf.shape(_decode(tf.io.read_file(path)))

  ds = tf.data.Dataset.from_tensor_slices(
      (np.arange(len(paths)), np.asarray(paths)))
  ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  ds = ds.map(lambda index, _: index).batch(4096)
  good = np.zeros(len(paths), bool)
  for indices in ds.as_numpy_iterator():
    good[indices] = True
  return [p for p, ok in zip(paths, good) if not ok]
