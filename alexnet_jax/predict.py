"""Classifies image files with a training run's checkpoint.

    python -m alexnet_jax.predict --workdir=/tmp/alexnet-demo IMAGE [IMAGE ...] [--json] [--step=N]

For each file, the five most probable classes with their names and
probabilities, from the centre patch as evaluation sees it; the network and
data settings come from WORKDIR/config.json (tools/prediction.py). A file
that is not a readable image gets one line and the others are answered; a
path that does not exist stops the command first (exit status 2).
"""

import json
from pathlib import Path

from absl import flags

from alexnet_jax.run import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'The training run\'s directory'
                               ' (config.json, checkpoints/).', required=True)
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON list instead of text.')


def main(argv):
  # Imported after the flags: TensorFlow reads its environment as it starts.
  from alexnet_jax.tools import prediction  # pylint: disable=import-outside-toplevel
  results = prediction.predict(Path(_WORKDIR.value), argv[1:], _STEP.value)
  print(json.dumps(results, indent=2) if _JSON.value
        else prediction.format_results(results))


if __name__ == '__main__':
  cli.run(main, usage='python -m alexnet_jax.predict --workdir=DIR IMAGE'
          ' [IMAGE ...] [--json] [--step=N]')
