"""shapes10: the built-in dataset, ten classes of drawn shapes, no download.

A stand-in for ImageNet that prepares in seconds, so that the demo and the
tests run anywhere. Every image is one shape drawn with numpy at a random
position, scale (48% to 76% of the image side across) and rotation, in a
random foreground colour on a random background colour, plus pixel noise.
Colours are drawn independently of the label, so the mean image of every
class is the same grey: a linear classifier on raw pixels stays near chance
(chance is 10%; tested), while the shapes are easy to tell apart for a CNN
(the demo, configs/two_gpu.py:demo, learns them in minutes on a CPU).

The images are a pure function of (seed, split, index): the same parameters
always give the same dataset, in any order of generation.

    builder = Shapes10(config=builder_config(image_size=67), data_dir=DIR)
    builder.download_and_prepare()  # Seconds for 10,000 + 2,000 at 67 px.
"""

import dataclasses
import functools
import io
import math
import re

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

CLASS_NAMES = ('disc', 'square', 'triangle', 'cross', 'ring', 'bar', 'star',
               'crescent', 'frame', 'dots')
_SPLITS = ('train', 'validation')

# Pixels per shape unit (shapes are about 2 units across), as a fraction of
# the image side: large enough for conv1's 11x11 stride-4 filters at 67x67.
_MIN_SCALE, _MAX_SCALE = 0.24, 0.38
_MIN_CONTRAST = 110.0  # RGB distance between foreground and background.
_CHUNK = 32  # Images drawn at once: vectorised, and within the CPU caches.
_NOISE = 20  # Uniform in +-_NOISE per pixel and channel, 0..255 units.


# The three directions of a triangle's corners, as Python floats: numpy
# scalars would promote the float32 arithmetic to float64.
_CORNERS = tuple((math.cos(a), math.sin(a))
                 for a in (math.pi / 2 + 2 * math.pi / 3 * k for k in range(3)))


def _norm(u, v):
  return np.sqrt(u * u + v * v)  # np.hypot is ten times slower.


def _box(u, v, half_u, half_v):
  return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _star(u, v, points=5, outer=1.1, inner=0.45):
  # Fold the plane into one half-spike, then take the distance to its edge.
  sector = 2 * math.pi / points
  turns = np.arctan2(v, u) / sector  # np.mod is ten times slower.
  phi = np.abs(turns - np.floor(turns) - 0.5) * sector
  r = _norm(u, v)
  x, y = r * np.cos(phi), r * np.sin(phi)
  # The edge runs from the tip (outer, 0) to the notch at angle sector/2.
  ax, ay = outer, 0.0
  bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
  ex, ey = bx - ax, by - ay
  return ((x - ax) * ey - (y - ay) * ex) / math.hypot(ex, ey)


def _signed_distance(label, u, v):
  """Distance to the shape's edge in shape units, negative inside."""
  name = CLASS_NAMES[label]
  if name == 'disc':
    return _norm(u, v) - 1.0
  if name == 'square':
    return _box(u, v, 0.8, 0.8)
  if name == 'triangle':  # Equilateral, centred, circumradius 1.15.
    (ax, ay), (bx, by), (cx, cy) = _CORNERS
    return np.maximum(np.maximum(u * ax + v * ay, u * bx + v * by),
                      u * cx + v * cy) - 0.575
  if name == 'cross':
    return np.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))
  if name == 'ring':
    return np.abs(_norm(u, v) - 0.72) - 0.28
  if name == 'bar':
    return _box(u, v, 1.0, 0.28)
  if name == 'star':
    return _star(u, v)
  if name == 'crescent':  # A disc with an offset disc cut out.
    return np.maximum(_norm(u, v) - 1.0, 0.8 - _norm(u - 0.45, v))
  if name == 'frame':  # A hollow square.
    return np.abs(_box(u, v, 0.65, 0.65)) - 0.2
  if name == 'dots':  # Three discs on the triangle's corners.
    (ax, ay), (bx, by), (cx, cy) = _CORNERS
    return np.minimum(np.minimum(_norm(u - 0.62 * ax, v - 0.62 * ay),
                                 _norm(u - 0.62 * bx, v - 0.62 * by)),
                      _norm(u - 0.62 * cx, v - 0.62 * cy)) - 0.38
  raise ValueError(f'Unknown shapes10 class {label}.')


