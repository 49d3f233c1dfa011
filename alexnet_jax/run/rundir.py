"""The run's folder: one run at a time, every output writable, one history.

    WORKDIR/.lock                 an exclusive lock for the run's life (host, PID, start)
    WORKDIR/config.json           the resolved config of the latest start
    WORKDIR/config_history.jsonl  one line per start: time, host, PID, step, config
    WORKDIR/metrics.jsonl, tensorboard/, checkpoints/, summary.json

The lock is `flock` on `.lock`: the kernel releases it when the process dies
(kill -9 included), so there is never a stale lock to clean up; the file's
contents only name the holder for the message a second run prints. On NFS
Linux maps flock to POSIX byte-range locks, which NFSv4 servers honour.

What may change when a run resumes (`check_resume`): the number of steps
(`num_train_steps`, `num_epochs`), the cadences (`log_every_steps`,
`eval_every_steps`, `checkpoint_every_steps`, `keep_checkpoints`), the mesh and
strategy (checkpoints restore onto any mesh), `data_dir`, the optimiser's
rates and the step schedule's settings; each change is printed and recorded
in `config_history.jsonl`. The `step` schedule divides the rate by epoch
(`step // steps_per_epoch`), and `plateau` keeps its state in the checkpoint,
so extending either leaves the steps already taken as they were. `cosine`
spreads its decay over the whole run, so a new length would bend the curve
under the steps already taken: refused. Refused too, as they would make the
restored steps part of another run: `dataset`, `train_split`, `image_size`,
`batch_size` (the data position is step x batch), `seed`, `model.*`,
`optimizer.schedule` and `input.*` (augmentation, normalisation, shuffle
buffer, the built-in dataset's sizes, bad files skipped). Each refusal names the
override `--config.allow_config_change=True`, which records the change and
goes on.
"""

import dataclasses
import errno
import fcntl
import json
import os
from pathlib import Path
import socket
import tempfile
import time

from alexnet_jax.errors import UserError
from alexnet_jax.errors import shown

LOCK = '.lock'
CONFIG = 'config.json'
HISTORY = 'config_history.jsonl'
METRICS = 'metrics.jsonl'
SUMMARY = 'summary.json'
FILES = (CONFIG, HISTORY, METRICS, SUMMARY)
TENSORBOARD = 'tensorboard'
FOLDERS = ('checkpoints', TENSORBOARD)

# Orbax globs over the full checkpoint path when it merges a step's files, so
# a folder named `lr[1]` (or with `\\`, glob's escape) silently loses every
# checkpoint; TensorStore, which writes the arrays, reads `#`, `%` and `|` in
# a path as a URL's fragment, escape and pipeline (tested, each of them).
GLOB_CHARACTERS = '[]*?\\'
URL_CHARACTERS = '#%|'

# Keys (or prefixes ending in '.') whose change on resume would make the
# restored steps part of a different run.
# The input settings too: crops, flips, the colour shift, the normalisation,
# the shuffle buffer and the file list decide what each step sees.
FIXED_ON_RESUME = ('dataset', 'train_split', 'image_size', 'batch_size', 'seed',
                   'model.', 'optimizer.schedule', 'input.')
# Keys that only say how a run goes, not what it computes: never reported.
NOT_COMPARED = ('allow_config_change', 'distributed.')


def os_error_cause(error: OSError) -> str:
  """The cause of a failed write in words a user acts on."""
  causes = {
      errno.ENOSPC: 'no space left on the device: free some space',
      errno.EDQUOT: 'the disk quota is exhausted: free some space or raise'
                    ' the quota',
      errno.EACCES: 'permission denied: make it writable by this user',
      errno.EPERM: 'operation not permitted: make it writable by this user',
      errno.EROFS: 'the file system is mounted read-only: use a writable'
                   ' --workdir',
      errno.EEXIST: 'it already exists, which usually means another run is'
                    ' writing the same workdir',
      errno.ENOTDIR: 'a part of the path is a file, not a directory',
      errno.EISDIR: 'it is a directory where a file belongs',
      errno.ENAMETOOLONG: 'the path is too long',
      errno.EIO: 'an input/output error of the device',
  }
  cause = causes.get(error.errno, error.strerror or str(error))
  where = f' ({error.filename})' if error.filename else ''
  return f'{cause}{where}'


