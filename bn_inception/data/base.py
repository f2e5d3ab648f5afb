"""The data-source interface, the full-size image-set interface and the deterministic
(seed, step) -> examples sampler. A leaf: it imports no source or image set."""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence, Tuple

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


def eval_positions(num_examples: int, global_batch: int, process_index: int = 0,
                   process_count: int = 1, num_batches: Optional[int] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
  """Evaluation order: every example once, in order, in global batches, the last padded.

  -> (positions int64, mask bool), each [num_batches, local]: row r of this process's
  part of global batch b is example b * global_batch + its `process_slice`.start + r;
  rows at or past `num_examples` are padding: mask False, position 0 (a valid index,
  so a source may read it and the mask hides it). `num_batches` (default the fewest,
  ceil(num_examples / global_batch)) may be larger: further batches are all padding.
  """
  mine = process_slice(global_batch, process_index, process_count)
  if num_batches is None:
    num_batches = -(-num_examples // global_batch)
  positions = (np.arange(num_batches, dtype=np.int64)[:, None] * global_batch
               + np.arange(mine.start, mine.stop, dtype=np.int64))
  mask = positions < num_examples
  return np.where(mask, positions, 0), mask


def padded(rows: Batch, mask: np.ndarray, repeat_rows: bool = False) -> Batch:
  """A batch of len(mask) rows from `rows` (one per True of `mask`, in order): each
  field's rows where `mask` is True, zeros elsewhere (`repeat_rows`: the batch's own
  rows again, cyclically, so that statistics of the batch are those of its real rows),
  and "mask". Fixed shapes: one compilation for every batch."""
  out = {}
  fill = np.flatnonzero(~np.asarray(mask, bool))
  for name, values in rows.items():
    out[name] = np.zeros((len(mask), *values.shape[1:]), values.dtype)
    out[name][mask] = values
    if repeat_rows and len(fill):
      if not len(values):
        raise ValueError("A batch without examples cannot be padded with its own rows.")
      out[name][fill] = values[np.arange(len(fill)) % len(values)]
  out["mask"] = np.asarray(mask, bool)
  return out


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
    """Every example once, as `eval_positions` orders and pads them: this process's
    batches {"image", "label", "mask"} (mask False on padding)."""
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
    """The images of `split` ('eval' | 'train') before any crop, as an
    `ImageSet` for multi-crop evaluation; None where there are none."""
    return None


class ImageSet:
  """The decoded full-size images and labels of one split, for multi-crop evaluation.

  `dataset(indices)` is a tf.data.Dataset of {"image": uint8 [h, w, C] (any h, w),
  "label": int32} in the order of `indices` (positions 0..num_examples-1).
  """

  name: str
  num_examples: int
  channels: int

  def dataset(self, indices: np.ndarray, num_parallel_calls: int):
    raise NotImplementedError

  def find_undecodable(self, indices: Sequence[int]) -> Optional[str]:
    """A description of the first image among `indices` that cannot be decoded."""
    return None
