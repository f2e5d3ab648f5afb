"""`upgrade`: a config saved by an older version (a workdir's config.json) brought to
the current schema (bn_inception/schema/) with the behaviour that run had.

Imports only the standard library, ml_collections and schema/.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Union

from bn_inception.schema import DATASETS, MODELS, ConfigDict, evals_config, run_config

# What a config saved before a field existed did, where that differs from the
# field's default now (every other absent field takes the schema default, which
# is what the code did before the field was added): section -> field -> value or
# fn(saved config) -> value.
_OLD_BEHAVIOUR: Dict[str, Dict[str, Any]] = {
    # Before distort_on_device the photometric distortions ran on the host.
    "data": {"distort_on_device": False},
    # Before model.image_size was in every section an MLP took whatever the data
    # gave: the data's image size (ImageNet) or MNIST's 28.
    "model": {"image_size": lambda saved: saved.get("data", {}).get("image_size", 28)},
}


def _section_name(saved: Mapping[str, Any], section: str, table: Mapping[str, Any]) -> str:
  name = saved.get(section, {}).get("name")
  if name not in table:
    raise ValueError(f"The saved config's {section}.name={name!r} is not one of "
                     f"{sorted(table)}: cannot bring it to the current schema.")
  return name


def upgrade(config: Union[ConfigDict, Mapping[str, Any]]) -> ConfigDict:
  """A config saved by any earlier version (e.g. a workdir's config.json) as a
  config of the current schema that behaves as that run did.

  Each section is the current schema's (data by `data.name`, model by
  `model.name`) with the saved values over it: a field added since takes the
  value in `_OLD_BEHAVIOUR` if the old code behaved differently, else its
  default. JSON lists become the schema's tuples; fields the schema no longer
  has are kept as saved. Raises ValueError for an unknown data or model name.
  """
  saved = config.to_dict() if isinstance(config, ConfigDict) else dict(config)
  saved = _moved_to_evals(saved)
  data = DATASETS[_section_name(saved, "data", DATASETS)].section()
  model = MODELS[_section_name(saved, "model", MODELS)].section()
  out = run_config(data, model)
  for section, fields in _OLD_BEHAVIOUR.items():
    for field, value in fields.items():
      if field in out[section] and field not in saved.get(section, {}):
        out[section][field] = value(saved) if callable(value) else value
  _merge(out, saved, "")
  return out


def _moved_to_evals(saved: Dict[str, Any]) -> Dict[str, Any]:
  """A saved config from before `config.evals`: its `model.record_percentiles` (the
  loop's probe summary) becomes the probe evaluator's `percentiles`."""
  model = saved.get("model", {})
  if "evals" in saved or "record_percentiles" not in model:
    return saved
  evals = evals_config()
  evals.probe.percentiles = tuple(model["record_percentiles"])
  model = {k: v for k, v in model.items() if k != "record_percentiles"}
  return {**saved, "model": model, "evals": evals.to_dict()}


def _merge(target: ConfigDict, saved: Mapping[str, Any], where: str) -> None:
  for key, value in saved.items():
    if key not in target:
      target[key] = value
    elif isinstance(target[key], ConfigDict):
      if not isinstance(value, Mapping):
        raise ValueError(f"The saved config's {where}{key} is {value!r}, not a section.")
      _merge(target[key], value, f"{where}{key}.")
    else:
      try:
        target[key] = value  # ConfigDict keeps the field's type: list -> tuple, int -> float
      except TypeError as e:
        raise ValueError(f"The saved config's {where}{key}={value!r} does not fit the "
                         f"current field ({type(target[key]).__name__}).") from e
