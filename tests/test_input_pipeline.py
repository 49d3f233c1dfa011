"""The input pipeline: batches, determinism, resumption, shards and datasets.

Everything runs offline on data made here: the built-in shapes10, TFDS's
mock data for a named dataset, folders of JPEGs written with PIL, and a
small subset of the real CIFAR-10 JPEGs in ../shared when present.
"""

import hashlib
import io

import numpy as np
from PIL import Image
import pytest

from alexnet_jax import input_pipeline
from alexnet_jax.errors import UserError
from configs import default

def _config(data_dir, **overrides):
  config = default.get_config('tiny')
  config.data_dir = str(data_dir)
  for key, value in overrides.items():
    parent = config
    *path, leaf = key.split('.')
    for name in path:
      parent = parent[name]
    parent[leaf] = value
  return config


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def _digests(batches):
  """One hash per real example, to compare sets of images."""
  digests = []
  for batch in batches:
    mask = batch.get('mask', np.ones(len(batch['image'])))
    digests += [hashlib.sha1(image.tobytes()).hexdigest()
                for image, keep in zip(batch['image'], mask) if keep]
  return digests


# shapes10: 100 train and 30 validation images, batches of 16, so an epoch
# is 6 steps (4 images dropped).


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture
def shapes(shapes_dir):
  return _config(shapes_dir, batch_size=16,
                 **{'input.shapes_train_examples': 100,
                    'input.shapes_eval_examples': 30})


def test_dataset_info(shapes):
  info = input_pipeline.dataset_info(shapes)
  assert info == input_pipeline.DatasetInfo(10, 100, 30)
  assert input_pipeline.steps_per_epoch(shapes, info) == 6


def test_train_batch_shapes_and_dtypes(shapes):
  batch = next(input_pipeline.train_batches(shapes))
  assert batch.keys() == {'image', 'label'}
  assert batch['image'].shape == (16, 67, 67, 3)
  assert batch['image'].dtype == np.float32
  assert batch['label'].shape == (16,) and batch['label'].dtype == np.int32
  assert set(batch['label']) <= set(range(10))
  # Normalised: roughly zero mean, unit spread.
  assert abs(batch['image'].mean()) < 0.5
  assert 0.5 < batch['image'].std() < 2


def test_train_batches_are_deterministic(shapes):
  first = _take(input_pipeline.train_batches(shapes), 8)
  again = _take(input_pipeline.train_batches(shapes), 8)
  _assert_batches_equal(first, again)
  # A new epoch is a new order and new crops.
  assert not np.array_equal(first[0]['image'], first[6]['image'])
  other = _take(input_pipeline.train_batches(_config(
      shapes.data_dir, seed=1, batch_size=16,
      **{'input.shapes_train_examples': 100,
         'input.shapes_eval_examples': 30})), 1)
  assert not np.array_equal(first[0]['image'], other[0]['image'])


def test_resume_yields_the_same_batches(shapes):
  reference = _take(input_pipeline.train_batches(shapes), 15)
  # Inside the first epoch, at and across the epoch boundary, two epochs on.
  for step in (1, 5, 6, 7, 13):
    resumed = input_pipeline.train_batches(shapes, start_step=step)
    _assert_batches_equal(_take(resumed, 2), reference[step:step + 2])


def test_processes_read_disjoint_shards(shapes):
  shapes.input.random_crop = False  # Same pixels for the same example.
  shapes.input.random_flip = False
  epoch = input_pipeline.steps_per_epoch(
      shapes, input_pipeline.dataset_info(shapes))
  shards = []
  for index in range(2):
    batches = _take(input_pipeline.train_batches(
        shapes, process_index=index, process_count=2), epoch)
    assert batches[0]['image'].shape == (8, 67, 67, 3)
    shards.append(set(_digests(batches)))
  assert len(shards[0]) == len(shards[1]) == epoch * 8
  assert not shards[0] & shards[1]


def test_eval_counts_every_example_once(shapes):
  batches = list(input_pipeline.eval_batches(shapes))
  assert [len(b['mask']) for b in batches] == [16, 16]
  assert sum(b['mask'].sum() for b in batches) == 30
  assert batches[-1]['mask'].tolist() == [1] * 14 + [0] * 2
  whole = sorted(_digests(batches))
  # Four processes: shards of 7 or 8, batches of 4, two batches each.
  parts = [list(input_pipeline.eval_batches(
      shapes, process_index=i, process_count=4)) for i in range(4)]
  assert {len(p) for p in parts} == {2}
  assert sum(b['mask'].sum() for p in parts for b in p) == 30
  assert sorted(d for p in parts for d in _digests(p)) == whole


def test_batch_size_must_split_over_processes(shapes):
  with pytest.raises(UserError, match='batch_size=16'):
    input_pipeline.train_batches(shapes, process_count=3)


def test_wrong_split_names_the_splits(shapes):
  shapes.eval_split = 'test'
  with pytest.raises(UserError, match="'test'.*validation"):
    input_pipeline.dataset_info(shapes)


# A named TFDS dataset, mocked.


def test_named_tfds_dataset_through_mock_data(mock_cifar10):
  config = _config(mock_cifar10, dataset='cifar10', eval_split='test')
  info = input_pipeline.dataset_info(config)
  batch = next(input_pipeline.train_batches(config))
  evals = list(input_pipeline.eval_batches(config))
  assert info == input_pipeline.DatasetInfo(10, 24, 24)
  assert batch['image'].shape == (8, 67, 67, 3)
  assert sum(b['mask'].sum() for b in evals) == 24


