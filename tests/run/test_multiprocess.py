"""Two processes over jax.distributed on 127.0.0.1: one tower in each.

The 2012 split with each GPU driven by its own process: the towers' exchanges
cross a process boundary, every process loads the whole batch (both towers
read the same images), and the result equals the single-process run. Also
what happens when one process is preempted, is lost, never joins or was
started with another config. Each test takes its own free port and folders,
so the tests run side by side (pytest -n 2).
"""

import json
import socket

import jax
import numpy as np
import pytest

from alexnet_jax.run import checkpoint
from alexnet_jax.run import supervision
from clirun import ROOT, cli_command, cli_env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_processes(workdir, *overrides, data_dir, per_process=((), ()),
                     ids=(0, 1)):
  """Processes `ids` of a run over two (the others not started)."""
  import subprocess
  address = f'127.0.0.1:{_free_port()}'
  return [
      subprocess.Popen(
          cli_command(workdir, f'--coordinator_address={address}',
                      '--num_processes=2', f'--process_id={i}', *overrides,
                      *per_process[i], data_dir=data_dir),
          cwd=ROOT, env=cli_env(), text=True, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE)
      for i in ids]


@pytest.mark.slow(seconds=10)
def test_processes_started_with_different_configs_refuse_naming_the_key(
    tmp_path):
  procs = _start_processes(tmp_path / 'w', data_dir=tmp_path / 'tfds',
                           per_process=((), ('--config.batch_size=16',)))
  for p, mine, theirs in zip(procs, (8, 16), (16, 8)):
    _, err = p.communicate(timeout=600)
    assert p.returncode == 2, err[-3000:]
    assert f'batch_size: {theirs} there, {mine} here' in ' '.join(err.split())
    assert 'Traceback' not in err
  assert not (tmp_path / 'w' / 'checkpoints').exists()


