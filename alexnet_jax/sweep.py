"""Ablation sweeps: one definition in `experiments/`, many training runs, one table.

    python -m alexnet_jax.sweep --sweep=experiments/lrn.py --workdir=DIR --parallel=2

Each point of the sweep (its overrides and a seed) is an ordinary run of
`python -m alexnet_jax.main` in `DIR/<overrides>,seed=<s>/`, started as a
subprocess: the same code, resumable and inspectable like any workdir. Running
the same command again skips the finished points (summary.json says
`completed`) and resumes the others from their checkpoints. A point that fails
is recorded with the end of its stderr and the others go on; the command then
exits with status 1. SIGTERM or Ctrl-C preempts the running points (they save
a checkpoint) and exits with status 75.

At the end it writes `results.csv` and `results.md` (one row per point: mean
and spread over seeds of the final evaluation, steps, wall time), `runs.csv`
(one row per seed) and the plots `curves.png` (learning curves of every point
on shared axes) and `final.png` (final top-1 and top-5 error, error bars over seeds).

Beyond one machine: `--print_commands` prints one self-contained command per
point (for a job array of any scheduler); once they have run,
`--collect_only` builds the same results from the folder.

A sweep file is Python (see `experiments/README.md`):

    BASE = 'configs/cifar10.py:cifar_4layer'    # a config file of configs/ [:arg]
    OVERRIDES = {'num_train_steps': 3000}       # optional, shared by every point
    PRODUCT = {'model.lrn': [True, False]}      # every combination, and/or
    ZIP = {'model.activation': ['relu', 'tanh'],   # lists taken side by side
           'optimizer.learning_rate': [0.01, 0.02]}
    SEEDS = [0, 1]                              # config.seed of each repeat
    TARGET_TRAIN_ERROR = 0.25                   # optional: steps to reach it
                                                # (train error, 3 log windows)

Exit status: 0 every point completed, 1 some point failed, 2 a bad sweep file
or workdir (one paragraph on stderr, before any point starts), 75 preempted.
"""

import concurrent.futures
import csv
import dataclasses
import difflib
import importlib.util
import itertools
import json
import math
import os
from pathlib import Path
import shlex
import signal
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

from alexnet_jax import cli
from alexnet_jax.errors import UserError

_SWEEP = flags.DEFINE_string('sweep', None, 'Sweep definition, e.g.'
                             ' experiments/lrn.py.', required=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder of the sweep: one sub-folder per point, the'
    ' results beside them. Running again resumes.', required=True)
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Points trained at once.')
_PRINT_COMMANDS = flags.DEFINE_bool(
    'print_commands', False, 'Print one command per point and exit, for a'
    ' scheduler; records the sweep in --workdir so that --collect_only can'
    ' check it.')
_COLLECT_ONLY = flags.DEFINE_bool(
    'collect_only', False, 'Train nothing: build the results from what the'
    ' point folders in --workdir hold.')

# Names a sweep file may define; anything else in capitals is likely a typo.
FIELDS = ('BASE', 'OVERRIDES', 'PRODUCT', 'ZIP', 'SEEDS', 'TARGET_TRAIN_ERROR')
PREEMPTED_EXIT_CODE = 75  # As alexnet_jax.main: run the same command to resume.
# main's exits after saving: SIGTERM (75) and Ctrl-C (130, 128 + SIGINT).
SAVED_EXIT_CODES = (PREEMPTED_EXIT_CODE, 130)
STDERR_TAIL_LINES = 12
# TARGET_TRAIN_ERROR is judged on the training error of this many logging
# windows together: one window of a small batch is too noisy to cross once.
TARGET_WINDOWS = 3
SPEC_FILE = 'sweep.json'
RUN_FILE = 'sweep_run.json'  # In a point folder: how the runner's attempts ended.
LOG_FILE = 'sweep.log'  # In a point folder: stdout and stderr of the attempts.
# Final evaluation of a run (summary.json) that the table reports.
FINAL_METRICS = ('eval_top1', 'eval_top5', 'eval_loss')


