"""The train CLI end to end: real subprocesses, two devices, the built-in data."""

import json
from pathlib import Path

import pytest

from clirun import ROOT, cli_env, read_metrics, run_cli, train_here

# One xdist worker runs this file's tests, which share costly session-scoped
# fixtures (tests/conftest.py says why).
pytestmark = [pytest.mark.xdist_group('train'),
              pytest.mark.slow(seconds=90)]  # All of this file's tests together.


def tensorboard_scalars(workdir):
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(Path(workdir) / 'tensorboard'))
  acc.Reload()
  import tensorflow as tf
  return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto)))
                for e in acc.Tensors(tag)]
          for tag in acc.Tags()['tensors']}


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='session')
def trained(tmp_path_factory, data_dir):
  """Four steps of the tiny two-tower net on two devices, then two more
  (what the CLI's run and its resume print: stderr, then the said text)."""
  workdir = tmp_path_factory.mktemp('run') / 'workdir'
  first = run_cli(workdir, data_dir=data_dir)
  first_summary = json.loads((workdir / 'summary.json').read_text())
  # The resume in this process: `first` ran the CLI (and test_robustness
  # resumes through it after kill -9).
  _, second = train_here(workdir, '--config.num_train_steps=6', data_dir=data_dir)
  return workdir, first, first_summary, second


def test_cli_writes_metrics_summary_tensorboard_and_checkpoints(trained):
  workdir, first, summary, _ = trained
  assert summary['status'] == 'completed' and summary['steps'] == 4
  assert summary['mesh'] == {'data': 1, 'model': 2}
  assert len(summary['devices']) == 2
  assert 0.0 <= summary['eval_top1'] <= summary['eval_top5'] <= 1.0
  assert summary['wall_seconds'] > 0

  config = json.loads((workdir / 'config.json').read_text())
  assert config['model']['variant'] == 'two_tower'
  assert config['mesh']['model'] == 2

  records = [r for r in read_metrics(workdir) if r['step'] <= 4]
  train = [r for r in records if 'train_loss' in r]
  evals = [r for r in records if 'eval_top1' in r]
  assert [r['step'] for r in train] == [1, 2, 3, 4]  # log_every_steps=1.
  assert [r['step'] for r in evals] == [2, 4]  # eval_every_steps=2.
  assert all(r['learning_rate'] > 0 for r in train)
  assert all('images_per_sec' in r for r in train[1:])  # Not the compile step.
  assert evals[-1]['eval_top1'] == pytest.approx(summary['eval_top1'])

  scalars = tensorboard_scalars(workdir)
  assert {'train_loss', 'eval_top1', 'eval_loss', 'learning_rate'} <= set(scalars)
  assert [s for s, _ in scalars['eval_top1']][:2] == [2, 4]
  assert scalars['train_loss'][0][1] == pytest.approx(train[0]['train_loss'])

  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps[-1] == 6 and 4 in steps
  assert 'eval_top1' in first.stderr  # One console line per evaluation.


def test_same_command_resumes_at_the_right_step(trained):
  workdir, _, _, second = trained
  assert 'Resumed from the checkpoint at step 4' in second
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['resumed_from_step'] == 4 and summary['steps'] == 6
  train_steps = [r['step'] for r in read_metrics(workdir) if 'train_loss' in r]
  assert train_steps == [1, 2, 3, 4, 5, 6]  # Nothing redone, nothing skipped.


def test_workdir_of_another_model_is_refused_and_kept(trained, tmp_path):
  workdir = trained[0]
  before = {p: p.stat().st_mtime_ns for p in workdir.rglob('*') if p.is_file()}
  # The recorded config names the change; past it, the checkpoints' shapes do.
  # In this process: the CLI's exit status 2 for a UserError is tested elsewhere.
  from alexnet_jax.errors import UserError
  with pytest.raises(UserError, match='model.width'):
    train_here(workdir, '--config.model.width=0.125', '--config.num_train_steps=6')
  with pytest.raises(UserError, match='different model'):
    train_here(workdir, '--config.model.width=0.125', '--config.num_train_steps=6',
               '--config.allow_config_change=True')
  # The lock file names each run that starts; nothing else may change.
  after = {p: p.stat().st_mtime_ns for p in workdir.rglob('*') if p.is_file()
           if 'metrics' not in p.name and 'tensorboard' not in str(p)
           and p.name != '.lock'}
  assert all(before[p] == t for p, t in after.items())


