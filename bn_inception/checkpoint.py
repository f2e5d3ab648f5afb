"""A run's checkpoints (orbax) and the record beside each: write, list, verified restore.

Training resumes, the evaluator restores members, fine-tuning reads its source and
the TF-slim import writes its step 0, all through `Checkpointer`, so every restore is
verified the same way (its docstring states the fallback rules). The workdir's other
files and names are workdir.py's; config.json is workdir_config.py's.

A checkpoint holds the whole TrainState (step, params, BN statistics, optimizer
state) and a small JSON `record` of the data position. The training order is a
function of (seed, step), so the step is all the data order needs to resume.

Reliability (docs/reliability.md): orbax writes each step to
`<step>.orbax-checkpoint-tmp-*` and renames it when complete, so a crash leaves
at most a tmp dir, which is ignored and cleaned up. The record carries a CRC32 of
every array (checkpoint_verify.py). Restore checks the stored shapes against the
model first (a clear error naming the parameter), then falls back over older steps
when the newest is damaged, moving damaged ones aside to `checkpoints/damaged-<step>`
(never deleting).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Callable, List, Optional, Tuple

import jax
import orbax.checkpoint as ocp

from bn_inception import event_loops
from bn_inception.checkpoint_verify import (checksum_mismatches, shape_mismatches,
                                            state_checksums)
from bn_inception.workdir import (CheckpointError, DAMAGED_PREFIX, WorkdirConfigError,
                                  checkpoint_dir, finished_steps)


def record(*, step: int, seed: int, batch_size: int, nonfinite_steps: int, num_devices: int,
           train_metrics: Optional[dict] = None, eval_pending: bool = False,
           **provenance) -> dict:
  """The JSON record saved beside a checkpoint's arrays (`Checkpointer.save` adds the
  checksums). `train_metrics`: the partial train/* averages since the last logged
  row, so that the first row after a resume equals the uninterrupted run's;
  `eval_pending`: an evaluation due at this step that a stop skipped (the resumed run
  does it first); `provenance`: where imported weights came from (tfslim.py)."""
  return {"step": step, "seed": seed, "examples_seen": step * batch_size,
          "nonfinite_steps": nonfinite_steps, "num_devices": num_devices,
          "train_metrics": train_metrics, "eval_pending": eval_pending, **provenance}


def check_resume(workdir: str, abstract_state, num_steps: int) -> None:
  """Refuse, before anything is written (lock, log, config), a resume that cannot go
  on: a newest checkpoint that does not fit the model (CheckpointError naming the
  arrays) or that is past `num_steps`. Reads only."""
  steps = finished_steps(workdir)
  if not steps:
    return
  if steps[-1] > num_steps:
    raise WorkdirConfigError(
        f"config.train.num_steps={num_steps} is below the newest checkpoint's step "
        f"{steps[-1]} in {workdir}: that run is already past it. Give "
        f"--config.train.num_steps={steps[-1]} or more to go on, or use a new "
        f"--workdir. Nothing was changed.")
  reader = Checkpointer(workdir)
  try:
    reader.check_shapes(steps[-1], abstract_state)
  finally:
    reader.close()


class Checkpointer:
  """orbax CheckpointManager with an explicit interval and retention, and verified restore.

  Every restore, of the newest step or of a given one, checks the stored shapes
  against the model (a mismatch is a CheckpointError naming the arrays: another
  model's checkpoint is never restored) and the CRC32 of every array after
  reading it. Fallback rules:
  * newest (step=None): a damaged checkpoint is skipped with a warning and the
    next older one is tried; the owner (the training run) moves damaged ones
    aside to `damaged-<step>`, a reader leaves them in place. None usable: error.
  * a given step: no fallback (the caller asked for that step): a damaged or
    missing one is a CheckpointError that names it and lists the steps there are.

  owner=True (the training run) may delete unfinished tmp dirs of a killed run and
  move damaged checkpoints aside; a reader (an evaluator, perhaps running beside
  the trainer) must not, as the tmp dir may be the trainer's save in progress.
  """

  def __init__(self, workdir: str, every_steps: int = 1, keep: Optional[int] = None, *,
               owner: bool = False):
    self.directory = os.path.abspath(checkpoint_dir(workdir))
    self.owner = owner
    event_loops.install()  # a failed save or restore: no 'Event loop is closed' tracebacks
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps, max_to_keep=keep, create=owner,
            # Unfinished <step>.orbax-checkpoint-tmp-* dirs of a killed run.
            cleanup_tmp_directories=owner),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def save(self, step: int, state, meta: dict, force: bool = False) -> bool:
    if not force and not self.manager.should_save(step):
      return False
    if self.owner:
      self._move_aside_stale(step)
    meta = {**meta, "checksums": state_checksums(state)}
    return self.manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(meta)), force=force)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> List[int]:
    return sorted(self.manager.all_steps())

  def _move_aside(self, step: int) -> Optional[str]:
    """Rename checkpoints/<step> to checkpoints/damaged-<step>[.n]; return the new path."""
    src = os.path.join(self.directory, str(step))
    if not os.path.exists(src):
      return None
    dst = os.path.join(self.directory, f"{DAMAGED_PREFIX}{step}")
    n = 1
    while os.path.exists(dst):
      dst = os.path.join(self.directory, f"{DAMAGED_PREFIX}{step}.{n}")
      n += 1
    if jax.process_index() == 0:
      try:
        shutil.move(src, dst)
      except OSError as e:
        logging.warning("Could not move %s aside (%s); leaving it in place.", src, e)
        return None
    return dst

  def _move_aside_stale(self, step: int):
    """A step dir that restore skipped (damaged) would make orbax refuse this save."""
    self.manager.wait_until_finished()
    if os.path.exists(os.path.join(self.directory, str(step))):
      dst = self._move_aside(step)
      logging.warning(f"checkpoint dir for step {step} already exists (unusable); moved it to {dst} "
            f"and saving step {step} afresh.")
      self.manager.reload()

  def _stored_state(self, step: int):
    """The stored TrainState's tree of array metadata (shapes, dtypes) at `step`."""
    stored = self.manager.item_metadata(step)["state"]
    stored = getattr(stored, "tree", stored)
    if stored is None:
      raise CheckpointError("no array metadata")
    return stored

  def check_shapes(self, step: int, expected, part: Callable = lambda tree: tree):
    """Raise CheckpointError naming every array whose stored shape differs from
    `expected` (compared on `part` of the stored tree).

    Returns quietly when the metadata cannot be read (then the checkpoint is
    treated as damaged by the restore that follows)."""
    try:
      stored = self._stored_state(step)
    except Exception:  # unreadable metadata: a damaged checkpoint, handled below
      return
    lines = shape_mismatches(part(stored), expected)
    if lines:
      raise CheckpointError(
          f"The checkpoint at step {step} in {self.directory} does not fit this model:\n"
          + "\n".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20
                                      else "")
          + "\nIt was written by a different model or optimizer configuration. Use the "
          "config it was trained with, or a new --workdir. Nothing was changed.")

  def _restore_step(self, step: int, target):
    """Read one step into `target` (abstract arrays) and verify it; (state, meta)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    state, meta = restored["state"], dict(restored["meta"])
    stored_step = int(state["step"] if isinstance(state, dict) else state.step)
    if stored_step != step or meta.get("step", step) != step:
      raise CheckpointError(f"it holds step {stored_step} (record: {meta.get('step')})")
    bad = checksum_mismatches(state, meta.pop("checksums", None))
    if bad:
      raise CheckpointError(f"checksum mismatch in {', '.join(bad[:5])}"
                            + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    return state, meta

  def _restore(self, step: Optional[int], check: Callable[[int], None],
               target: Callable[[int], Any]) -> Optional[Tuple[Any, dict]]:
    """The fallback rules of the class docstring around `_restore_step`."""
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise CheckpointError(f"No checkpoint at step {step} in {self.directory}; it has "
                              f"steps {steps}.")
      check(step)
      try:
        return self._restore_step(step, target(step))
      except Exception as e:  # orbax raises many types for damaged files
        raise CheckpointError(
            f"The checkpoint at step {step} in {self.directory} is unusable "
            f"({_reason(e)}). It was asked for by step, so no other step is used instead "
            f"(steps there: {steps}). Nothing was moved or deleted.") from e
    if not steps:
      return None
    failures = []
    for s in reversed(steps):
      check(s)
      try:
        state, meta = self._restore_step(s, target(s))
      except Exception as e:  # orbax raises many types for damaged files
        failures.append((s, _reason(e)))
        logging.warning("Checkpoint at step %d in %s could not be restored (%s).",
                        s, self.directory, failures[-1][1])
        continue
      for bad_step, reason in failures:
        moved = self._move_aside(bad_step) if self.owner else None
        where = f"moved to {moved}" if moved else "left in place"
        logging.warning(f"checkpoint at step {bad_step} unusable ({reason}); {where}; "
              f"resuming from step {s}.")
      if failures and self.owner:
        self.manager.reload()
      return state, meta
    raise CheckpointError(
        f"No usable checkpoint in {self.directory}: steps {sorted(steps, reverse=True)} all "
        f"failed to restore (newest, step {failures[0][0]}: {failures[0][1]}). Nothing was "
        "moved or deleted; restore a backup of the directory or use a new --workdir.")

  def restore(self, abstract_state, step: Optional[int] = None
              ) -> Optional[Tuple[Any, dict]]:
    """(TrainState, meta) of the newest usable checkpoint, or of `step`; None when
    there is none (newest only). `abstract_state` carries the target shardings."""
    return self._restore(step, lambda s: self.check_shapes(s, abstract_state),
                         lambda s: abstract_state)

  def restore_variables(self, abstract_variables: dict, sharding,
                        step: Optional[int] = None) -> Tuple[dict, int]:
    """The model variables ({'params', 'batch_stats'?}) of the newest usable
    checkpoint, or of `step`, without the optimizer: for inference.

    The whole state is read (so every checksum is verified) onto `sharding`
    (e.g. replicated on any mesh), then everything but the variables is dropped.
    """
    def variables_of(tree):
      return {k: tree.get(k, {}) for k in abstract_variables}

    def target(s):
      return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                          self._stored_state(s))

    restored = self._restore(
        step, lambda s: self.check_shapes(s, abstract_variables, variables_of), target)
    if restored is None:
      raise CheckpointError(f"No checkpoint in {self.directory}.")
    state, meta = restored
    return variables_of(state), int(state["step"])

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def _reason(e: BaseException) -> str:
  text = str(e).splitlines()[0][:200] if str(e) else ""
  return f"{type(e).__name__}: {text}"
