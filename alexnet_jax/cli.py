"""What every command-line entry point shares: flag errors, host devices, exits.

A problem the user can fix ends the program with one paragraph on stderr and
exit status 2, never a traceback, and always before anything compiles.
"""

import dataclasses
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import traceback

from absl import app
from absl import flags
from absl import logging as absl_logging
import ml_collections
from ml_collections import config_flags

from alexnet_jax.errors import UserError

USER_ERROR_EXIT_CODE = 2


def fail(message: str) -> None:
  print(_wrap(f'error: {message}'), file=sys.stderr)
  sys.exit(USER_ERROR_EXIT_CODE)


def _wrap(paragraph: str) -> str:
  # Paths stay whole on one line, so they can be copied (and searched for).
  return '\n'.join(textwrap.wrap(paragraph, width=100, break_on_hyphens=False,
                                 break_long_words=False))


def define_config_flag(flag_values=flags.FLAGS, sys_argv=None):
  """`--config=FILE[:ARG]` with `--config.key=value` overrides (locked: no new
  keys). The flag reads the overrides from sys_argv, or sys.argv."""
  return config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/two_gpu.py or'
      ' configs/two_gpu.py:demo.', flag_values=flag_values, lock_config=True,
      sys_argv=sys_argv)


def config_from_args(argv: list[str]) -> ml_collections.ConfigDict:
  """The config that a command given argv (`--config=FILE[:ARG]` and
  `--config.key=value` overrides, after the program's name) would run with,
  parsed on flags of its own rather than absl's global ones: for running a
  command's steps inside another program (the tests). UserError as
  `parse_flags`."""
  flag_values = flags.FlagValues()
  config = define_config_flag(flag_values, sys_argv=argv)
  parse_flags(argv, flag_values)
  return config.value


