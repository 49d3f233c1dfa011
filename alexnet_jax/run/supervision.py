"""Runs over several processes (`jax.distributed`): joining, the same config
everywhere, and a supervising parent that names a lost or missing peer.

    python -m alexnet_jax.main ... --coordinator_address=HOST:PORT \\
        --num_processes=N --process_id=I

Without those flags, the command finds its peers by itself where JAX's
cluster detection does (jax/_src/clusters): under `srun` (SLURM), `mpirun`
(Open MPI) and on every worker of a Cloud TPU slice (GCE or GKE). The
parent reads the same environment variables, without JAX (`from_cluster`).

Exit statuses of such a run: LOST_PEER_EXIT_CODE (69) when a peer was lost
during the run, NOT_JOINED_EXIT_CODE (68) when one never joined.
"""

import dataclasses
import json
import os
from pathlib import Path
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
  num_processes: int = 1  # 0: not known before JAX asks the cluster (TPU).
  process_id: int = 0
  cluster: str = ''  # The scheduler that started it ('slurm', ...); '': flags.

  @property
  def several(self) -> bool:
    return self.num_processes != 1


def define_process_flags():
  """Flags for runs over several processes, e.g. one per host or per GPU;
  without them, what the cluster's environment says (`from_cluster`)."""
  holders = (
      flags.DEFINE_string('coordinator_address', '', 'host:port of process 0'
                          ' for jax.distributed; empty: one process, or what'
                          ' SLURM, Open MPI or a Cloud TPU slice says.'),
      flags.DEFINE_integer('num_processes', 1, 'Processes in the run.'),
      flags.DEFINE_integer('process_id', 0, 'This process, 0..num_processes-1.'),
  )
  return lambda: (Processes(*(h.value for h in holders))
                  if holders[0].value else from_cluster(os.environ))


# What JAX's cluster detection reads (jax/_src/clusters/*.py, jax 0.10.2).
_SLURM = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS',
          'SLURM_PROCID', 'SLURM_LOCALID')
_GOOGLE_PCI_VENDOR = '0x1ae0'  # A TPU chip, as jax's hardware_utils finds one.


def from_cluster(env) -> Processes:
  """The processes a scheduler started, read from its environment `env`.

  SLURM (under `srun`: one process per task) and Open MPI say the count and
  this process's rank; JAX derives the coordinator from them. On a Cloud TPU
  VM only JAX knows the workers (the VM's metadata): count 0. Anything else,
  or a count of one, is a single process.
  """
  if all(k in env for k in _SLURM):
    count, rank, cluster = env['SLURM_NTASKS'], env['SLURM_PROCID'], 'slurm'
  elif 'OMPI_MCA_orte_hnp_uri' in env:
    count, rank = env['OMPI_COMM_WORLD_SIZE'], env['OMPI_COMM_WORLD_RANK']
    cluster = 'ompi'
  elif 'TPU_WORKER_HOSTNAMES' in env or 'TPU_PROCESS_ADDRESSES' in env or (
      _tpu_chips() and 'TPU_SKIP_MDS_QUERY' not in env):
    count, rank, cluster = 0, 0, 'tpu'
  else:
    return Processes()
  count, rank = int(count), int(rank)
  return Processes('', count, rank, cluster) if count != 1 else Processes()


def _tpu_chips() -> bool:
  try:
    return any(p.read_text().strip() == _GOOGLE_PCI_VENDOR
               for p in Path('/sys/bus/pci/devices').glob('*/vendor'))
  except OSError:
    return False


