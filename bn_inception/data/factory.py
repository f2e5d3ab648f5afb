"""Choose a data source from `config.data.name`."""

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
