"""The data-source interface and the deterministic (seed, step) -> examples sampler."""

from __future__ import annotations

from typing import Dict, Iterator, Tuple

import numpy as np
import jax.numpy as jnp

Batch = Dict[str, np.ndarray]


class DataError(Exception):
  """A dataset is missing or malformed; the message says what to do."""


class EpochSampler:
  """Global example indices for a step: epoch-wise permutations of seed and epoch.

  The training stream is the concatenation of permutations P_0, P_1, ... with
  P_e = permutation(N; seed, e); step s takes positions [s*B, (s+1)*B) of it, so
  no example is repeated or skipped within an epoch and resuming at step s
  needs nothing but s.
  """

  def __init__(self, num_examples: int, seed: int, shuffle: bool = True):
    self.num_examples = num_examples
    self.seed = seed
    self.shuffle = shuffle
    self._cache: Dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      if len(self._cache) > 4:
        self._cache.clear()
      if self.shuffle:
        rng = np.random.default_rng([self.seed, epoch])
        self._cache[epoch] = rng.permutation(self.num_examples)
      else:
        self._cache[epoch] = np.arange(self.num_examples)
    return self._cache[epoch]

  def indices(self, step: int, global_batch: int) -> np.ndarray:
    positions = step * global_batch + np.arange(global_batch, dtype=np.int64)
    epochs, within = np.divmod(positions, self.num_examples)
    out = np.empty(global_batch, dtype=np.int64)
    for epoch in np.unique(epochs):
      sel = epochs == epoch
      out[sel] = self._permutation(int(epoch))[within[sel]]
    return out


def process_slice(global_batch: int, process_index: int, process_count: int) -> slice:
  if global_batch % process_count:
    raise ValueError(f"Global batch {global_batch} is not divisible by the "
                     f"{process_count} processes.")
  local = global_batch // process_count
  return slice(process_index * local, (process_index + 1) * local)


class DataSource:
  """What the training loop needs from a dataset."""

  num_classes: int
  image_shape: Tuple[int, int, int]
  num_train_examples: int
  num_eval_examples: int
  mean: Tuple[float, ...] = (0.0,)
  std: Tuple[float, ...] = (1.0,)

  def train_batches(self, start_step: int, global_batch: int, seed: int,
                    process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
    raise NotImplementedError

  def eval_batches(self, global_batch: int, process_index: int = 0,
                   process_count: int = 1) -> Iterator[Batch]:
    raise NotImplementedError

  # Per-example fields of training batches besides image and label, consumed on
  # device by `train_inputs`: name -> (shape of one example's value, numpy dtype).
  train_extras: Dict[str, Tuple[Tuple[int, ...], type]] = {}

  def normalize(self, images):
    """Images in 0..255 (uint8, or float after device augmentation) -> float32
    (x/255 - mean) / std, run on device inside the step."""
    x = jnp.asarray(images, jnp.float32) / 255.0
    return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

  def train_inputs(self, batch: Batch):
    """A training batch -> the network's input, on device: any augmentation the
    source does there (see data/device_augment.py), then `normalize`."""
    return self.normalize(batch["image"])

  def full_size_images(self, split: str):
    """The images of `split` ('eval' | 'train') before any crop, as a
    `multicrop.ImageSet` for multi-crop evaluation; None where there are none."""
    return None


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
    yield from padded_batches(self.eval_images, self.eval_labels, global_batch,
                              process_index, process_count)

  def full_size_images(self, split):
    from bn_inception.data.multicrop import ArrayImageSet
    if split == "eval":
      return ArrayImageSet(self.eval_images, self.eval_labels, "in-memory eval split")
    return ArrayImageSet(self.train_images, self.train_labels, "in-memory train split")


def padded_batches(images, labels, global_batch, process_index=0, process_count=1):
  """Every example exactly once: the last batch is padded and masked."""
  n = len(images)
  mine = process_slice(global_batch, process_index, process_count)
  for start in range(0, n, global_batch):
    idx = np.arange(start, start + global_batch)[mine]
    valid = idx < n
    idx = np.where(valid, idx, 0)
    yield {"image": images[idx], "label": labels[idx], "mask": valid}
