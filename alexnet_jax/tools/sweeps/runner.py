"""The sweep runner: every point an ordinary run of `alexnet_jax.main`.

Each point of the sweep (its overrides and a seed) is started as a
subprocess in `DIR/<overrides>,seed=<s>/`: the same code, resumable and
inspectable like any workdir, on the devices placement.py gives it. Running
the same command again skips the finished points (summary.json says
`completed`) and resumes the others from their checkpoints. A point that
fails is recorded with its cause and the end of its stderr, and the others
go on; the tables are rewritten as each point ends. SIGTERM or Ctrl-C
preempts the running points (they save a checkpoint), and the points die
with the runner however it dies (PR_SET_PDEATHSIG). One runner at a time
per folder (DIR/.lock). Beyond one machine, `print_commands` prints a
SLURM job-array script, one point per task (any line also runs by hand);
once they have run, `collect_only` builds the same results from the folder.
"""

import ctypes
import datetime
import importlib.metadata
import json
import os
from pathlib import Path
import platform
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time

from alexnet_jax.errors import UserError
from alexnet_jax.run import preemption
from alexnet_jax.tools.sweeps import placement
from alexnet_jax.tools.sweeps import results
from alexnet_jax.tools.sweeps import spec
from alexnet_jax.tools.sweeps import sweepdir

STDERR_TAIL_LINES = 12
# What a point's stderr says when it ran out of device or host memory.
OUT_OF_MEMORY = ('RESOURCE_EXHAUSTED', 'Out of memory', 'out of memory',
                 'OOM when allocating', 'MemoryError')
# What main says when another process trains in the point's workdir.
WORKDIR_BUSY = 'Another run is using --workdir'
# What --vmap_seeds trains (run/seeds.py's STRATEGIES, named here so the
# runner never imports JAX).
VMAP_STRATEGIES = ('data', 'towers')
_PR_SET_PDEATHSIG = 1


