"""Checkpoints (orbax CheckpointManager) and the workdir's config contract.

A checkpoint holds the whole TrainState (step, params, BN statistics, optimizer
state) and a small JSON record of the data position. The training order is a
function of (seed, step), so the step is all the data order needs to resume.

Reliability (docs/reliability.md): orbax writes each step to
`<step>.orbax-checkpoint-tmp-*` and renames it when complete, so a crash leaves
at most a tmp dir, which is ignored and cleaned up. The JSON record carries a
CRC32 of every array, because orbax restores garbled (not truncated) array files
silently. Restore checks the stored shapes against the model first (a clear
error naming the parameter), then falls back over older steps when the newest is
damaged, moving damaged ones aside to `checkpoints/damaged-<step>` (never deleting).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import zlib
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

CONFIG_FILE = "config.json"

# Fields a resumed run may change without becoming a different run.
RESUMABLE_FIELDS = (
    "train.num_steps", "train.eval_every", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.eval_batch_size", "train.eval_at_start",
    "data.data_dir", "data.download_if_missing", "distributed",
    # Only what happens at a non-finite step, not the run itself: switching to 'skip'
    # after a 'stop' is how such a run goes on.
    "train.nonfinite_policy",
)
DAMAGED_PREFIX = "damaged-"


class CheckpointError(Exception):
  """No usable checkpoint, or one that does not fit this model."""


class WorkdirConfigError(Exception):
  """The workdir holds a run with a different configuration."""


class WorkdirBusyError(WorkdirConfigError):
  """Another live process is training in this workdir."""


LOCK_FILE = ".lock"


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Hold `<workdir>/.lock` (flock) while training in `workdir`.

  Two trainers in one workdir would interleave checkpoints and metrics; the
  second one is refused, naming the first. The kernel drops the lock when its
  process dies, however it dies, so a crashed run never leaves a stale lock.
  Only process 0 locks (the others write nothing of their own); where flock is
  unavailable (not POSIX) nothing is locked.
  """
  try:
    import fcntl
  except ImportError:
    fcntl = None
  if fcntl is None or jax.process_index() != 0:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown process"
      raise WorkdirBusyError(
          f"{workdir} is in use by another training run ({holder}; lock {path}). Wait "
          f"for it to finish or stop it, or use another --workdir. Nothing was changed.")
    import datetime
    import socket
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                  f"{datetime.datetime.now().isoformat(timespec='seconds')}".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


def _flat(config_dict) -> dict:
  return {".".join(k): v for k, v in traverse_util.flatten_dict(config_dict).items()}


def check_or_save_config(workdir: str, config, save: bool = True) -> None:
  """Save config.json into a new workdir; refuse a workdir holding another run.

  With save=False only check, so a launch that fails validation (bad batch,
  missing data) leaves no config.json that would refuse the corrected command.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  current = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (OSError, ValueError) as e:
      raise WorkdirConfigError(
          f"{path} is unreadable ({e}); it records which configuration this workdir's run "
          "used. Restore it, or use a new --workdir. Nothing was changed.") from e
    a, b = _flat(saved), _flat(current)
    keys = [k for k in sorted(set(a) | set(b)) if k not in RESUMABLE_FIELDS]
    diffs = [f"  {k}: {a[k]!r} in the workdir, {b[k]!r} now"
             for k in keys if k in a and k in b and a[k] != b[k]]
    # A field added to (or dropped from) the code since the run started is not a
    # different run: refusing it would strand every workdir at each code change.
    for k in keys:
      if (k in a) != (k in b) and save and jax.process_index() == 0:
        msg = (f"WARNING: config field {k} is new since this run started; using {b[k]!r}."
               if k in b else f"WARNING: config field {k} (={a[k]!r} in the workdir) no "
               "longer exists; ignoring it.")
        logging.warning(msg)
        print(msg, flush=True)
    if diffs:
      raise WorkdirConfigError(
          f"{workdir} holds a run with a different configuration:\n" + "\n".join(diffs) +
          "\nUse a new --workdir, or rerun with the saved settings to resume. "
          "Nothing was changed.")
  if save and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(current, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _path_str(path) -> str:
  """'params/dense0/kernel' for both a TrainState path and orbax's stored dict path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _host_copy(x) -> Optional[np.ndarray]:
  """The whole array on this host, or None if this host holds only part of it."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      return None
    x = x.addressable_data(0)  # replicated: any local copy is the whole array
  return np.asarray(x)


def state_checksums(state) -> Dict[str, str]:
  """CRC32 of every array of the state, keyed by its path (for the JSON record)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    a = _host_copy(leaf)
    if a is not None:
      raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)  # any dtype, no copy
      out[_path_str(path)] = f"{zlib.crc32(raw) & 0xffffffff:08x}"
  return out


