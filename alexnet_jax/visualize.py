"""Pictures: the split as compiled, conv1's kernels per tower, learning curves.

    python -m alexnet_jax.visualize architecture --config=configs/two_gpu.py --out=DIR
    python -m alexnet_jax.visualize kernels --workdir=DIR [--step=N] [--out=FILE.png]
    python -m alexnet_jax.visualize curves --workdir=DIR [--workdir=DIR2 | DIR2 ...] --out=FILE.png

`architecture` draws `describe`'s report (DIR/NAME.png, .svg, .json);
`kernels` the checkpoint's conv1 kernels, one panel per tower as Fig. 3,
with each tower's colour selectivity; `curves` each run's metrics.jsonl on
shared axes (tools/pictures/).
"""

from pathlib import Path

from absl import flags
from ml_collections import config_flags

from alexnet_jax.errors import UserError
from alexnet_jax.run import cli

COMMANDS = ('architecture', 'kernels', 'curves')

_CONFIG = cli.define_config_flag()
_OUT = flags.DEFINE_string('out', None, 'architecture: a folder (default docs/);'
                           ' kernels, curves: the picture file (.png, .svg, .pdf).')
_NAME = flags.DEFINE_string('name', None, 'architecture: the files\' name'
                            ' (default architecture_<config>).')
_WORKDIR = flags.DEFINE_multi_string('workdir', None, 'A training workdir'
                                     ' (curves: several).')
_STEP = flags.DEFINE_integer('step', None, 'kernels: the checkpoint step'
                             ' (default the latest).')


def main(argv):
  command, rest = (argv[1] if len(argv) > 1 else ''), argv[2:]
  from alexnet_jax.tools.pictures import architecture, curves, kernels, output  # pylint: disable=import-outside-toplevel
  if command == 'architecture':
    if _CONFIG.value is None or rest:
      raise UserError('architecture takes --config=FILE (e.g. configs/two_gpu.py)'
                      ' and --out=DIR, nothing else.')
    from alexnet_jax.run import launch  # pylint: disable=import-outside-toplevel
    from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
    out_dir = output.writable_dir(_OUT.value or 'docs')
    path, _, arg = config_flags.get_config_filename(flags.FLAGS['config']).partition(':')
    name = _NAME.value or '_'.join(['architecture', Path(path).stem] + ([arg] if arg else []))
    settings = Settings.from_config(_CONFIG.value)
    launch.start(settings)  # Host devices, then the checks: before any compile.
    printed = architecture.picture_architecture(settings, out_dir, name)
  elif command == 'kernels':
    if len(_WORKDIR.value or []) != 1 or rest:
      raise UserError('kernels takes one --workdir=DIR (a training run).')
    out = output.writable_file(_OUT.value) if _OUT.value else None
    printed = kernels.summary_lines(kernels.picture_kernels(
        Path(_WORKDIR.value[0]), _STEP.value, out))
  elif command == 'curves':
    runs = list(_WORKDIR.value or []) + rest
    if not runs or not _OUT.value:
      raise UserError('curves takes --workdir=DIR (one or more) and --out=FILE.png.')
    printed = [output.writable_file(_OUT.value)]
    curves.plot_curves(runs, printed[0])
  else:
    raise UserError(f'Say what to draw: python -m alexnet_jax.visualize'
                    f' {"|".join(COMMANDS)} ... (got {command or "nothing"}).')
  print('\n'.join(map(str, printed)), flush=True)


if __name__ == '__main__':
  cli.run(main, _CONFIG, config_required=False)
