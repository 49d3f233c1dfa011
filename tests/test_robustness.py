"""Kills, preemption, damaged checkpoints, NaNs, full disks and bad images.

Each test backs one row of the README's "what happens when" table.
"""

import errno
import json
from pathlib import Path
import random
import signal
import time

import numpy as np
import pytest

from alexnet_jax import checkpoint
from clirun import read_metrics, run_cli, start_cli

KILL_RUN = ('--config.num_train_steps=40', '--config.checkpoint_every_steps=5',
            '--config.eval_every_steps=20', '--config.log_every_steps=5')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def wait_for(condition, proc, timeout=240):
  deadline = time.time() + timeout
  while not condition():
    if proc.poll() is not None:
      raise AssertionError(f'run ended early:\n{proc.stderr.read()[-3000:]}')
    if time.time() > deadline:
      proc.kill()
      raise AssertionError('timed out')
    time.sleep(0.05)


def checkpoint_steps(workdir):
  directory = Path(workdir) / 'checkpoints'
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def state_at(workdir, step):
  return checkpoint.load_numpy(Path(workdir) / 'checkpoints' / str(step))


def assert_trees_equal(a, b):
  import jax
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)  # Bit for bit, not approximately.


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, data_dir):
  run_cli(tmp_path / 'reference', *KILL_RUN, data_dir=data_dir)

  victim = tmp_path / 'killed'
  proc = start_cli(victim, *KILL_RUN, data_dir=data_dir)
  wait_for(lambda: checkpoint_steps(victim), proc)
  time.sleep(random.Random(0).uniform(0.0, 0.5))  # A point between steps.
  proc.kill()  # SIGKILL: no handler runs, nothing is flushed.
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert not (victim / 'summary.json').exists()  # It really was cut short.
  killed_at = checkpoint_steps(victim)[-1]
  assert killed_at < 40

  again = run_cli(victim, *KILL_RUN, data_dir=data_dir)
  assert f'Resumed from the checkpoint at step {killed_at}' in again.stderr
  reference, resumed = state_at(tmp_path / 'reference', 40), state_at(victim, 40)
  assert_trees_equal(reference['params'], resumed['params'])
  assert_trees_equal(reference['momentum'], resumed['momentum'])
  assert int(resumed['step']) == 40


def test_sigterm_saves_now_and_the_next_start_resumes(tmp_path, data_dir):
  workdir = tmp_path / 'w'
  long_run = ('--config.num_train_steps=100000',
              '--config.checkpoint_every_steps=100000',
              '--config.eval_every_steps=100000', '--config.log_every_steps=1')
  proc = start_cli(workdir, *long_run, data_dir=data_dir)
  metrics = workdir / 'metrics.jsonl'
  wait_for(lambda: metrics.exists() and len(metrics.read_text().split()) >= 3,
           proc)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 75, stderr[-2000:]  # EX_TEMPFAIL: run again.
  assert 'Preempted' in stderr
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['status'] == 'preempted'
  step = summary['steps']
  assert checkpoint_steps(workdir) == [step]  # Saved at the signal, not later.

  again = run_cli(workdir, f'--config.num_train_steps={step + 2}',
                  data_dir=data_dir)
  assert f'Resumed from the checkpoint at step {step}' in again.stderr
  assert json.loads((workdir / 'summary.json').read_text())['steps'] == step + 2


def _truncate(step_dir):
  files = sorted(p for p in (step_dir / 'state').rglob('*')
                 if p.is_file() and p.stat().st_size > 64)
  for path in files:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _remove_files(step_dir):
  for path in (step_dir / 'state').rglob('*'):
    if path.is_file() and 'ocdbt' in str(path):
      path.unlink()