def shape_mismatches(stored_tree, abstract_state) -> list:
  """Lines naming every array whose path or shape differs between checkpoint and model."""
  stored = {_path_str(p): tuple(m.shape) for p, m in
            jax.tree_util.tree_flatten_with_path(stored_tree)[0]}
  wanted = {_path_str(p): tuple(a.shape) for p, a in
            jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  lines = [f"  {k}: checkpoint {stored[k]}, model {wanted[k]}"
           for k in sorted(set(stored) & set(wanted)) if stored[k] != wanted[k]]
  lines += [f"  {k}: in the checkpoint {stored[k]}, not in the model"
            for k in sorted(set(stored) - set(wanted))]
  lines += [f"  {k}: in the model {wanted[k]}, not in the checkpoint"
            for k in sorted(set(wanted) - set(stored))]
  return lines


class _QuietClosedLoop(asyncio.SelectorEventLoop):
  """After a failed restore, tensorstore reads still in flight call back into
  orbax's (by then closed) event loop and print 'Event loop is closed'
  tracebacks; drop those callbacks instead."""

  def call_soon_threadsafe(self, *args, **kwargs):
    if self.is_closed():
      return None
    return super().call_soon_threadsafe(*args, **kwargs)

  def call_exception_handler(self, context):
    if self.is_closed():  # 'Task exception was never retrieved' of the same reads
      logging.debug("After a failed restore: %s", context.get("message"))
      return
    super().call_exception_handler(context)


class _QuietLoopPolicy(asyncio.DefaultEventLoopPolicy):
  def new_event_loop(self):
    return _QuietClosedLoop()


@contextlib.contextmanager
def _quiet_event_loops():
  previous = asyncio.get_event_loop_policy()
  asyncio.set_event_loop_policy(_QuietLoopPolicy())
  try:
    yield
  finally:
    asyncio.set_event_loop_policy(previous)


class Checkpointer:
  """orbax CheckpointManager with an explicit interval and retention, and fallback restore.

  owner=True (the training run) may delete unfinished tmp dirs of a killed run and
  move damaged checkpoints aside; a reader (an evaluator, perhaps running beside
  the trainer) must not, as the tmp dir may be the trainer's save in progress.
  """

  def __init__(self, workdir: str, every_steps: int, keep: int, *, owner: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.owner = owner
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps, max_to_keep=keep, create=True,
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
      msg = (f"WARNING: checkpoint dir for step {step} already exists (unusable); moved "
             f"it to {dst} and saving step {step} afresh.")
      logging.warning(msg)
      print(msg, flush=True)
      self.manager.reload()

  def _check_shapes(self, step: int, abstract_state):
    """Raise CheckpointError naming every parameter whose stored shape differs.

    Returns quietly when the metadata cannot be read (then the checkpoint is
    treated as damaged by the restore that follows)."""
    try:
      with _quiet_event_loops():
        stored = self.manager.item_metadata(step)["state"]
      stored = getattr(stored, "tree", stored)
    except Exception:  # unreadable metadata: a damaged checkpoint, handled below
      return
    if stored is None:
      return
    lines = shape_mismatches(stored, abstract_state)
    if lines:
      raise CheckpointError(
          f"The checkpoint at step {step} in {self.directory} does not fit this model:\n"
          + "\n".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20
                                      else "")
          + "\nIt was written by a different model or optimizer configuration. Use the "
          "config it was trained with, or a new --workdir. Nothing was changed.")

  def _restore_step(self, step: int, abstract_state):
    with _quiet_event_loops():
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    state, meta = restored["state"], dict(restored["meta"])
    if int(state.step) != step or meta.get("step", step) != step:
      raise CheckpointError(f"it holds step {int(state.step)} (record: {meta.get('step')})")
    expected = meta.pop("checksums", None)
    if expected is not None:
      actual = state_checksums(state)
      bad = [k for k in sorted(set(expected) & set(actual)) if expected[k] != actual[k]]
      if bad:
        raise CheckpointError(f"checksum mismatch in {', '.join(bad[:5])}"
                              + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    return state, meta

  def restore(self, abstract_state) -> Optional[Tuple[Any, dict]]:
    """Newest usable checkpoint; older ones are tried, with a warning, if it is damaged."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    failures = []
    for step in steps:
      self._check_shapes(step, abstract_state)
      try:
        state, meta = self._restore_step(step, abstract_state)
      except Exception as e:  # orbax raises many types for damaged files.
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        failures.append((step, reason))
        logging.warning("Checkpoint at step %d in %s could not be restored (%s).",
                        step, self.directory, reason)
        continue
      for bad_step, reason in failures:
        moved = self._move_aside(bad_step) if self.owner else None
        where = f"moved to {moved}" if moved else "left in place"
        msg = (f"WARNING: checkpoint at step {bad_step} unusable ({reason}); {where}; "
               f"resuming from step {step}.")
        logging.warning(msg)
        print(msg, flush=True)
      if failures and self.owner:
        self.manager.reload()
      return state, meta
    raise CheckpointError(
        f"No usable checkpoint in {self.directory}: steps {steps} all failed to restore "
        f"(newest, step {failures[0][0]}: {failures[0][1]}). Nothing was moved or deleted; "
        "restore a backup of the directory or use a new --workdir.")

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
