"""Sec. 2's down-sampling, done once: a dataset written as R x R JPEGs.

    python -m alexnet_jax.downsample --config=configs/default.py \
        --config.dataset=image_folder --config.data_dir=SRC --out=DST

Writes the config's training and evaluation splits as each image's centre
square at R x R (R = round(image_size * resize_ratio): 259 for 227-pixel
patches) to DST/<split>/<class>/<name>.jpg, through the input pipeline's own
code (data/downsampling.py); train on it with
--config.dataset=image_folder --config.data_dir=DST. One run at a time
(DST.lock); a killed run's command, run again, resumes DST.partial.
"""

from pathlib import Path

from absl import flags

from alexnet_jax.errors import UserError
from alexnet_jax.run import cli

_OUT = flags.DEFINE_string('out', None, 'The folder to write (must not exist).')
_QUALITY = flags.DEFINE_integer('quality', 95, 'JPEG quality of the written files.')
_CONFIG = cli.define_config_flag()


def main(argv):
  del argv
  if not _OUT.value:
    raise UserError('No --out given: name the folder to write, e.g.'
                    ' --out=imagenet_256.')
  # Imported after the flags: TensorFlow reads its environment as it starts.
  from alexnet_jax.data import downsampling  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run import rundir  # pylint: disable=import-outside-toplevel
  cfg = Settings.from_config(_CONFIG.value).data
  out = Path(_OUT.value).expanduser()
  refusal = lambda holder: (  # pylint: disable=unnecessary-lambda-assignment
      f'Another downsample is writing {out}.partial: {holder}. Wait for it to'
      ' finish, or stop it: the same command then resumes where it stopped.')
  with rundir.exclusive(out.with_name(out.name + '.lock'), f'--out={out}',
                        refusal) as held:
    written = downsampling.write_dataset(
        cfg, out, [cfg.train_split, cfg.eval_split], _QUALITY.value)
    held.path.unlink()  # Whole now: a later run finds --out and refuses.
  size = cfg.square_size
  print(f'Wrote {sum(written.values())} images of {size}x{size} to'
        f' {_OUT.value}; train on them with --config.dataset=image_folder'
        f' --config.data_dir={_OUT.value} --config.train_split='
        f'{cfg.train_split} --config.eval_split={cfg.eval_split}')


if __name__ == '__main__':
  cli.run(main, _CONFIG)
