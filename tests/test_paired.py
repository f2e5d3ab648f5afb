"""The paired bootstrap over examples and seeds, and Holm's adjustment (bn_inception/paired.py)."""

import numpy as np
import pytest

from bn_inception import paired

N = 10_000


def runs(accuracies, seed=0):
  """[seeds, N] 0/1: each seed right on its own random `accuracy` share of the examples."""
  rng = np.random.default_rng(seed)
  out = np.zeros((len(accuracies), N), np.int8)
  for s, acc in enumerate(accuracies):
    out[s, rng.permutation(N)[:round(acc * N)]] = 1
  return out


def test_the_same_networks_differ_by_nothing():
  """Only the seeds' spread (drawn apart for each recipe) is left: centred on 0."""
  a = runs([0.9, 0.91, 0.92])
  c = paired.paired_bootstrap(a, a, num_samples=2000)
  assert c.delta == 0 and c.low < 0 < c.high and c.p_value > 0.5


def test_a_consistent_gain_on_the_same_examples_is_significant():
  base = runs([0.95, 0.95, 0.95])
  better = base.copy()
  for s in range(3):                               # 60 of each seed's errors fixed: +0.6 points
    better[s, np.flatnonzero(base[s] == 0)[:60]] = 1
  c = paired.paired_bootstrap(better, base, num_samples=2000)
  assert c.delta == pytest.approx(0.006)
  assert c.p_value < 0.01 and 0 < c.low < c.delta < c.high


def test_one_lucky_seed_is_not_a_recipe_effect():
  """A's mean is 0.6 points above B's, all from one seed: McNemar on that seed pair
  would call it certain; over seeds the bootstrap does not."""
  b = runs([0.95, 0.95, 0.95], seed=1)
  a = b.copy()
  a[0, np.flatnonzero(b[0] == 0)[:180]] = 1        # seed 0: +1.8 points, others equal
  c = paired.paired_bootstrap(a, b, num_samples=2000)
  assert c.delta == pytest.approx(0.006, abs=1e-6)
  assert c.p_value > 0.05 and c.low <= 0


def test_deterministic_in_its_seed():
  a, b = runs([0.9, 0.92]), runs([0.91, 0.9], seed=3)
  assert paired.paired_bootstrap(a, b, 500, seed=4) == paired.paired_bootstrap(a, b, 500,
                                                                               seed=4)


@pytest.mark.parametrize("a, b, message", [
    (np.ones((2, 10)), np.ones((2, 11)), "different example counts"),
    (np.ones(10), np.ones((2, 10)), r"\[seeds, examples\]"),
    (np.full((2, 10), 2), np.ones((2, 10)), "0/1"),
])
def test_bad_input_is_one_clear_error(a, b, message):
  with pytest.raises(ValueError, match=message):
    paired.paired_bootstrap(a, b, num_samples=10)


def test_holm():
  assert paired.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
  assert paired.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
  assert paired.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])   # capped at 1
