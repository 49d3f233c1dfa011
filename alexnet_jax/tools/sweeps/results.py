"""A sweep's results: one row per point over its seeds, the tables and plots.

`write_tables` writes `results.csv` and `results.md` (one row per point:
mean and sample standard deviation over seeds of the final evaluation,
steps, epochs, wall time) and `runs.csv` (one row per seed), after every
point; `write_results` adds the plots at the end: `curves.png` (training
error against epochs as Fig. 1 draws it, pictures/curves.py) and
`final.png` (final top-1 error per point, error bars over seeds, the
paper's figure beside each bar where the sweep's CLAIM gives it).
"""

import csv
import io
import math
import os
from pathlib import Path

from alexnet_jax.run import metric_writer
from alexnet_jax.tools.pictures.curves import plot_sweep_curves
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
           'devices': ' '.join(summary.get('devices', [])),
           'curves': curves}
    for key in FINAL_METRICS:
      run[key] = summary.get(key) if status == 'completed' else None
    run['epochs'] = _epochs(summary, sweepdir.read_json(folder / 'config.json'))
    run['final_train_loss'] = next(
        (r['train_loss'] for r in reversed(curves) if 'train_loss' in r), None
    ) if status == 'completed' else None
    if sweep.target_train_error is not None:
      run['steps_to_target'], run['train_seconds_to_target'] = _time_to_target(
          curves, sweep.target_train_error, sweepdir.read_json(folder / 'config.json'))
    runs.append(run)
  return runs


def _epochs(summary: dict, config: dict):
  """Epochs a run trained: exact for runs set by num_epochs; None for runs
  set in steps (the split's size is not recorded beside them)."""
  total, epochs = summary.get('num_train_steps'), config.get('num_epochs')
  if (config.get('num_train_steps', -1) > 0 or not total or not epochs
      or 'steps' not in summary):
    return None
  return epochs * summary['steps'] / total


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
  columns = [*FINAL_METRICS, 'final_train_loss', 'steps', 'epochs', 'wall_seconds']
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


def write_tables(sweep: Sweep, workdir: Path, runs: list[dict]) -> list[dict]:
  """results.csv, results.md and runs.csv, each written whole or not at all."""
  rows = summarise(sweep, runs)
  _write_csv(workdir / 'runs.csv',
             [{k: v for k, v in r.items() if k != 'curves'} for r in runs])
  _write_csv(workdir / 'results.csv', rows)
  _write_text(workdir / 'results.md', markdown_table(sweep, rows))
  return rows


def write_results(sweep: Sweep, workdir: Path, runs: list[dict]) -> list[dict]:
  rows = write_tables(sweep, workdir, runs)
  plot_runs(sweep, workdir, runs, workdir / 'curves.png')
  plot_final(sweep, rows, workdir / 'final.png')
  return rows


def _write_text(path: Path, text: str) -> None:
  scratch = path.with_name(f'.{path.name}.partial')
  scratch.write_text(text)
  os.replace(scratch, path)


def _write_csv(path: Path, rows: list[dict]) -> None:
  text = io.StringIO(newline='')
  writer = csv.DictWriter(text, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  _write_text(path, text.getvalue())


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
            'final train loss', 'steps', 'epochs', 'wall s']
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
             cell(row, 'steps', digits=0), cell(row, 'epochs', digits=1),
             cell(row, 'wall_seconds', digits=0)]
    if sweep.target_train_error is not None:
      reached = f' ({row["reached_target"]}/{row["seeds"]} reached)'
      cells += [cell(row, 'steps_to_target', digits=0) + reached,
                cell(row, 'train_seconds_to_target', digits=0)]
    cells.append(row['problems'].replace('|', '/') or '')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot_runs(sweep: Sweep, workdir: Path, runs: list[dict], path: Path):
  """Training error against epochs as Fig. 1 draws it (pictures.curves.
  plot_sweep_curves): one panel per setup, the claim's factor by line
  style, seeds as a band."""
  logged = [r for r in runs if r['curves']]
  if not logged:
    return None
  factor, panels, colours = roles(sweep)
  point_of = {p.name: p for p in sweep.points}
  series = []
  for run in logged:
    point = point_of[run['folder']]
    config = sweepdir.read_json(workdir / run['folder'] / 'config.json')
    summary = sweepdir.read_json(workdir / run['folder'] / 'summary.json')
    per_epoch = _steps_per_epoch(config, summary)
    xs, ys = [], []
    for row in run['curves']:
      if 'train_top1' in row:
        xs.append(row['step'] / per_epoch if per_epoch else row['step'])
        ys.append(100 * (1 - row['train_top1']))
    series.append({'panel': _label(point, panels), 'colour': _label(point, colours),
                   'style': _label(point, [factor]) if factor else '',
                   'solid': not factor or point.overrides[factor] == _better(sweep),
                   'x': xs, 'y': ys, 'seed': point.seed})
  return plot_sweep_curves(series, path, x_label='epochs' if all(
      _steps_per_epoch(sweepdir.read_json(workdir / r['folder'] / 'config.json'),
                       sweepdir.read_json(workdir / r['folder'] / 'summary.json'))
      for r in logged) else 'step', title=sweep.paper or sweep.path)


