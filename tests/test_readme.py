"""The README's two first-screen commands stay the ones CI and users run."""

import re

from clirun import ROOT


def _commands():
  return re.findall(r'```sh\n(.+?)\n```', (ROOT / 'README.md').read_text())


def test_first_command_installs_and_runs_the_two_device_demo():
  demo = _commands()[0]
  assert 'pip install -r requirements.txt' in demo
  assert '-m alexnet_jax.main --config=configs/two_gpu.py:demo' in demo


def test_ci_runs_the_readme_test_command():
  tests = _commands()[1]
  assert 'pytest' in tests and 'requirements.txt' in tests
  ci = (ROOT / '.ci' / 'run').read_text().splitlines()
  assert tests in ci  # Verbatim: what CI runs is what the README says.
