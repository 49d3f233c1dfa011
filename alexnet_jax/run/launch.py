"""What a command does before anything compiles, and the train command itself.

`start` gives JAX its devices (host devices on CPU, all processes of a run
through jax.distributed) and checks the settings against them; `train` is
everything `python -m alexnet_jax.main` runs.
"""

import json
import logging
import os

from alexnet_jax.run import preemption
from alexnet_jax.run import supervision

# JAX, Flax and TensorFlow are imported inside the functions: the supervising
# parent of a run over several processes (`train`) never needs them.


def provide_host_devices(mesh, num_processes: int = 1) -> None:
  """On CPU, gives JAX as many host devices as `mesh` needs (before it starts).

  Split evenly over the processes (0: not known, as on TPU). Has no effect on GPUs or TPUs, nor when
  XLA_FLAGS already sets a count.
  """
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return
  import jax  # pylint: disable=import-outside-toplevel
  data = mesh.data if mesh.data > 0 else 1
  needed = max(1, data * mesh.model)
  jax.config.update('jax_num_cpu_devices', max(1, -(-needed // max(num_processes, 1))))


def start(settings, *, workdir: str | None = None,
          processes: supervision.Processes = supervision.Processes(),
          fits: bool = False) -> None:
  """Starts JAX (all processes, if several) and validates `settings` (a
  run.settings.Settings) against
  the devices there are; raises UserError. With `fits` (commands that train),
  also refuses a train step that cannot fit the devices' memory (memory.py,
  estimated from shapes)."""
  provide_host_devices(settings.mesh, processes.num_processes)
  import jax  # pylint: disable=import-outside-toplevel
  from alexnet_jax.core import parallel  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run import memory  # pylint: disable=import-outside-toplevel
  from alexnet_jax.run import validation  # pylint: disable=import-outside-toplevel
  if processes.several:
    supervision.initialize(processes, settings)
  validation.validate(settings, num_devices=jax.device_count(), workdir=workdir)
  if fits:
    memory.check_fits(settings, parallel.make_mesh(settings.mesh))


def train(config, workdir: str, processes: supervision.Processes) -> int:
  """`python -m alexnet_jax.main`: trains `config` in `workdir`; returns the
  exit status (preemption.py, supervision.py). A run over several processes
  first starts itself again under a supervising parent (supervision.py),
  which never imports JAX."""
  if processes.several and not supervision.supervised():
    return supervision.supervise(
        processes, config.distributed.initialization_timeout)
  from alexnet_jax.run.settings import Settings  # pylint: disable=import-outside-toplevel
  settings = Settings.from_config(config)
  start(settings, workdir=workdir, processes=processes, fits=True)
  # Brings in TensorFlow: only for a good config.
  from alexnet_jax.run import loop  # pylint: disable=import-outside-toplevel
  try:
    summary = loop.train_and_evaluate(settings, workdir)
  except preemption.Preempted as e:
    preemption.finishing()
    logging.warning('%s: saved step %s; run the same command to resume.',
                    e.args[1].capitalize(), e.args[0])
    return e.exit_code
  preemption.finishing()
  print('summary: ' + json.dumps(summary))
  return 0
