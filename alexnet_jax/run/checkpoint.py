"""Checkpoints under `WORKDIR/checkpoints`, through orbax's CheckpointManager.

Each step folder holds the train state (arrays, written by tensorstore, read
back without pickle or any code execution) and a small JSON `meta` item with
the parameter shapes, so a workdir from another model is refused before
anything is restored or compiled. Kept: the last `keep_checkpoints` plus the
best by `eval_top1`. Nothing here ever deletes a checkpoint it cannot read.
`restore_params` is how evaluation, prediction and the pictures read one.
"""

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from orbax.checkpoint import checkpoint_managers

from alexnet_jax.core import model
from alexnet_jax.core import parallel
from alexnet_jax.core import train_state
from alexnet_jax.errors import UserError
from alexnet_jax.run import rundir


def param_signature(abstract_params: Any) -> dict[str, list[int]]:
  """{'conv1/kernel': [2, 11, 11, 3, 48], ...}: what must match to resume."""
  flat = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  return {
      '/'.join(str(getattr(k, 'key', k)) for k in path): list(x.shape)
      for path, x in flat
  }


MANIFEST = 'alexnet_jax_manifest.json'
# The train state's layout: 2 = step, params, opt_state (optax), rng.
FORMAT = 2


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def load_numpy(step_dir: str | Path) -> dict[str, Any]:
  """One checkpoint's train state as nested dicts of numpy arrays.

  Needs no mesh and no devices like the ones that wrote it: for looking at,
  comparing or exporting weights. Reads tensorstore files and JSON only.
  """
  path = Path(step_dir) / 'state'
  reader = ocp.PyTreeCheckpointer()
  metadata = reader.metadata(path)
  tree = getattr(metadata, 'item_metadata', metadata).tree
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return reader.restore(path, args=ocp.args.PyTreeRestore(
      restore_args=restore_args))


@dataclasses.dataclass
class Restored:
  state: Any
  step: int
  skipped: list[int]  # Newer steps that could not be read (left in place).
  # The per-step train metrics since the last logging step before `step`:
  # the first row after a resume averages the same steps as without one.
  window: list[dict[str, float]] = dataclasses.field(default_factory=list)