@dataclasses.dataclass(frozen=True)
class Point:
  overrides: dict  # The varying keys only (PRODUCT and ZIP).
  seed: int

  @property
  def group(self) -> str:
    """The point without its seed: what the table averages over."""
    return ','.join(f'{k}={_format_value(v)}' for k, v in self.overrides.items())

  @property
  def name(self) -> str:
    """Its folder: overrides and seed; readable, and unique within a sweep."""
    name = ','.join(filter(None, [self.group, f'seed={self.seed}']))
    # Orbax reads checkpoint paths as globs: no [ ] * ? in a folder name.
    for bad, good in (('/', '_'), (' ', ''), ('[', '('), (']', ')'),
                      ('*', 'x'), ('?', '_')):
      name = name.replace(bad, good)
    return name


@dataclasses.dataclass(frozen=True)
class Sweep:
  path: str
  base: str  # configs/FILE.py[:ARG]
  overrides: dict  # Shared by every point.
  points: tuple[Point, ...]
  target_train_error: float | None = None

  def identity(self) -> dict:
    """What makes two folders comparable: the base and shared overrides."""
    return {'base': self.base, 'overrides': self.overrides}

  def command(self, point: Point, workdir: str | Path) -> list[str]:
    """`python -m alexnet_jax.main ...` for one point, as a list of arguments."""
    settings = {**self.overrides, **point.overrides, 'seed': point.seed}
    return [sys.executable, '-m', 'alexnet_jax.main', f'--config={self.base}',
            *(f'--config.{k}={_format_value(v)}' for k, v in settings.items()),
            f'--workdir={Path(workdir) / point.name}']


def _format_value(value) -> str:
  return value if isinstance(value, str) else repr(value)


# Reading and checking a sweep file (no JAX, nothing trained).


