"""All five ablations and Figure 3 on one GPU (H100 or H200), unattended, in one time window.

    python experiments/all_on_one_gpu.py --data_dir=FOLDER --out=DIR [--budget_s=420]
    python experiments/all_on_one_gpu.py --data_dir=FOLDER --out=DIR --dry_run

FOLDER holds CIFAR-10 as `train/CLASS/*.jpg` and `test/CLASS/*.jpg` (it is
passed to every point as `--set dataset=image_folder --set data_dir=FOLDER`).
The sweeps run one after another in ORDER, the clearest CIFAR-10 claim
first, several points at once on the GPU (--points_per_device), each in
DIR/<sweep>/<point>/; with --vmap_seeds each point's seeds train in one
process (the sweep runner's --vmap_seeds: the step jax.vmap-ed over the
seeds' stacked states; off by default until measured on a GPU, as it is
slower on the CPU, docs/ablations.md). Each finished point is in DIR as soon as it ends (its
summary.json and the sweep's results.csv); when the budget is spent the
running points are preempted with a checkpoint and the command exits 75, and
the same command later does only the rest. With --bundle=FILE.tgz the
results are packed into one archive (without the checkpoints of finished
points). Exit status: 0 every point completed, 1 some point failed, 2 no GPU
here or bad input (one paragraph), 75 the budget ran out first.

`--tiny` runs the same sweeps on the CPU at the test size (the built-in
dataset, a few steps): what the test suite runs.
"""

import argparse
import json
import os
from pathlib import Path
import sys
import tarfile
import time

ROOT = Path(__file__).resolve().parents[1]
# Clearest claim first: a window cut short has answered the most.
ORDER = ('lrn', 'relu_tanh', 'figure3', 'towers', 'dropout', 'overlapping_pool',
         'figure3_67')
KERNEL_SWEEPS = ('figure3', 'figure3_67')
# --set overrides of the fastest input path there is. Empty: the cached,
# on-device input path is not merged yet; name its config keys here once it is.
FAST = ()
# The test size on the CPU: the built-in dataset, two steps a point.
TINY = ('dataset=shapes10', 'eval_split=validation', 'num_train_steps=2', 'batch_size=8',
        'log_every_steps=1', 'eval_every_steps=2', 'checkpoint_every_steps=2',
        'input.shapes_train_examples=16', 'input.shapes_eval_examples=8')


def plan(args) -> list[tuple[str, list[str]]]:
  """(sweep name, its --set overrides) in the order they run."""
  names = [n for n in ORDER if not args.only or n in args.only.split(',')]
  sets = [*TINY, f'data_dir={Path(args.out).absolute() / "tfds"}'] if args.tiny else [
      'dataset=image_folder', f'data_dir={args.data_dir}', *FAST]
  return [(name, sets) for name in names]


def command(args, name, sets) -> list[str]:
  return ['python', '-m', 'alexnet_jax.sweep', f'--sweep=experiments/{name}.py',
          f'--workdir={Path(args.out) / name}', *(f'--set={s}' for s in sets),
          *(['--devices=cpu', '--parallel=2'] if args.tiny else
            ['--devices=gpu', f'--points_per_device={args.points_per_device}']),
          *(['--vmap_seeds'] if args.vmap_seeds else []),
          *([f'--seeds={args.seeds}'] if args.seeds else [])]


