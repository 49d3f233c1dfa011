"""Running the CLIs as a user would, for the end-to-end tests."""

import contextlib
import io
import json
import logging
import os
from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[1]


def cli_command(workdir, *overrides, config='configs/two_gpu.py:tiny',
                data_dir=None, module='alexnet_jax.main'):
  args = [sys.executable, '-m', module, f'--config={config}',
          f'--workdir={workdir}']
  if data_dir is not None:
    args.append(f'--config.data_dir={data_dir}')
  return args + list(overrides)


def cli_env(env=None):
  """No XLA_FLAGS: the CLI must give itself its host devices."""
  return {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'} | (env or {})


def run_cli(workdir, *overrides, check=True, env=None, **kwargs):
  proc = subprocess.run(cli_command(workdir, *overrides, **kwargs), cwd=ROOT,
                        env=cli_env(env), capture_output=True, text=True,
                        timeout=300)
  if check and proc.returncode != 0:
    raise AssertionError(f'exit {proc.returncode}\n{proc.stderr[-3000:]}')
  return proc


def start_module(module, *args):
  """`python -m module args...` from the repository root, in the background."""
  return subprocess.Popen([sys.executable, '-m', module, *args], cwd=ROOT,
                          env=cli_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300):
  """Waits for a started CLI: (exit status, stdout, stderr)."""
  stdout, stderr = process.communicate(timeout=timeout)
  return process.returncode, stdout, stderr


def start_cli(workdir, *overrides, **kwargs):
  return subprocess.Popen(cli_command(workdir, *overrides, **kwargs), cwd=ROOT,
                          env=cli_env(), text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)


def read_metrics(workdir):
  return [json.loads(line) for line in
          (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]


def train_here(workdir, *overrides, config='configs/two_gpu.py:tiny',
               data_dir=None):
  """What `python -m alexnet_jax.main` runs, in this process: the config
  resolved (`Settings.from_config`), its checks (`launch.start`), then
  `loop.train_and_evaluate`, on the test worker's two host devices. For tests of what a run writes and says; exit statuses,
  signals and kills keep real subprocesses (`run_cli`), each of which pays
  Python, TensorFlow and JAX's start (about 10 s of CPU here).

  Overrides are `--config.key=value` strings, as on the command line. Returns
  (summary, what the run printed and logged); a UserError propagates.
  """
  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run import cli, launch, loop
  from alexnet_jax.run.settings import Settings
  path, *arg = config.split(':', 1)
  data = [] if data_dir is None else [f'--config.data_dir={data_dir}']
  cfg = cli.config_from_args(
      ['main', f'--config={":".join([str(ROOT / path), *arg])}', *overrides, *data])
  said = io.StringIO()
  handler = logging.StreamHandler(said)
  logging.getLogger().addHandler(handler)
  try:
    with contextlib.redirect_stderr(said):
      settings = Settings.from_config(cfg)
      launch.start(settings, workdir=str(workdir), fits=True)
      summary = loop.train_and_evaluate(settings, str(workdir))
  finally:
    logging.getLogger().removeHandler(handler)
  return summary, said.getvalue()