def load(path: str) -> Sweep:
  """Reads and checks a sweep file; UserError naming the file and the problem."""
  source_path = Path(path)
  if not source_path.is_file():
    raise UserError(f'The sweep file {path} does not exist. Give a file such'
                    ' as experiments/lrn.py (see experiments/README.md).')
  try:
    code = compile(source_path.read_text(), str(source_path), 'exec')
  except SyntaxError as e:
    raise UserError(f'The sweep file {path} has a syntax error on line'
                    f' {e.lineno}: {e.msg}. Fix it and run again.') from None
  namespace = {'__file__': str(source_path), '__name__': '__sweep__'}
  try:
    exec(code, namespace)  # pylint: disable=exec-used
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'The sweep file {path} failed to run:'
                    f' {type(e).__name__}: {e}. Fix it and run again.') from None
  unknown = [k for k in namespace if k.isupper() and k not in FIELDS]
  if unknown:
    raise UserError(
        f'The sweep file {path} defines {", ".join(unknown)}, which the runner'
        f' does not know (it reads {", ".join(FIELDS)}); a typo? Rename or'
        ' remove it.')

  def bad(problem):
    return UserError(f'The sweep file {path} {problem}')

  base = namespace.get('BASE')
  if not isinstance(base, str) or not base:
    raise bad("sets no BASE; add e.g. BASE = 'configs/cifar10.py:cifar_4layer'.")
  overrides = namespace.get('OVERRIDES', {})
  product = namespace.get('PRODUCT')
  zipped = namespace.get('ZIP')
  seeds = namespace.get('SEEDS', [0])
  for field, value in (('OVERRIDES', overrides), ('PRODUCT', product),
                       ('ZIP', zipped)):
    if value is not None and not isinstance(value, dict):
      raise bad(f'sets {field} to a {type(value).__name__}; it must be a dict'
                " of config keys, e.g. {'model.lrn': [True, False]}.")
  if (not isinstance(seeds, (list, tuple)) or not seeds
      or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
      or len(set(seeds)) != len(seeds)):
    raise bad(f'sets SEEDS = {seeds!r}; it must be a non-empty list of distinct'
              ' integers, e.g. SEEDS = [0, 1].')
  for field, value in (('PRODUCT', product), ('ZIP', zipped)):
    if value is None:
      continue
    empty = [k for k, v in value.items()
             if not isinstance(v, (list, tuple)) or not v]
    if not value or empty:
      raise bad(f'has an empty {field}' + (f' (no values for {", ".join(empty)})'
                if empty else '') + ': the sweep would have no points. Give'
                f' each key of {field} a non-empty list of values.')
  if zipped and len({len(v) for v in zipped.values()}) > 1:
    lengths = ', '.join(f'{k}: {len(v)}' for k, v in zipped.items())
    raise bad(f'has ZIP lists of different lengths ({lengths}); ZIP takes'
              ' them side by side, so they must be equally long.')
  keys = [*overrides, *(product or {}), *(zipped or {})]
  repeated = sorted({k for k in keys if keys.count(k) > 1})
  if repeated:
    raise bad(f'sets {", ".join(repeated)} in more than one of OVERRIDES,'
              ' PRODUCT and ZIP; set each key in one place.')
  if 'seed' in keys:
    raise bad("sets 'seed' as a config override; list the seeds in SEEDS.")
  target = namespace.get('TARGET_TRAIN_ERROR')
  if target is not None and not (isinstance(target, (int, float))
                                 and 0 < target < 1):
    raise bad(f'sets TARGET_TRAIN_ERROR = {target!r}; it must be a fraction'
              ' in (0, 1), e.g. 0.25.')

  # Every combination of PRODUCT, each with every row of ZIP, each seed.
  product_rows = [dict(zip(product, values))
                  for values in itertools.product(*product.values())
                  ] if product else [{}]
  zip_rows = ([dict(zip(zipped, values)) for values in zip(*zipped.values())]
              if zipped else [{}])
  points = tuple(Point({**p, **z}, seed)
                 for p in product_rows for z in zip_rows for seed in seeds)
  names = [p.name for p in points]
  if len(set(names)) != len(names):
    raise bad('gives two points the same folder name; make the values of each'
              ' key distinct.')
  sweep = Sweep(str(path), base, dict(overrides), points,
                float(target) if target is not None else None)
  for point in points:  # Every point's config, as main would build it.
    point_config(sweep, point)
  return sweep


def base_config(sweep: Sweep):
  """The BASE config file's config (ml_collections ConfigDict), locked."""
  file, _, arg = sweep.base.partition(':')
  if not Path(file).is_file():
    raise UserError(f'The sweep file {sweep.path} names BASE = {sweep.base!r},'
                    f' but {file} does not exist (relative to {os.getcwd()}).'
                    ' Run from the repository root, or fix BASE.')
  spec = importlib.util.spec_from_file_location('_sweep_base_config', file)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    config = module.get_config(arg or None)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'The sweep file {sweep.path} names BASE = {sweep.base!r},'
                    f' which could not be loaded: {type(e).__name__}: {e}'
                    ) from None
  config.lock()
  return config


def point_config(sweep: Sweep, point: Point):
  """The base config with the shared and the point's overrides applied."""
  config = base_config(sweep)
  for key, value in {**sweep.overrides, **point.overrides,
                     'seed': point.seed}.items():
    _override(sweep, config, key, value)
  return config


def _override(sweep, config, key, value):
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node.get(part) if hasattr(node, 'get') else None
  if node is None or not hasattr(node, 'get') or leaf not in node:
    near = difflib.get_close_matches(key, _keys(config), n=3, cutoff=0.6)
    raise UserError(
        f'The sweep file {sweep.path} overrides {key!r}, which is not a key of'
        f' {sweep.base}' + (f' (nearest: {", ".join(near)})' if near else '')
        + '. Use a key of the config, e.g. model.lrn.')
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise UserError(
        f'The sweep file {sweep.path} sets {key}={value!r}, which the config'
        f' {sweep.base} refuses: {e}'.replace('\n', ' ')) from None


