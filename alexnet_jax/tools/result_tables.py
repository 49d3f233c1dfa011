"""The README's and docs/ablations.md's generated blocks, made from the
committed results files.

    python -m alexnet_jax.tools.result_tables            # prints them
    python -m alexnet_jax.tools.result_tables --write    # rewrites them in place

Each block stands in README.md between `<!-- generated: NAME -->` and
`<!-- end generated -->`; tests/test_docs.py checks that every block equals
what this module makes of the files today. To change a figure, commit a new
results file (with its command, hardware and date) and run `--write`.
"""

import ast
import csv
import json
import math
from pathlib import Path
import re
import sys

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = Path('benchmarks/results')
EXPERIMENTS = Path('experiments/results')
DEMO = EXPERIMENTS / 'demo'
# The benchmark reports the headline quotes, by role.
CPU_STEP = BENCHMARKS / 'cpu-2core-full-batch32-bf16-fixed.json'
GPU_STEP = BENCHMARKS / 'h100-bfloat16.json'
CPU_VS_PYTORCH = BENCHMARKS / 'cpu-2core-vs-pytorch-batch32-float32-kernel-grads.json'
GPU_VS_PYTORCH = BENCHMARKS / 'h100-vs-pytorch-batch256-bfloat16.json'
SWEEPS = ('relu_tanh', 'lrn', 'towers', 'dropout', 'overlapping_pool')
_BLOCK = re.compile(r'(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)',
                    re.S)


def _json(path: Path) -> dict:
  return json.loads((ROOT / path).read_text())


def _link(path: Path) -> str:
  return f'[{path.name}]({path.as_posix()})'


def _machine(record: dict) -> str:
  kind = record.get('device_kind')
  where = kind if kind and kind != 'cpu' else f'2-core {record["host_cpu"]}'
  return f'{where}, {record["date"][:10]}'


def latest_demo() -> tuple[Path, dict]:
  path = sorted((ROOT / DEMO).glob('*.json'))[-1].relative_to(ROOT)
  return path, _json(path)


def demo_lines() -> str:
  """What the demo prints at each evaluation, as the newest demo run did."""
  path, record = latest_demo()
  lines = [f'step {e["step"]}/{record["summary"]["num_train_steps"]}:'
           f' eval_loss {e["eval_loss"]:.4f} eval_top1 {e["eval_top1"]:.4f}'
           f' eval_top5 {e["eval_top5"]:.4f}' for e in record['evaluations']]
  return (f'On a {_machine(record)} ({_link(path)}) it printed:\n\n```\n'
          + '\n'.join(lines) + '\nsummary: {"status": "completed", "steps": 1500, ...}\n```\n')


def _rows(record: dict) -> dict:
  return {(r['name'], r.get('dtype'), r.get('batch_size')): r for r in record['rows']}


def _ratios(record: dict) -> str:
  return ', '.join(f'{r["name"]} x{r["ratio_to_pytorch"]:.2f}'
                   for r in record['rows'] if r['framework'] == 'jax')


# --- The ablations: each results folder against the paper's claim ---------------

# The length and repeats a verdict needs (the sweeps' full length); shorter
# runs are inconclusive by length, whatever their difference says.
FULL_EPOCHS, FULL_SEEDS = 30, 3
VERDICT_RULE = (
    'reproduced: the difference has the paper\'s sign and exceeds twice the'
    ' seeds\' spread (the two points\' sample standard deviations combined,'
    ' sqrt(s1² + s2²)); contradicted: the same beyond twice the spread with the'
    f' opposite sign; inconclusive otherwise, and for any run shorter than'
    f' {FULL_EPOCHS} epochs or with fewer than {FULL_SEEDS} seeds (then the'
    ' difference alone is said in brackets).')


def sweep_fields(path: Path) -> dict:
  """A sweep file's literal fields (PAPER, CLAIM, OVERRIDES, ...), read
  without running it or loading its config."""
  fields = {}
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
      try:
        fields[node.targets[0].id] = ast.literal_eval(node.value)
      except ValueError:
        pass
  return fields


