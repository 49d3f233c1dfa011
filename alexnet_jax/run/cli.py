"""What every command-line entry point shares: the --config flag and its errors.

A problem the user can fix ends the program with one paragraph on stderr and
exit status 2, never a traceback, and always before anything compiles.
Config files are Python files run with importlib (`load_config_file`), as
`--config=FILE[:ARG]` with `--config.key=value` overrides (ml_collections'
config flag, locked: no new keys).
"""

import difflib
import importlib.util
import logging
import os
import sys
import textwrap
import traceback

from absl import app
from absl import flags
from absl import logging as absl_logging
import ml_collections
from ml_collections import config_flags

from alexnet_jax.errors import UserError

USER_ERROR_EXIT_CODE = 2

# Set before TensorFlow starts, unless the user set them: no INFO lines from
# its C++ runtime, and its CPU ops (the input pipeline's) on Eigen's kernels
# rather than oneDNN's, which also silences oneDNN's start-up note.
TENSORFLOW_ENV = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0'}


def paragraph(text: str) -> str:
  # Paths stay whole on one line, so they can be copied (and searched for).
  return '\n'.join(textwrap.wrap(text, width=100, break_on_hyphens=False,
                                 break_long_words=False))


def fail(message: str) -> None:
  print(paragraph(f'error: {message}'), file=sys.stderr)
  sys.exit(USER_ERROR_EXIT_CODE)


class _ConfigFileParser(flags.ArgumentParser):
  """--config=FILE[:ARG] -> FILE's get_config(ARG), locked (load_config_file)."""

  def parse(self, argument):
    config = load_config_file(argument)
    config.lock()
    return config

  def flag_type(self):
    return 'config file'


def define_config_flag(flag_values=flags.FLAGS, sys_argv=None):
  """`--config=FILE[:ARG]` with `--config.key=value` overrides (locked: no new
  keys). The flag reads the overrides from sys_argv, or sys.argv."""
  holder = config_flags.DEFINE_config_file(
      'config', None, 'Config file, e.g. configs/two_gpu.py or'
      ' configs/two_gpu.py:demo.', flag_values=flag_values, lock_config=True,
      sys_argv=sys_argv)
  # Loaded with importlib (ml_collections' own loader uses the deprecated
  # load_module), and a failing file is named with its line.
  flag_values['config'].parser = _ConfigFileParser()
  return holder


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


def parse_flags(argv: list[str], flag_values=flags.FLAGS,
                usage: str = '') -> list[str]:
  """Parses argv into flag_values as absl does; UserError for a config file
  that fails, an unknown flag or config key, or a value of the wrong type
  (with the nearest keys and the expected type; for a command without a
  config, with its `usage`). Returns what absl returns, the arguments left
  over."""
  try:
    return flag_values(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    if usage:
      raise UserError(f"{str(e).rstrip('.')}. Usage: {usage}") from None
    raise UserError(explain_flag_error(str(e), argv, _load_config(argv))) from None


def run(main, config_flag=None, *, config_required: bool = True,
        usage: str = '') -> None:
  """`absl.app.run` with flag and config errors turned into one paragraph.

  `config_flag` (from `define_config_flag`) must be given on the command
  line unless `config_required` is False; a command without one names its
  `usage` when its flags do not parse.
  """

  def parse(argv):
    try:
      return parse_flags(argv, usage=usage)
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
    if config_flag is not None and config_required and config_flag.value is None:
      fail('No --config given: name a config file, e.g.'
           ' --config=configs/two_gpu.py:demo (the demo) or'
           ' --config=configs/default.py (the paper\'s recipe); every setting'
           ' is listed in configs/default.py.')
    try:
      main(argv)
    except UserError as e:
      fail(str(e))
    except KeyboardInterrupt:  # Before training began (it saves after that).
      print('\nInterrupted (Ctrl-C) before training began; nothing to save.',
            file=sys.stderr)
      sys.exit(130)

  for key, value in TENSORFLOW_ENV.items():
    os.environ.setdefault(key, value)
  app.run(guarded, flags_parser=parse)


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


def config_keys(config, prefix: str = '') -> list[str]:
  keys = []
  for name, value in config.items():
    full = f'{prefix}{name}'
    keys.extend(config_keys(value, full + '.') if hasattr(value, 'items')
                else [full])
  return keys


def explain_flag_error(message: str, argv: list[str], config) -> str:
  """Turns a flag parse error into advice, with near matches for unknown keys."""
  keys = config_keys(config) if config is not None else []
  for arg in argv:
    if arg.startswith('--config.') and keys:
      key = arg.removeprefix('--config.').split('=')[0]
      if key not in keys:
        near = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
        hint = (f' Did you mean {" or ".join(near)}?' if near else '')
        return (f'Unknown config key {key!r} in {arg!r}.{hint} Every key is'
                ' listed, with its type and meaning, in configs/default.py.')
  # Config files raise inside a traceback; its last line says what went wrong.
  lines = [l.strip() for l in message.strip().splitlines() if l.strip()]
  reason = lines[-1] if 'Traceback' in message else ' '.join(lines)
  return (f'The command line could not be parsed: {reason} Check the --config'
          ' file and each --config.key=value override against'
          ' configs/default.py (names and types).')


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
