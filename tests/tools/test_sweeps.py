"""The sweep runner: points as ordinary runs, skipped when done, resumed when
interrupted, failures recorded, the same table from a scheduler's runs."""

import csv
import json
from pathlib import Path
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import sys
import time

import pytest

from alexnet_jax.tools.sweeps import placement
from alexnet_jax.tools.sweeps import runner
from alexnet_jax.tools.sweeps import spec
from alexnet_jax.tools.sweeps import sweepdir
from alexnet_jax.errors import UserError
from clirun import ROOT, cli_env

# One xdist worker runs this file's tests, which share costly session-scoped
# fixtures (tests/conftest.py says why).
pytestmark = [pytest.mark.xdist_group('sweep'),
              pytest.mark.slow(seconds=100)]  # All of this file's tests together.

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


def test_printed_commands_run_as_a_slurm_job_array_collect_into_the_same_table(
    finished, tmp_path):
  sweep_file, _, rows = finished
  workdir = tmp_path / 'by-hand'
  proc = run_sweep(f'--sweep={sweep_file}', f'--workdir={workdir}',
                   '--print_commands')
  assert proc.returncode == 0, proc.stderr[-3000:]
  script = tmp_path / 'array.sbatch'
  script.write_text(proc.stdout)
  assert proc.stdout.startswith('#!/bin/bash\n')
  assert '\n#SBATCH --array=0-2\n' in proc.stdout
  assert proc.stdout.count('-m alexnet_jax.main') == 3
  # As SLURM runs an array: the same file once per task, its index in
  # SLURM_ARRAY_TASK_ID, from any directory.
  jobs = [subprocess.Popen(['bash', str(script)], cwd='/',
                           env=cli_env(FAST_COMPILE | {'SLURM_ARRAY_TASK_ID': str(i)}),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True) for i in range(3)]
  for i, job in enumerate(jobs):
    _, stderr = job.communicate(timeout=900)
    assert job.returncode == (2 if i == 2 else 0), stderr[-3000:]
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
  assert proc.stdout == '#!/bin/bash\n'


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
  sweepdir.claim_workdir(first, tmp_path / 'run').release()
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
  sweepdir.claim_workdir(more, tmp_path / 'run').release()


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


# --- Placement: which devices each point gets ------------------------------------

GPUS = [placement.Gpu('0', 'NVIDIA H200', 140 << 30),
        placement.Gpu('1', 'NVIDIA H200', 140 << 30)]
# A stand-in for main: records what it was given, then completes (or runs
# out of memory, as XLA says it).
FAKE_POINT = """\
import json, os, sys
from pathlib import Path
folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
(folder / 'seen.json').write_text(json.dumps({
    'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'),
    'fraction': os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION'),
    'platforms': os.environ.get('JAX_PLATFORMS'),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'cpus': sorted(os.sched_getaffinity(0))}))
if folder.name == 'model.lrn=False,seed=1':
  print('jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of'
        ' memory while trying to allocate 2.50GiB.', file=sys.stderr)
  sys.exit(1)
(folder / 'summary.json').write_text(json.dumps(
    {'status': 'completed', 'steps': 4, 'num_train_steps': 4, 'eval_top1': 0.5}))
"""
FOUR_POINTS = """\
BASE = 'configs/default.py:tiny'
PRODUCT = {'model.lrn': [True, False]}
SEEDS = [0, 1]
"""


def fake_runner(tmp_path, slots, text=FOUR_POINTS):
  sweep = spec.load(write(tmp_path / 's.py', text))
  workdir = tmp_path / 'run'
  sweepdir.claim_workdir(sweep, workdir).release()
  command = lambda point, w: [sys.executable, '-c', FAKE_POINT, str(w / point.name)]
  runner.Runner(sweep, workdir, slots, command=command).run()
  seen = {p.name: json.loads((workdir / p.name / 'seen.json').read_text())
          for p in sweep.points}
  with (workdir / 'runs.csv').open() as f:
    return seen, {r['folder']: r for r in csv.DictReader(f)}


