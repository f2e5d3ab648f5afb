"""Choose a data source from `config.data.name`: the one list of dataset names."""

from __future__ import annotations

import importlib
from typing import Optional

from bn_inception.data.base import DataSource

# config.data.name -> (module of bn_inception.data, its constructor from config.data).
SOURCES = {
    "mnist": ("mnist", "create"),
    "imagenet_folder": ("imagenet", "create_folder"),
    "imagenet_tfds": ("imagenet", "create_tfds"),
}
# Sources that can read a named split of their dataset (evaluate.py --split=validation).
NAMED_SPLITS = ("imagenet_tfds",)


def _module(name: str):
  if name not in SOURCES:
    raise ValueError(f"Unknown dataset {name!r} (config.data.name); known: "
                     f"{', '.join(SOURCES)}.")
  return importlib.import_module(f"bn_inception.data.{SOURCES[name][0]}")


def create_source(data_config) -> DataSource:
  return getattr(_module(data_config.name), SOURCES[data_config.name][1])(data_config)


def without_files(data_config, num_classes: int) -> Optional[DataSource]:
  """The source's on-device work (`train_inputs`, its batch extras) where its files
  are absent, e.g. for a benchmark on synthetic batches; None: it has none."""
  make = getattr(_module(data_config.name), "without_files", None)
  return make(data_config, num_classes) if make is not None else None
