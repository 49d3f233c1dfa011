"""The input pipeline: batches, determinism, resumption, shards and datasets.

Everything runs offline on data made here: the built-in shapes10, TFDS's
mock data for a named dataset, folders of JPEGs written with PIL, and a
small subset of the real CIFAR-10 JPEGs in ../shared when present.
"""

import hashlib
import io
import json

import numpy as np
from PIL import Image
import pytest

from alexnet_jax.data import pipeline
from alexnet_jax.data import pixel_stats
from alexnet_jax.data import preprocess
from alexnet_jax.data import sources
from alexnet_jax.errors import UserError
from alexnet_jax.run.settings import Settings
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


def _data(config):
  """The typed input settings of a ConfigDict, as a run resolves them."""
  return Settings.from_config(config).data


def _info(config):
  return pipeline.dataset_info(_data(config))


def _train(config, **kwargs):
  return pipeline.train_batches(_data(config), seed=config.seed, **kwargs)


def _eval(config, **kwargs):
  return pipeline.eval_batches(_data(config), **kwargs)


def _normalised(batch):
  """The network's input, as the jitted steps compute it on the device."""
  from alexnet_jax.core import steps  # pylint: disable=import-outside-toplevel
  return np.asarray(steps.normalize(batch))


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


@pytest.fixture(scope='session')
def shapes_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture
def shapes(shapes_dir):
  return _config(shapes_dir, batch_size=16,
                 **{'input.shapes_train_examples': 100,
                    'input.shapes_eval_examples': 30})


def test_dataset_info(shapes):
  info = _info(shapes)
  assert info == pipeline.DatasetInfo(10, 100, 30)
  assert pipeline.steps_per_epoch(_data(shapes), info) == 6


def test_train_batch_shapes_and_dtypes(shapes):
  batch = next(_train(shapes))
  assert batch.keys() == {'image', 'pixel_offset', 'pixel_scale', 'label'}
  assert batch['image'].shape == (16, 67, 67, 3)
  assert batch['image'].dtype == np.uint8  # Normalised on the device.
  for key in ('pixel_offset', 'pixel_scale'):
    assert batch[key].shape == (16, 3) and batch[key].dtype == np.float32
  assert batch['label'].shape == (16,) and batch['label'].dtype == np.int32
  assert set(batch['label']) <= set(range(10))
  # Normalised: roughly zero mean, unit spread.
  image = _normalised(batch)
  assert image.dtype == np.float32 and abs(image.mean()) < 0.5
  assert 0.5 < image.std() < 2


def test_train_batches_are_deterministic(shapes):
  first = _take(_train(shapes), 8)
  again = _take(_train(shapes), 8)
  _assert_batches_equal(first, again)
  # A new epoch is a new order and new crops.
  assert not np.array_equal(first[0]['image'], first[6]['image'])
  other = _take(_train(_config(
      shapes.data_dir, seed=1, batch_size=16,
      **{'input.shapes_train_examples': 100,
         'input.shapes_eval_examples': 30})), 1)
  assert not np.array_equal(first[0]['image'], other[0]['image'])


def test_each_epoch_reads_every_example_once_in_its_own_order(shapes):
  """With crops and flips off, an image's pixels name the example: so the
  order itself, not the crops, must change from one epoch to the next."""
  shapes.input.random_crop = False
  shapes.input.random_flip = False
  epochs = [_digests(_take(_train(shapes, start_step=6 * e), 6)) for e in range(3)]
  for order in epochs:
    assert len(order) == len(set(order)) == 96  # 4 of 100 dropped, none twice.
  assert len(set().union(*epochs)) <= 100  # The same 100 examples throughout.
  assert epochs[0] != epochs[1] != epochs[2] != epochs[0]


def test_resume_yields_the_same_batches(shapes):
  reference = _take(_train(shapes), 15)
  # Inside the first epoch, at and across the epoch boundary, two epochs on.
  for step in (1, 5, 6, 7, 13):
    resumed = _train(shapes, start_step=step)
    _assert_batches_equal(_take(resumed, 2), reference[step:step + 2])


def test_processes_read_disjoint_shards(shapes):
  shapes.input.random_crop = False  # Same pixels for the same example.
  shapes.input.random_flip = False
  epoch = pipeline.steps_per_epoch(_data(shapes), _info(shapes))
  shards = []
  for index in range(2):
    batches = _take(_train(
        shapes, process_index=index, process_count=2), epoch)
    assert batches[0]['image'].shape == (8, 67, 67, 3)
    shards.append(set(_digests(batches)))
  assert len(shards[0]) == len(shards[1]) == epoch * 8
  assert not shards[0] & shards[1]


