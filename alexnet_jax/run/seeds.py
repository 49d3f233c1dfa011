"""Several seeds of one config in one program: the train state stacked along
a leading axis, the train step `jax.vmap`-ed over it.

    python -m alexnet_jax.main --config=FILE --seeds=0,1,2 --workdir='DIR/seed={seed}'

Each seed is the run `--config.seed=S --workdir=DIR/seed=S` would be: its
own initial parameters and dropout keys, its own input stream (order, crops,
flips, colour shifts: `pipeline.train_batches` of its seed), and its own
workdir with the same config.json, metrics.jsonl, checkpoints and
summary.json, so a sweep's tables read it unchanged and either form resumes
the other's workdir. The step is core's (steps.make_train_step) under
vmap: a GPU that a small net leaves mostly idle trains K of them in each
launch of the step. On the CPU, XLA may order some float sums differently
under vmap, so the numbers agree with separate runs to float rounding
(tests/run/test_seeds.py); the dropout masks are the same bits
(parallel._bernoulli).

What it does not do, refused before anything compiles: towers split over
devices (mesh.model > 1: vmap over the towers' shard_map), strategies other
than 'data' and 'towers' or a custom sharding_rules table, and several
processes. Seeds resume together: their checkpoints must be at one step.
A non-finite loss in one seed stops all of them (the others' checkpoints
are intact; train that seed alone to see it). The memory check is one
seed's: K seeds need about K times as much.
"""

import contextlib
import dataclasses
import functools
import json
import logging
from pathlib import Path
import sys
import time
import types
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import tqdm

from alexnet_jax.core import model
from alexnet_jax.core import optim
from alexnet_jax.core import parallel
from alexnet_jax.core import steps
from alexnet_jax.core import train_state
from alexnet_jax.data import pipeline
from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.run import launch
from alexnet_jax.run import loop
from alexnet_jax.run import metric_writer
from alexnet_jax.run import preemption
from alexnet_jax.run import rundir
from alexnet_jax.run import validation

SEED_FIELD = '{seed}'  # In --workdir: replaced by each seed.
STRATEGIES = ('data', 'towers')


def parse_seeds(values) -> list[int]:
  """`--seeds` as distinct integers; UserError otherwise."""
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    seeds = []
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserError(f'--seeds={",".join(map(str, values))}: give distinct'
                    ' integers, e.g. --seeds=0,1,2.')
  return seeds


def workdirs(template: str, seeds: list[int]) -> list[str]:
  """Each seed's workdir: `template` with {seed} replaced."""
  if SEED_FIELD not in template:
    raise UserError(
        f'--workdir={template} has no {SEED_FIELD}: with --seeds each seed'
        ' trains in its own workdir, as its own run would; give e.g.'
        f" --workdir='DIR/seed={SEED_FIELD}'.")
  return [template.replace(SEED_FIELD, str(s)) for s in seeds]


def seed_settings(settings, seed: int):
  """`settings` with config.seed = `seed`, as `--config.seed` would give."""
  return dataclasses.replace(settings, seed=seed,
                             resolved=dict(settings.resolved, seed=seed))


def check_supported(settings, towers: int) -> None:
  """UserError for what one program of stacked seeds does not train
  (`towers`: devices of the mesh's model axis)."""
  if settings.sharding_rules:
    _refuse(f'gives sharding_rules={settings.sharding_rules!r}')
  if settings.strategy not in STRATEGIES:
    _refuse(f'uses strategy={settings.strategy}')
  if towers > 1:
    _refuse(f'splits the towers over mesh.model={towers} devices')


def _refuse(problem: str):
  raise UserError(
      f'--seeds trains several seeds in one program (jax.vmap over the'
      f' train state) and this config {problem}, which it does not support:'
      f' it takes strategy {" or ".join(STRATEGIES)} with mesh.model=1, in'
      ' one process. Nothing was trained. Drop --seeds to train each seed'
      ' as its own run (--config.seed=S), or change the config.')


def train(config, template: str, seed_values, processes) -> int:
  """`python -m alexnet_jax.main --seeds=...`: returns the exit status."""
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  seeds = parse_seeds(seed_values)
  dirs = workdirs(template, seeds)
  settings = [seed_settings(Settings.from_config(config), s) for s in seeds]
  if processes.several:
    _refuse('runs over several processes')
  launch.start(settings[0], workdir=dirs[0], processes=processes, fits=True)
  check_supported(settings[0], parallel.mesh_shape(settings[0].mesh, jax.device_count())[1])
  for s, w in zip(settings[1:], dirs[1:]):
    validation.validate(s, num_devices=jax.device_count(), workdir=w)
  try:
    summaries = train_and_evaluate(settings, dirs)
  except preemption.Preempted as e:
    preemption.finishing()
    logging.warning('%s: saved step %s of seeds %s; run the same command to'
                    ' resume.', e.args[1].capitalize(), e.args[0], seeds)
    return e.exit_code
  preemption.finishing()
  for summary in summaries:
    print('summary: ' + json.dumps(summary))
  return 0