@pytest.mark.parametrize('overrides, words', [
    (['--config.learning_rat=0.1'], ['Unknown config key', 'learning_rate']),
    (['--config.optimizer.learning_rat=0.1'], ['optimizer.learning_rate']),
    (['--config.batch_size=eight'], ['batch_size']),
    (['--config.optimizer.learning_rate=-0.1'], ['learning_rate must be positive']),
    (['--config.batch_size=0'], ['batch_size must be positive']),
    (['--config.num_train_steps=0'], ['num_train_steps']),
    # Two devices, as this process has (the CLI would give itself four).
    (['--config.mesh.data=2', '--config.mesh.model=1', '--config.strategy=data',
      '--config.batch_size=7'], ['does not divide', 'multiple of 2']),
    (['--config.mesh.model=1'], ['mesh.model must equal']),
    (['--config.image_size=50'], ['smallest image size that works is 67']),
    (['--config.model.variant=vgg'], ['Unknown model.variant']),
    (['--config.strategy=pipeline'], ['Unknown strategy']),
    (['--config.dataset=no_such_dataset'], ["'no_such_dataset'"]),
])
def test_bad_configs_stop_with_one_paragraph(tmp_path, overrides, words):
  """main's steps, in this process and in main's order: the flags
  (`cli.config_from_args`), the config resolved (`Settings.from_config`) and
  checked against the devices (`launch.start`), then `train_and_evaluate`,
  which checks the dataset before anything else."""
  from alexnet_jax.errors import UserError
  from alexnet_jax.run import cli, launch, loop
  from alexnet_jax.run.settings import Settings
  with pytest.raises(UserError) as error:
    settings = Settings.from_config(cli.config_from_args(
        ['main', '--config=configs/two_gpu.py:tiny', *overrides]))
    launch.start(settings, workdir=str(tmp_path / 'w'), fits=True)
    loop.train_and_evaluate(settings, str(tmp_path / 'w'))
  for word in words:
    assert word in ' '.join(str(error.value).split()), str(error.value)
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_a_bad_flag_is_one_paragraph_and_exit_2_from_the_cli(tmp_path):
  proc = run_cli(tmp_path / 'w', '--config.learning_rat=0.1', check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
  assert 'optimizer.learning_rate' in ' '.join(proc.stderr.split())
  assert not (tmp_path / 'w').exists()


def test_two_towers_on_one_device_stops_before_compiling(tmp_path):
  # As on a machine with one accelerator: XLA_FLAGS pins JAX to one device.
  proc = run_cli(tmp_path / 'w', check=False,
                 env={'XLA_FLAGS': '--xla_force_host_platform_device_count=1'})
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  message = ' '.join(proc.stderr.split())
  assert '1 x 2 = 2 devices' in message and 'found 1' in message
  assert 'configs/one_gpu.py' in message


def test_missing_dataset_says_which_and_where(tmp_path):
  proc = run_cli(tmp_path / 'w', '--config.dataset=cifar10',
                 '--config.eval_split=test', data_dir=tmp_path / 'empty',
                 check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  message = ' '.join(proc.stderr.split())
  assert "'cifar10'" in message and str(tmp_path / 'empty') in message
  assert 'tfds build cifar10' in message


def test_cifar10_on_a_fresh_clone_says_both_ways_to_get_the_data(tmp_path):
  # A clone with nothing beside it (no ../shared) and no TFDS data: the one
  # paragraph, at once (TFDS is only asked whether the dataset is prepared).
  import shutil  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  clone = tmp_path / 'clone' / 'alexnet_jax'
  for part in ('alexnet_jax', 'configs'):
    shutil.copytree(ROOT / part, clone / part,
                    ignore=shutil.ignore_patterns('__pycache__'))
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main',
       '--config=configs/cifar10.py:cifar_4layer', f'--workdir={tmp_path / "x"}'],
      cwd=clone, env=cli_env({'TFDS_DATA_DIR': str(tmp_path / 'tfds')}),
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  message = ' '.join(proc.stderr.split('error: ', 1)[1].split())
  assert 'tfds build cifar10' in message and str(tmp_path / 'tfds') in message
  assert ('--config.dataset=image_folder --config.data_dir=DIR' in message
          and 'train/<class>/<image> and test/<class>/<image>' in message)
  assert not (tmp_path / 'tfds').exists()  # Nothing half-prepared.


def test_workdir_that_is_a_file(tmp_path):
  (tmp_path / 'file').write_text('x')
  proc = run_cli(tmp_path / 'file', check=False)
  # Unwrapped: the paragraph's line breaks move with the path's length.
  assert proc.returncode == 2 and 'is a file' in ' '.join(proc.stderr.split())


def test_trains_on_real_cifar10_jpegs_as_a_folder(tmp_path, cifar10_subset):
  workdir = tmp_path / 'w'
  train_here(workdir, '--config.dataset=image_folder', '--config.train_split=train',
             '--config.eval_split=test', '--config.model.num_classes=10',
             '--config.batch_size=20', '--config.num_train_steps=3',
             data_dir=cifar10_subset)
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['steps'] == 3 and summary['status'] == 'completed'
  losses = [r['train_loss'] for r in read_metrics(workdir) if 'train_loss' in r]
  assert len(losses) == 3 and all(0 < l < 10 for l in losses)


def test_trains_on_a_named_tfds_dataset_through_mock_data(mock_cifar10):
  from alexnet_jax.run import loop
  from alexnet_jax.run.settings import Settings
  from configs import two_gpu
  config = two_gpu.get_config('tiny')
  config.dataset, config.eval_split = 'cifar10', 'test'
  config.data_dir = str(mock_cifar10)
  summary = loop.train_and_evaluate(Settings.from_config(config),
                                    str(mock_cifar10 / 'w'))
  assert summary['steps'] == 4 and summary['mesh'] == {'data': 1, 'model': 2}
  assert (mock_cifar10 / 'w' / 'checkpoints' / '4').exists()
  # Evaluated on the mock's test split as TFDS itself reads it: every one of
  # its examples once, with its own label.
  import numpy as np
  import tensorflow_datasets as tfds
  from alexnet_jax.data import pipeline
  data = Settings.from_config(config).data
  count = tfds.builder('cifar10', data_dir=str(mock_cifar10)).info.splits['test'].num_examples
  assert pipeline.dataset_info(data) == pipeline.DatasetInfo(10, count, count)
  labels = [int(r['label']) for r in tfds.load(
      'cifar10', split='test', data_dir=str(mock_cifar10)).as_numpy_iterator()]
  read = np.concatenate([b['label'][b['mask'] == 1]
                         for b in pipeline.eval_batches(data)])
  assert sorted(read.tolist()) == sorted(labels) and len(labels) == count
  correct = summary['eval_top1'] * count  # A whole number of the test examples.
  assert correct == pytest.approx(round(correct), abs=1e-4)


def test_keeps_the_last_checkpoints_and_the_best_by_eval_top1(tmp_path, data_dir):
  workdir = tmp_path / 'w'
  train_here(workdir, '--config.num_train_steps=8', '--config.eval_every_steps=1',
             '--config.checkpoint_every_steps=1', '--config.keep_checkpoints=2',
             '--config.optimizer.learning_rate=0.1', data_dir=data_dir)
  evals = {r['step']: r['eval_top1'] for r in read_metrics(workdir)
           if 'eval_top1' in r}
  best = max(evals.values())
  kept = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit())
  assert kept[-2:] == [7, 8]  # The last keep_checkpoints.
  assert any(evals[s] == best for s in kept)  # And one with the best top-1.
  assert len(kept) <= 3


