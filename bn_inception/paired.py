"""Two recipes compared on the same test examples, over seeds: the paired bootstrap that
decides "exceeds" and "ends highest" (docs/reproduction.md, the rules fixed before the
MNIST-back-image run), and Holm's adjustment for a family of such claims.

Every recipe is scored on the same test examples, so the comparison is paired by
example (the examples both get right or both get wrong carry no information about the
difference); the claim is about recipes, not one network each, so each recipe's seeds
are resampled too (a lucky seed is not a recipe effect). `mcnemar_p`: McNemar's exact
test for one pair of networks (an ensemble against its best member, a same-seed pair).

Imports only numpy (and scipy for the binomial tail).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

CHUNK = 250     # bootstrap samples at a time (memory: CHUNK x examples floats)


def mcnemar_p(only_a: int, only_b: int) -> float:
  """McNemar's exact test (two-sided): the chance, if A and B were equally accurate,
  of a split of their disagreements at least this uneven (binomial, p = 1/2)."""
  n = only_a + only_b
  if n == 0:
    return 1.0
  from scipy import stats
  return float(stats.binomtest(min(only_a, only_b), n, 0.5).pvalue)


@dataclasses.dataclass(frozen=True)
class Comparison:
  delta: float          # mean accuracy over A's seeds minus over B's (fraction)
  low: float            # 95% percentile interval of delta
  high: float
  p_value: float        # two-sided: 2 min(P*(delta* <= 0), P*(delta* >= 0)), at most 1
  num_samples: int


def _as_runs(correct, name: str) -> np.ndarray:
  runs = np.asarray(correct)
  if runs.ndim != 2 or not runs.size or not np.isin(runs, (0, 1)).all():
    raise ValueError(f"{name} must be [seeds, examples] of 0/1 (right or wrong), got "
                     f"shape {runs.shape}.")
  return runs.astype(np.float32)


def paired_bootstrap(correct_a, correct_b, num_samples: int = 10_000,
                     seed: int = 0) -> Comparison:
  """`correct_a` [seeds_a, n], `correct_b` [seeds_b, n]: whether each seed's network got
  each of the same n test examples right. Each bootstrap sample draws n examples with
  replacement (one draw for both recipes: the pairing) and, for each recipe apart, its
  seeds with replacement; delta* is the difference of the seed-mean accuracies."""
  a, b = _as_runs(correct_a, "correct_a"), _as_runs(correct_b, "correct_b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"the two recipes were scored on different example counts "
                     f"({a.shape[1]} and {b.shape[1]}): they must share the test examples.")
  if num_samples < 1:
    raise ValueError(f"num_samples={num_samples} must be >= 1.")
  rng = np.random.default_rng(seed)
  n = a.shape[1]
  deltas = []
  for start in range(0, num_samples, CHUNK):
    size = min(CHUNK, num_samples - start)
    draws = rng.integers(0, n, (size, n)) + n * np.arange(size)[:, None]
    counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
    weights = counts.astype(np.float32) / n      # each example's share of the sample
    acc_a, acc_b = weights @ a.T, weights @ b.T  # [size, seeds]
    pick_a = rng.integers(0, len(a), (size, len(a)))
    pick_b = rng.integers(0, len(b), (size, len(b)))
    deltas.append(np.take_along_axis(acc_a, pick_a, 1).mean(1)
                  - np.take_along_axis(acc_b, pick_b, 1).mean(1))
  deltas = np.concatenate(deltas)
  p = 2 * min(np.mean(deltas <= 0), np.mean(deltas >= 0))
  low, high = np.percentile(deltas, [2.5, 97.5])
  return Comparison(float(np.mean(a, dtype=np.float64) - np.mean(b, dtype=np.float64)), float(low), float(high), float(min(p, 1.0)),
                    num_samples)


def holm(p_values: Sequence[float]) -> list:
  """Holm's step-down adjustment: each p-value of a family, adjusted so that rejecting
  the adjusted ones below alpha keeps the family-wise error at alpha."""
  order = np.argsort(p_values, kind="stable")
  m, running = len(p_values), 0.0
  out = [0.0] * m
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * float(p_values[i])))
    out[i] = running
  return out
