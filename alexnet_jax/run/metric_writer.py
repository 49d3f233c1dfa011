"""Scalars out: `metrics.jsonl` (one JSON object per line) and TensorBoard
events; and back in (`read_rows`).

A resumed run re-runs the steps after its checkpoint, so `truncate` first
drops what both outputs hold past the restored step: each tells one history.
"""

import json
import logging
import math
import os
from pathlib import Path

from alexnet_jax.run import rundir


class MetricWriter:
  """Writes the same scalars to WORKDIR/metrics.jsonl and WORKDIR/tensorboard."""

  def __init__(self, workdir: str | Path, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    import tensorflow as tf  # Only the summary writer; hidden from accelerators.
    tf.config.set_visible_devices([], 'GPU')
    self._tf = tf
    workdir = Path(workdir)
    self._jsonl = open(workdir / rundir.METRICS, 'a', encoding='utf-8')
    self._tb = tf.summary.create_file_writer(
        str(workdir / rundir.TENSORBOARD))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    # JSON has no NaN/Inf: write them as null so every line stays parseable.
    record = {'step': int(step)} | {
        k: (v if math.isfinite(v) else None) for k, v in scalars.items()}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    with self._tb.as_default(step=int(step)):
      for name, value in scalars.items():
        self._tf.summary.scalar(name, value)
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def read_rows(workdir: str | Path) -> list[dict]:
  """WORKDIR/metrics.jsonl as written, one dict per line ([] if there is
  none). A line cut short by a kill is left out (the next run drops it)."""
  try:
    lines = (Path(workdir) / rundir.METRICS).read_text(encoding='utf-8').splitlines()
  except OSError:
    return []
  rows = []
  for line in lines:
    try:
      rows.append(json.loads(line))
    except ValueError:
      continue
  return rows


def truncate(workdir: str | Path, step: int) -> int:
  """Drops metrics.jsonl rows and TensorBoard events past `step`.

  Rows and events up to the restored step were written before its
  checkpoint; those after it belong to steps about to be run again. A line
  or event record cut by a kill goes too. Returns the number dropped.
  """
  workdir = Path(workdir)
  dropped = _truncate_jsonl(workdir / rundir.METRICS, step)
  for path in sorted((workdir / rundir.TENSORBOARD).glob('*tfevents*')):
    dropped += _truncate_events(path, step)
  return dropped


def _truncate_jsonl(path: Path, step: int) -> int:
  if not path.exists():
    return 0
  kept, dropped = [], 0
  for line in path.read_text(encoding='utf-8').splitlines():
    try:
      row_step = json.loads(line)['step']
    except (ValueError, KeyError, TypeError):
      dropped += 1
      continue
    if row_step <= step:
      kept.append(line)
    else:
      dropped += 1
  if dropped:
    _replace(path, lambda tmp: tmp.write_text(
        ''.join(l + '\n' for l in kept), encoding='utf-8'))
    logging.info('Dropped %d rows past step %d from %s.', dropped, step, path)
  return dropped


# A TFRecord's bytes besides its data: length (8) and two CRCs (4 each).
_FRAMING = 16


def _truncate_events(path: Path, step: int) -> int:
  """Rewrites one event file without the events past `step`.

  TensorBoard would otherwise show both histories: it purges "orphaned"
  events only at a `SessionLog.START` (which TF2's summary writer never
  writes), and its fast loader (the Rust data server) not at all. The kept
  records are copied byte for byte.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow.core.util import event_pb2  # pylint: disable=import-outside-toplevel
  kept, dropped, length = [], 0, 0
  try:
    for record in tf.data.TFRecordDataset(str(path)):
      record = record.numpy()
      length += _FRAMING + len(record)
      if event_pb2.Event.FromString(record).step <= step:
        kept.append(record)
      else:
        dropped += 1
  except tf.errors.DataLossError:  # A record cut by a kill: the file's end.
    length = -1
  if length != path.stat().st_size:  # Cut short inside a record's header.
    dropped += 1
  if dropped:
    def write(tmp):
      with tf.io.TFRecordWriter(str(tmp)) as out:
        for record in kept:
          out.write(record)
    _replace(path, write)
    logging.info('Dropped %d events past step %d from %s.', dropped, step, path)
  return dropped


def _replace(path: Path, write) -> None:
  """`write(tmp)`, then renames tmp over `path` (a kill leaves either whole).

  The temporary name has no 'tfevents' in it, so TensorBoard never reads it.
  """
  tmp = path.with_name(f'.{os.getpid()}.truncating')
  write(tmp)
  os.replace(tmp, path)
