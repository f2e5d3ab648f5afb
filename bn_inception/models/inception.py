"""BN-Inception and the Inception baseline, built from the Figure 5 table (Sec. 4.2, Appendix).

The table is data (`figure5_table`); one builder (`Inception`) turns its rows into
flax modules, and `row_costs` walks the same rows analytically for the summary
(output shape, parameters and multiply-adds per row).

What Figure 5 changes relative to GoogLeNet (Appendix): each 5x5 convolution is
replaced by two 3x3 ones (the "double 3x3" branch); there are three 28x28 modules
(3a, 3b, 3c); pooling inside a module is sometimes average, sometimes max; there
is no pooling layer between modules, the grid is reduced by the stride-2 modules
3c and 4e instead; the first convolution is depthwise-separable with depth
multiplier 8. No auxiliary classifiers are built.

The channel numbers below are the paper's; TF-slim's `inception_v2.py` has
the same ones (`Mixed_3b` .. `Mixed_5c` = 3a .. 5b) and resolves the one place
where the printed table contradicts itself: it lists pool projection 128 for 4c
and 4d but output size 14x14x576 for both. With 128 the modules output
160+160+160+128 = 608 and 96+192+192+128 = 608 channels; with 96 (TF-slim's
choice) they output 576, as printed. `pool_projection_4cd` selects which: 96 (the default)
keeps the printed output sizes (as TF-slim does); 128 keeps the printed projection
column. The printed 4e output (7x7x1024 = 192 + 256 + 576 passed through)
also only holds with 96; with 128 it is 1056. At 224x224 with 1000 classes,
BN on and the separable first convolution, 96 gives 11,188,288 parameters and
1.935 G multiply-adds, 128 gives 11,278,528 and 1.949 G.

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

import dataclasses
import functools
import math
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import flax.linen as nn

from bn_inception.models.mlp import activation_fn, compute_dtype

INTERMEDIATES = "intermediates"  # when mutable, gets {ROW_OUTPUTS: {row name: its output}}
ROW_OUTPUTS = "row_outputs"
DEPTH_MULTIPLIER = 8             # the separable first convolution (Appendix; also TF-slim's)


# ----------------------------------------------------------------------------
# The Figure 5 table.

@dataclasses.dataclass(frozen=True)
class ConvRow:
  """A convolution row; `reduce` > 0 puts a 1x1 convolution with that many filters first."""
  name: str
  patch: int
  stride: int
  depth: int
  reduce: int = 0
  depth_multiplier: int = 0  # > 0: depthwise-separable with this depth multiplier
  lrn: bool = False          # GoogLeNet's local response normalisation after this row


@dataclasses.dataclass(frozen=True)
class PoolRow:
  name: str
  kind: str        # 'max' | 'avg'
  patch: int       # 0: global (the table's 7x7 average pool at 224 px)
  stride: int = 1
  lrn: bool = False


@dataclasses.dataclass(frozen=True)
class InceptionRow:
  """One Inception module: the columns of Figure 5.

  A stride-2 module (3c, 4e) has no 1x1 branch; the last convolutions of its
  3x3 and double-3x3 branches have stride 2 and its pool branch is a stride-2
  3x3 max pool passed through without projection ("pass through").
  """
  name: str
  n1x1: int
  n3x3_reduce: int
  n3x3: int
  double3x3_reduce: int
  double3x3: int
  pool: str            # 'avg' | 'max'
  pool_proj: int       # 0: pass through
  stride: int = 1

  def __post_init__(self):
    if self.stride == 2 and (self.n1x1 or self.pool_proj or self.pool != "max"):
      raise ValueError(f"{self.name}: a stride-2 module has no 1x1 branch and passes a "
                       "max pool through without projection.")


@dataclasses.dataclass(frozen=True)
class LinearRow:
  name: str


Row = Union[ConvRow, PoolRow, InceptionRow, LinearRow]


def figure5_table(pool_projection_4cd: int = 96, first_conv: str = "separable"
                  ) -> Tuple[Row, ...]:
  """Figure 5, row by row (input 224x224x3; output sizes in the comments)."""
  if pool_projection_4cd not in (96, 128):
    raise ValueError(f"model.pool_projection_4cd must be 96 or 128, not {pool_projection_4cd!r}.")
  if first_conv not in ("separable", "plain"):
    raise ValueError(f"model.first_conv must be 'separable' or 'plain', not {first_conv!r}.")
  p = pool_projection_4cd
  I = InceptionRow
  return (
      ConvRow("conv1", 7, 2, 64,
              depth_multiplier=DEPTH_MULTIPLIER if first_conv == "separable" else 0),  # 112x112x64
      PoolRow("pool1", "max", 3, 2, lrn=True),                     # 56x56x64
      ConvRow("conv2", 3, 1, 192, reduce=64, lrn=True),            # 56x56x192
      PoolRow("pool2", "max", 3, 2),                               # 28x28x192
      #  name          1x1  3x3r 3x3  d3x3r d3x3 pool  proj        output
      I("inception_3a", 64, 64, 64, 64, 96, "avg", 32),            # 28x28x256
      I("inception_3b", 64, 64, 96, 64, 96, "avg", 64),            # 28x28x320
      I("inception_3c", 0, 128, 160, 64, 96, "max", 0, stride=2),  # 14x14x576
      I("inception_4a", 224, 64, 96, 96, 128, "avg", 128),         # 14x14x576
      I("inception_4b", 192, 96, 128, 96, 128, "avg", 128),        # 14x14x576
      I("inception_4c", 160, 128, 160, 128, 160, "avg", p),        # 14x14x576 (608 with p=128)
      I("inception_4d", 96, 128, 192, 160, 192, "avg", p),         # 14x14x576 (608 with p=128)
      I("inception_4e", 0, 128, 192, 192, 256, "max", 0, stride=2),  # 7x7x1024
      I("inception_5a", 352, 192, 320, 160, 224, "avg", 128),      # 7x7x1024
      I("inception_5b", 352, 192, 320, 192, 224, "max", 128),      # 7x7x1024
      PoolRow("pool5", "avg", 0),                                  # 1x1x1024
      LinearRow("logits"),                                         # 1000 (softmax in the loss)
  )


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """One conv -> BN -> nonlinearity unit."""
  name: str
  patch: int
  features: int
  stride: int = 1
  depth_multiplier: int = 0


@dataclasses.dataclass(frozen=True)
class Branch:
  """An optional 3x3 pool followed by a chain of convolution units."""
  convs: Tuple[ConvSpec, ...]
  pool: Optional[str] = None
  pool_stride: int = 1


def row_branches(row: Union[ConvRow, InceptionRow]) -> Tuple[Branch, ...]:
  """The parallel branches of a convolution or Inception row (concatenated on channels)."""
  if isinstance(row, ConvRow):
    convs = (ConvSpec("reduce", 1, row.reduce),) if row.reduce else ()
    convs += (ConvSpec("conv", row.patch, row.depth, row.stride, row.depth_multiplier),)
    return (Branch(convs),)
  s = row.stride
  branches = []
  if row.n1x1:
    branches.append(Branch((ConvSpec("1x1", 1, row.n1x1),)))
  branches.append(Branch((ConvSpec("3x3_reduce", 1, row.n3x3_reduce),
                          ConvSpec("3x3", 3, row.n3x3, s))))
  branches.append(Branch((ConvSpec("double3x3_reduce", 1, row.double3x3_reduce),
                          ConvSpec("double3x3_a", 3, row.double3x3),
                          ConvSpec("double3x3_b", 3, row.double3x3, s))))
  proj = (ConvSpec("pool_proj", 1, row.pool_proj),) if row.pool_proj else ()
  branches.append(Branch(proj, pool=row.pool, pool_stride=s))
  return tuple(branches)


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


def last_inception_module(table: Sequence[Row]) -> Tuple[str, ...]:
  """The rows that get per-activation BN: the last Inception module (Figure 5: 5b), the
  "last hidden layers" of the Sec. 4.2.3 ensemble members."""
  return tuple(r.name for r in table if isinstance(r, InceptionRow))[-1:]


def create_inception(model_config, norm: Optional[Callable]) -> Inception:
  """BN-Inception for `config.model` (schema.inception_model_config)."""
  m = model_config
  return build_inception(m, norm, figure5_table(m.pool_projection_4cd, m.first_conv))


def build_inception(model_config, norm: Optional[Callable], table: Tuple[Row, ...]) -> Inception:
  """The network of `table` (Figure 5, or e.g. the reduced table of
  models/mini_inception.py) with the unit and classifier knobs of `config.model`."""
  m = model_config
  if m.per_activation_bn_last and norm is None:
    raise ValueError("model.per_activation_bn_last=True needs BN: set bn.enabled=True.")
  if m.activation not in ("relu", "sigmoid"):
    raise ValueError(f"model.activation must be 'relu' or 'sigmoid', not {m.activation!r}.")
  if not 0.0 <= m.dropout_rate < 1.0:
    raise ValueError(f"model.dropout_rate must be in [0, 1), not {m.dropout_rate!r}.")
  if m.init_scale <= 0:
    raise ValueError(f"model.init_scale must be positive, not {m.init_scale!r}.")
  if not m.first_conv_bn and norm is None:
    raise ValueError("model.first_conv_bn=False needs BN (bn.enabled=True): without BN every "
                     "convolution already has a bias and no BN.")
  return Inception(
      table=table, num_classes=m.num_classes,
      norm=norm, activation=m.activation, dropout_rate=m.dropout_rate, lrn=m.lrn,
      lrn_depth_radius=m.lrn_depth_radius, lrn_bias=m.lrn_bias, lrn_alpha=m.lrn_alpha,
      lrn_beta=m.lrn_beta, dtype=compute_dtype(m.dtype), init_scale=m.init_scale,
      per_activation_bn_rows=last_inception_module(table) if m.per_activation_bn_last else (),
      bn_scale=m.bn_scale,
      first_conv_bn=m.first_conv_bn)


def first_conv_row(table: Sequence[Row]) -> str:
  """The name of the table's first convolution row (conv1)."""
  return next(row.name for row in table if isinstance(row, ConvRow))