def test_missing_tfds_dataset_says_where_and_how(tmp_path):
  config = _config(tmp_path, dataset='cifar10', eval_split='test')
  with pytest.raises(UserError) as error:
    input_pipeline.dataset_info(config)
  message = str(error.value)
  assert "'cifar10'" in message and str(tmp_path) in message
  assert 'tfds build cifar10' in message and '\n' not in message


def test_missing_imagenet_names_the_manual_files(tmp_path):
  config = _config(tmp_path, dataset='imagenet2012')
  with pytest.raises(UserError) as error:
    input_pipeline.dataset_info(config)
  message = str(error.value)
  assert 'ILSVRC2012_img_train.tar' in message
  assert 'ILSVRC2012_img_val.tar' in message
  assert str(tmp_path / 'downloads' / 'manual') in message


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(UserError, match='no_such_dataset'):
    input_pipeline.dataset_info(_config(tmp_path, dataset='no_such_dataset'))


# Folders of images.


def _write_image(path, size, seed, fmt='JPEG'):
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,), np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(path, format=fmt)


def _image_folder(root, per_class=(6, 3)):
  """train/ and test/ with classes a, b, c; images of assorted shapes."""
  seed = 0
  for split, count in zip(('train', 'test'), per_class):
    for name in 'abc':
      for i in range(count):
        seed += 1
        size = (30 + 7 * (i % 3), 40 - 5 * (i % 2))  # (H, W), not square.
        fmt = 'PNG' if i == 0 else 'JPEG'
        _write_image(root / split / name / f'{i:04d}.{fmt.lower()}', size,
                     seed, fmt)
  return root


def _folder_config(root, **overrides):
  return _config(root, **{'dataset': 'image_folder', 'eval_split': 'test',
                          **overrides})


def test_image_folder(tmp_path):
  config = _folder_config(_image_folder(tmp_path))
  assert input_pipeline.dataset_info(config) == input_pipeline.DatasetInfo(
      3, 18, 9)
  batch = next(input_pipeline.train_batches(config))
  assert batch['image'].shape == (8, 67, 67, 3)
  assert set(batch['label']) <= {0, 1, 2}
  evals = list(input_pipeline.eval_batches(config))
  assert sum(b['mask'].sum() for b in evals) == 9
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in evals])
  assert sorted(labels) == [0] * 3 + [1] * 3 + [2] * 3
  assert input_pipeline.skipped_files(config) == []


def test_image_folder_resumes(tmp_path):
  config = _folder_config(_image_folder(tmp_path), batch_size=4)
  reference = _take(input_pipeline.train_batches(config), 6)  # 4 per epoch.
  resumed = input_pipeline.train_batches(config, start_step=3)
  _assert_batches_equal(_take(resumed, 3), reference[3:])


def _truncated_jpeg(path):
  buffer = io.BytesIO()
  Image.fromarray(np.full((40, 40, 3), 99, np.uint8)).save(buffer, 'JPEG')
  path.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])


@pytest.mark.parametrize('make_bad', [
    lambda root: (root / 'train' / 'd').mkdir() or root / 'train' / 'd',
    lambda root: (root / 'train' / 'a' / 'notes.txt').write_text('hi') and
    root / 'train' / 'a' / 'notes.txt',
    lambda root: (root / 'train' / 'b' / 'noise.jpg').write_bytes(
        np.random.default_rng(0).bytes(500)) and
    root / 'train' / 'b' / 'noise.jpg',
    lambda root: _truncated_jpeg(root / 'test' / 'c' / 'cut.jpg') or
    root / 'test' / 'c' / 'cut.jpg',
], ids=['empty-class', 'not-an-image', 'corrupt-jpeg', 'truncated-jpeg'])
def test_bad_folder_entries(tmp_path, make_bad):
  root = _image_folder(tmp_path)
  bad = make_bad(root)
  with pytest.raises(UserError) as error:
    input_pipeline.dataset_info(_folder_config(root))
  assert str(bad) in str(error.value)
  assert 'skip_bad_images' in str(error.value)

  config = _folder_config(root, **{'input.skip_bad_images': True})
  info = input_pipeline.dataset_info(config)
  assert input_pipeline.skipped_files(config) == [str(bad)]
  assert (info.num_train_examples, info.num_eval_examples) == (18, 9)
  assert sum(b['mask'].sum() for b in input_pipeline.eval_batches(config)) == 9
  next(input_pipeline.train_batches(config))


def test_image_folder_without_data_dir():
  config = _folder_config('')
  with pytest.raises(UserError, match='config.data_dir'):
    input_pipeline.dataset_info(config)


def test_image_folder_missing_split(tmp_path):
  config = _folder_config(_image_folder(tmp_path), eval_split='validation')
  with pytest.raises(UserError, match=r"'validation'.*\['test', 'train'\]"):
    input_pipeline.dataset_info(config)


# Real data: a few CIFAR-10 JPEGs from ../shared, when it is there.


def test_real_cifar10_jpegs_as_image_folder(cifar10_subset):
  config = _config(cifar10_subset, dataset='image_folder',
                   train_split='train', eval_split='test', batch_size=50)
  assert input_pipeline.dataset_info(config) == input_pipeline.DatasetInfo(
      10, 200, 200)
  batch = next(input_pipeline.train_batches(config))
  assert batch['image'].shape == (50, 67, 67, 3)
  assert batch['image'].std() > 0.3  # Real pictures, not blank.
  evals = list(input_pipeline.eval_batches(config))
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in evals])
  assert np.bincount(labels).tolist() == [20] * 10
