"""Classifies image files with a training run's checkpoint.

    python -m alexnet_jax.predict --workdir=/tmp/alexnet-demo IMAGE [IMAGE ...] [--json] [--step=N]

For each file, the five most probable classes with their names (the TFDS
dataset's label names, or the class folders of a folder dataset) and
probabilities, from the centre patch as evaluation sees it. The network and
the data settings come from the run's config.json; the checkpoint is the
latest (or --step). A file that is not a readable image gets one line saying
so, and the others are still answered; a path that does not exist stops the
command before anything is loaded (exit status 2).
"""

import json
from pathlib import Path
import sys

from absl import app
from absl import flags
import ml_collections

from alexnet_jax import cli
from alexnet_jax import evaluate as evaluate_lib
from alexnet_jax.errors import UserError

TOP = 5


def run_config(workdir: Path) -> ml_collections.ConfigDict:
  """The run's resolved config, from WORKDIR/config.json."""
  path = Path(workdir) / 'config.json'
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except FileNotFoundError:
    raise UserError(
        f'{path} does not exist: --workdir must be the directory of a'
        ' training run (python -m alexnet_jax.main --workdir=DIR writes'
        ' config.json and checkpoints/ there).') from None
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f'{path} is not a readable config ({e}); it is written by'
                    ' the training run at its start.') from None


def classify(config, restored, examples):
  """Softmax probabilities (N, classes) of N examples of `eval_batches`
  ({'image': uint8 (N, S, S, 3), 'pixel_offset', 'pixel_scale'})."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from alexnet_jax import step as step_lib  # pylint: disable=import-outside-toplevel
  logits_fn = step_lib.eval_logits(config, restored.graphdef)
  size = config.batch_size  # Divides over the data axis (validated).
  probs = []
  with jax.set_mesh(restored.mesh):
    count = len(examples['image'])
    for start in range(0, count, size):
      padded = {key: np.concatenate([value[start:start + size], np.zeros(
          (max(0, start + size - count),) + value.shape[1:], value.dtype)])
                for key, value in examples.items()}
      batch = step_lib.device_batch(padded, restored.mesh, config)
      logits = logits_fn(restored.params, step_lib.normalize(batch))
      probs.append(np.asarray(jax.device_get(
          jax.nn.softmax(logits.astype(np.float32))))[:count - start])
  return np.concatenate(probs)


def predict(workdir: Path, paths: list[str], step: int | None = None
            ) -> list[dict]:
  """For each path {'path', 'top5': [{'class', 'label', 'probability'}]} or
  {'path', 'error'}. UserError (before anything loads) for a missing path,
  a workdir without a run or checkpoints, or a bad stats file."""
  if not paths:
    raise UserError('Name one or more image files after the flags:'
                    ' python -m alexnet_jax.predict --workdir=DIR a.jpg b.png')
  missing = [p for p in paths if not Path(p).is_file()]
  if missing:
    raise UserError(
        f'{len(missing)} of the {len(paths)} image paths do not exist or are'
        f' not files: {", ".join(missing[:5])}'
        f'{" ..." if len(missing) > 5 else ""}. Check the paths; nothing was'
        ' classified.')
  workdir = Path(workdir)
  config = run_config(workdir)
  evaluate_lib.checkpoint_steps(workdir, step)
  cli.check(config)
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from alexnet_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  input_pipeline.image_stats(config)  # A bad stats file stops here.

  images, problems = {}, {}
  for path in paths:
    try:
      images[path] = input_pipeline.eval_image(config, Path(path).read_bytes())
    except OSError as e:
      problems[path] = f'cannot be read ({e.strerror or e})'
    except tf.errors.OpError:
      problems[path] = 'is not a readable JPEG, PNG, GIF, BMP or WebP image'
  names = input_pipeline.class_names(config)
  if names is None or len(names) != config.model.num_classes:
    names = [f'class {i}' for i in range(config.model.num_classes)]
  probs = {}
  if images:
    restored = evaluate_lib.restore(config, workdir, step)
    examples = {key: np.stack([image[key] for image in images.values()])
                for key in ('image', 'pixel_offset', 'pixel_scale')}
    probs = dict(zip(images, classify(config, restored, examples)))
  results = []
  for path in paths:
    if path in problems:
      results.append({'path': path, 'error': problems[path]})
      continue
    top = np.argsort(-probs[path], kind='stable')[:TOP]
    results.append({'path': path, 'top5': [
        {'class': names[i], 'label': int(i),
         'probability': float(probs[path][i])} for i in top]})
  return results


def format_results(results: list[dict]) -> str:
  """The console text: each image and its classes, or one line for a bad file."""
  lines = []
  for result in results:
    if 'error' in result:
      lines.append(f'{result["path"]}: {result["error"]}; skipped.')
      continue
    lines.append(result['path'])
    lines += [f'  {guess["probability"]:.4f}  {guess["class"]}'
              for guess in result['top5']]
  return '\n'.join(lines)


def main(argv):
  results = predict(Path(_WORKDIR.value), argv[1:], _STEP.value)
  print(json.dumps(results, indent=2) if _JSON.value else format_results(results))


def _define_flags():
  """Defined only when this module runs; the tests import its functions."""
  return (
      flags.DEFINE_string('workdir', None, 'The training run\'s directory'
                          ' (config.json, checkpoints/).', required=True),
      flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.'),
      flags.DEFINE_bool('json', False, 'Print one JSON list instead of text.'),
  )


def _run():
  """absl's app.run with UserError (and flag errors) as one paragraph, exit 2.

  Like cli.run, which needs a --config; here the config is the run's own.
  """

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      cli.fail(f'{e}. Usage: python -m alexnet_jax.predict --workdir=DIR'
               ' IMAGE [IMAGE ...] [--json] [--step=N]')

  def guarded(argv):
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
    if not flags.FLAGS['verbosity'].present:
      absl_logging.set_verbosity(absl_logging.WARNING)
    try:
      main(argv)
    except UserError as e:
      cli.fail(str(e))

  app.run(guarded, flags_parser=parse)


if __name__ == '__main__':
  import os  # pylint: disable=g-import-not-at-top
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  _WORKDIR, _STEP, _JSON = _define_flags()
  _run()