def test_eval_counts_every_example_once(shapes):
  batches = list(_eval(shapes))
  assert [len(b['mask']) for b in batches] == [16, 16]
  assert sum(b['mask'].sum() for b in batches) == 30
  assert batches[-1]['mask'].tolist() == [1] * 14 + [0] * 2
  whole = sorted(_digests(batches))
  # Four processes: shards of 7 or 8, batches of 4, two batches each.
  parts = [list(_eval(
      shapes, process_index=i, process_count=4)) for i in range(4)]
  assert {len(p) for p in parts} == {2}
  assert sum(b['mask'].sum() for p in parts for b in p) == 30
  assert sorted(d for p in parts for d in _digests(p)) == whole


def test_batch_size_must_split_over_processes(shapes):
  with pytest.raises(UserError, match='batch_size=16'):
    _train(shapes, process_count=3)


def test_wrong_split_names_the_splits(shapes):
  shapes.eval_split = 'test'
  with pytest.raises(UserError, match="'test'.*validation"):
    _info(shapes)


# A named TFDS dataset, mocked.


def test_named_tfds_dataset_through_mock_data(mock_cifar10):
  config = _config(mock_cifar10, dataset='cifar10', eval_split='test')
  info = _info(config)
  batch = next(_train(config))
  evals = list(_eval(config))
  assert info == pipeline.DatasetInfo(10, 24, 24)
  assert batch['image'].shape == (8, 67, 67, 3)
  assert sum(b['mask'].sum() for b in evals) == 24


def test_missing_tfds_dataset_says_where_and_how(tmp_path):
  config = _config(tmp_path, dataset='cifar10', eval_split='test')
  with pytest.raises(UserError) as error:
    _info(config)
  message = str(error.value)
  assert "'cifar10'" in message and str(tmp_path) in message
  assert 'tfds build cifar10' in message and '\n' not in message


def test_missing_imagenet_names_the_manual_files(tmp_path):
  config = _config(tmp_path, dataset='imagenet2012')
  with pytest.raises(UserError) as error:
    _info(config)
  message = str(error.value)
  assert 'ILSVRC2012_img_train.tar' in message
  assert 'ILSVRC2012_img_val.tar' in message
  assert str(tmp_path / 'downloads' / 'manual') in message


def test_unknown_dataset_name(tmp_path):
  with pytest.raises(UserError, match='no_such_dataset'):
    _info(_config(tmp_path, dataset='no_such_dataset'))


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
  assert _info(config) == pipeline.DatasetInfo(
      3, 18, 9)
  batch = next(_train(config))
  assert batch['image'].shape == (8, 67, 67, 3)
  assert set(batch['label']) <= {0, 1, 2}
  evals = list(_eval(config))
  assert sum(b['mask'].sum() for b in evals) == 9
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in evals])
  assert sorted(labels) == [0] * 3 + [1] * 3 + [2] * 3
  assert pipeline.skipped_files(_data(config)) == []


def test_image_folder_resumes(tmp_path):
  config = _folder_config(_image_folder(tmp_path), batch_size=4)
  reference = _take(_train(config), 6)  # 4 per epoch.
  resumed = _train(config, start_step=3)
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
    _info(_folder_config(root))
  assert str(bad) in str(error.value)
  assert 'skip_bad_images' in str(error.value)

  config = _folder_config(root, **{'input.skip_bad_images': True})
  info = _info(config)
  assert pipeline.skipped_files(_data(config)) == [str(bad)]
  assert (info.num_train_examples, info.num_eval_examples) == (18, 9)
  assert sum(b['mask'].sum() for b in _eval(config)) == 9
  next(_train(config))


def test_image_folder_slices_take_the_first_images_of_each_class(tmp_path):
  # TFDS's slice syntax on a folder: the classes in turn, first files first.
  config = _folder_config(_image_folder(tmp_path), train_split='train[:6]',
                          eval_split='test[34%:]', batch_size=4)
  folder = sources.image_folder(_data(config))
  names = [p.rsplit('/', 2)[1] + '/' + p.rsplit('/', 1)[1]
           for p in folder.paths['train[:6]']]
  assert names == ['a/0000.png', 'a/0001.jpeg', 'b/0000.png', 'b/0001.jpeg',
                   'c/0000.png', 'c/0001.jpeg']
  assert folder.labels['train[:6]'] == [0, 0, 1, 1, 2, 2]
  assert folder.labels['test[34%:]'] == [0, 0, 1, 1, 2, 2]  # 34% of 9: 3.
  assert _info(config) == pipeline.DatasetInfo(3, 6, 6)
  assert len(next(_train(config))['image']) == 4


