"""Sec. 5's update rule as an optax chain, and its learning-rate schedules.

    v <- 0.9 v - 0.0005 lr w - lr dL/dw;  w <- w + v

The rate scales the gradient before the momentum (as the paper writes it,
not as optax.sgd does), so a decayed rate leaves v as it was. Sec. 5's
schedule divides the rate by 10 when the validation error stops improving
(`plateau`); `step`, `cosine` and `constant` are there for ablations.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from alexnet_jax.core import model

SCHEDULES = ('plateau', 'step', 'cosine', 'constant')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """configs/default.py: `optimizer.*`."""
  learning_rate: float
  momentum: float
  weight_decay: float
  schedule: str  # One of SCHEDULES.
  decay_factor: float
  max_decays: int  # plateau: at most this many divisions.
  plateau_patience: int  # plateau: evaluations without improvement.
  step_every_epochs: float  # step: divide every this many epochs.
  warmup_epochs: float  # cosine: linear warm-up.


def learning_rate_fn(opt: OptimizerConfig, steps_per_epoch: int, num_steps: int):
  """The rate by step; under 'plateau' it is constant and the plateau scales it."""
  if opt.schedule in ('plateau', 'constant'):
    return lambda step: jnp.asarray(opt.learning_rate, jnp.float32)
  if opt.schedule == 'step':
    every = max(1, int(opt.step_every_epochs * steps_per_epoch))
    return lambda step: opt.learning_rate * opt.decay_factor ** (step // every)
  if opt.schedule == 'cosine':
    warmup = int(opt.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(
        0.0, opt.learning_rate, warmup, max(num_steps, warmup + 1))
  raise ValueError(f'Unknown optimizer.schedule {opt.schedule!r}.')


def _reduce_on_plateau(opt: OptimizerConfig) -> optax.GradientTransformationExtraArgs:
  # Sec. 5: "divide the learning rate by 10 when the validation error rate
  # stopped improving", three times at most. Any decrease of the error counts
  # (atol is only there because optax needs a tolerance).
  return optax.contrib.reduce_on_plateau(
      factor=opt.decay_factor, patience=opt.plateau_patience, rtol=0.0,
      atol=1e-9, min_scale=opt.decay_factor ** opt.max_decays * (1 - 1e-6))


def _scale_by_plateau(opt: OptimizerConfig) -> optax.GradientTransformation:
  """Scales updates by the plateau factor; only `plateau_update` moves it."""
  inner = _reduce_on_plateau(opt)
  return optax.GradientTransformation(
      inner.init, lambda u, state, params=None: (optax.tree.scale(state.scale, u), state))


def _kernels(params):
  """Weight decay on kernels only, as Caffe does (the paper writes it for "w")."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: model.path_names(path)[-1] == 'kernel', params)


def optimizer(opt: OptimizerConfig, lr_fn) -> optax.GradientTransformation:
  """Sec. 5's chain. Its structure is the same for every schedule, so the
  checkpoints are too."""
  # A NaN/Inf loss applies nothing and leaves the state as it was (the loop
  # then stops). Checked on the loss, which every device already holds,
  # rather than on every gradient (optax.apply_if_finite), which would cost
  # a collective per parameter when they are sharded.
  return optax.transforms.conditionally_mask(optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=_kernels),  # dL/dw + 0.0005 w
      optax.scale_by_learning_rate(lr_fn),  # x -lr
      _scale_by_plateau(opt),  # x the plateau scale
      optax.trace(decay=opt.momentum),  # v <- 0.9 v + that; the update is v
  ), lambda count, loss: jnp.isfinite(loss), forward_extra_args=True)


def _plateau_state(opt_state):
  return opt_state.inner_state[2]  # mask(chain(decay, lr, plateau, trace))


def learning_rate(lr_fn, step: jax.Array, opt_state) -> jax.Array:
  """The rate the update at `step` applies: the schedule's, times the plateau scale."""
  return lr_fn(step) * _plateau_state(opt_state).scale


def plateau_update(opt: OptimizerConfig, opt_state, eval_top1: float):
  """Feeds one validation error to the plateau rule (host side, at eval time);
  returns the new optimiser state (unchanged unless the schedule is 'plateau')."""
  if opt.schedule != 'plateau':
    return opt_state
  old = _plateau_state(opt_state)
  _, new = _reduce_on_plateau(opt).update(
      {}, old, value=jnp.asarray(1.0 - eval_top1, jnp.float32))
  new = jax.tree.map(lambda x, o: jax.device_put(x, o.sharding), new, old)
  chain = opt_state.inner_state
  return opt_state._replace(inner_state=(*chain[:2], new, *chain[3:]))
