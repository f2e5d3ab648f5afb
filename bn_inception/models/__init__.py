"""Models: `config.model.name` -> a flax.linen Module called as model(x, train=...).

Each model is one entry of `schema.MODELS` (its config section with defaults and
allowed values, its builder, what it exempts from weight decay, its classifier);
this module builds whichever the config names. Adding a model: a module with a
`create(config.model, norm)` function, and one `Model(...)` line in schema/models.py.
"""

from __future__ import annotations

from typing import Optional, Tuple

from bn_inception import registry, schema
from bn_inception.batchnorm import BATCH_STATS
from bn_inception.models.common import RECORDED, make_norm

__all__ = ["RECORDED", "make_norm", "state_variables", "init_variables", "check_fits_data",
           "create_model", "weight_decay_exempt", "classifier"]


def state_variables(state) -> dict:
  """The variables `model.apply` takes from a TrainState: params, plus the BN
  statistics when the model has any."""
  v = {"params": state.params}
  if state.batch_stats:
    v[BATCH_STATS] = state.batch_stats
  return v


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


def _entry(config) -> registry.Model:
  return registry.lookup(schema.MODELS, config.model.name, "model.name")


def create_model(config, bn_group_size: Optional[int] = None):
  """Build the model named by config.model.name; `bn_group_size` comes from sharding."""
  create = registry.resolve(_entry(config).create)
  return create(config.model, make_norm(config.bn, bn_group_size))


def weight_decay_exempt(config) -> Tuple[str, ...]:
  """Top-level modules of the model whose kernels get no L2 weight decay."""
  exempt = _entry(config).decay_exempt
  return tuple(registry.resolve(exempt)(config.model)) if exempt else ()


def classifier(config) -> str:
  """The model's output layer (re-initialised when fine-tuning changes the classes)."""
  return _entry(config).classifier
