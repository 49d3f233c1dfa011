"""Two processes over jax.distributed on 127.0.0.1: one tower in each.

The 2012 split with each GPU driven by its own process: the towers' exchanges
cross a process boundary, every process loads the whole batch (both towers
read the same images), and the result equals the single-process run.
"""

import json
import socket

import jax
import numpy as np

from alexnet_jax import checkpoint
from clirun import ROOT, cli_command, cli_env, run_cli


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_towers_in_two_processes_equal_one_process(tmp_path):
  import subprocess
  data_dir = tmp_path / 'tfds'
  run_cli(tmp_path / 'single', data_dir=data_dir)  # Also prepares shapes10.

  address = f'127.0.0.1:{_free_port()}'
  procs = [
      subprocess.Popen(
          cli_command(tmp_path / 'multi', f'--coordinator_address={address}',
                      '--num_processes=2', f'--process_id={i}',
                      data_dir=data_dir),
          cwd=ROOT, env=cli_env(), text=True, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE)
      for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]

  summary = json.loads((tmp_path / 'multi' / 'summary.json').read_text())
  assert summary['mesh'] == {'data': 1, 'model': 2} and summary['steps'] == 4
  assert summary['processes'] == 2
  single = checkpoint.load_numpy(tmp_path / 'single' / 'checkpoints' / '4')
  multi = checkpoint.load_numpy(tmp_path / 'multi' / 'checkpoints' / '4')
  for a, b in zip(jax.tree.leaves(single['params']),
                  jax.tree.leaves(multi['params'])):
    np.testing.assert_array_equal(a, b)


def _start_processes(workdir, *overrides, data_dir, per_process=((), ())):
  import subprocess
  address = f'127.0.0.1:{_free_port()}'
  return [
      subprocess.Popen(
          cli_command(workdir, f'--coordinator_address={address}',
                      '--num_processes=2', f'--process_id={i}', *overrides,
                      *per_process[i], data_dir=data_dir),
          cwd=ROOT, env=cli_env(), text=True, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE)
      for i in range(2)]


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


def test_preemption_of_one_process_saves_all_and_a_lost_peer_is_named(tmp_path):
  import signal
  import time
  from clirun import read_metrics
  workdir = tmp_path / 'w'
  long_run = ('--config.num_train_steps=100000', '--config.log_every_steps=1',
              '--config.checkpoint_every_steps=100000',
              '--config.eval_every_steps=100000',
              '--config.distributed.heartbeat_timeout=10')

  def wait_for_rows(procs, count):
    deadline = time.time() + 600
    while not ((workdir / 'metrics.jsonl').exists()
               and len(read_metrics(workdir)) >= count):
      assert all(p.poll() is None for p in procs), [
          p.communicate()[1][-3000:] for p in procs]
      assert time.time() < deadline, 'no training within 600 s'
      time.sleep(0.2)

  # A fresh data_dir: both processes prepare shapes10, one after the other.
  procs = _start_processes(workdir, *long_run, data_dir=tmp_path / 'tfds')
  wait_for_rows(procs, 2)
  procs[1].send_signal(signal.SIGTERM)  # A scheduler preempting one host.
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 75, err[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['status'] == 'preempted' and summary['processes'] == 2
  steps = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [summary['steps']]  # One step, saved by both together.

  procs = _start_processes(workdir, *long_run, data_dir=tmp_path / 'tfds')
  wait_for_rows(procs, summary['steps'] + 2)
  procs[1].kill()  # kill -9 of process 1 (its supervisor and, with it, itself).
  killed = time.time()
  _, err = procs[0].communicate(timeout=300)
  assert time.time() - killed < 60, err[-3000:]
  assert procs[0].returncode == 69, err[-3000:]
  message = ' '.join(err.split())
  assert 'error: process 0 of 2 stopped because process 1 stopped answering' \
      in message
  assert 'Run the same command on every host to resume' in message
  assert 'Fatal Python error' not in err and 'Traceback' not in err
  procs[1].communicate()