def parse_flags(argv: list[str], flag_values=flags.FLAGS) -> list[str]:
  """Parses argv into flag_values as absl does; UserError for a config file
  that fails, an unknown flag or config key, or a value of the wrong type
  (with the nearest keys and the expected type). Returns what absl returns,
  the arguments left over."""
  spec = _config_spec(argv)
  if spec is not None:
    # Run the file once here, where a failure can be named; the flag
    # library would let a RuntimeError or SyntaxError out as a traceback.
    load_config_file(spec)
  try:
    return flag_values(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    from alexnet_jax import validation  # pylint: disable=import-outside-toplevel
    raise UserError(validation.explain_flag_error(
        str(e), argv, _load_config(argv))) from None


def run(main, config_flag) -> None:
  """`absl.app.run` with flag and config errors turned into one paragraph."""

  def parse(argv):
    try:
      return parse_flags(argv)
    except UserError as e:
      if _verbose(argv) and e.__cause__ is not None:  # The config file's own.
        _print_user_traceback(e.__cause__)
      fail(str(e))

  def guarded(argv):
    # JAX reports at INFO each backend it did not find (e.g. no TPU); keep the
    # console to what the run does.
    logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
    if not flags.FLAGS['verbosity'].present:
      absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax is chatty at INFO.
    if config_flag.value is None:
      fail('No --config given: name a config file, e.g.'
           ' --config=configs/two_gpu.py:demo (the demo) or'
           ' --config=configs/default.py (the paper\'s recipe); every setting'
           ' is listed in configs/default.py.')
    try:
      config_flag.value.get('seed')  # Loads the file: a bad path fails here.
    except OSError as e:
      fail(f'The config could not be loaded: {str(e).splitlines()[0]}'
           f' {" ".join(str(e).split()[-6:])}')
    try:
      main(argv)
    except UserError as e:
      fail(str(e))
    except KeyboardInterrupt:  # Before training began (it saves after that).
      print('\nInterrupted (Ctrl-C) before training began; nothing to save.',
            file=sys.stderr)
      sys.exit(130)

  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # tf.data's start-up notes.
  app.run(guarded, flags_parser=parse)


def _config_spec(argv: list[str]) -> str | None:
  """The value of --config (FILE[:ARG]) in argv, or None."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _verbose(argv: list[str]) -> bool:
  """--verbosity=1 (or higher) on the command line, before flags are parsed."""
  for i, arg in enumerate(argv):
    for name in ('--verbosity', '-v'):
      value = (arg.split('=', 1)[1] if arg.startswith(name + '=') else
               argv[i + 1] if arg == name and i + 1 < len(argv) else None)
      if value is not None and value.lstrip('-').isdigit():
        return int(value) >= 1
  return False


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Runs FILE's get_config(ARG) as --config=FILE[:ARG] does; UserError if it fails.

  The message names the file, the line and the error; the file's own
  traceback is the UserError's cause (printed under --verbosity=1).
  """
  path, *arg = spec.split(':', 1)
  if not os.path.isfile(path):
    raise UserError(
        f'--config={spec}: there is no file {path!r}'
        f' (looked from {os.getcwd()}). Config files are Python files such as'
        ' configs/two_gpu.py, optionally followed by :ARG (e.g. :demo).')
  try:
    module_spec = importlib.util.spec_from_file_location('_config_file', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, 'get_config'):
      raise UserError(f'The config file {path} defines no get_config(arg=None)'
                      ' function; a config file returns its'
                      ' ml_collections.ConfigDict from one, as'
                      ' configs/default.py does.')
    config = module.get_config(*arg)
  except UserError:
    raise
  except BaseException as e:  # pylint: disable=broad-except
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
      raise
    raise UserError(
        f'The config file {path} failed{_where(e, path)}: {type(e).__name__}:'
        f' {" ".join(str(e).split()) or "(no message)"}. Fix the file and run'
        ' again (--verbosity=1 prints its traceback).') from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(
        f'get_config({", ".join(map(repr, arg))}) in {path} returned'
        f' {type(config).__name__}, not an ml_collections.ConfigDict'
        f'{" (a missing return statement?)" if config is None else ""}.'
        ' Start from configs/default.py\'s get_config and change what you need.')
  return config


def _print_user_traceback(error: BaseException) -> None:
  """The traceback of a config file's error, without this module's frames."""
  report = traceback.TracebackException.from_exception(error)
  report.stack = traceback.StackSummary.from_list(
      [f for f in report.stack if f.filename != __file__
       and not f.filename.startswith('<frozen')])
  print(''.join(report.format()), end='', file=sys.stderr)


def _where(error: BaseException, path: str) -> str:
  """' at line N' of the config file where `error` arose, if it did there."""
  if isinstance(error, SyntaxError) and error.lineno:
    return f' at line {error.lineno}'
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  return f' at line {lines[-1]}' if lines else ''


def _load_config(argv: list[str]):
  """The --config file's config, without overrides (for error hints only)."""
  try:
    return load_config_file(_config_spec(argv) or '')
  except UserError:
    return None


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
  if status not in (0, USER_ERROR_EXIT_CODE, 75) and _never_joined(log):
    print(_wrap(
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
  if status in (0, USER_ERROR_EXIT_CODE, 75) or lost is None:
    sys.stderr.write(log)
    return status if status >= 0 else 128 - status
  print(_wrap(
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


def provide_host_devices(config, num_processes: int = 1) -> None:
  """On CPU, gives JAX as many host devices as the mesh needs (before it starts).

  Split evenly over the processes. Has no effect on GPUs or TPUs, nor when
  XLA_FLAGS already sets a count.
  """
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return
  import jax  # pylint: disable=import-outside-toplevel
  data = config.mesh.data if config.mesh.data > 0 else 1
  needed = max(1, data * config.mesh.model)
  jax.config.update('jax_num_cpu_devices', max(1, -(-needed // num_processes)))


def check(config, workdir: str | None = None,
          processes: Processes = Processes(), fits: bool = False) -> None:
  """Starts JAX (all processes, if several) and validates `config` against the
  devices there are; raises UserError. With `fits` (commands that train),
  also refuses a train step that cannot fit the devices' memory (memory.py,
  estimated from shapes)."""
  provide_host_devices(config, processes.num_processes)
  import jax  # pylint: disable=import-outside-toplevel
  if processes.coordinator_address:
    if not 0 <= processes.process_id < processes.num_processes:
      raise UserError(f'--process_id={processes.process_id} must be in'
                      f' [0, --num_processes={processes.num_processes}).')
    timeouts = config.distributed
    jax.distributed.initialize(
        processes.coordinator_address, processes.num_processes,
        processes.process_id,
        initialization_timeout=timeouts.initialization_timeout,
        heartbeat_timeout_seconds=timeouts.heartbeat_timeout,
        shutdown_timeout_seconds=timeouts.shutdown_timeout)
    check_same_config(config, processes)
  # Imported here: it brings in JAX and Flax, which main's supervising
  # parent process (`supervise`) never needs.
  from alexnet_jax import validation  # pylint: disable=import-outside-toplevel
  validation.validate(config, num_devices=jax.device_count(), workdir=workdir)
  if fits:
    from alexnet_jax import memory  # pylint: disable=import-outside-toplevel
    from alexnet_jax import parallel  # pylint: disable=import-outside-toplevel
    memory.check_fits(config, parallel.make_mesh(config))


# Settings that may differ between hosts (each its own disk).
_PER_HOST = ('data_dir',)


def check_same_config(config, processes: Processes) -> None:
  """Refuses processes started with different configs, naming the keys.

  Each process posts its resolved config to jax.distributed's key-value
  store and reads every other's: no collective, nothing compiled, so a
  mismatch is one paragraph instead of a collective that never matches.
  """
  from alexnet_jax import workdir  # pylint: disable=import-outside-toplevel
  client = _key_value_store()
  mine = {k: v for k, v in workdir.flatten(workdir.resolved(config)).items()
          if k not in _PER_HOST}
  client.key_value_set(f'alexnet_jax/config/{processes.process_id}',
                       json.dumps(mine, sort_keys=True))
  timeout_ms = 1000 * config.distributed.initialization_timeout
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


def format_table(header: list[str], rows: list[list[str]],
                 right: set[int]) -> list[str]:
  """Aligned console columns; the columns in `right` are right-aligned."""
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
  fmt = lambda r: '  '.join((c.rjust(w) if i in right else c.ljust(w))
                            for i, (c, w) in enumerate(zip(r, widths))).rstrip()
  return [fmt(header), fmt(['-' * w for w in widths])] + [fmt(r) for r in rows]


def format_summary(summary: dict) -> str:
  return 'summary: ' + json.dumps(summary)
