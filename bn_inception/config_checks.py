"""`validate(config)`: every config field checked once, before anything runs.

Called at the start of `train.train_and_evaluate`, for every sweep member by the
sweep runner and by the evaluator, so a value that would fail (or silently lose a
run) minutes in is one `error:` line before any data is read or anything written.
Each field's allowed values or range sit beside its default in
bn_inception/schema.py (`*_RULES`); every float, in tuples too, must be finite.
Only facts known at run time (the device count, the data's class count and image
size) are checked later, where they are known.

Imports only the standard library, registry.py and schema.py: no TensorFlow or JAX.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Tuple

from bn_inception import registry, schema


class ConfigError(ValueError):
  """A config field holds a value the training loop cannot run with."""


def _nonfinite(value) -> bool:
  if isinstance(value, float):
    return not math.isfinite(value)
  return isinstance(value, (tuple, list)) and any(_nonfinite(v) for v in value)


def nonfinite_fields(config, prefix: str = "") -> Dict[str, Any]:
  """{path: value} of the fields, in every section, holding nan or inf (alone or in
  a tuple)."""
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update(nonfinite_fields(value, f"{prefix}{key}."))
    elif _nonfinite(value):
      out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
  return out


def field_problems(config) -> List[str]:
  """One line per field of the schema's sections whose value its rule refuses."""
  out = []
  for field, table in (("data", schema.DATASETS), ("model", schema.MODELS)):
    try:
      registry.lookup(table, config[field].name, f"{field}.name")
    except ValueError as e:
      out.append(str(e))
  if out:
    return out  # the other fields' rules depend on these names
  nonfinite = nonfinite_fields(config)
  out = [f"config.{path}={value!r} must be finite (no nan or inf)."
         for path, value in nonfinite.items()]
  for section, rules in schema.section_rules(config).items():
    values = config[section] if section else config
    for field, rule in rules.items():
      path = f"{section}.{field}" if section else field
      problem = None if path in nonfinite else rule.problem(path, values[field], config)
      if problem:
        out.append(problem)
  return out


# Each check: config -> problem lines. A section with checks of its own beyond its
# fields' rules (e.g. `config.evals`) adds its function here.
SECTION_CHECKS: Tuple[Callable[..., List[str]], ...] = (field_problems,)


def problems(config) -> List[str]:
  """One line per invalid field of `config` (empty: valid)."""
  return [line for check in SECTION_CHECKS for line in check(config)]


def validate(config) -> None:
  """Raise ConfigError naming every invalid field (one line each)."""
  found = problems(config)
  if found:
    raise ConfigError(" ".join(found) + " Nothing was run.")