def test_a_class_folder_that_one_split_lacks_is_refused(tmp_path, caplog):
  # In test/ and not in train/: refused. In train/ and not in test/: logged.
  root = _image_folder(tmp_path)
  _write_image(root / 'test' / 'd' / '0000.jpg', (30, 30), 99)
  with pytest.raises(UserError) as error:
    _info(_folder_config(root))
  message = str(error.value)
  assert (f'1 class folders in {root / "test"}/ that {root / "train"}/ lacks (d)'
          in message and '\n' not in message)
  (root / 'test' / 'd').rename(root / 'train' / 'd')
  assert _info(_folder_config(root)) == pipeline.DatasetInfo(4, 19, 9)
  assert 'classes of train/ have no folder in test/ (d)' in caplog.text


def test_image_folder_without_data_dir():
  config = _folder_config('')
  with pytest.raises(UserError, match='config.data_dir'):
    _info(config)


def test_image_folder_missing_split(tmp_path):
  config = _folder_config(_image_folder(tmp_path), eval_split='validation')
  with pytest.raises(UserError, match=r"'validation'.*\['test', 'train'\]"):
    _info(config)


# Real data: a few CIFAR-10 JPEGs from ../shared, when it is there.


def test_real_cifar10_jpegs_as_image_folder(cifar10_subset):
  config = _config(cifar10_subset, dataset='image_folder',
                   train_split='train', eval_split='test', batch_size=50)
  assert _info(config) == pipeline.DatasetInfo(
      10, 200, 200)
  batch = next(_train(config))
  assert batch['image'].shape == (50, 67, 67, 3)
  assert _normalised(batch).std() > 0.3  # Real pictures, not blank.
  evals = list(_eval(config))
  labels = np.concatenate([b['label'][b['mask'] > 0] for b in evals])
  assert np.bincount(labels).tolist() == [20] * 10


def test_cifar10_config_reads_tfds_by_default_and_a_folder_when_told(
    mock_cifar10, cifar10_subset):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from configs import cifar10  # pylint: disable=import-outside-toplevel
  config = cifar10.get_config('cifar_4layer,small')
  assert (config.dataset, config.data_dir) == ('cifar10', '')
  assert (config.train_split, config.eval_split) == cifar10.SMALL
  for split in cifar10.SMALL:  # Slices TFDS reads (the mock has 24 images).
    tfds.core.ReadInstruction.from_spec(split)
  config.data_dir = str(mock_cifar10)
  config.train_split, config.eval_split = 'train[:12]', 'test'
  assert _info(config) == pipeline.DatasetInfo(10, 12, 24)
  config.train_split, config.eval_split = cifar10.SMALL
  # The form sweeps use: --config.dataset=image_folder --config.data_dir=DIR.
  config.dataset, config.data_dir = 'image_folder', str(cifar10_subset)
  assert _info(config) == pipeline.DatasetInfo(10, 200, 200)
  config.train_split = 'train[:50]'  # 5 of each class.
  labels = sources.image_folder(_data(config)).labels['train[:50]']
  assert np.bincount(labels).tolist() == [5] * 10


# Sec. 4.1's colour shift, Sec. 2's normalisation, the ten-patch test.


def test_pca_shift_has_the_covariance_of_sec_4_1(tmp_path):
  """4,000 draws of [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T with a_i ~ N(0, 0.1):
  covariance P diag(0.1 l_i)^2 P^T (0..1 units), here from a stats file with
  a rotated basis, within the sampling error."""
  import tensorflow as tf
  vectors = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
  values = np.array([0.3, 0.05, 0.01])
  stats_file = tmp_path / 'stats.json'
  stats_file.write_text(json.dumps({
      'mean_rgb': [100, 110, 120], 'stddev_rgb': [60, 60, 60],
      'eigenvalues': values.tolist(), 'eigenvectors': vectors.tolist()}))
  config = _config(tmp_path, **{'input.pca_lighting': 0.1,
                                'input.stats_file': str(stats_file)})
  stats = pixel_stats.image_stats(_data(config))
  seeds = tf.data.Dataset.range(4000).map(
      lambda i: tf.stack([i, 7 * i + 1]))
  shifts = np.stack(list(seeds.map(
      lambda seed: preprocess.pca_shift(_data(config), stats, seed))
      .as_numpy_iterator())) / 255.0
  assert abs(shifts.mean(0)).max() < 4 * 0.1 * 0.3 / np.sqrt(4000)
  # In the eigenbasis: variances (0.1 l_i)^2, correlations near 0.
  cov = vectors.T @ np.cov(shifts.T) @ vectors
  expected = (0.1 * values) ** 2
  np.testing.assert_allclose(np.diag(cov), expected, rtol=0.1)  # 4.5 sigma.
  corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
  assert abs(corr - np.eye(3)).max() < 0.07  # 4.4 sigma.


