"""Choose a data source from `config.data.name`: its entry in `schema.DATASETS`."""

from __future__ import annotations

from typing import Optional

from bn_inception import registry, schema
from bn_inception.data.base import DataSource

# Sources that can read a named split of their dataset (evaluate.py --split=validation).
NAMED_SPLITS = tuple(name for name, d in schema.DATASETS.items() if d.named_splits)


def _entry(data_config) -> registry.Dataset:
  return registry.lookup(schema.DATASETS, data_config.name, "data.name")


def create_source(data_config) -> DataSource:
  return registry.resolve(_entry(data_config).create)(data_config)


def without_files(data_config, num_classes: int) -> Optional[DataSource]:
  """The source's on-device work (`train_inputs`, its batch extras) where its files
  are absent, e.g. for a benchmark on synthetic batches; None: it has none."""
  make = _entry(data_config).without_files
  return registry.resolve(make)(data_config, num_classes) if make else None
