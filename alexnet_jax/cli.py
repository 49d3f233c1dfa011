"""What every command-line entry point shares: flag errors, host devices, exits.

A problem the user can fix ends the program with one paragraph on stderr and
exit status 2, never a traceback, and always before anything compiles.
"""

import json
import os
import sys
import textwrap

from absl import app
from absl import flags

from alexnet_jax import validation
from alexnet_jax.errors import UserError

USER_ERROR_EXIT_CODE = 2


def fail(message: str) -> None:
  print('\n'.join(textwrap.wrap(f'error: {message}', width=100)), file=sys.stderr)
  sys.exit(USER_ERROR_EXIT_CODE)


def run(main, config_flag) -> None:
  """`absl.app.run` with flag and config errors turned into one paragraph."""

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      config = None
      try:
        config = config_flag.value
      except Exception:  # pylint: disable=broad-except
        pass
      if config is None:
        config = _default_config()
      fail(validation.explain_flag_error(str(e), config))

  def guarded(argv):
    try:
      main(argv)
    except UserError as e:
      fail(str(e))

  app.run(guarded, flags_parser=parse)


def _default_config():
  try:
    from configs import default  # pylint: disable=import-outside-toplevel
    return default.get_config()
  except ImportError:
    return None


def provide_host_devices(config) -> None:
  """On CPU, gives JAX as many host devices as the mesh needs (before it starts).

  Has no effect on GPUs or TPUs, nor when XLA_FLAGS already sets a count.
  """
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return
  import jax  # pylint: disable=import-outside-toplevel
  data = config.mesh.data if config.mesh.data > 0 else 1
  jax.config.update('jax_num_cpu_devices', max(1, data * config.mesh.model))


def check(config, workdir: str | None = None) -> None:
  """Validates `config` against the devices there are; raises UserError."""
  provide_host_devices(config)
  import jax  # pylint: disable=import-outside-toplevel
  validation.validate(config, num_devices=jax.device_count(),
                      num_processes=jax.process_count(), workdir=workdir)


def format_summary(summary: dict) -> str:
  return 'summary: ' + json.dumps(summary)
