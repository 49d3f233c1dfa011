"""Where a dataset's undecoded records come from: TFDS, or a folder of images.

Three kinds of `dataset`:

  * `shapes10`: built in (shapes10.py), prepared on first use in seconds, by
    one process at a time (a lock in the data_dir).
  * `image_folder`: `data_dir` holds `split/class/image.jpg` (the layout of
    `tfds.folder_dataset.ImageFolder`); every file is checked once per
    process, before training, so that a bad file is named up front.
  * any other name: a TFDS dataset already prepared in `data_dir`. Nothing
    is ever downloaded; a missing dataset says how to get it.

A source gives this process's shard of a split as records of encoded image
bytes and labels, shuffled by a seed, with the first `skip` records skipped
before anything is decoded.
"""

import contextlib
import dataclasses
import fcntl
import functools
import os
from pathlib import Path

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data import imagenet
from alexnet_jax.data import preprocess
from alexnet_jax.data import shapes10
from alexnet_jax.data import slices
from alexnet_jax.data.settings import DataConfig
from alexnet_jax.errors import UserError
from alexnet_jax.errors import shown

# Fixed, so that the built-in dataset does not change with config.seed.
SHAPES10_SEED = 0

# Formats that tf.io.decode_image reads; anything else in a folder is bad.
IMAGE_FORMATS = 'JPEG, PNG, GIF, BMP or WebP'
_IMAGENET_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int


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
  folder: 'Folder'
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


def source(cfg: DataConfig):
  """Where `cfg`'s records come from; UserError if the dataset is missing."""
  _hide_accelerators_from_tf()
  if cfg.dataset == 'image_folder':
    folder = image_folder(cfg)
    info = DatasetInfo(len(folder.class_names),
                       len(folder.paths[cfg.train_split]),
                       len(folder.paths[cfg.eval_split]))
    return _FolderSource(folder, info)
  if cfg.dataset == 'shapes10':
    builder = shapes10_builder(cfg)
  else:
    builder = _prepared_tfds_builder(cfg)
  return _TfdsSource(builder, _tfds_info(cfg, builder), cfg.shuffle_buffer)


def _hide_accelerators_from_tf():
  """Keeps TensorFlow off the GPUs, whose memory belongs to JAX."""
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already started; it did not see GPUs through us.
    if tf.config.get_visible_devices('GPU'):
      logging.warning('TensorFlow initialised GPUs before the input pipeline '
                      'could hide them; it may hold accelerator memory.')


def shapes10_builder(cfg: DataConfig):
  """The built-in dataset for `cfg`, prepared (once, by one process) if need be."""
  size = cfg.square_size  # Drawn at the size crops are taken from.
  make = lambda: shapes10.Shapes10(
      config=shapes10.builder_config(
          size, cfg.shapes_train_examples, cfg.shapes_eval_examples,
          SHAPES10_SEED),
      data_dir=cfg.data_dir or None)
  if make().is_prepared():
    # Built again: a builder reads the dataset's info when it is made, and
    # the one just asked may predate another process's last rename (its
    # splits then empty).
    return make()
  # Every command (train, evaluate, data_stats, ...) prepares here, so two
  # runs, or the processes of one run, on a fresh data_dir take turns: the
  # first prepares, the others wait, then read its files.
  with _prepare_lock(Path(cfg.data_dir or tfds.core.constants.DATA_DIR)):
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


def _prepared_tfds_builder(cfg: DataConfig):
  name, data_dir = cfg.dataset, cfg.data_dir or None
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
      'run again. Or, with the images as files, read them as a folder: '
      '--config.dataset=image_folder --config.data_dir=DIR, DIR holding '
      f'{slices.split_folder(cfg.train_split)}/<class>/<image> and '
      f'{slices.split_folder(cfg.eval_split)}/<class>/<image>. For a quick run '
      "without any data, use config.dataset='shapes10'.")


