"""The one reader and writer of a workdir: checkpoints (orbax) and config.json.

Nothing else opens `<workdir>/checkpoints` or `<workdir>/config.json`: training
resumes, the evaluator restores members, the sweep runner lists steps and
compares configs, all through this module, so every restore is verified the
same way (`Checkpointer`'s docstring states the fallback rules).

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
import dataclasses
import json
import logging
import os
import shutil
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from bn_inception import config_upgrade, schema
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"

# Fields a resumed run may change without becoming a different run: those that do
# not change what it computes, and how long it runs and how often it is evaluated.
RESUMABLE_FIELDS = schema.NON_RESULT_FIELDS + (
    "train.num_steps", "train.eval_every", "train.eval_at_start",
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


def remove_launch_leftovers(workdir: str) -> None:
  """After a launch into a workdir that did not exist before failed or was stopped
  before its first checkpoint: remove what only that launch made there -- its lock
  file, its log (`progress.LOG_FILE`) when it got no further than the checks (no
  config.json), an empty checkpoints/ and then the workdir when it is empty. Never
  anything else (a config.json or metrics written before a later failure stay; the
  retry may change any field then, `check_or_save_config`). Process 0 only; local
  paths only."""
  if "://" in workdir or jax.process_index() != 0 or not os.path.isdir(workdir):
    return
  if finished_steps(workdir):
    return
  from bn_inception.progress import LOG_FILE as log_file
  made = [LOCK_FILE] + ([] if is_workdir(workdir) else [log_file])
  for name in made:
    with contextlib.suppress(OSError):
      os.remove(os.path.join(workdir, name))
  for path in (os.path.join(workdir, CHECKPOINT_DIR), workdir):
    with contextlib.suppress(OSError):  # not empty (or gone): leave it
      os.rmdir(path)


def workdir_holder(workdir: str) -> Optional[str]:
  """Who holds `<workdir>/.lock` now ('pid 12 on host since ...'), or None when no live
  training run does. A probe: it takes the lock for an instant and gives it back, so a
  run starting at that very instant could be refused (and would say so)."""
  try:
    import fcntl
  except ImportError:
    return None
  try:
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDONLY)
  except OSError:  # no lock file (never trained here), or not a local path
    return None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown process"
    return None
  finally:
    os.close(fd)


def flat(tree) -> Dict[str, Any]:
  """{'section.field': value} of a nested config (ConfigDict, dict, or its JSON form)."""
  if hasattr(tree, "to_dict"):
    tree = tree.to_dict()
  return {".".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def _as_json(config) -> dict:
  """A config as config.json stores it (tuples become lists, as on a reload)."""
  return json.loads(config.to_json_best_effort())


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def split_step(text: str) -> Tuple[str, Optional[int]]:
  """'workdir' -> (workdir, None); 'workdir@STEP' -> (workdir, STEP): how a run and
  one of its checkpoints are named on command lines (evaluation, fine-tuning)."""
  head, sep, tail = text.strip().rpartition("@")
  if sep and tail.isdigit():
    return head, int(tail)
  if sep and not tail.isdigit() and "/" not in tail:
    raise ValueError(f"{text!r}: write <workdir> or <workdir>@<step> (a whole number).")
  return text.strip(), None


def is_workdir(path: str) -> bool:
  """Whether `path` holds a training run (its config.json)."""
  return epath.Path(config_path(path)).exists()


def _saved_json(workdir: str) -> dict:
  """config.json as written (JSON values), or a WorkdirConfigError naming the file."""
  path = epath.Path(config_path(workdir))
  if not is_workdir(workdir):
    raise CheckpointError(f"{workdir} has no {CONFIG_FILE}: not a training workdir "
                          f"(scripts/train.py writes it there).")
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirConfigError(
        f"{path} is unreadable ({e}); it records which configuration this workdir's run "
        "used. Restore it, or use a new --workdir. Nothing was changed.") from e


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The configuration a workdir's run was started with (its config.json), with the
  fields added since then filled as that run used them (`config_upgrade.upgrade`)."""
  return config_upgrade.upgrade(_saved_json(workdir))  # an older version's config: today's fields


@dataclasses.dataclass(frozen=True)
class ConfigDifference:
  """How a configuration differs from the one a workdir's run was started with."""
  changed: Tuple[str, ...]   # 'field: saved in the workdir, current now' (refuse the run)
  added: Tuple[str, ...]     # fields the code gained since the run started (a warning each)
  removed: Tuple[str, ...]   # fields the code dropped since (a warning each)


