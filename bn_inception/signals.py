"""SIGTERM/SIGINT as a request to stop at the next checkpoint (a scheduler's preemption).

Used by the training loop (finish the step, checkpoint, exit cleanly) and by the sweep
runner (pass the signal to the running member, start no other).

* First signal: remembered in `received` (and passed on to `child`). What else it does
  depends on `start_up`, the phase the process is in (nothing to save yet):
  - "check" (training's start-up, every command's imports): `check()` raises `Stopped`
    at the next safe point. The handler itself never raises there: an exception raised
    into an import of a native module or into a gc callback can crash the process or be
    swallowed (both seen with TensorFlow and jaxlib).
  - "raise" (commands with no loop of their own: evaluation, export, preparation): the
    handler raises `Stopped` at once, as Ctrl-C raises KeyboardInterrupt.
  - None (the training loop): announced; the loop saves at the next agreed step.
* A `StopSignals` entered inside another inherits a stop the outer one remembered.
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
from typing import List, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


_interrupted_by: Optional[int] = None  # the signal that raised `Stopped`, if any
_active: List["StopSignals"] = []  # the entered StopSignals of this process, innermost last
START_UP_MODES = ("check", "raise", None)


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

  `start_up` ("check", "raise" or None; a caller may change it as its phase changes)
  says what a first signal does besides being remembered: the module docstring.
  """

  def __init__(self, start_up: Optional[str] = None):
    if start_up not in START_UP_MODES:
      raise ValueError(f"start_up={start_up!r}: one of {START_UP_MODES}")
    self.received: Optional[int] = None
    self.start_up = start_up
    self.child = None
    self._previous = {}

  def __enter__(self) -> "StopSignals":
    global _interrupted_by
    if _active:  # a stop the enclosing one remembered (its handlers then stay)
      self.received = _active[-1].received
    else:  # a new run of this process (tests run many)
      _interrupted_by = None
    if self.received is None:
      for sig in SIGNALS:
        try:
          self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
          pass
    _active.append(self)
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
    if self.start_up == "raise":
      self._raise()
    if self.start_up is None:
      print(f"{name}: stopping after this step with a checkpoint; {name} again aborts "
            "at once (keeping the last complete checkpoint).", file=sys.stderr, flush=True)

  def _raise(self) -> None:
    global _interrupted_by
    _interrupted_by = self.received
    raise Stopped(self.received)

  def check(self) -> None:
    """Raise `Stopped` if a signal has arrived (a safe point of a start-up)."""
    if self.received is not None:
      self._raise()

  def __exit__(self, *exc):
    _active.remove(self)
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
