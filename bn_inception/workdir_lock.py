"""`<workdir>/.lock`: one live trainer per workdir (flock), and who holds it.

Two trainers in one workdir would interleave checkpoints and metrics; the second one
is refused, naming the first. The kernel drops the lock when its process dies,
however it dies, so a crashed run never leaves a stale lock. Where flock is
unavailable (not POSIX) nothing is locked.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from typing import Optional

from bn_inception.workdir import WorkdirBusyError, lock_path

try:
  import fcntl
except ImportError:  # not POSIX
  fcntl = None


def _holder(fd: int) -> str:
  return os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown process"


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Hold `<workdir>/.lock` while training in `workdir`; WorkdirBusyError (nothing
  changed) when a live run holds it. Only process 0 locks (the others write nothing
  of their own)."""
  import jax  # loaded already by the trainer that locks
  if fcntl is None or jax.process_index() != 0:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = lock_path(workdir)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusyError(
          f"{workdir} is in use by another training run ({_holder(fd)}; lock {path}). Wait "
          f"for it to finish or stop it, or use another --workdir. Nothing was changed.")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                  f"{datetime.datetime.now().isoformat(timespec='seconds')}".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock


def workdir_holder(workdir: str) -> Optional[str]:
  """Who holds `<workdir>/.lock` now ('pid 12 on host since ...'), or None when no live
  training run does. A probe: it takes the lock for an instant and gives it back, so a
  run starting at that very instant could be refused (and would say so)."""
  if fcntl is None:
    return None
  try:
    fd = os.open(lock_path(workdir), os.O_RDONLY)
  except OSError:  # no lock file (never trained here), or not a local path
    return None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return _holder(fd)
    return None
  finally:
    os.close(fd)
