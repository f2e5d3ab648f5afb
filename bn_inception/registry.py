"""Registry entries: one per dataset and per model, written in bn_inception/schema/.

An entry ties a name (`config.data.name`, `config.model.name`) to its config
section (defaults, and each field's allowed values) and to the code that builds it.
Code is named by a 'module:function' string and imported only when used, so
loading or checking a config costs no TensorFlow or JAX.

Imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Dict, Iterable, Mapping, Tuple, TypeVar


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str                          # config.data.name
  section: Callable[[], Any]         # config.data with every default (schema/data.py)
  rules: Mapping[str, Any]           # field -> field_rules.Rule
  create: str                        # 'module:function': config.data -> DataSource
  # 'module:function': (config.data, num_classes) -> the source's on-device work
  # without its files (benchmarks on synthetic batches); '': it has none.
  without_files: str = ""
  named_splits: bool = False         # can read a named split (evaluate.py --split=...)
  # Its fields that say where it finds its files, not what it reads: two runs that
  # differ only in these compute the same (schema.NON_RESULT_FIELDS).
  location_fields: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Model:
  name: str                          # config.model.name
  section: Callable[[], Any]         # config.model with every default (schema/models.py)
  rules: Mapping[str, Any]           # field -> field_rules.Rule
  create: str                        # 'module:function': (config.model, norm) -> flax Module
  # 'module:function': config.model -> top-level modules whose kernels get no L2
  # weight decay; '': none.
  decay_exempt: str = ""
  classifier: str = "logits"         # its output layer (fresh when fine-tuning changes classes)


Entry = TypeVar("Entry", Dataset, Model)


def by_name(entries: Iterable[Entry]) -> Dict[str, Entry]:
  table = {}
  for entry in entries:
    if entry.name in table:
      raise ValueError(f"Two registry entries are named {entry.name!r}.")
    table[entry.name] = entry
  return table


def lookup(table: Mapping[str, Entry], name: str, field: str) -> Entry:
  """The entry called `name`, or a ValueError naming `field` and the known names."""
  if name not in table:
    raise ValueError(f"config.{field}={name!r}; known: {', '.join(table)}.")
  return table[name]


def resolve(ref: str) -> Callable:
  """'package.module:function' -> that function (importing the module now)."""
  module, _, attr = ref.partition(":")
  return getattr(importlib.import_module(module), attr)
