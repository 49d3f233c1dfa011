"""The one exception type a user sees: a paragraph that says what to do."""


class UserError(Exception):
  """A problem the user can fix (config, devices, dataset, files).

  Entry points print the message as one paragraph and exit with status 2,
  without a traceback. Raise it before anything compiles.
  """
