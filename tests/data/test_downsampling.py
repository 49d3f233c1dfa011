"""Sec. 2's down-sampling written once (`python -m alexnet_jax.downsample`)."""

import io

import numpy as np
from PIL import Image
import pytest

from alexnet_jax.data import downsampling
from alexnet_jax.data import pipeline
from alexnet_jax.errors import UserError
from alexnet_jax.run.settings import Settings
from configs import default


def _data(data_dir, **overrides):
  config = default.get_config('tiny')  # R = 77 for 67-pixel patches.
  config.dataset, config.data_dir = 'image_folder', str(data_dir)
  config.eval_split = 'test'
  config.update(overrides)
  return Settings.from_config(config).data


def _coordinates(height, width):
  """uint8 (H, W, 3): red = row, green = column, blue = 7."""
  rows, cols = np.mgrid[:height, :width]
  return np.stack([rows, cols, np.full_like(rows, 7)], -1).astype(np.uint8)


def _folder(root):
  pixels = {'train/a/wide.png': _coordinates(77, 97),  # Centre: columns 10..86.
            'train/b/large.jpg': np.random.default_rng(0).integers(
                0, 256, (160, 200, 3), np.uint8),
            'test/a/tall.png': _coordinates(97, 77)}
  for name, image in pixels.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / name)
  return pixels


def _read(path):
  return np.asarray(Image.open(path), np.int32)


def test_writes_each_centre_square_at_r_as_an_image_folder(tmp_path):
  source = _folder(tmp_path / 'src')
  config = _data(tmp_path / 'src')
  written = downsampling.write_dataset(config, tmp_path / 'out',
                                       [config.train_split, config.eval_split])
  assert written == {'train': 2, 'test': 1}
  out = tmp_path / 'out'
  assert sorted(str(p.relative_to(out)) for p in out.rglob('*.jpg')) == [
      'test/a/tall.jpg', 'train/a/wide.jpg', 'train/b/large.jpg']
  assert not (tmp_path / 'out.partial').exists()
  # At R = 77 the coordinate images' centre squares are not resampled: what
  # comes back is the square, up to JPEG's error at quality 95.
  wide = _read(out / 'train/a/wide.jpg')
  assert wide.shape == (77, 77, 3)
  square = source['train/a/wide.png'][:, 10:87].astype(np.int32)
  assert np.abs(wide - square).mean() < 1.0
  tall = _read(out / 'test/a/tall.jpg')
  assert np.abs(tall - source['test/a/tall.png'][10:87].astype(np.int32)).mean() < 1.0
  # The large JPEG: its centre square resized to 77, as the pipeline sees it.
  expected = next(pipeline.square_pixels(config, 'train')[0].skip(
      1).as_numpy_iterator())['image'].astype(np.int32)
  large = _read(out / 'train/b/large.jpg')
  assert large.shape == (77, 77, 3) and np.abs(large - expected).mean() < 4.0
  # A dataset the pipeline reads, with the same classes; each training
  # patch of an R x R file is its window, not resized.
  config_out = _data(out)
  assert pipeline.dataset_info(config_out) == (
      pipeline.dataset_info(config))
  config_out = _data(out, batch_size=2)
  batch = next(pipeline.train_batches(config_out, seed=0))
  assert batch['image'].shape == (2, 67, 67, 3)


def test_never_writes_over_an_existing_folder(tmp_path):
  _folder(tmp_path / 'src')
  (tmp_path / 'out').mkdir()
  (tmp_path / 'out' / 'keep.txt').write_text('mine')
  with pytest.raises(UserError, match='already exists'):
    downsampling.write_dataset(_data(tmp_path / 'src'), tmp_path / 'out', ['train'])
  assert [p.name for p in (tmp_path / 'out').iterdir()] == ['keep.txt']


def test_two_files_with_one_stem_are_refused_before_writing(tmp_path):
  _folder(tmp_path / 'src')
  Image.fromarray(_coordinates(80, 80)).save(tmp_path / 'src/train/a/wide.jpg')
  with pytest.raises(UserError, match='wide.jpg'):
    downsampling.write_dataset(_data(tmp_path / 'src'), tmp_path / 'out', ['train'])
  assert not (tmp_path / 'out').exists()
  assert not (tmp_path / 'out.partial').exists()


