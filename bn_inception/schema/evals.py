"""`config.evals`: the evaluator types (`EVAL_TYPES`), each with its fields' defaults
and rules, and the entries the training loop evaluates by default.

Imports only the standard library, ml_collections and the stdlib-only field_rules.py.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from bn_inception.field_rules import Rule, at_least, each, one_of, within
from bn_inception.schema.common import ConfigDict, override_fields


# `config.evals[name] = {type, fields}`: what the training loop evaluates every
# train.eval_every steps, one entry per evaluator (bn_inception/evaluators/<type>.py);
# its metrics are written as eval/<metric>. Each type: its fields' defaults, their rules.
CROP_SCHEMES = (1, 10, 144)   # crops per example of the offline evaluation (Sec. 4.2.3)
EVAL_TYPES: Dict[str, Tuple[Dict[str, Any], Dict[str, Rule]]] = {
    # accuracy, loss, top5_accuracy, nonfinite_fraction, num_examples over every eval
    # example once (central crop, the last batch padded and masked).
    "classification": ({}, {}),
    # Percentiles over the eval set of every value the model records (models.RECORDED),
    # as probe/<name>/p<q>; Fig. 1(b, c): the 15th, 50th and 85th.
    "percentiles": ({"percentiles": (15, 50, 85)},
                    {"percentiles": each(within(0, 100), min_length=1)}),
    # Offline only (scripts/evaluate.py): `crops` crops per example, probabilities
    # averaged over crops and networks; batch_size counts crops.
    "multicrop": ({"crops": (1,), "batch_size": 256},
                  {"crops": each(one_of(*CROP_SCHEMES), min_length=1),
                   "batch_size": at_least(1, "crops per global batch")}),
}
OFFLINE_EVAL_TYPES = ("multicrop",)


def eval_config(type_name: str, **overrides) -> ConfigDict:
  """One `config.evals` entry of evaluator type `type_name`, with its defaults."""
  if type_name not in EVAL_TYPES:
    raise KeyError(f"Unknown evaluator type {type_name!r}; known: {sorted(EVAL_TYPES)}.")
  e = ConfigDict({"type": type_name, **EVAL_TYPES[type_name][0]})
  return override_fields(e, f"eval_config({type_name!r})", overrides)


def evals_config() -> ConfigDict:
  """`config.evals`: the whole-eval-split classification metrics and Figure 1's probe
  (which reports nothing for a model that records nothing)."""
  e = ConfigDict()
  e.eval = eval_config("classification")
  e.probe = eval_config("percentiles")
  return e

