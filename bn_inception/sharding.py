"""The one place that decides sharding: a 1-D data-parallel Mesh over all devices.

Batches are sharded on the `data` axis, parameters and optimizer state are
replicated. Each process contributes only its own slice of the global batch.

BN statistics across devices (config.bn.stats_mode) need no code here beyond a
group size: BatchNorm reshapes the batch axis into (groups, group_size), and
with the batch sharded on `data` XLA's partitioner keeps each group on the
device(s) that hold its examples. So 'per_device' (group = per-device batch)
normalises with no cross-device traffic in the forward pass, 'global' all-reduces
the moments of every BN layer, and 'group' is the same computation on any
number of devices. Moving averages are the mean over groups, so they come out
replicated (identical on every device) in every mode.

Multi-host: `maybe_initialize_distributed` starts jax.distributed before JAX
is first used; every process then runs the same program on its own slice of
each global batch (`global_batch`).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bn_inception import registry, schema

DATA_AXIS = "data"


def create_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _nearby_multiples(value: int, step: int):
  """The multiples of `step` just below and above `value` (positive only)."""
  lo = (value // step) * step
  return [v for v in (lo, lo + step) if v > 0 and v != value] or [step]


def check_batch(global_batch: int, mesh: Mesh, what: str = "train.batch_size") -> int:
  """Per-device batch, or a clear error when the global batch does not divide."""
  n = mesh.size
  if global_batch <= 0 or global_batch % n:
    ok = " or ".join(f"{v} ({v // n} per device)" for v in _nearby_multiples(global_batch, n))
    paper = (f" For the paper's 32 examples per replica on {n} devices set it to {32 * n}."
             if what == "train.batch_size" else "")
    raise ValueError(
        f"config.{what}={global_batch} is the GLOBAL batch (all devices together) and must "
        f"be a positive multiple of the {n} devices; try {ok}.{paper}")
  processes = jax.process_count()
  if global_batch % processes:
    ok = " or ".join(str(v) for v in _nearby_multiples(global_batch, n * processes))
    raise ValueError(f"config.{what}={global_batch} is the GLOBAL batch and must split "
                     f"evenly over the {processes} processes; try {ok}.")
  return global_batch // n


def bn_group_size(bn_config, global_batch: int, mesh: Mesh) -> Optional[int]:
  """Examples per BN statistic during training, from config.bn.stats_mode (its
  function registered in schema.STATS_MODES); None: the whole global batch."""
  per_device = check_batch(global_batch, mesh)
  groups = registry.resolve(schema.STATS_MODES[bn_config.stats_mode])
  return groups(bn_config, global_batch, mesh.size, per_device)


# The modes of schema.STATS_MODES: (config.bn, global batch, device count, per-device
# batch) -> examples per statistic.

def global_groups(bn_config, global_batch: int, devices: int, per_device: int) -> None:
  """The whole global batch."""
  return None


def per_device_groups(bn_config, global_batch: int, devices: int, per_device: int) -> int:
  """The per-device batch: the paper's per-replica statistics (with 32 per replica
  every device normalises over its own 32 examples)."""
  if per_device == 1:
    logging.warning(
        "config.bn.stats_mode='per_device' with 1 example per device (global batch %d on %d "
        "devices): dense-layer BN then normalises every activation to beta.",
        global_batch, devices)
  return per_device


def fixed_groups(bn_config, global_batch: int, devices: int, per_device: int) -> int:
  """config.bn.group_size, whatever the device count (validated to divide the batch)."""
  return bn_config.group_size


# --- Multi-host start -------------------------------------------------------

# Read here (not by JAX) for a hand-launched cluster: JAX itself reads
# JAX_COORDINATOR_ADDRESS but takes the process count and id only from a
# detected launcher (SLURM, Open MPI, Cloud TPU, Kubernetes).
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def _int_env(env: Mapping[str, str], name: str, default: int = 1) -> int:
  try:
    return int(env.get(name, default))
  except ValueError:
    return default


def multiprocess_launcher(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
  """The launcher whose environment says this is one of several processes, or None."""
  env = os.environ if environ is None else environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if "SLURM_STEP_NODELIST" in env and _int_env(env, "SLURM_NTASKS") > 1:
    return "SLURM"
  if _int_env(env, "OMPI_COMM_WORLD_SIZE") > 1:
    return "Open MPI"
  hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
  if len([h for h in hosts.split(",") if h.strip()]) > 1:
    return "Cloud TPU slice"
  if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "Cloud TPU multislice"
  return None


def maybe_initialize_distributed(config, environ: Optional[Mapping[str, str]] = None) -> bool:
  """jax.distributed.initialize() when config.distributed asks; True if it is running.

  'off': never. 'on': always (on Cloud TPU, SLURM, Open MPI and Kubernetes JAX
  finds the coordinator, process count and id itself; elsewhere export
  JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID).
  'auto': when the environment names a multi-process launch
  (`multiprocess_launcher`); a GCE Cloud TPU VM slice sets no such variable, so
  use 'on' there. Must run before anything touches a JAX device.
  """
  mode = config.distributed  # one of schema.RUN_RULES' modes, validated
  env = os.environ if environ is None else environ
  if mode == "off":
    return False
  if jax.distributed.is_initialized():
    return True
  launcher = multiprocess_launcher(env)
  if mode == "auto" and launcher is None:
    return False
  kwargs = {}
  if NUM_PROCESSES_ENV in env or PROCESS_ID_ENV in env:
    try:
      kwargs = {"num_processes": int(env[NUM_PROCESSES_ENV]),
                "process_id": int(env[PROCESS_ID_ENV])}
    except (KeyError, ValueError):
      raise ValueError(f"Set both {NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} to integers (now "
                       f"{env.get(NUM_PROCESSES_ENV)!r} and {env.get(PROCESS_ID_ENV)!r}), or "
                       f"neither.") from None
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as e:
    raise ValueError(
        f"config.distributed={mode!r} (launcher: {launcher or 'none detected'}) needs "
        f"jax.distributed.initialize() before JAX is first used, but it failed: {e}. Call "
        f"sharding.maybe_initialize_distributed(config) first, or set "
        f"--config.distributed=off to run this process on its own.") from e
  except ValueError as e:
    raise ValueError(
        f"config.distributed={mode!r} but JAX could not work out the cluster ({e}). Launch "
        f"under SLURM/Open MPI/a Cloud TPU slice, or export JAX_COORDINATOR_ADDRESS=host:port, "
        f"{NUM_PROCESSES_ENV} and {PROCESS_ID_ENV} on every process; or set "
        f"--config.distributed=off for a single process.") from e
  logging.info("jax.distributed started (%s): process %d of %d, %d local / %d global devices.",
               launcher or "detected by JAX", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


# --- Batches ---------------------------------------------------------------

def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded on the data axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def device_batches(local_batches, mesh: Mesh, size: int = 2):
  """Process-local numpy batches -> global batches on the mesh, `size` in flight."""
  return prefetch((global_batch(b, mesh) for b in local_batches), size)


def prefetch(batches, size: int = 2):
  """Keep `size` global batches in flight: their host->device copies overlap the step."""
  import collections
  import itertools
  queue = collections.deque(itertools.islice(batches, size))
  while queue:
    yield queue.popleft()
    queue.extend(itertools.islice(batches, 1))
