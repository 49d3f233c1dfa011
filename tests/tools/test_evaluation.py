"""evaluate and predict on a tiny run trained with Sec. 4.1's colour shift on.

One training run (the train CLI's, two host devices, one tower each) serves every
test. kill -9 resume with the colour shift on is test_robustness's kill test.
"""

import json

import numpy as np
from PIL import Image
import pytest

from alexnet_jax.errors import UserError
from alexnet_jax.run.settings import Settings
from alexnet_jax.tools import evaluation
from alexnet_jax.tools import prediction
from clirun import read_metrics, run_cli, train_here
from configs import two_gpu

# One xdist worker runs this file's tests, which share costly session-scoped
# fixtures (tests/conftest.py says why).
pytestmark = [pytest.mark.xdist_group('evaluate'),
              pytest.mark.slow(seconds=30)]  # All of this file's tests together.

STEPS = 12
RUN = (f'--config.num_train_steps={STEPS}', '--config.checkpoint_every_steps=3',
       '--config.eval_every_steps=6', '--config.log_every_steps=3',
       '--config.input.pca_lighting=0.1')


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='session')
def trained(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp('run')
  train_here(workdir, *RUN, data_dir=data_dir)  # What the train CLI runs.
  return workdir


def _settings(data_dir):
  """The settings the CLI ran with (two_gpu.py:tiny and RUN's overrides)."""
  config = two_gpu.get_config('tiny')
  config.data_dir = str(data_dir)
  config.num_train_steps = STEPS
  config.input.pca_lighting = 0.1
  return Settings.from_config(config)


def test_evaluate_twice_equals_the_logged_evaluation(trained, data_dir):
  settings = _settings(data_dir)
  logged = {r['step']: r for r in read_metrics(trained) if 'eval_loss' in r}
  assert sorted(logged) == [6, 12]
  first = evaluation.evaluate_workdir(settings, trained, 6)
  again = evaluation.evaluate_workdir(settings, trained, 6)
  latest = evaluation.evaluate_workdir(settings, trained)  # No --step: the latest.
  assert first == again and latest['step'] == 12
  for record in (first, latest):
    row = logged[record['step']]
    for key in ('eval_loss', 'eval_top1', 'eval_top5'):
      assert record[key] == row[key], key  # To the last digit.
  written = json.loads((trained / 'evaluate_step12.json').read_text())
  assert written == latest and written['examples'] == 16


def test_ten_patch_evaluation_averages_the_softmax(trained, data_dir):
  """Against the network run unsharded on each patch, averaged in numpy."""
  from flax import nnx
  import jax
  from alexnet_jax.core import model
  from alexnet_jax.data import pipeline
  from alexnet_jax.run import checkpoint
  settings = _settings(data_dir)
  weights = checkpoint.restore_params(settings, trained, 12)
  metrics = evaluation.evaluate_checkpoint(settings, weights, ten_crop=True)

  net = model.create(settings.model)
  nnx.update(net, jax.device_get(weights.params))
  forward = nnx.jit(lambda net, images: net(images, train=False))
  nll, top1, top5 = [], [], []
  for batch in pipeline.eval_batches(settings.data, ten_crop=True):
    offset, scale = (batch[k][:, None, None, :]
                     for k in ('pixel_offset', 'pixel_scale'))
    logits = np.stack([np.asarray(forward(
        net, (batch['image'][:, p].astype(np.float32) + offset) * scale))
                       for p in range(10)])  # (10, B, classes)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = (probs / probs.sum(-1, keepdims=True)).mean(0)
    for p, label, keep in zip(probs, batch['label'], batch['mask']):
      if keep:
        rank = np.sum(p > p[label])
        nll.append(-np.log(p[label]))
        top1.append(rank < 1)
        top5.append(rank < 5)
  np.testing.assert_allclose(metrics['eval_loss'], np.mean(nll), rtol=1e-5)
  assert metrics['eval_top1'] == np.mean(top1)
  assert metrics['eval_top5'] == np.mean(top5)
  assert len(nll) == 16


def test_evaluate_refuses_bad_inputs_before_loading(tmp_path, trained, data_dir):
  settings = _settings(data_dir)
  with pytest.raises(UserError, match=r'--step=5.*has steps [0-9, ]*12\.'):
    evaluation.evaluate_workdir(settings, trained, step=5)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(UserError, match='holds no checkpoints'):
    evaluation.evaluate_workdir(settings, empty)
  assert list(empty.iterdir()) == []  # Nothing created.
  # The CLI: one paragraph, exit 2, nothing written.
  before = sorted(p.name for p in trained.iterdir())
  proc = run_cli(trained, '--config.input.stats_file=/no/such/stats.json',
                 data_dir=data_dir, module='alexnet_jax.evaluate', check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert '/no/such/stats.json' in proc.stderr and 'data_stats' in proc.stderr
  assert sorted(p.name for p in trained.iterdir()) == before


def _images(folder):
  folder.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (90, 120, 3), np.uint8)).save(
      folder / 'a.jpg')
  Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(
      folder / 'b.png')
  (folder / 'notes.jpg').write_text('not an image')
  return [str(folder / n) for n in ('a.jpg', 'notes.jpg', 'b.png')]


def test_predict_top5_names_and_a_bad_file(tmp_path, trained):
  from alexnet_jax.data import shapes10
  paths = _images(tmp_path / 'images')
  results = prediction.predict(trained, paths)
  assert [r['path'] for r in results] == paths
  assert 'not a readable' in results[1]['error']
  for result in (results[0], results[2]):
    guesses = result['top5']
    assert len(guesses) == 5
    assert len({g['label'] for g in guesses}) == 5
    assert all(g['class'] == shapes10.CLASS_NAMES[g['label']] for g in guesses)
    probabilities = [g['probability'] for g in guesses]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6
  text = prediction.format_results(results).splitlines()
  assert len(text) == 1 + 5 + 1 + 1 + 5
  assert text[6] == f'{paths[1]}: {results[1]["error"]}; skipped.'
  with pytest.raises(UserError, match='no/such.jpg'):
    prediction.predict(trained, [paths[0], str(tmp_path / 'no/such.jpg')])




def test_evaluate_without_step_takes_the_newest_left_after_a_rotation(
    tmp_path, trained, data_dir, monkeypatch):
  import shutil
  from alexnet_jax.run import checkpoint
  live = tmp_path / 'live'
  shutil.copytree(trained, live)
  damage = checkpoint.Checkpointer.damage
  def rotated(self, step):  # The run deletes step 12 just as it is read.
    if step == 12 and (live / 'checkpoints' / '12').exists():
      shutil.rmtree(live / 'checkpoints' / '12')
    return damage(self, step)
  monkeypatch.setattr(checkpoint.Checkpointer, 'damage', rotated)
  before = sorted(p.name for p in (live / 'checkpoints').iterdir())
  record = evaluation.evaluate_workdir(_settings(data_dir), live)
  assert record['step'] == 9  # The newest there was, not a blamed --step.
  assert sorted(p.name for p in (live / 'checkpoints').iterdir()) == [
      n for n in before if n != '12']  # Nothing else touched.
