"""The README and docs/: the two first-screen commands stay the ones CI and
users run, the generated tables are today's, and every relative link resolves."""

import re
from urllib.parse import unquote

import pytest

from clirun import ROOT

README = ROOT / 'README.md'
PAGES = [README, ROOT / 'CHANGELOG.md', *sorted((ROOT / 'docs').glob('*.md')),
         ROOT / 'experiments' / 'README.md',
         *sorted((ROOT / 'benchmarks' / 'results').glob('*.md')),
         *sorted((ROOT / 'experiments' / 'results').rglob('*.md'))]


def _commands():
  return re.findall(r'```sh\n(.+?)\n```', README.read_text())


def test_first_command_installs_and_runs_the_two_device_demo():
  demo = _commands()[0]
  assert 'pip install -r requirements.txt' in demo
  assert '-m alexnet_jax.main --config=configs/two_gpu.py:demo' in demo
  # requirements.txt installs the project too: no sys.path needed anywhere.
  assert (ROOT / 'requirements.txt').read_text().splitlines()[-1] == '-e .'


def test_ci_runs_the_readme_test_command():
  tests = _commands()[1]
  assert 'pytest' in tests and 'requirements.txt' in tests
  ci = (ROOT / '.ci' / 'run').read_text().splitlines()
  assert tests in ci  # Verbatim: what CI runs is what the README says.


def test_readme_is_a_short_front_door():
  text = README.read_text()
  assert len(text.splitlines()) <= 200
  # History belongs in commit messages: no issue numbers, commit hashes or
  # the suite's timing in the README.
  assert not re.search(r'\bissues? \d', text, re.I)
  assert not re.search(r'\bcommit [0-9a-f]{7}', text)
  assert not re.search(r'\d+ min \d+ s', text)


def test_generated_tables_are_todays():
  from alexnet_jax.tools import result_tables  # pylint: disable=import-outside-toplevel
  text = README.read_text()
  assert text.count('<!-- generated: ') == len(result_tables.BLOCKS) == 2
  stale = result_tables.stale_blocks(README)
  assert not stale, (f'README.md blocks {stale} differ from the results files:'
                     ' run python -m alexnet_jax.tools.result_tables --write')


def test_the_tables_come_from_the_files():
  """The generator reads the files: a different figure in one changes it."""
  from alexnet_jax.tools import result_tables  # pylint: disable=import-outside-toplevel
  table = result_tables.results_table()
  assert '25,049 images/s at batch 512 (MFU 10.5%)' in table  # h100-bfloat16.json
  assert 'inconclusive by length (0.48 epochs, 2 seeds; the difference alone: reproduced)' in table  # experiments/results/lrn/
  assert '99.65% validation top-1' in table  # experiments/results/demo/


LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
  broken = []
  for target in LINK.findall(page.read_text()):
    if re.match(r'[a-z]+:', target) or target.startswith('#'):
      continue  # A web address or an anchor on the same page.
    path = (page.parent / unquote(target.split('#', 1)[0])).resolve()
    if not path.exists():
      broken.append(target)
  assert not broken, broken


def test_every_test_the_docs_name_exists():
  """The "What happens when" table and the pages name the test of each claim."""
  defined = {m for p in (ROOT / 'tests').rglob('test_*.py')
             for m in re.findall(r'^def (test_\w+)', p.read_text(), re.M)}
  named = {m for page in PAGES for m in re.findall(r'`(test_\w+)`', page.read_text())}
  assert named and not named - defined, sorted(named - defined)