class Runner:
  """Trains points in subprocesses, one per free slot; SIGTERM preempts them all."""

  def __init__(self, sweep: spec.Sweep, workdir: Path,
               slots: list[placement.Slot], command=None, vmap_seeds=False):
    self.sweep, self.workdir = sweep, workdir
    self.command = command or sweep.command  # (point, workdir) -> argv.
    self.vmap_seeds = vmap_seeds  # A point's seeds in one process (run/seeds.py).
    self.slots: queue.Queue = queue.Queue()
    for slot in slots:
      self.slots.put(slot)
    self.parallel = len(slots)
    self.lock = threading.Lock()
    self.running: set[subprocess.Popen] = set()
    self.stopping = False
    self.done = 0

  def stop(self, signum, frame=None):
    del frame
    with self.lock:
      self.stopping = True
      for process in self.running:
        process.send_signal(signal.SIGTERM)  # main saves, then exits 75.
    print(f'sweep: {_signal_name(signum)}: preempting the running points.',
          file=sys.stderr, flush=True)

  def run(self) -> None:
    todo = [p for p in self.sweep.points
            if not sweepdir.is_completed(self.workdir / p.name)]
    for point in self.sweep.points:
      if point not in todo:
        self._say(f'{point.name}: completed before, skipped.')
    self.total = len(todo)
    jobs = [[p] for p in todo]
    if self.vmap_seeds:  # The points that differ only in their seed, together.
      groups = {}
      for point in todo:
        groups.setdefault(point.group, []).append(point)
      jobs = list(groups.values())
    # Threads that start a point live until its process has ended: the
    # parent-death signal is tied to the thread that forked.
    threads = [threading.Thread(target=self._run_point, args=(j,), daemon=True)
               for j in jobs]
    pending = list(threads)
    active: list[threading.Thread] = []
    while pending or active:
      active = [t for t in active if t.is_alive()]
      if pending and len(active) < self.parallel and not self.stopping:
        thread = pending.pop(0)
        thread.start()
        active.append(thread)
        continue
      if self.stopping:
        pending = []
      time.sleep(0.05)

  def _say(self, message):
    print(f'sweep: {message}', flush=True)

  def _run_point(self, points: list[spec.Point]) -> None:
    slot = self.slots.get()
    try:
      self._train(points, slot)
    finally:
      self.slots.put(slot)

  def _train(self, points: list[spec.Point], slot: placement.Slot) -> None:
    """Trains `points` (one, or a point's seeds with vmap_seeds) in one process."""
    command = (self.command(points[0], self.workdir) if len(points) == 1
               else self.sweep.seeds_command(points, self.workdir))
    env = slot.env(dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    with self.lock:
      if self.stopping:
        return
      logs = []
      for point in points:
        (self.workdir / point.name).mkdir(parents=True, exist_ok=True)
        logs.append((self.workdir / point.name / sweepdir.LOG_FILE).open('a'))
        logs[-1].write(f'\n# on {slot.describe()}\n$ {shlex.join(command)}\n')
        logs[-1].flush()
      # stderr also goes to the log, through us, to keep its tail for the
      # table (and stdout with it into every log of several seeds). The
      # child setup only calls prctl and sched_setaffinity (no locks, no
      # imports), which is safe in a forked child of threads.
      merged = len(logs) > 1
      process = subprocess.Popen(
          command, stdout=subprocess.PIPE if merged else logs[0],
          stderr=subprocess.STDOUT if merged else subprocess.PIPE, env=env,
          text=True, errors='replace',
          preexec_fn=_child_setup(os.getpid(), slot.cpus))  # noqa: PLW1509
      self.running.add(process)
    self._say(f'{", ".join(p.name for p in points)}: started on {slot.describe()}.')
    start = time.time()
    stderr = []
    for line in process.stdout if merged else process.stderr:
      for log in logs:
        log.write(line)
      stderr.append(line)
      del stderr[:-200]
    process.wait()
    for log in logs:
      log.close()
    with self.lock:
      self.running.discard(process)
    for point in points:
      self._record(point, slot, process.returncode, time.time() - start, stderr)

  def _record(self, point: spec.Point, slot: placement.Slot, returncode: int,
              seconds: float, stderr: list[str]) -> None:
    """The point's run.json, the tables, and a line on the console."""
    folder = self.workdir / point.name
    with self.lock:
      self.done += 1
    record = sweepdir.read_json(folder / sweepdir.RUN_FILE)
    attempts = record.get('attempts', []) + [
        {'exit_status': returncode, 'seconds': round(seconds, 1),
         'devices': slot.describe()}]
    text = ''.join(stderr)
    if returncode == 0 and sweepdir.is_completed(folder):
      record = {'status': 'completed', 'error': ''}
    elif (returncode in preemption.SAVED_EXIT_CODES
          or (self.stopping and returncode == -signal.SIGTERM)):
      # Stopped by us (before it could save, if it had not yet started).
      record = {'status': 'preempted', 'error': ''}
    elif WORKDIR_BUSY in text:
      # Not a failure of the point: another process trains it right now.
      record = {'status': 'busy', 'error': '', 'note': _tail(stderr)}
    else:
      record = {'status': 'failed', 'error': _cause(text, slot) + _tail(stderr)}
    record['attempts'] = attempts
    (folder / sweepdir.RUN_FILE).write_text(json.dumps(record, indent=2) + '\n')
    summary = sweepdir.read_json(folder / 'summary.json')
    result = (f', eval_top1 {summary["eval_top1"]:.4f}'
              if record['status'] == 'completed' and 'eval_top1' in summary
              else ': another process is training it; not started here'
              if record['status'] == 'busy'
              else f': {record["error"].splitlines()[-1]}' if record['error']
              else '')
    with self.lock:  # The tables as each point ends: a run cut short keeps them.
      results.write_tables(self.sweep, self.workdir,
                           results.collect(self.sweep, self.workdir))
    self._say(f'[{self.done}/{self.total}] {point.name}: {record["status"]}'
              f' after {seconds:.0f} s{result}')


def _signal_name(signum) -> str:
  try:
    return f'signal {signal.Signals(signum).name}'
  except ValueError:
    return f'signal {signum}'


def _child_setup(parent: int, cpus: tuple[int, ...]):
  """What a point's process does before it runs main: die with the runner
  (SIGTERM, so that it saves a checkpoint, however the runner dies, kill -9
  included), and keep to its cores."""
  try:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):  # Not Linux: no parent-death signal.
    prctl = None

  def setup():
    if prctl is not None:
      prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
      if os.getppid() != parent:  # The runner died before the call.
        os._exit(preemption.PREEMPTED_EXIT_CODE)
    if cpus:
      os.sched_setaffinity(0, cpus)
  return setup


def _cause(stderr: str, slot: placement.Slot) -> str:
  """A failure's cause in words, where stderr shows a known one."""
  if any(marker in stderr for marker in OUT_OF_MEMORY):
    return (f'out of memory on {slot.describe()} (lower batch_size or'
            ' --points_per_device):\n')
  return ''


def _tail(lines: list[str]) -> str:
  """The end of stderr without progress-bar redraws."""
  text = ''.join(lines).replace('\r', '\n')
  kept = [l.rstrip() for l in text.splitlines()
          if l.strip() and not l.lstrip().startswith('train:')]
  return '\n'.join(kept[-STDERR_TAIL_LINES:]) or '(no output on stderr)'


