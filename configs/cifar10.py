"""CIFAR-10 (32x32, 10 classes) from the JPEGs in ../shared/data, for ablations.

    python -m alexnet_jax.main --config=configs/cifar10.py:cifar_two_tower --workdir=DIR

The argument names the network, a 32x32 variant of alexnet_jax/core/network.py (`,small` adds
the splits `train_small` and `test_small`, the first 1,000 training and 200
test images of each class, for short runs on a CPU):

  * `cifar_two_tower` (default): the paper's two-tower layout scaled to 32x32,
    with the same crossings as Fig. 2 (conv3, fc6, fc7, fc8 read both towers),
    split over two devices (one tower each) as in 2012 (Sec. 3.2);
  * `cifar_one_tower`: its one-tower counterpart of the same total width;
  * `cifar_4layer`: the four-layer CNN the paper trains on CIFAR-10 in Sec. 3.1
    (Figure 1) and Sec. 3.3, on one device (three 5x5 convolutions and a
    classifier: no dropout, zero biases under init='paper').

Data: `dataset=image_folder` reading `train/` (50,000 images) and `test/`
(10,000) from `data_dir`. By default that is a cache folder
(`$XDG_CACHE_HOME/alexnet_jax/cifar10-jpeg`, else `~/.cache/...`) which
`get_config` fills once from ../shared/data/cifar10-jpeg.tar.gz: unpacked into a
temporary folder beside it and renamed into place, so that runs started
together (a sweep) never read a half-written folder. Caveat: these images were
re-encoded as JPEG (quality about 75), so accuracies land near, not on,
published CIFAR-10 figures.

The recipe is the paper's (Sec. 5: SGD, momentum 0.9, weight decay 5e-4, batch
128), with a cosine learning-rate decay to zero over `num_epochs`, which gives
a usable final number after any length of run (the paper's divide-on-plateau
needs long runs). Crops and flips as Sec. 4.1: the 32x32 image is resized to
37x37 (the 256/224 ratio) and random 32x32 patches of it are taken.
Not measured as a whole (30 epochs) on this machine; see experiments/ for the
short runs that were.
"""

import os
from pathlib import Path
import shutil
import tarfile
import tempfile

from configs import default

ARCHIVE = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'cifar10-jpeg.tar.gz'
VARIANTS = ('cifar_two_tower', 'cifar_one_tower', 'cifar_4layer')
IMAGE_SIZE = 32
# `small`: split -> (the split it is taken from, images per class).
SMALL = {'train_small': ('train', 1_000), 'test_small': ('test', 200)}


def cache_dir() -> Path:
  root = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
  return Path(root) / 'alexnet_jax' / 'cifar10-jpeg'


def extracted(archive: Path = ARCHIVE, target: Path | None = None) -> Path:
  """The image folder (`train/`, `test/`), unpacked from `archive` on first use.

  Safe when several processes start at once: each unpacks into its own
  temporary folder and renames it into place; the first rename wins and the
  others delete their copy. Without the archive, returns the path anyway
  (the input pipeline then says the folder is missing).
  """
  target = target or cache_dir()
  if (target / 'train').is_dir() or not archive.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  scratch = Path(tempfile.mkdtemp(prefix='.unpacking-', dir=target.parent))
  try:
    with tarfile.open(archive) as tar:
      tar.extractall(scratch, filter='data')
    try:
      os.rename(scratch / 'cifar10', target)
    except OSError:
      if not (target / 'train').is_dir():  # Not lost to a concurrent unpack.
        raise
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return target


def _with_subsets(target: Path) -> Path:
  """Adds the `small` splits to an extracted folder: the first SMALL[split]
  images of every class (sorted names), hard-linked; built aside, renamed in."""
  for split, (source, per_class) in SMALL.items():
    if (target / split).is_dir() or not (target / source).is_dir():
      continue
    scratch = Path(tempfile.mkdtemp(prefix=f'.{split}-', dir=target))
    try:
      for class_dir in sorted((target / source).iterdir()):
        (scratch / class_dir.name).mkdir()
        for image in sorted(class_dir.iterdir())[:per_class]:
          os.link(image, scratch / class_dir.name / image.name)
      try:
        os.rename(scratch, target / split)
      except OSError:
        if not (target / split).is_dir():
          raise
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
  return target


def get_config(arg: str | None = None):
  flags = [f for f in (arg or '').split(',') if f]
  unknown = [f for f in flags if f not in (*VARIANTS, 'small')]
  variants = [f for f in flags if f in VARIANTS]
  if unknown or len(variants) > 1:
    raise ValueError(f'Unknown config argument {arg!r}; give one of '
                     f'{", ".join(VARIANTS)}, optionally with ",small".')
  variant = variants[0] if variants else 'cifar_two_tower'
  config = default.get_config()
  config.dataset = 'image_folder'
  config.data_dir = str(_with_subsets(extracted()))
  config.train_split = 'train'
  config.eval_split = 'test'
  if 'small' in flags:  # For short runs on a CPU: less to scan and evaluate.
    config.train_split, config.eval_split = SMALL
  config.image_size = IMAGE_SIZE
  config.model.variant = variant
  config.model.num_classes = 10

  config.batch_size = 128
  config.num_epochs = 30
  config.optimizer.schedule = 'cosine'
  config.eval_every_steps = 1_000
  config.checkpoint_every_steps = 500
  config.log_every_steps = 50
  if variant == 'cifar_two_tower':  # One tower per device, as in 2012.
    config.strategy = 'towers'
    config.mesh.model = 2
  return config
