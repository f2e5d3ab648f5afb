"""Random uint8 images with random labels: for benchmarks and accelerator checks without data."""

from __future__ import annotations

from typing import Optional

import numpy as np

from bn_inception.data.base import DataSource, eval_positions, process_slice


class SyntheticSource(DataSource):
  """Deterministic random batches of a given shape; eval is `num_eval_examples` such images."""

  def __init__(self, image_shape, num_classes: int, num_eval_examples: int = 1024,
               mean=(0.5,), std=(0.25,), like: Optional[DataSource] = None):
    """`like`: a real source whose on-device preparation (`train_inputs`, with
    its extra batch fields) the synthetic training batches go through, so a
    benchmark times the step that training runs."""
    self.image_shape = tuple(image_shape)
    self.num_classes = num_classes
    self.num_train_examples = 1 << 30
    self.num_eval_examples = num_eval_examples
    self.mean, self.std = tuple(mean), tuple(std)
    self._like = like
    if like is not None:
      self.train_extras = dict(like.train_extras)

  def _batch(self, seed, step, n, extras=()):
    rng = np.random.default_rng([seed, step])
    batch = {"image": rng.integers(0, 256, (n,) + self.image_shape, dtype=np.uint8),
             "label": rng.integers(0, self.num_classes, n, dtype=np.int32)}
    for name in extras:
      shape, dtype = self.train_extras[name]
      batch[name] = rng.integers(0, np.iinfo(dtype).max, (n,) + tuple(shape), dtype=dtype)
    return batch

  def train_inputs(self, batch):
    if self._like is not None:
      return self._like.train_inputs(batch)
    return super().train_inputs(batch)

  def train_batches(self, start_step, global_batch, seed, process_index=0, process_count=1):
    mine = process_slice(global_batch, process_index, process_count)
    step = start_step
    while True:
      batch = self._batch(seed, step, global_batch, extras=self.train_extras)
      yield {k: v[mine] for k, v in batch.items()}
      step += 1

  def eval_batches(self, global_batch, process_index=0, process_count=1):
    mine = process_slice(global_batch, process_index, process_count)
    _, mask = eval_positions(self.num_eval_examples, global_batch, process_index, process_count)
    for i, valid in enumerate(mask):
      batch = self._batch(2**32 - 1, i, global_batch)  # a stream apart from training seeds
      yield {"image": batch["image"][mine], "label": batch["label"][mine], "mask": valid}
