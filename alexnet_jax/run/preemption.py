"""SIGTERM (what schedulers send) and Ctrl-C: save at the next step, then exit.

A signalled run saves a checkpoint at the current step, writes summary.json
with its status and exits with PREEMPTED_EXIT_CODE (SIGTERM) or
INTERRUPTED_EXIT_CODE (Ctrl-C); the same command resumes there. A second
Ctrl-C stops at once, without saving.
"""

from collections.abc import Callable
import dataclasses
import os
import signal
import sys

import numpy as np

# Exit status of a run stopped by SIGTERM after saving (EX_TEMPFAIL: run the
# same command again to resume), and by Ctrl-C after saving (128 + SIGINT).
PREEMPTED_EXIT_CODE = 75
INTERRUPTED_EXIT_CODE = 130
SAVED_EXIT_CODES = (PREEMPTED_EXIT_CODE, INTERRUPTED_EXIT_CODE)


class Preempted(Exception):
  """Stopped by a signal after saving: args are (step, status)."""

  @property
  def exit_code(self) -> int:
    return INTERRUPTED_EXIT_CODE if self.args[1] == 'interrupted' else PREEMPTED_EXIT_CODE


def finishing() -> None:
  """From here the process exits on its own with its status (the run is
  saved and its summary written): a SIGTERM now, a scheduler's or a job's
  end, must not turn that status into 143 during the teardown."""
  signal.signal(signal.SIGTERM, signal.SIG_IGN)


@dataclasses.dataclass
class Stopper:
  """While entered, turns SIGTERM and Ctrl-C into a save at the next step.

  `say` prints a line to the user (above the progress bar).
  """
  say: Callable[[str], None] = lambda message: print(message, file=sys.stderr)
  status: str | None = None  # 'preempted' or 'interrupted' once signalled.

  def __enter__(self):
    self._old = {s: signal.signal(s, self._handle)
                 for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.status == 'interrupted':
      print('\nSecond Ctrl-C: stopped at once, without saving this step.',
            file=sys.stderr, flush=True)
      os._exit(INTERRUPTED_EXIT_CODE)  # The kernel releases the workdir lock.
    if signum == signal.SIGINT:
      self.say('Ctrl-C: saving at the next step (press again to stop at once).')
    self.status = self.status or (
        'interrupted' if signum == signal.SIGINT else 'preempted')

  def agreed(self, due: bool) -> bool:
    """Whether to stop now. Over several processes all must stop at the same
    step, so they agree (any one signalled) only at the `due` steps."""
    # Imported here: the supervising parent of a run (supervision.py) reads
    # this module's exit codes and never needs JAX.
    import jax  # pylint: disable=import-outside-toplevel
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    if jax.process_count() == 1:
      return self.status is not None
    if not due:
      return False
    flags = multihost_utils.process_allgather(
        np.int32(0 if self.status is None else 1 + (self.status == 'interrupted')))
    if flags.max() and self.status is None:
      self.status = 'interrupted' if flags.max() == 2 else 'preempted'
    return bool(flags.max())

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)
