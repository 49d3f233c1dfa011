"""Trains AlexNet: `python -m alexnet_jax.main --config=configs/two_gpu.py --workdir=DIR`.

This file is intentionally kept short: it parses flags, checks the config and
calls `train.train_and_evaluate`. Exit status: 0 done, 2 a problem to fix
(printed as one paragraph), 75 preempted by SIGTERM after saving (run the
same command again to resume), 130 the same after Ctrl-C; in a run over
several processes, 69 a peer process was lost (run the same command on every
host to resume) and 68 a peer never joined within
`distributed.initialization_timeout` (nothing was trained).
"""

import logging
import sys

from absl import flags

from alexnet_jax import cli

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, metrics and logs; running'
    ' again with the same one resumes.', required=True)
_CONFIG = cli.define_config_flag()
_PROCESSES = cli.define_process_flags()


def main(argv):
  del argv
  config = _CONFIG.value
  processes = _PROCESSES()
  if processes.num_processes > 1 and not cli.supervised():
    # Names a lost peer, or one that never joined: see cli.supervise.
    sys.exit(cli.supervise(processes,
                           config.distributed.initialization_timeout))
  cli.check(config, workdir=_WORKDIR.value, processes=processes, fits=True)
  from alexnet_jax import train  # Brings in TensorFlow: only for a good config.
  try:
    summary = train.train_and_evaluate(config, _WORKDIR.value)
  except train.Preempted as e:
    logging.warning('%s: saved step %s; run the same command to resume.',
                    e.args[1].capitalize(), e.args[0])
    sys.exit(e.exit_code)
  print(cli.format_summary(summary))


if __name__ == '__main__':
  cli.run(main, _CONFIG)