@pytest.mark.parametrize('damage', [_truncate, _remove_files])
def test_damaged_latest_checkpoint_falls_back_and_keeps_it(
    tmp_path, data_dir, damage):
  workdir = tmp_path / 'w'
  run_cli(workdir, '--config.num_train_steps=6', data_dir=data_dir)
  assert checkpoint_steps(workdir)[-2:] == [4, 6]
  damage(workdir / 'checkpoints' / '6')
  damaged = {p.relative_to(workdir / 'checkpoints' / '6'): p.read_bytes()
             for p in (workdir / 'checkpoints' / '6').rglob('*') if p.is_file()}

  again = run_cli(workdir, '--config.num_train_steps=8', data_dir=data_dir)
  assert 'step 6' in again.stderr and 'cannot be read' in again.stderr
  assert 'Resumed from the checkpoint at step 4' in again.stderr
  kept = workdir / 'checkpoints_damaged' / '6'
  assert {p.relative_to(kept): p.read_bytes()
          for p in kept.rglob('*') if p.is_file()} == damaged  # Every byte.
  assert checkpoint_steps(workdir)[-1] == 8


def test_all_checkpoints_damaged_is_an_error_not_a_fresh_start(tmp_path, data_dir):
  workdir = tmp_path / 'w'
  run_cli(workdir, data_dir=data_dir)
  for step in checkpoint_steps(workdir):
    _remove_files(workdir / 'checkpoints' / str(step))
  before = sorted(p for p in workdir.rglob('*'))
  proc = run_cli(workdir, data_dir=data_dir, check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'can be read' in proc.stderr and 'Nothing was deleted' in proc.stderr
  assert all(p.exists() for p in before)


def test_non_finite_loss_stops_with_the_step_and_keeps_good_checkpoints(
    tmp_path, data_dir):
  workdir = tmp_path / 'w'
  proc = run_cli(workdir, '--config.optimizer.learning_rate=1e12',
                 '--config.num_train_steps=20', '--config.checkpoint_every_steps=1',
                 '--config.eval_every_steps=100', data_dir=data_dir, check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  message = ' '.join(proc.stderr.split())
  assert 'NaN or Inf at step' in message
  bad_step = int(message.split('NaN or Inf at step ')[1].split(';')[0])
  steps = checkpoint_steps(workdir)
  assert steps and steps[-1] == bad_step - 1  # Every good step, none after.
  import jax
  params = state_at(workdir, steps[-1])['params']
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
  losses = [r['train_loss'] for r in read_metrics(workdir) if 'train_loss' in r]
  assert losses[-1] is None  # Logged as null: JSON has no NaN.


def test_full_disk_stops_cleanly_and_keeps_earlier_checkpoints(
    tmp_path, monkeypatch):
  from configs import two_gpu
  from alexnet_jax import train
  from alexnet_jax.errors import UserError
  config = two_gpu.get_config('tiny')
  config.data_dir = str(tmp_path / 'tfds')
  real_save = checkpoint.Checkpointer._save

  def save(self, step, *args):
    if step >= 4:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real_save(self, step, *args)

  monkeypatch.setattr(checkpoint.Checkpointer, '_save', save)
  with pytest.raises(UserError, match='No space left on device') as error:
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert 'steps 2' in str(error.value) and 'Free some space' in str(error.value)
  assert checkpoint_steps(tmp_path / 'w') == [2]
  state_at(tmp_path / 'w', 2)  # Still reads back.


@pytest.fixture
def image_folder(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  root = tmp_path / 'images'
  for split in ('train', 'validation'):
    for name in ('cat', 'dog'):
      (root / split / name).mkdir(parents=True)
      for i in range(8):
        pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / split / name / f'{i}.jpg')
  bad = root / 'train' / 'dog' / 'broken.jpg'
  bad.write_bytes((root / 'train' / 'dog' / '0.jpg').read_bytes()[:100])
  return root, bad


def test_bad_image_is_named_or_skipped_and_counted(tmp_path, image_folder):
  root, bad = image_folder
  folder_run = ('--config.dataset=image_folder', '--config.model.num_classes=2',
                '--config.num_train_steps=2')
  proc = run_cli(tmp_path / 'a', *folder_run, data_dir=root, check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert str(bad) in ''.join(proc.stderr.split())
  assert not (tmp_path / 'a' / 'checkpoints').exists()

  proc = run_cli(tmp_path / 'b', *folder_run,
                 '--config.input.skip_bad_images=True', data_dir=root)
  assert 'Skipped 1 bad' in proc.stderr and 'broken.jpg' in proc.stderr
  assert json.loads((tmp_path / 'b' / 'summary.json').read_text())['steps'] == 2
