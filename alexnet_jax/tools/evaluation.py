"""A training run's checkpoint evaluated on the evaluation split.

`evaluate_workdir` restores the latest checkpoint of WORKDIR (or step N),
prints the validation loss, top-1 and top-5, and writes them to
WORKDIR/evaluate_step<N>.json (`_tencrop` added for the ten-patch test).
With centre patches it runs the very evaluation the training loop runs
(`run.loop.evaluate`), so it prints what training logged at that step, to
the last digit. `ten_crop` is the test of Sec. 4.1: the softmax outputs of
the four corner and the centre patches and of their reflections, averaged.
"""

import json
import os
from pathlib import Path
import sys

import jax
import jax.numpy as jnp

from alexnet_jax.core import parallel
from alexnet_jax.core import steps
from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.run import launch
from alexnet_jax.run import loop


def evaluate_checkpoint(settings, weights: checkpoint.Weights,
                        ten_crop: bool = False) -> dict:
  """Loss, top-1 and top-5 over the evaluation split (all processes)."""
  with jax.set_mesh(weights.mesh):
    if not ten_crop:
      eval_step = steps.make_eval_step(weights.graphdef, settings.rules)
      return loop.evaluate(settings, eval_step, weights.params, weights.mesh)
    return _evaluate_ten_crop(settings, weights)


def _evaluate_ten_crop(settings, weights: checkpoint.Weights) -> dict:
  from alexnet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  logits_fn = steps.eval_logits(weights.graphdef, settings.rules)
  rules, mesh = settings.rules, weights.mesh

  @jax.jit
  def sums(log_probs, label, mask):
    # log of the mean softmax over the ten patches, exactly: (B, classes).
    log_mean = jax.nn.logsumexp(jnp.stack(log_probs), axis=0) - jnp.log(10.0)
    nll = -jnp.take_along_axis(log_mean, label[:, None], axis=-1)[:, 0]
    return {'loss': jnp.sum(nll * mask),
            'top1': jnp.sum(steps.top_k_correct(log_mean, label, 1) * mask),
            'top5': jnp.sum(steps.top_k_correct(log_mean, label, 5) * mask),
            'count': jnp.sum(mask)}

  index, count = parallel.process_data_shard(mesh, rules.batch)
  totals = None
  for batch in pipeline.eval_batches(
      settings.data, process_index=index, process_count=count, ten_crop=True):
    log_probs = []
    for patch in range(batch['image'].shape[1]):  # One patch at a time.
      images = steps.normalize(steps.device_batch(
          {'image': batch['image'][:, patch],
           'pixel_offset': batch['pixel_offset'],
           'pixel_scale': batch['pixel_scale']}, mesh, rules))
      log_probs.append(jax.nn.log_softmax(
          logits_fn(weights.params, images).astype(jnp.float32)))
    rest = steps.device_batch(
        {'label': batch['label'], 'mask': batch['mask']}, mesh, rules)
    out = sums(log_probs, rest['label'], rest['mask'])
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  return steps.eval_means(totals)


def result_path(workdir: Path, step: int, ten_crop: bool) -> Path:
  return Path(workdir) / f'evaluate_step{step}{"_tencrop" if ten_crop else ""}.json'


def evaluate_workdir(settings, workdir: Path, step: int | None = None,
                     ten_crop: bool = False) -> dict:
  """Everything `python -m alexnet_jax.evaluate` does after the flags:
  checks, restores, evaluates, prints one line and writes the JSON record
  (process 0); returns it."""
  workdir = Path(workdir)
  checkpoint.saved_steps(workdir, step)  # Before JAX starts.
  launch.start(settings)
  from alexnet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  info = pipeline.dataset_info(settings.data)  # Checks the stats file too.
  if info.num_classes != settings.model.num_classes:
    raise UserError(
        f'The dataset {settings.data.dataset!r} has {info.num_classes} classes'
        f' but model.num_classes={settings.model.num_classes}; pass the config'
        f' that trained the checkpoint ({workdir / "config.json"}).')
  # Without --step, the newest there is when it is read (a live run rotates).
  weights = checkpoint.restore_params(settings, workdir, step)
  step = weights.step
  metrics = evaluate_checkpoint(settings, weights, ten_crop)
  split = settings.data.eval_split
  record = {'step': step, **metrics, 'ten_crop': ten_crop,
            'eval_split': split, 'examples': info.num_eval_examples,
            'dataset': settings.data.dataset}
  print(f'step {step} ({split}, {info.num_eval_examples} images,'
        f' {"ten patches" if ten_crop else "centre patch"}):'
        f' eval_loss {metrics["eval_loss"]:.4f} eval_top1'
        f' {metrics["eval_top1"]:.4f} eval_top5 {metrics["eval_top5"]:.4f}')
  if jax.process_index() == 0:
    out = result_path(workdir, step, ten_crop)
    tmp = out.with_name(f'.{out.name}.tmp')
    tmp.write_text(json.dumps(record, indent=2) + '\n')
    os.replace(tmp, out)
    print(f'Wrote {out}', file=sys.stderr)
  return record
