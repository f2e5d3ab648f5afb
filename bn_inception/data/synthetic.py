"""Random uint8 images with random labels: for benchmarks and accelerator checks without data."""

from __future__ import annotations

import numpy as np

from bn_inception.data.base import DataSource, process_slice


class SyntheticSource(DataSource):
  """Deterministic random batches of a given shape; eval is `num_eval_examples` such images."""

  def __init__(self, image_shape, num_classes: int, num_eval_examples: int = 1024,
               mean=(0.5,), std=(0.25,)):
    self.image_shape = tuple(image_shape)
    self.num_classes = num_classes
    self.num_train_examples = 1 << 30
    self.num_eval_examples = num_eval_examples
    self.mean, self.std = tuple(mean), tuple(std)

  def _batch(self, seed, step, n):
    rng = np.random.default_rng([seed, step])
    return {"image": rng.integers(0, 256, (n,) + self.image_shape, dtype=np.uint8),
            "label": rng.integers(0, self.num_classes, n, dtype=np.int32)}

  def train_batches(self, start_step, global_batch, seed, process_index=0, process_count=1):
    mine = process_slice(global_batch, process_index, process_count)
    step = start_step
    while True:
      batch = self._batch(seed, step, global_batch)
      yield {k: v[mine] for k, v in batch.items()}
      step += 1

  def eval_batches(self, global_batch, process_index=0, process_count=1):
    mine = process_slice(global_batch, process_index, process_count)
    for i, start in enumerate(range(0, self.num_eval_examples, global_batch)):
      batch = self._batch(2**32 - 1, i, global_batch)  # a stream apart from training seeds
      batch["mask"] = np.arange(start, start + global_batch) < self.num_eval_examples
      yield {k: v[mine] for k, v in batch.items()}
