"""The sweep runner: points as ordinary runs, skipped when done, resumed when
interrupted, failures recorded, the same table from a scheduler's runs."""

import csv
import json
from pathlib import Path
import shlex
import shutil
import subprocess
import sys

import pytest

from alexnet_jax.tools.sweeps import spec
from alexnet_jax.tools.sweeps import sweepdir
from alexnet_jax.errors import UserError
from clirun import ROOT, cli_env

# One xdist worker runs this file's tests, which share costly session-scoped
# fixtures (tests/conftest.py says why).
pytestmark = [pytest.mark.xdist_group('sweep'),
              pytest.mark.slow(seconds=70)]  # All of this file's tests together.

TWO_POINTS = """\
'''LRN on and off in the tiny network, and a point that fails.'''
BASE = 'configs/default.py:tiny'
OVERRIDES = {'num_train_steps': 4, 'checkpoint_every_steps': 2}
ZIP = {'model.lrn': [True, False, True],
       'optimizer.learning_rate': [0.01, 0.01, -1.0]}
SEEDS = [0]
TARGET_TRAIN_ERROR = 0.95
"""
POINTS = ('model.lrn=True,optimizer.learning_rate=0.01,seed=0',
          'model.lrn=False,optimizer.learning_rate=0.01,seed=0')
FAILING = 'model.lrn=True,optimizer.learning_rate=-1.0,seed=0'
# Compiles in about half the time; the same in every run of a test.
FAST_COMPILE = {'JAX_DISABLE_MOST_OPTIMIZATIONS': '1'}


def write(path: Path, text: str) -> str:
  path.write_text(text)
  return str(path)


def run_sweep(*args, timeout=900):  # A guard only: a loaded machine is slow.
  return subprocess.run([sys.executable, '-m', 'alexnet_jax.sweep', *args],
                        cwd=ROOT, env=cli_env(FAST_COMPILE),
                        capture_output=True, text=True,
                        timeout=timeout)


def table_rows(workdir: Path) -> list[str]:
  """results.md's rows of the completed points, without the wall-time
  column, which no rerun repeats."""
  lines = (workdir / 'results.md').read_text().splitlines()
  header = next(l for l in lines if l.startswith('| point'))
  wall = [c.strip() for c in header.split('|')].index('wall s')
  return [' | '.join(c.strip() for i, c in enumerate(l.split('|')) if i != wall)
          for l in lines if l.startswith('| `') and '| 1/1 |' in l]


@pytest.fixture(scope='session')
def finished(tmp_path_factory):
  """A three-point sweep run to the end with --parallel=2; one point fails."""
  root = tmp_path_factory.mktemp('sweep')
  sweep_file = write(root / 'lrn.py', TWO_POINTS)
  workdir = root / 'run'
  proc = run_sweep(f'--sweep={sweep_file}', f'--workdir={workdir}',
                   '--parallel=2')
  assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
  rows = table_rows(workdir)
  assert len(rows) == 2, (workdir / 'results.md').read_text()
  return sweep_file, workdir, rows


def test_a_sweep_writes_the_table_the_csv_and_the_plots(finished):
  _, workdir, _ = finished
  for point in POINTS:
    assert json.loads((workdir / point / 'summary.json').read_text())[
        'status'] == 'completed'
  with (workdir / 'results.csv').open() as f:
    rows = list(csv.DictReader(f))
  assert [r['point'] for r in rows] == [
      'model.lrn=True,optimizer.learning_rate=0.01',
      'model.lrn=False,optimizer.learning_rate=0.01',
      'model.lrn=True,optimizer.learning_rate=-1.0']
  for row, point in zip(rows, POINTS):
    summary = json.loads((workdir / point / 'summary.json').read_text())
    assert float(row['eval_top1_mean']) == pytest.approx(summary['eval_top1'])
    assert float(row['eval_loss_mean']) == pytest.approx(summary['eval_loss'])
    assert float(row['steps_mean']) == 4 and row['completed'] == '1'
  table = (workdir / 'results.md').read_text()
  assert '| `model.lrn=True,optimizer.learning_rate=0.01` | 1/1 |' in table
  assert '| `model.lrn=False,optimizer.learning_rate=0.01` | 1/1 |' in table
  for plot in ('curves.png', 'final.png'):
    assert (workdir / plot).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert json.loads((workdir / 'sweep.json').read_text())['points'] == [
      *POINTS, FAILING]