def weight_decay_exempt(model_config, table: Optional[Sequence[Row]] = None) -> Tuple[str, ...]:
  """Rows whose kernels get no L2: conv1 when `first_conv_bn=False` (TF-slim's
  regulariser, like its BN, is attached only to `conv2d`, not to conv1's
  `separable_conv2d`)."""
  if model_config.first_conv_bn:
    return ()
  if table is None:
    table = figure5_table(model_config.pool_projection_4cd, model_config.first_conv)
  return (first_conv_row(table),)


# ----------------------------------------------------------------------------
# Analytic cost of each row (for the summary; the tests check it against flax).

@dataclasses.dataclass(frozen=True)
class RowCost:
  name: str
  output_shape: Tuple[int, int, int]  # (h, w, c); (classes,) for the logits
  params: int
  macs: int   # multiply-adds of the convolutions / the linear layer


def _same(size: int, stride: int) -> int:
  return -(-size // stride)


def conv_cost(h: int, w: int, cin: int, spec: ConvSpec, bn: bool,
              per_activation_bn: bool = False, bn_scale: bool = True
              ) -> Tuple[Tuple[int, int, int], int, int]:
  """(output shape, parameters, multiply-adds) of one unit on an h x w x cin input.

  multiply-adds = out_h * out_w * patch^2 * (cin / groups) * cout per convolution.
  """
  oh, ow, k, cout = _same(h, spec.stride), _same(w, spec.stride), spec.patch, spec.features
  if spec.depth_multiplier:
    mid = cin * spec.depth_multiplier
    params = k * k * mid + mid * cout
    macs = oh * ow * (k * k * mid + mid * cout)
  else:
    params = k * k * cin * cout
    macs = oh * ow * k * k * cin * cout
  if bn:  # beta, and gamma unless bn_scale=False
    params += (1 + bn_scale) * (oh * ow * cout if per_activation_bn else cout)
  else:
    params += cout  # bias
  return (oh, ow, cout), params, macs


def row_costs(table: Sequence[Row], image_size: int, num_classes: int, bn: bool = True,
              in_channels: int = 3, per_activation_bn_rows: Sequence[str] = (),
              bn_scale: bool = True, first_conv_bn: bool = True) -> Tuple[RowCost, ...]:
  """Output shape, parameters and multiply-adds of every row, from the table alone."""
  no_bn_row = None if first_conv_bn else first_conv_row(table)
  h = w = image_size
  c = in_channels
  out = []
  for row in table:
    params = macs = 0
    if isinstance(row, PoolRow):
      h, w = (1, 1) if row.patch == 0 else (_same(h, row.stride), _same(w, row.stride))
      shape = (h, w, c)
    elif isinstance(row, LinearRow):
      params = h * w * c * num_classes + num_classes
      macs = h * w * c * num_classes
      shape = (num_classes,)
    else:
      channels, hw = 0, None
      for branch in row_branches(row):
        bh, bw, bc = h, w, c
        if branch.pool is not None:
          bh, bw = _same(bh, branch.pool_stride), _same(bw, branch.pool_stride)
        for spec in branch.convs:
          (bh, bw, bc), p, m = conv_cost(bh, bw, bc, spec, bn and row.name != no_bn_row,
                                         row.name in per_activation_bn_rows, bn_scale)
          params += p
          macs += m
        channels += bc
        hw = (bh, bw)
      (h, w), c = hw, channels
      shape = (h, w, c)
    out.append(RowCost(row.name, shape, params, macs))
  return tuple(out)


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
  from bn_inception.models import make_norm
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
