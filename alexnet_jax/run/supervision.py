"""Runs over several processes (`jax.distributed`): joining, the same config
everywhere, and a supervising parent that names a lost or missing peer.

    python -m alexnet_jax.main ... --coordinator_address=HOST:PORT \\
        --num_processes=N --process_id=I

Exit statuses of such a run: LOST_PEER_EXIT_CODE (69) when a peer was lost
during the run, NOT_JOINED_EXIT_CODE (68) when one never joined.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

from absl import flags

from alexnet_jax.errors import UserError
from alexnet_jax.run import cli
from alexnet_jax.run import preemption
from alexnet_jax.run import rundir


@dataclasses.dataclass(frozen=True)
class Processes:
  """Where this process sits in a multi-process run (`jax.distributed`)."""
  coordinator_address: str = ''  # host:port of process 0; '' = one process.
  num_processes: int = 1
  process_id: int = 0


def define_process_flags():
  """Flags for runs over several processes, e.g. one per host or per GPU."""
  holders = (
      flags.DEFINE_string('coordinator_address', '', 'host:port of process 0'
                          ' for jax.distributed; empty for a single process.'),
      flags.DEFINE_integer('num_processes', 1, 'Processes in the run.'),
      flags.DEFINE_integer('process_id', 0, 'This process, 0..num_processes-1.'),
  )
  return lambda: Processes(*(h.value for h in holders))


# Exit status of a process whose peer was lost (EX_UNAVAILABLE): the run
# stopped; the same command on every host resumes from the last checkpoint.
LOST_PEER_EXIT_CODE = 69
# Exit status when not every process joined within
# distributed.initialization_timeout (EX_NOHOST): nothing was trained.
NOT_JOINED_EXIT_CODE = 68
_SUPERVISED = 'ALEXNET_JAX_SUPERVISED'
# What the child's stderr says once it is failing: kept back, not echoed.
_FAILING = re.compile(r'^(Traceback \(most recent call last\)|F\d{4} |\*\*\* |'
                      r'Fatal Python error|E\d{4} .*coordination)')


def supervised() -> bool:
  """Whether this process runs under `supervise` (or needs none)."""
  return bool(os.environ.get(_SUPERVISED))


def supervise(processes: Processes, initialization_timeout: int) -> int:
  """Runs this command again as a child process; returns its exit status.

  When a peer process dies, or never joins within `initialization_timeout`
  seconds, jax.distributed aborts the others from native code (SIGABRT, a
  C++ stack dump), which no Python handler can catch. This thin parent reads
  the child's exit status and turns that abort into one paragraph naming the
  missing process: exit status LOST_PEER_EXIT_CODE for a peer lost during the
  run, NOT_JOINED_EXIT_CODE for one that never joined. SIGTERM is passed on
  to the child; the child dies with the parent.
  """
  child = subprocess.Popen(
      [sys.executable, *sys.orig_argv[1:]], stderr=subprocess.PIPE,
      env=os.environ | {_SUPERVISED: '1'}, preexec_fn=_die_with_parent)
  forward = lambda signum, frame: child.send_signal(signum)
  signal.signal(signal.SIGTERM, forward)
  # Ctrl-C reaches the child from the terminal (same process group).
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  kept_back, failing, pending = [], False, b''
  while chunk := os.read(child.stderr.fileno(), 1 << 16):
    pending += chunk
    # Whole lines (progress bars end theirs with \r) go on as they come.
    *lines, pending = re.split(rb'(?<=[\r\n])', pending)
    for line in lines:
      text = line.decode(errors='replace')
      failing = failing or bool(_FAILING.match(text))
      if failing:
        kept_back.append(text)
      else:
        sys.stderr.write(text)
    sys.stderr.flush()
  kept_back.append(pending.decode(errors='replace'))
  status = child.wait()
  log = ''.join(kept_back)
  me = f'process {processes.process_id} of {processes.num_processes}'
  handled = (0, cli.USER_ERROR_EXIT_CODE, preemption.PREEMPTED_EXIT_CODE)
  if status not in handled and _never_joined(log):
    print(cli.paragraph(
        f'error: {me} waited {initialization_timeout} s'
        f' (distributed.initialization_timeout) for {_others(processes)} to'
        f' join the run at {processes.coordinator_address}, in vain: it was'
        ' not started, was started with another --coordinator_address or'
        ' --num_processes, or cannot reach that address. Nothing was'
        ' trained. Start the same command on every host, each with its own'
        f' --process_id (0 to {processes.num_processes - 1}), within'
        f' {initialization_timeout} s of each other, or allow longer with'
        ' --config.distributed.initialization_timeout. What this process'
        f' printed as it failed is in {_save_log(log, processes)}.'),
          file=sys.stderr)
    return NOT_JOINED_EXIT_CODE
  lost = _lost_process(log, processes)
  if status in handled or lost is None:
    sys.stderr.write(log)
    return status if status >= 0 else 128 - status
  print(cli.paragraph(
      f'error: {me} stopped because {lost} stopped answering (jax.distributed'
      f' at {processes.coordinator_address}; {_first_error(log)}). Run the'
      ' same command on every host to resume from the last complete'
      ' checkpoint. What this process printed as it failed is in'
      f' {_save_log(log, processes)}.'),
        file=sys.stderr)
  return LOST_PEER_EXIT_CODE


def _save_log(log: str, processes: Processes) -> str:
  """Keeps a failed child's output in a temporary file; returns its path."""
  with tempfile.NamedTemporaryFile(
      'w', prefix=f'alexnet_jax-process{processes.process_id}-',
      suffix='.log', delete=False) as saved:
    saved.write(log)
  return saved.name


