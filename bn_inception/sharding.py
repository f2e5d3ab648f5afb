"""The one place that decides sharding: a 1-D data-parallel Mesh over all devices.

Batches are sharded on the `data` axis, parameters and optimizer state are
replicated. Each process contributes only its own slice of the global batch.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def create_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch(global_batch: int, mesh: Mesh, what: str = "train.batch_size") -> int:
  """Per-device batch, or a clear error when the global batch does not divide."""
  n = mesh.size
  if global_batch <= 0 or global_batch % n:
    raise ValueError(f"config.{what}={global_batch} is the GLOBAL batch and must be a "
                     f"positive multiple of the {n} devices (e.g. {n * max(1, global_batch // n)}).")
  if global_batch % jax.process_count():
    raise ValueError(f"config.{what}={global_batch} is not divisible by the "
                     f"{jax.process_count()} processes.")
  return global_batch // n


def bn_group_size(bn_config, global_batch: int, mesh: Mesh) -> Optional[int]:
  """Examples per BN statistic during training, from config.bn.stats_mode.

  'global' -> None (the whole global batch), 'per_device' -> the per-device
  batch (the paper's per-replica statistics), 'group' -> config.bn.group_size.
  """
  per_device = check_batch(global_batch, mesh)
  mode = bn_config.stats_mode
  if mode == "global":
    return None
  if mode == "per_device":
    return per_device
  if mode == "group":
    g = bn_config.group_size
    if g <= 0 or global_batch % g:
      raise ValueError(f"config.bn.group_size={g} must be positive and divide the global "
                       f"batch config.train.batch_size={global_batch}.")
    return g
  raise ValueError(f"Unknown config.bn.stats_mode {mode!r}; known: per_device, global, group.")


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded on the data axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def prefetch(batches, size: int = 2):
  """Keep `size` global batches in flight: their host->device copies overlap the step."""
  import collections
  import itertools
  queue = collections.deque(itertools.islice(batches, size))
  while queue:
    yield queue.popleft()
    queue.extend(itertools.islice(batches, 1))