def _local_device_ids(processes: Processes, env) -> list[int] | None:
  """Which GPUs of its node this process drives.

  JAX gives process SLURM_LOCALID (or Open MPI's local rank) that one GPU:
  right for one process per GPU. A process alone on its node (srun
  --ntasks-per-node=1) drives every GPU SLURM gave the node.
  """
  if processes.cluster == 'slurm':
    alone = _tasks_on_node(env.get('SLURM_STEP_TASKS_PER_NODE', ''),
                           int(env.get('SLURM_NODEID', 0))) == 1
    gpus = env.get('SLURM_GPUS_ON_NODE', '')
  elif processes.cluster == 'ompi':
    alone = env.get('OMPI_COMM_WORLD_LOCAL_SIZE') == '1'
    gpus = ''
  else:
    return None
  visible = env.get('CUDA_VISIBLE_DEVICES', '')
  count = int(gpus) if gpus.isdigit() else len(visible.split(',')) if visible else 0
  return list(range(count)) if alone and count else None


def _tasks_on_node(tasks_per_node: str, node: int) -> int:
  """SLURM's '2(x3),1' (2 tasks on each of 3 nodes, then 1): node `node`'s."""
  counts = []
  for part in filter(None, tasks_per_node.split(',')):
    match = re.fullmatch(r'(\d+)(?:\(x(\d+)\))?', part)
    if not match:
      return 0
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts[node] if node < len(counts) else 0


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
  me = (f'process {processes.process_id} of {processes.num_processes}'
        if processes.num_processes else 'this process')
  where = processes.coordinator_address or (
      f'the coordinator JAX found from {_CLUSTERS[processes.cluster]}')
  handled = (0, cli.USER_ERROR_EXIT_CODE, preemption.PREEMPTED_EXIT_CODE)
  if status not in handled and _never_joined(log):
    print(cli.paragraph(
        f'error: {me} waited {initialization_timeout} s'
        f' (distributed.initialization_timeout) for {_others(processes)} to'
        f' join the run at {where}, in vain: it was'
        ' not started, was started with another --coordinator_address or'
        ' --num_processes, or cannot reach that address. Nothing was'
        f' trained. {_how_to_start(processes)}, within'
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
      f' at {where}; {_first_error(log)}). Run the'
      ' same command on every host to resume from the last complete'
      ' checkpoint. What this process printed as it failed is in'
      f' {_save_log(log, processes)}.'),
        file=sys.stderr)
  return LOST_PEER_EXIT_CODE


_CLUSTERS = {'slurm': "SLURM's environment", 'ompi': "Open MPI's environment",
             'tpu': "the Cloud TPU slice's metadata", '': 'the flags'}


def _how_to_start(processes: Processes) -> str:
  """How to start every process of the run, as its launcher does."""
  if processes.cluster == 'slurm':
    return (f'Start it with srun, which runs one process per task on every'
            f' node (SLURM_NTASKS={processes.num_processes}; a batch script'
            ' that runs python itself starts only one)')
  if processes.cluster == 'ompi':
    return 'Start it with mpirun -n N, one process per rank'
  if processes.cluster == 'tpu':
    return ('Start the same command on every worker of the slice (gcloud'
            ' compute tpus tpu-vm ssh NAME --worker=all --command=...)')
  return ('Start the same command on every host, each with its own'
          f' --process_id (0 to {processes.num_processes - 1})')


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
  if not processes.num_processes:
    return 'the other workers'
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
  if not processes.cluster and not (
      0 <= processes.process_id < processes.num_processes):
    raise UserError(f'--process_id={processes.process_id} must be in'
                    f' [0, --num_processes={processes.num_processes}).')
  # Under a scheduler JAX finds the coordinator (and, on TPU, the rest).
  given = lambda x: None if processes.cluster else x
  jax.distributed.initialize(
      given(processes.coordinator_address),
      given(processes.num_processes) or None, given(processes.process_id),
      local_device_ids=_local_device_ids(processes, os.environ),
      initialization_timeout=settings.run.initialization_timeout,
      heartbeat_timeout_seconds=settings.run.heartbeat_timeout,
      shutdown_timeout_seconds=settings.run.shutdown_timeout)
  check_same_config(settings, Processes(
      processes.coordinator_address, jax.process_count(), jax.process_index(),
      processes.cluster))


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
