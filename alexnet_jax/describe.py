"""Shows how the network is split over devices and where the devices talk.

    python -m alexnet_jax.describe --config=configs/two_gpu.py [--json]
    python -m alexnet_jax.describe --config=configs/two_gpu.py --strategies=towers,data,hybrid,fsdp

Per layer: its output per tower, its parameters and the devices holding each
tower; the bytes each device holds; and the collectives of the compiled
train step, read from its HLO (tools/placement.py). Nothing is run and
nothing of the network is allocated: the train step is only compiled.
"""

import sys

from absl import flags

from alexnet_jax.run import cli

_CONFIG = cli.define_config_flag()
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object.')
_STRATEGIES = flags.DEFINE_string(
    'strategies', '', 'Comma-separated strategies (core/parallel.py STRATEGIES)'
    ' to compare side by side, e.g. towers,data,hybrid,fsdp.')


def main(argv):
  del argv
  from alexnet_jax.run import launch  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  from alexnet_jax.tools import placement  # pylint: disable=import-outside-toplevel
  settings = Settings.from_config(_CONFIG.value)
  launch.start(settings)  # Host devices, then the checks: before any compile.
  print(placement.report(settings, _STRATEGIES.value, _JSON.value))
  sys.stdout.flush()


if __name__ == '__main__':
  cli.run(main, _CONFIG)
