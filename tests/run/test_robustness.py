"""Kills, preemption, damaged checkpoints, NaNs, full disks and bad images.

Each test backs one row of the README's "what happens when" table.
"""

import errno
import json
from pathlib import Path
import random
import re
import signal
import time

import numpy as np
import pytest

from alexnet_jax.errors import UserError
from alexnet_jax.run import checkpoint
from alexnet_jax.run.settings import Settings
from clirun import read_metrics, run_cli, start_cli, train_here

# Sec. 4.1's colour shift on: it is drawn from the step like the crops, so a
# resumed run draws what the uninterrupted one drew.
# Checkpoints at steps that are not logging steps: the first row after the
# resume must average the same steps as the uninterrupted run's.
KILL_RUN = ('--config.num_train_steps=40', '--config.checkpoint_every_steps=3',
            '--config.eval_every_steps=20', '--config.log_every_steps=5',
            '--config.input.pca_lighting=0.1')


@pytest.fixture(scope='session')
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


@pytest.mark.slow(seconds=80)
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, data_dir):
  # The reference runs in this process; the run that is killed is a real one.
  train_here(tmp_path / 'reference', *KILL_RUN, data_dir=data_dir)

  victim = tmp_path / 'killed'
  proc = start_cli(victim, *KILL_RUN, data_dir=data_dir)
  wait_for(lambda: checkpoint_steps(victim), proc)
  time.sleep(random.Random(0).uniform(0.0, 0.5))  # A point between steps.
  proc.send_signal(signal.SIGSTOP)  # Held there, alive, while a second run tries.
  # A second run on the live workdir (a retried job) is refused at once and
  # names the holder; it touches nothing (one start in the history below).
  second = run_cli(victim, *KILL_RUN, data_dir=data_dir, check=False)
  assert second.returncode == 2 and 'Traceback' not in second.stderr
  assert f'Another run is using --workdir {victim}: process {proc.pid} on' \
      in ' '.join(second.stderr.split())
  proc.kill()  # SIGKILL: no handler runs, nothing is flushed.
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert not (victim / 'summary.json').exists()  # It really was cut short.
  killed_at = checkpoint_steps(victim)[-1]
  assert killed_at < 40

  # The kernel released the lock with the process: the same command resumes.
  again = run_cli(victim, *KILL_RUN, data_dir=data_dir)
  assert f'Resumed from the checkpoint at step {killed_at}' in again.stderr
  reference, resumed = state_at(tmp_path / 'reference', 40), state_at(victim, 40)
  assert_trees_equal(reference['params'], resumed['params'])
  assert_trees_equal(reference['opt_state'], resumed['opt_state'])
  assert int(resumed['step']) == 40
  # metrics.jsonl tells one history: the killed steps' rows were dropped.
  timing = ('images_per_sec', 'input_wait_sec')
  rows = lambda w: [{k: v for k, v in r.items() if k not in timing}
                    for r in read_metrics(w)]
  assert rows(victim) == rows(tmp_path / 'reference')
  assert [r['step'] for r in rows(victim) if 'train_loss' in r] == list(
      range(5, 41, 5))
  # So does TensorBoard: the killed run's events past the checkpoint are gone.
  scalars = lambda w: {k: v for k, v in tensorboard_scalars(w).items()
                       if k not in timing}
  assert scalars(victim) == scalars(tmp_path / 'reference')
  history = (victim / 'config_history.jsonl').read_text().splitlines()
  assert [json.loads(h)['start_step'] for h in history] == [0, killed_at]

  # A resume that would change what the run means is refused, with the way out.
  with pytest.raises(UserError) as changed:  # Exit 2 in the CLI, as any.
    train_here(victim, *KILL_RUN, '--config.batch_size=16', data_dir=data_dir)
  message = ' '.join(str(changed.value).split())
  assert 'batch_size: 8 then, 16 now' in message
  assert '--config.allow_config_change=True' in message


