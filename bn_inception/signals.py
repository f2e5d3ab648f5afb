"""SIGTERM/SIGINT as a request to stop at the next checkpoint (a scheduler's preemption).

Used by the training loop (finish the step, checkpoint, exit cleanly) and by the sweep
runner (pass the signal to the running member, start no other).

* First signal: remembered in `received` (and passed on to `child`). While
  `interrupt` is set (start-up: loading data, compiling, restoring; nothing to save
  yet) it also raises `Stopped` at once, so a long start-up ends promptly, cleanly.
* Second signal: aborts the process at once, so a save or an evaluation that hangs
  never needs `kill -9`. After the first signal the default action is restored, so
  the kernel ends the process even while its main thread is stuck in native code
  (where no Python handler could run); exit status 128 + signum in a shell (143, 130).
  A runner with a `child` keeps its handler to pass the second signal on, then exits
  with that status. What is on disk stays consistent: orbax writes each checkpoint to
  a tmp dir and renames it only once complete, so the last complete checkpoint is kept
  and an unfinished one is ignored and cleaned up on the next start
  (docs/reliability.md).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


_interrupted_by: Optional[int] = None  # the signal that raised `Stopped`, if any


def interrupted_by() -> Optional[int]:
  """The signal that raised `Stopped` in this process, or None. Native code that a
  signal interrupts (an import's C extension, say) can turn the `Stopped` raised in
  its callback into an error of its own; callers check this before reporting one."""
  return _interrupted_by


class Stopped(BaseException):
  """A stop signal arrived during start-up. A BaseException, like KeyboardInterrupt,
  so that no `except Exception` on the way (a data loader's, orbax's) swallows it."""

  def __init__(self, signum: Optional[int]):
    super().__init__(signal.Signals(signum).name if signum else
                     "a stop signal to another process of this run")
    self.signum = signum


class StopSignals:
  """While entered, SIGTERM/SIGINT are remembered in `received` and passed on to `child`
  (a running subprocess.Popen, when a caller sets one); on exit the previous handlers
  return. Off the main thread signals cannot be caught and are left alone.

  `interrupt=True` raises `Stopped` from the first signal (start-up); a second
  signal always aborts at once (the module docstring says why that is safe).
  """

  def __init__(self, interrupt: bool = False):
    self.received: Optional[int] = None
    self.interrupt = interrupt
    self.child = None
    self._previous = {}

  def __enter__(self) -> "StopSignals":
    for sig in SIGNALS:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def reinstall(self) -> None:
    """Take the signals back after a library installed its own handler (e.g.
    jax.distributed.initialize's preemption notifier takes SIGTERM)."""
    for sig in self._previous:
      if self.received is None:
        signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    name = signal.Signals(signum).name
    if self.received is not None:  # only with a child: see below
      print(f"aborted: second stop signal ({name}).", file=sys.stderr, flush=True)
      if self.child is not None and self.child.poll() is None:
        self.child.send_signal(signum)
      os._exit(128 + signum)
    self.received = signum
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signum)
    else:  # the next one ends this process at once, whatever its main thread is doing
      for sig in self._previous:
        signal.signal(sig, signal.SIG_DFL)
    if self.interrupt:
      global _interrupted_by
      _interrupted_by = signum
      raise Stopped(signum)
    print(f"{name}: stopping after this step with a checkpoint; {name} again aborts at "
          "once (keeping the last complete checkpoint).", file=sys.stderr, flush=True)

  def check(self) -> None:
    """Raise `Stopped` if a signal has arrived (for the end of an `interrupt` phase)."""
    if self.received is not None:
      raise Stopped(self.received)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