def run_sweep(sweep_file: str, workdir: str, *, parallel: int = 0,
              devices: str = 'auto', points_per_device: int = 1,
              sets=(), seeds=(), stop_after_s: float = 0,
              print_commands: bool = False, collect_only: bool = False,
              vmap_seeds: bool = False) -> int:
  """Everything `python -m alexnet_jax.sweep` does; returns its exit status:
  0 every point completed, 1 some point failed, 75 preempted (UserError for
  a bad sweep file, workdir or device request, before any point starts)."""
  sweep = spec.only_seeds(spec.load(sweep_file, spec.parse_sets(sets)), seeds)
  workdir = Path(workdir).expanduser().absolute()
  if print_commands and collect_only:
    raise UserError('--print_commands and --collect_only exclude each other:'
                    ' print the commands, run them, then collect.')
  if stop_after_s < 0:
    raise UserError(f'--stop_after_s must be 0 (no limit) or more, got'
                    f' {stop_after_s}.')
  slots = []
  if vmap_seeds and not collect_only:
    check_vmap_seeds(sweep)
  if not (print_commands or collect_only):
    slots = place(sweep, devices, parallel, points_per_device,
                  seeds_per_process=len({p.seed for p in sweep.points})
                  if vmap_seeds else 1)
  lock = sweepdir.claim_workdir(sweep, workdir)
  if print_commands:
    lock.release()
    _print(job_array(sweep, workdir))
    return 0
  status = 0
  if not collect_only:
    record_run(workdir, slots)
    runner = Runner(sweep, workdir, slots, vmap_seeds=vmap_seeds)
    signals = [signal.SIGTERM, signal.SIGINT] + (
        [signal.SIGALRM] if stop_after_s else [])
    previous = {s: signal.signal(s, runner.stop) for s in signals}
    if stop_after_s:  # A time window ends like a preemption: resumable.
      signal.setitimer(signal.ITIMER_REAL, stop_after_s)
    try:
      runner.run()
    finally:
      signal.setitimer(signal.ITIMER_REAL, 0)
      for s, handler in previous.items():
        signal.signal(s, handler)
    status = preemption.PREEMPTED_EXIT_CODE if runner.stopping else 0
  runs = results.collect(sweep, workdir)
  results.write_results(sweep, workdir, runs)
  lock.release()
  print((workdir / 'results.md').read_text())
  counts = {s: sum(r['status'] == s for r in runs)
            for s in dict.fromkeys(r['status'] for r in runs)}
  print(f'sweep: {", ".join(f"{n} {s}" for s, n in counts.items())};'
        f' results in {workdir}/results.md, results.csv, curves.png, final.png')
  if status == 0 and any(r['status'] != 'completed' for r in runs):
    status = 1
  return status


def check_vmap_seeds(sweep: spec.Sweep) -> None:
  """UserError, before any point starts, where --vmap_seeds cannot train a
  point's seeds in one program (run/seeds.py says what it takes)."""
  for point in sweep.points:
    config = spec.point_config(sweep, point)
    if (config.strategy not in VMAP_STRATEGIES or config.sharding_rules
        or config.mesh.model != 1):
      raise UserError(
          f'--vmap_seeds trains the seeds of a point in one program, which'
          f' takes strategy {" or ".join(VMAP_STRATEGIES)} with mesh.model=1 and'
          f' no sharding_rules; the point {point.group or point.name} has'
          f' strategy={config.strategy}, mesh.model={config.mesh.model}'
          f'{", sharding_rules=" + repr(config.sharding_rules) if config.sharding_rules else ""}.'
          ' Nothing was started. Run without --vmap_seeds, or override those'
          ' keys (--set strategy=data --set mesh.model=1).')


def place(sweep: spec.Sweep, devices: str, parallel: int,
          points_per_device: int, gpus=None,
          seeds_per_process: int = 1) -> list[placement.Slot]:
  """The slots of this sweep on this machine (placement.plan), checked to
  fit (a process of several seeds takes about that many times a point's
  memory); UserError before anything starts."""
  gpus = placement.find_gpus() if gpus is None else gpus
  configs = [spec.point_config(sweep, p) for p in sweep.points]
  need = max(placement.device_need(c) for c in configs)
  slots = placement.plan(devices, need=need, parallel=parallel,
                         points_per_device=points_per_device, gpus=gpus,
                         cpus=sorted(os.sched_getaffinity(0)))
  if slots and slots[0].gpus and points_per_device > 1:
    placement.check_fits(slots, gpus, _largest_point_bytes(sweep, need)
                         * seeds_per_process, points_per_device)
  return slots