def _keys(config, prefix=''):
  out = []
  for k, v in config.items():
    out += (_keys(v, f'{prefix}{k}.') if hasattr(v, 'items')
            else [f'{prefix}{k}'])
  return out


# The sweep's folder.


def claim_workdir(sweep: Sweep, workdir: Path) -> None:
  """Records the sweep in `workdir`, or refuses one that holds another sweep."""
  spec_path = workdir / SPEC_FILE
  record = {**sweep.identity(), 'sweep': sweep.path,
            'points': [p.name for p in sweep.points]}
  if spec_path.exists():
    try:
      held = json.loads(spec_path.read_text())
    except (OSError, ValueError) as e:
      raise UserError(f'{spec_path} cannot be read ({e}); move the folder'
                      ' away or give another --workdir.') from None
    theirs = {k: held.get(k) for k in sweep.identity()}
    if json.loads(json.dumps(sweep.identity())) != theirs:
      differ = [k for k in theirs
                if theirs[k] != json.loads(json.dumps(sweep.identity()[k]))]
      raise UserError(
          f'--workdir {workdir} holds points of another sweep ({held.get("sweep")}:'
          f' {", ".join(f"{k}={theirs[k]!r}" for k in differ)}), not of'
          f' {sweep.path} ({", ".join(f"{k}={sweep.identity()[k]!r}" for k in differ)}).'
          ' Nothing was changed; give another --workdir.')
    # Same experiment: points may have been added (more seeds or values).
    record['points'] = list(dict.fromkeys(held.get('points', []) + record['points']))
  elif workdir.is_dir() and any(workdir.iterdir()):
    raise UserError(
        f'--workdir {workdir} is not empty and holds no {SPEC_FILE}, so it is'
        ' not the folder of a sweep; nothing was changed. Give an empty or new'
        ' folder.')
  elif workdir.exists() and not workdir.is_dir():
    raise UserError(f'--workdir {workdir} is a file; give a folder.')
  workdir.mkdir(parents=True, exist_ok=True)
  spec_path.write_text(json.dumps(record, indent=2) + '\n')


def is_completed(folder: Path) -> bool:
  return _read_json(folder / 'summary.json').get('status') == 'completed'


def _read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}


# Running the points.


class _Runner:
  """Trains points in subprocesses, a few at once; SIGTERM preempts them all."""

  def __init__(self, sweep: Sweep, workdir: Path, parallel: int):
    self.sweep, self.workdir, self.parallel = sweep, workdir, parallel
    self.lock = threading.Lock()
    self.running: set[subprocess.Popen] = set()
    self.stopping = False
    self.done = 0

  def stop(self, signum, frame):
    del frame
    with self.lock:
      self.stopping = True
      for process in self.running:
        process.send_signal(signal.SIGTERM)  # main saves, then exits 75.
    print(f'sweep: signal {signum}: preempting the running points.',
          file=sys.stderr, flush=True)

  def run(self) -> None:
    todo = [p for p in self.sweep.points
            if not is_completed(self.workdir / p.name)]
    for point in self.sweep.points:
      if point not in todo:
        self._say(f'{point.name}: completed before, skipped.')
    self.total = len(todo)
    with concurrent.futures.ThreadPoolExecutor(max(1, self.parallel)) as pool:
      list(pool.map(self._run_point, todo))

  def _say(self, message):
    print(f'sweep: {message}', flush=True)

  def _run_point(self, point: Point) -> None:
    folder = self.workdir / point.name
    command = self.sweep.command(point, self.workdir)
    with self.lock:
      if self.stopping:
        return
      folder.mkdir(parents=True, exist_ok=True)
      log = (folder / LOG_FILE).open('a')
      log.write(f'\n$ {shlex.join(command)}\n')
      log.flush()
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
      # stderr also goes to the log, through us, to keep its tail for the table.
      process = subprocess.Popen(command, stdout=log, stderr=subprocess.PIPE,
                                 env=env, text=True, errors='replace')
      self.running.add(process)
    self._say(f'{point.name}: started.')
    start = time.time()
    stderr = []
    for line in process.stderr:
      log.write(line)
      stderr.append(line)
      del stderr[:-200]
    process.wait()
    log.close()
    with self.lock:
      self.running.discard(process)
      self.done += 1
    seconds = time.time() - start
    record = _read_json(folder / RUN_FILE)
    attempts = record.get('attempts', []) + [
        {'exit_status': process.returncode, 'seconds': round(seconds, 1)}]
    if process.returncode == 0 and is_completed(folder):
      record = {'status': 'completed', 'error': ''}
    elif process.returncode in SAVED_EXIT_CODES:
      record = {'status': 'preempted', 'error': ''}
    else:
      record = {'status': 'failed', 'error': _tail(stderr)}
    record['attempts'] = attempts
    (folder / RUN_FILE).write_text(json.dumps(record, indent=2) + '\n')
    summary = _read_json(folder / 'summary.json')
    result = (f', eval_top1 {summary["eval_top1"]:.4f}'
              if record['status'] == 'completed' and 'eval_top1' in summary
              else f': {record["error"].splitlines()[-1]}' if record['error']
              else '')
    self._say(f'[{self.done}/{self.total}] {point.name}: {record["status"]}'
              f' after {seconds:.0f} s{result}')


