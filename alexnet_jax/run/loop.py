"""Training and evaluation: the loop of Sec. 5, with its periodic actions.

`train_and_evaluate(settings, workdir)` is everything `main.py` runs after
its checks. The state and the jitted steps are core's (JAX only); this
module adds the data, the checkpoints, the metrics and the signals.
"""

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import tqdm

from alexnet_jax.core import model
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core import steps
from alexnet_jax.core import train_state
from alexnet_jax.data import pipeline
from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.run import metric_writer
from alexnet_jax.run import preemption
from alexnet_jax.run import rundir


class NonFiniteLoss(Exception):
  pass


def total_steps(settings, info: pipeline.DatasetInfo) -> int:
  if settings.run.num_train_steps > 0:
    return settings.run.num_train_steps
  return int(settings.run.num_epochs * pipeline.steps_per_epoch(settings.data, info))


def evaluate(settings, eval_step, params, mesh) -> dict[str, float]:
  """Loss, top-1 and top-5 of `params` over the eval split, centre patches
  (every process its shard): the evaluation the loop logs."""
  totals = None
  index, count = parallel.process_data_shard(mesh, settings.rules.batch)
  for batch in pipeline.eval_batches(
      settings.data, process_index=index, process_count=count):
    out = eval_step(params, steps.device_batch(batch, mesh, settings.rules))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  return steps.eval_means(totals)


def every(n: int, last: int):
  """A periodic action: due every `n` steps and at the last step."""
  return lambda step: step % n == 0 or step == last


class Throughput:
  """Images/s and the seconds each step waited for input, per log window.

  The first step after a start (the compile) and evaluations are left out.
  """

  def __init__(self, batch_size: int):
    self.batch_size = batch_size
    self.compiled = False
    self.restart()

  def restart(self) -> None:
    self.start, self.steps, self.waited = time.perf_counter(), 0, 0.0

  def next_batch(self, batches, mesh, rules):
    start = time.perf_counter()
    batch = steps.device_batch(next(batches), mesh, rules)
    self.waited += time.perf_counter() - start
    return batch

  def stepped(self, metrics) -> None:
    if not self.compiled:
      jax.block_until_ready(metrics)
      self.compiled = True
      self.restart()
    else:
      self.steps += 1

  def read(self) -> dict[str, float]:
    out = {}
    if self.steps:
      out = {'images_per_sec': self.steps * self.batch_size
                               / (time.perf_counter() - self.start),
             'input_wait_sec': self.waited / self.steps}
    self.restart()
    return out


def train_and_evaluate(settings, workdir: str) -> dict[str, Any]:
  """Trains, evaluates, checkpoints and logs to `workdir`; returns the summary.

  `settings` is a run.settings.Settings. Process 0 holds the workdir's lock
  for the whole run (rundir.py): a second run on the same workdir stops at
  once, naming this one.
  """
  workdir = rundir.check_path(workdir)
  if jax.process_index() != 0:
    return _train_and_evaluate(settings, workdir)
  rundir.check_outputs(workdir)
  with rundir.lock(workdir):
    return _train_and_evaluate(settings, workdir)


