"""The train state, the optimiser of Sec. 5 and the jitted steps: JAX only.

Nothing here imports TensorFlow or reads data, so `train`, `inspect`,
`benchmark`, `evaluate` and the tests compile exactly the step training runs.
The state is step, params, opt_state and rng; the paper's update rule is an
optax chain (`optimizer`), and where the arrays live comes from the
strategy's rules (parallel.py).
"""

from typing import Any

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import optax

from alexnet_jax import model as model_lib
from alexnet_jax import parallel

@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied = batches consumed.
  params: Any  # nnx.State of the network; towers on every leaf's leading axis.
  opt_state: Any  # `optimizer`'s state: Sec. 5's v, the plateau scale, counts.
  rng: jax.Array  # uint32 key data (checkpointable); folded with the step.


def model_config(config) -> model_lib.ModelConfig:
  """The network's settings, typed, from the run's ConfigDict."""
  return model_lib.ModelConfig(
      **config.model.to_dict(), image_size=config.image_size, dtype=config.dtype,
      conv_kernel_grad=config.conv_kernel_grad)


def create_model(config, seed: int | None = None) -> model_lib.AlexNet:
  """The network, initialised on the default device (no mesh)."""
  return model_lib.create(model_config(config),
                          seed=config.seed if seed is None else seed)


def model_graphdef(config) -> nnx.GraphDef:
  return nnx.graphdef(nnx.eval_shape(lambda: create_model(config)))


# --- The optimiser (Sec. 5) ----------------------------------------------------


def learning_rate_fn(config, steps_per_epoch: int, num_steps: int):
  """The rate by step; under 'plateau' it is constant and `plateau` scales it."""
  opt = config.optimizer
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


def _reduce_on_plateau(opt) -> optax.GradientTransformationExtraArgs:
  # Sec. 5: "divide the learning rate by 10 when the validation error rate
  # stopped improving", three times at most. Any decrease of the error counts
  # (atol is only there because optax needs a tolerance).
  return optax.contrib.reduce_on_plateau(
      factor=opt.decay_factor, patience=opt.plateau_patience, rtol=0.0,
      atol=1e-9, min_scale=opt.decay_factor ** opt.max_decays * (1 - 1e-6))


def _plateau(opt) -> optax.GradientTransformation:
  """Scales updates by the plateau factor; only `plateau_step` moves it."""
  inner = _reduce_on_plateau(opt)
  return optax.GradientTransformation(
      inner.init, lambda u, state, params=None: (optax.tree.scale(state.scale, u), state))


def _kernels(params):
  """Weight decay on kernels only, as Caffe does (the paper writes it for "w")."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: model_lib.path_names(path)[-1] == 'kernel', params)


def optimizer(config, lr_fn) -> optax.GradientTransformation:
  """Sec. 5: v <- 0.9 v - 0.0005 lr w - lr dL/dw;  w <- w + v.

  The rate scales the gradient before the momentum (as the paper writes it,
  not as optax.sgd does), so a decayed rate leaves v as it was. The chain's
  structure is the same for every schedule, so checkpoints are too.
  """
  opt = config.optimizer
  # A NaN/Inf loss applies nothing and leaves the state as it was (the loop
  # then stops). Checked on the loss, which every device already holds,
  # rather than on every gradient (optax.apply_if_finite), which would cost
  # a collective per parameter when they are sharded.
  return optax.transforms.conditionally_mask(optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=_kernels),  # dL/dw + 0.0005 w
      optax.scale_by_learning_rate(lr_fn),  # x -lr
      _plateau(opt),  # x the plateau scale
      optax.trace(decay=opt.momentum),  # v <- 0.9 v + that; the update is v
  ), lambda count, loss: jnp.isfinite(loss), forward_extra_args=True)


def _plateau_state(opt_state):
  return opt_state.inner_state[2]  # mask(chain(decay, lr, plateau, trace))


def learning_rate(config, lr_fn, state: TrainState) -> jax.Array:
  return lr_fn(state.step) * _plateau_state(state.opt_state).scale


def plateau_step(config, state: TrainState, eval_top1: float) -> TrainState:
  """Feeds one validation error to the plateau rule (host side, at eval time)."""
  if config.optimizer.schedule != 'plateau':
    return state
  inner = _reduce_on_plateau(config.optimizer)
  old = _plateau_state(state.opt_state)
  _, new = inner.update({}, old, value=jnp.asarray(1.0 - eval_top1, jnp.float32))
  new = jax.tree.map(lambda x, o: jax.device_put(x, o.sharding), new, old)
  chain = state.opt_state.inner_state
  return state.replace(opt_state=state.opt_state._replace(
      inner_state=(*chain[:2], new, *chain[3:])))


# --- The state, created already sharded ---------------------------------------


def initial_state(config) -> TrainState:
  """The state before step 1 (traced by `abstract_state` and `create_train_state`)."""
  params = nnx.state(create_model(config), nnx.Param)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=optimizer(config, learning_rate_fn(config, 1, 1)).init(params),
      rng=jax.random.key_data(model_lib.prng_key(config.seed + 1)),
  )


def abstract_state(config) -> TrainState:
  """Shapes and dtypes of the state, without computing anything."""
  return jax.eval_shape(lambda: initial_state(config))


def state_shardings(config, state: TrainState, mesh) -> TrainState:
  """Parameters as the strategy's rules say, the optimiser's copies alike."""
  params = parallel.param_shardings(
      model_lib.param_axes(state.params), parallel.rules(config), mesh)
  replicated = parallel.replicated(mesh)
  tx = optimizer(config, learning_rate_fn(config, 1, 1))
  return TrainState(
      step=replicated, params=params,
      opt_state=optax.tree_map_params(
          tx, lambda _, s: s, state.opt_state, params,
          transform_non_params=lambda _: replicated),
      rng=replicated)


def sharded_abstract_state(config, mesh) -> TrainState:
  """The abstract state with its shardings: what a restore or a compile needs."""
  abstract = abstract_state(config)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract, state_shardings(config, abstract, mesh))


def create_train_state(config, mesh) -> tuple[nnx.GraphDef, TrainState]:
  """Builds the state already sharded: no device ever holds more than its part."""
  shardings = state_shardings(config, abstract_state(config), mesh)
  init = jax.jit(lambda: initial_state(config), out_shardings=shardings)
  with jax.set_mesh(mesh):
    return model_graphdef(config), init()


# --- The steps ------------------------------------------------------------------


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy over all classes (both towers' logits)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits (Sec. 6: top-1, top-5)."""
  k = min(k, logits.shape[-1])
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  return (jnp.sum(logits > label_logit, axis=-1) < k).astype(jnp.float32)


