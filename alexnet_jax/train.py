"""Training and evaluation: the loop of Sec. 5, with its periodic actions.

`train_and_evaluate(config, workdir)` is everything `main.py` runs. The state
and the jitted steps live in step.py (JAX only); this module adds the data,
the checkpoints, the metrics and the signals.
"""

import dataclasses
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import tqdm

from alexnet_jax import checkpoint
from alexnet_jax import input_pipeline
from alexnet_jax import metric_writer
from alexnet_jax import parallel
from alexnet_jax import step as step_lib
from alexnet_jax import workdir as workdir_lib
from alexnet_jax.errors import UserError

# Exit status of a run stopped by SIGTERM after saving (EX_TEMPFAIL: run the
# same command again to resume), and by Ctrl-C after saving (128 + SIGINT).
PREEMPTED_EXIT_CODE = 75
INTERRUPTED_EXIT_CODE = 130


class NonFiniteLoss(Exception):
  pass


class Preempted(Exception):
  """Stopped by a signal after saving: args are (step, status)."""

  @property
  def exit_code(self) -> int:
    return INTERRUPTED_EXIT_CODE if self.args[1] == 'interrupted' else PREEMPTED_EXIT_CODE


def total_steps(config, info: input_pipeline.DatasetInfo) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  return int(config.num_epochs * input_pipeline.steps_per_epoch(config, info))


def evaluate(config, eval_step, params, mesh) -> dict[str, float]:
  totals = None
  index, count = parallel.process_data_shard(mesh, parallel.rules(config).batch)
  for batch in input_pipeline.eval_batches(
      config, process_index=index, process_count=count):
    out = eval_step(params, step_lib.device_batch(batch, mesh, config))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  return step_lib.eval_means(totals)


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

  def next_batch(self, batches, mesh, config):
    start = time.perf_counter()
    batch = step_lib.device_batch(next(batches), mesh, config)
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


