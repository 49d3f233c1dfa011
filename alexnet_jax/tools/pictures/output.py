"""Where pictures go: the formats, and a path checked before any work.

Figures are matplotlib `Figure` objects saved through the Agg canvas: no
pyplot, no GUI backend, nothing global set.
"""

import os
from pathlib import Path
import tempfile

from alexnet_jax.errors import UserError

FORMATS = ('.png', '.svg', '.pdf')
DPI = 150


def writable_file(path: str, formats=FORMATS) -> Path:
  """`path` if a picture can be written there, else UserError (before any work)."""
  out = Path(path)
  if out.suffix.lower() not in formats:
    raise UserError(f'--out={path} should end in one of {", ".join(formats)}'
                    ' (the picture format).')
  writable_dir(str(out.parent))
  if out.is_dir() or (out.exists() and not os.access(out, os.W_OK)):
    raise UserError(f'Cannot write {out}: it is a folder or read-only.')
  return out


def writable_dir(path: str) -> Path:
  out = Path(path)
  try:
    out.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=out).close()
  except OSError as e:
    raise UserError(f'Cannot write pictures to {out}: {e.strerror or e}; pass'
                    ' --out= a folder you can write to.') from None
  return out
