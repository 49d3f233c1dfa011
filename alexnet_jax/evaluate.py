"""Evaluates a training run's checkpoint on the evaluation split.

    python -m alexnet_jax.evaluate --config=configs/two_gpu.py:demo --workdir=/tmp/alexnet-demo [--step=N] [--ten_crop]

Restores the latest checkpoint (or --step), prints loss, top-1 and top-5
and writes WORKDIR/evaluate_step<N>.json; the centre-patch evaluation is the
training loop's own, so it prints what training logged at that step.
`--ten_crop` is Sec. 4.1's test: ten patches, softmax averaged
(tools/evaluation.py).
"""

from pathlib import Path

from absl import flags

from alexnet_jax.errors import UserError
from alexnet_jax.run import cli

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'The training run\'s directory (holding checkpoints/).',
    required=True)
_STEP = flags.DEFINE_integer(
    'step', None, 'The checkpoint to evaluate; default the latest.')
_TEN_CROP = flags.DEFINE_bool(
    'ten_crop', False, 'Sec. 4.1\'s ten-patch test instead of the centre patch.')
_CONFIG = cli.define_config_flag()


def main(argv):
  if len(argv) > 1:
    raise UserError(f'Unexpected arguments {argv[1:]}; evaluate takes only'
                    ' flags (--config, --workdir, --step, --ten_crop).')
  # Imported after the flags: TensorFlow reads its environment as it starts.
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  from alexnet_jax.tools import evaluation  # pylint: disable=import-outside-toplevel
  evaluation.evaluate_workdir(Settings.from_config(_CONFIG.value),
                              Path(_WORKDIR.value), _STEP.value, _TEN_CROP.value)


if __name__ == '__main__':
  cli.run(main, _CONFIG)
