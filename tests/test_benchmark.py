"""The benchmark CLI at the tiny size: the report's shape and arithmetic.

Nothing here asserts a speed (a loaded machine would fail it); the figures
are checked against each other: images/s against the timed seconds, ratios
against the one-device baseline, the split's FLOPs against the whole step's.
"""

import json
import statistics
import subprocess

import pytest

from clirun import finish, start_module

TINY = ('--config=configs/two_gpu.py:tiny', '--steps=2', '--warmup=1',
        '--repeats=1')


def start_cli(*args) -> subprocess.Popen:
  return start_module('alexnet_jax.benchmark', *args)


@pytest.fixture(scope='module')
def cli_json():
  """Started once; the error tests below run while it compiles."""
  process = start_cli(*TINY, '--json')
  yield process
  if process.poll() is None:
    process.kill()
    process.communicate()


@pytest.mark.parametrize('args, words', [
    # The split (data=1, model=2) takes 7; data parallel over 2 devices not.
    (('--config.batch_size=7',), ('data_parallel', 'batch_size=7')),
    (('--steps=0',), ('--steps',)),
])
def test_bad_settings_exit_2_with_one_paragraph(cli_json, args, words):
  del cli_json  # Started first, to overlap.
  returncode, stdout, stderr = finish(start_cli(*TINY, *args))
  assert returncode == 2, stderr[-3000:]
  message = stderr.strip()
  assert message.startswith('error:'), message
  assert all(w in message for w in words), message
  assert 'Traceback' not in message and stdout == ''


def test_cli_json_reports_three_placements(cli_json):
  returncode, stdout, stderr = finish(cli_json)
  assert returncode == 0, stderr[-3000:]
  report = json.loads(stdout)

  assert report['batch_size'] == 8 and report['dtype'] == 'float32'
  assert (report['steps'], report['warmup'], report['repeats']) == (2, 1, 1)
  assert report['command'].startswith('python -m alexnet_jax.benchmark ')
  assert all(a in report['command'] for a in TINY)
  assert report['num_devices'] == 2 and report['backend'] == 'cpu'
  for key in ('date', 'jax_version', 'device_kind', 'load_average_before'):
    assert report[key], key

  runs = {p['name']: p for p in report['placements']}
  assert list(runs) == ['one_device', 'model_split', 'data_parallel']
  assert [(p['mesh'], p['devices'], p['from_config']) for p in runs.values()] == [
      ({'data': 1, 'model': 1}, [0], False),
      ({'data': 1, 'model': 2}, [0, 1], True),
      ({'data': 2, 'model': 1}, [0, 1], False),
  ]
  base = runs['one_device']['median_images_per_sec']
  for p in runs.values():
    assert len(p['images_per_sec']) == len(p['seconds_per_repeat']) == 1
    assert all(x > 0 for x in p['images_per_sec'])
    assert p['compile_seconds'] > 0
    for rate, seconds in zip(p['images_per_sec'], p['seconds_per_repeat']):
      assert rate == pytest.approx(2 * 8 / seconds)
    assert p['median_images_per_sec'] == statistics.median(p['images_per_sec'])
    assert p['ratio_to_one_device'] == pytest.approx(
        p['median_images_per_sec'] / base)
  assert runs['one_device']['ratio_to_one_device'] == 1.0

  # FLOPs: the whole step on one device; each device of the split computes
  # one tower, so the two together do about the same work.
  flops = report['model_flops_per_image']
  assert flops > 0
  assert runs['one_device']['compiled_flops_per_image'] == pytest.approx(flops)
  assert runs['model_split']['compiled_flops_per_image'] == pytest.approx(
      flops, rel=0.1)
  for p in runs.values():
    assert p['achieved_gflops_per_sec'] == pytest.approx(
        flops * p['median_images_per_sec'] / 1e9)