class Checkpointer:
  """Saves and restores the train state; refuses foreign or unreadable ones."""

  def __init__(self, workdir: str | Path, keep: int, read_only: bool = False):
    self.directory = Path(workdir).resolve() / 'checkpoints'
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(
                get_metric_fn=lambda m: m['eval_top1'], n=1,
                keep_checkpoints_without_metrics=False),
        ]),
        # Synchronous: a save has finished (and is atomic) when save() returns,
        # so SIGTERM and kill -9 never leave a half-written "latest".
        enable_async_checkpointing=False,
        create=not read_only,
        # A reader (evaluate on a live workdir) deletes and cleans up nothing.
        read_only=read_only,
    )
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=('state', 'meta'), options=options)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, signature: dict,
           metrics: dict[str, float] | None = None,
           window: list[dict[str, float]] = ()) -> None:
    try:
      self._save(step, state, signature, metrics, list(window))
    except OSError as e:  # Disk full, quota, permissions, read-only, ...
      kept = [s for s in self.steps() if s != step]
      raise UserError(
          f'Could not write the checkpoint of step {step} to {self.directory}:'
          f' {rundir.os_error_cause(e)}. The run stopped; the checkpoints'
          f' already there (steps {", ".join(map(str, kept)) or "none"}) are'
          ' intact, and an unfinished write is left only as a'
          ' *.orbax-checkpoint-tmp* folder. Fix that and run the same command'
          ' to resume.') from None
    if jax.process_index() == 0:
      problem = self.unreadable(step)
      if problem:
        raise UserError(
            f'The checkpoint of step {step} in {self.directory} was written'
            f' but does not read back ({problem}). The run stopped rather than'
            ' go on over checkpoints it could not resume from; the earlier'
            ' ones and this one are left as they are. Check the file system'
            ' of the workdir (and its path), then run the same command.')

  def unreadable(self, step: int) -> str | None:
    """Why a committed step cannot be restored, or None: every array's
    metadata is found in the merged store, as a restore would look for it.

    Reads keys, not array data, so it costs milliseconds at any model size.
    """
    path = self.directory / str(step) / 'state'
    try:
      tree = getattr(ocp.PyTreeCheckpointHandler().metadata(epath.Path(path)),
                     'tree', None)
      if tree is None:
        return f'{path} holds no array metadata'
      arrays = jax.tree.leaves(tree)
      store = ts.KvStore.open({'driver': 'ocdbt',
                               'base': f'file://{path}/'}).result()
      keys = {k.decode() for k in store.list().result()}
    except Exception as e:  # pylint: disable=broad-except
      return f'{type(e).__name__}: {" ".join(str(e).split())[:200]}'
    missing = [a.name for a in arrays
               if f'{a.name}/.zarray' not in keys and f'{a.name}/zarr.json' not in keys]
    if missing or not arrays:
      return (f'{len(missing)} of its {len(arrays)} arrays are missing from'
              f' {path}, e.g. {missing[0] if missing else "all"}')
    return None

  def _write_manifest(self, step: int) -> None:
    """Sizes and SHA-256 of every file of a finished step, to spot damage later."""
    step_dir = self.directory / str(step)
    files = {
        str(p.relative_to(step_dir)): [p.stat().st_size, _sha256(p)]
        for p in sorted(step_dir.rglob('*')) if p.is_file() and p.name != MANIFEST
    }
    tmp = step_dir / f'{MANIFEST}.tmp'
    tmp.write_text(json.dumps(files))
    tmp.rename(step_dir / MANIFEST)  # Atomic: a manifest is whole or absent.

  def damage(self, step: int) -> str | None:
    """What is wrong with a step's files, or None if they match the manifest.

    Checked before orbax reads anything, so a damaged checkpoint is named
    without a failed restore. (A step cut between orbax's rename and the
    manifest has none; orbax's own restore then decides.)
    """
    step_dir = self.directory / str(step)
    manifest = step_dir / MANIFEST
    if not manifest.exists():
      return None
    for name, (size, digest) in json.loads(manifest.read_text()).items():
      path = step_dir / name
      if not path.exists():
        return f'{path} is missing'
      if path.stat().st_size != size:
        return f'{path} has {path.stat().st_size} of its {size} bytes'
      if _sha256(path) != digest:
        return f'{path} does not match its checksum'
    return None

  def _save(self, step, state, signature, metrics, window):
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave({'step': step, 'format': FORMAT,
                                     'params': signature, 'window': window}),
        ),
        metrics=metrics,
        force=True,
    )
    self.manager.wait_until_finished()
    if jax.process_index() == 0:  # Every process's part is written by now.
      self._write_manifest(step)

  def _refuse_if_foreign(self, step: int, signature: dict) -> dict:
    """Refuses a checkpoint of another model or of an older state format;
    returns its `meta` item."""
    meta = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    if meta.get('format') != FORMAT:
      raise UserError(
          f'The checkpoint at step {step} in {self.directory} was written by an'
          ' earlier version of alexnet_jax (its train state holds a hand-written'
          ' momentum, not the optax state this version keeps), so it cannot be'
          ' resumed; it was left untouched. Use a new --workdir.')
    if meta['params'] != signature:
      diff = sorted(k for k in set(meta['params']) | set(signature)
                    if meta['params'].get(k) != signature.get(k))
      raise UserError(
          f'The workdir holds checkpoints of a different model: step {step}'
          f' in {self.directory} has other parameter shapes ({len(diff)}'
          f' differ, e.g. {diff[0]}: {meta["params"].get(diff[0])} saved vs'
          f' {signature.get(diff[0])} now). They were left untouched. Use a'
          ' new --workdir, or the config that wrote them (see config.json'
          ' in the workdir).')
    return meta

  def restore_latest(self, abstract_state: Any, signature: dict) -> Restored | None:
    """The newest checkpoint that reads back whole, or None if there is none.

    Each step's files are checked against its manifest once. The newest
    readable step must be of this model (`signature`) and format, else this
    refuses before anything is restored or compiled. A damaged newer one (a
    cut write, missing files) is reported and set aside. If every checkpoint
    is damaged this is an error, never a silent fresh start.
    """
    steps = self.steps()
    skipped = []
    for step in reversed(steps):
      damage = self.damage(step)
      if damage:
        logging.warning('Checkpoint at step %d cannot be read (%s); trying an'
                        ' older one.', step, damage)
        skipped.append(step)
        continue
      try:
        meta = self._refuse_if_foreign(step, signature)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Checkpoint at step %d in %s cannot be read (%s: %s);'
                        ' trying an older one.', step, self.directory,
                        type(e).__name__, ' '.join(str(e).split())[:300])
        skipped.append(step)
        continue
      self._set_aside(skipped)
      return Restored(state=restored['state'], step=step, skipped=skipped,
                      window=meta.get('window', []))
    if steps:
      raise UserError(
          f'None of the checkpoints in {self.directory} (steps'
          f' {", ".join(map(str, steps))}) can be read: each is damaged or'
          ' incomplete. Nothing was deleted. Move them aside to start afresh'
          ' in this workdir, or use a new --workdir.')
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unreadable step folders out of the way, keeping every byte.

    Training goes on from an older step and will save these step numbers
    again; the damaged ones go to `WORKDIR/checkpoints_damaged/STEP` for
    a person to look at.
    """
    if not steps or jax.process_index() != 0:
      return
    aside = self.directory.parent / 'checkpoints_damaged'
    aside.mkdir(exist_ok=True)
    for step in steps:
      target = aside / str(step)
      suffix = 1
      while target.exists():
        target, suffix = aside / f'{step}.{suffix}', suffix + 1
      (self.directory / str(step)).rename(target)
      logging.warning('Moved the unreadable checkpoint of step %d to %s.',
                      step, target)
    self.manager.reload()

  def close(self) -> None:
    self.manager.close()


def saved_steps(workdir: str | Path, step: int | None = None) -> list[int]:
  """The workdir's checkpoint steps; UserError if none, or not `step`.

  Reads folder names only: nothing is created or compiled.
  """
  directory = Path(workdir) / 'checkpoints'
  steps = sorted(int(p.name) for p in directory.iterdir()
                 if p.is_dir() and p.name.isdigit()) if directory.is_dir() else []
  if not steps:
    raise UserError(
        f'--workdir {workdir} holds no checkpoints (looked in {directory}).'
        ' Point --workdir at the directory a training run wrote'
        ' (python -m alexnet_jax.main --workdir=DIR), after its first'
        ' checkpoint.')
  if step is not None and step not in steps:
    raise UserError(
        f'--step={step}: there is no checkpoint of that step in {directory};'
        f' it has steps {", ".join(map(str, steps))}. Pass one of them, or'
        ' leave --step out for the latest.')
  return steps


@dataclasses.dataclass
class Weights:
  """A checkpoint's parameters, placed on `mesh` as the settings' rules say."""
  graphdef: Any
  params: Any
  step: int
  mesh: Any


def restore_params(settings, workdir: str | Path, step: int | None = None) -> Weights:
  """The parameters of checkpoint `step` (default: the latest), sharded.

  UserError if there is no such checkpoint, it is damaged, or it holds
  another model than `settings` describes. Compiles nothing. Without `step`
  it takes the newest checkpoint there is when it reads it: on a live
  workdir the run's rotation may delete the one it listed, and then it
  takes the newest again. It never writes or deletes in the workdir.
  """
  if step is not None:
    saved_steps(workdir, step)
    return _restore_params(settings, workdir, step, named=True)
  while True:
    newest = saved_steps(workdir)[-1]
    try:
      return _restore_params(settings, workdir, newest, named=False)
    except Exception:  # pylint: disable=broad-except
      if (Path(workdir) / 'checkpoints' / str(newest)).exists():
        raise
      logging.warning('The checkpoint of step %d was deleted by the run\'s'
                      ' rotation while it was read; taking the newest again.',
                      newest)


def _restore_params(settings, workdir, step: int, named: bool) -> Weights:
  mesh = parallel.make_mesh(settings.mesh)
  abstract = train_state.sharded_abstract_state(
      settings.model, settings.optimizer, settings.rules, mesh)
  ckpt = Checkpointer(workdir, settings.run.keep_checkpoints, read_only=True)
  try:
    damage = ckpt.damage(step)
    if damage:
      raise UserError(f'The checkpoint of step {step} in {ckpt.directory} is'
                      f' damaged ({damage}); evaluate another step'
                      f' ({"another " if named else ""}--step=N).')
    meta = ckpt.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    signature = param_signature(abstract.params)
    if meta.get('params') != signature:
      differ = sorted(k for k in set(meta.get('params', {})) | set(signature)
                      if meta.get('params', {}).get(k) != signature.get(k))
      raise UserError(
          f'The checkpoint of step {step} in {ckpt.directory} holds another'
          f' network than --config describes ({len(differ)} parameters'
          f' differ, e.g. {differ[0]}: {meta.get("params", {}).get(differ[0])}'
          f' saved, {signature.get(differ[0])} in the config). Pass the'
          ' config that trained it; the run\'s resolved config is'
          f' {Path(workdir) / "config.json"}.')
    restored = ckpt.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))['state']
  finally:
    ckpt.close()
  return Weights(model.graphdef(settings.model), restored.params, step, mesh)