def test_colour_shift_is_one_colour_per_image_and_off_when_zero(shapes_dir):
  """With mean_pixel normalisation and no crop or flip, an image without the
  shift is its uint8 pixels minus the mean pixel; the shift (carried in
  pixel_offset, added on the device) adds one RGB vector to every pixel,
  different per image, same on every rerun."""
  settings = {'batch_size': 16, 'input.shapes_train_examples': 100,
              'input.shapes_eval_examples': 30, 'input.random_crop': False,
              'input.random_flip': False, 'input.normalization': 'mean_pixel'}
  off = next(_train(_config(shapes_dir, **settings)))
  on_config = _config(shapes_dir, **settings, **{'input.pca_lighting': 0.1})
  on = next(_train(on_config))
  assert pixel_stats.image_stats(_data(on_config)) is None  # ImageNet's values.
  np.testing.assert_array_equal(on['image'], off['image'])  # Pixels as read.
  np.testing.assert_allclose(
      _normalised(off), off['image'] - np.float32(
          pixel_stats.IMAGENET_MEAN_PIXEL), atol=1e-4)
  shift = _normalised(on) - _normalised(off)
  per_image = shift.mean(axis=(1, 2))  # (16, 3)
  np.testing.assert_allclose(
      shift, np.broadcast_to(per_image[:, None, None], shift.shape), atol=1e-3)
  assert len({tuple(np.round(s, 3)) for s in per_image}) == 16
  # Mostly along ImageNet's first component: 0.1 * 0.2175 * 255 = 5.5 levels.
  assert 1 < np.abs(per_image).mean() < 15
  # Drawn from the step: a rerun, and a resume at step 1, see the same.
  again = _take(_train(on_config), 2)
  _assert_batches_equal(again[:1], [on])
  resumed = next(_train(on_config, start_step=1))
  _assert_batches_equal([resumed], again[1:])


def test_normalisations(shapes_dir, tmp_path):
  settings = {'input.shapes_train_examples': 100,
              'input.shapes_eval_examples': 30}
  standard = next(_eval(_config(shapes_dir, **settings)))
  mean_pixel = next(_eval(_config(
      shapes_dir, **settings, **{'input.normalization': 'mean_pixel'})))
  pixels = standard['image'].astype(np.float64)
  np.testing.assert_array_equal(mean_pixel['image'], standard['image'])
  np.testing.assert_allclose(
      _normalised(standard),
      (pixels - pixel_stats.STANDARDIZE_MEAN_RGB)
      / pixel_stats.STANDARDIZE_STDDEV_RGB, atol=1e-5)
  np.testing.assert_allclose(
      _normalised(mean_pixel),
      pixels - pixel_stats.IMAGENET_MEAN_PIXEL, atol=1e-4)
  stats_file = tmp_path / 'stats.json'
  stats_file.write_text(json.dumps({
      'mean_rgb': [10, 20, 30], 'stddev_rgb': [2, 4, 8],
      'eigenvalues': [1, 0, 0], 'eigenvectors': np.eye(3).tolist()}))
  own = next(_eval(_config(
      shapes_dir, **settings, **{'input.stats_file': str(stats_file)})))
  np.testing.assert_allclose(_normalised(own),
                             (pixels - [10, 20, 30]) / [2, 4, 8], atol=1e-4)