def _claim_of(fields: dict) -> dict | None:
  """The sweep's CLAIM, or that of the sweep file testing the same PAPER
  claim (a CPU-length copy of a sweep need not repeat it)."""
  if fields.get('CLAIM'):
    return fields['CLAIM']
  for other in sorted((ROOT / 'experiments').glob('*.py')):
    theirs = sweep_fields(other)
    if theirs.get('CLAIM') and theirs.get('PAPER') == fields.get('PAPER'):
      return theirs['CLAIM']
  return None


def _point(text: str) -> dict:
  return dict(part.split('=', 1) for part in text.split(',') if '=' in part)


def _number(text):
  return float(text) if text not in (None, '') else None


def _value(row: dict, metric: str):
  """(mean, std) of `metric` as the claim reads it: errors in %, steps."""
  mean, std = _number(row.get(f'{metric}_mean')), _number(row.get(f'{metric}_std'))
  if metric.startswith('eval_top') and mean is not None:
    return 100 * (1 - mean), None if std is None else 100 * std
  if (metric == 'steps_to_target' and row.get('reached_target') not in (None, '')
      and int(row['reached_target']) < int(row['completed'] or 0)):
    return None, None  # Some seed never reached the target.
  return mean, std


def ablation(folder: Path, sweep_file: Path | None = None) -> list[dict]:
  """One row per setup of a results folder: the claim, what was measured,
  its length, seeds and hardware, and the verdict. `sweep_file`: the sweep
  it ran (default experiments/<folder name>.py)."""
  name = folder.name
  fields = sweep_fields(sweep_file or ROOT / 'experiments' / f'{name}.py')
  claim = _claim_of(fields)
  with open(folder / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  record = json.loads((folder / 'run.json').read_text()) if (
      folder / 'run.json').is_file() else {}
  run_md = (folder / 'RUN.md').read_text() if (folder / 'RUN.md').is_file() else ''
  hardware = record.get('hardware') or (
      m.group(1) if (m := re.search(r'Hardware: ([^,\n]+)', run_md)) else
      _devices(folder / 'runs.csv'))
  date = (record.get('date') or (m.group(0) if (
      m := re.search(r'\d{4}-\d\d-\d\d', run_md)) else ''))[:10]
  epochs = [_number(r.get('epochs_mean')) for r in rows]
  if None in epochs or not epochs:
    overrides = fields.get('OVERRIDES', {})
    epochs = [record.get('epochs') or (
        overrides.get('num_epochs') if overrides.get('num_train_steps', -1) <= 0
        else None)]
  epochs = min(e for e in epochs if e is not None) if any(
      e is not None for e in epochs) else None
  seeds = min(int(r['completed']) for r in rows)
  base = {'sweep': name, 'paper': fields.get('PAPER', ''),
          'figure': (claim or {}).get('figure', ''), 'epochs': epochs,
          'seeds': seeds, 'hardware': hardware, 'date': date,
          'results': _relative(folder) / 'results.md'}
  target = record.get('target_train_error') or fields.get('TARGET_TRAIN_ERROR')
  if not claim:
    return [base | {'setup': '', 'measured': '', 'verdict': 'no CLAIM to judge',
                    'reading': 'not judged', 'short': True}]
  factor, better = claim['factor'], _format(claim['better'])
  metric, best_over = claim['metric'], claim.get('best_over')
  setups = {}
  for row in rows:
    point = _point(row['point'])
    setup = tuple((k, v) for k, v in point.items() if k not in (factor, best_over))
    setups.setdefault(setup, []).append((point, row))
  out = []
  for setup, members in setups.items():
    sides = {}
    for side in (True, False):
      mine = [(p, r) for p, r in members if (p.get(factor) == better) == side]
      scored = [(p, r, *_value(r, metric)) for p, r in mine]
      reached = [x for x in scored if x[2] is not None]
      sides[side] = min(reached, key=lambda x: x[2]) if reached else (
          scored[0] if scored else None)
    out.append(base | {'setup': ', '.join(f'{k.split(".")[-1]}={v}' for k, v in setup),
                       **_judge(sides, factor, metric, best_over, epochs, seeds,
                                target)})
  return out


def _format(value) -> str:
  return value if isinstance(value, str) else repr(value)


def _devices(runs_csv: Path) -> str:
  """The kind of device the runs' summaries name, where nothing else says
  what the hardware was."""
  if not runs_csv.is_file():
    return 'not recorded'
  with open(runs_csv, newline='') as f:
    devices = ' '.join(r.get('devices') or '' for r in csv.DictReader(f)).lower()
  if not devices.strip():
    return 'not recorded'
  kind = 'CPU' if 'cuda' not in devices and 'gpu' not in devices else 'GPU'
  return f'{kind} (the model of it not recorded)'


def _relative(folder: Path) -> Path:
  try:
    return folder.relative_to(ROOT)
  except ValueError:
    return folder


def _judge(sides, factor, metric, best_over, epochs, seeds, target=None) -> dict:
  unit = '%' if metric.startswith('eval_top') else ' steps'
  what = {'eval_top1': 'top-1 test error', 'eval_top5': 'top-5 test error',
          'steps_to_target': f'steps to {target or 0:.0%} training error'}[metric]

  def show(side):
    point, _, mean, std = sides[side]
    label = f'{factor.split(".")[-1]}={point[factor]}' + (
        f' (best {best_over.split(".")[-1]}={point[best_over]})' if best_over else '')
    if mean is None:
      return f'{label}: ' + ('not reached by every seed' if metric == 'steps_to_target'
                             else 'no completed run')
    return f'{label}: {mean:,.1f}' + (f' ± {std:,.1f}' if std is not None else '') + unit
  if sides[True] is None or sides[False] is None:
    return {'measured': '', 'verdict': 'inconclusive: a side has no completed point',
            'reading': 'inconclusive', 'short': True}
  measured = f'{what}: {show(True)}; {show(False)}'
  (_, _, good, good_std), (_, _, bad, bad_std) = sides[True], sides[False]
  if good is None or bad is None:
    reading = ('inconclusive (not every seed reached the target)'
               if metric == 'steps_to_target' else 'inconclusive (a side has no completed run)')
  elif good_std is None or bad_std is None:
    reading = 'inconclusive (one seed: no spread)'
  else:
    difference, spread = bad - good, math.hypot(good_std, bad_std)
    measured += f'; difference {difference:+,.1f}{unit}, spread {spread:,.1f}'
    reading = ('reproduced' if difference > 2 * spread else
               'contradicted' if difference < -2 * spread else 'inconclusive')
  short = []
  if epochs is None or epochs < FULL_EPOCHS:
    short.append(f'{_epochs(epochs).replace(" epochs", "")} < {FULL_EPOCHS} epochs')
  if seeds < FULL_SEEDS:
    short.append(f'{seeds} seeds < {FULL_SEEDS}')
  verdict = (f'inconclusive by length ({", ".join(short)}; the difference alone:'
             f' {reading})' if short else reading)
  return {'measured': measured, 'verdict': verdict, 'reading': reading,
          'short': bool(short)}


def _epochs(epochs) -> str:
  return 'unknown epochs' if epochs is None else f'{epochs:g} epochs'


def ablation_folders() -> list[Path]:
  """Every results folder of a sweep (experiments/results/NAME/results.csv
  beside experiments/NAME.py), the sweeps of SWEEPS first."""
  folders = [p.parent for p in (ROOT / EXPERIMENTS).glob('*/results.csv')
             if (ROOT / 'experiments' / f'{p.parent.name}.py').is_file()]
  order = {name: i for i, name in enumerate(SWEEPS)}
  return sorted(folders, key=lambda p: (order.get(p.name, len(order)), p.name))


def ablations_table() -> str:
  """docs/ablations.md's table: every results folder against the paper."""
  lines = [('| sweep | the paper\'s claim | paper\'s figure | setup | measured'
            ' (mean ± std over seeds) | epochs | seeds | hardware, date | verdict |'),
           '|---|---|---|---|---|---|---|---|---|']
  for folder in ablation_folders():
    for row in ablation(folder):
      lines.append('| ' + ' | '.join([
          f'[{row["sweep"]}](../{row["results"].as_posix()})', row['paper'],
          row['figure'], row['setup'] or '-', row['measured'],
          _epochs(row['epochs']).replace(' epochs', ''), str(row['seeds']),
          f'{row["hardware"]}, {row["date"]}', f'**{row["verdict"]}**']) + ' |')
  return '\n'.join(lines) + f'\n\nRule: {VERDICT_RULE}\n'


def _sweep_row(name: str) -> list[str]:
  """The README's line for one ablation: its verdicts, length and seeds."""
  rows = ablation(ROOT / EXPERIMENTS / name)
  readings = '; '.join(f'{r["setup"] + ": " if r["setup"] else ""}{r["reading"]}'
                       for r in rows)
  length = f'{_epochs(rows[0]["epochs"])}, {rows[0]["seeds"]} seeds'
  verdict = (f'inconclusive by length ({length}; the difference alone: {readings})'
             if any(r['short'] for r in rows) else f'{readings} ({length})')
  return [f'`{name}.py`: {rows[0]["paper"]}',
          f'{verdict}; [the table](docs/ablations.md#the-papers-claims-measured)',
          f'{rows[0]["hardware"]}, {rows[0]["date"]}',
          _link(rows[0]['results'])]


def results_table() -> str:
  """The headline table: demo accuracy, CPU and GPU throughput and MFU,
  against PyTorch, and the ablations."""
  demo_path, demo = latest_demo()
  cpu, gpu = _json(CPU_STEP), _json(GPU_STEP)
  cpu_rows = _rows(cpu)
  best_gpu = max(gpu['rows'], key=lambda r: r['median_images_per_sec'])
  cpu_vs, gpu_vs = _json(CPU_VS_PYTORCH), _json(GPU_VS_PYTORCH)
  step = lambda r: f'{r["median_images_per_sec"]:,.1f} images/s (MFU {100 * r["mfu"]:.1f}%)'
  rows = [
      ['demo (`configs/two_gpu.py:demo`): two towers on 2 devices, shapes10',
       f'{100 * demo["summary"]["eval_top1"]:.2f}% validation top-1 after'
       f' {demo["summary"]["steps"]:,} steps', _machine(demo), _link(demo_path)],
      ['train step, full network (227x227), batch 32, float32',
       f'one device {step(cpu_rows[("one_device", "float32", 32)])}; two towers split'
       f' {step(cpu_rows[("towers", "float32", 32)])}', _machine(cpu), _link(CPU_STEP)],
      [f'train step, full network, one GPU, {best_gpu["dtype"]}',
       f'{best_gpu["median_images_per_sec"]:,.0f} images/s at batch'
       f' {best_gpu["batch_size"]} (MFU {100 * best_gpu["mfu"]:.1f}%)',
       _machine(gpu), _link(GPU_STEP)],
      [f'against PyTorch {cpu_vs["torch_version"]} ({cpu_vs["pytorch_setup"]}),'
       f' batch {cpu_vs["batch_size"]}', _ratios(cpu_vs), _machine(cpu_vs),
       _link(CPU_VS_PYTORCH)],
      [f'against PyTorch {gpu_vs["torch_version"]} ({gpu_vs["pytorch_setup"]}),'
       f' batch {gpu_vs["batch_size"]}', _ratios(gpu_vs), _machine(gpu_vs),
       _link(GPU_VS_PYTORCH)],
      *(_sweep_row(folder.name) for folder in ablation_folders()),
  ]
  lines = ['| what | measured | hardware, date | results file |', '|---|---|---|---|']
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows]) + '\n'


