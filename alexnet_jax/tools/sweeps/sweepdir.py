"""A sweep's folder: one workdir per point, the sweep's record beside them.

    DIR/sweep.json                 the sweep (base, shared overrides, points)
    DIR/.lock                      held by the one runner using the folder
    DIR/run.json                   where and how the last runner ran
    DIR/<overrides>,seed=<s>/      an ordinary workdir of `alexnet_jax.main`
    DIR/<point>/sweep_run.json     how the runner's attempts at it ended
    DIR/<point>/sweep.log          their stdout and stderr
    DIR/results.md, results.csv, runs.csv, curves.png, final.png
"""

import json
from pathlib import Path

from alexnet_jax.errors import UserError
from alexnet_jax.run import rundir
from alexnet_jax.tools.sweeps.spec import Sweep

SPEC_FILE = 'sweep.json'
RUN_FILE = 'sweep_run.json'  # In a point folder: how the runner's attempts ended.
LOG_FILE = 'sweep.log'  # In a point folder: stdout and stderr of the attempts.


RUN_RECORD = 'run.json'  # Beside the results: hardware, command, date.


def claim_workdir(sweep: Sweep, workdir: Path) -> rundir.Lock:
  """Locks `workdir` and records the sweep in it; refuses a folder that
  holds another sweep or that another runner is using (naming it). The
  lock lasts until the returned Lock is released or this process dies."""
  _check_folder(sweep, workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  try:
    lock = rundir.lock(workdir)
  except UserError:
    holder = read_json(workdir / rundir.LOCK)
    if not holder:
      raise
    raise UserError(
        f'Another sweep runner is using --workdir {workdir}: process'
        f' {holder.get("pid", "?")} on host {holder.get("host", "?")}, started'
        f' {holder.get("started", "?")}. Two runners would start the same'
        ' points twice, so this one stopped without starting any. Wait for it'
        ' to finish (or stop it: its points resume from their checkpoints);'
        ' the lock goes with that process, however it exits.') from None
  try:
    _check_folder(sweep, workdir)  # Again, now that no other runner writes.
    _record(sweep, workdir)
  except BaseException:
    lock.release()
    raise
  return lock


def _check_folder(sweep: Sweep, workdir: Path) -> None:
  spec_path = workdir / SPEC_FILE
  if spec_path.exists():
    try:
      held = json.loads(spec_path.read_text())
    except (OSError, ValueError) as e:
      raise UserError(f'{spec_path} cannot be read ({e}); move the folder'
                      ' away or give another --workdir.') from None
    mine = json.loads(json.dumps(sweep.identity()))
    keys = [k for k in ('base', 'overrides', 'set') if k in mine or k in held]
    differ = [k for k in keys if held.get(k) != mine.get(k)]
    if differ:
      raise UserError(
          f'--workdir {workdir} holds points of another sweep ({held.get("sweep")}:'
          f' {", ".join(f"{k}={held.get(k)!r}" for k in differ)}), not of'
          f' {sweep.path} ({", ".join(f"{k}={mine.get(k)!r}" for k in differ)}).'
          ' Nothing was changed; give another --workdir.')
  elif workdir.is_dir() and any(p.name != rundir.LOCK for p in workdir.iterdir()):
    raise UserError(
        f'--workdir {workdir} is not empty and holds no {SPEC_FILE}, so it is'
        ' not the folder of a sweep; nothing was changed. Give an empty or new'
        ' folder.')
  elif workdir.exists() and not workdir.is_dir():
    raise UserError(f'--workdir {workdir} is a file; give a folder.')


def _record(sweep: Sweep, workdir: Path) -> None:
  spec_path = workdir / SPEC_FILE
  record = {**sweep.identity(), 'sweep': sweep.path,
            'points': [p.name for p in sweep.points]}
  # Same experiment: points may have been added (more seeds or values).
  held = read_json(spec_path)
  record['points'] = list(dict.fromkeys(held.get('points', []) + record['points']))
  spec_path.write_text(json.dumps(record, indent=2) + '\n')


def is_completed(folder: Path) -> bool:
  return read_json(folder / 'summary.json').get('status') == 'completed'


def read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}
