"""Ablation sweeps: one definition in `experiments/`, many training runs, one table.

    python -m alexnet_jax.sweep --sweep=experiments/lrn.py --workdir=DIR \\
        [--set data_dir=/data/cifar10] [--devices=auto] [--points_per_device=4]

Each point (its overrides and a seed) is an ordinary `alexnet_jax.main` run
in DIR/<overrides>,seed=<s>/, on its own GPU(s), share of a GPU, or CPU
cores (tools/sweeps/placement.py); running again skips finished points and
resumes the others; results.md, results.csv and runs.csv are rewritten as
each point ends, curves.png and final.png at the end (tools/sweeps/).
`--print_commands` prints a SLURM job-array script, one point per task;
`--collect_only` builds the results from the folder. Exit status: 0 every
point completed, 1 some point failed, 2 a bad sweep file, workdir or device
request (one paragraph, before any point starts), 75 preempted or stopped
by --stop_after_s (run again to resume).
"""

import sys

from absl import flags

from alexnet_jax.run import cli

_SWEEP = flags.DEFINE_string('sweep', None, 'Sweep definition, e.g.'
                             ' experiments/lrn.py.', required=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder of the sweep: one sub-folder per point, the'
    ' results beside them. Running again resumes.', required=True)
_SET = flags.DEFINE_multi_string(
    'set', [], 'KEY=VALUE: a config override for every point, e.g. --set'
    ' data_dir=DIR (repeatable). Part of the sweep\'s identity, but for'
    ' data_dir.')
_SEEDS = flags.DEFINE_list(
    'seeds', [], 'Only these of the sweep file\'s SEEDS (e.g. 0 to run one'
    ' seed of every point first); the same folder takes the rest later.')
_DEVICES = flags.DEFINE_string(
    'devices', 'auto', "Where points run: 'auto' (the GPUs if nvidia-smi"
    " lists any, else the CPU), 'gpu', 'cpu' or GPU indices such as '0,1'.")
_PARALLEL = flags.DEFINE_integer(
    'parallel', 0, 'Points trained at once; 0: one per GPU (times'
    ' --points_per_device), or 1 on the CPU. On the CPU each point gets its'
    ' own share of the cores.')
_POINTS_PER_DEVICE = flags.DEFINE_integer(
    'points_per_device', 1, 'Points sharing one GPU, each preallocating'
    ' 0.9/N of its memory.')
_VMAP_SEEDS = flags.DEFINE_bool(
    'vmap_seeds', False, 'Train the seeds of each point in one process (the'
    ' train state stacked, the step jax.vmap-ed: run/seeds.py), each seed'
    ' still in its own folder; fills a GPU with small nets. Strategy data or'
    ' towers with mesh.model=1 only.')
_STOP_AFTER = flags.DEFINE_float(
    'stop_after_s', 0, 'Preempt the running points after this many seconds'
    ' (they save a checkpoint) and exit 75; 0: no limit.')
_PRINT_COMMANDS = flags.DEFINE_bool(
    'print_commands', False, 'Print a SLURM job-array script (one point per'
    ' task; `bash` runs them all) and exit; records the sweep in --workdir so'
    ' that --collect_only can check it.')
_COLLECT_ONLY = flags.DEFINE_bool(
    'collect_only', False, 'Train nothing: build the results from what the'
    ' point folders in --workdir hold.')


def main(argv):
  del argv
  from alexnet_jax.tools.sweeps import runner  # pylint: disable=import-outside-toplevel
  sys.exit(runner.run_sweep(
      _SWEEP.value, _WORKDIR.value, parallel=_PARALLEL.value,
      devices=_DEVICES.value, points_per_device=_POINTS_PER_DEVICE.value,
      sets=_SET.value, seeds=_SEEDS.value, stop_after_s=_STOP_AFTER.value,
      print_commands=_PRINT_COMMANDS.value, collect_only=_COLLECT_ONLY.value,
      vmap_seeds=_VMAP_SEEDS.value))


if __name__ == '__main__':
  cli.run(main, usage='python -m alexnet_jax.sweep --sweep=FILE --workdir=DIR'
          ' [--set KEY=VALUE] [--devices=auto|gpu|cpu|0,1] [--parallel=N]'
          ' [--points_per_device=N] [--vmap_seeds] [--print_commands | --collect_only]')
