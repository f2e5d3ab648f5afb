"""What both ImageNet sources share: the tf.data plumbing, the training and evaluation
image functions from `config.data`, and the base source with on-device distortion.

Normalisation: (x/255 - data.mean) / data.std on device, ImageNet mean/std by
default; Inception's [-1, 1] scaling is data.mean = data.std = (0.5, 0.5, 0.5).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from bn_inception.data import augment, device_augment
from bn_inception.data.base import DataSource


def options(config) -> tf.data.Options:
  out = tf.data.Options()
  out.deterministic = True
  out.autotune.enabled = True
  return out


def parallel(config) -> int:
  return tf.data.AUTOTUNE if config.num_parallel_calls < 0 else config.num_parallel_calls


def prefetch(config) -> int:
  return tf.data.AUTOTUNE if config.prefetch_batches < 0 else config.prefetch_batches


def decoded_batches(generator, local: int, extra_dtype, example: Callable, config):
  """(payload, label, extra) host batches -> examples decoded in parallel, in order,
  re-batched and prefetched."""
  ds = tf.data.Dataset.from_generator(generator, output_signature=(
      tf.TensorSpec([local], tf.string), tf.TensorSpec([local], tf.int32),
      tf.TensorSpec([local], extra_dtype)))
  ds = ds.unbatch().map(example, num_parallel_calls=parallel(config), deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(prefetch(config))
  return ds.with_options(options(config))


def distorts_on_device(config) -> bool:
  return config.distort_on_device and config.distortion_strength > 0


def train_image_fn(config) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """(encoded image, int64 seed[2]) -> augmented uint8 image, from config.data
  (colour distortion left to the device when config.distort_on_device)."""
  host_strength = 0.0 if distorts_on_device(config) else config.distortion_strength

  def fn(data, seed):
    return augment.train_image(
        data, seed, image_size=config.image_size,
        area_range=tuple(config.crop_area_range),
        aspect_ratio_range=tuple(config.aspect_ratio_range),
        min_object_covered=config.crop_min_object_covered,
        max_attempts=config.crop_max_attempts, random_flip=config.random_flip,
        distortion_strength=host_strength,
        resize_method=config.resize_method, antialias=config.antialias)
  return fn


def eval_image_fn(config) -> Callable[[tf.Tensor], tf.Tensor]:
  def fn(data):
    return augment.eval_image(data, image_size=config.image_size,
                              crop_fraction=config.eval_crop_fraction,
                              resize_method=config.resize_method, antialias=config.antialias)
  return fn


class ImageNetSource(DataSource):
  """What both ImageNet sources share: config, image functions, device distortion."""

  def __init__(self, config, num_classes: int):
    self.config = config
    self.num_classes = num_classes
    self.image_shape = (config.image_size, config.image_size, 3)
    self.mean, self.std = tuple(config.mean), tuple(config.std)
    self._train_image = train_image_fn(config)
    self._eval_image = eval_image_fn(config)
    self._device_distortion = distorts_on_device(config)
    self.train_extras = ({device_augment.COLOR_SEED: ((2,), np.uint32)}
                         if self._device_distortion else {})

  def _train_example(self, data, label, example_seed):
    """One training example from its encoded image and its int64 seed[2]."""
    out = {"image": self._train_image(data, example_seed), "label": label}
    if self._device_distortion:
      out[device_augment.COLOR_SEED] = augment.color_seed(example_seed)
    return out

  def train_inputs(self, batch):
    images = batch["image"]
    if self._device_distortion:
      images = device_augment.distort_color(images, batch[device_augment.COLOR_SEED],
                                            self.config.distortion_strength)
    return self.normalize(images)


def without_files(config, num_classes: int = 1000) -> DataSource:
  """The ImageNet source's shape and on-device work (`train_inputs`) without its
  files: what a benchmark on synthetic batches needs where the data is absent."""
  return ImageNetSource(config, num_classes)
