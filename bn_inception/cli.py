"""Shared bits of the absl entry points: repo on sys.path, one-line errors."""

from __future__ import annotations

import os
import sys

from bn_inception.checkpoint import CheckpointError, WorkdirConfigError
from bn_inception.data import DataError

# Errors a user can fix: printed as one message, exit code 2, no traceback.
USER_ERRORS = (DataError, CheckpointError, WorkdirConfigError, ValueError, KeyError,
               FileNotFoundError)


class _DropChattyLibraries:
  """orbax logs every file it writes at INFO; keep its warnings, drop the rest."""

  def filter(self, record):
    import logging
    return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def quiet_library_logs():
  import logging
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_DropChattyLibraries())
  logging.getLogger("absl").addFilter(_DropChattyLibraries())


def hide_gpus_from_tensorflow():
  """TensorFlow only feeds input here: keep it off the accelerators (and their memory)."""
  try:
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
  except Exception:  # TF missing or already initialised: nothing to hide.
    pass


def run_main(fn, *args, **kwargs):
  """Call fn; turn a user error into one clear line on stderr and exit status 2."""
  from bn_inception.train import NonFiniteError
  try:
    return fn(*args, **kwargs)
  except USER_ERRORS + (NonFiniteError,) as e:
    if os.environ.get("BN_INCEPTION_DEBUG"):
      raise
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"error: {msg}\n(set BN_INCEPTION_DEBUG=1 to see the traceback)", file=sys.stderr,
          flush=True)
    sys.exit(2)


def add_repo_to_path():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if root not in sys.path:
    sys.path.insert(0, root)


def absl_main(run_fn):
  """The `main` of an entry point: no positional arguments, TF kept off the GPUs,
  chatty library logs dropped, and user errors as one line (`run_main`)."""
  def main(argv):
    from absl import app
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    hide_gpus_from_tensorflow()
    quiet_library_logs()
    return run_main(run_fn)
  return main