@pytest.mark.slow(seconds=30)
def test_the_first_row_after_a_resume_equals_the_uninterrupted_runs(tmp_path):
  import shutil
  run = ('--config.num_train_steps=10', '--config.log_every_steps=5',
         '--config.checkpoint_every_steps=3', '--config.keep_checkpoints=10',
         '--config.eval_every_steps=100')
  train_here(tmp_path / 'reference', *run, data_dir=tmp_path / 'tfds')
  shutil.copytree(tmp_path / 'reference', tmp_path / 'resumed')
  for step in (6, 9, 10):  # What a kill after step 3's save leaves.
    shutil.rmtree(tmp_path / 'resumed' / 'checkpoints' / str(step))
  (tmp_path / 'resumed' / 'summary.json').unlink()
  _, said = train_here(tmp_path / 'resumed', *run, data_dir=tmp_path / 'tfds')
  assert 'Resumed from the checkpoint at step 3' in said
  timing = ('images_per_sec', 'input_wait_sec')
  rows = lambda w: [{k: v for k, v in r.items() if k not in timing}
                    for r in read_metrics(w)]
  # Step 5's row averages steps 1-5 (two of them from before the resume).
  assert rows(tmp_path / 'resumed') == rows(tmp_path / 'reference')
  assert [r['step'] for r in rows(tmp_path / 'resumed')
          if 'train_loss' in r] == [5, 10]


@pytest.mark.slow(seconds=20)
@pytest.mark.parametrize('signum, status, code', [
    (signal.SIGTERM, 'preempted', 75), (signal.SIGINT, 'interrupted', 130)])
def test_sigterm_saves_now_and_the_next_start_resumes(tmp_path, data_dir,
                                                      signum, status, code):
  workdir = tmp_path / 'w'
  long_run = ('--config.num_train_steps=100000',
              '--config.checkpoint_every_steps=100000',
              '--config.eval_every_steps=100000', '--config.log_every_steps=1')
  proc = start_cli(workdir, *long_run, data_dir=data_dir)
  metrics = workdir / 'metrics.jsonl'
  wait_for(lambda: metrics.exists() and len(metrics.read_text().split()) >= 3,
           proc)
  proc.send_signal(signum)  # SIGINT: what Ctrl-C sends.
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == code, stderr[-2000:]  # 75: EX_TEMPFAIL, run again.
  assert status.capitalize() in stderr and 'Traceback' not in stderr
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['status'] == status
  step = summary['steps']
  assert checkpoint_steps(workdir) == [step]  # Saved at the signal, not later.

  _, said = train_here(workdir, f'--config.num_train_steps={step + 2}',
                       data_dir=data_dir)
  assert f'Resumed from the checkpoint at step {step}' in said
  assert json.loads((workdir / 'summary.json').read_text())['steps'] == step + 2


@pytest.mark.slow(seconds=15)
def test_sigterm_after_the_summary_line_still_exits_0(tmp_path, data_dir):
  """A scheduler's SIGTERM that lands after a run has completed (its summary
  printed, the process tearing down) must not turn success into 143."""
  import subprocess
  import sys
  from clirun import ROOT, cli_env
  script = (
      'import os, signal, sys, time\n'
      'from alexnet_jax.run import cli, launch, supervision\n'
      f'cfg = cli.config_from_args(["main", "--config={ROOT}/configs/two_gpu.py:tiny",'
      f' "--config.num_train_steps=2", "--config.data_dir={data_dir}"])\n'
      f'code = launch.train(cfg, {str(tmp_path / "w")!r}, supervision.Processes())\n'
      'sys.stdout.flush()\n'
      'os.kill(os.getpid(), signal.SIGTERM)  # Just after "summary:".\n'
      'time.sleep(1)\n'
      'sys.exit(code)\n')
  proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=cli_env(),
                        capture_output=True, text=True, timeout=300, check=False)
  assert 'summary: ' in proc.stdout, proc.stderr[-2000:]
  assert proc.returncode == 0, proc.stderr[-2000:]


def _truncate(step_dir):
  files = sorted(p for p in (step_dir / 'state').rglob('*')
                 if p.is_file() and p.stat().st_size > 64)
  for path in files:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _remove_files(step_dir):
  for path in (step_dir / 'state').rglob('*'):
    if path.is_file() and 'ocdbt' in str(path):
      path.unlink()