def config_difference(workdir: str, config) -> Optional[ConfigDifference]:
  """None for a workdir without config.json; else how `config` differs from it.

  Fields in RESUMABLE_FIELDS may change between launches of one run. A field added
  to (or dropped from) the code since the run started does not make it another run:
  refusing it would strand every workdir at each code change. An added field whose
  value now differs from how the run so far behaved (`config_upgrade.upgrade`) is named.
  """
  if not is_workdir(workdir):
    return None
  saved = flat(_saved_json(workdir))
  behaved = flat(_as_json(read_config(workdir)))
  now = flat(_as_json(config))
  keys = [k for k in sorted(set(saved) | set(now)) if k not in RESUMABLE_FIELDS]
  return ConfigDifference(
      changed=tuple(f"{k}: {saved[k]!r} in the workdir, {now[k]!r} now"
                    for k in keys if k in saved and k in now and saved[k] != now[k]),
      added=tuple(f"{k} is new since this run started; using {now[k]!r}" +
                  (f" (the run so far behaved as {behaved[k]!r})"
                   if k in behaved and behaved[k] != now[k] else "")
                  for k in keys if k in now and k not in saved),
      removed=tuple(f"{k} (={saved[k]!r} in the workdir) no longer exists; ignoring it"
                    for k in keys if k in saved and k not in now))


def check_or_save_config(workdir: str, config, save: bool = True) -> None:
  """Save config.json into a new workdir; refuse a workdir holding another run.

  With save=False only check, so a launch that fails validation (bad batch,
  missing data) leaves no config.json that would refuse the corrected command.
  """
  diff = config_difference(workdir, config)
  if diff is not None and diff.changed and not finished_steps(workdir):
    # A launch that failed before its first checkpoint (bad data, a typo) left a
    # config.json but no run: its retry may change any field.
    if save and jax.process_index() == 0:
      _warn(f"{config_path(workdir)} is from a launch that saved no checkpoint; replacing "
            f"it ({len(diff.changed)} field(s) differ: {'; '.join(diff.changed[:3])}).")
    diff = None
  if diff is not None and diff.changed:
    raise WorkdirConfigError(
        f"{workdir} holds a run with a different configuration:\n" +
        "\n".join(f"  {line}" for line in diff.changed) +
        "\nUse a new --workdir, or rerun with the saved settings to resume. "
        "Nothing was changed.")
  if diff is not None and save and jax.process_index() == 0:
    for line in diff.added + diff.removed:
      _warn(f"config field {line}.")
  if save and jax.process_index() == 0:
    path = epath.Path(config_path(workdir))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = epath.Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(_as_json(config), indent=2, sort_keys=True))
    tmp.replace(path)


def check_workdir(workdir: str) -> None:
  """Refuse, before anything is loaded or written, a path that cannot be a workdir:
  a file, a folder under a file, one without write permission, a read-only filesystem."""
  if "://" in workdir:  # a remote filesystem (gs://...): its client reports its own errors
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirConfigError(f"--workdir={workdir} is a file, not a folder. Use another "
                             "--workdir. Nothing was changed.")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirConfigError(f"--workdir={workdir} cannot be created: {existing} is a file. "
                             "Use another --workdir. Nothing was changed.")
  if not os.access(existing, os.W_OK | os.X_OK):
    readonly = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    why = "is on a read-only filesystem" if readonly else "is not writable by this user"
    raise WorkdirConfigError(f"--workdir={workdir}: {existing} {why}. Use another "
                             "--workdir. Nothing was changed.")


def _warn(msg: str) -> None:
  logging.warning(msg)  # the console shows it (progress.setup_console), log.txt keeps it


def finished_steps(workdir: str) -> List[int]:
  """Steps of the committed checkpoints of a workdir, oldest first.

  orbax writes each step to `<step>.orbax-checkpoint-tmp-*` and renames it to
  `<step>` only once it is complete, so a step folder is a finished save (which
  may still be damaged: only a restore verifies it).
  """
  directory = epath.Path(workdir) / CHECKPOINT_DIR
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def saved_time(workdir: str, step: int) -> Optional[float]:
  """When checkpoint `step` of a workdir was committed (its folder's mtime), or None."""
  path = epath.Path(workdir) / CHECKPOINT_DIR / str(step)
  try:
    return path.stat().mtime
  except (FileNotFoundError, OSError):
    return None


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
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.owner = owner
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
      _warn(f"checkpoint dir for step {step} already exists (unusable); moved it to {dst} "
            f"and saving step {step} afresh.")
      self.manager.reload()

  def _stored_state(self, step: int):
    """The stored TrainState's tree of array metadata (shapes, dtypes) at `step`."""
    with _quiet_event_loops():
      stored = self.manager.item_metadata(step)["state"]
    stored = getattr(stored, "tree", stored)
    if stored is None:
      raise CheckpointError("no array metadata")
    return stored

  def _check_shapes(self, step: int, expected, part: Callable = lambda tree: tree):
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
    with _quiet_event_loops():
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    state, meta = restored["state"], dict(restored["meta"])
    stored_step = int(state["step"] if isinstance(state, dict) else state.step)
    if stored_step != step or meta.get("step", step) != step:
      raise CheckpointError(f"it holds step {stored_step} (record: {meta.get('step')})")
    expected = meta.pop("checksums", None)
    if expected is not None:  # checkpoints of older versions have none
      actual = state_checksums(state)
      bad = sorted(k for k in actual if expected.get(k) != actual[k])
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
        _warn(f"checkpoint at step {bad_step} unusable ({reason}); {where}; "
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
    return self._restore(step, lambda s: self._check_shapes(s, abstract_state),
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
        step, lambda s: self._check_shapes(s, abstract_variables, variables_of), target)
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