def test_a_failing_point_is_reported_and_the_others_finish(finished):
  _, workdir, _ = finished
  with (workdir / 'runs.csv').open() as f:
    runs = {r['folder']: r for r in csv.DictReader(f)}
  assert [runs[p]['status'] for p in (*POINTS, FAILING)] == [
      'completed', 'completed', 'failed']
  # The end of its stderr: main's one-paragraph refusal of the rate.
  error = runs[FAILING]['error']
  assert 'learning_rate' in error and 'positive' in error, error
  table = (workdir / 'results.md').read_text()
  assert '| 0/1 |' in table and 'seed 0 failed: error: ' in table


def test_a_second_run_skips_finished_points_and_resumes_an_interrupted_one(
    finished):
  sweep_file, workdir, rows_before = finished
  args = (f'--sweep={sweep_file}', f'--workdir={workdir}', '--parallel=2')
  proc = run_sweep(*args)
  assert proc.returncode == 1, proc.stderr[-3000:]  # The failing point again.
  for point in POINTS:
    assert f'{point}: completed before, skipped.' in proc.stdout
    attempts = json.loads((workdir / point / 'sweep_run.json').read_text())[
        'attempts']
    assert len(attempts) == 1  # Nothing ran again.

  # What kill -9 after step 3 leaves: the step-2 checkpoint, no summary.
  interrupted = workdir / POINTS[1]
  (interrupted / 'summary.json').unlink()
  shutil.rmtree(interrupted / 'checkpoints' / '4')
  proc = run_sweep(*args)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert f'{POINTS[0]}: completed before, skipped.' in proc.stdout
  log = (interrupted / 'sweep.log').read_text()
  assert 'Resumed from the checkpoint at step 2' in log
  # Same data order and dropout from step 2 on: the same final numbers.
  assert table_rows(workdir) == rows_before


def test_printed_commands_run_by_hand_collect_into_the_same_table(
    finished, tmp_path):
  sweep_file, _, rows = finished
  workdir = tmp_path / 'by-hand'
  proc = run_sweep(f'--sweep={sweep_file}', f'--workdir={workdir}',
                   '--print_commands')
  assert proc.returncode == 0, proc.stderr[-3000:]
  commands = proc.stdout.splitlines()
  assert len(commands) == 3
  assert all('-m alexnet_jax.main' in c for c in commands)
  # As a job array would: each line on its own, from any directory.
  jobs = [subprocess.Popen(c, shell=True, cwd='/', env=cli_env(FAST_COMPILE),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True) for c in commands]
  for job, command in zip(jobs, commands):
    _, stderr = job.communicate(timeout=900)
    assert job.returncode == (2 if FAILING in command else 0), stderr[-3000:]
  proc = run_sweep(f'--sweep={sweep_file}', f'--workdir={workdir}',
                   '--collect_only')
  assert proc.returncode == 1, proc.stderr[-3000:]  # One point did not finish.
  assert 'started' not in proc.stdout  # Collected, nothing trained.
  assert table_rows(workdir) == rows


