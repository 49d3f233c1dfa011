"""Evaluates a training run's checkpoint on the evaluation split.

    python -m alexnet_jax.evaluate --config=configs/two_gpu.py:demo --workdir=/tmp/alexnet-demo [--step=N] [--ten_crop]

Restores the latest checkpoint of WORKDIR (or step N), prints the validation
loss, top-1 and top-5, and writes them to WORKDIR/evaluate_step<N>.json
(`_tencrop` added for the ten-patch test). With centre patches it runs the
very evaluation the training loop runs (`train.evaluate`), so it prints
what training logged at that step, to the last digit. `--ten_crop` is the
test of Sec. 4.1: the softmax outputs of the four corner and the centre
patches and of their reflections, averaged.

`restore` is also what predict.py reads a checkpoint with.
"""

import dataclasses
import json
import os
from pathlib import Path
import sys

from absl import flags

from alexnet_jax import cli
from alexnet_jax.errors import UserError

def checkpoint_steps(workdir: Path, step: int | None = None) -> list[int]:
  """The workdir's checkpoint steps; UserError if none, or not `step`.

  Reads folder names only: nothing is created or compiled.
  """
  directory = Path(workdir) / 'checkpoints'
  steps = sorted(int(p.name) for p in directory.iterdir()
                 if p.is_dir() and p.name.isdigit()) if directory.is_dir() else []
  if not steps:
    raise UserError(
        f'--workdir {workdir} holds no checkpoints (looked in {directory}).'
        ' Point --workdir at the directory a training run wrote'
        ' (python -m alexnet_jax.main --workdir=DIR), after its first'
        ' checkpoint.')
  if step is not None and step not in steps:
    raise UserError(
        f'--step={step}: there is no checkpoint of that step in {directory};'
        f' it has steps {", ".join(map(str, steps))}. Pass one of them, or'
        ' leave --step out for the latest.')
  return steps


@dataclasses.dataclass
class Restored:
  graphdef: object
  params: object  # Sharded as the config's strategy says, on `mesh`.
  step: int
  mesh: object