@pytest.fixture(scope='session')
def six_steps(tmp_path_factory, data_dir):
  """A finished 6-step run, trained once; each test damages its own copy."""
  workdir = tmp_path_factory.mktemp('six_steps') / 'w'
  train_here(workdir, '--config.num_train_steps=6', data_dir=data_dir)
  return workdir


def _copy_of(workdir, tmp_path):
  import shutil
  return Path(shutil.copytree(workdir, tmp_path / 'w', symlinks=True))


@pytest.mark.parametrize('damage', [_truncate, _remove_files])
def test_damaged_latest_checkpoint_falls_back_and_keeps_it(
    tmp_path, data_dir, six_steps, damage):
  workdir = _copy_of(six_steps, tmp_path)
  assert checkpoint_steps(workdir)[-2:] == [4, 6]
  damage(workdir / 'checkpoints' / '6')
  damaged = {p.relative_to(workdir / 'checkpoints' / '6'): p.read_bytes()
             for p in (workdir / 'checkpoints' / '6').rglob('*') if p.is_file()}

  _, said = train_here(workdir, '--config.num_train_steps=8', data_dir=data_dir)
  assert 'step 6' in said and 'cannot be read' in said
  assert 'Resumed from the checkpoint at step 4' in said
  kept = workdir / 'checkpoints_damaged' / '6'
  assert {p.relative_to(kept): p.read_bytes()
          for p in kept.rglob('*') if p.is_file()} == damaged  # Every byte.
  assert checkpoint_steps(workdir)[-1] == 8


def test_all_checkpoints_damaged_is_an_error_not_a_fresh_start(
    tmp_path, data_dir, six_steps):
  workdir = _copy_of(six_steps, tmp_path)
  assert checkpoint_steps(workdir)
  for step in checkpoint_steps(workdir):
    _remove_files(workdir / 'checkpoints' / str(step))
  before = sorted(p for p in workdir.rglob('*'))
  with pytest.raises(UserError) as error:
    train_here(workdir, '--config.num_train_steps=6', data_dir=data_dir)
  message = str(error.value)
  assert 'can be read' in message and 'Nothing was deleted' in message
  assert all(p.exists() for p in before)


def test_non_finite_loss_stops_with_the_step_and_keeps_good_checkpoints(
    tmp_path, data_dir):
  workdir = tmp_path / 'w'
  with pytest.raises(UserError) as error:
    train_here(workdir, '--config.optimizer.learning_rate=1e12',
               '--config.num_train_steps=20', '--config.checkpoint_every_steps=1',
               '--config.eval_every_steps=100', data_dir=data_dir)
  message = str(error.value)
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
  from alexnet_jax.run import loop
  config = two_gpu.get_config('tiny')
  config.data_dir = str(tmp_path / 'tfds')
  real_save = checkpoint.Checkpointer._save

  def save(self, step, *args):
    if step >= 4:
      raise OSError(errno.ENOSPC, 'No space left on device')
    return real_save(self, step, *args)

  monkeypatch.setattr(checkpoint.Checkpointer, '_save', save)
  with pytest.raises(UserError, match='no space left on the device') as error:
    loop.train_and_evaluate(Settings.from_config(config), str(tmp_path / 'w'))
  assert 'steps 2' in str(error.value) and 'free some space' in str(error.value)
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
  with pytest.raises(UserError) as error:  # Exit 2 in the CLI, as any.
    train_here(tmp_path / 'a', *folder_run, data_dir=root)
  assert str(bad) in ''.join(str(error.value).split())
  assert not (tmp_path / 'a' / 'checkpoints').exists()

  _, said = train_here(tmp_path / 'b', *folder_run,
                       '--config.input.skip_bad_images=True', data_dir=root)
  assert 'Skipped 1 bad' in ' '.join(said.split()) and 'broken.jpg' in said
  assert json.loads((tmp_path / 'b' / 'summary.json').read_text())['steps'] == 2


# The workdir (alexnet_jax/run/rundir.py): paths, outputs, the lock, the history.


