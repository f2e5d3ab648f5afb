"""Shared bits of the absl entry points: one-line errors, a readable console (and its
--progress flag), TF off the GPUs."""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Optional

from absl import flags

from bn_inception import progress
from bn_inception.signals import Stopped, StopSignals, interrupted_by

USER_ERROR_EXIT = 2  # bad input, an unusable checkpoint, non-finite training under 'stop'
DISK_FULL_EXIT = 3   # no space left on the device (docs/reliability.md)

_PROGRESS = flags.DEFINE_bool(
    "progress", True, "Show progress: a line per training log step, done/total with "
    "rate and ETA for evaluations and other long loops (a live bar on a terminal). "
    "--noprogress prints only results, warnings and errors.")


def _user_errors() -> tuple:
  """Errors a user can fix: printed as one message, exit code 2, no traceback.
  Imported on first use, so --help and flag errors load no JAX or TensorFlow."""
  from bn_inception.workdir import CheckpointError, WorkdirConfigError
  from bn_inception.data import DataError
  return (DataError, CheckpointError, WorkdirConfigError, ValueError, KeyError,
          FileNotFoundError)


def _non_finite_error() -> type:
  from bn_inception.train import NonFiniteError
  return NonFiniteError


def __getattr__(name: str):
  if name == "USER_ERRORS":  # cli.USER_ERRORS, resolved on first use (see _user_errors)
    return _user_errors()
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def disk_full(e: BaseException) -> bool:
  """Whether `e`, or an error it was raised from, is ENOSPC (orbax and tensorstore
  wrap it in their own exception types, some with the text only)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def _path_written(e: BaseException):
  """The file a failed write names (OSError.filename, or tensorstore's text)."""
  import re
  while e is not None:
    if isinstance(e, OSError) and e.filename:
      return e.filename
    found = re.search(r'Failed writing: "([^"]+)"', str(e))
    if found:
      return found.group(1)
    e = e.__cause__ or e.__context__
  return None


class _DropChattyLibraries:
  """orbax logs every file it writes at INFO; keep its warnings, drop the rest. Its
  errors keep their message but lose the traceback (BN_INCEPTION_DEBUG=1 keeps it),
  and a full disk, which `run_main` reports in one line, is not logged again."""

  def filter(self, record):
    import logging
    if "orbax" not in record.pathname:
      return True
    if record.levelno < logging.WARNING:
      return False
    if record.exc_info and not os.environ.get("BN_INCEPTION_DEBUG"):
      if record.exc_info[1] is not None and disk_full(record.exc_info[1]):
        return False
      record.exc_info, record.exc_text = None, None
    return "No space left on device" not in record.getMessage()


def quiet_library_logs():
  import logging
  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(_DropChattyLibraries())
  logging.getLogger("absl").addFilter(_DropChattyLibraries())


def full_console_requested() -> bool:
  """Whether the command line asked for absl's own console (--verbosity, --logtostderr,
  --alsologtostderr)."""
  f = flags.FLAGS
  return any(name in f and (f[name].present or (name != "verbosity" and f[name].value))
             for name in ("verbosity", "logtostderr", "alsologtostderr"))


def setup_console() -> None:
  """The readable console (`progress.setup_console`) as the parsed flags ask for it."""
  progress.setup_console(show_progress=_PROGRESS.value, full_console=full_console_requested())


def hide_gpus_from_tensorflow():
  """TensorFlow only feeds input here: keep it off the accelerators (and their memory)."""
  try:
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
  except Exception:  # TF missing or already initialised: nothing to hide.
    pass


def _fail(msg: str, status: int, at_once: bool = False):
  print(f"error: {msg}\n(set BN_INCEPTION_DEBUG=1 to see the traceback)", file=sys.stderr,
        flush=True)
  if at_once:  # skip interpreter shutdown, where a failed save's threads still print
    import logging
    logging.shutdown()
    sys.stdout.flush()
    os._exit(status)
  sys.exit(status)


def run_main(fn, *args, **kwargs):
  """Call fn; turn a user error into one clear line on stderr and exit status 2, a
  full disk into one line and exit status 3 (its own: the input was fine)."""
  try:
    return fn(*args, **kwargs)
  except Exception as e:
    stopped_by = interrupted_by()
    if stopped_by is not None:  # a start-up stop, disguised by native code
      raise Stopped(stopped_by) from e
    if os.environ.get("BN_INCEPTION_DEBUG"):
      raise
    if disk_full(e):
      where = _path_written(e)
      _fail(f"no space left on the device{f' (writing {where})' if where else ''}. Free "
            "space and rerun the same command: it resumes from the last complete "
            "checkpoint (an unfinished one is ignored and cleaned up).", DISK_FULL_EXIT,
            at_once=True)
    if not isinstance(e, _user_errors() + (_non_finite_error(),)):  # imported only now
      raise
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    _fail(msg, USER_ERROR_EXIT)


def stopped_line(e: Stopped) -> str:
  return (f"stopped by {e} before any training step or result; nothing was saved or "
          "changed. Rerun the same command.")


def parse_flags(argv, flag_values=None):
  """absl flag parsing, with each bad flag reported as one line (exit status 2).

  Pass as app.run(main, flags_parser=cli.parse_flags). Each config file named by a
  config flag is loaded first (`config_files.load`: a file that fails to import is one
  line naming its line) and every --config.<field>=<value> is checked against it
  (`overrides.check_flags`) before config_flags applies them.
  """
  from absl import flags
  from bn_inception import config_files, overrides
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    _check_config_flags(flag_values, argv)
    return flag_values(argv)
  except (config_files.ConfigFileError, overrides.OverrideError) as e:
    msg = str(e)
  except flags.Error as e:
    msg = " ".join(str(e).split())
  print(f"error: {msg}\n(--helpfull lists every flag; bn_inception/schema/ documents the "
        "config fields.)", file=sys.stderr, flush=True)
  sys.exit(2)


def _check_config_flags(flag_values, argv) -> None:
  """Load the config of each config flag (a file from the command line, or a
  DEFINE_config_dict default) and check the overrides of it that argv gives."""
  from ml_collections.config_flags import config_flags  # is_config_flag is not re-exported
  from bn_inception import config_files, overrides
  argv = flag_values.read_flags_from_files(argv, force_gnu=False)
  for name in list(flag_values):
    flag = flag_values[name]
    if name != flag.name or not config_flags.is_config_flag(flag):
      continue
    if isinstance(flag.parser, config_flags.ConfigFileFlagParser):
      spec = _flag_text(argv, name)
      spec = flag.default if spec is None else spec
      if not isinstance(spec, str):
        continue  # absl reports a missing required flag
      config = config_files.load_config(spec)
    else:
      config = flag.value
    overrides.check_flags(config, argv[1:], name)


def _flag_text(argv, name: str):
  """The text of the last --<name>=<text> (or --<name> <text>) in argv, or None."""
  text = None
  for i, arg in enumerate(argv[1:], 1):
    if arg == "--":
      break
    if arg.startswith((f"--{name}=", f"-{name}=")):
      text = arg.split("=", 1)[1]
    elif arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      text = argv[i + 1]
  return text


def _import_native_libraries() -> None:
  """TensorFlow (kept off the GPUs) and JAX, imported while a stop signal is only
  remembered: an exception raised into their native modules' initialisation can
  crash the process (signals.py)."""
  hide_gpus_from_tensorflow()
  importlib.import_module("jax")


def absl_main(run_fn, stop: Optional[StopSignals] = None, start_up: Optional[str] = None):
  """The `main` of an entry point: no positional arguments, TF kept off the GPUs,
  the readable console (`setup_console`), chatty library logs dropped, and
  user errors as one line (`run_main`). With `stop` (entered, start_up="check"):
  a stop during the imports ends the process before `run_fn`; `run_fn` then runs
  with `stop.start_up = start_up`."""
  def main(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]} (flags are --name=value)",
            file=sys.stderr, flush=True)
      sys.exit(2)
    setup_console()
    _import_native_libraries()
    quiet_library_logs()
    if stop is not None:
      stop.check()
      stop.start_up = start_up
    return run_main(run_fn)
  return main


def run_light_app(run_fn) -> None:
  """`app.run` for an entry point that needs neither TensorFlow nor JAX (reports of
  finished runs): the readable console and one-line errors, nothing imported early."""
  from absl import app

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    setup_console()
    quiet_library_logs()
    run_main(run_fn)
  app.run(main)


def run_app(run_fn, stopped_exit_code=lambda: 0, start_up: Optional[str] = "raise"):
  """`app.run` for an entry point: one-line flag errors and `absl_main(run_fn)`.

  SIGTERM/SIGINT before the training loop starts (imports, flag parsing, data
  loading, compiling) ends the process with one `stopped by ...` line and exit status
  `stopped_exit_code()` (a preemption: nothing to save yet); a second one aborts.
  While `run_fn` runs, a stop signal does what `start_up` says (signals.py): "raise"
  (at once: a command without a loop of its own) or "check" (`run_fn` checks it at
  its own safe points: training).
  """
  from absl import app
  with StopSignals(start_up="check") as stop:
    try:
      app.run(absl_main(run_fn, stop, start_up), flags_parser=parse_flags)
    except Stopped as e:
      print(stopped_line(e), flush=True)
      sys.exit(stopped_exit_code())
