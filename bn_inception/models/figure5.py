"""The Figure 5 table of BN-Inception (Sec. 4.2, Appendix) as data, and its cost walk.

The table's rows are dataclasses (`figure5_table`); `row_branches` gives the parallel
branches of a row, `row_costs` walks the rows analytically (output shape, parameters
and multiply-adds per row). models/inception.py turns the rows into flax modules.

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
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple, Union

DEPTH_MULTIPLIER = 8             # the separable first convolution (Appendix; also TF-slim's)


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
  """Figure 5, row by row (input 224x224x3; output sizes in the comments).
  `pool_projection_4cd`: 96 | 128; `first_conv`: 'separable' | 'plain'."""
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


def first_conv_row(table: Sequence[Row]) -> str:
  """The name of the table's first convolution row (conv1)."""
  return next(row.name for row in table if isinstance(row, ConvRow))


def last_inception_module(table: Sequence[Row]) -> Tuple[str, ...]:
  """The rows that get per-activation BN: the last Inception module (Figure 5: 5b), the
  "last hidden layers" of the Sec. 4.2.3 ensemble members."""
  return tuple(r.name for r in table if isinstance(r, InceptionRow))[-1:]


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
