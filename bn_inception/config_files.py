"""Loading a Python config or sweep file, with a failure reported as one line.

`--config=configs/x.py:arg` runs `get_config("arg")` of that file (as ml_collections'
config_flags does); a sweep file runs `get_sweep(arg)`. Any exception while importing the
file or calling the function -- a SyntaxError, a NameError, a failed import, a ValueError
of the config itself -- becomes a `ConfigFileError` naming the file and the line in it:

  configs/x.py:12: SyntaxError: invalid syntax

Stdlib and ml_collections only: loading a config must not pay for JAX or TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import traceback
from typing import Any, Optional, Tuple


class ConfigFileError(ValueError):
  """A config or sweep file that is missing or fails to load; the message is one line."""


def split_spec(spec: str) -> Tuple[str, Optional[str]]:
  """'path/file.py:arg' -> ('path/file.py', 'arg'); 'path/file.py' -> (path, None)."""
  path, sep, arg = spec.partition(".py:")
  if sep:
    return path + ".py", arg
  return spec, None


def _one_line(text: str) -> str:
  return " ".join(text.split())


def _where(e: BaseException, full: str, shown: str) -> str:
  """'shown:LINE: Type: message' for the innermost frame inside the file, plus where it
  was raised when that is elsewhere (a module the file imports or calls)."""
  frames = traceback.extract_tb(e.__traceback__)
  if isinstance(e, SyntaxError) and e.filename and e.lineno:
    frames.append(traceback.FrameSummary(e.filename, e.lineno, ""))
  same = lambda f: os.path.abspath(f.filename) == full
  inside = [f for f in frames if same(f)]
  message = str(e)
  if isinstance(e, SyntaxError) and e.filename and same(frames[-1]):
    message = e.msg  # its own line is named in front already
  where = f"{shown}:{inside[-1].lineno}" if inside else shown
  if inside and not same(frames[-1]) and not isinstance(e, SyntaxError):
    where += f" (raised at {_display(frames[-1].filename)}:{frames[-1].lineno})"
  return f"{where}: {type(e).__name__}: {_one_line(message)}"


def _display(path: str) -> str:
  rel = os.path.relpath(path)
  return path if rel.startswith("..") else rel


def load(spec: str, function: str = "get_config", full_path: Optional[str] = None,
         shown: Optional[str] = None, required: bool = True) -> Any:
  """`function()` (or `function(arg)` for 'file.py:arg') of the Python file `spec`.

  full_path: where the file is, when `spec`'s path is not relative to the working
  directory (sweep files may be repo-relative); shown: its name in messages.
  required=False: None when the file defines no `function` (an optional hook).
  """
  path, arg = split_spec(spec)
  full = os.path.abspath(full_path or path)
  shown = shown or path
  if not os.path.isfile(full):
    raise ConfigFileError(f"config file {shown} not found"
                          + ("" if os.path.isabs(path) else f" (from {os.getcwd()})") + ".")
  name = "_config_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(full))[0])
  module_spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(module_spec)
  sys.modules[name] = module  # while it runs (dataclasses look their module up)
  try:
    module_spec.loader.exec_module(module)
    fn = getattr(module, function, None)
    if fn is None and not required:
      return None
    if not callable(fn):
      raise ConfigFileError(f"{shown} defines no {function}() function.")
    return fn() if arg is None else fn(arg)
  except ConfigFileError:
    raise
  except Exception as e:  # anything the file raises: its line, in one message
    raise ConfigFileError(_where(e, full, shown)) from e
  finally:
    sys.modules.pop(name, None)



def load_config(spec: str, full_path: Optional[str] = None, shown: Optional[str] = None):
  """The locked ConfigDict of config file `spec` ('file.py[:arg]'), as --config=<spec>
  gives it (config_flags locks it too: a misspelt field cannot be added by mistake)."""
  import ml_collections
  config = load(spec, "get_config", full_path, shown)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(f"{shown or split_spec(spec)[0]}: get_config() returned "
                          f"{type(config).__name__}, not an ml_collections.ConfigDict.")
  config.lock()
  return config