@dataclasses.dataclass
class _Seed:
  """One seed's run: its settings, workdir, checkpoints, metrics."""
  settings: Any
  workdir: Path
  ckpt: checkpoint.Checkpointer
  restored: checkpoint.Restored | None = None
  writer: metric_writer.MetricWriter | None = None
  window: list = dataclasses.field(default_factory=list)  # Host rows.
  eval_metrics: dict = dataclasses.field(default_factory=dict)


def train_and_evaluate(settings: list, workdirs_: list) -> list[dict[str, Any]]:
  """Trains every seed of `settings` (one per workdir) in one program;
  returns their summaries. Holds every workdir's lock for the whole run."""
  paths = [rundir.check_path(w) for w in workdirs_]
  if len(set(paths)) != len(paths):
    raise UserError('--seeds: two seeds would share one workdir.')
  with contextlib.ExitStack() as locks:
    for path in paths:
      rundir.check_outputs(path)
      locks.enter_context(rundir.lock(path))
    return _train(settings, paths)


def stack(trees: list):
  """Trees of equal structure -> one tree, each leaf stacked on a new axis 0."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i: int):
  """Seed `i` of a stacked tree."""
  return jax.tree.map(lambda x: x[i], tree)


def make_train_step(graphdef, opt, rules, lr_fn, shardings):
  """core's train step over a stacked state and stacked batches."""
  return jax.jit(jax.vmap(steps.make_train_step(graphdef, opt, rules, lr_fn, shardings)),
                 donate_argnums=0)


def make_eval_step(graphdef, rules):
  """core's eval step over stacked params, one batch for all seeds."""
  return jax.jit(jax.vmap(steps.make_eval_step(graphdef, rules), in_axes=(0, None)))


