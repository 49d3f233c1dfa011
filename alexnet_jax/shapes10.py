"""shapes10: the built-in dataset, ten classes of drawn shapes, no download.

A stand-in for ImageNet that prepares in seconds, so that the demo and the
tests run anywhere. Every image is one shape drawn with numpy at a random
position, scale (40% to 72% of the image side) and rotation, in a random
foreground colour on a random background colour, plus pixel noise. Colours are
drawn independently of the label, so the mean image of every class is the
same grey: a linear classifier on raw pixels stays near chance (tested), while
a small CNN tells the shapes apart.

The images are a pure function of (seed, split, index): the same parameters
always give the same dataset, in any order of generation.

    builder = Shapes10(config=builder_config(image_size=67), data_dir=DIR)
    builder.download_and_prepare()  # ~2 s for 10,000 + 2,000 images at 67 px.
"""

import dataclasses
import functools
import io
import re

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

CLASS_NAMES = ('disc', 'square', 'triangle', 'cross', 'ring', 'bar', 'star',
               'crescent', 'frame', 'dots')
_SPLITS = ('train', 'validation')

# Shape radius in pixels per unit of image side: diameters of 40% to 72%,
# large enough for conv1's 11x11 stride-4 filters at 67x67.
_MIN_SCALE, _MAX_SCALE = 0.20, 0.36
_MIN_CONTRAST = 96.0  # RGB distance between foreground and background.
_NOISE = 20.0  # Uniform in +-_NOISE per pixel and channel, 0..255 units.


def _box(u, v, half_u, half_v):
  return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def _star(u, v, points=5, outer=1.1, inner=0.45):
  # Fold the plane into one half-spike, then take the distance to its edge.
  sector = 2 * np.pi / points
  phi = np.abs(np.mod(np.arctan2(v, u), sector) - sector / 2)
  r = np.hypot(u, v)
  x, y = r * np.cos(phi), r * np.sin(phi)
  # The edge runs from the tip (outer, 0) to the notch at angle sector/2.
  ax, ay = outer, 0.0
  bx, by = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
  ex, ey = bx - ax, by - ay
  return ((x - ax) * ey - (y - ay) * ex) / np.hypot(ex, ey)


def _signed_distance(label, u, v):
  """Distance to the shape's edge in shape units, negative inside."""
  r = np.hypot(u, v)
  name = CLASS_NAMES[label]
  if name == 'disc':
    return r - 1.0
  if name == 'square':
    return _box(u, v, 0.8, 0.8)
  if name == 'triangle':  # Equilateral, centred, circumradius 1.15.
    angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
    return np.max([u * np.cos(a) + v * np.sin(a) for a in angles], 0) - 0.575
  if name == 'cross':
    return np.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))
  if name == 'ring':
    return np.abs(r - 0.72) - 0.28
  if name == 'bar':
    return _box(u, v, 1.0, 0.28)
  if name == 'star':
    return _star(u, v)
  if name == 'crescent':  # A disc with an offset disc cut out.
    return np.maximum(r - 1.0, 0.8 - np.hypot(u - 0.45, v))
  if name == 'frame':  # A hollow square.
    return np.abs(_box(u, v, 0.65, 0.65)) - 0.2
  if name == 'dots':  # Three discs on a triangle.
    angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
    return np.min([np.hypot(u - 0.62 * np.cos(a), v - 0.62 * np.sin(a))
                   for a in angles], 0) - 0.38
  raise ValueError(f'Unknown shapes10 class {label}.')


def draw(label: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
  """One image of class `label`: uint8 (image_size, image_size, 3)."""
  scale = image_size * rng.uniform(_MIN_SCALE, _MAX_SCALE)  # Pixels per unit.
  room = max(image_size / 2 - scale, 0.0)
  cx, cy = image_size / 2 + rng.uniform(-room, room, size=2)
  angle = rng.uniform(0, 2 * np.pi)
  while True:  # Colours carry no label information, only contrast.
    fg, bg = rng.uniform(0, 255, size=(2, 3))
    if np.linalg.norm(fg - bg) >= _MIN_CONTRAST:
      break
  # Pixel centres, rotated and scaled into the shape's frame.
  x, y = _pixel_centres(image_size)
  dx, dy = x - cx, y - cy
  u = (np.cos(angle) * dx + np.sin(angle) * dy) / scale
  v = (-np.sin(angle) * dx + np.cos(angle) * dy) / scale
  # Antialiased coverage: one pixel of soft edge.
  cover = np.clip(0.5 - scale * _signed_distance(label, u, v), 0, 1)[..., None]
  image = bg + (fg - bg) * cover
  noise = rng.random(image.shape, dtype=np.float32)  # Faster than normal().
  image += (2 * noise - 1) * _NOISE
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _pixel_centres(image_size):
  y, x = np.mgrid[:image_size, :image_size] + 0.5
  return x, y


def example(split: str, index: int, image_size: int, seed: int):
  """The `index`-th (image, label) of `split`; classes are balanced."""
  label = index % len(CLASS_NAMES)
  rng = np.random.default_rng((seed, _SPLITS.index(split), index))
  return draw(label, image_size, rng), label


@dataclasses.dataclass(eq=False)
class Shapes10Config(tfds.core.BuilderConfig):
  image_size: int = 67
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
  # Stored in index order, which already cycles through the classes; TFDS's
  # shuffling at write time would double the preparation time.
  disable_shuffling = True

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
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in _SPLITS}

  def _generate_examples(self, split):
    config = self.builder_config
    count = config.num_train if split == 'train' else config.num_eval
    for index in range(count):
      image, label = example(split, index, config.image_size, config.seed)
      # JPEG, as ImageNet's: a fifth of the time and size of PNG on these
      # noisy images. TFDS stores the bytes as given.
      jpeg = io.BytesIO()
      Image.fromarray(image).save(jpeg, format='JPEG', quality=95)
      yield index, {'image': jpeg.getvalue(), 'label': label}