def test_printed_commands_may_be_cut_short_by_the_reader(tmp_path):
  """`--print_commands | head`: more than a pipe holds (300 points), the
  reader gone after one line; no BrokenPipeError traceback, exit 0."""
  sweep_file = tmp_path / 'many.py'
  sweep_file.write_text("BASE = 'configs/default.py:tiny'\nSEEDS = list(range(300))\n")
  command = shlex.join([sys.executable, '-m', 'alexnet_jax.sweep',
                        f'--sweep={sweep_file}', f'--workdir={tmp_path / "w"}',
                        '--print_commands'])
  proc = subprocess.run(['bash', '-c', f'{command} | head -n 1; exit ${{PIPESTATUS[0]}}'],
                        cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0 and 'Error' not in proc.stderr, proc.stderr[-3000:]
  assert proc.stdout.count('\n') == 1 and '-m alexnet_jax.main' in proc.stdout


BAD_SWEEPS = {
    'syntax': ("BASE = 'configs/default.py:tiny'\nPRODUCT = {'model.lrn': [True,\n",
               'syntax error on line'),
    'unknown_key': ("BASE = 'configs/default.py:tiny'\n"
                    "PRODUCT = {'model.lrm': [True, False]}\n",
                    "'model.lrm', which is not a key of configs/default.py:tiny"
                    ' (nearest: model.lrn'),
    'empty_product': ("BASE = 'configs/default.py:tiny'\n"
                      "PRODUCT = {'model.lrn': []}\n", 'has an empty PRODUCT'),
    'missing_base': ("BASE = 'configs/nothing.py'\nSEEDS = [0, 1]\n",
                     'configs/nothing.py does not exist'),
    'wrong_type': ("BASE = 'configs/default.py:tiny'\n"
                   "PRODUCT = {'model.lrn': ['yes']}\n",
                   "sets model.lrn='yes', which the config"),
    'typo_field': ("BASE = 'configs/default.py:tiny'\nSEED = [0]\n",
                   'defines SEED, which the runner does not know'),
    'ragged_zip': ("BASE = 'configs/default.py:tiny'\n"
                   "ZIP = {'model.lrn': [True, False], 'seed': [0]}\n",
                   'ZIP lists of different lengths'),
}


@pytest.mark.parametrize('name', sorted(BAD_SWEEPS))
def test_bad_sweep_files_name_the_file_and_the_problem(name, tmp_path,
                                                       monkeypatch):
  monkeypatch.chdir(ROOT)
  text, expected = BAD_SWEEPS[name]
  path = write(tmp_path / f'{name}.py', text)
  with pytest.raises(UserError) as error:
    spec.load(path)
  message = str(error.value)
  assert path in message and expected in message, message


def test_a_bad_sweep_file_exits_2_with_one_paragraph_before_any_point(tmp_path):
  path = write(tmp_path / 'bad.py', BAD_SWEEPS['unknown_key'][0])
  workdir = tmp_path / 'run'
  proc = run_sweep(f'--sweep={path}', f'--workdir={workdir}')
  assert proc.returncode == 2
  assert proc.stderr.startswith('error: The sweep file')
  assert 'Traceback' not in proc.stderr and '\n\n' not in proc.stderr.strip()
  assert not workdir.exists()


def test_a_workdir_of_another_sweep_is_refused_and_kept(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  first = spec.load(write(tmp_path / 'a.py', TWO_POINTS))
  sweepdir.claim_workdir(first, tmp_path / 'run')
  record = (tmp_path / 'run' / 'sweep.json').read_text()
  other = spec.load(write(tmp_path / 'b.py', TWO_POINTS.replace(
      "'num_train_steps': 4", "'num_train_steps': 6")))
  with pytest.raises(UserError, match='holds points of another sweep'):
    sweepdir.claim_workdir(other, tmp_path / 'run')
  assert (tmp_path / 'run' / 'sweep.json').read_text() == record
  (tmp_path / 'stranger').mkdir()
  (tmp_path / 'stranger' / 'notes.txt').write_text('mine')
  with pytest.raises(UserError, match='holds no sweep.json'):
    sweepdir.claim_workdir(first, tmp_path / 'stranger')
  # The same experiment with one more seed reuses its folder.
  more = spec.load(write(tmp_path / 'c.py', TWO_POINTS.replace(
      'SEEDS = [0]', 'SEEDS = [0, 1]')))
  sweepdir.claim_workdir(more, tmp_path / 'run')


def test_points_are_the_product_times_the_zip_times_the_seeds(tmp_path,
                                                              monkeypatch):
  monkeypatch.chdir(ROOT)
  sweep = spec.load(write(tmp_path / 's.py', """\
BASE = 'configs/default.py:tiny'
OVERRIDES = {'num_train_steps': 3}
PRODUCT = {'model.lrn': [True, False]}
ZIP = {'model.activation': ['relu', 'tanh'],
       'optimizer.learning_rate': [0.01, 0.02]}
SEEDS = [0, 1]
"""))
  assert len(sweep.points) == 2 * 2 * 2
  assert sweep.points[0].name == (
      'model.lrn=True,model.activation=relu,optimizer.learning_rate=0.01,seed=0')
  tanh = next(p for p in sweep.points if p.overrides['model.activation'] == 'tanh')
  assert tanh.overrides['optimizer.learning_rate'] == 0.02
  command = sweep.command(sweep.points[-1], '/w')
  assert command[1:] == [
      '-m', 'alexnet_jax.main', '--config=configs/default.py:tiny',
      '--config.num_train_steps=3', '--config.model.lrn=False',
      '--config.model.activation=tanh', '--config.optimizer.learning_rate=0.02',
      '--config.seed=1',
      '--workdir=/w/model.lrn=False,model.activation=tanh,'
      'optimizer.learning_rate=0.02,seed=1']
  config = spec.point_config(sweep, sweep.points[-1])
  assert (config.model.lrn, config.model.activation, config.seed,
          config.num_train_steps) == (False, 'tanh', 1, 3)
