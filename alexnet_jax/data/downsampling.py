"""Sec. 2's down-sampling, done once: a dataset written as R x R JPEGs.

"Given a rectangular image, we first rescaled the image such that the shorter
side was of length 256, and then cropped out the central 256x256 patch from
the resulting image" (Sec. 2). This command does that to the config's
training and evaluation splits (`train_split`, `eval_split`), with
R = round(image_size * resize_ratio) (259 for 227-pixel patches, 256 with
--config.image_size=224), through the input pipeline's own code: the centre
square, resized bilinearly (antialiased when shrinking more than twice) and
rounded to uint8, the picture that training patches are otherwise cut from
on the fly. Each is written as a
JPEG (quality 95, no chroma subsampling, by default) to
DST/<split>/<class>/<name>.jpg, an `image_folder` dataset: train on it with
`--config.dataset=image_folder --config.data_dir=DST`. Its files decode
faster (fewer pixels), and a training patch of them is its window with no
resize (the window of an R x R image is the patch itself).

Class folders: an image folder's own; a TFDS dataset's label names, prefixed
with the label's number where the sorted names would not keep the labels'
order (an image folder numbers its classes in sorted order). File names: an
image folder's own stems; a TFDS dataset's record numbers.

The output is written to DST.partial and renamed to DST at the end, so DST
is whole or absent; an existing DST is never written over.
"""

import os
from pathlib import Path
import shutil
import sys
import time

import tensorflow as tf

from alexnet_jax.data import pipeline
from alexnet_jax.data.settings import DataConfig
from alexnet_jax.errors import UserError


def class_folders(names: tuple[str, ...] | None, count: int) -> list[str]:
  """A folder name per label, sorting in label order (image_folder's)."""
  width = len(str(count - 1))
  if names is None:
    return [f'{label:0{width}d}' for label in range(count)]
  names = [name.replace(os.sep, '_') for name in names]
  if names == sorted(names) and len(set(names)) == len(names):
    return names
  return [f'{label:0{width}d}_{name}' for label, name in enumerate(names)]


def output_names(paths: list[str] | None, count: int, where: str) -> list[str]:
  """The file name of each record: the source's stem, or its number."""
  if paths is None:
    width = max(len(str(count - 1)), 8)
    return [f'{index:0{width}d}.jpg' for index in range(count)]
  names = [Path(p).stem + '.jpg' for p in paths]
  seen = {}
  for path, name in zip(paths, names):
    key = (Path(path).parent.name, name)
    if key in seen:
      raise UserError(
          f'{seen[key]} and {path} would both be written as {name} in {where}'
          ' (one JPEG per stem). Rename one of them and run again.')
    seen[key] = path
  return names


def write_dataset(cfg: DataConfig, out: Path, splits: list[str],
                  quality: int = 95) -> dict:
  """Writes the splits to out (see the module's docstring); per split, the
  number of images written."""
  out = Path(out).expanduser()
  if out.exists():
    raise UserError(
        f'--out={out} already exists; this command never writes over a'
        ' dataset. Give a new folder, or remove that one first.')
  if not 1 <= quality <= 100:
    raise UserError(f'--quality={quality} is not a JPEG quality; give 1..100.')
  info = pipeline.dataset_info(cfg)  # Checks the dataset first.
  folders = class_folders(pipeline.class_names(cfg), info.num_classes)
  plans = []
  for split in dict.fromkeys(splits):
    ds, count, paths = pipeline.square_pixels(cfg, split)
    plans.append((split, ds, output_names(paths, count, f'{out}/{split}')))
  partial = out.with_name(out.name + '.partial')
  if partial.exists():
    print(f'Removing {partial}, left by an earlier run that did not finish.',
          file=sys.stderr)
    shutil.rmtree(partial)
  written = {}
  for split, ds, names in plans:
    ds = ds.map(lambda ex: {
        'jpeg': tf.io.encode_jpeg(ex['image'], quality=quality,
                                  chroma_downsampling=False),
        'label': ex['label']}, num_parallel_calls=tf.data.AUTOTUNE)
    start, index = time.perf_counter(), 0
    for batch in ds.batch(256).prefetch(2).as_numpy_iterator():
      for jpeg, label in zip(batch['jpeg'], batch['label']):
        target = partial / split / folders[label] / names[index]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(jpeg)
        index += 1
    written[split] = index
    print(f'{split}: {index} images, {index / (time.perf_counter() - start):.0f}'
          ' images/s', file=sys.stderr)
  os.rename(partial, out)
  return written
