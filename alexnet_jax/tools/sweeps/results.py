"""A sweep's results: one row per point over its seeds, the tables and plots.

`write_results` writes `results.csv` and `results.md` (one row per point:
mean and sample standard deviation over seeds of the final evaluation,
steps, wall time), `runs.csv` (one row per seed) and the plots `curves.png`
(every run's learning curves on shared axes) and `final.png` (final top-1
and top-5 error, error bars over seeds).
"""

import csv
import math
from pathlib import Path

from alexnet_jax.run import metric_writer
from alexnet_jax.tools.pictures.curves import plot_curves
from alexnet_jax.tools.sweeps import sweepdir
from alexnet_jax.tools.sweeps.spec import Sweep, format_value

# TARGET_TRAIN_ERROR is judged on the training error of this many logging
# windows together: one window of a small batch is too noisy to cross once.
TARGET_WINDOWS = 3
# Final evaluation of a run (summary.json) that the table reports.
FINAL_METRICS = ('eval_top1', 'eval_top5', 'eval_loss')


def collect(sweep: Sweep, workdir: Path) -> list[dict]:
  """One record per point and seed: status, final metrics, curves."""
  runs = []
  for point in sweep.points:
    folder = workdir / point.name
    summary = sweepdir.read_json(folder / 'summary.json')
    record = sweepdir.read_json(folder / sweepdir.RUN_FILE)
    if summary.get('status') == 'completed':
      status, error = 'completed', ''
    elif record.get('status') == 'failed':
      status, error = 'failed', record.get('error', '')
    elif summary or (folder / 'checkpoints').exists():
      status, error = 'interrupted', ''
    else:
      status, error = 'not run', ''
    curves = _read_metrics(folder)
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
          curves, sweep.target_train_error, sweepdir.read_json(folder / 'config.json'))
    runs.append(run)
  return runs


def _read_metrics(folder: Path) -> list[dict]:
  """A point's logged rows by step; a resumed run logs some steps again: the
  last value of each is kept."""
  by_step = {}
  for row in metric_writer.read_rows(folder):
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
  plot_runs(workdir, runs, workdir / 'curves.png')
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
           + (', ' + ', '.join(f'`{k}={format_value(v)}`'
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


def plot_runs(workdir: Path, runs: list[dict], path: Path) -> None:
  """Learning curves of every run that logged any, on shared axes
  (pictures.curves.plot_curves: train and eval loss and top-1, learning rate)."""
  logged = [r for r in runs if r['curves']]
  if logged:
    plot_curves([workdir / r['folder'] for r in logged], path,
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
