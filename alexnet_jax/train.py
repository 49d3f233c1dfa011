"""Training and evaluation: the sharded state, one jitted step, the loop.

`train_and_evaluate(config, workdir)` is everything `main.py` runs. The step
is one `jax.jit` over the whole network; the towers' split lives in the
model (parallel.py), so nothing here is per layer.
"""

import dataclasses
import json
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import optax
import tqdm

from alexnet_jax import checkpoint
from alexnet_jax import input_pipeline
from alexnet_jax import metric_writer
from alexnet_jax import model as model_lib
from alexnet_jax import parallel
from alexnet_jax.errors import UserError

# Exit status of a run stopped by SIGTERM after saving (EX_TEMPFAIL: run the
# same command again to resume).
PREEMPTED_EXIT_CODE = 75


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: optimiser steps taken = batches consumed.
  params: Any  # nnx.State of the model's parameters, towers on `model`.
  momentum: Any  # Sec. 5's v, same structure and sharding as params.
  rng: jax.Array  # uint32 key data (checkpointable); folded with the step.
  # The plateau rule (Sec. 5), kept in the state so it resumes too.
  lr_scale: jax.Array  # float32: product of the decays so far.
  best_eval_top1: jax.Array  # float32
  evals_since_best: jax.Array  # int32
  num_decays: jax.Array  # int32


class NonFiniteLoss(Exception):
  pass


class Preempted(Exception):
  pass


def total_steps(config, info: input_pipeline.DatasetInfo) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  return int(config.num_epochs * input_pipeline.steps_per_epoch(config, info))


def learning_rate_fn(config, steps_per_epoch: int, num_steps: int):
  """The schedule by step; 'plateau' is constant here, scaled by the state."""
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
  raise UserError(f'Unknown optimizer.schedule {opt.schedule!r}.')


def _is_kernel(path) -> bool:
  return str(getattr(path[-1], 'key', path[-1])) == 'kernel'


def initial_state(config) -> TrainState:
  """The state before step 1 (traced by `abstract_state` and `create_train_state`)."""
  params = nnx.state(model_lib.create(config), nnx.Param)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      momentum=jax.tree.map(jnp.zeros_like, params),
      rng=jax.random.key_data(model_lib.prng_key(config.seed + 1)),
      lr_scale=jnp.ones((), jnp.float32),
      best_eval_top1=jnp.full((), -1.0, jnp.float32),
      evals_since_best=jnp.zeros((), jnp.int32),
      num_decays=jnp.zeros((), jnp.int32),
  )


def abstract_state(config) -> TrainState:
  """Shapes and dtypes of the state, without computing anything."""
  return jax.eval_shape(lambda: initial_state(config))


def create_train_state(config, mesh) -> tuple[nnx.GraphDef, TrainState]:
  """Builds the state already sharded: no device ever holds more than its part."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: model_lib.create(config)))
  shardings = state_shardings(abstract_state(config), mesh)
  init = jax.jit(lambda: initial_state(config), out_shardings=shardings)
  with jax.set_mesh(mesh):
    return graphdef, init()


def state_shardings(state: TrainState, mesh) -> TrainState:
  """Parameters and momentum by tower on `model`; scalars replicated."""
  tower = parallel.param_sharding(mesh)
  rep = parallel.replicated(mesh)
  return TrainState(
      step=rep, params=jax.tree.map(lambda _: tower, state.params),
      momentum=jax.tree.map(lambda _: tower, state.momentum), rng=rep,
      lr_scale=rep, best_eval_top1=rep, evals_since_best=rep, num_decays=rep)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy over all classes (both towers' logits)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits (Sec. 6: top-1, top-5)."""
  k = min(k, logits.shape[-1])
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  return (jnp.sum(logits > label_logit, axis=-1) < k).astype(jnp.float32)