def _tail(lines: list[str]) -> str:
  """The end of stderr without progress-bar redraws."""
  text = ''.join(lines).replace('\r', '\n')
  kept = [l.rstrip() for l in text.splitlines()
          if l.strip() and not l.lstrip().startswith('train:')]
  return '\n'.join(kept[-STDERR_TAIL_LINES:]) or '(no output on stderr)'


# Results.


def collect(sweep: Sweep, workdir: Path) -> list[dict]:
  """One record per point and seed: status, final metrics, curves."""
  runs = []
  for point in sweep.points:
    folder = workdir / point.name
    summary = _read_json(folder / 'summary.json')
    record = _read_json(folder / RUN_FILE)
    if summary.get('status') == 'completed':
      status, error = 'completed', ''
    elif record.get('status') == 'failed':
      status, error = 'failed', record.get('error', '')
    elif summary or (folder / 'checkpoints').exists():
      status, error = 'interrupted', ''
    else:
      status, error = 'not run', ''
    curves = _read_metrics(folder / 'metrics.jsonl')
    run = {'point': point.group or '(base)', 'seed': point.seed,
           'folder': point.name, 'status': status, 'error': error,
           'steps': summary.get('steps') if status == 'completed' else None,
           'wall_seconds': (summary.get('wall_seconds')
                            if status == 'completed' else None),
           'curves': curves}
    for key in FINAL_METRICS:
      run[key] = summary.get(key) if status == 'completed' else None
    run['final_train_loss'] = next(
        (r['train_loss'] for r in reversed(curves) if 'train_loss' in r), None
    ) if status == 'completed' else None
    if sweep.target_train_error is not None:
      run['steps_to_target'], run['train_seconds_to_target'] = _time_to_target(
          curves, sweep.target_train_error, _read_json(folder / 'config.json'))
    runs.append(run)
  return runs


def _read_metrics(path: Path) -> list[dict]:
  try:
    lines = path.read_text().splitlines()
  except OSError:
    return []
  rows = []
  for line in lines:
    try:
      rows.append(json.loads(line))
    except ValueError:
      continue  # A line cut short by a kill: the next run rewrites the rest.
  # A resumed run logs some steps again: keep the last value of each.
  by_step = {}
  for row in rows:
    by_step.setdefault(row['step'], {}).update(row)
  return [by_step[s] for s in sorted(by_step)]


