"""Trains AlexNet: `python -m alexnet_jax.main --config=configs/two_gpu.py --workdir=DIR`.

This file is intentionally kept short: flags, then `run.launch.train`.
Exit status: 0 done, 2 a problem to fix (printed as one paragraph), 75
preempted by SIGTERM after saving (run the same command again to resume),
130 the same after Ctrl-C; in a run over several processes, 69 a peer
process was lost (run the same command on every host to resume) and 68 a
peer never joined within `distributed.initialization_timeout` (nothing was
trained).
"""

import sys

from absl import flags

from alexnet_jax.run import cli
from alexnet_jax.run import launch
from alexnet_jax.run import supervision

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics and logs; running'
    ' again with the same one resumes.', required=True)
_CONFIG = cli.define_config_flag()
_SEEDS = flags.DEFINE_list(
    'seeds', [], 'Train these seeds of the config (in place of config.seed)'
    ' in one program, the train state stacked and the step jax.vmap-ed over'
    ' it (run/seeds.py); --workdir then names each seed\'s own workdir with'
    " {seed}, e.g. --seeds=0,1,2 --workdir='DIR/seed={seed}'.")
_PROCESSES = supervision.define_process_flags()


def main(argv):
  del argv
  if _SEEDS.value:
    from alexnet_jax.run import seeds  # pylint: disable=import-outside-toplevel
    sys.exit(seeds.train(_CONFIG.value, _WORKDIR.value, _SEEDS.value, _PROCESSES()))
  sys.exit(launch.train(_CONFIG.value, _WORKDIR.value, _PROCESSES()))


if __name__ == '__main__':
  cli.run(main, _CONFIG)