def test_class_folders_keep_the_labels_order():
  assert downsampling.class_folders(('ant', 'bee'), 2) == ['ant', 'bee']
  assert downsampling.class_folders(('bee', 'ant'), 2) == ['0_bee', '1_ant']
  assert downsampling.class_folders(None, 11) == [f'{i:02d}' for i in range(11)]


def test_a_tfds_dataset_keeps_its_labels(tmp_path):
  """shapes10 (TFDS): records numbered, classes named after its labels, and
  each label's images under its class."""
  tiny = default.get_config('tiny')
  tiny.data_dir = str(tmp_path / 'tfds')
  tiny.input.shapes_train_examples, tiny.input.shapes_eval_examples = 20, 10
  config = Settings.from_config(tiny).data
  written = downsampling.write_dataset(config, tmp_path / 'out',
                                       [config.train_split, config.eval_split])
  assert written == {'train': 20, 'validation': 10}
  config_out = _data(tmp_path / 'out', eval_split='validation')
  assert pipeline.class_names(config_out) == tuple(downsampling.class_folders(
      pipeline.class_names(config), 10))
  labels = lambda c: np.concatenate([  # pylint: disable=unnecessary-lambda-assignment
      b['label'][b['mask'] > 0] for b in pipeline.eval_batches(c)])
  by_name = {name: i for i, name in enumerate(pipeline.class_names(config_out))}
  files = sorted((tmp_path / 'out' / 'validation').rglob('*.jpg'),
                 key=lambda p: p.name)
  assert [p.name for p in files][:2] == ['00000000.jpg', '00000001.jpg']
  np.testing.assert_array_equal([by_name[p.parent.name] for p in files],
                                labels(config))


def _slow_second_batch(root):
  """train/a: 300 small JPEGs (the first batch of 256 written is all a's);
  train/b: copies of a large one, slow to decode, so that a run is caught
  between its first and second batch."""
  rows, cols = np.mgrid[:3000, :4000]
  large = io.BytesIO()
  Image.fromarray(np.stack([rows % 256, cols % 256, (rows + cols) % 256],
                           -1).astype(np.uint8)).save(large, 'JPEG')
  for split, small, big in (('train', 300, 4), ('test', 2, 1)):
    (root / split / 'a').mkdir(parents=True)
    (root / split / 'b').mkdir(parents=True)
    for i in range(small):
      Image.fromarray(_coordinates(20 + i % 7, 24)).save(root / split / 'a' / f'{i:03d}.jpg')
    for i in range(big):
      (root / split / 'b' / f'{i:03d}.jpg').write_bytes(large.getvalue())


def _files(root):
  return {str(p.relative_to(root)): p.read_bytes()
          for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.mark.slow(seconds=40)
def test_kill_9_half_way_then_the_same_command_finishes_as_one_run(tmp_path):
  import os  # pylint: disable=import-outside-toplevel
  import signal  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from clirun import finish, start_module  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run import rundir  # pylint: disable=import-outside-toplevel
  src, out = tmp_path / 'src', tmp_path / 'out'
  _slow_second_batch(src)
  command = ('alexnet_jax.downsample', '--config=configs/default.py:tiny',
             '--config.dataset=image_folder', f'--config.data_dir={src}',
             '--config.eval_split=test', f'--out={out}')
  partial = tmp_path / 'out.partial' / 'train'
  process = start_module(*command)
  deadline = time.monotonic() + 240  # A guard against a hang, not a timing.
  while (len(list(partial.glob('a/*.jpg'))) < 256 and process.poll() is None
         and time.monotonic() < deadline):
    time.sleep(0.01)
  # While it writes, a second run is refused, naming it.
  with pytest.raises(UserError, match=f'Another downsample is writing {out}.partial: process {process.pid} on host'):
    rundir.exclusive(tmp_path / 'out.lock', 'x', lambda holder: (
        f'Another downsample is writing {out}.partial: {holder}'))
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  assert not out.exists()
  assert 256 <= len(list(partial.rglob('*.jpg'))) < 304  # Caught half-way.

  code, _, stderr = finish(start_module(*command))
  assert code == 0, stderr
  assert 'Resuming' in stderr and 'by an earlier run' in stderr
  reference = tmp_path / 'reference'
  downsampling.write_dataset(_data(src), reference, ['train', 'test'])
  assert _files(out) == _files(reference)  # Every file once, no leftovers.
  assert len([p for p in _files(out) if p.endswith('.jpg')]) == 307
  assert not (tmp_path / 'out.lock').exists()