def _time_to_target(curves, target_error, config):
  """First logged step where the training error (1 - train_top1), averaged
  over the last TARGET_WINDOWS logging windows, is at most the target; and
  the training seconds to it (batch / images_per_sec summed over the windows:
  compile and evaluation time left out)."""
  batch = config.get('batch_size')
  seconds, previous, recent = 0.0, 0, []
  for row in curves:
    if 'train_top1' not in row:
      continue
    if row.get('images_per_sec') and batch:
      seconds += (row['step'] - previous) * batch / row['images_per_sec']
    previous = row['step']
    recent = (recent + [1 - row['train_top1']])[-TARGET_WINDOWS:]
    if len(recent) == TARGET_WINDOWS and sum(recent) / len(recent) <= target_error:
      return row['step'], round(seconds, 1)
  return None, None


def _mean_spread(values):
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(sweep: Sweep, runs: list[dict]) -> list[dict]:
  """One row per point (over seeds): mean and sample standard deviation."""
  columns = [*FINAL_METRICS, 'final_train_loss', 'steps', 'wall_seconds']
  if sweep.target_train_error is not None:
    columns += ['steps_to_target', 'train_seconds_to_target']
  rows = []
  for group in dict.fromkeys(r['point'] for r in runs):
    mine = [r for r in runs if r['point'] == group]
    row = {'point': group, 'seeds': len(mine),
           'completed': sum(r['status'] == 'completed' for r in mine)}
    for column in columns:
      row[f'{column}_mean'], row[f'{column}_std'] = _mean_spread(
          [r[column] for r in mine if r['status'] == 'completed'])
    if sweep.target_train_error is not None:
      row['reached_target'] = sum(r['steps_to_target'] is not None for r in mine)
    row['problems'] = '; '.join(
        f'seed {r["seed"]} {r["status"]}' + (
            f': {r["error"].splitlines()[-1]}' if r['error'] else '')
        for r in mine if r['status'] != 'completed')
    rows.append(row)
  return rows