def restore(config, workdir: Path, step: int | None = None) -> Restored:
  """The parameters of checkpoint `step` (default: the latest), sharded.

  UserError if there is no such checkpoint, it is damaged, or it holds
  another model than `config` describes. Compiles nothing.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  from alexnet_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from alexnet_jax import parallel  # pylint: disable=import-outside-toplevel
  from alexnet_jax import step as step_lib  # pylint: disable=import-outside-toplevel
  step = checkpoint_steps(workdir, step)[-1] if step is None else step
  checkpoint_steps(workdir, step)
  mesh = parallel.make_mesh(config)
  abstract = step_lib.sharded_abstract_state(config, mesh)
  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  try:
    damage = ckpt.damage(step)
    if damage:
      raise UserError(f'The checkpoint of step {step} in {ckpt.directory} is'
                      f' damaged ({damage}); evaluate another --step.')
    meta = ckpt.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    signature = checkpoint.param_signature(abstract.params)
    if meta.get('params') != signature:
      differ = sorted(k for k in set(meta.get('params', {})) | set(signature)
                      if meta.get('params', {}).get(k) != signature.get(k))
      raise UserError(
          f'The checkpoint of step {step} in {ckpt.directory} holds another'
          f' network than --config describes ({len(differ)} parameters'
          f' differ, e.g. {differ[0]}: {meta.get("params", {}).get(differ[0])}'
          f' saved, {signature.get(differ[0])} in the config). Pass the'
          ' config that trained it; the run\'s resolved config is'
          f' {Path(workdir) / "config.json"}.')
    state = ckpt.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))['state']
  finally:
    ckpt.close()
  return Restored(step_lib.model_graphdef(config), state.params, step, mesh)


def evaluate(config, restored: Restored, ten_crop: bool = False) -> dict:
  """Loss, top-1 and top-5 over the evaluation split (all processes)."""
  import jax  # pylint: disable=import-outside-toplevel
  from alexnet_jax import step as step_lib  # pylint: disable=import-outside-toplevel
  from alexnet_jax import train  # pylint: disable=import-outside-toplevel
  with jax.set_mesh(restored.mesh):
    if not ten_crop:
      eval_step = step_lib.make_eval_step(config, restored.graphdef)
      return train.evaluate(config, eval_step, restored.params, restored.mesh)
    return _evaluate_ten_crop(config, restored)


def _evaluate_ten_crop(config, restored: Restored) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from alexnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  from alexnet_jax import parallel  # pylint: disable=import-outside-toplevel
  from alexnet_jax import step as step_lib  # pylint: disable=import-outside-toplevel
  logits_fn = step_lib.eval_logits(config, restored.graphdef)

  @jax.jit
  def sums(log_probs, label, mask):
    # log of the mean softmax over the ten patches, exactly: (B, classes).
    log_mean = jax.nn.logsumexp(jnp.stack(log_probs), axis=0) - jnp.log(10.0)
    nll = -jnp.take_along_axis(log_mean, label[:, None], axis=-1)[:, 0]
    return {'loss': jnp.sum(nll * mask),
            'top1': jnp.sum(step_lib.top_k_correct(log_mean, label, 1) * mask),
            'top5': jnp.sum(step_lib.top_k_correct(log_mean, label, 5) * mask),
            'count': jnp.sum(mask)}

  index, count = parallel.process_data_shard(
      restored.mesh, parallel.rules(config).batch)
  totals = None
  for batch in input_pipeline.eval_batches(
      config, process_index=index, process_count=count, ten_crop=True):
    log_probs = []
    for patch in range(batch['image'].shape[1]):  # One patch at a time.
      images = step_lib.normalize(step_lib.device_batch(
          {'image': batch['image'][:, patch],
           'pixel_offset': batch['pixel_offset'],
           'pixel_scale': batch['pixel_scale']}, restored.mesh, config))
      log_probs.append(jax.nn.log_softmax(
          logits_fn(restored.params, images).astype(jnp.float32)))
    rest = step_lib.device_batch(
        {'label': batch['label'], 'mask': batch['mask']}, restored.mesh, config)
    out = sums(log_probs, rest['label'], rest['mask'])
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  return step_lib.eval_means(totals)


def result_path(workdir: Path, step: int, ten_crop: bool) -> Path:
  return Path(workdir) / f'evaluate_step{step}{"_tencrop" if ten_crop else ""}.json'


def _define_flags():
  """The CLI's flags; defined only when this module runs (predict and the
  tests import its functions)."""
  workdir = flags.DEFINE_string(
      'workdir', None, 'The training run\'s directory (holding checkpoints/).',
      required=True)
  step = flags.DEFINE_integer(
      'step', None, 'The checkpoint to evaluate; default the latest.')
  ten_crop = flags.DEFINE_bool(
      'ten_crop', False, 'Sec. 4.1\'s ten-patch test instead of the centre'
      ' patch.')
  return workdir, step, ten_crop, cli.define_config_flag()


def evaluate_workdir(config, workdir: Path, step: int | None = None,
                     ten_crop: bool = False) -> dict:
  """Everything the CLI does after the flags: checks, restores, evaluates,
  prints one line and writes the JSON record (process 0); returns it."""
  workdir = Path(workdir)
  steps = checkpoint_steps(workdir, step)  # Before JAX starts.
  step = steps[-1] if step is None else step
  cli.check(config)
  from alexnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  info = input_pipeline.dataset_info(config)  # Checks the stats file too.
  if info.num_classes != config.model.num_classes:
    raise UserError(
        f'The dataset {config.dataset!r} has {info.num_classes} classes but'
        f' model.num_classes={config.model.num_classes}; pass the config'
        f' that trained the checkpoint ({workdir / "config.json"}).')
  restored = restore(config, workdir, step)
  metrics = evaluate(config, restored, ten_crop)
  record = {'step': step, **metrics, 'ten_crop': ten_crop,
            'eval_split': config.eval_split, 'examples': info.num_eval_examples,
            'dataset': config.dataset}
  print(f'step {step} ({config.eval_split}, {info.num_eval_examples} images,'
        f' {"ten patches" if ten_crop else "centre patch"}):'
        f' eval_loss {metrics["eval_loss"]:.4f} eval_top1'
        f' {metrics["eval_top1"]:.4f} eval_top5 {metrics["eval_top5"]:.4f}')
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0:
    out = result_path(workdir, step, ten_crop)
    tmp = out.with_name(f'.{out.name}.tmp')
    tmp.write_text(json.dumps(record, indent=2) + '\n')
    os.replace(tmp, out)
    print(f'Wrote {out}', file=sys.stderr)
  return record


def main(argv):
  if len(argv) > 1:
    raise UserError(f'Unexpected arguments {argv[1:]}; evaluate takes only'
                    ' flags (--config, --workdir, --step, --ten_crop).')
  evaluate_workdir(_CONFIG.value, Path(_WORKDIR.value), _STEP.value,
                   _TEN_CROP.value)


if __name__ == '__main__':
  _WORKDIR, _STEP, _TEN_CROP, _CONFIG = _define_flags()
  cli.run(main, _CONFIG)
