"""Model factory: `config.model.name` -> a flax.linen Module called as model(x, train=...).

Each name's `config.model` section, with its defaults, is in bn_inception/schema.py.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Tuple

from bn_inception.batchnorm import BATCH_STATS, BatchNorm

# The flax collection a model puts per-example values into when it is mutable, for
# analysis rather than training (e.g. Figure 1's last-hidden-layer input). The
# percentiles evaluator (config.evals.probe) summarises each as
# eval/probe/<name>/p<q>.
RECORDED = "probe"


def state_variables(state) -> dict:
  """The variables `model.apply` takes from a TrainState: params, plus the BN
  statistics when the model has any."""
  v = {"params": state.params}
  if state.batch_stats:
    v[BATCH_STATS] = state.batch_stats
  return v


def make_norm(bn_config, group_size: Optional[int], dtype=None) -> Optional[Callable]:
  """A BatchNorm constructor from `config.bn`, or None when BN is off."""
  if not bn_config.enabled:
    return None
  return functools.partial(
      BatchNorm, momentum=bn_config.momentum, epsilon=bn_config.epsilon,
      unbiased_variance=bn_config.unbiased_variance, group_size=group_size,
      dtype=dtype)


def init_variables(model, image_shape, rng) -> dict:
  """The model's initial variables ({'params', 'batch_stats'?}) for `image_shape`
  inputs; what a model merely records (its other collections) is not a variable."""
  import jax.numpy as jnp
  dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  variables = model.init({"params": rng, "dropout": rng}, dummy, train=False)
  return {k: v for k, v in variables.items() if k in ("params", BATCH_STATS)}


def check_fits_data(model_config, source) -> None:
  """Refuse a model whose class count or input size differs from the data's."""
  classes = model_config.num_classes
  if classes != source.num_classes:
    raise ValueError(f"config.model.num_classes={classes} but the dataset has "
                     f"{source.num_classes} classes.")
  size = model_config.image_size
  if tuple(source.image_shape[:2]) != (size, size):
    raise ValueError(f"config.model.image_size={size} but the data yields "
                     f"{source.image_shape[:2]} images (config.data.image_size).")


def create_model(config, bn_group_size: Optional[int] = None):
  """Build the model named by config.model.name; `bn_group_size` comes from sharding."""
  name = config.model.name
  if name == "mlp":
    from bn_inception.models.mlp import MLP, compute_dtype
    m = config.model
    return MLP(hidden_units=tuple(m.hidden_units), num_classes=m.num_classes,
               activation=m.activation, init_stddev=m.init_stddev,
               probe_unit=m.probe_unit, norm=make_norm(config.bn, bn_group_size),
               dtype=compute_dtype(m.dtype))
  if name == "bn_inception":
    from bn_inception.models.inception import create_inception
    return create_inception(config.model, make_norm(config.bn, bn_group_size))
  if name == "mini_inception":
    from bn_inception.models.mini_inception import create_mini_inception
    return create_mini_inception(config.model, make_norm(config.bn, bn_group_size))
  raise ValueError(f"Unknown model {name!r} (config.model.name); known: mlp, bn_inception, "
                   "mini_inception.")


def weight_decay_exempt(config) -> Tuple[str, ...]:
  """Top-level modules of the model whose kernels get no L2 weight decay."""
  name = config.model.name
  if name == "bn_inception":
    from bn_inception.models.inception import weight_decay_exempt as exempt
    return exempt(config.model)
  if name == "mini_inception":
    from bn_inception.models.inception import weight_decay_exempt as exempt
    from bn_inception.models.mini_inception import mini_table
    return exempt(config.model, mini_table())
  return ()
