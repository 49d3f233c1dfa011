"""A sweep's folder: one workdir per point, the sweep's record beside them.

    DIR/sweep.json                 the sweep (base, shared overrides, points)
    DIR/<overrides>,seed=<s>/      an ordinary workdir of `alexnet_jax.main`
    DIR/<point>/sweep_run.json     how the runner's attempts at it ended
    DIR/<point>/sweep.log          their stdout and stderr
    DIR/results.md, results.csv, runs.csv, curves.png, final.png
"""

import json
from pathlib import Path

from alexnet_jax.errors import UserError
from alexnet_jax.tools.sweeps.spec import Sweep

SPEC_FILE = 'sweep.json'
RUN_FILE = 'sweep_run.json'  # In a point folder: how the runner's attempts ended.
LOG_FILE = 'sweep.log'  # In a point folder: stdout and stderr of the attempts.


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
  return read_json(folder / 'summary.json').get('status') == 'completed'


def read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}
