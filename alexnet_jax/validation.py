"""Config checks that run before anything compiles; each failure is one paragraph.

Unknown keys and wrong types on the command line are caught while the flags
are parsed (`explain_flag_error`); everything else is `validate`.
"""

import difflib
import os
from pathlib import Path

import dataclasses

from alexnet_jax import model as model_lib
from alexnet_jax import parallel
from alexnet_jax import step
from alexnet_jax.errors import UserError

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
  validate_model(config)
  data, model = parallel.mesh_shape(config, num_devices)
  validate_rules(config, {parallel.DATA: data, parallel.MODEL: model})
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


def validate_model(config) -> None:
  """Model settings a user can get wrong, checked before anything compiles."""
  m = config.model
  if m.variant not in model_lib.NETWORKS:
    raise UserError(f'Unknown model.variant {m.variant!r}; choose one of '
                    f'{", ".join(model_lib.NETWORKS)}.')
  towers = model_lib.NETWORKS[m.variant].towers
  if m.num_classes < 1 or m.num_classes % towers:
    raise UserError(
        f'model.num_classes={m.num_classes} must be a positive multiple of'
        f' {towers}: each of the {towers} towers computes an equal share of'
        ' the logits in its last layer.')
  if m.activation not in model_lib.ACTIVATIONS:
    raise UserError(f'Unknown model.activation {m.activation!r}; choose one of'
                    f' {", ".join(model_lib.ACTIVATIONS)}.')
  if m.lrn_convention not in ('paper', 'caffe'):
    raise UserError(f"model.lrn_convention must be 'paper' or 'caffe', got"
                    f' {m.lrn_convention!r}.')
  if m.init not in ('paper', 'he'):
    raise UserError(f"model.init must be 'paper' or 'he', got {m.init!r}.")
  if not 0.0 <= m.dropout_rate < 1.0:
    raise UserError(f'model.dropout_rate must be in [0, 1), got {m.dropout_rate}.')
  if not m.width > 0:
    raise UserError(f'model.width must be positive, got {m.width}.')
  if config.dtype not in model_lib.DTYPES:
    raise UserError(f'Unknown dtype {config.dtype!r}; choose one of'
                    f' {", ".join(model_lib.DTYPES)}.')
  if config.conv_kernel_grad not in model_lib.CONV_KERNEL_GRADS:
    raise UserError(f'Unknown conv_kernel_grad {config.conv_kernel_grad!r};'
                    f' choose one of {", ".join(model_lib.CONV_KERNEL_GRADS)}.')
  cfg = step.model_config(config)
  if not fits(cfg):
    raise UserError(
        f'image_size={config.image_size} is too small for the {m.variant}'
        f' network (overlapping_pool={m.overlapping_pool}): the feature maps'
        ' shrink to nothing before the fully connected layers. The smallest'
        f' image size that works is {smallest_image_size(cfg)}; the'
        ' paper uses 227.')


def validate_rules(config, mesh: dict[str, int]) -> parallel.Rules:
  """The strategy's rules against the mesh and the network; returns them."""
  if config.sharding_rules:
    try:
      rules = parallel.parse_rules(config.sharding_rules)
    except ValueError as e:
      raise UserError(
          f'sharding_rules={config.sharding_rules!r}: {e}. Give one'
          f' logical=mesh_axis pair per logical axis'
          f' ({", ".join(parallel.LOGICAL_AXES)}), an empty mesh axis for'
          ' "not split", e.g. sharding_rules="batch=data,tower=model,'
          'fc_batch=data,fc_units=,fc_in=".') from None
    source = f'sharding_rules={config.sharding_rules!r}'
  elif config.strategy not in parallel.STRATEGIES:
    raise UserError(f'Unknown strategy {config.strategy!r}; choose one of'
                    f' {", ".join(parallel.STRATEGIES)}, or give your own'
                    ' table as --config.sharding_rules.')
  else:
    rules, source = parallel.STRATEGIES[config.strategy], f'strategy={config.strategy}'
  for logical, axis in dataclasses.asdict(rules).items():
    if axis is not None and axis not in mesh:
      raise UserError(
          f'{source} maps {logical} to the mesh axis {axis!r}, which does not'
          f' exist; the mesh axes are {", ".join(mesh)}.')
  for axis, size in mesh.items():
    if size > 1 and axis not in dataclasses.astuple(rules):
      raise UserError(
          f'The mesh puts {size} devices on {axis!r} but {source} splits'
          f' nothing over it. Pass --config.mesh.{axis}=1, or a strategy that'
          f' uses it (strategy=towers splits the towers over model).')
  net = model_lib.NETWORKS[config.model.variant]
  if rules.tower and mesh[rules.tower] != net.towers:
    raise UserError(
        f'{source} puts one tower on each device of the {rules.tower} axis, so'
        f' mesh.{rules.tower} must equal the {net.towers} tower(s) of'
        f' model.variant={config.model.variant}; got mesh.{rules.tower}='
        f'{mesh[rules.tower]}. Use strategy=data with mesh.model=1 to keep'
        ' every tower on each device.')
  for logical in ('batch', 'fc_batch'):
    n = mesh.get(getattr(rules, logical), 1)
    if config.batch_size % n:
      raise UserError(
          f'batch_size={config.batch_size} does not divide over the {n}'
          f' device(s) of the {getattr(rules, logical)} axis: use a multiple of {n}.')
  cfg = step.model_config(config)
  for logical in ('fc_units', 'fc_in'):
    n = mesh.get(getattr(rules, logical), 1)
    dense = [l for l in net.layers if l.dense]
    sizes = {l.name: cfg.features(l) for l in dense} if logical == 'fc_units' else {
        name: shape[-1] for name, shape in model_lib.input_shapes(cfg).items()
        if name in {l.name for l in dense}}
    bad = {k: v for k, v in sizes.items() if v % n}
    if bad:
      name, size = next(iter(bad.items()))
      raise UserError(
          f'{source} splits {logical} over the {n} devices of'
          f' {getattr(rules, logical)!r}, but {name} has {size} per tower, which'
          f' does not divide by {n}. Change model.width or model.num_classes,'
          ' or the mesh.')
  return rules


def fits(cfg: model_lib.ModelConfig) -> bool:
  """Whether the image survives every layer with at least one pixel."""
  try:
    return all(min(s) >= 1 for s in model_lib.layer_shapes(cfg).values())
  except (TypeError, ValueError):  # A negative size fails inside the trace.
    return False


def smallest_image_size(cfg: model_lib.ModelConfig) -> int:
  """The smallest image the network accepts (binary search over traces)."""
  lo, hi = 1, 4096
  while lo < hi:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if fits(dataclasses.replace(cfg, image_size=mid)) else (mid + 1, hi)
  return lo