def examples(split: str, start: int, stop: int, image_size: int, seed: int):
  """Examples start..stop-1 of `split`: uint8 (N, S, S, 3) images, labels.

  Each example's parameters come from its own generator, seeded with
  (seed, split, index); the drawing is vectorised over each class.
  """
  indices = np.arange(start, stop)
  labels = indices % len(CLASS_NAMES)  # Balanced classes.
  params = [_random_parameters(image_size, np.random.default_rng(
      (seed, _SPLITS.index(split), index))) for index in indices]
  # float32 halves the time of the per-pixel arithmetic below.
  # Shapes (N, 1, 1, 1), and (N, 3, 1, 1) for the colours.
  scale, cx, cy, angle, fg, bg = (
      np.array(p, np.float32).reshape(len(indices), -1, 1, 1)
      for p in list(zip(*params))[:6])
  noise = np.stack([p[6] for p in params])  # (N, 3, S, S) int8.
  # Pixel centres, rotated and scaled into each shape's frame: (N, 1, S, S).
  y, x = np.mgrid[:image_size, :image_size].astype(np.float32) + 0.5
  dx, dy = x - cx, y - cy
  cos, sin = np.cos(angle), np.sin(angle)
  u, v = (cos * dx + sin * dy) / scale, (cos * dy - sin * dx) / scale
  distance = np.empty_like(u)
  for label in np.unique(labels):
    mine = labels == label
    distance[mine] = _signed_distance(label, u[mine], v[mine])
  # Antialiased coverage: one pixel of soft edge.
  cover = np.clip(0.5 - scale * distance, 0, 1)
  # Channels first, so that numpy's inner loops run along rows, not over 3.
  images = bg + (fg - bg) * cover + noise  # (N, 3, S, S)
  images = np.clip(np.round(images), 0, 255).astype(np.uint8)
  return images.transpose(0, 2, 3, 1), labels


def _random_parameters(image_size, rng):
  """Position, scale, rotation, colours and noise of one image."""
  scale = image_size * rng.uniform(_MIN_SCALE, _MAX_SCALE)  # Pixels per unit.
  room = max(image_size / 2 - scale, 0.0)
  cx, cy = image_size / 2 + rng.uniform(-room, room, size=2)
  angle = rng.uniform(0, 2 * math.pi)
  while True:  # Colours carry no label information, only contrast.
    fg, bg = rng.uniform(0, 255, size=(2, 3))
    if np.sum((fg - bg) ** 2) >= _MIN_CONTRAST ** 2:
      break
  # Uniform integer noise: several times faster to draw than normal().
  noise = rng.integers(-_NOISE, _NOISE, size=(3, image_size, image_size),
                       dtype=np.int8, endpoint=True)
  return scale, cx, cy, angle, fg, bg, noise


@dataclasses.dataclass(eq=False)
class Shapes10Config(tfds.core.BuilderConfig):
  image_size: int = 67  # Square images.
  num_train: int = 10_000
  num_eval: int = 2_000
  seed: int = 0


def builder_config(image_size: int, num_train: int = 10_000,
                   num_eval: int = 2_000, seed: int = 0) -> Shapes10Config:
  """A config named after its parameters, so each gets its own folder."""
  return _builder_config(image_size, num_train, num_eval, seed)


# Cached: TFDS accepts a config only as the very object that
# `Shapes10.get_builder_config` returns for its name.
@functools.lru_cache(maxsize=None)
def _builder_config(image_size, num_train, num_eval, seed):
  return Shapes10Config(
      name=f'{image_size}px_{num_train}_{num_eval}_seed{seed}',
      description=f'{image_size}x{image_size} images, {num_train} train and '
      f'{num_eval} validation examples, seed {seed}.',
      image_size=image_size, num_train=num_train, num_eval=num_eval, seed=seed)


# Not registered by name: built through `Shapes10(config=...)` only, so that
# importing this module changes no global TFDS state.
class Shapes10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Ten classes of randomly placed, coloured and rotated shapes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [builder_config(67)]
  # No checksums or metadata files beside the code. TFDS would otherwise
  # look for them through `importlib_resources`, which it does not install.
  code_path = None

  @classmethod
  def get_builder_config(cls, name, version=None):
    """Any parameters, from a name such as '67px_10000_2000_seed0'."""
    match = re.fullmatch(r'(\d+)px_(\d+)_(\d+)_seed(\d+)', name)
    return builder_config(*map(int, match.groups())) if match else None

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3),
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=('image', 'label'),
        # Stored in index order, which already cycles through the classes;
        # TFDS's shuffling at write time would add a third to the time.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in _SPLITS}

  def _generate_examples(self, split):
    config = self.builder_config
    count = config.num_train if split == 'train' else config.num_eval
    for start in range(0, count, _CHUNK):
      images, labels = examples(split, start, min(start + _CHUNK, count),
                                config.image_size, config.seed)
      for index, (image, label) in enumerate(zip(images, labels), start):
        # JPEG, as ImageNet's: a fifth of the time and size of PNG on these
        # noisy images. TFDS stores the bytes as given.
        jpeg = io.BytesIO()
        Image.fromarray(image).save(jpeg, format='JPEG', quality=95)
        yield index, {'image': jpeg.getvalue(), 'label': int(label)}
