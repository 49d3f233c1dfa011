"""How fast the training input pipeline turns JPEG files into batches.

    python -m alexnet_jax.input_benchmark --config=configs/default.py [--downsample]

Writes ImageNet-like JPEGs (500x375) in a temporary folder, times the
training pipeline on them as an image folder, and, for scale, decoding
alone; prints images per second and per CPU-second, then the JSON record
(tools/input_timing.py). `--downsample` times the files as
`alexnet_jax.downsample` writes them (Sec. 2).
"""

import json

from absl import flags

from alexnet_jax.run import cli

_IMAGES = flags.DEFINE_integer(
    'images', 0, 'Files in the training folder (0: enough that the warm-up'
    ' and timed batches fall in one epoch).')
_DISTINCT = flags.DEFINE_integer(
    'distinct', 256, 'Distinct pictures among them (the rest are hard links,'
    ' so that several epochs need not be written).')
_WIDTH = flags.DEFINE_integer('width', 500, 'Width of each JPEG.')
_HEIGHT = flags.DEFINE_integer('height', 375, 'Height of each JPEG.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Batches before the clock starts.')
_BATCHES = flags.DEFINE_integer('batches', 30, 'Batches timed.')
_DOWNSAMPLE = flags.DEFINE_bool(
    'downsample', False, 'Time the files as `alexnet_jax.downsample` writes'
    ' them (Sec. 2: R x R centre squares) instead.')
_CONFIG = cli.define_config_flag()


def main(argv):
  del argv
  # Imported after the flags: TensorFlow reads its environment as it starts.
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  from alexnet_jax.tools import input_timing  # pylint: disable=import-outside-toplevel
  settings = Settings.from_config(_CONFIG.value)
  result = input_timing.time_pipeline(
      settings.data, seed=settings.seed, images=_IMAGES.value,
      distinct=_DISTINCT.value, width=_WIDTH.value, height=_HEIGHT.value,
      warmup=_WARMUP.value, batches=_BATCHES.value, downsample=_DOWNSAMPLE.value)
  print(input_timing.summary_line(result))
  print(json.dumps(result))


if __name__ == '__main__':
  cli.run(main, _CONFIG)
