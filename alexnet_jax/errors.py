"""The one exception type a user sees: a paragraph that says what to do."""


class UserError(Exception):
  """A problem the user can fix (config, devices, dataset, files).

  Entry points print the message as one paragraph and exit with status 2,
  without a traceback. Raise it before anything compiles.
  """


def shown(path) -> str:
  """A path as a message names it: bytes that are not UTF-8 (held in str as
  surrogate escapes) written as `\\x..`, as `ls -b` would, never as `\\udc..`."""
  import os  # pylint: disable=import-outside-toplevel
  return os.fsencode(str(path)).decode('utf-8', 'backslashreplace')
