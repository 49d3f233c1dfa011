"""Scalars out: `metrics.jsonl` (one JSON object per line) and TensorBoard events."""

import json
import math
from pathlib import Path


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
    self._jsonl = open(workdir / 'metrics.jsonl', 'a', encoding='utf-8')
    self._tb = tf.summary.create_file_writer(str(workdir / 'tensorboard'))

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