def _largest_point_bytes(sweep: spec.Sweep, need: int) -> int:
  """run/memory.py's floor for the sweep's largest point, traced in a child
  process on the CPU: the runner itself never starts JAX (nor takes GPU
  memory from its points)."""
  code = ('import json, sys; from alexnet_jax.tools.sweeps import runner;'
          ' print(runner.largest_point_floor(*json.loads(sys.argv[1])))')
  env = placement.Slot(host_devices=need).env(
      dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  proc = subprocess.run(
      [sys.executable, '-c', code, json.dumps([sweep.path, sweep.extra])],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  if proc.returncode != 0 or not proc.stdout.strip().isdigit():
    raise UserError('Could not estimate the memory of the sweep\'s points'
                    f' (exit {proc.returncode}): {_tail([proc.stderr])}'
                    .replace('\n', ' '))
  return int(proc.stdout.strip())


def largest_point_floor(sweep_file: str, extra: dict) -> int:
  """Bytes per device of the largest point (memory.estimate), on this
  process's CPU devices."""
  import jax  # pylint: disable=import-outside-toplevel
  from alexnet_jax.core.parallel import make_mesh  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run import memory  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  sweep = spec.load(sweep_file, extra)
  largest, seen = 0, set()
  for point in sweep.points:
    settings = Settings.from_config(spec.point_config(sweep, point))
    key = repr(settings.model) + repr(settings.mesh) + str(settings.data.batch_size)
    if key not in seen:
      seen.add(key)
      mesh = make_mesh(settings.mesh, devices=jax.devices('cpu'))
      largest = max(largest, memory.estimate(settings, mesh).per_device)
  return largest


def record_run(workdir: Path, slots: list[placement.Slot]) -> None:
  """DIR/run.json: the command, the hardware and versions, the date."""
  gpus = {g.index: g for g in placement.find_gpus()}
  used = sorted({i for s in slots for i in s.gpus})
  hardware = (', '.join(f'{gpus[i].name}' for i in used) if used and all(
      i in gpus for i in used) else _cpu_name(len({c for s in slots for c in s.cpus})))
  versions = {}
  for package in ('jax', 'jaxlib', 'flax', 'optax', 'tensorflow',
                  'tensorflow-cpu', 'orbax-checkpoint'):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  try:
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], check=False,
                            capture_output=True, text=True, timeout=10,
                            cwd=Path(__file__).parent).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    commit = ''
  record = {'command': shlex.join([Path(sys.executable).name, '-m',
                                   'alexnet_jax.sweep', *sys.argv[1:]]),
            'hardware': hardware, 'placement': [s.describe() for s in slots],
            'date': datetime.datetime.now(datetime.UTC).isoformat(
                timespec='seconds'),
            'commit': commit, 'python': platform.python_version(),
            'versions': versions}
  (workdir / sweepdir.RUN_RECORD).write_text(json.dumps(record, indent=2) + '\n')


def _cpu_name(cores: int) -> str:
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return f'{cores}-core {line.split(":", 1)[1].strip()} (CPU)'
  except OSError:
    pass
  return f'{cores}-core {platform.processor() or "CPU"} (CPU)'


def job_array(sweep: spec.Sweep, workdir: Path) -> str:
  """A bash script that is a SLURM job array, one task per point:
  `sbatch [--gres=gpu:1 ...] FILE`; `bash FILE` runs every point in turn."""
  cwd = shlex.quote(os.getcwd())
  lines = [f'cd {cwd} && {shlex.join(sweep.command(p, workdir))}'
           for p in sweep.points]
  name = Path(sweep.path).stem
  return '\n'.join([
      '#!/bin/bash',
      f'# The {len(lines)} points of {sweep.path}, one per array task:',
      '#   sbatch [--gres=gpu:1 --time=...] THIS_FILE',
      '# (resources on the sbatch line win over the lines below). A task cut',
      '# short resumes from its checkpoints when resubmitted; collect with',
      (f'#   python -m alexnet_jax.sweep --sweep={sweep.path}'
       f' --workdir={workdir} --collect_only'),
      f'#SBATCH --job-name=sweep-{name}',
      f'#SBATCH --array=0-{len(lines) - 1}',
      '#SBATCH --ntasks=1',
      f'#SBATCH --output={workdir}/slurm-%A_%a.log',
      'points=(',
      *(f'  {shlex.quote(line)}' for line in lines),
      ')',
      'if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then',
      '  eval "${points[SLURM_ARRAY_TASK_ID]}"',
      'else  # Not under SLURM: every point, one after another.',
      '  status=0',
      '  for point in "${points[@]}"; do eval "$point" || status=1; done',
      '  exit "$status"',
      'fi',
  ]) + '\n'


def _print(text: str) -> None:
  try:
    sys.stdout.write(text)
    sys.stdout.flush()
  except BrokenPipeError:
    # A reader that stopped early (`| head`) is not the sweep's error; the
    # interpreter would flush again at exit, into the closed pipe.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
