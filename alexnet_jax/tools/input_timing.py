"""How fast the training input pipeline turns JPEG files into batches
(`python -m alexnet_jax.input_benchmark`).

Writes ImageNet-like JPEGs itself (500x375, quality 90, a few hundred distinct
pictures hard-linked to --images files, in a temporary folder; by default
enough that the timed batches fall in one epoch, as nearly all of an
ImageNet run's batches do: `steady_state_images`), then times
`data.pipeline.train_batches` on them as an `image_folder` dataset: reading
the file, decoding the patch's window, flipping, resizing to image_size and
rounding to uint8, drawing the colour shift (if on), batched: uint8 pixels
with each image's (3,) pixel_offset and pixel_scale, which the jitted step
applies on the device (`core.steps.normalize`). It reports images per second
of wall time, and images per CPU-second of this process, which is images per
second per core busy and holds up on a shared machine where wall time does
not. For scale, the same files are then decoded whole and nothing else
(`tf.io.decode_jpeg`, in the same tf.data setting): the pipeline's cost
beside the decoder's, at the same load. The load average is printed too.
`--downsample` times the same files as `alexnet_jax.downsample` writes them
(Sec. 2: each centre square resized once to R x R), the paper's layout.
"""

import dataclasses
import os
from pathlib import Path
import resource
import sys
import tempfile
import time

import numpy as np

from alexnet_jax.data import downsampling
from alexnet_jax.data import pipeline
from alexnet_jax.errors import UserError

_CLASSES = 8


def write_jpegs(root: Path, count: int, distinct: int, width: int,
                height: int, seed: int = 0) -> None:
  """root/train/cNN/*.jpg (and one validation image per class).

  Each picture is a smooth random colour field with fine noise on top, so it
  compresses like a photograph (about 90 KB at 500x375, ImageNet's mean is
  near 110 KB), not like a flat test card.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  pictures = []
  for i in range(min(distinct, count)):
    coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height),
                                                      Image.BICUBIC), np.int16)
    noise = rng.integers(-12, 13, (height, width, 3), np.int16)
    path = root / 'distinct' / f'{i:05d}.jpg'
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8)).save(
        path, quality=90)
    pictures.append(path)
  links = [('train', i, i) for i in range(count)]
  links += [('validation', c, c) for c in range(_CLASSES)]
  for split, index, picture in links:
    target = root / split / f'c{index % _CLASSES:02d}' / f'{index:06d}.jpg'
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(pictures[picture % len(pictures)], target)


def steady_state_images(batch_size: int, warmup: int, batches: int) -> int:
  """Files enough that the warm-up and the timed batches are one epoch's.

  Each epoch builds its tf.data pipeline anew (a new shuffle, the map traced
  again, the buffers refilled): about a second of CPU. ImageNet pays it
  once per 10,009 batches of 128; a benchmark of 2,048 files paid it every
  16, twice inside 30 timed batches, and it is not what the pipeline costs
  per image.
  """
  return max(2048, (warmup + batches + 1) * batch_size)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def measure(cfg, warmup: int, batches: int, seed: int = 0) -> dict:
  """Times `batches` training batches of `cfg` (a data.settings.DataConfig)
  after `warmup`."""
  iterator = pipeline.train_batches(cfg, seed=seed)
  for _ in range(warmup):
    next(iterator)
  load_before = os.getloadavg()[0]
  wall, cpu = time.perf_counter(), _cpu_seconds()
  for _ in range(batches):
    batch = next(iterator)
  wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  images = batches * cfg.batch_size
  cores = len(os.sched_getaffinity(0))
  return {
      'images': images,
      'batch_shape': list(batch['image'].shape),
      'batch_dtype': str(batch['image'].dtype),
      'seconds': round(wall, 3),
      'images_per_sec': round(images / wall, 1),
      'images_per_cpu_sec': round(images / cpu, 1),
      'cores_busy': round(cpu / wall, 2),
      'cores': cores,
      'images_per_sec_per_core': round(images / wall / cores, 1),
      'load_average': [round(load_before, 2), round(os.getloadavg()[0], 2)],
  }


def measure_decode_only(root: Path, batch_size: int, warmup: int,
                        batches: int) -> float:
  """Images per CPU-second of reading and decoding the whole JPEG, alone."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  paths = sorted(str(p) for p in (root / 'train').glob('*/*.jpg'))
  ds = tf.data.Dataset.from_tensor_slices(paths).repeat().map(
      lambda path: tf.io.decode_jpeg(tf.io.read_file(path), channels=3)[0, 0],
      num_parallel_calls=tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  iterator = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(
      options).as_numpy_iterator()
  for _ in range(warmup):
    next(iterator)
  cpu = _cpu_seconds()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (_cpu_seconds() - cpu)


def time_pipeline(cfg, *, seed: int, images: int, distinct: int, width: int, height: int,
                  warmup: int, batches: int, downsample: bool) -> dict:
  """Everything `python -m alexnet_jax.input_benchmark` does after the flags:
  writes the files, times the pipeline on them (as `cfg` would read an image
  folder) and, for scale, decoding alone; returns the JSON record."""
  if min(distinct, width, height, batches) < 1 or warmup < 0 or images < 0:
    raise UserError('--distinct, --width, --height and --batches must be'
                    ' positive, --images and --warmup at least 0.')
  images = images or steady_state_images(cfg.batch_size, warmup, batches)
  if images < cfg.batch_size:
    raise UserError(f'--images={images} is less than one batch of'
                    f' config.batch_size={cfg.batch_size}.')
  with tempfile.TemporaryDirectory(prefix='input_benchmark_') as root:
    print(f'Writing {images} JPEGs of {width}x{height} ({distinct} distinct)'
          f' to {root} ...', file=sys.stderr)
    write_jpegs(Path(root), images, distinct, width, height)
    cfg = dataclasses.replace(cfg, dataset='image_folder', data_dir=root,
                              train_split='train', eval_split='validation')
    files = list((Path(root) / 'distinct').iterdir())
    if downsample:
      print('Down-sampling them (alexnet_jax.downsample) ...', file=sys.stderr)
      downsampling.write_dataset(cfg, Path(root) / 'downsampled',
                                 [cfg.train_split, cfg.eval_split])
      cfg = dataclasses.replace(cfg, data_dir=str(Path(root) / 'downsampled'))
      files = list((Path(root) / 'downsampled').glob('train/*/*.jpg'))
    jpeg_bytes = sum(p.stat().st_size for p in files) / len(files)
    result = measure(cfg, warmup, batches, seed)
    result['decode_only_images_per_cpu_sec'] = round(measure_decode_only(
        Path(cfg.data_dir), cfg.batch_size, warmup, batches), 1)
  result['mean_jpeg_kb'] = round(jpeg_bytes / 1000, 1)
  result['downsampled'] = downsample
  result['image_size'] = cfg.image_size
  result['pca_lighting'] = cfg.pca_lighting
  return result


def summary_line(result: dict) -> str:
  return (f'{result["images_per_sec"]:.0f} images/s on {result["cores"]} cores'
          f' ({result["images_per_sec_per_core"]:.0f} per core);'
          f' {result["images_per_cpu_sec"]:.0f} images per CPU-second'
          f' ({result["cores_busy"]:.2f} cores busy); decoding alone'
          f' {result["decode_only_images_per_cpu_sec"]:.0f} per CPU-second;'
          f' load average {result["load_average"][0]:.1f} ->'
          f' {result["load_average"][1]:.1f}')
