"""Choose a data source from `config.data.name`."""

from typing import Optional

from bn_inception.data.base import DataSource


def create_source(data_config) -> DataSource:
  name = data_config.name
  if name == "mnist":
    from bn_inception.data import mnist
    return mnist.create(data_config)
  if name in ("imagenet_folder", "imagenet_tfds"):
    from bn_inception.data import imagenet
    return imagenet.create(data_config)
  raise ValueError(f"Unknown dataset {name!r} (config.data.name); known: mnist, "
                   f"imagenet_folder, imagenet_tfds.")


def without_files(data_config, num_classes: int) -> Optional[DataSource]:
  """The source's on-device work (`train_inputs`, its batch extras) where its files
  are absent, e.g. for a benchmark on synthetic batches; None: it has none."""
  if data_config.name in ("imagenet_folder", "imagenet_tfds"):
    from bn_inception.data import imagenet
    return imagenet.without_files(data_config, num_classes)
  return None