def make_train_step(config, graphdef, lr_fn, shardings: TrainState):
  """The jitted step: forward and backward over both towers, SGD update."""
  opt = config.optimizer

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=model_lib.PRNG_IMPL), state.step)

    def loss_fn(params):
      model = nnx.merge(graphdef, params)
      logits = model(batch['image'], train=True, rng=rng)
      return jnp.mean(cross_entropy(logits, batch['label'])), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    lr = lr_fn(state.step) * state.lr_scale
    # Sec. 5: v <- 0.9 v - 0.0005 lr w - lr dL/dw; w <- w + v. Weight decay on
    # kernels only, as Caffe does (the paper writes it for "w").
    momentum = jax.tree_util.tree_map_with_path(
        lambda path, v, g, w: opt.momentum * v - lr * (
            g + (opt.weight_decay * w if _is_kernel(path) else 0.0)),
        state.momentum, grads, state.params)
    params = jax.tree.map(jnp.add, state.params, momentum)
    # A non-finite loss leaves the state as it was; the loop stops on it.
    finite = jnp.isfinite(loss)
    keep = lambda new, old: jax.tree.map(
        lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + finite.astype(jnp.int32),
        params=keep(params, state.params),
        momentum=keep(momentum, state.momentum))
    metrics = {
        'train_loss': loss,
        'train_top1': jnp.mean(top_k_correct(logits, batch['label'], 1)),
        'learning_rate': lr,
    }
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0,
                 out_shardings=(shardings, None))


def make_eval_step(graphdef):
  """Sums over one batch (masked), so padded examples never count."""

  def eval_step(params, batch):
    logits = nnx.merge(graphdef, params)(batch['image'], train=False)
    mask = batch['mask']
    return {
        'loss': jnp.sum(cross_entropy(logits, batch['label']) * mask),
        'top1': jnp.sum(top_k_correct(logits, batch['label'], 1) * mask),
        'top5': jnp.sum(top_k_correct(logits, batch['label'], 5) * mask),
        'count': jnp.sum(mask),
    }

  return jax.jit(eval_step)


def evaluate(config, eval_step, params, mesh) -> dict[str, float]:
  totals = None
  index, count = parallel.process_data_shard(mesh)
  for batch in input_pipeline.eval_batches(
      config, process_index=index, process_count=count):
    out = eval_step(params, device_batch(batch, mesh))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  count = max(float(totals['count']), 1.0)
  return {'eval_loss': float(totals['loss']) / count,
          'eval_top1': float(totals['top1']) / count,
          'eval_top5': float(totals['top5']) / count}


def device_batch(batch: dict, mesh) -> dict[str, jax.Array]:
  """This process's numpy batch -> global arrays split over `data`."""
  sharding = parallel.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


def plateau_update(config, state: TrainState, eval_top1: float) -> TrainState:
  """Sec. 5: divide the rate by 10 when validation error stops improving."""
  opt = config.optimizer
  best = float(state.best_eval_top1)
  since = 0 if eval_top1 > best else int(state.evals_since_best) + 1
  scale, decays = float(state.lr_scale), int(state.num_decays)
  if (opt.schedule == 'plateau' and since >= opt.plateau_patience
      and decays < opt.max_decays):
    scale, decays, since = scale * opt.decay_factor, decays + 1, 0
    _say(f'Validation top-1 stopped improving: learning rate x{opt.decay_factor}'
         f' (decay {decays} of at most {opt.max_decays}).')
  rep = state.lr_scale.sharding
  put = lambda x, dtype: jax.device_put(jnp.asarray(x, dtype), rep)
  return state.replace(
      lr_scale=put(scale, jnp.float32),
      best_eval_top1=put(max(best, eval_top1), jnp.float32),
      evals_since_best=put(since, jnp.int32), num_decays=put(decays, jnp.int32))


