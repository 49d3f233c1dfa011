"""The sweep runner: every point an ordinary run of `alexnet_jax.main`.

Each point of the sweep (its overrides and a seed) is started as a
subprocess in `DIR/<overrides>,seed=<s>/`: the same code, resumable and
inspectable like any workdir. Running the same command again skips the
finished points (summary.json says `completed`) and resumes the others from
their checkpoints. A point that fails is recorded with the end of its
stderr and the others go on. SIGTERM or Ctrl-C preempts the running points
(they save a checkpoint). Beyond one machine, `print_commands` prints one
self-contained command per point (for a job array of any scheduler); once
they have run, `collect_only` builds the same results from the folder.
"""

import concurrent.futures
import json
import os
from pathlib import Path
import shlex
import signal
import subprocess
import sys
import threading
import time

from alexnet_jax.errors import UserError
from alexnet_jax.run import preemption
from alexnet_jax.tools.sweeps import results
from alexnet_jax.tools.sweeps import spec
from alexnet_jax.tools.sweeps import sweepdir

STDERR_TAIL_LINES = 12


class Runner:
  """Trains points in subprocesses, a few at once; SIGTERM preempts them all."""

  def __init__(self, sweep: spec.Sweep, workdir: Path, parallel: int):
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
            if not sweepdir.is_completed(self.workdir / p.name)]
    for point in self.sweep.points:
      if point not in todo:
        self._say(f'{point.name}: completed before, skipped.')
    self.total = len(todo)
    with concurrent.futures.ThreadPoolExecutor(max(1, self.parallel)) as pool:
      list(pool.map(self._run_point, todo))

  def _say(self, message):
    print(f'sweep: {message}', flush=True)

  def _run_point(self, point: spec.Point) -> None:
    folder = self.workdir / point.name
    command = self.sweep.command(point, self.workdir)
    with self.lock:
      if self.stopping:
        return
      folder.mkdir(parents=True, exist_ok=True)
      log = (folder / sweepdir.LOG_FILE).open('a')
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
    record = sweepdir.read_json(folder / sweepdir.RUN_FILE)
    attempts = record.get('attempts', []) + [
        {'exit_status': process.returncode, 'seconds': round(seconds, 1)}]
    if process.returncode == 0 and sweepdir.is_completed(folder):
      record = {'status': 'completed', 'error': ''}
    elif process.returncode in preemption.SAVED_EXIT_CODES:
      record = {'status': 'preempted', 'error': ''}
    else:
      record = {'status': 'failed', 'error': _tail(stderr)}
    record['attempts'] = attempts
    (folder / sweepdir.RUN_FILE).write_text(json.dumps(record, indent=2) + '\n')
    summary = sweepdir.read_json(folder / 'summary.json')
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


def run_sweep(sweep_file: str, workdir: str, *, parallel: int = 1,
              print_commands: bool = False, collect_only: bool = False) -> int:
  """Everything `python -m alexnet_jax.sweep` does; returns its exit status:
  0 every point completed, 1 some point failed, 75 preempted (UserError for
  a bad sweep file or workdir, before any point starts)."""
  sweep = spec.load(sweep_file)
  workdir = Path(workdir).expanduser().absolute()
  if print_commands and collect_only:
    raise UserError('--print_commands and --collect_only exclude each other:'
                    ' print the commands, run them, then collect.')
  if parallel < 1:
    raise UserError(f'--parallel must be at least 1, got {parallel}.')
  sweepdir.claim_workdir(sweep, workdir)
  if print_commands:
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
  if not collect_only:
    runner = Runner(sweep, workdir, parallel)
    previous = {s: signal.signal(s, runner.stop)
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      runner.run()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
    status = preemption.PREEMPTED_EXIT_CODE if runner.stopping else 0
  runs = results.collect(sweep, workdir)
  results.write_results(sweep, workdir, runs)
  print((workdir / 'results.md').read_text())
  counts = {s: sum(r['status'] == s for r in runs)
            for s in dict.fromkeys(r['status'] for r in runs)}
  print(f'sweep: {", ".join(f"{n} {s}" for s, n in counts.items())};'
        f' results in {workdir}/results.md, results.csv, curves.png, final.png')
  if status == 0 and any(r['status'] != 'completed' for r in runs):
    status = 1
  return status
