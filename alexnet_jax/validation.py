"""Config checks that run before anything compiles; each failure is one paragraph.

Unknown keys and wrong types on the command line are caught while the flags
are parsed (`explain_flag_error`); everything else is `validate`.
"""

import difflib
import os
from pathlib import Path

from alexnet_jax import model as model_lib
from alexnet_jax import parallel
from alexnet_jax.errors import UserError

STRATEGIES = ('towers', 'data')
SCHEDULES = ('plateau', 'step', 'cosine', 'constant')


def config_keys(config, prefix: str = '') -> list[str]:
  keys = []
  for name, value in config.items():
    full = f'{prefix}{name}'
    keys.extend(config_keys(value, full + '.') if hasattr(value, 'items')
                else [full])
  return keys


def explain_flag_error(message: str, argv: list[str], config) -> str:
  """Turns a flag parse error into advice, with near matches for unknown keys."""
  keys = config_keys(config) if config is not None else []
  for arg in argv:
    if arg.startswith('--config.') and keys:
      key = arg.removeprefix('--config.').split('=')[0]
      if key not in keys:
        near = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
        hint = (f' Did you mean {" or ".join(near)}?' if near else '')
        return (f'Unknown config key {key!r} in {arg!r}.{hint} Every key is'
                ' listed, with its type and meaning, in configs/default.py.')
  # Config files raise inside a traceback; its last line says what went wrong.
  lines = [l.strip() for l in message.strip().splitlines() if l.strip()]
  reason = lines[-1] if 'Traceback' in message else ' '.join(lines)
  return (f'The command line could not be parsed: {reason} Check the --config'
          ' file and each --config.key=value override against'
          ' configs/default.py (names and types).')


def _positive(config, *names: str) -> None:
  for name in names:
    value = config
    for part in name.split('.'):
      value = value[part]
    if not value > 0:
      raise UserError(f'{name} must be positive, got {value!r}.')


def validate(config, *, num_devices: int,
             workdir: str | None = None) -> tuple[int, int]:
  """Raises UserError for anything wrong; returns the (data, model) mesh shape."""
  _positive(config, 'batch_size', 'optimizer.learning_rate', 'eval_every_steps',
            'checkpoint_every_steps', 'log_every_steps', 'keep_checkpoints',
            'image_size')
  if config.num_train_steps == 0 or config.num_train_steps < -1:
    raise UserError(
        f'num_train_steps must be positive (or -1 to train for num_epochs), got'
        f' {config.num_train_steps}.')
  if config.num_train_steps == -1:
    _positive(config, 'num_epochs')
  if not 0 <= config.optimizer.momentum < 1:
    raise UserError(f'optimizer.momentum must be in [0, 1), got'
                    f' {config.optimizer.momentum}.')
  if config.optimizer.weight_decay < 0:
    raise UserError(f'optimizer.weight_decay must be >= 0, got'
                    f' {config.optimizer.weight_decay}.')
  if config.optimizer.schedule not in SCHEDULES:
    raise UserError(f'Unknown optimizer.schedule {config.optimizer.schedule!r};'
                    f' choose one of {", ".join(SCHEDULES)}.')
  model_lib.validate(config)

  if config.strategy not in STRATEGIES:
    raise UserError(f'Unknown strategy {config.strategy!r}; choose one of'
                    f' {", ".join(STRATEGIES)}.')
  towers = model_lib.VARIANTS[config.model.variant].towers
  if config.strategy == 'towers' and config.mesh.model != towers:
    raise UserError(
        f'strategy=towers puts one tower on each device of the model axis, so'
        f' mesh.model must equal the {towers} tower(s) of'
        f' model.variant={config.model.variant}; got mesh.model='
        f'{config.mesh.model}. Use strategy=data with mesh.model=1 to keep'
        ' every tower on each device.')
  if config.strategy == 'data' and config.mesh.model != 1:
    raise UserError(f'strategy=data keeps every tower on each device, so'
                    f' mesh.model must be 1; got {config.mesh.model}.')
  data, model = parallel.mesh_shape(config, num_devices)
  if config.batch_size % data:
    raise UserError(
        f'batch_size={config.batch_size} does not divide over the {data}'
        f' device(s) of the data axis: use a multiple of {data}.')

  if workdir is not None:
    path = Path(workdir)
    if path.exists() and not path.is_dir():
      raise UserError(f'--workdir {path} is a file; give a directory (it is'
                      ' created if missing).')
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
      raise UserError(f'--workdir {path} lies under {existing}, which is a'
                      ' file; give a directory path.')
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
      raise UserError(f'--workdir {path} is not writable (checked {existing});'
                      ' choose a directory you can write to.')
  return data, model
