"""The jitted train and eval steps: JAX only.

Nothing here imports TensorFlow or reads data, so training, `describe`,
`benchmark`, `evaluate` and the tests compile exactly the step training runs.
"""

import jax
import jax.numpy as jnp
from flax import nnx
import optax

from alexnet_jax.core import model
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core.train_state import TrainState


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


def make_train_step(graphdef, opt: optim.OptimizerConfig, rules: parallel.Rules,
                    lr_fn, shardings: TrainState):
  """The jitted step: forward and backward over the towers, the update of Sec. 5."""
  tx = optim.optimizer(opt, lr_fn)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(
        jax.random.wrap_key_data(state.rng, impl=model.PRNG_IMPL), state.step)

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
        'learning_rate': optim.learning_rate(lr_fn, state.step, state.opt_state),
    }
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0, out_shardings=(shardings, None))


def make_eval_step(graphdef, rules: parallel.Rules):
  """Sums over one batch (masked), so padded examples never count."""

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


def eval_logits(graphdef, rules: parallel.Rules):
  """Jitted `(params, images) -> float32 logits`, dropout off (predict, ten-crop)."""
  return jax.jit(lambda params, images: nnx.merge(graphdef, params)(
      images, train=False, rules=rules))


def device_batch(batch: dict, mesh, rules: parallel.Rules) -> dict[str, jax.Array]:
  """This process's numpy batch -> global arrays split as the rules say."""
  sharding = parallel.batch_sharding(mesh, rules)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}
