"""The MNIST network of Sec. 4.1 / Figure 1."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax.numpy as jnp
import flax.linen as nn

from bn_inception.models.common import RECORDED, activation_fn, compute_dtype


class MLP(nn.Module):
  """Fully-connected hidden layers, optional BN before each nonlinearity, softmax output.

  With BN the Dense bias is dropped: BN's beta takes its role (Sec. 3.2). The
  input to unit `probe_unit` of the last hidden nonlinearity is written to the
  `RECORDED` collection when it is mutable (Figure 1(b, c)). Hidden layers compute
  in `dtype`; parameters, BN normalisation and the logits stay float32.
  """
  hidden_units: Sequence[int]
  num_classes: int
  activation: str = "sigmoid"
  init_stddev: float = 0.01
  probe_unit: int = 0
  norm: Optional[Callable] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    act = activation_fn(self.activation)
    init = nn.initializers.normal(self.init_stddev)
    x = jnp.reshape(jnp.asarray(x, self.dtype), (x.shape[0], -1))
    for i, units in enumerate(self.hidden_units):
      x = nn.Dense(units, use_bias=self.norm is None, kernel_init=init, dtype=self.dtype,
                   param_dtype=jnp.float32, name=f"dense{i}")(x)
      if self.norm is not None:
        x = self.norm(use_running_average=not train, dtype=self.dtype, name=f"bn{i}")(x)
      if i == len(self.hidden_units) - 1 and self.is_mutable_collection(RECORDED):
        self.put_variable(RECORDED, "last_hidden_input",
                          jnp.asarray(x[:, self.probe_unit], jnp.float32))
      x = act(x)
    return nn.Dense(self.num_classes, kernel_init=init, dtype=jnp.float32,
                    param_dtype=jnp.float32, name="logits")(x)


def create_mlp(model_config, norm: Optional[Callable]) -> MLP:
  """The MLP for `config.model` (schema.mlp_model_config)."""
  m = model_config
  return MLP(hidden_units=tuple(m.hidden_units), num_classes=m.num_classes,
             activation=m.activation, init_stddev=m.init_stddev, probe_unit=m.probe_unit,
             norm=norm, dtype=compute_dtype(m.dtype))
