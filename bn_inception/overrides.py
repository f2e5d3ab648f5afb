"""`field=value` overrides of a config: the one checker and parser for every entry point.

`--config.<field>=<value>` on any entry point with --config (`cli.parse_flags` checks
them here before ml_collections' config_flags applies them), the overrides of a sweep
member (bn_inception/sweep_runner.py) and `scripts/evaluate.py --override=<field>=<value>`
all go through this module, so a value means the same everywhere and a bad one is
refused the same way, in one line, before anything runs:

- the field must exist (else "did you mean ..."), hold a value rather than a whole
  section, and not be None (the command line cannot give a None field a type);
- command-line text is read as config_flags reads it, by the type of the field's
  current value: bool (true/false/t/f/1/0), int, float (ints too), str (the text as
  is), tuple (a Python literal; a bare value is a one-element tuple), and a tuple's
  elements must have the types of the current elements;
- a Python value (a sweep's) must have the field's type and must read back unchanged
  from its command-line text (`cli_value`), so a sweep's printed launch line and its
  in-process run are the same run.

Light: ml_collections and absl (its dependency) only.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, List, Mapping, Optional, Sequence

import ml_collections
from absl import flags
from ml_collections.config_flags import tuple_parser

_SCALAR_PARSERS = {bool: flags.BooleanParser(), int: flags.IntegerParser(),
                   float: flags.FloatParser()}


class OverrideError(ValueError):
  """An override the config cannot take; the message is one line that names it."""


# ------------------------------------------------------------------------ values as text


def cli_value(value) -> str:
  """The --config.<field>=<text> that config_flags reads back as `value`."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def format_label_value(value) -> str:
  """`value` in a run's name: 0.5 -> '0.5', 1.0 -> '1', True -> 'true', (8, 8) -> '8x8'."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (tuple, list)):
    return "x".join(format_label_value(v) for v in value)
  return str(value)


# ------------------------------------------------------------------------------- types


def _normalize(value):
  if isinstance(value, (list, tuple)):
    return tuple(_normalize(v) for v in value)
  return value


def _kind(value) -> type:
  """bool, int, float, str or tuple (lists count as tuples: config.json has no tuples)."""
  for kind in (bool, int, float, str):
    if isinstance(value, kind):
      return kind
  return tuple if isinstance(value, (list, tuple)) else type(value)


def _type_name(value) -> str:
  kind = _kind(value)
  if kind is tuple:
    kinds = sorted({_kind(x).__name__ for x in value})
    return f"a tuple of {'/'.join(kinds)}" if kinds else "a tuple"
  return {int: "an int"}.get(kind, f"a {kind.__name__}")


def _kinds_ok(value, reference) -> bool:
  """Does `value` have the type of `reference` (the field's current value)?"""
  kind = _kind(reference)
  if kind is float:
    return _kind(value) in (int, float)  # config_flags reads '2' as 2.0
  if kind is not tuple:
    return _kind(value) is kind
  if _kind(value) is not tuple:
    return False  # each element must have the type of some current element
  return not len(reference) or all(any(_kinds_ok(x, r) for r in reference) for x in value)


# ---------------------------------------------------------------------------- checking


def fields(config: ml_collections.ConfigDict, prefix: str = "") -> List[str]:
  """Every dotted field path of `config`, sections included."""
  out = []
  for key, value in config.items():
    out.append(f"{prefix}{key}")
    if isinstance(value, ml_collections.ConfigDict):
      out.extend(fields(value, f"{prefix}{key}."))
  return out


def current(config, field: str, text: Optional[str] = None, *,
            sections: Optional[Sequence[str]] = None, flag: str = "") -> Any:
  """The value `field` holds in `config`, or OverrideError saying why it cannot be set.

  sections: the top-level sections a caller allows (None: all); flag: how the field is
  written where the user wrote it ('--config.', '--override=', ''), for the message;
  text: the value as written, for the message.
  """
  shown = f"{flag}{field}" + ("" if text is None else f"={text}")
  if sections is not None and field.split(".")[0] not in sections:
    allowed = " and ".join(f"{s}.<field>" for s in sections)
    raise OverrideError(f"{shown}: only {allowed} can be overridden here.")
  node = config
  for part in field.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = difflib.get_close_matches(field, fields(config), n=3, cutoff=0.6)
      hint = f" (did you mean {', '.join(close)}?)" if close else ""
      raise OverrideError(f"unknown config field {flag}{field}{hint}; only fields the config "
                          "declares can be set.")
    node = node[part]
  if isinstance(node, ml_collections.ConfigDict):
    raise OverrideError(f"{shown}: {field} is a whole section; set its fields one by one "
                        f"(e.g. {flag}{field}.{next(iter(node.keys()), '<field>')}).")
  if node is None:
    raise OverrideError(f"{shown}: {field} is None in the config, so it cannot be overridden.")
  if _kind(node) not in (bool, int, float, str, tuple):
    raise OverrideError(f"{shown}: {field} holds a {type(node).__name__}, which cannot be "
                        "overridden.")
  return node


def _wrong_type(shown: str, field: str, node, detail: str) -> OverrideError:
  default = tuple(node) if isinstance(node, list) else node
  return OverrideError(f"{shown}: wrong type: {field} holds {_type_name(node)} "
                       f"(default {default!r}), {detail}.")


def parse(config, field: str, text: str, *, sections: Optional[Sequence[str]] = None,
          flag: str = "") -> Any:
  """The value `--config.<field>=<text>` sets, read as config_flags reads it."""
  node = current(config, field, text, sections=sections, flag=flag)
  shown = f"{flag}{field}={text}"
  kind = _kind(node)
  if kind is str:
    return text
  if kind is not tuple:
    try:
      return _SCALAR_PARSERS[kind].parse(text)
    except ValueError:
      raise _wrong_type(shown, field, node, f"and {text!r} is not one") from None
  try:
    value = tuple_parser.TupleParser().parse(text)
  except ValueError as e:
    raise OverrideError(f"{shown}: {' '.join(str(e).split())}") from None
  for x in value:
    if not _kinds_ok((x,), node):
      raise _wrong_type(shown, field, node, f"and its element {x!r} is {_type_name(x)}")
  return value


def check(config, field: str, value, *, sections: Optional[Sequence[str]] = None,
          flag: str = "") -> str:
  """The command-line text of the Python value `value` for `field` (`cli_value`), after
  checking that `field` can be set, `value` has its type, and the text reads back as it."""
  text = cli_value(value)
  node = current(config, field, text, sections=sections, flag=flag)
  if not _kinds_ok(value, node):
    raise _wrong_type(f"{flag}{field}={text}", field, node, f"not {_type_name(value)}")
  got = parse(config, field, text, sections=sections, flag=flag)
  if _normalize(got) != _normalize(value):
    raise OverrideError(f"{flag}{field}={text}: {value!r} cannot be written on the command "
                        f"line (that text reads back as {got!r}).")
  return text


# ---------------------------------------------------------------------------- applying


def apply(config: ml_collections.ConfigDict, values: Mapping[str, Any]):
  """Set checked values ({field: value}) on `config`, locked or not; returns `config`."""
  for field, value in values.items():
    *parents, last = field.split(".")
    holder = config
    for part in parents:
      holder = holder[part]
    holder[last] = value  # ConfigDict keeps the field's type: 2 -> 2.0, tuple <-> list
  return config


def apply_text(config: ml_collections.ConfigDict, items: Sequence[str], *,
               sections: Optional[Sequence[str]] = None, flag: str = ""):
  """Parse and set '<field>=<text>' items in order (the last of a repeated field wins);
  every item is checked before any is set. Returns `config`."""
  values = {}
  for item in items:
    field, sep, text = item.partition("=")
    if not sep:
      raise OverrideError(f"{flag}{item}: write <field>=<value>.")
    values[field] = parse(config, field, text, sections=sections, flag=flag)
  return apply(config, values)


def check_flags(config: ml_collections.ConfigDict, argv: Sequence[str],
                name: str = "config") -> None:
  """Check every --<name>.<field>[=<text>] in `argv` against `config` (the loaded config
  file), in config_flags' forms: `=text`, a separate text argument, or a bare (or `no`-
  prefixed) bool field. Raises OverrideError for the first bad one."""
  pattern = re.compile(rf"^--?(no)?{re.escape(name)}\.([^=]+)(?:=(.*))?$", re.S)
  flag = f"--{name}."
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    i += 1
    if arg == "--":
      return
    match = pattern.match(arg)
    if not match:
      continue
    negated, field, text = match.groups()
    node = current(config, field, text, flag=flag)
    if text is None:
      if isinstance(node, bool):
        continue
      if negated:
        raise _wrong_type(f"--no{name}.{field}", field, node, "not a bool")
      if i == len(args):
        continue  # absl reports the missing value
      text = args[i]
      i += 1
    elif negated:
      continue  # absl refuses --noname.field=text
    parse(config, field, text, flag=flag)
