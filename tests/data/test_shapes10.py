"""The built-in dataset: fast, deterministic, and not linearly separable.

The shapes carry the label, the colours do not: a linear classifier on pixels
stays near chance, while the same classifier on colour-free shape features
(a radial profile of the shape's mask) is near perfect.
"""

from pathlib import Path
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_jax.data import shapes10


def _prepare(data_dir, image_size, num_train, num_eval, seed=0):
  builder = shapes10.Shapes10(
      config=shapes10.builder_config(image_size, num_train, num_eval, seed),
      data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


def _arrays(builder, split):
  ds = builder.as_dataset(split=split, batch_size=-1)
  arrays = tfds.as_numpy(ds)
  return arrays['image'], arrays['label']


@pytest.fixture(scope='session')
def prepared(tmp_path_factory):
  """3,000 train and 1,000 validation images at 67 px, and the time taken."""
  start = time.perf_counter()
  builder = _prepare(tmp_path_factory.mktemp('data'), 67, 3_000, 1_000)
  return builder, time.perf_counter() - start


def test_prepares_in_seconds(prepared):
  builder, seconds = prepared
  # ~2 s on 2 idle cores; generous for a shared machine.
  assert seconds < 30
  assert builder.info.splits['train'].num_examples == 3_000
  assert builder.info.splits['validation'].num_examples == 1_000
  assert builder.info.features['label'].names == list(shapes10.CLASS_NAMES)
  images, labels = _arrays(builder, 'validation')
  assert images.shape == (1_000, 67, 67, 3) and images.dtype == np.uint8
  assert np.bincount(labels).tolist() == [100] * 10  # Balanced.


def test_parameters_name_the_folder(tmp_path):
  builder = _prepare(tmp_path, 33, 20, 10, seed=3)
  assert Path(builder.data_dir).parent.name == '33px_20_10_seed3'
  assert _arrays(builder, 'train')[0].shape == (20, 33, 33, 3)


def test_same_seed_same_images(tmp_path):
  first, _ = _arrays(_prepare(tmp_path / 'a', 67, 40, 20), 'train')
  again, _ = _arrays(_prepare(tmp_path / 'b', 67, 40, 20), 'train')
  other, _ = _arrays(_prepare(tmp_path / 'c', 67, 40, 20, seed=1), 'train')
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


def test_drawing_does_not_depend_on_chunks():
  whole, labels = shapes10.examples('train', 0, 50, 40, seed=0)
  part, part_labels = shapes10.examples('train', 17, 33, 40, seed=0)
  np.testing.assert_array_equal(whole[17:33], part)
  np.testing.assert_array_equal(labels[17:33], part_labels)


def _ridge_accuracy(train_x, train_y, test_x, test_y, l2=100.0):
  """Least squares onto one-hot labels: a linear classifier."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x = np.hstack([(train_x - mean) / std, np.ones((len(train_x), 1))])
  test_x = np.hstack([(test_x - mean) / std, np.ones((len(test_x), 1))])
  weights = np.linalg.solve(
      train_x.T @ train_x + l2 * np.eye(train_x.shape[1]),
      train_x.T @ np.eye(10)[train_y])
  return np.mean((test_x @ weights).argmax(1) == test_y)


def _pooled_pixels(images):
  # 4x4 means: 768 features for 3,000 examples, so that a low accuracy means
  # no linear signal, not overfitting.
  images = images[:, :64, :64].astype(np.float64)
  return images.reshape(len(images), 16, 4, 16, 4, 3).mean((2, 4)).reshape(
      len(images), -1)


def _radial_profile(images):
  """Colour-free shape features: the mask's radial histogram."""
  images = images.astype(np.float32)
  border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0],
                           images[:, :, -1]], axis=1)
  background = np.median(border, axis=1)[:, None, None]
  mask = np.linalg.norm(images - background, axis=-1) > 40
  rows, cols = np.mgrid[:images.shape[1], :images.shape[2]]
  features = []
  for one in mask:
    row, col = rows[one], cols[one]
    radius = np.hypot(row - row.mean(), col - col.mean()) / np.sqrt(one.sum())
    features.append(np.histogram(radius, np.linspace(0, 1.5, 25))[0]
                    / one.sum())
  return np.array(features)


def test_linear_classifier_on_pixels_stays_near_chance(prepared):
  builder, _ = prepared
  train_x, train_y = _arrays(builder, 'train')
  test_x, test_y = _arrays(builder, 'validation')
  pixels = _ridge_accuracy(_pooled_pixels(train_x), train_y,
                           _pooled_pixels(test_x), test_y)
  shapes = _ridge_accuracy(_radial_profile(train_x[:1_000]), train_y[:1_000],
                           _radial_profile(test_x), test_y)
  # Measured: pixels ~0.12 (chance 0.10), shape features ~0.99.
  assert pixels < 0.40
  assert shapes > 0.90


def test_a_dataset_finished_by_another_process_meanwhile_is_read_whole(
    tmp_path, monkeypatch):
  """The race of two processes on a fresh data_dir: this one builds its
  builder (nothing prepared yet), the other finishes preparing, then this one
  sees it prepared. The builder it returns must know the finished splits."""
  from configs import default  # pylint: disable=import-outside-toplevel
  from alexnet_jax.data import sources  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  config = default.get_config('tiny')
  config.data_dir = str(tmp_path)
  original = shapes10.Shapes10
  built = []

  def builder_then_the_other_process_finishes(*args, **kwargs):
    builder = original(*args, **kwargs)
    if not built:  # The other process's whole preparation, right after.
      original(*args, **kwargs).download_and_prepare()
    built.append(builder)
    return builder

  monkeypatch.setattr(shapes10, 'Shapes10', builder_then_the_other_process_finishes)
  builder = sources.shapes10_builder(Settings.from_config(config).data)
  assert len(built) >= 2
  assert set(builder.info.splits.keys()) == {'train', 'validation'}