def _tfds_info(cfg: DataConfig, builder):
  features = builder.info.features
  if not {'image', 'label'} <= set(features.keys()) or not isinstance(
      features['label'], tfds.features.ClassLabel):
    raise UserError(
        f'The TFDS dataset {cfg.dataset!r} has features '
        f'{sorted(features.keys())}; this pipeline reads image '
        "classification datasets with an 'image' and a class 'label' "
        'feature. Choose such a dataset (imagenet2012, cifar10, ...).')
  splits = builder.info.splits
  for key in ('train_split', 'eval_split'):
    split = getattr(cfg, key)
    try:
      splits[split]
    except (KeyError, ValueError, AssertionError):
      raise UserError(
          f'config.{key}={split!r} is not a split of the TFDS dataset '
          f'{cfg.dataset!r} in {builder.data_dir}; it has '
          f'{sorted(splits.keys())}. Set config.{key} to one of them (TFDS '
          "slices such as 'train[:90%]' work too).") from None
  return DatasetInfo(features['label'].num_classes,
                     splits[cfg.train_split].num_examples,
                     splits[cfg.eval_split].num_examples)


# Folder datasets.


@dataclasses.dataclass(frozen=True)
class Folder:
  class_names: tuple[str, ...]
  paths: dict[str, list[str]]  # Split -> sorted image paths.
  labels: dict[str, list[int]]
  skipped: tuple[str, ...]


def image_folder(cfg: DataConfig) -> 'Folder':
  """`cfg`'s image folder, scanned (and every file checked) once per process."""
  if not cfg.data_dir:
    raise UserError(
        "config.dataset='image_folder' reads images from config.data_dir, "
        'which is empty. Set config.data_dir to a folder holding '
        f'{cfg.train_split}/<class>/<image> and '
        f'{cfg.eval_split}/<class>/<image>.')
  splits = (cfg.train_split, cfg.eval_split)
  folder = _scan_folder(str(Path(cfg.data_dir).expanduser().resolve()),
                        tuple(slices.split_folder(s) for s in splits),
                        cfg.skip_bad_images)
  paths, labels = dict(folder.paths), dict(folder.labels)
  for split in splits:
    if split not in paths:
      paths[split], labels[split] = slices.first_of_each_class(folder.paths, folder.labels, split)
  return dataclasses.replace(folder, paths=paths, labels=labels)


@functools.lru_cache(maxsize=8)  # Once per process: the check decodes all.
def _scan_folder(root, splits, skip_bad_images) -> Folder:
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
  # tfds.folder_dataset.ImageFolder does (training's: see _check_same_classes).
  class_names = folder_class_names(root_path, splits)
  if not class_names:
    raise UserError(
        f'The image folder {root} has no class folders in {splits[0]}/ or '
        f'{splits[1]}/. Put each image in a folder named after its class: '
        f'{root}/{splits[0]}/<class>/<image>.')

  # ImageNet's flat val/ and its labels file (imagenet.py): wnid -> files.
  flat = {split: _flat_split(root_path, split) for split in splits
          if imagenet.is_flat(root_path / split)}
  imagenet.check_wnids(root_path, splits[0], class_names)
  _check_same_classes(root_path, splits, flat)

  paths, labels, bad = {}, {}, []
  for split in dict.fromkeys(splits):  # train and eval may be one folder.
    paths[split], labels[split] = [], []
    for label, name in enumerate(class_names):
      class_dir = root_path / split / name
      if split in flat:
        entries, files = [], flat[split].get(name, [])
      else:
        entries = sorted(class_dir.glob('*'))
        files = [str(p) for p in entries
                 if p.is_file() and not p.name.startswith('.')]
      # Anything else but hidden names is a bad entry like a stray .txt:
      # never opened (a FIFO would block), named, refused or skipped.
      bad += [(str(p), _not_a_file(p)) for p in entries
              if not p.is_file() and not p.name.startswith('.')]
      if class_dir.is_dir() and not files:
        bad.append((str(class_dir), 'an empty class folder'))
      paths[split] += files
      labels[split] += [label] * len(files)
  unreadable = _undecodable([p for s in paths for p in paths[s]])
  bad += [(p, f'not a readable {IMAGE_FORMATS} image') for p in unreadable]
  if bad and not skip_bad_images:
    listing = '; '.join(f'{shown(path)} ({why})' for path, why in bad[:5])
    more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
    raise UserError(
        f'The image folder {shown(root)} has {len(bad)} bad entries: '
        f'{listing}{more}. Remove or replace them, or set '
        'config.input.skip_bad_images=True to skip them (they are counted '
        'and logged).')
  if bad:
    logging.warning('Skipped %d bad entries in the image folder %s: %s',
                    len(bad), shown(root), ', '.join(shown(p) for p, _ in bad))
  unreadable = set(unreadable)
  for split in paths:
    keep = [i for i, p in enumerate(paths[split]) if p not in unreadable]
    paths[split] = [paths[split][i] for i in keep]
    labels[split] = [labels[split][i] for i in keep]
  for split in splits:
    if not paths[split]:
      raise UserError(
          f'The split folder {root_path / split} holds no readable images. '
          f'Put {IMAGE_FORMATS} files in {root_path / split}/<class>/.')
  return Folder(tuple(class_names), paths, labels,
                 tuple(p for p, _ in bad))