def _train_and_evaluate(settings, workdir: Path) -> dict[str, Any]:
  start_time = time.time()
  data, opt, rules, run = settings.data, settings.optimizer, settings.rules, settings.run
  mesh = parallel.make_mesh(settings.mesh)
  info = pipeline.dataset_info(data)
  if info.num_classes != settings.model.num_classes:
    raise UserError(
        f'The dataset {data.dataset!r} has {info.num_classes} classes but'
        f' model.num_classes={settings.model.num_classes}: pass'
        f' --config.model.num_classes={info.num_classes}.')
  num_steps = total_steps(settings, info)
  lr_fn = optim.learning_rate_fn(opt, pipeline.steps_per_epoch(data, info), num_steps)
  is_chief = jax.process_index() == 0

  # Restore before anything compiles: a foreign workdir is refused unharmed.
  ckpt = checkpoint.Checkpointer(workdir, run.keep_checkpoints)
  changes = rundir.check_resume(
      workdir, settings, latest_step=max(ckpt.steps(), default=None),
      num_steps=num_steps)
  for key, (before, after) in changes.items():
    _say(f'Resuming with {key}={after!r} (was {before!r}).')
  abstract = train_state.sharded_abstract_state(settings.model, opt, rules, mesh)
  signature = checkpoint.param_signature(abstract.params)
  restored = ckpt.restore_latest(abstract, signature)
  if restored is not None:
    graphdef, state = model.graphdef(settings.model), restored.state
    _say(f'Resumed from the checkpoint at step {restored.step} in {ckpt.directory}.')
  else:
    graphdef, state = train_state.create_train_state(
        settings.model, opt, settings.seed, rules, mesh)
  start_step = int(state.step)
  # The steps since the last logging step, as the checkpoint kept them: a
  # logged row averages steps (k - log_every_steps, k] wherever a run resumed.
  since_log = start_step % run.log_every_steps
  window = restored.window[len(restored.window) - since_log:] if (
      restored is not None and since_log) else []

  if is_chief:
    rundir.record_start(workdir, settings, start_step=start_step,
                        processes=jax.process_count())
    metric_writer.truncate(workdir, start_step)  # One history.
  writer = metric_writer.MetricWriter(workdir, enabled=is_chief)
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  train_step = steps.make_train_step(graphdef, opt, rules, lr_fn, shardings)
  eval_step = steps.make_eval_step(graphdef, rules)
  index, count = parallel.process_data_shard(mesh, rules.batch)
  batches = pipeline.train_batches(
      data, seed=settings.seed, start_step=start_step, process_index=index,
      process_count=count)
  log, run_eval, save = (every(n, num_steps) for n in (
      run.log_every_steps, run.eval_every_steps, run.checkpoint_every_steps))
  throughput = Throughput(data.batch_size)

  eval_metrics: dict[str, float] = {}
  status, step, stop = 'completed', start_step, False
  with jax.set_mesh(mesh), preemption.Stopper(say=_say) as stopper, tqdm.tqdm(
      total=num_steps, initial=start_step, desc='train', disable=not is_chief,
      dynamic_ncols=True, mininterval=1.0, file=sys.stderr) as bar:
    try:
      while step < num_steps and not stop:
        state, metrics = train_step(state, throughput.next_batch(batches, mesh, rules))
        step += 1
        throughput.stepped(metrics)
        window.append(metrics)
        if log(step):
          window = _log(step, jax.device_get(window), throughput, writer, bar)
        stop = stopper.agreed(due=log(step))
        if run_eval(step):
          eval_metrics = evaluate(settings, eval_step, state.params, mesh)
          writer.write(step, eval_metrics)
          state = _feed_plateau(opt, state, eval_metrics['eval_top1'])
          throughput.restart()  # Evaluation is not training time.
          _say(f'step {step}/{num_steps}: ' + ' '.join(
              f'{k} {v:.4f}' for k, v in eval_metrics.items()))
        if save(step) or stop:
          _check_finite(state, step)
          ckpt.save(step, state, signature, metrics={
              'eval_top1': eval_metrics['eval_top1']} if run_eval(step) else None,
                    window=_host_floats(window))
      if stop:
        status = stopper.status
      elif not eval_metrics:  # A finished workdir: report its evaluation again.
        eval_metrics = evaluate(settings, eval_step, state.params, mesh)
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
      'strategy': settings.strategy,
      'processes': jax.process_count(),
      **eval_metrics,
  }
  if is_chief:
    (workdir / rundir.SUMMARY).write_text(json.dumps(summary, indent=2))
  if status in ('preempted', 'interrupted'):
    raise preemption.Preempted(step, status)
  return summary


def _log(step: int, window: list[dict], throughput: Throughput, writer, bar) -> list:
  """Writes the window's mean scalars; stops at the first non-finite loss."""
  window = _host_floats(window)  # Restored rows are floats: sum alike.
  scalars = {k: math.fsum(m[k] for m in window) / len(window) for k in window[0]}
  writer.write(step, scalars | throughput.read())
  losses = [m['train_loss'] for m in window]
  bad = next((i for i, l in enumerate(losses) if not math.isfinite(l)), None)
  if bad is not None:
    raise NonFiniteLoss(step - len(losses) + 1 + bad)
  bar.set_postfix(loss=f'{scalars["train_loss"]:.3f}')
  bar.update(step - bar.n)  # A resumed first window holds restored steps too.
  return []


def _host_floats(window: list) -> list[dict[str, float]]:
  return [{k: float(v) for k, v in m.items()} for m in jax.device_get(window)]


def _feed_plateau(opt: optim.OptimizerConfig, state, eval_top1: float):
  """Sec. 5's plateau rule, told in words when it divides the rate."""
  scale = lambda s: float(optim.learning_rate(lambda _: 1.0, s.step, s.opt_state))
  before = scale(state)
  state = state.replace(opt_state=optim.plateau_update(opt, state.opt_state, eval_top1))
  after = scale(state)
  if after < before:
    decays = round(math.log(after) / math.log(opt.decay_factor))
    _say(f'Validation top-1 stopped improving: learning rate'
         f' x{opt.decay_factor} (decay {decays} of at most {opt.max_decays}).')
  return state


def _say(message: str) -> None:
  """One line on the console, above the progress bar."""
  if jax.process_index() == 0:
    tqdm.tqdm.write(message, file=sys.stderr)


def _check_finite(state: train_state.TrainState, step: int) -> None:
  """Never save a state the step refused to update (a NaN/Inf loss)."""
  if int(state.step) != step:
    raise NonFiniteLoss(int(state.step) + 1)
