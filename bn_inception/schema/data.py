"""The `config.data` sections, their fields' rules, and `DATASETS`: one entry per
dataset (data.name -> its section, its rules, its source, where it finds its files).

A new dataset: its section function and `*_RULES` here, and one `Dataset(...)` line
in `DATASETS`. Imports only the standard library, ml_collections and the
stdlib-only field_rules.py and registry.py.
"""

from __future__ import annotations

import os

from bn_inception.field_rules import (FINITE, FLAG, TEXT, above, at_least, custom, each,
                                      one_of, ordered_pair, within)
from bn_inception.registry import Dataset, by_name
from bn_inception.schema.common import (IMAGENET_MEAN, IMAGENET_STD, ConfigDict,
                                        default_data_root, override_fields)


def mnist_data_config(**overrides) -> ConfigDict:
  """`config.data` for MNIST (data/mnist.py): the IDX files, else the tfds download."""
  d = ConfigDict()
  d.name = "mnist"
  # The folder of the four MNIST IDX files. "" (unset): $BN_INCEPTION_DATA/mnist, or
  # ../shared/data/mnist beside the repo, else (download_if_missing) the tfds download.
  # A folder named here must exist: a typo fails at once, it never downloads.
  d.data_dir = ""
  d.download_if_missing = True       # unset data_dir and no files found: tfds download
  d.tfds_data_dir = ""               # where that download goes; '': tfds's default
  d.shuffle = True
  d.mean = (0.0,)                    # on-device normalisation (x/255 - mean)/std
  d.std = (1.0,)
  return override_fields(d, "mnist_data_config", overrides)


MNIST_DATA_RULES = {
    "name": TEXT, "data_dir": TEXT, "download_if_missing": FLAG, "tfds_data_dir": TEXT,
    "shuffle": FLAG, "mean": each(FINITE, length=1, meaning="one (grey) channel"),
    "std": each(above(0.0), length=1, meaning="one (grey) channel"),
}


def mnist_back_image_data_config(**overrides) -> ConfigDict:
  """`config.data` for MNIST-back-image (data/mnist_back_image.py; Larochelle et al.
  2007): MNIST digits over grey natural-image patches, composed once into a cache."""
  d = ConfigDict()
  d.name = "mnist_back_image"
  d.variant = "plain"                # 'plain' | 'rotated' (mnist-rot-back-image)
  d.mnist_dir = ""                   # the MNIST IDX files; '': <data root>/mnist
  d.backgrounds_dir = ""             # <synset>/<image> JPEGs; '': <data root>/imagenet_sample
  d.cache_dir = ""                   # '': $XDG_CACHE_HOME (~/.cache)/bn_inception/...
  d.shuffle = True
  d.mean = (0.0,)                    # on-device normalisation (x/255 - mean)/std
  d.std = (1.0,)
  return override_fields(d, "mnist_back_image_data_config", overrides)


MNIST_BACK_IMAGE_DATA_RULES = {
    "name": TEXT, "variant": one_of("plain", "rotated"), "mnist_dir": TEXT,
    "backgrounds_dir": TEXT, "cache_dir": TEXT, "shuffle": FLAG,
    "mean": MNIST_DATA_RULES["mean"], "std": MNIST_DATA_RULES["std"],
}


