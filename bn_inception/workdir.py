"""The layout of a workdir: every name in it, and the questions others ask of it.

One training run lives in one workdir:

  config.json            its configuration (written and compared by workdir_config.py)
  checkpoints/<step>     orbax checkpoints (checkpoint.py); damaged-<step> moved aside
  metrics.jsonl          one JSON row of scalars per logged step (metrics.JsonlWriter
                         writes it, `read_metrics` reads it)
  log.txt                every log line (log.<i>.txt for process i; progress.log_file)
  .lock                  held by the live trainer (workdir_lock.py)
  events.out.tfevents.*  TensorBoard (clu)

A sweep's workdir holds one run per member, <workdir>/<member>, the sweep's
`sweep.json` (sweep_runner.write_manifest: members in order, their configs and
commands) and, per member run here, <member>/sweep.log; report.py adds its report.

Nothing else spells these names. Loading this module costs only the standard library
(schema/common.py imports it); remote paths (gs://...) are read through etils.epath, and the
clean-up asks jax which process it runs in, each imported where it is used.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Dict, List, Optional, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_PREFIX = "damaged-"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
LOCK_FILE = ".lock"
PROFILE_DIR = "profile"  # jax.profiler traces (train.profile_steps), TensorBoard's profile tab
SWEEP_MANIFEST = "sweep.json"
SWEEP_LOG = "sweep.log"


class CheckpointError(Exception):
  """No usable checkpoint, or one that does not fit this model."""


class WorkdirConfigError(Exception):
  """The workdir holds a run with a different configuration, or cannot be one."""


class WorkdirBusyError(WorkdirConfigError):
  """Another live process is training in this workdir."""


def is_local(workdir: str) -> bool:
  """A path on this machine (not gs://...): lock, log file and clean-up apply."""
  return "://" not in workdir


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, CHECKPOINT_DIR)


def metrics_path(workdir: str) -> str:
  return os.path.join(workdir, METRICS_FILE)


def log_path(workdir: str, process_index: int = 0) -> str:
  return os.path.join(workdir, LOG_FILE if process_index == 0 else f"log.{process_index}.txt")


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, LOCK_FILE)


def _epath(path: str):
  from etils import epath  # only here: this module stays the standard library
  return epath.Path(path)


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
  return _epath(config_path(path)).exists()


def finished_steps(workdir: str) -> List[int]:
  """Steps of the committed checkpoints of a workdir, oldest first.

  orbax writes each step to `<step>.orbax-checkpoint-tmp-*` and renames it to
  `<step>` only once it is complete, so a step folder is a finished save (which
  may still be damaged: only a restore verifies it).
  """
  directory = _epath(checkpoint_dir(workdir))
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def saved_time(workdir: str, step: int) -> Optional[float]:
  """When checkpoint `step` of a workdir was committed (its folder's mtime), or None."""
  try:
    return _epath(os.path.join(checkpoint_dir(workdir), str(step))).stat().mtime
  except (FileNotFoundError, OSError):
    return None


# ------------------------------------------------------------------------ metrics.jsonl


def _row(line: str) -> Optional[dict]:
  """One metrics.jsonl row, or None for a blank line or one cut by a crash."""
  try:
    row = json.loads(line)
    int(row["step"])
  except (ValueError, KeyError, TypeError):
    return None
  return row


def read_metrics(workdir: str) -> Dict[int, dict]:
  """{step: {metric: value}} of a run's metrics.jsonl (empty when it has none); a later
  row for the same step (after a resume) wins per metric."""
  out: Dict[int, dict] = {}
  try:
    with open(metrics_path(workdir)) as f:
      rows = [r for r in map(_row, f) if r is not None]
  except FileNotFoundError:
    return out
  for row in rows:
    out.setdefault(int(row.pop("step")), {}).update(row)
  return dict(sorted(out.items()))


def last_logged_step(workdir: str) -> Optional[int]:
  """The last step a run has logged (the end of its metrics.jsonl: cheap to poll)."""
  try:
    with open(metrics_path(workdir), "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 8192))
      tail = f.read().decode("utf-8", "replace").splitlines()
  except OSError:
    return None
  # The first line of the tail may be partial: a row that fails to parse is skipped.
  return next((int(r["step"]) for r in map(_row, reversed(tail)) if r is not None), None)


def sweep_members(workdir: str) -> List[dict]:
  """The members of the sweep in `workdir` as its sweep.json lists them ([] without
  one): {'name', 'config', 'overrides', 'num_steps', 'command'} each."""
  try:
    with open(os.path.join(workdir, SWEEP_MANIFEST)) as f:
      return list(json.load(f).get("members", []))
  except FileNotFoundError:
    return []


# ------------------------------------------------------------------ before and after a run


def check_workdir(workdir: str) -> None:
  """Refuse, before anything is loaded or written, a path that cannot be a workdir:
  a file, a folder under a file, one without write permission, a read-only filesystem."""
  if not is_local(workdir):  # a remote filesystem: its client reports its own errors
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


def remove_launch_leftovers(workdir: str) -> None:
  """After a launch into a workdir that did not exist before failed or was stopped
  before its first checkpoint: remove what only that launch made there -- its lock
  file, its log when it got no further than the checks (no config.json), an empty
  checkpoints/ and then the workdir when it is empty. Never anything else (a
  config.json or metrics written before a later failure stay; the retry may change
  any field then, `workdir_config.check_or_save_config`). Process 0 only; local
  paths only."""
  import jax  # already loaded by the launch this cleans up after
  if not is_local(workdir) or jax.process_index() != 0 or not os.path.isdir(workdir):
    return
  if finished_steps(workdir):
    return
  made = [lock_path(workdir)] + ([] if is_workdir(workdir) else [log_path(workdir)])
  for path in made:
    with contextlib.suppress(OSError):
      os.remove(path)
  for path in (checkpoint_dir(workdir), workdir):
    with contextlib.suppress(OSError):  # not empty (or gone): leave it
      os.rmdir(path)
