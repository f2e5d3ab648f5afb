"""orbax's event loops, quiet once closed.

orbax runs each save and restore on a fresh asyncio loop and closes it when the
operation ends. When one fails (a damaged checkpoint on restore, a full disk during
an asynchronous save), tensorstore reads and writes still in flight call back into
that closed loop from their own threads, and each callback prints a `RuntimeError:
Event loop is closed` traceback although the error itself is reported (cli.run_main:
one line). `install()` makes every loop created afterwards drop such callbacks.
"""

from __future__ import annotations

import asyncio
import logging


class _QuietClosedLoop(asyncio.SelectorEventLoop):
  """A loop that ignores callbacks arriving after it was closed."""

  def call_soon_threadsafe(self, *args, **kwargs):
    if self.is_closed():
      return None
    return super().call_soon_threadsafe(*args, **kwargs)

  def call_exception_handler(self, context):
    if self.is_closed():  # 'Task exception was never retrieved' of the same operations
      logging.debug("After a failed checkpoint operation: %s", context.get("message"))
      return
    super().call_exception_handler(context)


class _QuietLoopPolicy(asyncio.DefaultEventLoopPolicy):
  def new_event_loop(self):
    return _QuietClosedLoop()


def install() -> None:
  """Process-wide, from now on (a background save creates its loop later, on its own
  thread, so a policy held only around the call would miss it). Idempotent."""
  if not isinstance(asyncio.get_event_loop_policy(), _QuietLoopPolicy):
    asyncio.set_event_loop_policy(_QuietLoopPolicy())
