"""BN-Inception and the Inception baseline, built from the Figure 5 table (Sec. 4.2, Appendix).

The table is data (models/figure5.py, with the notes on where the printed one
contradicts itself); one builder (`Inception`) turns its rows into flax modules,
and `model_summary` checks the table's cost walk (`row_costs`) against them.

Choices the paper does not state, and what we do:
* padding is SAME everywhere (as in TF-slim), so every input of 32x32 px or more
  (smaller ones too) flows through and the final pool is a global average;
  average pooling excludes the padding, like TensorFlow's;
* weights are drawn from a truncated normal with He (fan-in) variance, times
  `init_scale` (Sec. 4.2.3's "increased initial weights" ensemble members);
* with BN on, each convolution has no bias (BN's beta replaces it, Sec. 3.2) and
  BN sits between the convolution and the nonlinearity (Sec. 3.2); a separable
  convolution gets one BN, after its pointwise part;
* `per_activation_bn_last`: in the last Inception module (5b; the reduced table of
  models/mini_inception.py: 4a) every BN keeps
  statistics, gamma and beta per activation (h, w, c) over the examples of a
  batch, i.e. the non-convolutional BN of Sec. 3.1, instead of per feature map
  over examples x height x width (Sec. 3.2). This is our reading of the ensemble
  members' "per-activation Batch Normalization with last hidden layers" (Sec.
  4.2.3); it makes the number of BN parameters depend on the image size.

Where TF-slim's `inception_v2` differs (its public checkpoint imports through
`bn_inception/tfslim.py`): its BN layers have no gamma (`scale=False`), and its
first convolution (`Conv2d_1a_7x7`, separable) has a bias and no BN and is left
out of the L2 regulariser, because its arg scope attaches BN and L2 only to
`conv2d`. `bn_scale=False, first_conv_bn=False` builds exactly that network
(and `weight_decay_exempt` exempts conv1 from L2); the defaults are the paper's
(BN with gamma and beta after every convolution, Sec. 3.2).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import flax.linen as nn

from bn_inception.models.common import activation_fn, compute_dtype, make_norm
from bn_inception.models.figure5 import (Branch, ConvSpec, LinearRow, PoolRow, Row, RowCost,
                                         figure5_table, first_conv_row,
                                         last_inception_module, row_branches, row_costs)

INTERMEDIATES = "intermediates"  # when mutable, gets {ROW_OUTPUTS: {row name: its output}}
ROW_OUTPUTS = "row_outputs"


# ----------------------------------------------------------------------------
# The Figure 5 table.

# ----------------------------------------------------------------------------
# Building blocks.

def local_response_norm(x, depth_radius: int = 2, bias: float = 1.0, alpha: float = 2e-5,
                        beta: float = 0.75):
  """tf.nn.local_response_normalization over the channel (last) axis:

  out[..., d] = x[..., d] / (bias + alpha * sum_{d'=d-r}^{d+r} x[..., d']^2) ** beta
  (channels beyond the edges count as zero). Computed in float32.
  """
  x32 = jnp.asarray(x, jnp.float32)
  sq = jnp.square(x32)
  c = x.shape[-1]
  padded = jnp.pad(sq, [(0, 0)] * (x.ndim - 1) + [(depth_radius, depth_radius)])
  window = sum(padded[..., i:i + c] for i in range(2 * depth_radius + 1))
  return (x32 / jnp.power(bias + alpha * window, beta)).astype(x.dtype)


def pool(x, kind: str, patch: int, stride: int):
  """3x3 max or average pooling with SAME padding (the average excludes the padding)."""
  window, strides = (patch, patch), (stride, stride)
  if kind == "max":
    return nn.max_pool(x, window, strides, padding="SAME")
  if kind == "avg":
    return nn.avg_pool(x, window, strides, padding="SAME", count_include_pad=False)
  raise ValueError(f"Unknown pooling {kind!r}; known: 'max', 'avg'.")


class ConvUnit(nn.Module):
  """Convolution -> BN -> nonlinearity (Sec. 3.2); without BN the convolution has a bias."""
  spec: ConvSpec
  norm: Optional[Callable] = None
  activation: str = "relu"
  per_activation_bn: bool = False
  dtype: Any = jnp.float32
  init_scale: float = 1.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    s = self.spec
    use_bias = self.norm is None
    conv = _conv_factory(self.dtype, self.init_scale)
    if s.depth_multiplier:
      # Depthwise (one 7x7 filter bank per input channel) then pointwise 1x1.
      x = conv(x.shape[-1] * s.depth_multiplier, s.patch, s.stride,
               feature_group_count=x.shape[-1], use_bias=False, name="depthwise")(x)
      x = conv(s.features, 1, 1, use_bias=use_bias, name="pointwise")(x)
    else:
      x = conv(s.features, s.patch, s.stride, use_bias=use_bias, name="conv")(x)
    if self.norm is not None:
      bn = self.norm(use_running_average=not train, dtype=self.dtype, name="bn")
      if self.per_activation_bn:  # statistics per (h, w, c) over the examples (Sec. 3.1)
        x = bn(x.reshape(x.shape[0], -1)).reshape(x.shape)
      else:                       # per feature map over examples x h x w (Sec. 3.2)
        x = bn(x)
    return activation_fn(self.activation)(x)


def _conv_factory(dtype, init_scale: float):
  """nn.Conv with SAME padding, float32 params and He-normal initial weights x init_scale."""
  init = nn.initializers.variance_scaling(2.0 * init_scale ** 2, "fan_in", "truncated_normal")

  def make(features, patch, stride, **kw):
    return nn.Conv(features, (patch, patch), (stride, stride), padding="SAME", dtype=dtype,
                   param_dtype=jnp.float32, kernel_init=init, **kw)
  return make


class Block(nn.Module):
  """A convolution or Inception row: its branches side by side, concatenated on channels."""
  branches: Tuple[Branch, ...]
  unit: Callable  # ConvUnit with everything but `spec` and `name` bound

  @nn.compact
  def __call__(self, x, *, train: bool):
    outputs = []
    for branch in self.branches:
      y = x
      if branch.pool is not None:
        y = pool(y, branch.pool, 3, branch.pool_stride)
      for spec in branch.convs:
        y = self.unit(spec=spec, name=spec.name)(y, train=train)
      outputs.append(y)
    return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)


class Inception(nn.Module):
  """BN-Inception / the Inception baseline: `model(images, train=...)` -> float32 logits.

  `norm` is a BatchNorm constructor (BN-Inception) or None (the baseline, whose
  convolutions then have biases). `bn_scale=False` drops BN's gamma and
  `first_conv_bn=False` gives the first convolution row a bias and no BN
  (TF-slim's network). When the `intermediates` collection is mutable, every
  row's output is written to intermediates[ROW_OUTPUTS][row name].
  """
  table: Tuple[Row, ...]
  num_classes: int
  norm: Optional[Callable] = None
  activation: str = "relu"
  dropout_rate: float = 0.0
  lrn: bool = False
  lrn_depth_radius: int = 2
  lrn_bias: float = 1.0
  lrn_alpha: float = 2e-5
  lrn_beta: float = 0.75
  dtype: Any = jnp.float32
  init_scale: float = 1.0
  per_activation_bn_rows: Tuple[str, ...] = ()
  bn_scale: bool = True
  first_conv_bn: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = jnp.asarray(x, self.dtype)
    norm = self.norm
    if norm is not None and not self.bn_scale:
      norm = functools.partial(norm, use_scale=False)
    no_bn_row = None if self.first_conv_bn else first_conv_row(self.table)
    for row in self.table:
      if isinstance(row, PoolRow):
        if row.patch:
          x = pool(x, row.kind, row.patch, row.stride)
        else:  # global average, in float32
          x = jnp.mean(jnp.asarray(x, jnp.float32), axis=(1, 2), keepdims=True)
      elif isinstance(row, LinearRow):
        x = x.reshape(x.shape[0], -1)
        if self.dropout_rate:
          x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
                     kernel_init=nn.initializers.variance_scaling(
                         self.init_scale ** 2, "fan_in", "truncated_normal"),
                     name=row.name)(x)
      else:
        unit = functools.partial(
            ConvUnit, norm=None if row.name == no_bn_row else norm,
            activation=self.activation, dtype=self.dtype,
            init_scale=self.init_scale,
            per_activation_bn=row.name in self.per_activation_bn_rows)
        x = Block(row_branches(row), unit, name=row.name)(x, train=train)
      if self.lrn and getattr(row, "lrn", False):
        x = local_response_norm(x, self.lrn_depth_radius, self.lrn_bias, self.lrn_alpha,
                                self.lrn_beta)
      self.sow(INTERMEDIATES, ROW_OUTPUTS, {row.name: x}, init_fn=dict,
               reduce_fn=lambda outputs, new: {**outputs, **new})
    return jnp.asarray(x, jnp.float32)


def create_inception(model_config, norm: Optional[Callable]) -> Inception:
  """BN-Inception for `config.model` (schema.inception_model_config)."""
  m = model_config
  return build_inception(m, norm, figure5_table(m.pool_projection_4cd, m.first_conv))


def build_inception(model_config, norm: Optional[Callable], table: Tuple[Row, ...]) -> Inception:
  """The network of `table` (Figure 5, or e.g. the reduced table of
  models/mini_inception.py) with the unit and classifier knobs of `config.model`."""
  m = model_config
  return Inception(
      table=table, num_classes=m.num_classes,
      norm=norm, activation=m.activation, dropout_rate=m.dropout_rate, lrn=m.lrn,
      lrn_depth_radius=m.lrn_depth_radius, lrn_bias=m.lrn_bias, lrn_alpha=m.lrn_alpha,
      lrn_beta=m.lrn_beta, dtype=compute_dtype(m.dtype), init_scale=m.init_scale,
      per_activation_bn_rows=last_inception_module(table) if m.per_activation_bn_last else (),
      bn_scale=m.bn_scale,
      first_conv_bn=m.first_conv_bn)


def weight_decay_exempt(model_config, table: Optional[Sequence[Row]] = None) -> Tuple[str, ...]:
  """Rows whose kernels get no L2: conv1 when `first_conv_bn=False` (TF-slim's
  regulariser, like its BN, is attached only to `conv2d`, not to conv1's
  `separable_conv2d`)."""
  if model_config.first_conv_bn:
    return ()
  if table is None:
    table = figure5_table(model_config.pool_projection_4cd, model_config.first_conv)
  return (first_conv_row(table),)


def model_costs(config, in_channels: int = 3) -> Tuple[RowCost, ...]:
  """`row_costs` for a config at `config.model.image_size`."""
  m = config.model
  table = figure5_table(m.pool_projection_4cd, m.first_conv)
  return row_costs(table, m.image_size, m.num_classes, bn=config.bn.enabled,
                   in_channels=in_channels,
                   per_activation_bn_rows=last_inception_module(table)
                   if m.per_activation_bn_last else (), bn_scale=m.bn_scale,
                   first_conv_bn=m.first_conv_bn)


def model_summary(config, in_channels: int = 3) -> Tuple[RowCost, ...]:
  """Per-row costs, checked against the flax model itself (traced with jax.eval_shape).

  Output shapes and parameter counts come from the built model; multiply-adds
  are analytic (`conv_cost`). Raises RuntimeError if the table walk and the
  model disagree.
  """
  m = config.model
  model = create_inception(m, make_norm(config.bn, None))
  x = jax.ShapeDtypeStruct((1, m.image_size, m.image_size, in_channels), jnp.float32)

  def run(x):
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                           x, train=False)
    _, state = model.apply(variables, x, train=False, mutable=[INTERMEDIATES])
    return variables["params"], state[INTERMEDIATES][ROW_OUTPUTS]

  params, inter = jax.eval_shape(run, x)
  analytic = model_costs(config, in_channels)
  rows = []
  for cost in analytic:
    shape = tuple(inter[cost.name].shape[1:])
    n = sum(math.prod(l.shape) for l in jax.tree.leaves(params.get(cost.name, {})))
    if shape != cost.output_shape or n != cost.params:
      raise RuntimeError(f"{cost.name}: the model gives {shape}, {n} params; the table walk "
                         f"gives {cost.output_shape}, {cost.params}.")
    rows.append(cost)
  total = sum(math.prod(l.shape) for l in jax.tree.leaves(params))
  if total != sum(r.params for r in rows):
    raise RuntimeError(f"The model has {total} params, the rows sum to "
                       f"{sum(r.params for r in rows)}.")
  return tuple(rows)