def check_path(workdir: str | Path) -> Path:
  """The absolute workdir; refuses characters the checkpoint library misreads."""
  path = Path(workdir).expanduser().absolute()
  special = GLOB_CHARACTERS + URL_CHARACTERS
  bad = sorted({c for c in str(path) if c in special})
  if bad:
    raise UserError(
        f'--workdir {shown(path)} contains'
        f' {" and ".join(repr(c) for c in bad)}, which the checkpoint'
        ' libraries read as syntax, not as part of a folder name: orbax reads'
        f' {" ".join(GLOB_CHARACTERS)} as a glob pattern when it merges a'
        ' checkpoint, and tensorstore reads'
        f' {" ".join(URL_CHARACTERS)} as parts of a URL, so checkpoints would'
        ' be written that cannot be read back. Nothing was written. Use a'
        f' path without any of {" ".join(special)} (e.g. lr-1 instead of'
        ' lr[1], pct41 instead of pct%41).')
  return path


def check_outputs(workdir: Path) -> None:
  """Creates the workdir and checks every output can be written, now.

  Probes by writing (a temporary file in each folder, an append-open of each
  file), so a read-only mount, a full disk or missing permissions are found
  before training, named by their real cause.
  """
  def fail(what: str, cause: str):
    raise UserError(
        f'{what} cannot be written: {cause}. The run writes its config,'
        f' metrics, checkpoints and summary under --workdir {workdir};'
        ' fix that, or choose another --workdir.')

  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    fail(f'The workdir {workdir}', os_error_cause(e))
  for name in FOLDERS:
    path = workdir / name
    if path.exists() and not path.is_dir():
      fail(str(path), 'it is a file, and the run needs a directory there;'
           ' move it away')
  for name in FILES:
    path = workdir / name
    if path.is_dir():
      fail(str(path), 'it is a directory, and the run writes a file there;'
           ' move it away')
  for folder in [workdir] + [workdir / n for n in FOLDERS
                             if (workdir / n).is_dir()]:
    try:
      fd, probe = tempfile.mkstemp(prefix='.write-probe-', dir=folder)
      os.close(fd)
      os.unlink(probe)
    except OSError as e:
      fail(str(folder), os_error_cause(e))
  for name in FILES:
    path = workdir / name
    if path.exists():
      try:
        with open(path, 'a', encoding='utf-8'):
          pass
      except OSError as e:
        fail(str(path), os_error_cause(e))


@dataclasses.dataclass
class Lock:
  """An exclusive hold on a workdir, released by `release()` or by dying."""
  path: Path
  fd: int | None

  def release(self) -> None:
    if self.fd is not None:
      os.close(self.fd)  # Closing drops the flock.
      self.fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()


def lock(workdir: Path) -> Lock:
  """Takes WORKDIR/.lock, or raises UserError naming the run that holds it."""
  return exclusive(workdir / LOCK, 'the workdir', lambda holder: (
      f'Another run is using --workdir {workdir}: {holder}. Two runs in one'
      ' workdir would interleave their metrics and overwrite each other\'s'
      ' checkpoints, so this one stopped without touching anything. Wait'
      ' for it to finish (or stop it: it resumes from its checkpoints), or'
      ' use another --workdir. The lock is released when that process'
      ' exits, however it exits.'))