def refuse(message: str) -> int:
  print(f'error: {message}', file=sys.stderr)
  return 2


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True, help='Folder of the results.')
  parser.add_argument('--data_dir', default='', help='CIFAR-10 as train/ and test/ image folders.')
  parser.add_argument('--budget_s', type=float, default=420,
                      help='Seconds for everything; then preempt and exit 75.')
  parser.add_argument('--points_per_device', type=int, default=8)
  parser.add_argument('--only', default='', help='Comma list of sweeps of ORDER.')
  parser.add_argument('--seeds', default='', help='Only these seeds, e.g. 0.')
  parser.add_argument('--vmap_seeds', action='store_true',
                      help="Each point's seeds in one process (jax.vmap).")
  parser.add_argument('--bundle', default='', help='Pack the results into this .tgz.')
  parser.add_argument('--dry_run', action='store_true')
  parser.add_argument('--tiny', action='store_true')
  args = parser.parse_args(argv)
  os.chdir(ROOT)
  sys.path.insert(0, str(ROOT))
  from alexnet_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  from alexnet_jax.tools.pictures import kernels  # pylint: disable=import-outside-toplevel
  from alexnet_jax.tools.sweeps import placement  # pylint: disable=import-outside-toplevel
  from alexnet_jax.tools.sweeps import runner  # pylint: disable=import-outside-toplevel
  from alexnet_jax.tools.sweeps import spec  # pylint: disable=import-outside-toplevel

  unknown = [n for n in args.only.split(',') if n and n not in ORDER]
  if unknown:
    return refuse(f'--only names {", ".join(unknown)}; the sweeps are'
                  f' {", ".join(ORDER)}.')
  if not args.tiny:
    gpus = placement.find_gpus()
    if not gpus:
      return refuse(
          'This command trains on a GPU, and nvidia-smi lists none here (or'
          ' CUDA_VISIBLE_DEVICES hides them). Run it on a machine with an'
          ' H100 or H200, or run one sweep on the CPU with python -m'
          ' alexnet_jax.sweep --sweep=experiments/lrn.py --workdir=DIR'
          ' --devices=cpu (slow), or pass --tiny to try the command itself.')
    if not (Path(args.data_dir) / 'train').is_dir() or not (
        Path(args.data_dir) / 'test').is_dir():
      return refuse(f'--data_dir={args.data_dir!r} holds no train/ and test/'
                    ' image folders; give the folder CIFAR-10 was unpacked'
                    ' into (train/CLASS/*.jpg, test/CLASS/*.jpg).')
  steps = plan(args)
  try:  # Every point's config built before anything runs.
    for name, sets in steps:
      sweep = spec.only_seeds(spec.load(f'experiments/{name}.py',
                                        spec.parse_sets(sets)),
                              args.seeds.split(',') if args.seeds else ())
      print(f'{name}: {len(sweep.points)} points: '
            + ' '.join(command(args, name, sets)), flush=True)
  except UserError as e:
    return refuse(str(e))
  if args.dry_run:
    return 0
  deadline = time.monotonic() + args.budget_s
  statuses = {}
  for name, sets in steps:
    left = deadline - time.monotonic()
    if left < 20:  # Not worth a compile: the next run starts here.
      statuses[name] = 'not started'
      continue
    try:
      status = runner.run_sweep(
          f'experiments/{name}.py', str(Path(args.out) / name), sets=sets,
          devices='cpu' if args.tiny else 'gpu', parallel=2 if args.tiny else 0,
          points_per_device=1 if args.tiny else args.points_per_device,
          seeds=args.seeds.split(',') if args.seeds else (), stop_after_s=left,
          vmap_seeds=args.vmap_seeds)
    except UserError as e:
      return refuse(str(e))
    statuses[name] = status
    if name in KERNEL_SWEEPS:
      kernels.picture_sweep(Path(args.out) / name)
  (Path(args.out) / 'statuses.json').write_text(json.dumps(statuses, indent=1) + '\n')
  print('all_on_one_gpu: ' + ', '.join(f'{n} {s}' for n, s in statuses.items()))
  if args.bundle:
    bundle(Path(args.out), Path(args.bundle))
  codes = set(statuses.values())
  return (75 if 75 in codes or 'not started' in codes else
          1 if codes - {0} else 0)


def bundle(out: Path, archive: Path) -> None:
  """One .tgz of `out` without TensorBoard files or the checkpoints of
  finished points (unfinished ones keep theirs, to resume)."""
  def keep(info):
    parts = Path(info.name).parts
    if 'tensorboard' in parts or 'tfds' in parts:
      return None
    if 'checkpoints' in parts:
      point = out.joinpath(*parts[1:parts.index('checkpoints')])
      summary = point / 'summary.json'
      if summary.is_file() and '"completed"' in summary.read_text():
        return None
    return info
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(out, arcname=out.name, filter=keep)


if __name__ == '__main__':
  sys.exit(main())
