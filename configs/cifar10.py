"""CIFAR-10 (32x32, 10 classes), for ablations.

    python -m alexnet_jax.main --config=configs/cifar10.py:cifar_two_tower --workdir=DIR

The argument names the network, a 32x32 variant of alexnet_jax/core/network.py (`,small`
reads the first 10,000 training and 2,000 test images instead, about 1,000
and 200 of each class, for short runs on a CPU):

  * `cifar_two_tower` (default): the paper's two-tower layout scaled to 32x32,
    with the same crossings as Fig. 2 (conv3, fc6, fc7, fc8 read both towers),
    split over two devices (one tower each) as in 2012 (Sec. 3.2);
  * `cifar_one_tower`: its one-tower counterpart of the same total width;
  * `cifar_4layer`: the four-layer CNN the paper trains on CIFAR-10 in Sec. 3.1
    (Figure 1) and Sec. 3.3, on one device (three 5x5 convolutions and a
    classifier: no dropout, zero biases under init='paper').

Data, either way (docs/data.md, "CIFAR-10"):

  * TFDS `cifar10` (the default), prepared once in `data_dir` ('' is TFDS's
    default folder) with `tfds build cifar10 --data_dir=DIR` where there is
    a network; runs never download.
  * A folder of images, `DIR/train/<class>/*` (50,000) and `DIR/test/<class>/*`
    (10,000): `--config.dataset=image_folder --config.data_dir=DIR`.

`,small`'s splits are TFDS slices, `train[:10000]` and `test[:2000]`; a
folder reads the same syntax, taking its images one class after another in
turn, so that a slice holds the first images of every class.

The recipe is the paper's (Sec. 5: SGD, momentum 0.9, weight decay 5e-4, batch
128), with a cosine learning-rate decay to zero over `num_epochs`, which gives
a usable final number after any length of run (the paper's divide-on-plateau
needs long runs). Crops and flips as Sec. 4.1: the 32x32 image is resized to
37x37 (the 256/224 ratio) and random 32x32 patches of it are taken.
Not measured as a whole (30 epochs) on this machine; see experiments/ for the
short runs that were.
"""

from configs import default

VARIANTS = ('cifar_two_tower', 'cifar_one_tower', 'cifar_4layer')
IMAGE_SIZE = 32
# `small`: about 1,000 training and 200 test images of each class.
SMALL = ('train[:10000]', 'test[:2000]')


def get_config(arg: str | None = None):
  flags = [f for f in (arg or '').split(',') if f]
  unknown = [f for f in flags if f not in (*VARIANTS, 'small')]
  variants = [f for f in flags if f in VARIANTS]
  if unknown or len(variants) > 1:
    raise ValueError(f'Unknown config argument {arg!r}; give one of '
                     f'{", ".join(VARIANTS)}, optionally with ",small".')
  variant = variants[0] if variants else 'cifar_two_tower'
  config = default.get_config()
  config.dataset = 'cifar10'  # Or image_folder, with data_dir (see above).
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