def normalize(batch: dict[str, jax.Array]) -> jax.Array:
  """The network's input: the pipeline's uint8 pixels p as (p + offset) * scale.

  Each image carries its (3,) `pixel_offset` (Sec. 4.1's colour shift minus
  the mean pixel of Sec. 2) and `pixel_scale` (1 / stddev, or 1), so uint8
  batches (4x fewer bytes than float32) cross to the device and are
  normalised here. A float image (synthetic batches) is the input as it is.
  """
  image = batch['image']
  if image.dtype != jnp.uint8:
    return image
  per_image = lambda v: v.reshape(v.shape[:1] + (1,) * (image.ndim - 2) + (3,))
  return ((image.astype(jnp.float32) + per_image(batch['pixel_offset']))
          * per_image(batch['pixel_scale']))


def make_train_step(config, graphdef, lr_fn, shardings: TrainState):
  """The jitted step: forward and backward over the towers, the update of Sec. 5."""
  tx = optimizer(config, lr_fn)
  rules = parallel.rules(config)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(
        jax.random.wrap_key_data(state.rng, impl=model_lib.PRNG_IMPL), state.step)

    def loss_fn(params):
      logits = nnx.merge(graphdef, params)(normalize(batch), train=True, rng=rng,
                                           rules=rules)
      return jnp.mean(cross_entropy(logits, batch['label'])), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, loss=loss)
    new_state = state.replace(
        # A NaN/Inf loss applied nothing; the loop stops on it.
        step=state.step + jnp.isfinite(loss).astype(jnp.int32),
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state)
    metrics = {
        'train_loss': loss,
        'train_top1': jnp.mean(top_k_correct(logits, batch['label'], 1)),
        'learning_rate': learning_rate(config, lr_fn, state),
    }
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0, out_shardings=(shardings, None))


def make_eval_step(config, graphdef):
  """Sums over one batch (masked), so padded examples never count."""
  rules = parallel.rules(config)

  def eval_step(params, batch):
    logits = nnx.merge(graphdef, params)(normalize(batch), train=False, rules=rules)
    mask = batch['mask']
    return {
        'loss': jnp.sum(cross_entropy(logits, batch['label']) * mask),
        'top1': jnp.sum(top_k_correct(logits, batch['label'], 1) * mask),
        'top5': jnp.sum(top_k_correct(logits, batch['label'], 5) * mask),
        'count': jnp.sum(mask),
    }

  return jax.jit(eval_step)


def eval_means(totals: dict) -> dict[str, float]:
  """Summed eval_step outputs (over all batches) -> per-example means."""
  totals = jax.device_get(totals)
  count = max(float(totals['count']), 1.0)
  return {f'eval_{k}': float(totals[k]) / count for k in ('loss', 'top1', 'top5')}


def eval_logits(config, graphdef):
  """Jitted `(params, images) -> float32 logits`, dropout off (predict, ten-crop)."""
  rules = parallel.rules(config)
  return jax.jit(lambda params, images: nnx.merge(graphdef, params)(
      images, train=False, rules=rules))


def device_batch(batch: dict, mesh, config) -> dict[str, jax.Array]:
  """This process's numpy batch -> global arrays split as the rules say."""
  sharding = parallel.batch_sharding(mesh, parallel.rules(config))
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}
