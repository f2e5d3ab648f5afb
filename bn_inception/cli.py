"""Shared bits of the absl entry points: one-line errors, quiet logs, TF off the GPUs."""

from __future__ import annotations

import os
import re
import sys


def _user_errors() -> tuple:
  """Errors a user can fix: printed as one message, exit code 2, no traceback.
  Imported on first use, so --help and flag errors load no JAX or TensorFlow."""
  from bn_inception.checkpoint import CheckpointError, WorkdirConfigError
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
  try:
    return fn(*args, **kwargs)
  except _user_errors() + (_non_finite_error(),) as e:  # evaluated only once fn raises
    if os.environ.get("BN_INCEPTION_DEBUG"):
      raise
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"error: {msg}\n(set BN_INCEPTION_DEBUG=1 to see the traceback)", file=sys.stderr,
          flush=True)
    sys.exit(2)


def parse_flags(argv):
  """absl flag parsing, with each bad flag reported as one line (exit status 2).

  Pass as app.run(main, flags_parser=cli.parse_flags). Without it an unknown
  --config.<field> or a config file that fails to load prints a traceback.
  """
  from absl import flags
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
      flags.FLAGS["config"].value.keys()  # config_flags defers a load error to first use
      _check_tuple_overrides(flags.FLAGS["config"])
    return rest
  except flags.Error as e:
    msg = _last_line_of_trace(str(e))
  except (AttributeError, KeyError) as e:  # ml_collections: no such field
    msg = _unknown_field_message(argv, e)
  except (OSError, TypeError, ValueError) as e:
    msg = _last_line_of_trace(str(e))
    if "Failed loading config file" in msg:
      cause = re.search(r"\[Errno \d+\].*", msg)
      msg = f"--config could not be loaded: {cause.group(0) if cause else msg}"
  print(f"error: {msg}\n(--helpfull lists every flag; configs/base.py documents the "
        "config fields.)", file=sys.stderr, flush=True)
  sys.exit(2)


def _check_tuple_overrides(config_flag):
  """config_flags parses any tuple override element by element without checking
  the element type (--config.model.hidden_units=abc gives ('abc',)): compare each
  element with the config file's default."""
  from ml_collections import config_flags
  overrides = config_flags.get_override_values(config_flag)
  if not any(isinstance(v, tuple) for v in overrides.values()):
    return
  default = config_flag.parser.parse(config_flag.config_filename)
  for path, value in overrides.items():
    if not isinstance(value, tuple):
      continue
    node = default
    for part in path.split("."):
      node = node[part]
    kinds = {type(x) for x in node} if isinstance(node, (tuple, list)) else set()
    if not kinds:
      continue
    numeric = kinds <= {int, float}
    for x in value:
      ok = (isinstance(x, (int, float)) and not isinstance(x, bool) and
            (float in kinds or isinstance(x, int))) if numeric else type(x) in kinds
      if not ok:
        raise ValueError(f"flag --config.{path}={value!r}: element {x!r} should be "
                         f"{' or '.join(sorted(k.__name__ for k in kinds))}, like the "
                         f"default {tuple(node)!r}.")


def _last_line_of_trace(msg: str) -> str:
  """config_flags pastes a whole traceback into its message: keep head and cause."""
  if "Traceback (most recent call last)" not in msg:
    return " ".join(line.strip() for line in msg.strip().splitlines() if line.strip())
  lines = [line.strip() for line in msg.splitlines() if line.strip()]
  return f"{lines[0]} {lines[-1]}"


def _unknown_field_message(argv, e) -> str:
  while isinstance(e, BaseException) and e.args:  # AttributeError(KeyError("'key'\nhint"))
    e = e.args[0]
  lines = str(e).strip("'\"").splitlines() or [""]
  key = lines[0].strip("'\"")
  hint = " ".join(line.strip() for line in lines[1:])
  detail = f"{key!r}" + (f"; {hint}" if hint else "")
  overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
  culprit = next((o for o in overrides if o.split(".")[-1] == key),
                 next((o for o in overrides if f".{key}" in o), None))
  where = f" {culprit}" if culprit else ""
  return (f"unknown config field{where} ({detail}). Only fields the config file declares "
          "can be set; check the spelling and the section (--config.<section>.<field>).")


def absl_main(run_fn):
  """The `main` of an entry point: no positional arguments, TF kept off the GPUs,
  chatty library logs dropped, and user errors as one line (`run_main`)."""
  def main(argv):
    if len(argv) > 1:
      print(f"error: unexpected arguments {argv[1:]} (flags are --name=value)",
            file=sys.stderr, flush=True)
      sys.exit(2)
    hide_gpus_from_tensorflow()
    quiet_library_logs()
    return run_main(run_fn)
  return main


def run_app(run_fn):
  """`app.run` for an entry point: one-line flag errors and `absl_main(run_fn)`."""
  from absl import app
  app.run(absl_main(run_fn), flags_parser=parse_flags)
