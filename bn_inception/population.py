"""Exact population statistics for inference (Alg. 2, step 10): BN's moving averages
replaced by the averages of the batch moments over K training batches, the training
inputs prepared exactly as the training step prepares them. One function, used by the
training loop's `Trainer` and by offline evaluation's members (`ensemble.load_member`).

`BN_STATISTICS`: what an offline evaluation normalises by — the choices Alg. 2 makes
(population statistics, unbiased variance) and those it rejects, so they can be
measured against each other (docs/reproduction.md, section 7)."""

from __future__ import annotations

import functools
import itertools
from typing import Callable, Optional

import jax

from bn_inception import progress, sharding
from bn_inception.batchnorm import BATCH_MOMENTS, BATCH_STATS, population_statistics


BN_STATISTICS = {
    "moving": "the checkpoint's moving averages",
    "population": "exact population statistics over training batches, unbiased variance "
                  "m/(m-1) E_B[var_B] (Alg. 2, step 10)",
    "population_biased": "exact population statistics over training batches, biased "
                         "variance E_B[var_B]",
    "batch": "each evaluation batch's own statistics (Alg. 1 at inference: what Alg. 2 "
             "replaces)",
}


def resolve_bn_statistics(choice: str, population_batches: int) -> str:
  """The BN statistics an evaluation uses: `choice`, or ('') 'population' when
  `population_batches` > 0 and 'moving' otherwise; contradictions refused."""
  if population_batches < 0:
    raise ValueError(f"population_stats_batches={population_batches} must be >= 0.")
  choice = choice or ("population" if population_batches else "moving")
  if choice not in BN_STATISTICS:
    raise ValueError(f"bn_statistics={choice!r}: one of {', '.join(BN_STATISTICS)}.")
  if choice.startswith("population") and not population_batches:
    raise ValueError(f"bn_statistics={choice} needs population_stats_batches > 0 (the "
                     "training batches to average over).")
  if not choice.startswith("population") and population_batches:
    raise ValueError(f"population_stats_batches={population_batches} applies to "
                     f"bn_statistics=population or population_biased, not {choice}.")
  return choice


def moments_step(variables, batch, *, apply_fn: Callable, train_inputs: Callable, base_rng):
  """Training-mode batch moments of every BN layer, on training inputs prepared as in
  `train.train_step` (dropout from `base_rng`)."""
  _, mutated = apply_fn(variables, train_inputs(batch), train=True,
                        rngs={"dropout": base_rng}, mutable=[BATCH_STATS, BATCH_MOMENTS])
  return mutated[BATCH_MOMENTS]


def population_statistics_of(apply_fn: Callable, source, config, variables, mesh,
                             num_batches: int, base_rng, start_step: int = 0,
                             label: Optional[str] = None):
  """`variables` with BN's moving averages replaced by exact averages over the
  `num_batches` training batches of `config` (its batch size and seed) from
  `start_step` on. `label`: show progress under that name (first process)."""
  moments = jax.jit(functools.partial(moments_step, apply_fn=apply_fn,
                                      train_inputs=source.train_inputs, base_rng=base_rng),
                    in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)))
  local = source.train_batches(start_step, config.train.batch_size, config.seed,
                               jax.process_index(), jax.process_count())
  batches = itertools.islice(sharding.device_batches(local, mesh), num_batches)
  if label is not None:
    batches = progress.track(batches, label, num_batches, "batches",
                             show=jax.process_index() == 0)
  new, _ = population_statistics(moments, variables, batches)
  return new
