"""ImageNet (ILSVRC-2012) read with random access: an image folder, or a TFDS split
prepared as ArrayRecord (data/imagenet_tfds.py opens those; a TFRecord split is
streamed there). One contract (see data/base.py): host-local uint8 NHWC batches of
this process's slice of the global batch, normalised on device.

`imagenet_folder`: `<dir>/<synset>/*.{JPEG,jpg,png}`; labels are the sorted synset
order (n01440764 = 0, the ILSVRC-2012 / TFDS order when all 1000 synsets are
present).

Training order. Step s reads the examples EpochSampler(seed).indices(s) --
epoch-wise permutations, so the sampler already shuffles globally and
`data.shuffle_buffer` is unused -- and each example's crop/flip/colour randomness
is seeded by (seed, its position in the global stream). A run resumed at step s,
on any number of processes, sees exactly the batches of the uninterrupted run.
An undecodable image is found, then raised or (skip_corrupt_images) replaced.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from bn_inception.data import imagenet_pipeline as pipeline
from bn_inception.data.base import Batch, DataError, EpochSampler, eval_positions, process_slice
from bn_inception.data.image_readers import (ArrayRecordReader, EncodedImageSet, FolderReader,
                                             list_image_folder, undecodable)


def _substitute(indices: np.ndarray, bad: Dict[int, str], n: int) -> np.ndarray:
  """Each known-undecodable index -> the next decodable one (a fixed rule: resumable)."""
  if not bad:
    return indices
  out = indices.copy()
  for k, i in enumerate(indices):
    j = int(i)
    while j in bad:
      j = (j + 1) % n
      if j == i:
        raise DataError("No decodable image is left in the dataset.")
    out[k] = j
  return out


class _RecoveringIterator:
  """Iterate a tf.data pipeline over units (steps or eval batches); on a failure find
  the undecodable images of the failing unit, raise or record them, and rebuild
  the pipeline from that unit."""

  def __init__(self, reader, build: Callable[[int], tf.data.Dataset],
               check: Callable[[int], Dict[int, str]], skip_corrupt: bool, what: str):
    self.reader, self.build, self.check = reader, build, check
    self.skip_corrupt, self.what = skip_corrupt, what

  def __call__(self, first: int, last: Optional[int] = None) -> Iterator[Batch]:
    unit = first
    while last is None or unit < last:
      try:
        for batch in self.build(unit).as_numpy_iterator():
          yield batch
          unit += 1
        return
      except Exception as e:  # not BaseException: a generator closed at exit
        if not isinstance(e, tf.errors.OpError):
          raise
        found = self.check(unit)
        if not found:
          raise DataError(f"The ImageNet input pipeline failed at {self.what} {unit} "
                          f"({type(e).__name__}: {str(e)[:300]}).") from e
        if not self.skip_corrupt:
          index, msg = next(iter(found.items()))
          raise DataError(
              f"Could not decode image {self.reader.name(index)} ({msg[:200]}). Remove "
              f"or replace the file, or set config.data.skip_corrupt_images=True to "
              f"replace undecodable training images deterministically and mask them "
              f"out of evaluation.") from e
        for index, msg in found.items():
          self.reader.bad[index] = msg
          logging.warning("Skipping undecodable image %s (%s); %d skipped in %s so far.",
                          self.reader.name(index), msg[:200], len(self.reader.bad),
                          self.reader.where)


class RandomAccessImageSource(pipeline.ImageNetSource):
  """Encoded images with random access (folder, ArrayRecord): exact (seed, step) order."""

  def __init__(self, train: FolderReader | ArrayRecordReader,
               eval_: FolderReader | ArrayRecordReader, num_classes: int, config):
    super().__init__(config, num_classes)
    self.train_reader, self.eval_reader = train, eval_
    self.num_train_examples = len(train)
    self.num_eval_examples = len(eval_)

  def full_size_images(self, split):
    reader = self.eval_reader if split == "eval" else self.train_reader
    return EncodedImageSet(reader, reader.where)

  @property
  def num_skipped_images(self) -> int:
    """Undecodable images met so far (replaced in training, masked in evaluation)."""
    return len(self.train_reader.bad) + (
        len(self.eval_reader.bad) if self.eval_reader is not self.train_reader else 0)

  # -- training
  def _train_indices(self, sampler, step, global_batch, mine):
    idx = sampler.indices(step, global_batch)[mine]
    return _substitute(idx, self.train_reader.bad, self.num_train_examples)

  def train_batches(self, start_step, global_batch, seed, process_index=0, process_count=1):
    config, reader = self.config, self.train_reader
    sampler = EpochSampler(self.num_train_examples, seed, config.shuffle)
    mine = process_slice(global_batch, process_index, process_count)
    local = mine.stop - mine.start
    image_fn = self._train_image

    def steps(first):
      step = first
      while True:
        payload, labels = reader.fetch(self._train_indices(sampler, step, global_batch, mine))
        positions = step * global_batch + np.arange(mine.start, mine.stop, dtype=np.int64)
        yield payload, labels, positions
        step += 1

    def example(payload, label, position):
      # The augmentation of an example is a function of (seed, its stream position).
      example_seed = tf.stack([tf.constant(seed, tf.int64), position])
      return self._train_example(reader.load(payload), label, example_seed)

    def build(first):
      return pipeline.decoded_batches(lambda: steps(first), local, tf.int64, example, config)

    def check(step):
      idx = self._train_indices(sampler, step, global_batch, mine)
      positions = step * global_batch + np.arange(mine.start, mine.stop, dtype=np.int64)
      found = {}
      for i, pos in zip(idx, positions):  # each image with the seed it failed with
        if int(i) not in found:
          found.update(undecodable(reader, [i], lambda d, pos=pos: image_fn(
              d, tf.constant([seed, pos], tf.int64))))
      return found

    yield from _RecoveringIterator(reader, build, check, config.skip_corrupt_images,
                                   "training step")(start_step)

  # -- evaluation
  def eval_batches(self, global_batch, process_index=0, process_count=1):
    config, reader = self.config, self.eval_reader
    positions, mask = eval_positions(self.num_eval_examples, global_batch, process_index,
                                     process_count)
    num_batches, local = mask.shape
    image_fn, size = self._eval_image, config.image_size

    def rows(b):  # batch b's positions and mask, known-undecodable images masked too
      valid = mask[b] & ~np.isin(positions[b], list(reader.bad))
      return np.where(valid, positions[b], 0), valid

    def batches(first):
      for b in range(first, num_batches):
        idx, valid = rows(b)
        payload, labels = reader.fetch(idx)
        payload = np.where(valid, payload, b"")  # padding and skipped images: not read
        yield payload, np.where(valid, labels, 0).astype(np.int32), valid

    def example(payload, label, valid):
      image = tf.cond(valid, lambda: image_fn(reader.load(payload)),
                      lambda: tf.zeros([size, size, 3], tf.uint8))
      return {"image": image, "label": label, "mask": valid}

    def build(first):
      return pipeline.decoded_batches(lambda: batches(first), local, tf.bool, example, config)

    def check(b):
      idx, valid = rows(b)
      return dict(undecodable(reader, idx[valid], image_fn))

    yield from _RecoveringIterator(reader, build, check, config.skip_corrupt_images,
                                   "eval batch")(0, num_batches)


def create_folder(config) -> RandomAccessImageSource:
  """`imagenet_folder`: <train_dir>/<synset>/<image> (see imagenet_data_config)."""
  paths, owners, classes = list_image_folder(config.train_dir, "train_dir")
  label_of = {c: k for k, c in enumerate(classes)}
  labels = np.asarray([label_of[o] for o in owners], np.int32)
  if config.eval_dir:
    eval_paths, eval_owners, eval_classes = list_image_folder(config.eval_dir, "eval_dir")
    unknown = sorted(set(eval_classes) - set(classes))
    if unknown:
      raise DataError(f"config.data.eval_dir={config.eval_dir} has class folders not in "
                      f"config.data.train_dir={config.train_dir}: {unknown[:5]}"
                      f"{' ...' if len(unknown) > 5 else ''}; labels come from train_dir.")
    train = FolderReader(paths, labels, config.train_dir)
    eval_ = FolderReader(eval_paths, [label_of[o] for o in eval_owners], config.eval_dir)
  elif config.eval_fraction > 0:
    order = np.random.default_rng(config.split_seed).permutation(len(paths))
    num_eval = max(1, round(config.eval_fraction * len(paths)))
    held, kept = np.sort(order[:num_eval]), np.sort(order[num_eval:])
    paths = np.asarray(paths, dtype=object)
    train = FolderReader(paths[kept], labels[kept], f"{config.train_dir} (train part)")
    eval_ = FolderReader(paths[held], labels[held], f"{config.train_dir} (held-out part)")
  else:  # evaluate on the training images themselves (overfitting checks)
    train = FolderReader(paths, labels, config.train_dir)
    eval_ = train
  return RandomAccessImageSource(train, eval_, len(classes), config)