@dataclasses.dataclass
class _Stopper:
  """Turns SIGTERM (what schedulers send) and Ctrl-C into a save at the next
  step; a second Ctrl-C stops at once, without saving."""
  status: str | None = None  # 'preempted' or 'interrupted' once signalled.

  def __enter__(self):
    self._old = {s: signal.signal(s, self._handle)
                 for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.status == 'interrupted':
      print('\nSecond Ctrl-C: stopped at once, without saving this step.',
            file=sys.stderr, flush=True)
      os._exit(INTERRUPTED_EXIT_CODE)  # The kernel releases the workdir lock.
    if signum == signal.SIGINT:
      _say('Ctrl-C: saving at the next step (press again to stop at once).')
    self.status = self.status or (
        'interrupted' if signum == signal.SIGINT else 'preempted')

  def agreed(self, due: bool) -> bool:
    """Whether to stop now. Over several processes all must stop at the same
    step, so they agree (any one signalled) only at the `due` steps."""
    if jax.process_count() == 1:
      return self.status is not None
    if not due:
      return False
    flags = multihost_utils.process_allgather(
        np.int32(0 if self.status is None else 1 + (self.status == 'interrupted')))
    if flags.max() and self.status is None:
      self.status = 'interrupted' if flags.max() == 2 else 'preempted'
    return bool(flags.max())

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains, evaluates, checkpoints and logs to `workdir`; returns the summary.

  Process 0 holds the workdir's lock for the whole run (workdir.py): a
  second run on the same workdir stops at once, naming this one.
  """
  workdir = workdir_lib.check_path(workdir)
  if jax.process_index() != 0:
    return _train_and_evaluate(config, workdir)
  workdir_lib.check_outputs(workdir)
  with workdir_lib.lock(workdir):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: Path) -> dict[str, Any]:
  start_time = time.time()
  mesh = parallel.make_mesh(config)
  info = input_pipeline.dataset_info(config)
  if info.num_classes != config.model.num_classes:
    raise UserError(
        f'The dataset {config.dataset!r} has {info.num_classes} classes but'
        f' model.num_classes={config.model.num_classes}: pass'
        f' --config.model.num_classes={info.num_classes}.')
  num_steps = total_steps(config, info)
  lr_fn = step_lib.learning_rate_fn(
      config, input_pipeline.steps_per_epoch(config, info), num_steps)
  is_chief = jax.process_index() == 0

  # Restore before anything compiles: a foreign workdir is refused unharmed.
  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  changes = workdir_lib.check_resume(
      workdir, config, latest_step=max(ckpt.steps(), default=None),
      num_steps=num_steps)
  for key, (before, after) in changes.items():
    _say(f'Resuming with {key}={after!r} (was {before!r}).')
  abstract = step_lib.sharded_abstract_state(config, mesh)
  signature = checkpoint.param_signature(abstract.params)
  restored = ckpt.restore_latest(abstract, signature)
  if restored is not None:
    graphdef, state = step_lib.model_graphdef(config), restored.state
    _say(f'Resumed from the checkpoint at step {restored.step} in {ckpt.directory}.')
  else:
    graphdef, state = step_lib.create_train_state(config, mesh)
  start_step = int(state.step)

  if is_chief:
    workdir_lib.record_start(workdir, config, start_step=start_step,
                             processes=jax.process_count())
    metric_writer.truncate(workdir, start_step)  # One history.
  writer = metric_writer.MetricWriter(workdir, enabled=is_chief)
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  train_step = step_lib.make_train_step(config, graphdef, lr_fn, shardings)
  eval_step = step_lib.make_eval_step(config, graphdef)
  index, count = parallel.process_data_shard(mesh, parallel.rules(config).batch)
  batches = input_pipeline.train_batches(
      config, start_step=start_step, process_index=index, process_count=count)
  log, run_eval, save = (every(n, num_steps) for n in (
      config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps))
  throughput = Throughput(config.batch_size)

  eval_metrics: dict[str, float] = {}
  status, step, window, stop = 'completed', start_step, [], False
  with jax.set_mesh(mesh), _Stopper() as stopper, tqdm.tqdm(
      total=num_steps, initial=start_step, desc='train', disable=not is_chief,
      dynamic_ncols=True, mininterval=1.0, file=sys.stderr) as bar:
    try:
      while step < num_steps and not stop:
        state, metrics = train_step(state, throughput.next_batch(batches, mesh, config))
        step += 1
        throughput.stepped(metrics)
        window.append(metrics)
        if log(step):
          window = _log(step, jax.device_get(window), throughput, writer, bar)
        stop = stopper.agreed(due=log(step))
        if run_eval(step):
          eval_metrics = evaluate(config, eval_step, state.params, mesh)
          writer.write(step, eval_metrics)
          state = _plateau(config, state, eval_metrics['eval_top1'])
          throughput.restart()  # Evaluation is not training time.
          _say(f'step {step}/{num_steps}: ' + ' '.join(
              f'{k} {v:.4f}' for k, v in eval_metrics.items()))
        if save(step) or stop:
          _check_finite(state, step)
          ckpt.save(step, state, signature, metrics={
              'eval_top1': eval_metrics['eval_top1']} if run_eval(step) else None)
      if stop:
        status = stopper.status
      elif not eval_metrics:  # A finished workdir: report its evaluation again.
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
      'strategy': config.strategy,
      'processes': jax.process_count(),
      **eval_metrics,
  }
  if is_chief:
    (workdir / 'summary.json').write_text(json.dumps(summary, indent=2))
  if status in ('preempted', 'interrupted'):
    raise Preempted(step, status)
  return summary


def _log(step: int, window: list[dict], throughput: Throughput, writer, bar) -> list:
  """Writes the window's mean scalars; stops at the first non-finite loss."""
  scalars = {k: sum(m[k] for m in window) / len(window) for k in window[0]}
  writer.write(step, scalars | throughput.read())
  losses = [m['train_loss'] for m in window]
  bad = next((i for i, l in enumerate(losses) if not math.isfinite(l)), None)
  if bad is not None:
    raise NonFiniteLoss(step - len(losses) + 1 + bad)
  bar.set_postfix(loss=f'{scalars["train_loss"]:.3f}')
  bar.update(len(window))
  return []


def _plateau(config, state, eval_top1: float):
  """Sec. 5's plateau rule, told in words when it divides the rate."""
  before = float(step_lib.learning_rate(config, lambda s: 1.0, state))
  state = step_lib.plateau_step(config, state, eval_top1)
  after = float(step_lib.learning_rate(config, lambda s: 1.0, state))
  if after < before:
    decays = round(math.log(after) / math.log(config.optimizer.decay_factor))
    _say(f'Validation top-1 stopped improving: learning rate'
         f' x{config.optimizer.decay_factor} (decay {decays} of at most'
         f' {config.optimizer.max_decays}).')
  return state


def _say(message: str) -> None:
  """One line on the console, above the progress bar."""
  if jax.process_index() == 0:
    tqdm.tqdm.write(message, file=sys.stderr)


def _check_finite(state: step_lib.TrainState, step: int) -> None:
  """Never save a state the step refused to update (a NaN/Inf loss)."""
  if int(state.step) != step:
    raise NonFiniteLoss(int(state.step) + 1)