@dataclasses.dataclass
class _Stopper:
  """Turns SIGTERM (what schedulers send) into a save at the next step."""
  requested: bool = False

  def __enter__(self):
    self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._old)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains, evaluates, checkpoints and logs to `workdir`; returns the summary."""
  workdir = Path(workdir)
  start_time = time.time()
  mesh = parallel.make_mesh(config)
  info = input_pipeline.dataset_info(config)
  if info.num_classes != config.model.num_classes:
    raise UserError(
        f'The dataset {config.dataset!r} has {info.num_classes} classes but'
        f' model.num_classes={config.model.num_classes}: pass'
        f' --config.model.num_classes={info.num_classes}.')
  num_steps = total_steps(config, info)
  steps_per_epoch = input_pipeline.steps_per_epoch(config, info)
  lr_fn = learning_rate_fn(config, steps_per_epoch, num_steps)
  is_chief = jax.process_index() == 0

  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  signature = checkpoint.param_signature(abstract_state(config).params)
  ckpt.check_compatible(signature)  # Before anything compiles.

  graphdef, state = create_train_state(config, mesh)
  shardings = jax.tree.map(lambda x: x.sharding, state)
  restored = ckpt.restore_latest(jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      state, shardings))
  if restored is not None:
    state = restored.state
    _say(f'Resumed from the checkpoint at step {restored.step}'
         f' in {ckpt.directory}.')
  start_step = int(state.step)

  if is_chief:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  writer = metric_writer.MetricWriter(workdir, enabled=is_chief)
  train_step = make_train_step(config, graphdef, lr_fn, shardings)
  eval_step = make_eval_step(graphdef)
  index, count = parallel.process_data_shard(mesh)
  batches = input_pipeline.train_batches(
      config, start_step=start_step, process_index=index, process_count=count)

  eval_metrics: dict[str, float] = {}
  status = 'completed'
  step = start_step
  with jax.set_mesh(mesh), _Stopper() as stopper:
    bar = tqdm.tqdm(total=num_steps, initial=start_step, desc='train',
                    disable=not is_chief, dynamic_ncols=True, mininterval=1.0,
                    file=sys.stderr)
    window, timed, window_start = [], 0, time.time()
    try:
      while step < num_steps:
        state, metrics = train_step(state, device_batch(next(batches), mesh))
        window.append(metrics)
        step += 1
        if step == start_step + 1:
          # Leave compilation out of images/s.
          jax.block_until_ready(metrics)
          timed, window_start = 0, time.time()
        else:
          timed += 1
        if step % config.log_every_steps == 0 or step == num_steps:
          logged = jax.device_get(window)
          elapsed = time.time() - window_start
          scalars = {k: sum(m[k] for m in logged) / len(logged) for k in logged[0]}
          if timed:
            scalars['images_per_sec'] = timed * config.batch_size / elapsed
          writer.write(step, scalars)
          losses = [m['train_loss'] for m in logged]
          if not all(math.isfinite(l) for l in losses):
            raise NonFiniteLoss(step - len(losses) + 1 + next(
                i for i, l in enumerate(losses) if not math.isfinite(l)))
          bar.set_postfix(loss=f'{scalars["train_loss"]:.3f}',
                          img_s=f'{scalars.get("images_per_sec", 0):.0f}')
          bar.update(len(logged))
          window, timed, window_start = [], 0, time.time()
        is_eval = step % config.eval_every_steps == 0 or step == num_steps
        if is_eval:
          eval_metrics = evaluate(config, eval_step, state.params, mesh)
          writer.write(step, eval_metrics)
          state = plateau_update(config, state, eval_metrics['eval_top1'])
          window_start = time.time()  # Evaluation is not training time.
          _say(
              f'step {step}/{num_steps}: eval_loss {eval_metrics["eval_loss"]:.4f}'
              f' eval_top1 {eval_metrics["eval_top1"]:.4f}'
              f' eval_top5 {eval_metrics["eval_top5"]:.4f}')
        if (step % config.checkpoint_every_steps == 0 or step == num_steps
            or stopper.requested):
          _check_finite(state, step)
          ckpt.save(step, state, signature,
                    metrics={'eval_top1': eval_metrics['eval_top1']}
                    if is_eval else None)
        if stopper.requested:
          status = 'preempted'
          break
      if not eval_metrics and status == 'completed':
        # Started on a finished workdir: report its evaluation again.
        eval_metrics = evaluate(config, eval_step, state.params, mesh)
    except NonFiniteLoss as e:
      status = 'non_finite_loss'
      kept = ckpt.steps()
      raise UserError(
          f'The training loss became NaN or Inf at step {e.args[0]}; the run'
          f' stopped without saving it. Checkpoints in {ckpt.directory} are'
          f' intact (latest step: {kept[-1] if kept else "none"}). Lower'
          ' optimizer.learning_rate, or check the data, then run again.'
      ) from None
    finally:
      bar.close()
      writer.close()
      ckpt.close()
      if status != 'completed':
        logging.warning('Run ended: %s at step %d.', status, step)

  summary = {
      'status': status,
      'steps': step,
      'num_train_steps': num_steps,
      'resumed_from_step': start_step if restored is not None else None,
      'wall_seconds': time.time() - start_time,
      'devices': [str(d) for d in mesh.devices.flat],
      'mesh': dict(mesh.shape),
      'processes': jax.process_count(),
      **eval_metrics,
  }
  if is_chief:
    (workdir / 'summary.json').write_text(json.dumps(summary, indent=2))
  if status == 'preempted':
    raise Preempted(step)
  return summary


def _say(message: str) -> None:
  """One line on the console, above the progress bar."""
  if jax.process_index() == 0:
    tqdm.tqdm.write(message, file=sys.stderr)


def _check_finite(state: TrainState, step: int) -> None:
  """Never save a state the step refused to update (a NaN/Inf loss)."""
  if int(state.step) != step:
    raise NonFiniteLoss(int(state.step) + 1)