def exclusive(path: Path, what: str, refusal) -> Lock:
  """Takes the flock on `path` (the lock of `what`), or raises UserError
  with `refusal(holder)`, holder naming the process that has it."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _read_holder(fd)
    os.close(fd)
    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
      raise UserError(f'Could not lock {what} ({path}):'
                      f' {os_error_cause(e)}.') from None
    raise UserError(refusal(holder)) from None
  holder = {'host': socket.gethostname(), 'pid': os.getpid(),
            'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(holder) + '\n').encode(), 0)
  return Lock(path, fd)


def _read_holder(fd: int) -> str:
  try:
    holder = json.loads(os.pread(fd, 4096, 0).decode())
    return (f'process {holder["pid"]} on host {holder["host"]}, started'
            f' {holder["started"]}')
  except (OSError, ValueError, KeyError, TypeError):
    return 'a process that has not yet written its name into the lock file'


def flatten(tree, prefix: str = '') -> dict:
  """{'model.width': 1.0, ...} from a ConfigDict or the dicts of config.json."""
  flat = {}
  for name, value in tree.items():
    if hasattr(value, 'items'):
      flat |= flatten(value, f'{prefix}{name}.')
    else:
      flat[f'{prefix}{name}'] = value
  return flat


def _matches(key: str, patterns) -> bool:
  return any(key == p or (p.endswith('.') and key.startswith(p))
             for p in patterns)


def config_changes(before: dict, after: dict) -> dict[str, tuple]:
  """{key: (before, after)} over the keys both hold, except NOT_COMPARED."""
  before, after = flatten(before), flatten(after)
  return {k: (before[k], after[k]) for k in sorted(set(before) & set(after))
          if before[k] != after[k] and not _matches(k, NOT_COMPARED)}


def check_resume(workdir: Path, settings, *, latest_step: int | None,
                 num_steps: int) -> dict[str, tuple]:
  """Refuses a resume whose config would change the meaning of the run.

  `latest_step` is the newest checkpoint's step (None: nothing to resume, so
  any config is fine); `num_steps` the run's resolved length. Returns the
  changes that are allowed (to print), raises UserError for the others
  unless allow_config_change.
  """
  if latest_step is None:
    return {}
  allow = settings.run.allow_config_change
  if num_steps < latest_step and not allow:
    raise UserError(
        f'--workdir {workdir} holds a checkpoint at step {latest_step}, past'
        f' this run\'s {num_steps} steps, so there is nothing to train.'
        f' Raise num_train_steps (or num_epochs) above {latest_step} to go'
        ' on training, or use another --workdir for a shorter run; pass'
        ' --config.allow_config_change=True to just evaluate that'
        ' checkpoint.')
  previous = workdir / CONFIG
  try:
    before = json.loads(previous.read_text(encoding='utf-8'))
  except (OSError, ValueError):
    return {}  # A workdir from before config.json was kept: nothing to compare.
  changes = config_changes(before, settings.resolved)
  fixed = {k: v for k, v in changes.items() if _matches(k, FIXED_ON_RESUME)}
  cosine = {}
  if before.get('optimizer', {}).get('schedule') == 'cosine':
    cosine = {k: v for k, v in changes.items()
              if k in ('num_train_steps', 'num_epochs', 'optimizer.warmup_epochs')}
  fixed |= cosine
  if fixed and not allow:
    listing = '; '.join(f'{k}: {a!r} then, {b!r} now'
                        for k, (a, b) in fixed.items())
    why = (' This run\'s schedule is cosine, which spreads its decay over the'
           ' whole run: a new length would bend the learning-rate curve under'
           ' the steps already taken, so a cosine run keeps its length.'
           if cosine else '')
    may_change = ('cadences, mesh and learning rates' if cosine else
                  'the step count, cadences, mesh and learning rates')
    raise UserError(
        f'--workdir {workdir} holds checkpoints up to step {latest_step} of a'
        f' run with another config ({listing}). Resuming with that change'
        ' would make the steps already taken part of a different run (data'
        f' order, network, schedule).{why} Use another --workdir for the new'
        ' config, or pass --config.allow_config_change=True to resume anyway'
        ' (the change is recorded in config_history.jsonl). What may change'
        f' on resume: {may_change}; see alexnet_jax/run/rundir.py.')
  return changes


def record_start(workdir: Path, settings, *, start_step: int,
                 processes: int = 1) -> None:
  """Writes config.json and appends this start to config_history.jsonl."""
  _write_atomically(workdir / CONFIG, json.dumps(settings.resolved, indent=2))
  entry = {'time': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
           'host': socket.gethostname(), 'pid': os.getpid(),
           'start_step': start_step, 'processes': processes,
           'config': settings.resolved}
  with open(workdir / HISTORY, 'a', encoding='utf-8') as f:
    f.write(json.dumps(entry) + '\n')


def _write_atomically(path: Path, text: str) -> None:
  tmp = path.with_name(f'.{path.name}.tmp')
  tmp.write_text(text, encoding='utf-8')
  os.replace(tmp, path)