def test_glob_characters_in_the_workdir_are_refused_naming_them(tmp_path):
  from alexnet_jax.run import rundir
  for name, shown in (('lr[1]', "'[' and ']'"), ('a*b', "'*'"), ('q?', "'?'")):
    with pytest.raises(UserError, match=re.escape(shown)):
      rundir.check_path(tmp_path / 'runs' / name)
  assert rundir.check_path(tmp_path / 'lr-1') == tmp_path / 'lr-1'


@pytest.mark.parametrize('make, expected', [
    (lambda w: (w / 'metrics.jsonl').mkdir(parents=True), 'is a directory'),
    (lambda w: (w.mkdir(), (w / 'checkpoints').write_text('')), 'is a file'),
    (lambda w: (w.parent / 'blocker').write_text(''), 'not a directory'),
])
def test_unusable_outputs_are_named_at_start(tmp_path, make, expected):
  from alexnet_jax.run import rundir
  w = tmp_path / 'w'
  make(w)
  if expected == 'not a directory':
    w = tmp_path / 'blocker' / 'w'
  with pytest.raises(UserError, match=expected):
    rundir.check_outputs(w)


def test_read_only_checkpoints_are_named_by_their_cause(tmp_path, monkeypatch):
  from alexnet_jax.run import rundir
  (tmp_path / 'checkpoints').mkdir()
  real = rundir.tempfile.mkstemp

  def mkstemp(*args, dir=None, **kwargs):  # pylint: disable=redefined-builtin
    if Path(dir).name == 'checkpoints':  # As a read-only mount answers.
      raise OSError(errno.EROFS, 'Read-only file system', str(dir))
    return real(*args, dir=dir, **kwargs)

  monkeypatch.setattr(rundir.tempfile, 'mkstemp', mkstemp)
  with pytest.raises(UserError, match='checkpoints cannot be written: the file'
                     ' system is mounted read-only'):
    rundir.check_outputs(tmp_path)


def test_save_errors_name_their_cause():
  from alexnet_jax.run import rundir
  for code, words in ((errno.ENOSPC, 'no space left'),
                      (errno.EACCES, 'permission denied'),
                      (errno.EROFS, 'read-only'),
                      (errno.EEXIST, 'another run'),
                      (errno.ENOTDIR, 'not a directory')):
    assert words in rundir.os_error_cause(OSError(code, 'x', '/p'))


def test_a_second_lock_on_a_workdir_names_the_holder(tmp_path):
  import os
  import socket
  from alexnet_jax.run import rundir
  held = rundir.lock(tmp_path)
  # flock conflicts between two opens even in one process, as between two runs.
  with pytest.raises(UserError, match=f'process {os.getpid()} on host'
                     f' {re.escape(socket.gethostname())}, started'):
    rundir.lock(tmp_path)
  held.release()
  rundir.lock(tmp_path).release()  # Free again once released.


def test_resume_refuses_changes_of_meaning_and_allows_the_rest(tmp_path):
  from configs import default
  from alexnet_jax.run import rundir
  resolve = Settings.from_config
  config = resolve(default.get_config('tiny'))
  rundir.record_start(tmp_path, config, start_step=0)
  assert rundir.check_resume(tmp_path, config, latest_step=4, num_steps=8) == {}
  assert rundir.check_resume(tmp_path, config, latest_step=None,
                              num_steps=1) == {}

  for key, value in (('batch_size', 16), ('model.width', 0.125),
                     ('dataset', 'cifar10'), ('seed', 3),
                     ('input.pca_lighting', 0.1), ('input.normalization', 'mean_pixel')):
    changed = default.get_config('tiny')
    changed.update_from_flattened_dict({key: value})
    with pytest.raises(UserError, match=f'{re.escape(key)}: .* then, .* now.*'
                       'allow_config_change=True'):
      rundir.check_resume(tmp_path, resolve(changed), latest_step=4, num_steps=8)
    changed.allow_config_change = True
    assert key in rundir.check_resume(tmp_path, resolve(changed), latest_step=4,
                                      num_steps=8)

  changed = default.get_config('tiny')
  changed.num_train_steps, changed.optimizer.learning_rate = 9, 0.5
  assert set(rundir.check_resume(tmp_path, resolve(changed), latest_step=4,
                                 num_steps=9)) == {
                                      'num_train_steps', 'optimizer.learning_rate'}
  with pytest.raises(UserError, match='checkpoint at step 4, past this run.s 3'):
    rundir.check_resume(tmp_path, config, latest_step=4, num_steps=3)

  cosine = default.get_config('tiny')
  cosine.optimizer.schedule = 'cosine'
  rundir.record_start(tmp_path, resolve(cosine), start_step=4)
  cosine.num_train_steps = 9  # Would bend the decay under the steps taken.
  with pytest.raises(UserError, match='num_train_steps: 4 then, 9 now') as e:
    rundir.check_resume(tmp_path, resolve(cosine), latest_step=4, num_steps=9)
  # It says cosine is why, and does not offer the step count it just refused.
  said = ' '.join(str(e.value).split())
  assert "schedule is cosine" in said and 'step count' not in said
  history = [json.loads(l) for l in
             (tmp_path / 'config_history.jsonl').read_text().splitlines()]
  assert [h['start_step'] for h in history] == [0, 4]
  assert history[1]['config']['optimizer']['schedule'] == 'cosine'