def imagenet_data_config(name: str = "imagenet_folder", **overrides) -> ConfigDict:
  """`config.data` for ImageNet (data/imagenet.py), every field with its default."""
  d = ConfigDict()
  d.name = name                      # 'imagenet_folder' | 'imagenet_tfds'
  # Image folder: <dir>/<synset>/<image>. eval_dir '' -> eval on eval_fraction of
  # train_dir (held out, by split_seed) or, when that is 0, on train_dir itself.
  d.train_dir = os.path.join(default_data_root(), "imagenet_sample")
  d.eval_dir = ""
  d.eval_fraction = 0.0
  d.split_seed = 0
  # TFDS: a prepared `tfds_name` under tfds_data_dir (never downloaded here).
  d.tfds_data_dir = os.path.join(default_data_root(), "tensorflow_datasets")
  d.tfds_name = "imagenet2012"
  d.train_split = "train"
  d.eval_split = "validation"
  # Sec. 4.2.1 "within-shard shuffling": the shuffle buffer of the streamed
  # (TFRecord) TFDS path; random-access sources shuffle globally per epoch.
  d.shuffle_buffer = 16_384
  d.shuffle = True
  # Training augmentation (Inception: 8%-100% area, aspect 3/4-4/3, flips, colour).
  d.image_size = 224
  d.crop_area_range = (0.08, 1.0)
  d.aspect_ratio_range = (3 / 4, 4 / 3)
  d.crop_min_object_covered = 0.0    # sample_distorted_bounding_box's; 0: area_range rules
  d.crop_max_attempts = 100          # then the whole image
  d.random_flip = True
  d.distortion_strength = 1.0        # photometric distortions, 0..1 (Sec. 4.2.1: reduce)
  # Apply them on the accelerator inside the train step (device_augment.py) rather
  # than on the host: same distortions, ~35% less host CPU per image at 224 px.
  d.distort_on_device = True
  d.resize_method = "bilinear"
  d.antialias = False
  # Evaluation: shorter side -> image_size / eval_crop_fraction, central crop.
  d.eval_crop_fraction = 0.875
  # On-device normalisation (x/255 - mean) / std; Inception's [-1, 1] is 0.5 / 0.5.
  d.mean = IMAGENET_MEAN
  d.std = IMAGENET_STD
  # An undecodable image: DataError naming it, or (True) replaced in training by
  # the next decodable example and masked out of evaluation, counted and logged.
  d.skip_corrupt_images = False
  d.num_parallel_calls = -1          # decode/augment threads; -1: tf.data.AUTOTUNE
  d.prefetch_batches = -1            # -1: AUTOTUNE
  return override_fields(d, "imagenet_data_config", overrides)


RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5",
                  "gaussian", "mitchellcubic")   # tf.image.resize's
IMAGENET_DATA_RULES = {
    **dict.fromkeys(("name", "train_dir", "eval_dir", "tfds_data_dir", "tfds_name",
                     "train_split", "eval_split"), TEXT),
    **dict.fromkeys(("shuffle", "random_flip", "distort_on_device", "antialias",
                     "skip_corrupt_images"), FLAG),
    "eval_fraction": within(0.0, 1.0, high_open=True),
    "split_seed": at_least(0),
    "shuffle_buffer": at_least(0),
    "image_size": at_least(1),
    "crop_area_range": ordered_pair(0, 1),
    "aspect_ratio_range": ordered_pair(0),
    "crop_min_object_covered": within(0.0, 1.0),
    "crop_max_attempts": at_least(1),
    "distortion_strength": within(0.0, 1.0),
    "resize_method": one_of(*RESIZE_METHODS),
    "eval_crop_fraction": within(0.0, 1.0, low_open=True),
    "mean": each(FINITE, length=3, meaning="RGB"),
    "std": each(above(0.0), length=3, meaning="RGB"),
    "num_parallel_calls": custom("must be -1 (AUTOTUNE) or >= 1",
                                 lambda v, c: v == -1 or v >= 1),
    "prefetch_batches": at_least(-1).means("-1: AUTOTUNE"),
}



DATASETS = by_name((  # config.data.name -> its section, its source, its location fields
    Dataset("mnist", mnist_data_config, MNIST_DATA_RULES, "bn_inception.data.mnist:create",
            location_fields=("data_dir", "download_if_missing")),
    Dataset("mnist_back_image", mnist_back_image_data_config, MNIST_BACK_IMAGE_DATA_RULES,
            "bn_inception.data.mnist_back_image:create",
            location_fields=("mnist_dir", "backgrounds_dir", "cache_dir")),
    Dataset("imagenet_folder", lambda: imagenet_data_config("imagenet_folder"),
            IMAGENET_DATA_RULES, "bn_inception.data.imagenet:create_folder",
            without_files="bn_inception.data.imagenet_pipeline:without_files"),
    Dataset("imagenet_tfds", lambda: imagenet_data_config("imagenet_tfds"),
            IMAGENET_DATA_RULES, "bn_inception.data.imagenet_tfds:create_tfds",
            without_files="bn_inception.data.imagenet_pipeline:without_files",
            named_splits=True),
))

