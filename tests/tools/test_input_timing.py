"""The input pipeline timed (`python -m alexnet_jax.input_benchmark`), on
JPEGs it writes itself. Nothing here asserts a speed."""

from alexnet_jax.run.settings import Settings
from alexnet_jax.tools import input_timing
from configs import default


def _config(data_dir, **overrides):
  config = default.get_config('tiny')
  config.data_dir = str(data_dir)
  config.update(overrides)
  return config


def test_input_benchmark_times_the_training_pipeline(tmp_path):
  input_timing.write_jpegs(tmp_path, count=24, distinct=3, width=100, height=75)
  assert len(list((tmp_path / 'train').glob('*/*.jpg'))) == 24
  assert (tmp_path / 'train' / 'c00' / '000008.jpg').stat().st_ino == (
      tmp_path / 'distinct' / '00002.jpg').stat().st_ino  # Linked, not copied.
  config = _config(tmp_path, dataset='image_folder', eval_split='validation')
  result = input_timing.measure(Settings.from_config(config).data, warmup=1,
                                batches=2)
  assert result['images'] == 16 and result['batch_shape'] == [8, 67, 67, 3]
  assert result['batch_dtype'] == 'uint8'
  assert result['images_per_sec'] > 0 and result['images_per_cpu_sec'] > 0
  assert input_timing.measure_decode_only(tmp_path, 8, 1, 2) > 0