def tensorboard_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} as TensorBoard itself reads WORKDIR/tensorboard."""
  import tensorflow as tf
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(
      str(Path(workdir) / 'tensorboard'), size_guidance={'tensors': 0})
  events.Reload()
  return {tag: sorted((e.step, float(tf.make_ndarray(e.tensor_proto)))
                      for e in events.Tensors(tag))
          for tag in events.Tags()['tensors']}


def test_rows_and_events_past_the_restored_step_are_dropped(tmp_path):
  from alexnet_jax.run import metric_writer
  killed = metric_writer.MetricWriter(tmp_path)
  for step in range(1, 7):
    killed.write(step, {'train_loss': float(step)})
  killed.close()
  # What a kill in the middle of a write leaves: a cut line, a cut record.
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 7, "tr')
  events, = (tmp_path / 'tensorboard').glob('*tfevents*')
  with open(events, 'ab') as f:
    f.write(b'\x20\x00\x00')
  # Rows 4-6 and the cut line; events 4-6 and the cut record.
  assert metric_writer.truncate(tmp_path, 3) == 4 + 4

  resumed = metric_writer.MetricWriter(tmp_path)  # Steps 4 and 5 again.
  for step in (4, 5):
    resumed.write(step, {'train_loss': 10.0 * step})
  resumed.close()
  one_history = [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]
  assert tensorboard_scalars(tmp_path) == {'train_loss': one_history}
  assert [(r['step'], r['train_loss']) for r in read_metrics(tmp_path)] == (
      one_history)
  assert metric_writer.truncate(tmp_path, 5) == 0


def test_two_preparing_the_built_in_dataset_at_once_take_turns(tmp_path):
  """Two runs, or two processes of one, on a fresh data_dir (threads here:
  flock sets two opens of the lock file against each other in one process
  too). Unlocked, one fails with FileExistsError from TFDS."""
  import threading
  from configs import default
  from alexnet_jax.data import pipeline
  config = default.get_config('tiny')
  config.data_dir = str(tmp_path)
  config = Settings.from_config(config).data
  start, results = threading.Barrier(2), []

  def prepare():
    start.wait()
    try:
      results.append(pipeline.dataset_info(config))
    except Exception as e:  # pylint: disable=broad-except
      results.append(e)

  threads = [threading.Thread(target=prepare) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert results == [pipeline.DatasetInfo(10, 64, 16)] * 2


# Config files that fail, and a missing --config: the file and the reason.


@pytest.mark.parametrize('source, expected', [
    ('def get_config(arg=None):\n  raise RuntimeError("no such sweep")\n',
     'failed at line 2: RuntimeError: no such sweep'),
    ('def get_config(arg=None)\n  return 1\n', 'failed at line 1: SyntaxError'),
    ('import no_such_module\n', "ModuleNotFoundError: No module named"
     " 'no_such_module'"),
    ('def get_config(arg=None):\n  return {"batch_size": 8}\n',
     'returned dict, not an ml_collections.ConfigDict'),
    ('def get_config(arg=None):\n  pass\n', 'returned NoneType, .* missing return'),
    ('x = 1\n', 'defines no get_config'),
])
def test_a_failing_config_file_is_named_with_its_reason(tmp_path, source,
                                                        expected):
  from alexnet_jax.run import cli
  path = tmp_path / 'my_config.py'
  path.write_text(source)
  with pytest.raises(UserError, match=f'{re.escape(str(path))}.*{expected}'):
    cli.load_config_file(f'{path}:arg')
  with pytest.raises(UserError, match='there is no file'):
    cli.load_config_file(str(tmp_path / 'missing.py'))


@pytest.mark.parametrize('module', ['alexnet_jax.main', 'alexnet_jax.describe',
                                    'alexnet_jax.benchmark'])
def test_failing_config_or_none_exits_2_in_every_cli(tmp_path, module):
  from clirun import finish, start_module
  path = tmp_path / 'raises.py'
  path.write_text('def get_config(arg=None):\n  raise RuntimeError("boom")\n')
  main = module.endswith('main')
  args = [f'--workdir={tmp_path / "w"}', '--verbosity=1'] if main else []
  rc, _, stderr = finish(start_module(module, f'--config={path}', *args))
  assert rc == 2, stderr
  assert f'{path} failed at line 2: RuntimeError: boom' in ' '.join(stderr.split())
  # The user's own traceback only on request (--verbosity=1), never ours.
  assert ('Traceback' in stderr) == main and 'alexnet_jax' not in stderr
  if main:
    rc, _, stderr = finish(start_module(module, *args))
    assert rc == 2 and 'No --config given' in stderr, stderr


# Memory: estimated from shapes before anything is allocated.


def test_memory_estimate_counts_the_parameters_and_refuses_what_cannot_fit():
  from configs import two_gpu
  from alexnet_jax.core import parallel
  from alexnet_jax.run import memory
  config = Settings.from_config(two_gpu.get_config())  # The full net, a tower per device.
  mesh = parallel.make_mesh(config.mesh)
  need = memory.estimate(config, mesh)
  assert need.gradients == 60_965_224 * 4 // 2  # Caffe's count, float32, halved.
  assert need.state >= 2 * need.gradients  # Parameters and momentum at least.
  assert need.activations > 0 and need.devices == 2

  for key, value in (('image_size', 100_000), ('model.width', 1000.0)):
    huge = two_gpu.get_config('tiny')
    huge.update_from_flattened_dict({key: value})
    with pytest.raises(UserError, match=r'needs at least [\d,.]+ GiB to train,'
                       ' more than the .* available'):
      memory.check_fits(Settings.from_config(huge), mesh)
  tiny = Settings.from_config(two_gpu.get_config('tiny'))
  memory.check_fits(tiny, mesh)  # Fits anywhere.


def test_a_checkpoint_that_does_not_read_back_stops_the_run(tmp_path):
  import jax.numpy as jnp
  # What orbax does under a path with glob characters, were it not refused
  # at start (rundir.check_path): the step is committed without its arrays.
  ckpt = checkpoint.Checkpointer(tmp_path / 'lr[1]', keep=3)
  with pytest.raises(UserError, match='step 1 .* was written but does not read'
                     ' back'):
    ckpt.save(1, {'w': jnp.ones(3)}, {})
  ckpt.close()
  ckpt = checkpoint.Checkpointer(tmp_path / 'lr-1', keep=3)
  ckpt.save(1, {'w': jnp.ones(3)}, {})  # The same save elsewhere reads back.
  assert ckpt.unreadable(1) is None
  ckpt.close()


def test_ctrl_c_asks_for_a_save_and_a_second_one_stops_at_once(monkeypatch):
  import os
  from alexnet_jax.run import preemption
  exits = []
  monkeypatch.setattr(preemption.os, '_exit', exits.append)
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a pytest-xdist worker.
  with preemption.Stopper() as stopper:
    assert not stopper.agreed(due=True)
    os.kill(os.getpid(), signal.SIGINT)
    assert stopper.status == 'interrupted' and stopper.agreed(due=False)
    assert not exits
    os.kill(os.getpid(), signal.SIGINT)
    assert exits == [preemption.INTERRUPTED_EXIT_CODE]
  assert signal.getsignal(signal.SIGINT) is before  # Restored on leaving.


def test_a_file_name_that_is_not_utf8_is_read(tmp_path, image_folder):
  import os
  from configs import default
  from alexnet_jax.data import pipeline
  root, bad = image_folder
  bad.unlink()
  odd = os.fsdecode(os.fsencode(str(root / 'train' / 'dog')) + b'/caf\xe9.jpg')
  Path(odd).write_bytes((root / 'train' / 'dog' / '0.jpg').read_bytes())
  config = default.get_config('tiny')
  config.dataset, config.data_dir = 'image_folder', str(root)
  config.model.num_classes = 2
  info = pipeline.dataset_info(Settings.from_config(config).data)
  assert info.num_train_examples == 17
  next(pipeline.train_batches(Settings.from_config(config).data, seed=0))


def test_main_refuses_a_config_too_large_before_allocating(tmp_path):
  proc = run_cli(tmp_path / 'w', '--config.image_size=100000', check=False,
                 data_dir=tmp_path / 'tfds')
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert 'GiB to train, more than the' in ' '.join(proc.stderr.split())
  assert not (tmp_path / 'tfds').exists()  # Nothing prepared, nothing drawn.


def test_url_and_glob_characters_in_the_workdir_are_refused_at_start(tmp_path):
  from alexnet_jax.run import rundir
  # Each breaks the checkpoint's read-back (tensorstore: a URL's #, % and |;
  # orbax's glob: [ ] * ? and its escape \\), so none may reach training.
  for name, character in (('h#sh', '#'), ('pct%41', '%'), ('a|b', '|'),
                          ('back\\slash', '\\')):
    with pytest.raises(UserError) as error:
      rundir.check_path(tmp_path / name / 'run')
    message = ' '.join(str(error.value).split())
    assert f'contains {character!r}, which' in message
    assert 'Nothing was written' in message and message.endswith('.')
  assert not list(tmp_path.iterdir())


def test_a_bad_file_name_that_is_not_utf8_is_shown_with_x_escapes(
    tmp_path, image_folder):
  import os
  from alexnet_jax.data import pipeline
  root, bad = image_folder
  odd = os.fsdecode(os.fsencode(str(bad.parent)) + b'/x\xfe.jpg')
  Path(odd).write_bytes(b'not an image')
  config = _folder_config(root)
  with pytest.raises(UserError) as error:
    pipeline.dataset_info(Settings.from_config(config).data)
  message = str(error.value)
  assert 'x\\xfe.jpg (not a readable' in message
  assert '\\udc' not in message.encode('utf-8', 'backslashreplace').decode()


def _folder_config(root):
  from configs import default
  config = default.get_config('tiny')
  config.dataset, config.data_dir = 'image_folder', str(root)
  config.model.num_classes = 2
  return config


@pytest.mark.parametrize('make, why', [
    (lambda p: p.symlink_to(p.parent / 'gone.jpg'), 'leads nowhere'),
    (lambda p: p.symlink_to(p), 'leads nowhere, or loops'),
    (lambda p: __import__('os').mkfifo(p), 'not a regular file'),
    (lambda p: p.write_text('notes'), 'not a readable'),
])
def test_links_fifos_and_stray_files_are_bad_entries_alike(tmp_path, image_folder,
                                                           make, why):
  root, bad = image_folder
  bad.unlink()
  odd = bad.parent / 'odd.jpg'
  make(odd)
  config = _folder_config(root)
  from alexnet_jax.data import pipeline
  with pytest.raises(UserError) as error:  # Named, never opened (a FIFO blocks).
    pipeline.dataset_info(Settings.from_config(config).data)
  message = ' '.join(str(error.value).split())
  assert f'{odd} (' in message and why in message
  config.input.skip_bad_images = True  # Or skipped and counted, like any.
  assert pipeline.dataset_info(Settings.from_config(config).data) \
      .num_train_examples == 16