def stacked_batches(data, seeds: list[int], start_step: int, index: int, count: int):
  """Each seed's own training batches, stacked: (K, B, ...) host arrays."""
  streams = [pipeline.train_batches(data, seed=s, start_step=start_step,
                                    process_index=index, process_count=count)
             for s in seeds]
  for batches in zip(*streams):
    yield {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def device_batch(batch: dict, mesh, rules: parallel.Rules) -> dict[str, jax.Array]:
  """Stacked host batches -> arrays split along the batch as the rules say."""
  sharding = NamedSharding(mesh, P(None, *parallel.batch_sharding(mesh, rules).spec))
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


class _Throughput(loop.Throughput):
  """Images/s of each seed (each sees `batch_size` a step)."""

  def next_batch(self, batches, mesh, rules):
    start = time.perf_counter()
    batch = device_batch(next(batches), mesh, rules)
    self.waited += time.perf_counter() - start
    return batch


def _train(settings: list, paths: list[Path]) -> list[dict[str, Any]]:
  start_time = time.time()
  first = settings[0]
  data, opt, rules, run = first.data, first.optimizer, first.rules, first.run
  mesh = parallel.make_mesh(first.mesh)
  info = pipeline.dataset_info(data)
  if info.num_classes != first.model.num_classes:
    raise UserError(f'The dataset {data.dataset!r} has {info.num_classes}'
                    f' classes: pass --config.model.num_classes={info.num_classes}.')
  num_steps = loop.total_steps(first, info)
  lr_fn = optim.learning_rate_fn(opt, pipeline.steps_per_epoch(data, info), num_steps)
  runs = [_Seed(s, p, checkpoint.Checkpointer(p, run.keep_checkpoints))
          for s, p in zip(settings, paths)]

  # Restore before anything compiles, every seed at one step.
  abstract = train_state.sharded_abstract_state(first.model, opt, rules, mesh)
  signature = checkpoint.param_signature(abstract.params)
  for r in runs:
    changes = rundir.check_resume(
        r.workdir, r.settings, latest_step=max(r.ckpt.steps(), default=None),
        num_steps=num_steps)
    for key, (before, after) in changes.items():
      loop._say(f'{r.workdir.name}: resuming with {key}={after!r} (was {before!r}).')
    r.restored = r.ckpt.restore_latest(abstract, signature)
  at = {r.workdir.name: r.restored.step if r.restored else 0 for r in runs}
  if len(set(at.values())) > 1:
    raise UserError(
        f'--seeds resumes its seeds together, and their workdirs are at'
        f' different steps ({", ".join(f"{k}: {v}" for k, v in at.items())}).'
        ' Nothing was changed. Train them one by one (without --seeds), or'
        ' give --seeds only those at one step.')
  start_step = next(iter(at.values()))
  if start_step:
    loop._say(f'Resumed {len(runs)} seeds from their checkpoints at step {start_step}.')
  graphdef = model.graphdef(first.model)
  state = stack([r.restored.state if r.restored else train_state.create_train_state(
      first.model, opt, r.settings.seed, rules, mesh)[1] for r in runs])
  since_log = start_step % run.log_every_steps
  for r in runs:
    rundir.record_start(r.workdir, r.settings, start_step=start_step, processes=1)
    metric_writer.truncate(r.workdir, start_step)  # One history.
    r.writer = metric_writer.MetricWriter(r.workdir)
    if r.restored is not None and since_log:
      r.window = r.restored.window[len(r.restored.window) - since_log:]

  train_step = make_train_step(graphdef, opt, rules, lr_fn,
                               jax.tree.map(lambda x: x.sharding, abstract))
  eval_step = make_eval_step(graphdef, rules)
  index, count = parallel.process_data_shard(mesh, rules.batch)
  batches = stacked_batches(data, [r.settings.seed for r in runs], start_step,
                            index, count)
  log, run_eval, save = (loop.every(n, num_steps) for n in (
      run.log_every_steps, run.eval_every_steps, run.checkpoint_every_steps))
  throughput = _Throughput(data.batch_size)
  pending: list = []  # Stacked metrics of the steps since the last log.

  def rows(i: int) -> list[dict[str, float]]:
    host = jax.device_get(pending)
    return runs[i].window + [{k: float(v[i]) for k, v in m.items()} for m in host]

  status, step, stop, seed = 'completed', start_step, False, None
  with jax.set_mesh(mesh), preemption.Stopper(say=loop._say) as stopper, tqdm.tqdm(
      total=num_steps, initial=start_step, desc='train', dynamic_ncols=True,
      mininterval=1.0, file=sys.stderr) as bar:
    try:
      while step < num_steps and not stop:
        state, metrics = train_step(state, throughput.next_batch(batches, mesh, rules))
        step += 1
        throughput.stepped(metrics)
        pending.append(metrics)
        if log(step):
          # One window's rates, read once, written for every seed.
          rates = types.SimpleNamespace(read=functools.partial(dict, throughput.read()))
          for seed, r in enumerate(runs):
            r.window = loop._log(step, rows(seed), rates, r.writer, bar)
          pending, seed = [], None
        stop = stopper.agreed(due=log(step))
        if run_eval(step):
          for r, means in zip(runs, evaluate(first, eval_step, state.params, mesh,
                                             len(runs))):
            r.eval_metrics = means
            r.writer.write(step, means)
            loop._say(f'{r.workdir.name}: step {step}/{num_steps}: ' + ' '.join(
                f'{k} {v:.4f}' for k, v in means.items()))
          state = feed_plateau(opt, state, [r.eval_metrics['eval_top1'] for r in runs])
          throughput.restart()  # Evaluation is not training time.
        if save(step) or stop:
          for seed, r in enumerate(runs):
            one = unstack(state, seed)
            loop._check_finite(one, step)
            r.ckpt.save(step, one, signature, metrics={
                'eval_top1': r.eval_metrics['eval_top1']} if run_eval(step) else None,
                        window=rows(seed))
          seed = None
      if stop:
        status = stopper.status
      elif not runs[0].eval_metrics:  # Finished workdirs: their evaluation again.
        for r, means in zip(runs, evaluate(first, eval_step, state.params, mesh,
                                           len(runs))):
          r.eval_metrics = means
    except loop.NonFiniteLoss as e:
      status = 'non_finite_loss'
      name = runs[seed].workdir.name if seed is not None else 'one seed'
      raise UserError(
          f'The training loss of {name} became NaN or Inf at step {e.args[0]};'
          ' every seed of this program stopped without saving it, and the'
          ' checkpoints already in their workdirs are intact. Lower'
          ' optimizer.learning_rate, or train that seed alone to look at it.'
      ) from None
    finally:
      for r in runs:
        r.writer.close()
        r.ckpt.close()
      if status != 'completed':
        logging.warning('Run ended: %s at step %d.', status, step)

  summaries = []
  for r in runs:
    summary = {
        'status': status, 'steps': step, 'num_train_steps': num_steps,
        'resumed_from_step': start_step if r.restored is not None else None,
        'wall_seconds': time.time() - start_time,
        'devices': [str(d) for d in mesh.devices.flat], 'mesh': dict(mesh.shape),
        'strategy': r.settings.strategy, 'processes': 1,
        'seeds_in_program': [x.settings.seed for x in runs], **r.eval_metrics}
    (r.workdir / rundir.SUMMARY).write_text(json.dumps(summary, indent=2))
    summaries.append(summary)
  if status in ('preempted', 'interrupted'):
    raise preemption.Preempted(step, status)
  return summaries


def evaluate(settings, eval_step, params, mesh, k: int) -> list[dict[str, float]]:
  """Each seed's loss, top-1 and top-5 over the eval split, in one pass."""
  totals = None
  for batch in pipeline.eval_batches(settings.data):
    out = eval_step(params, steps.device_batch(batch, mesh, settings.rules))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  return [steps.eval_means(unstack(totals, i)) for i in range(k)]


def feed_plateau(opt: optim.OptimizerConfig, state, eval_top1: list[float]):
  """Sec. 5's plateau rule, each seed by its own validation error."""
  if opt.schedule != 'plateau':
    return state
  fed = [loop._feed_plateau(opt, train_state.TrainState(
      step=state.step[i], params=None, opt_state=unstack(state.opt_state, i),
      rng=None), top1) for i, top1 in enumerate(eval_top1)]
  return state.replace(opt_state=stack([s.opt_state for s in fed]))