def _label(point, keys) -> str:
  return ', '.join(f'{k.split(".")[-1]}={format_value(point.overrides[k])}'
                   for k in keys)


def _steps_per_epoch(config: dict, summary: dict):
  if (config.get('num_train_steps', -1) > 0 or not summary.get('num_train_steps')
      or not config.get('num_epochs')):
    return None
  return summary['num_train_steps'] / config['num_epochs']


def _better(sweep: Sweep):
  return sweep.claim['better'] if sweep.claim else None


def roles(sweep: Sweep) -> tuple[str | None, list[str], list[str]]:
  """(the factor the claim is about, the keys of a setup: one panel each,
  the other varying keys: one colour each)."""
  varying = list(dict.fromkeys(k for p in sweep.points for k in p.overrides))
  factor = sweep.claim['factor'] if sweep.claim else (varying[0] if varying else None)
  rest = [k for k in varying if k != factor]
  setup = [k for k in sweep.setup_keys if k in rest]
  return factor, setup, [k for k in rest if k not in setup]


def plot_final(sweep: Sweep, rows: list[dict], path: Path):
  """Final top-1 error per point, error bars one standard deviation over
  seeds; the paper's figure (CLAIM's paper_values, same metric) beside each
  bar where it has one."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  figure = Figure(figsize=(max(5.0, 1.1 * len(rows) + 2), 4.4),
                  layout='constrained')
  ax = figure.subplots()
  paper = (sweep.claim or {}).get('paper_values') or {}
  factor = (sweep.claim or {}).get('factor')
  point_of = {p.group or '(base)': p for p in sweep.points}
  means = [100 * (1 - r['eval_top1_mean']) if r['eval_top1_mean'] is not None
           else float('nan') for r in rows]
  errors = [100 * (r['eval_top1_std'] or 0) for r in rows]
  xs = list(range(len(rows)))
  ax.bar(xs, means, 0.5, yerr=errors, capsize=4, color='C0',
         label='measured (mean ± std over seeds)')
  marked = False
  for x, row in zip(xs, rows):
    value = paper.get(point_of[row['point']].overrides.get(factor)) if factor else None
    if value is not None:
      ax.plot([x + 0.3, x + 0.5], [100 * value] * 2, color='black', lw=2.5)
      ax.annotate(f'paper {100 * value:g}%', (x + 0.5, 100 * value),
                  fontsize=7, va='bottom', ha='right')
      marked = True
  labels = [', '.join(part.split('=', 1)[0].split('.')[-1] + '=' + part.split('=', 1)[1]
                      for part in r['point'].split(',') if '=' in part) or r['point']
            for r in rows]
  ax.set_xticks(xs, labels, rotation=20, ha='right', fontsize=8)
  claim = (sweep.claim or {}).get('figure', '')
  ax.set(ylabel='top-1 error % on the eval split',
         title=f'final evaluation; paper: {claim}' if claim else 'final evaluation')
  ax.title.set_fontsize(9)
  if marked:
    ax.plot([], [], color='black', lw=2.5, label="the paper's figure")
  ax.legend(fontsize=8)
  ax.grid(axis='y', alpha=0.3)
  figure.savefig(path, dpi=110)
  return figure
