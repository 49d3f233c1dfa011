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
is whole or absent; an existing DST is never written over. Each file is
written whole under a hidden temporary name, then renamed, so a killed run
leaves only whole files; the same command then resumes DST.partial, reading
on from the first record whose file is missing (DST.partial/.downsample.json
records the settings, and a partial output of other settings is refused).
The command (downsample.py) holds DST.lock meanwhile, so that a second run
is refused.
"""

import json
import os
from pathlib import Path
import sys
import time

import tensorflow as tf

from alexnet_jax.data import pipeline
from alexnet_jax.data import sources
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
  settings = {'dataset': cfg.dataset, 'data_dir': cfg.data_dir,
              'splits': [split for split, _, _ in plans],
              'size': cfg.square_size, 'quality': quality,
              'files': {split: len(names) for split, _, names in plans}}
  _start_or_resume(partial, settings)
  written = {}
  for split, ds, names in plans:
    done = _written_prefix(partial / split, names, folders, cfg, split)
    if done:
      ds = pipeline.square_pixels(cfg, split, skip=done)[0]
    ds = ds.map(lambda ex: {
        'jpeg': tf.io.encode_jpeg(ex['image'], quality=quality,
                                  chroma_downsampling=False),
        'label': ex['label']}, num_parallel_calls=tf.data.AUTOTUNE)
    start, index = time.perf_counter(), done
    for batch in ds.batch(256).prefetch(2).as_numpy_iterator():
      for jpeg, label in zip(batch['jpeg'], batch['label']):
        _write_whole(partial / split / folders[label] / names[index], jpeg)
        index += 1
    written[split] = index
    print(f'{split}: {index} images ({done} of them by an earlier run), '
          f'{(index - done) / (time.perf_counter() - start):.0f} images/s',
          file=sys.stderr)
  os.rename(partial, out)
  return written


def _start_or_resume(partial: Path, settings: dict) -> None:
  """Makes DST.partial, or checks that the one there has these settings."""
  record = partial / '.downsample.json'
  if record.is_file():
    before = json.loads(record.read_text())
    changed = sorted(k for k in settings if before.get(k) != settings[k])
    if changed:
      raise UserError(
          f'{partial} was left by a downsample with other settings '
          f'({", ".join(f"{k}: {before.get(k)!r} then, {settings[k]!r} now" for k in changed)}).'
          ' Run that command again to finish it, or remove the folder to'
          ' start afresh with these.')
    print(f'Resuming {partial}, left by an earlier run of this command.',
          file=sys.stderr)
    return
  if partial.exists() and any(p.is_file() for p in partial.rglob('*')):
    raise UserError(
        f'{partial} holds files but no record of the settings that wrote them'
        ' (.downsample.json). Remove it and run again.')
  partial.mkdir(parents=True, exist_ok=True)
  _write_whole(record, json.dumps(settings, indent=1).encode())


def _written_prefix(split_dir: Path, names, folders, cfg, split) -> int:
  """How many of the split's records, from the first, have their file."""
  if not split_dir.is_dir():
    return 0
  existing = {(p.parent.name, p.name) for p in split_dir.glob('*/*')}
  if cfg.dataset == 'image_folder':  # Names are unique per class only.
    labels = sources.image_folder(cfg).labels[split]
    keys = [(folders[label], name) for label, name in zip(labels, names)]
  else:  # Record numbers: unique in the split.
    found = {name for _, name in existing}
    keys = [(None, name) for name in names]
    existing = {(None, name) for name in found}
  done = 0
  while done < len(keys) and keys[done] in existing:
    done += 1
  return done


def _write_whole(path: Path, data: bytes) -> None:
  """Writes `path` under a hidden temporary name, then renames it: a kill
  leaves the file whole or absent (and the temporary name, rewritten by the
  run that resumes)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  scratch = path.with_name(f'.{path.name}.writing')
  scratch.write_bytes(data)
  os.replace(scratch, path)