BLOCKS = {'demo': demo_lines, 'results': results_table}
# The generated blocks of docs/ablations.md.
DOC_BLOCKS = {'ablations': ablations_table}
ABLATIONS_PAGE = ROOT / 'docs' / 'ablations.md'


def rendered(text: str, blocks=None) -> str:
  """`text` with every generated block made anew."""
  blocks = blocks or BLOCKS
  return _BLOCK.sub(lambda m: m.group(1) + blocks[m.group('name')]() + m.group(4), text)


def stale_blocks(path: Path, blocks=None) -> list[str]:
  """The names of the generated blocks of `path` that differ from today's files."""
  blocks = blocks or BLOCKS
  text = path.read_text()
  return [m.group('name') for m in _BLOCK.finditer(text)
          if m.group('body') != blocks[m.group('name')]()]


if __name__ == '__main__':
  readme = ROOT / 'README.md'
  if sys.argv[1:] == ['--write']:
    readme.write_text(rendered(readme.read_text()))
    ABLATIONS_PAGE.write_text(rendered(ABLATIONS_PAGE.read_text(), DOC_BLOCKS))
  else:
    for name, block in (BLOCKS | DOC_BLOCKS).items():
      print(f'<!-- generated: {name} -->\n{block()}<!-- end generated -->\n')
