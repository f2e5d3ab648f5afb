"""A reduced BN-Inception for the CPU twin of the learning-rate experiment (Sec. 4.2.2).

The same builder as BN-Inception (`inception.Inception`: conv -> BN -> nonlinearity
units, Inception modules with 1x1 / 3x3 / double-3x3 / pool branches, LRN after
pool1 and conv2 when `lrn`, dropout before the classifier, He-normal weights,
biases only without BN) on a table shrunk for 28x28 digits: the Figure 5 stem
(conv1, pool1, conv2, pool2), then one module of each kind -- a stride-1 module
(3a), a stride-2 "pass through" module (3c) and a stride-1 module after it (4a) --
at about a quarter of the paper's widths, and the global average pool.
At 28x28x1 it has 82,698 parameters with BN (82,146 without) and about 3 M
multiply-adds per image (BN-Inception: 11.2 M and 1.9 G at 224x224x3).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from bn_inception.models import inception
from bn_inception.models.figure5 import ConvRow, InceptionRow, LinearRow, PoolRow, Row


def mini_table() -> Tuple[Row, ...]:
  """The reduced table (output sizes for a 28x28 input in the comments)."""
  I = InceptionRow
  return (
      ConvRow("conv1", 3, 1, 16),                                  # 28x28x16
      PoolRow("pool1", "max", 3, 2, lrn=True),                     # 14x14x16
      ConvRow("conv2", 3, 1, 48, reduce=16, lrn=True),             # 14x14x48
      PoolRow("pool2", "max", 3, 2),                               # 7x7x48
      #  name          1x1 3x3r 3x3 d3x3r d3x3 pool  proj         output
      I("inception_3a", 16, 16, 16, 16, 24, "avg", 8),             # 7x7x64
      I("inception_3c", 0, 32, 40, 16, 24, "max", 0, stride=2),    # 4x4x128
      I("inception_4a", 56, 16, 24, 24, 32, "avg", 32),            # 4x4x144
      PoolRow("pool5", "avg", 0),                                  # 1x1x144
      LinearRow("logits"),                                         # num_classes
  )


def create_mini_inception(model_config, norm: Optional[Callable]) -> inception.Inception:
  """The reduced network for `config.model` (schema.mini_inception_model_config)."""
  return inception.build_inception(model_config, norm, mini_table())


def weight_decay_exempt(model_config) -> Tuple[str, ...]:
  """As BN-Inception's (`inception.weight_decay_exempt`), on the reduced table."""
  return inception.weight_decay_exempt(model_config, mini_table())