def _not_a_file(path: Path) -> str:
  if path.is_symlink() and not path.exists():
    return 'a symbolic link that leads nowhere, or loops'
  if path.is_dir():
    return 'a folder inside a class folder'
  return 'not a regular file (a FIFO, a socket or a device)'


def folder_class_names(root: Path, splits) -> list[str]:
  """The sorted union of the class folders of `splits` (names only)."""
  splits = [slices.split_folder(split) for split in splits]
  return sorted({p.name for split in splits if (root / split).is_dir()
                 for p in (root / split).iterdir()
                 if p.is_dir() and not p.name.startswith('.')})


def _flat_split(root: Path, split: str) -> dict[str, list[str]]:
  """A flat split folder's files by wnid; UserError for a file unlabelled."""
  labels = imagenet.flat_labels(root, split)
  by_class, unlabelled = {}, []
  for path in sorted((root / split).iterdir()):
    if path.is_file() and not path.name.startswith('.'):
      if path.stem in labels:
        by_class.setdefault(labels[path.stem], []).append(str(path))
      else:
        unlabelled.append(path.name)
  if unlabelled:
    raise UserError(
        f'{len(unlabelled)} files in {root / split} have no label in its '
        f'labels file ({", ".join(unlabelled[:5])}); ImageNet\'s are named '
        'ILSVRC2012_val_NNNNNNNN.JPEG. Remove the others, or sort the images '
        f'into {root / split}/<wnid>/.')
  return by_class


def _check_same_classes(root: Path, splits, flat):
  """Refuses an evaluation class folder that the training split lacks: a
  class never trained on, evaluated without a word. A training class that
  the evaluation split lacks is logged (a small or sliced evaluation set can
  lack a class); the labels, the sorted class folders, are then training's.
  An empty class folder is left to the bad-entry check, which names it."""
  train, evaluation = splits
  names = {split: set(flat[split]) if split in flat else {
      name for name in folder_class_names(root, (split,))
      if any(not p.name.startswith('.') for p in (root / split / name).iterdir())}
           for split in splits}
  untrained = sorted(names[evaluation] - names[train])
  if untrained:
    raise UserError(
        f'The image folder {root} has {len(untrained)} class folders in '
        f'{root / evaluation}/ that {root / train}/ lacks '
        f'({", ".join(untrained[:5])}{", ..." if len(untrained) > 5 else ""}): '
        'classes the network would be evaluated on and never trained on. '
        f'Labels are the sorted class folders of {train}/; add those classes '
        f'to {train}/ (with images), or remove them from {evaluation}/.')
  unevaluated = sorted(names[train] - names[evaluation])
  if unevaluated:
    logging.warning('The image folder %s: %d classes of %s/ have no folder in '
                    '%s/ (%s); they are trained on and never evaluated.',
                    root, len(unevaluated), train, evaluation,
                    ', '.join(unevaluated[:5]))


def _undecodable(paths):
  """The paths that tf.io.decode_image cannot read, decoded in parallel."""
  if not paths:
    return []

  def check(index, path):
    return index, tf.shape(preprocess.decode(tf.io.read_file(path)))

  ds = tf.data.Dataset.from_tensor_slices(
      (np.arange(len(paths)), np.asarray([os.fsencode(p) for p in paths],
                                         dtype=object)))
  ds = ds.map(check, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  ds = ds.map(lambda index, _: index).batch(4096)
  good = np.zeros(len(paths), bool)
  for indices in ds.as_numpy_iterator():
    good[indices] = True
  return [p for p, ok in zip(paths, good) if not ok]
