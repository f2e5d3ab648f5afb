"""`validate(config)`: every config field checked once, before anything runs.

Called at the start of `train.train_and_evaluate`, for every sweep member by the
sweep runner and by the evaluator, so a value that would fail (or silently lose a
run) minutes in is one `error:` line before any data is read or anything written.
Each field's allowed values or range sit beside its default in
bn_inception/schema/ (`*_RULES`); every float, in tuples too, must be finite.
Only facts known at run time (the device count, the data's class count and image
size) are checked later, where they are known.

Imports only the standard library, registry.py and schema/: no TensorFlow or JAX.
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


def eval_problems(evals, offline: bool = False) -> List[str]:
  """One line per bad entry of a `config.evals` section (schema.EVAL_TYPES): an
  unknown type or field, a value its rule refuses, or (offline=False, the training
  loop) a type that runs only offline."""
  out = []
  for name, entry in evals.items():
    where, type_name = f"evals.{name}", entry["type"] if "type" in entry else None
    if type_name not in schema.EVAL_TYPES:
      out.append(f"config.{where}.type={type_name!r} is not an evaluator type; known: "
                 f"{', '.join(sorted(schema.EVAL_TYPES))}.")
      continue
    if type_name in schema.OFFLINE_EVAL_TYPES and not offline:
      out.append(f"config.{where}.type={type_name!r} runs offline (scripts/evaluate.py), "
                 f"not in the training loop.")
    defaults, rules = schema.EVAL_TYPES[type_name]
    for field in sorted(set(entry) - set(defaults) - {"type"}):
      out.append(f"config.{where}.{field} is not a field of a {type_name!r} evaluator; "
                 f"fields: {', '.join(sorted(defaults)) or 'none'}.")
    for field in sorted(set(entry) & set(rules)):
      problem = rules[field].problem(f"{where}.{field}", entry[field], None)
      if problem:
        out.append(problem)
  return out


# Each check: config -> problem lines; a section with checks beyond its fields' rules
# adds its function here.
SECTION_CHECKS: Tuple[Callable[..., List[str]], ...] = (
    field_problems, lambda config: eval_problems(config.evals))


def problems(config) -> List[str]:
  """One line per invalid field of `config` (empty: valid)."""
  return [line for check in SECTION_CHECKS for line in check(config)]


def validate(config) -> None:
  """Raise ConfigError naming every invalid field (one line each)."""
  found = problems(config)
  if found:
    raise ConfigError(" ".join(found) + " Nothing was run.")
