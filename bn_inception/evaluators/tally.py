"""Counting for multi-crop evaluation (Sec. 4.2.3, Figure 4): crop probabilities
averaged per example (`CropAverager`), then top-k correct counts per network and for
the ensemble (`ErrorTally`) with the disagreements that the ensemble's paired
comparison with a member (`paired.mcnemar_p`) counts, and (with `num_examples`) each
example's top-1 correctness per network, by position, for paired tests between
networks (correct.npz). Top-k is `metrics.topk_correct` (ties and non-finite outputs count
against the label); every example is counted exactly once."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bn_inception import metrics as metrics_lib
from bn_inception.evaluators import common

TOP_K = (1, 5)


class CropAverager:
  """Sums each example's crop probabilities; hands an example over when all its crops are in.

  The sum of an example starts from its carried partial sum and adds crops in stream
  order, so the result does not depend on where batches happen to split it.
  """

  def __init__(self, num_members: int, num_classes: int, crops_per_example: int):
    self.shape = (num_members, num_classes)
    self.crops = crops_per_example
    self.open: Dict[int, list] = {}

  def add(self, positions, labels, probs, mask):
    """probs: [members, B, classes]; returns (positions [E], labels [E], means [members, E, C])."""
    valid = np.asarray(mask, bool)
    positions, labels = np.asarray(positions)[valid], np.asarray(labels)[valid]
    probs = np.asarray(probs, np.float32)[:, valid]
    unique, first, inverse = np.unique(positions, return_index=True, return_inverse=True)
    sums = np.zeros((self.shape[0], len(unique), self.shape[1]), np.float32)
    counts = np.zeros(len(unique), np.int64)
    for j, p in enumerate(unique):
      if p in self.open:
        sums[:, j], counts[j], _ = self.open.pop(p)
    for m in range(self.shape[0]):
      np.add.at(sums[m], inverse, probs[m])
    counts += np.bincount(inverse, minlength=len(unique))
    done = []
    for j, p in enumerate(unique):
      if counts[j] > self.crops:
        raise RuntimeError(f"Example {p} received {counts[j]} crops, more than {self.crops}.")
      if counts[j] == self.crops:
        done.append(j)
      else:
        self.open[int(p)] = [sums[:, j], counts[j], labels[first[j]]]
    done = np.asarray(done, np.int64)
    return unique[done], labels[first[done]], sums[:, done] / np.float32(self.crops)


def _topk_counts(probs, labels, mask):
  """[rows, n, C] probabilities -> ([rows, len(TOP_K) + 3], [rows, n]): top-k correct
  counts over the masked examples; the count of those whose probabilities are not all
  finite; the count the LAST row (the ensemble) gets right at top-1 and this row wrong;
  and the count this row gets right and the last row wrong. Then each example's top-1
  correctness per row."""
  right = {k: jax.vmap(lambda p, k=k: metrics_lib.topk_correct(p, labels, k))(probs) * mask
           for k in TOP_K}
  nonfinite = jax.vmap(metrics_lib.nonfinite_rows)(probs) * mask
  top1 = right[1]
  last = top1[-1]
  columns = ([right[k].sum(1) for k in TOP_K]
             + [nonfinite.sum(1), (last * (1 - top1)).sum(1), (top1 * (1 - last)).sum(1)])
  return jnp.stack(columns, 1).astype(jnp.int32), top1.astype(jnp.int8)


class ErrorTally:
  """Top-k correct counts per row (members, then the ensemble) over finished examples,
  and how many of them had non-finite outputs (counted wrong). With `num_examples`,
  also each example's top-1 correctness per row, by example position (`per_example`):
  networks scored on the same examples are compared pairwise with it (paired.py)."""

  def __init__(self, num_rows: int, num_classes: int, chunk: int = 256,
               num_examples: Optional[int] = None):
    self.correct = np.zeros((num_rows, len(TOP_K) + 3), np.int64)
    self._top1 = (None if num_examples is None else  # per position; then how often seen
                  np.zeros((num_rows + 1, num_examples), np.int32))
    self._positions: List[np.ndarray] = []
    self.count = 0
    self.chunk, self.num_classes = chunk, num_classes
    self._total: Optional[Tuple[np.ndarray, int]] = None  # _gathered's, until more arrive
    self._probs: List[np.ndarray] = []
    self._labels: List[np.ndarray] = []
    self._count_fn = jax.jit(_topk_counts)

  def add(self, probs: np.ndarray, labels: np.ndarray, positions=None):
    """probs [rows, E, C] for E finished examples (at `positions`, needed with
    `num_examples`)."""
    if self._top1 is not None and positions is None:
      raise ValueError("ErrorTally(num_examples=...) needs the examples' positions.")
    if len(labels):
      self._probs.append(probs)
      self._labels.append(labels)
      if self._top1 is not None:
        self._positions.append(np.asarray(positions, np.int64))
    if sum(len(l) for l in self._labels) >= self.chunk:
      self._flush()

  def _flush(self):
    if not self._labels:
      return
    probs, labels = np.concatenate(self._probs, 1), np.concatenate(self._labels)
    positions = np.concatenate(self._positions) if self._positions else None
    self._probs, self._labels, self._positions = [], [], []
    self._total = None
    for start in range(0, len(labels), self.chunk):
      p, l = probs[:, start:start + self.chunk], labels[start:start + self.chunk]
      n = len(l)
      pad = self.chunk - n  # fixed shapes: one compilation
      p = np.pad(p, ((0, 0), (0, pad), (0, 0)))
      mask = np.arange(self.chunk) < n
      counts, top1 = self._count_fn(p, np.pad(l, (0, pad)).astype(np.int32),
                                    mask.astype(np.float32))
      self.correct += np.asarray(counts)
      if positions is not None:
        where = positions[start:start + self.chunk]
        self._top1[:-1, where] = np.asarray(top1)[:, :n]
        np.add.at(self._top1[-1], where, 1)  # a position seen twice counts twice
      self.count += n

  def _gathered(self) -> Tuple[np.ndarray, int]:
    """The counts over every process's examples (one all-gather per new data)."""
    self._flush()
    if self._total is not None:
      return self._total
    total = common.sum_over_processes(np.concatenate([self.correct.ravel(), [self.count]]))
    self._total = total[:-1].reshape(self.correct.shape), int(total[-1])
    return self._total

  def totals(self) -> Tuple[np.ndarray, np.ndarray, int]:
    """(top-k correct counts [rows, len(TOP_K)], non-finite counts [rows], examples)."""
    correct, count = self._gathered()
    n = len(TOP_K)
    return correct[:, :n], correct[:, n], count

  def per_example(self) -> np.ndarray:
    """bool [rows, num_examples]: each example's top-1 correctness per row, over every
    process's examples (each must have been counted exactly once)."""
    self._flush()
    total = common.sum_over_processes(self._top1)
    if np.any(total[-1] != 1):
      raise RuntimeError(f"{int(np.sum(total[-1] != 1))} examples were not counted exactly "
                         "once.")
    return total[:-1].astype(bool)

  def disagreements(self) -> np.ndarray:
    """[rows, 2]: per row, the examples the last row (the ensemble) gets right at top-1
    and this row wrong, and those this row gets right and the last row wrong."""
    return self._gathered()[0][:, len(TOP_K) + 1:]


def average_members(member_means: np.ndarray) -> np.ndarray:
  """[members, E, C] crop-averaged probabilities -> rows: each member, then (M > 1) the ensemble."""
  if len(member_means) == 1:
    return member_means
  return np.concatenate([member_means, member_means.mean(0, keepdims=True)], 0)