@pytest.mark.parametrize('content, expected', [
    (None, 'does not exist'),
    ('{"mean_rgb": [1, 2', 'not readable JSON'),
    ('{"mean_rgb": [1, 2], "stddev_rgb": [1, 1, 1], "eigenvalues": [1, 1, 1],'
     ' "eigenvectors": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}', "'mean_rgb' as 3"),
    ('{"mean_rgb": [1, 2, 3], "stddev_rgb": [1, 1, 1], "eigenvalues": [1, 1, 1],'
     ' "eigenvectors": [1, 0, 0]}', "'eigenvectors' as 3x3"),
    ('[1, 2, 3]', "'mean_rgb' as 3"),
], ids=['missing', 'malformed', 'short-mean', 'flat-vectors', 'not-an-object'])
def test_bad_stats_file_is_one_paragraph(tmp_path, content, expected):
  path = tmp_path / 'stats.json'
  if content is not None:
    path.write_text(content)
  config = _config(tmp_path, **{'input.stats_file': str(path)})
  with pytest.raises(UserError) as error:
    _info(config)
  message = str(error.value)
  assert expected in message and str(path) in message
  assert 'alexnet_jax.data_stats' in message and '\n' not in message


def test_bad_normalisation_and_lighting_values(tmp_path):
  with pytest.raises(UserError, match="'mean_pixel'"):
    _info(
        _config(tmp_path, **{'input.normalization': 'mean'}))
  with pytest.raises(UserError, match='pca_lighting'):
    _info(
        _config(tmp_path, **{'input.pca_lighting': -0.1}))


def _coordinates(height, width):
  """uint8 (H, W, 3): red = row, green = column, blue = 7."""
  rows, cols = np.mgrid[:height, :width]
  return np.stack([rows, cols, np.full_like(rows, 7)], -1).astype(np.uint8)


def test_ten_patches_are_the_corner_and_centre_windows():
  import tensorflow as tf
  image = _coordinates(77, 77)
  patches = preprocess.ten_crops(tf.constant(image), 67, 77).numpy()
  assert patches.shape == (10, 67, 67, 3) and patches.dtype == np.float32
  windows = [image[:67, :67], image[:67, 10:], image[10:, :67],
             image[10:, 10:], image[5:72, 5:72]]
  for i, window in enumerate(windows):
    np.testing.assert_array_equal(patches[i], window)
    np.testing.assert_array_equal(patches[5 + i], window[:, ::-1])
  # Twice the size: each window is twice as large in the image, then resized.
  large = np.repeat(np.repeat(image, 2, 0), 2, 1)
  patches = preprocess.ten_crops(tf.constant(large), 67, 77).numpy()
  for i, (top, left) in enumerate([(0, 0), (0, 20), (20, 0), (20, 20),
                                   (10, 10)]):
    expected = tf.image.resize(large[top:top + 134, left:left + 134],
                               (67, 67)).numpy()
    np.testing.assert_array_equal(patches[i], expected)


def test_training_patches_are_drawn_windows_flipped_about_half_the_time(
    tmp_path):
  """Sec. 4.1 on a coordinate image of exactly R x R (77 at the tiny size,
  so nothing is resampled): every training patch is a 67 x 67 window of it
  at an offset in 0..10, as it is or mirrored, mirrored about half the time,
  at offsets that vary."""
  image = _coordinates(77, 77)
  for split, count in (('train', 64), ('test', 1)):
    for i in range(count):
      (tmp_path / split / 'a').mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(tmp_path / split / 'a' / f'{i:02d}.png')
  config = _folder_config(tmp_path, batch_size=16)
  assert _data(config).square_size == 77
  patches = np.concatenate(
      [b['image'] for b in _take(_train(config), 4)])
  flips, offsets = 0, set()
  for patch in patches:
    top, left = int(patch[0, 0, 0]), int(patch[0, :, 1].min())
    window = image[top:top + 67, left:left + 67]
    flipped = patch[0, 0, 1] > patch[0, -1, 1]
    np.testing.assert_array_equal(patch, window[:, ::-1] if flipped else window)
    assert 0 <= top <= 10 and 0 <= left <= 10
    flips += flipped
    offsets.add((top, left))
  assert 16 <= flips <= 48  # Binomial(64, 1/2): 4 standard deviations.
  assert len(offsets) >= 20


def test_ten_patch_evaluation_batches(tmp_path):
  """Through eval_batches: a non-square PNG's centre square, ten patches,
  the fifth equal to the centre patch of the usual evaluation."""
  image = _coordinates(77, 97)  # Centre square: columns 10..86.
  for split in ('train', 'test'):
    (tmp_path / split / 'a').mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / split / 'a' / 'x.png')
  config = _folder_config(tmp_path, batch_size=2,
                          **{'input.normalization': 'mean_pixel'})
  ten = next(_eval(config, ten_crop=True))
  centre = next(_eval(config))
  assert ten['image'].shape == (2, 10, 67, 67, 3)
  assert ten['mask'].tolist() == [1, 0]
  np.testing.assert_array_equal(ten['image'][0, 4], centre['image'][0])
  pixels = ten['image'][0]
  square = image[:, 10:87]
  np.testing.assert_array_equal(pixels[3], square[10:, 10:])
  np.testing.assert_array_equal(pixels[6], square[:67, 10:][:, ::-1])
  normalised = _normalised(ten)
  np.testing.assert_allclose(
      normalised[0], pixels - np.float32(pixel_stats.IMAGENET_MEAN_PIXEL),
      atol=1e-4)
  assert not normalised[1].any()  # Padding.


