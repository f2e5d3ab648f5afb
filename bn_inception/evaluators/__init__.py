"""Evaluators, as big_vision's: `config.evals[name] = {type, fields}` names them.

Each type is one module here (bn_inception/evaluators/<type>.py) whose `create(entry,
context)` builds an evaluator from a predict_fn and data, and whose evaluator's
`run(variables)` returns numbers: it never prints or writes files. A type's fields and
their defaults are its entry in `schema.EVAL_TYPES` (the one registration line), so a
new evaluator is one new module plus that line. The training loop runs every entry of
`config.evals` at each evaluation (`create_all`, `run_all`); scripts/evaluate.py runs
the offline `multicrop` type.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Mapping

from bn_inception import config_checks, schema

PREFIX = "eval/"  # the training loop's metric names: eval/<what an evaluator returns>


def module(type_name: str):
  """The module implementing evaluator type `type_name` (a key of schema.EVAL_TYPES)."""
  if type_name not in schema.EVAL_TYPES:
    raise ValueError(f"Unknown evaluator type {type_name!r}; known: "
                     f"{', '.join(sorted(schema.EVAL_TYPES))}.")
  return importlib.import_module(f"{__name__}.{type_name}")


def create_all(evals, context) -> Dict[str, Any]:
  """name -> evaluator for every entry of a `config.evals` section."""
  problems = config_checks.eval_problems(evals)
  if problems:
    raise ValueError(" ".join(problems))
  return {name: module(entry.type).create(entry, context) for name, entry in evals.items()}


def run_all(evaluators: Mapping[str, Any], variables) -> Dict[str, float]:
  """Every evaluator's results on `variables`, named eval/<metric>, in config order."""
  out: Dict[str, float] = {}
  for evaluator in evaluators.values():
    out.update({PREFIX + k: v for k, v in evaluator.run(variables).items()})
  return out
