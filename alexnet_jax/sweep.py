"""Ablation sweeps: one definition in `experiments/`, many training runs, one table.

    python -m alexnet_jax.sweep --sweep=experiments/lrn.py --workdir=DIR --parallel=2

Each point (its overrides and a seed) is an ordinary `alexnet_jax.main` run
in DIR/<overrides>,seed=<s>/; running again skips finished points and
resumes the others; results.md, results.csv, runs.csv, curves.png and
final.png are written at the end (tools/sweeps/). `--print_commands` prints
one command per point for a scheduler; `--collect_only` builds the results
from the folder. Exit status: 0 every point completed, 1 some point failed,
2 a bad sweep file or workdir (one paragraph, before any point starts), 75
preempted.
"""

import sys

from absl import flags

from alexnet_jax.run import cli

_SWEEP = flags.DEFINE_string('sweep', None, 'Sweep definition, e.g.'
                             ' experiments/lrn.py.', required=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder of the sweep: one sub-folder per point, the'
    ' results beside them. Running again resumes.', required=True)
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Points trained at once.')
_PRINT_COMMANDS = flags.DEFINE_bool(
    'print_commands', False, 'Print one command per point and exit, for a'
    ' scheduler; records the sweep in --workdir so that --collect_only can'
    ' check it.')
_COLLECT_ONLY = flags.DEFINE_bool(
    'collect_only', False, 'Train nothing: build the results from what the'
    ' point folders in --workdir hold.')


def main(argv):
  del argv
  from alexnet_jax.tools.sweeps import runner  # pylint: disable=import-outside-toplevel
  sys.exit(runner.run_sweep(
      _SWEEP.value, _WORKDIR.value, parallel=_PARALLEL.value,
      print_commands=_PRINT_COMMANDS.value, collect_only=_COLLECT_ONLY.value))


if __name__ == '__main__':
  cli.run(main, usage='python -m alexnet_jax.sweep --sweep=FILE --workdir=DIR'
          ' [--parallel=N] [--print_commands | --collect_only]')