def write_results(sweep: Sweep, workdir: Path, runs: list[dict]) -> list[dict]:
  rows = summarise(sweep, runs)
  _write_csv(workdir / 'runs.csv',
             [{k: v for k, v in r.items() if k != 'curves'} for r in runs])
  _write_csv(workdir / 'results.csv', rows)
  (workdir / 'results.md').write_text(markdown_table(sweep, rows))
  plot_curves(workdir, runs, workdir / 'curves.png')
  plot_final(rows, workdir / 'final.png')
  return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
  with path.open('w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def markdown_table(sweep: Sweep, rows: list[dict]) -> str:
  """The results as markdown: errors in %, mean +- standard deviation over seeds."""

  def cell(row, column, scale=1.0, digits=2, error=False):
    mean, std = row[f'{column}_mean'], row[f'{column}_std']
    if mean is None:
      return '-'
    if error:
      mean = 1 - mean
    text = f'{mean * scale:.{digits}f}'
    return text + (f' ± {std * scale:.{digits}f}' if std is not None else '')

  header = ['point', 'runs', 'top-1 error %', 'top-5 error %', 'eval loss',
            'final train loss', 'steps', 'wall s']
  if sweep.target_train_error is not None:
    header += [f'steps to {sweep.target_train_error:.0%} train error'
               f' ({TARGET_WINDOWS} log windows)', 'train s to it']
  header.append('problems')
  lines = [f'Sweep `{sweep.path}`: base `{sweep.base}`'
           + (', ' + ', '.join(f'`{k}={_format_value(v)}`'
                               for k, v in sweep.overrides.items())
              if sweep.overrides else '') + '. Mean ± standard deviation over'
           ' the completed seeds; errors are 1 - accuracy on the eval split.', '',
           '| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  for row in rows:
    cells = [f'`{row["point"]}`', f'{row["completed"]}/{row["seeds"]}',
             cell(row, 'eval_top1', 100, error=True),
             cell(row, 'eval_top5', 100, error=True),
             cell(row, 'eval_loss', digits=3),
             cell(row, 'final_train_loss', digits=3),
             cell(row, 'steps', digits=0), cell(row, 'wall_seconds', digits=0)]
    if sweep.target_train_error is not None:
      reached = f' ({row["reached_target"]}/{row["seeds"]} reached)'
      cells += [cell(row, 'steps_to_target', digits=0) + reached,
                cell(row, 'train_seconds_to_target', digits=0)]
    cells.append(row['problems'].replace('|', '/') or '')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot_curves(workdir: Path, runs: list[dict], path: Path) -> None:
  """Learning curves of every run that logged any, on shared axes
  (visualize.plot_curves: train and eval loss and top-1, learning rate)."""
  from alexnet_jax import visualize  # pylint: disable=import-outside-toplevel
  logged = [r for r in runs if r['curves']]
  if logged:
    visualize.plot_curves([workdir / r['folder'] for r in logged], path,
                          labels=[r['folder'] for r in logged])


def plot_final(rows: list[dict], path: Path) -> None:
  """Final top-1 and top-5 error per point, error bars one standard deviation
  over seeds."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(max(5.0, 1.3 * len(rows) + 2), 4.2),
                  layout='constrained')
  ax = figure.subplots()
  width = 0.38
  for offset, (key, label) in enumerate((('eval_top1', 'top-1'),
                                         ('eval_top5', 'top-5'))):
    means = [100 * (1 - r[f'{key}_mean']) if r[f'{key}_mean'] is not None
             else 0 for r in rows]
    errors = [100 * (r[f'{key}_std'] or 0) for r in rows]
    ax.bar([i + (offset - 0.5) * width for i in range(len(rows))], means,
           width, yerr=errors, capsize=4, label=label)
  ax.set_xticks(range(len(rows)), [r['point'] for r in rows], rotation=20,
                ha='right', fontsize=8)
  ax.set(ylabel='error % on the eval split (mean ± std over seeds)',
         title='final evaluation')
  ax.legend()
  ax.grid(axis='y', alpha=0.3)
  figure.savefig(path, dpi=110)


# The command line.


def main(argv) -> int:
  del argv
  sweep = load(_SWEEP.value)
  workdir = Path(_WORKDIR.value).expanduser().absolute()
  if _PRINT_COMMANDS.value and _COLLECT_ONLY.value:
    raise UserError('--print_commands and --collect_only exclude each other:'
                    ' print the commands, run them, then collect.')
  if _PARALLEL.value < 1:
    raise UserError(f'--parallel must be at least 1, got {_PARALLEL.value}.')
  claim_workdir(sweep, workdir)
  if _PRINT_COMMANDS.value:
    cwd = shlex.quote(os.getcwd())
    try:
      for point in sweep.points:
        print(f'cd {cwd} && {shlex.join(sweep.command(point, workdir))}')
      sys.stdout.flush()
    except BrokenPipeError:
      # A reader that stopped early (`| head`) is not the sweep's error; the
      # interpreter would flush again at exit, into the closed pipe.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
  status = 0
  if not _COLLECT_ONLY.value:
    runner = _Runner(sweep, workdir, _PARALLEL.value)
    previous = {s: signal.signal(s, runner.stop)
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      runner.run()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
    status = PREEMPTED_EXIT_CODE if runner.stopping else 0
  runs = collect(sweep, workdir)
  write_results(sweep, workdir, runs)
  print((workdir / 'results.md').read_text())
  counts = {s: sum(r['status'] == s for r in runs)
            for s in dict.fromkeys(r['status'] for r in runs)}
  print(f'sweep: {", ".join(f"{n} {s}" for s, n in counts.items())};'
        f' results in {workdir}/results.md, results.csv, curves.png, final.png')
  if status == 0 and any(r['status'] != 'completed' for r in runs):
    status = 1
  return status


def _guarded(argv):
  try:
    sys.exit(main(argv))
  except UserError as e:
    cli.fail(str(e))


if __name__ == '__main__':
  app.run(_guarded)