def test_jpeg_windows_decode_as_the_whole_image_does():
  """decode_and_crop_jpeg alone differs from the full decode in a window's
  last column (4:2:0 chroma); with the margin it is equal, bit for bit."""
  import tensorflow as tf
  rng = np.random.default_rng(0)
  for subsampling in (0, 1, 2):  # 4:4:4, 4:2:2, 4:2:0
    pixels = np.cumsum(rng.integers(0, 40, (120, 160, 3)), 1) % 256
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(
        buffer, 'JPEG', quality=90, subsampling=subsampling)
    encoded = tf.constant(buffer.getvalue())
    whole = tf.io.decode_image(encoded, channels=3).numpy()
    for _ in range(10):
      top, left = rng.integers(0, 60), rng.integers(0, 80)
      height, width = rng.integers(1, 120 - top), rng.integers(1, 160 - left)
      window = preprocess.decode_window(
          encoded, lambda shape: (tf.constant([top, left], tf.int32),
                                  tf.constant([height, width], tf.int32)))
      np.testing.assert_array_equal(
          window.numpy(), whole[top:top + height, left:left + width])


def test_data_stats_match_numpy(tmp_path):
  """Mean pixel and RGB covariance of the centre squares (77 px at the tiny
  size, so nothing is resampled), against numpy over the same pixels."""
  rng = np.random.default_rng(0)
  squares = []
  for i in range(12):
    width = 77 + 8 * (i % 3)
    base = rng.normal([120, 100, 80], [50, 40, 30], (1, 1, 3))
    pixels = np.clip(base + rng.normal(0, 25, (77, width, 3)), 0, 255)
    pixels = pixels.astype(np.uint8)
    path = tmp_path / 'train' / f'c{i % 2}' / f'{i}.png'
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    left = (width - 77) // 2
    squares.append(pixels[:, left:left + 77].reshape(-1, 3))
  (tmp_path / 'test' / 'c0').mkdir(parents=True)
  Image.fromarray(squares[0].reshape(77, 77, 3)).save(tmp_path / 'test' / 'c0' / 'x.png')
  config = _folder_config(tmp_path)
  stats, covariance = pixel_stats.statistics(pixel_stats.pixel_sums(
      pipeline.square_images(_data(config))))
  pixels = np.concatenate(squares).astype(np.float64)
  np.testing.assert_allclose(stats.mean_rgb, pixels.mean(0), rtol=1e-12)
  reference = np.cov(pixels.T, bias=True)
  np.testing.assert_allclose(covariance * 255**2, reference, rtol=1e-9)
  np.testing.assert_allclose(stats.stddev_rgb, pixels.std(0), rtol=1e-9)
  values, vectors = np.array(stats.eigenvalues), np.array(stats.eigenvectors)
  assert values[0] >= values[1] >= values[2] > 0
  np.testing.assert_allclose(reference / 255**2 @ vectors, vectors * values,
                             atol=1e-12)
  np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-12)
  # Written and read back as a stats file.
  (tmp_path / 'stats.json').write_text(json.dumps(stats.to_json()))
  assert pixel_stats.load_stats(str(tmp_path / 'stats.json')) == stats


def test_pixel_constants_are_the_published_values_in_rgb_order():
  # Pinned to the sources, not to the constants themselves: Caffe's ImageNet
  # mean pixel (ilsvrc_2012_mean.npy, R G B) and torchvision's mean and std.
  from alexnet_jax.data import pixel_stats
  np.testing.assert_allclose(pixel_stats.IMAGENET_MEAN_PIXEL,
                             (122.68, 116.67, 104.01), atol=0.006)
  np.testing.assert_allclose(np.array(pixel_stats.STANDARDIZE_STDDEV_RGB) / 255,
                             (0.229, 0.224, 0.225), atol=1e-12)
  np.testing.assert_allclose(np.array(pixel_stats.STANDARDIZE_MEAN_RGB) / 255,
                             (0.485, 0.456, 0.406), atol=1e-12)