def test_vmap_seeds_trains_a_points_seeds_in_one_command_or_refuses(
    tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  sweep = spec.load(write(tmp_path / 's.py', FOUR_POINTS))
  lrn = [p for p in sweep.points if p.group == 'model.lrn=True']
  argv = sweep.seeds_command(lrn, tmp_path)
  assert argv[:-2] == [a for a in sweep.command(lrn[0], tmp_path)
                       if not a.startswith(('--config.seed=', '--workdir='))]
  assert argv[-2:] == ['--seeds=0,1',
                       f'--workdir={tmp_path / "model.lrn=True,seed={seed}"}']
  # main puts each seed where its own point's run would be.
  template = argv[-1].removeprefix('--workdir=')
  assert [template.replace('{seed}', str(p.seed)) for p in lrn] == [
      str(tmp_path / p.name) for p in lrn]
  runner.check_vmap_seeds(sweep)
  split = spec.load(write(tmp_path / 't.py', FOUR_POINTS + (
      "OVERRIDES = {'strategy': 'towers', 'mesh.model': 2}\n")))
  with pytest.raises(UserError, match=r'the point model.lrn=True has'
                     r' strategy=towers, mesh.model=2\. Nothing was started'):
    runner.check_vmap_seeds(split)


def test_each_point_sees_only_its_gpu_and_its_share_of_it(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  slots = placement.plan('gpu', need=1, parallel=0, points_per_device=2,
                         gpus=GPUS, cpus=[0, 1])
  assert [s.gpus for s in slots] == [('0',), ('1',), ('0',), ('1',)]
  seen, runs = fake_runner(tmp_path, slots)
  for point, view in seen.items():
    assert view['cuda'] in ('0', '1'), (point, view)  # One GPU, never both.
    assert view['fraction'] == '0.45'  # 0.9 of it, halved.
  # The point that ran out of memory is failed with its cause; the others ran.
  statuses = {folder: r['status'] for folder, r in runs.items()}
  assert statuses.pop('model.lrn=False,seed=1') == 'failed'
  assert set(statuses.values()) == {'completed'}
  error = runs['model.lrn=False,seed=1']['error']
  assert error.startswith('out of memory on GPU ') and 'RESOURCE_EXHAUSTED' in error


def test_points_on_the_cpu_get_their_own_cores_and_host_devices(tmp_path,
                                                                monkeypatch):
  monkeypatch.chdir(ROOT)
  two_towers = FOUR_POINTS.replace('default.py:tiny', 'two_gpu.py:tiny')
  sweep = spec.load(write(tmp_path / 't.py', two_towers))
  slots = runner.place(sweep, 'cpu', 2, 1, gpus=GPUS)
  assert [s.cpus for s in slots] == [(0,), (1,)] and slots[0].host_devices == 2
  seen, _ = fake_runner(tmp_path, slots, two_towers)
  for view in seen.values():
    assert view['cpus'] in ([0], [1]) and view['cuda'] == ''
    assert view['platforms'] == 'cpu'
    assert view['xla_flags'].split().count(
        '--xla_force_host_platform_device_count=2') == 1
  # Two GPUs and a two-device point: both GPUs to one point at a time.
  assert [s.gpus for s in runner.place(sweep, 'gpu', 0, 1, gpus=GPUS)] == [('0', '1')]


@pytest.mark.parametrize('request_, expected', [
    (dict(devices='0,2'), 'asks for GPU 2, but this machine has 2 visible GPUs (0, 1)'),
    (dict(devices='gpu', gpus=[]), 'nvidia-smi lists no GPU'),
    (dict(devices='0', need=2), 'needs 2 devices (mesh.model x mesh.data), but only 1 GPU'),
    (dict(devices='gpu', parallel=3), '--parallel=3 asks for more points at once than the 2'),
    (dict(devices='cpu', parallel=3), 'would oversubscribe them'),
    (dict(devices='cpu', points_per_device=2), 'give --parallel=N instead'),
])
def test_device_requests_the_machine_cannot_meet_are_refused(request_, expected):
  args = dict(devices='auto', need=1, parallel=0, points_per_device=1,
              gpus=GPUS, cpus=[0, 1]) | request_
  with pytest.raises(UserError, match=re.escape(expected)):
    placement.plan(**args)


def test_points_too_large_to_share_a_gpu_are_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  # The floor of run/memory.py, traced from the sweep's configs.
  sweep = spec.load(write(tmp_path / 'big.py', FOUR_POINTS),
                    spec.parse_sets(['batch_size=1000000']))
  assert len(runner.place(sweep, 'gpu', 0, 1, gpus=GPUS)) == 2  # Alone: main judges.
  with pytest.raises(UserError, match=r'each point would get 63\.0 GiB of a 140'
                     r' GiB GPU, but its largest point needs at least'):
    runner.place(sweep, 'gpu', 0, 2, gpus=GPUS)
  slots = placement.plan('gpu', need=1, parallel=0, points_per_device=4,
                         gpus=GPUS, cpus=[0])
  placement.check_fits(slots, GPUS, 20 << 30, 4)  # 31 GiB each: fits.
  with pytest.raises(UserError, match=r'points_per_device=4: each point would get'
                     r' 30\.8 GiB .* Give --points_per_device=3 or fewer'):
    placement.check_fits(slots, GPUS, 40 << 30, 4)


def test_a_bad_device_request_exits_2_before_anything_starts(tmp_path):
  path = write(tmp_path / 'ok.py', FOUR_POINTS)
  proc = run_sweep(f'--sweep={path}', f'--workdir={tmp_path / "run"}',
                   '--devices=0,1')
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.startswith('error: --devices=0,1 asks for GPU')
  assert '\n\n' not in proc.stderr.strip() and 'Traceback' not in proc.stderr
  assert not (tmp_path / 'run').exists()


# --- One runner per folder, and points that die with it ---------------------------

LONG_POINT = """\
BASE = 'configs/default.py:tiny'
OVERRIDES = {'num_train_steps': 100000, 'eval_every_steps': 100000,
             'checkpoint_every_steps': 100000}
SEEDS = [0]
"""


def start_runner(sweep_file, workdir):
  process = subprocess.Popen(
      [sys.executable, '-m', 'alexnet_jax.sweep', f'--sweep={sweep_file}',
       f'--workdir={workdir}'], cwd=ROOT, env=cli_env(FAST_COMPILE),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  line = process.stdout.readline()
  assert 'started on CPU' in line, line + process.stderr.read()[-3000:]
  return process


def point_processes(workdir) -> list[int]:
  """PIDs of the training processes of points in `workdir`."""
  pids = []
  for proc in Path('/proc').iterdir():
    try:
      cmdline = (proc / 'cmdline').read_bytes().split(b'\0')
    except OSError:
      continue
    if b'alexnet_jax.main' in cmdline and any(
        str(workdir).encode() in a for a in cmdline):
      pids.append(int(proc.name))
  return pids


def test_a_second_runner_on_the_folder_is_refused_naming_the_first(tmp_path):
  sweep_file = write(tmp_path / 'long.py', LONG_POINT)
  workdir = tmp_path / 'run'
  first = start_runner(sweep_file, workdir)
  try:
    second = run_sweep(f'--sweep={sweep_file}', f'--workdir={workdir}')
    assert second.returncode == 2, second.stdout + second.stderr[-3000:]
    assert ' '.join(second.stderr.split()).startswith(
        f'error: Another sweep runner is using --workdir {workdir}: process'
        f' {first.pid} on host ')
    assert 'failed' not in second.stdout and 'completed' not in second.stdout
    assert first.poll() is None  # The first runner goes on untouched.
  finally:
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=300)
  record = json.loads((workdir / POINT_OF_LONG / 'sweep_run.json').read_text())
  assert record['status'] == 'preempted'  # Not a failure that did not happen.


POINT_OF_LONG = 'seed=0'


def test_kill_9_of_the_runner_takes_its_points_along(tmp_path):
  sweep_file = write(tmp_path / 'long.py', LONG_POINT)
  workdir = tmp_path / 'run'
  first = start_runner(sweep_file, workdir)
  children = point_processes(workdir)
  assert len(children) == 1, children
  first.kill()
  first.wait(timeout=60)
  deadline = time.monotonic() + 240  # It may save a checkpoint first.
  while point_processes(workdir) and time.monotonic() < deadline:
    time.sleep(0.5)
  assert not point_processes(workdir), 'the point outlived its runner'
  # The folder is free again: the next runner resumes the point.
  second = start_runner(sweep_file, workdir)
  second.send_signal(signal.SIGTERM)
  assert second.wait(timeout=300) == 75


# --- The one-GPU command -----------------------------------------------------------

ONE_GPU = ROOT / 'experiments' / 'all_on_one_gpu.py'


def one_gpu(*args, env=None):
  return subprocess.run([sys.executable, str(ONE_GPU), *args], cwd='/',
                        env=cli_env(FAST_COMPILE | (env or {})),
                        capture_output=True, text=True, timeout=900)


def test_the_one_gpu_command_plans_every_sweep_and_refuses_a_machine_without_gpu(
    tmp_path):
  proc = one_gpu(f'--out={tmp_path}', '--dry_run', '--tiny')
  assert proc.returncode == 0, proc.stderr[-3000:]
  planned = [line.split(':')[0] for line in proc.stdout.splitlines()]
  assert planned == ['lrn', 'relu_tanh', 'figure3', 'towers', 'dropout',
                     'overlapping_pool', 'figure3_67']
  assert 'relu_tanh: 24 points:' in proc.stdout and 'lrn: 12 points:' in proc.stdout
  # On a machine without a GPU (no nvidia-smi on PATH): one paragraph, exit 2.
  proc = one_gpu(f'--out={tmp_path / "gpu"}', '--data_dir=/nowhere',
                 env={'PATH': '/usr/bin:/bin'})
  assert proc.returncode == 2 and proc.stdout == ''
  assert proc.stderr.startswith('error: This command trains on a GPU, and'
                                ' nvidia-smi lists none here')
  assert not (tmp_path / 'gpu').exists()


@pytest.mark.slow(seconds=60)
def test_the_one_gpu_command_at_tiny_size_on_the_cpu_keeps_what_finished(tmp_path):
  out, archive = tmp_path / 'out', tmp_path / 'results.tgz'
  args = (f'--out={out}', '--tiny', '--only=figure3', '--seeds=0,1', '--vmap_seeds')
  proc = one_gpu(*args, f'--bundle={archive}')
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  with (out / 'figure3' / 'results.csv').open() as f:
    assert [r['completed'] for r in csv.DictReader(f)] == ['2', '2']
  # --vmap_seeds: a point's two seeds in one program, each in its own folder.
  point = out / 'figure3' / 'model.variant=cifar_two_tower,seed=1'
  assert json.loads((point / 'summary.json').read_text())['seeds_in_program'] == [0, 1]
  assert '--seeds=0,1' in (point / sweepdir.LOG_FILE).read_text()
  measure = json.loads((out / 'figure3' / 'figure3.json').read_text())
  two, one = (measure['points'][v] for v in ('cifar_two_tower', 'cifar_one_tower'))
  assert two['real_towers'] and not one['real_towers'] and two['seeds'] == [0, 1]
  assert 0 <= two['less_selective_tower_mean'] <= two['more_selective_tower_mean'] <= 1
  assert isinstance(measure['towers_specialise'], bool)
  with tarfile.open(archive) as tar:
    names = tar.getnames()
  assert 'out/figure3/results.csv' in names and 'out/figure3/figure3.png' in names
  assert not any('/checkpoints/' in n or '/tfds/' in n for n in names)
  # Run again: every point finished, so nothing trains.
  proc = one_gpu(*args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.count('completed before, skipped.') == 4
  assert 'started on' not in proc.stdout


# --- The results table ---------------------------------------------------------------

LRN_CPU = """\
PAPER = "Sec. 3.3: the four-layer CNN's CIFAR-10 test error, 13% without LRN, 11% with it"
BASE = 'configs/cifar10.py:cifar_4layer'
OVERRIDES = {'num_epochs': 10, 'log_every_steps': 50, 'model.init': 'he'}
PRODUCT = {'model.lrn': [True, False]}
SEEDS = [0, 1]
"""
HEADER = 'point,seeds,completed,eval_top1_mean,eval_top1_std\n'


def results_folder(tmp_path, csv_rows, sweep_text=LRN_CPU, run_md=''):
  folder = tmp_path / 'results' / 'lrn_x'
  folder.mkdir(parents=True)
  (folder / 'results.csv').write_text(HEADER + csv_rows)
  if run_md:
    (folder / 'RUN.md').write_text(run_md)
  return folder, write(tmp_path / 'lrn_x.py', sweep_text)


def test_a_cpu_length_folder_reads_its_length_and_borrows_the_claim(tmp_path):
  """As the background CPU run's folder will be: a runner without epochs
  columns or run.json, a sweep file without CLAIM (lrn.py's, by its PAPER)."""
  from alexnet_jax.tools import result_tables  # pylint: disable=import-outside-toplevel
  folder, sweep_file = results_folder(
      tmp_path, 'model.lrn=True,2,2,0.7268,0.004\nmodel.lrn=False,2,2,0.70,0.005\n',
      run_md='Hardware: 2-core Intel Xeon, shared\nStarted 2026-12-03\n')
  [row] = result_tables.ablation(folder, Path(sweep_file))
  assert (row['epochs'], row['seeds'], row['hardware'], row['date']) == (
      10, 2, '2-core Intel Xeon', '2026-12-03')
  assert 'lrn=True: 27.3 ± 0.4%; lrn=False: 30.0 ± 0.5%' in row['measured']
  # 2.7 points apart, spread 0.64: the rule alone says reproduced, the length not.
  assert row['verdict'] == ('inconclusive by length (10 < 30 epochs, 2 seeds < 3;'
                            ' the difference alone: reproduced)')


@pytest.mark.parametrize('errors, verdict', [
    (('0.89,0.004', '0.87,0.005'), 'reproduced'),  # 2 points better, spread 0.6.
    (('0.87,0.004', '0.89,0.005'), 'contradicted'),
    (('0.885,0.01', '0.88,0.01'), 'inconclusive'),  # Within twice the spread.
])
def test_the_verdict_rule_at_full_length(tmp_path, errors, verdict):
  from alexnet_jax.tools import result_tables  # pylint: disable=import-outside-toplevel
  full = LRN_CPU.replace("'num_epochs': 10", "'num_epochs': 30").replace(
      '[0, 1]', '[0, 1, 2]')
  folder, sweep_file = results_folder(
      tmp_path, f'model.lrn=True,3,3,{errors[0]}\nmodel.lrn=False,3,3,{errors[1]}\n',
      full)
  [row] = result_tables.ablation(folder, Path(sweep_file))
  assert row['verdict'] == verdict and row['hardware'] == 'not recorded'


def test_the_ablations_table_is_todays():
  from alexnet_jax.tools import result_tables  # pylint: disable=import-outside-toplevel
  assert not result_tables.stale_blocks(result_tables.ABLATIONS_PAGE,
                                        result_tables.DOC_BLOCKS), (
      'docs/ablations.md differs from experiments/results: run python -m'
      ' alexnet_jax.tools.result_tables --write')
  table = result_tables.ablations_table()
  # Every committed folder, its length, and the short runs read as short.
  for name in ('relu_tanh', 'lrn', 'towers', 'dropout', 'overlapping_pool'):
    assert f'[{name}](../experiments/results/{name}/results.md)' in table
  assert table.count('**inconclusive by length (0.48 < 30 epochs, 2 seeds < 3;') == 4
  assert 'lrn=True: 63.0 ± 1.1%; lrn=False: 71.2 ± 3.5%' in table


def test_final_marks_the_papers_figure_beside_each_bar(tmp_path, monkeypatch):
  from alexnet_jax.tools.sweeps import results  # pylint: disable=import-outside-toplevel
  monkeypatch.chdir(ROOT)
  sweep = spec.load(write(tmp_path / 'lrn.py', FOUR_POINTS + """\
CLAIM = {'factor': 'model.lrn', 'better': True, 'metric': 'eval_top1',
         'figure': '11% with, 13% without', 'paper_values': {True: 0.11, False: 0.13}}
"""))
  rows = [{'point': 'model.lrn=True', 'eval_top1_mean': 0.75, 'eval_top1_std': 0.01},
          {'point': 'model.lrn=False', 'eval_top1_mean': 0.70, 'eval_top1_std': 0.02}]
  figure = results.plot_final(sweep, rows, tmp_path / 'final.png')
  ax = figure.axes[0]
  assert [round(b.get_height(), 6) for b in ax.patches] == [25.0, 30.0]
  marks = [line for line in ax.lines if line.get_color() == 'black' and line.get_xdata().size]
  assert [list(m.get_ydata()) for m in marks] == [[11.0, 11.0], [13.0, 13.0]]
  assert all(m.get_xdata()[0] > i for i, m in enumerate(marks))  # Beside its bar.
  assert 'paper: 11% with, 13% without' in ax.get_title()


def test_set_overrides_every_point_and_only_data_dir_leaves_the_identity(
    tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  path = write(tmp_path / 's.py', FOUR_POINTS)
  sweep = spec.load(path, spec.parse_sets(['data_dir=/data/a', 'batch_size=4']))
  assert sweep.command(sweep.points[0], '/w')[4:7] == [
      '--config.data_dir=/data/a', '--config.batch_size=4', '--config.model.lrn=True']
  assert spec.point_config(sweep, sweep.points[0]).batch_size == 4
  assert sweep.identity()['set'] == {'batch_size': 4}
  sweepdir.claim_workdir(sweep, tmp_path / 'run').release()
  moved = spec.load(path, spec.parse_sets(['data_dir=/elsewhere', 'batch_size=4']))
  sweepdir.claim_workdir(moved, tmp_path / 'run').release()  # The data moved: same sweep.
  other = spec.load(path, spec.parse_sets(['data_dir=/data/a', 'batch_size=8']))
  with pytest.raises(UserError, match="holds points of another sweep .*set="):
    sweepdir.claim_workdir(other, tmp_path / 'run')
  with pytest.raises(UserError, match='varies that key between its points'):
    spec.load(path, {'model.lrn': True})
  with pytest.raises(UserError, match='is not KEY=VALUE'):
    spec.parse_sets(['batch_size'])


def test_stop_after_preempts_the_points_and_exits_75(tmp_path):
  sweep_file = write(tmp_path / 'long.py', LONG_POINT)
  proc = run_sweep(f'--sweep={sweep_file}', f'--workdir={tmp_path / "run"}',
                   '--stop_after_s=2')
  assert proc.returncode == 75, proc.stdout + proc.stderr[-3000:]
  assert 'preempting the running points' in proc.stderr
  record = json.loads((tmp_path / 'run' / POINT_OF_LONG / 'sweep_run.json').read_text())
  assert record['status'] == 'preempted'
