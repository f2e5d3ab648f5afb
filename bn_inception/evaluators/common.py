"""What every evaluator shares: a network's predict_fns, process-local batches made
global on the mesh (padded and masked by the data layer: `data.base.eval_positions`,
`data.base.padded`), and per-example values brought to the host across processes."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from bn_inception import sharding
from bn_inception.batchnorm import BATCH_STATS
from bn_inception.models import RECORDED

Batch = Dict[str, np.ndarray]


@dataclasses.dataclass
class Network:
  """A network as evaluators see it: inference-mode `apply_fn(variables, x, train=False)`
  on inputs `normalize(uint8 images)` of `image_shape`."""
  apply_fn: Callable
  normalize: Callable
  image_shape: Tuple[int, int, int]


@dataclasses.dataclass
class LoopContext:
  """What the training loop hands its evaluators: the network, its eval split as
  process-local padded batches {"image", "label", "mask"} (`eval_batches()`), the mesh."""
  network: Network
  eval_batches: Callable[[], Iterator[Batch]]
  mesh: jax.sharding.Mesh


def logits_fn(network: Network) -> Callable:
  """predict_fn(variables, uint8 images) -> logits (inference-mode BN, Alg. 2)."""
  return lambda variables, images: network.apply_fn(
      variables, network.normalize(images), train=False)


def recorded_fn(network: Network) -> Callable:
  """fn(variables, uint8 images) -> {name: per-example values} the model records."""
  def fn(variables, images):
    _, mutated = network.apply_fn(variables, network.normalize(images), train=False,
                                  mutable=[RECORDED])
    return mutated.get(RECORDED, {})
  return fn


def batch_statistics_fn(network: Network) -> Callable:
  """predict_fn(variables, uint8 images) -> float32 softmax probabilities with BN
  normalising by the statistics of the batch at hand (Alg. 1 at inference, what
  Alg. 2 replaces); the moving averages are neither used nor changed."""
  def fn(variables, images):
    logits, _ = network.apply_fn(variables, network.normalize(images), train=True,
                                 mutable=[BATCH_STATS])
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return fn


def probabilities_fn(network: Network) -> Callable:
  """predict_fn(variables, uint8 images) -> float32 softmax probabilities."""
  logits = logits_fn(network)
  return lambda variables, images: jax.nn.softmax(
      logits(variables, images).astype(jnp.float32), axis=-1)


def jit_on_mesh(fn: Callable, mesh) -> Callable:
  """`fn(variables, batch)` compiled for replicated variables and a batch-sharded batch."""
  return jax.jit(fn, in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)))


def global_batches(local_batches, mesh) -> Iterator[Dict[str, jax.Array]]:
  """Process-local batches -> global batches sharded on the mesh's data axis."""
  for local in local_batches:
    yield sharding.global_batch(local, mesh)


def to_host(arrays) -> np.ndarray:
  """Batch-sharded global arrays -> one numpy array of every process's rows."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    arrays = [multihost_utils.process_allgather(a, tiled=True) for a in arrays]
  return np.concatenate([np.asarray(a) for a in arrays])


def local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in its local batch order."""
  if jax.process_count() == 1:
    return np.asarray(array)
  shards = {s.index[0].start or 0: s for s in array.addressable_shards}
  return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])


def sum_over_processes(values: np.ndarray) -> np.ndarray:
  """int64 `values` summed over every process (one all-gather)."""
  values = np.asarray(values, np.int64)
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils
  gathered = multihost_utils.process_allgather(values.ravel())
  return np.asarray(gathered).reshape(jax.process_count(), -1).sum(0).reshape(values.shape)
