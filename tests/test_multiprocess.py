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
