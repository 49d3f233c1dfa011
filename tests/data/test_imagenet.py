"""ImageNet both ways a user has it, on tiny synthetic copies of its files.

The validation images are ILSVRC2012_val_00000001..4, whose true classes are
the first lines of TFDS's own validation label list (read from the installed
package, not copied): TFDS labels the images of ILSVRC2012_img_val.tar by
their sorted names against that list, so a tar of the first four images is
labelled as in the full one, and the builder can be run at this size.
"""

import io
import tarfile

import numpy as np
from PIL import Image
import pytest

from alexnet_jax.data import pipeline
from alexnet_jax.data import sources
from alexnet_jax.errors import UserError
from alexnet_jax.run.settings import Settings
from configs import default

VAL_IMAGES = 4


def _tfds_file(name):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds.core.tfds_path(f'datasets/imagenet2012/{name}').read_text().split()


def _val_wnids():
  return _tfds_file('validation_labels.txt')[:VAL_IMAGES]


def _jpeg(seed):
  pixels = np.random.default_rng(seed).integers(0, 256, (40, 50, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, 'JPEG')
  return buffer.getvalue()


def _val_name(index):
  return f'ILSVRC2012_val_{index:08d}.JPEG'


def _extracted(root, val='flat'):
  """train/<wnid>/ (two images each) and val/ flat or by class."""
  wnids = _val_wnids()
  for k, wnid in enumerate(wnids):
    for i in range(2):
      path = root / 'train' / wnid / f'{wnid}_{i}.JPEG'
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(_jpeg(10 * k + i))
  for index, wnid in enumerate(wnids, 1):
    path = root / 'val' / (wnid if val == 'by_class' else '') / _val_name(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_jpeg(100 + index))
  return root


def _devkit(root, wnids):
  """meta.mat and the ground truth, with the devkit's own (unsorted) IDs:
  here the wnids numbered in reverse order, and one synset with children
  (not a class) among them."""
  import scipy.io  # pylint: disable=import-outside-toplevel
  order = sorted(set(wnids), reverse=True)
  rows = [(number, wnid, f'words of {wnid}', 0)
          for number, wnid in enumerate(order, 1)]
  rows.append((len(rows) + 1, 'n00001740', 'entity', 3))
  synsets = np.array(rows, dtype=[('ILSVRC2012_ID', 'O'), ('WNID', 'O'),
                                  ('words', 'O'), ('num_children', 'O')])
  data = root / 'ILSVRC2012_devkit_t12' / 'data'
  data.mkdir(parents=True)
  scipy.io.savemat(data / 'meta.mat', {'synsets': synsets})
  (data / 'ILSVRC2012_validation_ground_truth.txt').write_text(
      ''.join(f'{order.index(w) + 1}\n' for w in wnids))
  return data


def _config(root, **overrides):
  config = default.get_config('tiny')
  config.dataset, config.data_dir = 'image_folder', str(root)
  config.eval_split, config.batch_size = 'val', 4
  config.model.num_classes = VAL_IMAGES
  config.update(overrides)
  return Settings.from_config(config).data


def _eval_labels(cfg):
  folder = sources.image_folder(cfg)
  return {p.rsplit('/', 1)[1]: label
          for p, label in zip(folder.paths['val'], folder.labels['val'])}


def _expected_labels():
  """Each validation image's index among the sorted wnids."""
  wnids = _val_wnids()
  return {_val_name(i): sorted(wnids).index(w) for i, w in enumerate(wnids, 1)}


@pytest.mark.parametrize('labels', ['devkit', 'loc_csv', 'by_class'])
def test_extracted_folders_label_by_sorted_wnid(tmp_path, labels):
  root = _extracted(tmp_path, 'by_class' if labels == 'by_class' else 'flat')
  wnids = _val_wnids()
  if labels == 'devkit':
    _devkit(root, wnids)
  elif labels == 'loc_csv':
    (root / 'LOC_val_solution.csv').write_text('ImageId,PredictionString\n' + ''.join(
        f'{_val_name(i)[:-5]},{w} 1 2 30 40 {w} 5 6 7 8\n'
        for i, w in enumerate(wnids, 1)))
  cfg = _config(root)
  assert pipeline.class_names(cfg) == tuple(sorted(wnids))
  assert _eval_labels(cfg) == _expected_labels()
  assert pipeline.dataset_info(cfg) == sources.DatasetInfo(VAL_IMAGES, 8, 4)
  batch = next(pipeline.train_batches(cfg, seed=0))
  assert batch['image'].shape == (4, 67, 67, 3)


def test_ground_truth_without_meta_mat_is_refused(tmp_path):
  root = _extracted(tmp_path)
  data = _devkit(root, _val_wnids())
  (data / 'meta.mat').unlink()
  with pytest.raises(UserError) as error:
    pipeline.dataset_info(_config(root))
  message = str(error.value)
  assert f'{root / "val"} holds images but no class folders' in message
  assert 'no meta.mat beside it' in message and 'LOC_val_solution.csv' in message


@pytest.mark.parametrize('problem', ['no_labels', 'val_class_train_lacks',
                                     'wnid_list', 'no_val'])
def test_bad_extracted_imagenet_says_what_was_expected_where(tmp_path, problem):
  root = _extracted(tmp_path)
  data = _devkit(root, _val_wnids())
  expected = {
      'no_labels': 'holds images but no class folders, and no labels',
      'val_class_train_lacks': 'that ' + str(root / 'train') + '/ lacks (' + _val_wnids()[0],
      'wnid_list': 'do not match the wnid list beside them (4, '
                   'LOC_synset_mapping.txt or meta.mat): 1 listed without a folder',
      'no_val': "has no split folder 'val'",
  }[problem]
  if problem == 'no_labels':
    for path in data.iterdir():
      path.unlink()
  elif problem in ('val_class_train_lacks', 'wnid_list'):
    for path in (root / 'train' / _val_wnids()[0]).iterdir():
      path.unlink()
    (root / 'train' / _val_wnids()[0]).rmdir()
    if problem == 'val_class_train_lacks':
      (data / 'meta.mat').rename(root / 'meta.keep')  # Only the wnid check.
      (root / 'LOC_val_solution.csv').write_text('ImageId,PredictionString\n' + ''.join(
          f'{_val_name(i)[:-5]},{w} 1 2 3 4\n' for i, w in enumerate(_val_wnids(), 1)))
  else:
    for path in (root / 'val').iterdir():
      path.unlink()
    (root / 'val').rmdir()
  with pytest.raises(UserError) as error:
    pipeline.dataset_info(_config(root))
  assert expected in str(error.value) and '\n' not in str(error.value)


def _official_tars(manual):
  """ILSVRC2012_img_train.tar (one tar per class, as distributed) and
  ILSVRC2012_img_val.tar (the images, flat)."""
  manual.mkdir(parents=True)

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  with tarfile.open(manual / 'ILSVRC2012_img_train.tar', 'w') as train:
    for k, wnid in enumerate(_val_wnids()):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as per_class:
        for i in range(2):
          add(per_class, f'{wnid}_{i}.JPEG', _jpeg(10 * k + i))
      add(train, f'{wnid}.tar', inner.getvalue())
  with tarfile.open(manual / 'ILSVRC2012_img_val.tar', 'w') as val:
    for index in range(1, VAL_IMAGES + 1):
      add(val, _val_name(index), _jpeg(100 + index))


@pytest.mark.slow(seconds=20)
def test_tfds_imagenet2012_from_the_official_tars(tmp_path):
  """Prepared once from the manual folder as `tfds build` does, then read
  with the paper's config: labels are the sorted-wnid indices, as the
  extracted folders' are."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  data_dir = tmp_path / 'tfds'
  config = default.get_config()  # The paper's: imagenet2012, 227 pixels.
  config.data_dir, config.batch_size = str(data_dir), 4
  with pytest.raises(UserError, match='ILSVRC2012_img_train.tar'):
    pipeline.dataset_info(Settings.from_config(config).data)  # Not yet there.
  manual = data_dir / 'downloads' / 'manual'
  _official_tars(manual)
  builder = tfds.builder('imagenet2012', data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  cfg = Settings.from_config(config).data
  assert pipeline.dataset_info(cfg) == sources.DatasetInfo(1000, 8, 4)
  names = pipeline.class_names(cfg)
  assert list(names) == sorted(names) == _tfds_file('labels.txt')
  labels = {}
  for example in builder.as_dataset(split='validation').as_numpy_iterator():
    labels[example['file_name'].decode()] = names[example['label']]
  assert labels == {_val_name(i): w for i, w in enumerate(_val_wnids(), 1)}
  batch = next(pipeline.train_batches(cfg, seed=0))
  assert batch['image'].shape == (4, 227, 227, 3)
  # The same images extracted, read as a folder: the same class per image.
  folder = _config(_extracted(tmp_path / 'folders'))
  _devkit(tmp_path / 'folders', _val_wnids())
  folder_names = pipeline.class_names(folder)
  assert {name: folder_names[label] for name, label in
          _eval_labels(folder).items()} == labels


def test_class_names_for_people_from_the_synset_list_or_meta_mat(tmp_path):
  # predict names each wnid with these words where either file is at hand.
  from alexnet_jax.data import imagenet  # pylint: disable=import-outside-toplevel
  root = _extracted(tmp_path)
  assert imagenet.synset_words(root, 'train') is None
  _devkit(root, _val_wnids())
  assert imagenet.synset_words(root, 'train') == {
      w: f'words of {w}' for w in _val_wnids()}  # The leaves only.
  (root / 'LOC_synset_mapping.txt').write_text(
      ''.join(f'{w} a name, another name\n' for w in _val_wnids()))
  assert imagenet.synset_words(root, 'train') == {
      w: 'a name, another name' for w in _val_wnids()}