def test_one_device_run_equals_the_two_device_run(trained, tmp_path, data_dir):
  """Same config but both towers on one device: the same training, bit for bit
  (dropout included), since only where the towers' data lives changes."""
  import jax
  import numpy as np
  from alexnet_jax.run import checkpoint
  workdir = tmp_path / 'one'
  train_here(workdir, config='configs/one_gpu.py:tiny', data_dir=data_dir)
  split = checkpoint.load_numpy(trained[0] / 'checkpoints' / '4')
  single = checkpoint.load_numpy(workdir / 'checkpoints' / '4')
  assert json.loads((workdir / 'summary.json').read_text())['mesh'] == {
      'data': 1, 'model': 1}
  for a, b in zip(jax.tree.leaves(split['params']),
                  jax.tree.leaves(single['params'])):
    np.testing.assert_array_equal(a, b)


def test_workdir_that_is_not_writable(tmp_path, monkeypatch):
  # Tests run as root here, for whom every folder is writable: fake the check.
  import os
  from alexnet_jax.errors import UserError
  from alexnet_jax.run import validation
  from alexnet_jax.run.settings import Settings
  from configs import two_gpu
  monkeypatch.setattr(os, 'access', lambda path, mode: False)
  with pytest.raises(UserError, match='not writable'):
    validation.validate(Settings.from_config(two_gpu.get_config('tiny')),
                        num_devices=2, workdir=str(tmp_path / 'new'))


def test_this_file_runs_on_one_worker(request):
  """Under `--dist loadgroup` the xdist_group mark puts this file's tests, and
  their shared fixtures, on one worker. pytest-xdist 3.8 does it by renaming
  each test's nodeid, which pytest 9.2 silently ignores (hence pytest 8.4.2)."""
  if getattr(request.config.option, 'loadgroup', False):
    assert request.node.nodeid.endswith('@train')
    return
  # A plain run: check the two things that grouping rests on instead.
  mark = request.node.get_closest_marker('xdist_group')
  assert mark is not None and mark.args == ('train',)
  original = request.node._nodeid  # pylint: disable=protected-access
  request.node._nodeid = original + '@probe'  # What xdist's worker does.
  try:
    renamed = request.node.nodeid
  finally:
    request.node._nodeid = original
  assert renamed == original + '@probe'  # Ignored from pytest 9.2 on.
