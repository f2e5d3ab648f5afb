"""What every model shares: the recorded-values collection, nonlinearities, compute
dtypes and the BatchNorm constructor from `config.bn`."""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from bn_inception.batchnorm import BatchNorm

# The flax collection a model puts per-example values into when it is mutable, for
# analysis rather than training (e.g. Figure 1's last-hidden-layer input). The
# percentiles evaluator (config.evals.probe) summarises each as
# eval/probe/<name>/p<q>.
RECORDED = "probe"

# config.model.activation and config.model.dtype (allowed values: schema/models.py).
ACTIVATIONS = {"sigmoid": nn.sigmoid, "relu": nn.relu, "tanh": jnp.tanh}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def activation_fn(name: str) -> Callable:
  return ACTIVATIONS[name]


def compute_dtype(name: str):
  """`config.model.dtype` -> the jnp dtype layers compute in."""
  return DTYPES[name]


def make_norm(bn_config, group_size: Optional[int], dtype=None) -> Optional[Callable]:
  """A BatchNorm constructor from `config.bn`, or None when BN is off."""
  if not bn_config.enabled:
    return None
  return functools.partial(
      BatchNorm, momentum=bn_config.momentum, epsilon=bn_config.epsilon,
      unbiased_variance=bn_config.unbiased_variance, group_size=group_size,
      dtype=dtype)
