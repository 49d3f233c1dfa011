"""Image files classified with a training run's checkpoint.

For each file, the five most probable classes with their names (the TFDS
dataset's label names, or the class folders of a folder dataset) and
probabilities, from the centre patch as evaluation sees it. The network and
the data settings come from the run's config.json; the checkpoint is the
latest (or `step`). A file that is not a readable image gets one line saying
so, and the others are still answered; a path that does not exist stops the
command before anything is loaded.
"""

import json
from pathlib import Path

import ml_collections
import numpy as np

from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.run import launch
from alexnet_jax.run.settings import Settings

TOP = 5


def run_settings(workdir: Path) -> Settings:
  """The run's settings, from its resolved WORKDIR/config.json."""
  path = Path(workdir) / 'config.json'
  try:
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
  except FileNotFoundError:
    raise UserError(
        f'{path} does not exist: --workdir must be the directory of a'
        ' training run (python -m alexnet_jax.main --workdir=DIR writes'
        ' config.json and checkpoints/ there).') from None
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f'{path} is not a readable config ({e}); it is written by'
                    ' the training run at its start.') from None
  return Settings.from_config(config)


def classify(settings: Settings, weights: checkpoint.Weights, examples):
  """Softmax probabilities (N, classes) of N examples of `eval_batches`
  ({'image': uint8 (N, S, S, 3), 'pixel_offset', 'pixel_scale'})."""
  import jax  # pylint: disable=import-outside-toplevel
  from alexnet_jax.core import steps  # pylint: disable=import-outside-toplevel
  logits_fn = steps.eval_logits(weights.graphdef, settings.rules)
  size = settings.data.batch_size  # Divides over the data axis (validated).
  probs = []
  with jax.set_mesh(weights.mesh):
    count = len(examples['image'])
    for start in range(0, count, size):
      padded = {key: np.concatenate([value[start:start + size], np.zeros(
          (max(0, start + size - count),) + value.shape[1:], value.dtype)])
                for key, value in examples.items()}
      batch = steps.device_batch(padded, weights.mesh, settings.rules)
      logits = logits_fn(weights.params, steps.normalize(batch))
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
  settings = run_settings(workdir)
  checkpoint.saved_steps(workdir, step)
  launch.start(settings)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from alexnet_jax.data import imagenet  # pylint: disable=import-outside-toplevel
  from alexnet_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from alexnet_jax.data import pixel_stats  # pylint: disable=import-outside-toplevel
  pixel_stats.image_stats(settings.data)  # A bad stats file stops here.

  images, problems = {}, {}
  for path in paths:
    try:
      images[path] = pipeline.eval_image(settings.data, Path(path).read_bytes())
    except OSError as e:
      problems[path] = f'cannot be read ({e.strerror or e})'
    except tf.errors.OpError:
      problems[path] = 'is not a readable JPEG, PNG, GIF, BMP or WebP image'
  num_classes = settings.model.num_classes
  names = pipeline.class_names(settings.data)
  if names is None or len(names) != num_classes:
    names = [f'class {i}' for i in range(num_classes)]
  words = (imagenet.synset_words(Path(settings.data.data_dir).expanduser(),
                                 settings.data.train_split)
           if settings.data.data_dir else None)
  if words:  # ImageNet's wnids, named where its synset list is at hand.
    names = [f'{n} ({words[n]})' if words.get(n) else n for n in names]
  probs = {}
  if images:
    weights = checkpoint.restore_params(settings, workdir, step)
    examples = {key: np.stack([image[key] for image in images.values()])
                for key in ('image', 'pixel_offset', 'pixel_scale')}
    probs = dict(zip(images, classify(settings, weights, examples)))
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
