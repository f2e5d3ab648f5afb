"""Examples held in host memory as numpy arrays (MNIST): the source and its image set."""

from __future__ import annotations

import numpy as np

from bn_inception.data.base import (DataError, DataSource, EpochSampler, ImageSet, eval_positions,
                                    process_slice)


class InMemorySource(DataSource):
  """A source whose examples are numpy arrays in host memory (MNIST)."""

  def __init__(self, train_images, train_labels, eval_images, eval_labels,
               num_classes: int, mean=(0.0,), std=(1.0,), shuffle: bool = True):
    self.train_images, self.train_labels = train_images, train_labels
    self.eval_images, self.eval_labels = eval_images, eval_labels
    self.num_classes = num_classes
    self.image_shape = tuple(train_images.shape[1:])
    self.num_train_examples = len(train_images)
    self.num_eval_examples = len(eval_images)
    self.mean, self.std = tuple(mean), tuple(std)
    self.shuffle = shuffle

  def train_batches(self, start_step, global_batch, seed, process_index=0, process_count=1):
    sampler = EpochSampler(self.num_train_examples, seed, self.shuffle)
    mine = process_slice(global_batch, process_index, process_count)
    step = start_step
    while True:
      idx = sampler.indices(step, global_batch)[mine]
      yield {"image": self.train_images[idx], "label": self.train_labels[idx]}
      step += 1

  def eval_batches(self, global_batch, process_index=0, process_count=1):
    positions, mask = eval_positions(self.num_eval_examples, global_batch, process_index,
                                     process_count)
    for rows, valid in zip(positions, mask):
      yield {"image": self.eval_images[rows], "label": self.eval_labels[rows], "mask": valid}

  def full_size_images(self, split):
    if split == "eval":
      return ArrayImageSet(self.eval_images, self.eval_labels, "in-memory eval split")
    return ArrayImageSet(self.train_images, self.train_labels, "in-memory train split")


class ArrayImageSet(ImageSet):
  """Images already in memory (MNIST): uint8 [N, h, w, C]."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, name: str):
    if images.ndim != 4 or len(images) != len(labels):
      raise DataError(f"{name}: expected images [N, h, w, C] and N labels, got "
                      f"{images.shape} and {np.shape(labels)}.")
    self.images, self.labels = images, np.asarray(labels, np.int32)
    self.name, self.num_examples, self.channels = name, len(images), images.shape[-1]

  def dataset(self, indices, num_parallel_calls):
    import tensorflow as tf
    indices = np.asarray(indices, np.int64)
    return tf.data.Dataset.from_tensor_slices(
        {"image": self.images[indices], "label": self.labels[indices]})
