"""SIGTERM/SIGINT as a request to stop at the next checkpoint (a scheduler's preemption).

Used by the training loop (finish the step, checkpoint, exit cleanly) and by the sweep
runner (pass the signal to the running member, start no other).
"""

from __future__ import annotations

import signal
from typing import Optional


class StopSignals:
  """While entered, SIGTERM/SIGINT are remembered in `received` and passed on to `child`
  (a running subprocess.Popen, when a caller sets one); on exit the previous handlers
  return. Off the main thread signals cannot be caught and are left alone."""

  def __init__(self):
    self.received: Optional[int] = None
    self.child = None
    self._previous = {}

  def __enter__(self) -> "StopSignals":
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signum
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signum)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
