"""Model factory: `config.model.name` -> a flax.linen Module called as model(x, train=...)."""

from __future__ import annotations

import functools
from typing import Callable, Optional

from bn_inception.batchnorm import BATCH_STATS, BatchNorm

# The flax collection a model puts per-example values into when it is mutable, for
# analysis rather than training (e.g. Figure 1's last-hidden-layer input). The
# training loop summarises each by config.model.record_percentiles, as
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


def create_model(config, bn_group_size: Optional[int] = None):
  """Build the model named by config.model.name; `bn_group_size` comes from sharding."""
  name = config.model.name
  if name == "mlp":
    from bn_inception.models.mlp import MLP
    m = config.model
    return MLP(hidden_units=tuple(m.hidden_units), num_classes=m.num_classes,
               activation=m.activation, init_stddev=m.init_stddev,
               probe_unit=m.probe_unit, norm=make_norm(config.bn, bn_group_size))
  if name == "bn_inception":
    from bn_inception.models.inception import create_inception
    return create_inception(config.model, make_norm(config.bn, bn_group_size))
  if name == "mini_inception":
    from bn_inception.models.mini_inception import create_mini_inception
    return create_mini_inception(config.model, make_norm(config.bn, bn_group_size))
  raise ValueError(f"Unknown model {name!r} (config.model.name); known: mlp, bn_inception, "
                   "mini_inception.")