def _never_joined(log: str) -> bool:
  """Whether the child gave up registering with the coordination service.

  Registration (the RegisterTask call) completes only once every process
  has registered, so its failure means one never came, whichever it was.
  """
  return 'CoordinationService/RegisterTask' in log


def _others(processes: Processes) -> str:
  """The processes this one waited for, in words."""
  others = [i for i in range(processes.num_processes)
            if i != processes.process_id]
  if len(others) == 1:
    return f'process {others[0]}' + (' (the coordinator)' if others[0] == 0
                                     else '')
  return f'processes {", ".join(map(str, others))} (one or more of them)'


def _lost_process(log: str, processes: Processes) -> str | None:
  """Which peer the child's failure names, or None if it is no lost peer."""
  if match := re.search(r'Task (\d+) heartbeat timeout', log):
    return f'process {match.group(1)}'
  if match := re.search(r'stopped sending heartbeats\):\s*([\d,\s]+?)\s*\n',
                        log):
    return f'process {match.group(1).strip()}'
  if match := re.search(r'Some timed out task names:\s*(\d+)', log):
    return f'process {match.group(1)} (it never reached the barrier)'
  if re.search(r'coordination service|leader task', log):
    return 'process 0 (the coordinator)'
  if 'Connection reset by peer' in log or 'Connection refused' in log:
    return 'another process'
  return None


def _first_error(log: str) -> str:
  match = re.search(r'((?:\w+Error|UNAVAILABLE|DEADLINE_EXCEEDED|INTERNAL):'
                    r' [^\n]{0,200})', log)
  return ' '.join(match.group(1).split()) if match else 'no error message'


def _die_with_parent() -> None:
  """In the child: SIGKILL when the supervising parent dies (Linux)."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass

def initialize(processes: Processes, settings) -> None:
  """Joins the run's processes through jax.distributed, then refuses any
  started with another config. Nothing is compiled."""
  import jax  # pylint: disable=import-outside-toplevel
  if not 0 <= processes.process_id < processes.num_processes:
    raise UserError(f'--process_id={processes.process_id} must be in'
                    f' [0, --num_processes={processes.num_processes}).')
  jax.distributed.initialize(
      processes.coordinator_address, processes.num_processes,
      processes.process_id,
      initialization_timeout=settings.run.initialization_timeout,
      heartbeat_timeout_seconds=settings.run.heartbeat_timeout,
      shutdown_timeout_seconds=settings.run.shutdown_timeout)
  check_same_config(settings, processes)


# Settings that may differ between hosts (each its own disk).
_PER_HOST = ('data_dir',)


def check_same_config(settings, processes: Processes) -> None:
  """Refuses processes started with different configs, naming the keys.

  Each process posts its resolved config to jax.distributed's key-value
  store and reads every other's: no collective, nothing compiled, so a
  mismatch is one paragraph instead of a collective that never matches.
  """
  client = _key_value_store()
  mine = {k: v for k, v in rundir.flatten(settings.resolved).items()
          if k not in _PER_HOST}
  client.key_value_set(f'alexnet_jax/config/{processes.process_id}',
                       json.dumps(mine, sort_keys=True))
  timeout_ms = 1000 * settings.run.initialization_timeout
  for other in range(processes.num_processes):
    theirs = json.loads(client.blocking_key_value_get(
        f'alexnet_jax/config/{other}', timeout_ms))
    differ = sorted(k for k in set(mine) | set(theirs)
                    if mine.get(k) != theirs.get(k))
    if differ:
      listing = '; '.join(f'{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here'
                          for k in differ[:5])
      raise UserError(
          f'Process {other} was started with another config than this'
          f' process {processes.process_id} ({len(differ)} setting(s) differ:'
          f' {listing}). Every process of a run must get the same --config'
          ' and --config.* flags (only config.data_dir may differ); start'
          ' them again with one command line.')


def _key_value_store():
  """This process's client of jax.distributed's key-value store.

  Private API, on purpose and only here: jax 0.10.2 exports no key-value
  store (`jax.distributed` has initialize, is_initialized and shutdown), and
  the public `multihost_utils.assert_equal` and `process_allgather` are
  collectives. They compile, and need every process to hold its share of one
  mesh, which processes with different configs (another `mesh`, so another
  device count) do not: the very case the comparison is for.
  """
  from jax._src import distributed  # pylint: disable=import-outside-toplevel
  return distributed.global_state.client
