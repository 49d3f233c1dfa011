"""The README's generated blocks, made from the committed results files.

    python -m alexnet_jax.tools.result_tables            # prints them
    python -m alexnet_jax.tools.result_tables --write    # rewrites them in README.md

Each block stands in README.md between `<!-- generated: NAME -->` and
`<!-- end generated -->`; tests/test_docs.py checks that every block equals
what this module makes of the files today. To change a figure, commit a new
results file (with its command, hardware and date) and run `--write`.
"""

import ast
import csv
import json
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


def _sweep_row(name: str) -> list[str]:
  """One ablation: the paper's claim (the sweep file's PAPER, read without
  running the file) and each point's top-1 error, mean ± std over seeds."""
  source = ROOT / 'experiments' / f'{name}.py'
  paper = next(ast.literal_eval(node.value) for node in ast.parse(source.read_text()).body
               if isinstance(node, ast.Assign) and node.targets[0].id == 'PAPER')
  folder = EXPERIMENTS / name
  with open(ROOT / folder / 'results.csv', newline='') as f:
    points = list(csv.DictReader(f))
  measured = []
  for p in points:
    label = ','.join(key.split('.')[-1] + '=' + value for key, value in
                     (part.split('=', 1) for part in p['point'].split(',')))
    error = 100 * (1 - float(p['eval_top1_mean']))
    spread = f' ± {100 * float(p["eval_top1_std"]):.1f}' if p['eval_top1_std'] else ''
    measured.append(f'{label}: {error:.1f}{spread}%')
  steps = int(float(points[0]['steps_mean']))
  run = (ROOT / folder / 'RUN.md').read_text()
  hardware = re.search(r'Hardware: ([^,\n]+)', run).group(1)
  date = re.search(r'\d{4}-\d\d-\d\d', run).group(0)
  return [f'`{name}.py`: {paper}',
          f'top-1 error {"; ".join(measured)} ({steps} steps, {points[0]["seeds"]} seeds)',
          f'2-core {hardware}, {date}', _link(folder / 'results.md')]


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
      *(_sweep_row(name) for name in SWEEPS),
  ]
  lines = ['| what | measured | hardware, date | results file |', '|---|---|---|---|']
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows]) + '\n'


BLOCKS = {'demo': demo_lines, 'results': results_table}


def rendered(text: str) -> str:
  """`text` with every generated block made anew."""
  return _BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group('name')]() + m.group(4), text)


def stale_blocks(path: Path) -> list[str]:
  """The names of the generated blocks of `path` that differ from today's files."""
  text = path.read_text()
  return [m.group('name') for m in _BLOCK.finditer(text)
          if m.group('body') != BLOCKS[m.group('name')]()]


if __name__ == '__main__':
  readme = ROOT / 'README.md'
  if sys.argv[1:] == ['--write']:
    readme.write_text(rendered(readme.read_text()))
  else:
    for name, block in BLOCKS.items():
      print(f'<!-- generated: {name} -->\n{block()}<!-- end generated -->\n')
