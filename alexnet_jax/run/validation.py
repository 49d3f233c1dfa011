"""Config checks that run before anything compiles; each failure is one paragraph.

Unknown keys and wrong types on the command line are caught while the flags
are parsed (cli.py), an unknown strategy while the config is resolved
(settings.py); everything else is `validate`, against the devices there are.
"""

import dataclasses
import os
from pathlib import Path

from alexnet_jax.core import convolution
from alexnet_jax.core import layers
from alexnet_jax.core import model
from alexnet_jax.core import network
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.errors import UserError


def _positive(values: dict) -> None:
  for name, value in values.items():
    if not value > 0:
      raise UserError(f'{name} must be positive, got {value!r}.')


def validate(settings, *, num_devices: int,
             workdir: str | None = None) -> tuple[int, int]:
  """Raises UserError for anything wrong in `settings` (run.settings.Settings);
  returns the (data, model) mesh shape."""
  run, opt = settings.run, settings.optimizer
  _positive({'batch_size': settings.data.batch_size,
             'optimizer.learning_rate': opt.learning_rate,
             'eval_every_steps': run.eval_every_steps,
             'checkpoint_every_steps': run.checkpoint_every_steps,
             'log_every_steps': run.log_every_steps,
             'keep_checkpoints': run.keep_checkpoints,
             'image_size': settings.model.image_size})
  if run.num_train_steps == 0 or run.num_train_steps < -1:
    raise UserError(
        f'num_train_steps must be positive (or -1 to train for num_epochs), got'
        f' {run.num_train_steps}.')
  if run.num_train_steps == -1:
    _positive({'num_epochs': run.num_epochs})
  if not 0 <= opt.momentum < 1:
    raise UserError(f'optimizer.momentum must be in [0, 1), got {opt.momentum}.')
  if opt.weight_decay < 0:
    raise UserError(f'optimizer.weight_decay must be >= 0, got {opt.weight_decay}.')
  if opt.schedule not in optim.SCHEDULES:
    raise UserError(f'Unknown optimizer.schedule {opt.schedule!r};'
                    f' choose one of {", ".join(optim.SCHEDULES)}.')
  validate_model(settings.model)
  data, model_axis = parallel.mesh_shape(settings.mesh, num_devices)
  validate_rules(settings, {parallel.DATA: data, parallel.MODEL: model_axis})
  if workdir is not None:
    _check_workdir(Path(workdir))
  return data, model_axis


def _check_workdir(path: Path) -> None:
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


def validate_model(cfg: network.ModelConfig) -> None:
  """Model settings a user can get wrong, checked before anything compiles."""
  # Settings with a fixed set of values: (config key, attribute, the values).
  choices = [('model.variant', 'variant', network.NETWORKS),
             ('model.activation', 'activation', network.ACTIVATIONS),
             ('model.lrn_convention', 'lrn_convention', network.LRN_CONVENTIONS),
             ('model.init', 'init', network.INITS),
             ('dtype', 'dtype', network.DTYPES),
             ('conv_kernel_grad', 'conv_kernel_grad', convolution.CONV_KERNEL_GRADS),
             ('model.lrn_sum', 'lrn_sum', layers.LRN_SUMS),
             ('model.pool_grad', 'pool_grad', layers.POOL_GRADS),
             ('model.tower_conv', 'tower_conv', network.TOWER_CONVS)]
  forms = ('model.lrn_sum', 'model.pool_grad', 'model.tower_conv', 'conv_kernel_grad')
  for key, name, known in choices:
    value = getattr(cfg, name)
    if value not in known:
      raise UserError(
          f'Unknown {key} {value!r}; choose one of {", ".join(known)}.'
          + (' Every choice computes the same outputs and gradients; only the'
             ' speed differs.' if key in forms else ''))
  if cfg.num_classes < 1:
    raise UserError(f'model.num_classes must be positive, got {cfg.num_classes}.')
  if not 0.0 <= cfg.dropout_rate < 1.0:
    raise UserError(f'model.dropout_rate must be in [0, 1), got {cfg.dropout_rate}.')
  if not cfg.width > 0:
    raise UserError(f'model.width must be positive, got {cfg.width}.')
  if not fits(cfg):
    raise UserError(
        f'image_size={cfg.image_size} is too small for the {cfg.variant}'
        f' network (overlapping_pool={cfg.overlapping_pool}): the feature maps'
        ' shrink to nothing before the fully connected layers. The smallest'
        f' image size that works is {smallest_image_size(cfg)}; the'
        ' paper uses 227.')


def validate_rules(settings, mesh: dict[str, int]) -> parallel.Rules:
  """The strategy's rules against the mesh and the network; returns them."""
  rules, source = settings.rules, settings.rules_source
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
  cfg = settings.model
  net = cfg.network
  if rules.tower and mesh[rules.tower] != net.towers:
    raise UserError(
        f'{source} puts one tower on each device of the {rules.tower} axis, so'
        f' mesh.{rules.tower} must equal the {net.towers} tower(s) of'
        f' model.variant={cfg.variant}; got mesh.{rules.tower}='
        f'{mesh[rules.tower]}. Use strategy=data with mesh.model=1 to keep'
        ' every tower on each device.')
  for logical in ('batch', 'fc_batch'):
    n = mesh.get(getattr(rules, logical), 1)
    if settings.data.batch_size % n:
      raise UserError(
          f'batch_size={settings.data.batch_size} does not divide over the {n}'
          f' device(s) of the {getattr(rules, logical)} axis: use a multiple of {n}.')
  # fc units or inputs that do not divide over their devices are stored
  # whole and padded where computed (parallel.Towers.unit_share): no check.
  return rules


def fits(cfg: network.ModelConfig) -> bool:
  """Whether the image survives every layer with at least one pixel."""
  try:
    return all(min(s) >= 1 for s in model.layer_shapes(cfg).values())
  except (TypeError, ValueError):  # A negative size fails inside the trace.
    return False


def smallest_image_size(cfg: network.ModelConfig) -> int:
  """The smallest image the network accepts (binary search over traces)."""
  lo, hi = 1, 4096
  while lo < hi:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if fits(dataclasses.replace(cfg, image_size=mid)) else (mid + 1, hi)
  return lo