@pytest.mark.slow(seconds=110)
def test_two_processes_equal_one_save_together_and_name_a_lost_peer(
    tmp_path):
  """One run over two processes: preempted (SIGTERM to one), compared with
  one process, resumed and process 1 killed, resumed and process 0 killed.
  One test, so that the processes start and compile four times, not seven."""
  import signal
  import time
  from clirun import read_metrics, train_here
  workdir, data_dir = tmp_path / 'w', tmp_path / 'tfds'
  # Evaluations every 2 steps, split over the processes as the batches are.
  long_run = ('--config.num_train_steps=100000', '--config.log_every_steps=1',
              '--config.checkpoint_every_steps=100000',
              '--config.eval_every_steps=2',
              '--config.distributed.heartbeat_timeout=10')

  def wait_for_rows(procs, count):
    deadline = time.time() + 600
    while not ((workdir / 'metrics.jsonl').exists()
               and len(train_rows(workdir)) >= count):
      assert all(p.poll() is None for p in procs), [
          p.communicate()[1][-3000:] for p in procs]
      assert time.time() < deadline, 'no training within 600 s'
      time.sleep(0.2)

  def train_rows(w):
    return [r for r in read_metrics(w) if 'train_loss' in r]

  # A fresh data_dir: both processes prepare shapes10, one after the other.
  procs = _start_processes(workdir, *long_run, data_dir=data_dir)
  wait_for_rows(procs, 2)
  procs[1].send_signal(signal.SIGTERM)  # A scheduler preempting one host.
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 75, err[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['status'] == 'preempted' and summary['processes'] == 2
  assert summary['mesh'] == {'data': 1, 'model': 2}  # A tower per process.
  step = summary['steps']
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [step]  # One step, saved by both together.

  # The same steps in one process (this one, both towers on its two devices),
  # while the two processes resume: equal bit for bit, the evaluations included.
  procs = _start_processes(workdir, *long_run, data_dir=data_dir)
  train_here(tmp_path / 'single', *long_run[1:],
             f'--config.num_train_steps={step}', data_dir=data_dir)
  reference = checkpoint.load_numpy(tmp_path / 'single' / 'checkpoints' /
                                    str(step))
  multi = checkpoint.load_numpy(workdir / 'checkpoints' / str(step))
  for a, b in zip(jax.tree.leaves(reference['params']),
                  jax.tree.leaves(multi['params']), strict=True):
    np.testing.assert_array_equal(a, b)
  timing = ('images_per_sec', 'input_wait_sec')
  rows = lambda w: [{k: v for k, v in r.items() if k not in timing}
                    for r in read_metrics(w) if r['step'] < step]
  assert rows(workdir) == rows(tmp_path / 'single')

  wait_for_rows(procs, step + 1)
  procs[1].kill()  # kill -9 of process 1 (its supervisor and, with it, itself).
  # Bounded by distributed.heartbeat_timeout (10 s here), not by a wall time
  # asserted here: a loaded machine may stretch it; a hang still fails.
  _, err = procs[0].communicate(timeout=300)
  assert procs[0].returncode == 69, err[-3000:]
  message = ' '.join(err.split())
  assert 'error: process 0 of 2 stopped because process 1 stopped answering' \
      in message
  assert 'Run the same command on every host to resume' in message
  assert 'Fatal Python error' not in err and 'Traceback' not in err
  procs[1].communicate()

  # Resumed once more, then the coordinator lost: kill -9 of process 0.
  done = len(train_rows(workdir))
  procs = _start_processes(workdir, *long_run, data_dir=data_dir)
  wait_for_rows(procs, done + 1)  # Past the rows of the attempt before.
  procs[0].kill()
  _, err = procs[1].communicate(timeout=300)
  assert procs[1].returncode == 69, err[-3000:]
  message = ' '.join(err.split())
  assert ('error: process 1 of 2 stopped because process 0 (the coordinator)'
          ' stopped answering') in message
  assert 'Fatal Python error' not in err and 'Traceback' not in err
  procs[0].communicate()


@pytest.mark.slow(seconds=10)
def test_a_process_that_never_joins_is_named(tmp_path):
  """Process 0 alone, and process 1 alone (of two runs): each gives up after
  distributed.initialization_timeout, naming the one it waited for."""
  procs = [
      _start_processes(tmp_path / f'w{i}',
                       '--config.distributed.initialization_timeout=2',
                       data_dir=tmp_path / 'tfds', ids=(i,))[0]
      for i in range(2)]
  for i, p in enumerate(procs):
    _, err = p.communicate(timeout=300)
    assert p.returncode == supervision.NOT_JOINED_EXIT_CODE == 68, err[-3000:]
    message = ' '.join(err.split())
    other = 'process 1 to join' if i == 0 else 'process 0 (the coordinator)'
    assert f'error: process {i} of 2 waited 2 s' in message
    assert other in message and 'Nothing was trained' in message
    assert 'Fatal Python error' not in err and 'Traceback' not in err
  assert not (tmp_path / 'tfds').exists() and not (tmp_path / 'w0').exists()


def _slurm_env(task, tasks=2):
  """What srun sets for task `task` of `tasks` on one node, 127.0.0.1. JAX
  derives the coordinator's port from the job id: one that is free now."""
  port = _free_port_in(range(61440, 65536))
  return {'SLURM_JOB_ID': str(port - 61440 + 4096 * 7),
          'SLURM_STEP_NODELIST': '127.0.0.1', 'SLURM_NTASKS': str(tasks),
          'SLURM_PROCID': str(task), 'SLURM_LOCALID': str(task),
          'SLURM_NODEID': '0', 'SLURM_STEP_TASKS_PER_NODE': str(tasks)}


def _free_port_in(ports) -> int:
  for port in np.random.default_rng().permutation(np.array(ports)):
    with socket.socket() as s:
      try:
        s.bind(('127.0.0.1', int(port)))
      except OSError:
        continue
      return int(port)
  raise AssertionError('no free port')


def _start_under_slurm(workdir, *overrides, envs, per_process, data_dir):
  """The command without any process flag, as srun starts it in each task."""
  import subprocess
  return [subprocess.Popen(
      cli_command(workdir, *overrides, *extra, data_dir=data_dir), cwd=ROOT,
      env=cli_env(env), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for env, extra in zip(envs, per_process)]


@pytest.mark.slow(seconds=10)
def test_slurm_tasks_find_each_other_without_flags(tmp_path):
  """Two tasks of one srun step: they join through the coordinator JAX derives
  from SLURM's variables, then compare their configs (one differs)."""
  env = _slurm_env(0)
  envs = [env, env | {'SLURM_PROCID': '1', 'SLURM_LOCALID': '1'}]
  procs = _start_under_slurm(tmp_path / 'w', envs=envs, data_dir=tmp_path / 'd',
                             per_process=((), ('--config.batch_size=16',)))
  for p, mine, theirs, other in zip(procs, (8, 16), (16, 8), (1, 0)):
    _, err = p.communicate(timeout=600)
    message = ' '.join(err.split())
    assert p.returncode == 2, err[-3000:]
    assert f'Process {other} was started with another config' in message
    assert f'batch_size: {theirs} there, {mine} here' in message
    assert 'Traceback' not in err


@pytest.mark.slow(seconds=8)
def test_a_slurm_task_alone_says_to_start_it_with_srun(tmp_path):
  """Task 1 of 2 without task 0 (python run in a batch script, not srun)."""
  env = _slurm_env(1)
  (proc,) = _start_under_slurm(
      tmp_path / 'w', '--config.distributed.initialization_timeout=2',
      envs=[env], per_process=[()], data_dir=tmp_path / 'd')
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == supervision.NOT_JOINED_EXIT_CODE, err[-3000:]
  message = ' '.join(err.split())
  assert 'error: process 1 of 2 waited 2 s' in message
  assert "process 0 (the coordinator) to join the run at the coordinator JAX" \
      " found from SLURM's environment" in message
  assert 'Start it with srun' in message and 'SLURM_NTASKS=2' in message
  assert 'Traceback' not in err and not (tmp_path / 'w').exists()
