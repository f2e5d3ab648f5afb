"""The Batch Normalizing Transform (Ioffe & Szegedy 2015, Alg. 1 and Alg. 2).

`BatchNorm` is a drop-in for `flax.linen.BatchNorm` (same variable names:
params `scale`/`bias`, batch_stats `mean`/`var`) that adds what flax lacks:

* the UNBIASED population variance of Alg. 2 (Var[x] = m/(m-1) E_B[sigma_B^2]):
  each batch variance is multiplied by m/(m-1) before it enters the moving
  average, where m is the number of values behind one statistic (examples per
  statistics batch for dense layers, examples x height x width for convolutions,
  the "effective mini-batch" m' = m*p*q of Sec. 3.2). `unbiased_variance=False`
  gives flax's biased estimate.
* statistics over fixed groups of `group_size` examples ("ghost" batches). The
  groups are a reshape of the batch axis, so with a batch sharded over devices
  and group_size = per-device batch each device normalises over its own examples
  (the paper's 32 per replica) and XLA inserts no all-reduce; `group_size=None`
  normalises over the whole (global) batch.
* an optional `axis_name` for use under `shard_map`/`vmap`: statistics are then
  averaged over that named axis (equal shard sizes assumed).
* a two-pass variance, E[(x - mu)^2], instead of flax's default E[x^2] - E[x]^2.
* the per-batch moments written to the `batch_moments` collection when it is
  mutable, for `population_statistics` (Alg. 2, step 10).

Normalisation is computed in float32 whatever the compute dtype; the output is
cast to `dtype`. The moving averages use flax's decay convention:
ra <- momentum * ra + (1 - momentum) * batch_value.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import flax.linen as nn

BATCH_STATS = "batch_stats"
BATCH_MOMENTS = "batch_moments"


def batch_moments(x: jax.Array, group_size: Optional[int] = None,
                  axis_name: Optional[str] = None):
  """Per-feature mean and biased variance of `x` over all axes but the last.

  Returns (mean, var, m): mean/var have shape (groups, 1, ..., 1, features) so
  they broadcast against the grouped input, and m is the number of values
  behind each statistic.
  """
  batch = x.shape[0]
  if group_size is None:
    group_size = batch
  if group_size <= 0 or batch % group_size:
    raise ValueError(
        f"BatchNorm: batch of {batch} examples cannot be split into groups of "
        f"{group_size}; the batch must be a multiple of the group size.")
  xg = x.reshape((batch // group_size, group_size) + x.shape[1:])
  axes = tuple(range(1, xg.ndim - 1))
  mean = jnp.mean(xg, axis=axes, keepdims=True)
  if axis_name is not None:
    mean = jax.lax.pmean(mean, axis_name)
  var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
  m = 1
  for a in axes:
    m *= xg.shape[a]
  if axis_name is not None:
    var = jax.lax.pmean(var, axis_name)
    m *= jax.lax.psum(1, axis_name)
  return mean, var, m


class BatchNorm(nn.Module):
  """Batch Normalizing Transform y = gamma * (x - mu_B) / sqrt(sigma_B^2 + eps) + beta.

  Statistics are taken per feature (the last axis) over every other axis:
  per activation for dense layers, per feature map over batch x height x width
  for convolutions (Sec. 3.2).
  """
  use_running_average: Optional[bool] = None
  momentum: float = 0.99
  epsilon: float = 1e-3
  unbiased_variance: bool = True
  group_size: Optional[int] = None
  axis_name: Optional[str] = None
  dtype: Any = None
  param_dtype: Any = jnp.float32
  use_scale: bool = True
  use_bias: bool = True
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x, use_running_average: Optional[bool] = None):
    use_running_average = nn.merge_param(
        "use_running_average", self.use_running_average, use_running_average)
    features = x.shape[-1]
    ra_mean = self.variable(BATCH_STATS, "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable(BATCH_STATS, "var", jnp.ones, (features,), jnp.float32)
    scale = (self.param("scale", self.scale_init, (features,), self.param_dtype)
             if self.use_scale else None)
    bias = (self.param("bias", self.bias_init, (features,), self.param_dtype)
            if self.use_bias else None)
    out_dtype = self.dtype or x.dtype
    x32 = jnp.asarray(x, jnp.float32)

    if use_running_average:
      # Alg. 2, step 11: the inference network is a fixed affine transform.
      mean, var = ra_mean.value, ra_var.value
      y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
    else:
      mean, var, m = batch_moments(x32, self.group_size, self.axis_name)
      xg = x32.reshape(mean.shape[:1] + (-1,) + x32.shape[1:])
      y = ((xg - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x32.shape)
      # One value per feature for the population estimate: the average over
      # groups of the group statistics (E_B in Alg. 2, step 10).
      batch_mean = mean.reshape(-1, features).mean(axis=0)
      batch_var = var.reshape(-1, features).mean(axis=0)
      if self.unbiased_variance:
        batch_var = batch_var * (m / max(m - 1, 1))
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * batch_mean
        ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * batch_var
      if self.is_mutable_collection(BATCH_MOMENTS) and not self.is_initializing():
        self.put_variable(BATCH_MOMENTS, "mean", batch_mean)
        self.put_variable(BATCH_MOMENTS, "var", batch_var)

    if scale is not None:
      y = y * jnp.asarray(scale, jnp.float32)
    if bias is not None:
      y = y + jnp.asarray(bias, jnp.float32)
    return y.astype(out_dtype)


def population_statistics(moments_fn: Callable[[Any, Any], Any], variables,
                          batches: Iterable[Any]):
  """Exact population statistics by averaging over K training batches (Alg. 2, step 10).

  `moments_fn(variables, batch)` runs the network in training mode with the
  `batch_moments` collection mutable and returns that collection (a tree that
  mirrors `batch_stats`). The result is E_B[mu_B] and E_B[Var_B] (with the
  m/(m-1) factor when the layers are configured unbiased), written into a copy
  of `variables["batch_stats"]`. Returns (new_variables, K).
  """
  total, k = None, 0
  for batch in batches:
    moments = moments_fn(variables, batch)
    total = moments if total is None else jax.tree.map(jnp.add, total, moments)
    k += 1
  if k == 0:
    raise ValueError("population_statistics needs at least one batch.")
  averaged = jax.tree.map(lambda t: t / k, total)
  new_stats = _merge(variables[BATCH_STATS], averaged)
  return {**variables, BATCH_STATS: new_stats}, k


def _merge(stats, moments):
  """Replace every leaf of `stats` that `moments` has at the same path."""
  if isinstance(moments, dict) or hasattr(moments, "items"):
    out = dict(stats)
    for key, value in moments.items():
      if key not in stats:
        raise KeyError(f"batch_moments has {key!r} with no batch_stats counterpart.")
      out[key] = _merge(stats[key], value)
    return out
  return jnp.asarray(moments, jnp.asarray(stats).dtype)


def statistics_change_on_resume(stats_mode: str, global_batch: int, saved_devices: int,
                                devices: int) -> Optional[str]:
  """Why a run resumed on `devices` that was trained on `saved_devices` normalises over
  other examples than before (None: it does not). Only config.bn.stats_mode='per_device'
  follows the device count (sharding.bn_group_size); 'group' keeps it fixed."""
  if stats_mode != "per_device" or saved_devices == devices:
    return None
  return (f"Resuming a bn.stats_mode='per_device' run on {devices} devices that was trained "
          f"on {saved_devices}: BN statistics now cover {global_batch // devices} instead of "
          f"{global_batch // saved_devices} examples. Use stats_mode='group' to keep them "
          f"fixed across device counts.")
