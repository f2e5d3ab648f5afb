"""The `config.model` sections, their fields' rules, and `MODELS`: one entry per
model (model.name -> its section, its rules, its builder, what it exempts from L2).

A new model: its section function and `*_RULES` here, and one `Model(...)` line in
`MODELS`. Imports only the standard library, ml_collections and the stdlib-only
field_rules.py and registry.py.
"""

from __future__ import annotations

from bn_inception.field_rules import (FLAG, TEXT, above, at_least, custom, each, one_of, when,
                                      within)
from bn_inception.registry import Model, by_name
from bn_inception.schema.common import ConfigDict, override_fields


def _model_section(name: str, num_classes: int, image_size: int) -> ConfigDict:
  """The fields every model section has."""
  m = ConfigDict()
  m.name = name
  m.num_classes = num_classes      # checked against the dataset's
  m.image_size = image_size        # input side the model is built for; checked against the data
  m.dtype = "float32"              # compute dtype ('float32' | 'bfloat16'); params and
  #                                  BN statistics stay float32
  return m


MODEL_RULES = {   # the fields of every model section
    "name": TEXT, "num_classes": at_least(1), "image_size": at_least(1),
    "dtype": one_of("float32", "bfloat16"),
}


def mlp_model_config(**overrides) -> ConfigDict:
  """`config.model` for the fully-connected network (models/mlp.py); the defaults
  are Figure 1's (Sec. 4.1): 3 x 100 sigmoid units on 28 x 28 digits."""
  m = _model_section("mlp", num_classes=10, image_size=28)
  m.hidden_units = (100, 100, 100)
  m.activation = "sigmoid"         # 'sigmoid' | 'relu' | 'tanh'
  m.init_stddev = 0.01             # weights ~ N(0, init_stddev^2): "small random Gaussian values"
  m.probe_unit = 0                 # the unit of the last hidden layer recorded (Fig. 1(b, c))
  return override_fields(m, "mlp_model_config", overrides)


MLP_MODEL_RULES = {
    **MODEL_RULES,
    "hidden_units": each(at_least(1), min_length=1),
    "activation": one_of("sigmoid", "relu", "tanh"),
    "init_stddev": above(0.0),
    "probe_unit": custom("must be a unit of the last hidden layer (0 .. hidden_units[-1] - 1)",
                         lambda v, c: 0 <= v < tuple(c.model.hidden_units or (0,))[-1]),
}


def _needs_bn(without_bn: bool, why: str = ""):
  """A flag that must be `without_bn` when bn.enabled=False."""
  return when(lambda c: not c.bn.enabled,
              custom(f"needs BN (bn.enabled=True){why}", lambda v, c: v is without_bn), FLAG)


def _inception_unit_fields(m: ConfigDict) -> ConfigDict:
  """What BN-Inception and its reduced twin share: the units and the classifier."""
  m.activation = "relu"            # 'relu' | 'sigmoid' (BN-x5-Sigmoid, Sec. 4.2.2)
  m.dropout_rate = 0.0             # before the classifier; Sec. 4.2.1 removes it with BN
  m.lrn = False                    # GoogLeNet's LRN after pool1 and conv2; Sec. 4.2.1 removes it
  m.lrn_depth_radius = 2           # GoogLeNet/Caffe: local_size 5, alpha 1e-4, beta 0.75, k 1
  m.lrn_bias = 1.0                 # out = x / (bias + alpha * sum_{|d'-d|<=r} x_d'^2)^beta
  m.lrn_alpha = 2e-5               # Caffe's alpha / local_size
  m.lrn_beta = 0.75
  m.init_scale = 1.0               # multiplies every initial weight (Sec. 4.2.3 ensemble)
  # per-activation BN in the last Inception module (Sec. 4.2.3 ensemble): 5b; mini: 4a
  m.per_activation_bn_last = False
  # TF-slim's inception_v2 is bn_scale=False, first_conv_bn=False (docs/reference-weights.md).
  m.bn_scale = True                # gamma in every BN (Alg. 1); False: beta only (TF-slim)
  m.first_conv_bn = True           # BN after conv1 (Sec. 3.2); False: conv1 has a bias, no BN
  #                                  and no L2 weight decay (TF-slim's Conv2d_1a_7x7)
  return m


INCEPTION_UNIT_RULES = {
    **MODEL_RULES,
    "activation": one_of("relu", "sigmoid"),
    "dropout_rate": within(0.0, 1.0, high_open=True),
    "lrn": FLAG, "lrn_depth_radius": at_least(0), "lrn_bias": at_least(0.0),
    "lrn_alpha": at_least(0.0), "lrn_beta": at_least(0.0),
    "init_scale": above(0.0),
    "per_activation_bn_last": _needs_bn(False),
    "bn_scale": FLAG,
    "first_conv_bn": _needs_bn(True, ": without BN every convolution already has a bias "
                               "and no BN"),
}


def inception_model_config(**overrides) -> ConfigDict:
  """`config.model` for BN-Inception (Sec. 4.2, Figure 5; models/inception.py).

  The Inception baseline of Sec. 4.2 is the same network with bn.enabled=False,
  lrn=True and dropout_rate=0.4 (GoogLeNet's).
  """
  m = _inception_unit_fields(_model_section("bn_inception", num_classes=1000, image_size=224))
  m.pool_projection_4cd = 96       # 96: printed outputs 576 (as TF-slim); 128: printed proj column
  m.first_conv = "separable"       # 'separable' (depth multiplier 8, Appendix) | 'plain'
  return override_fields(m, "inception_model_config", overrides)


INCEPTION_MODEL_RULES = {
    **INCEPTION_UNIT_RULES,
    "pool_projection_4cd": one_of(96, 128),
    "first_conv": one_of("separable", "plain"),
}


def mini_inception_model_config(**overrides) -> ConfigDict:
  """`config.model` for the reduced BN-Inception of models/mini_inception.py (28 x 28
  digits): the units' knobs of the full one on a fixed reduced table."""
  m = _inception_unit_fields(_model_section("mini_inception", num_classes=10, image_size=28))
  return override_fields(m, "mini_inception_model_config", overrides)


MODELS = by_name((   # config.model.name -> its section, its builder, what it exempts from L2
    Model("mlp", mlp_model_config, MLP_MODEL_RULES, "bn_inception.models.mlp:create_mlp"),
    Model("bn_inception", inception_model_config, INCEPTION_MODEL_RULES,
          "bn_inception.models.inception:create_inception",
          decay_exempt="bn_inception.models.inception:weight_decay_exempt"),
    Model("mini_inception", mini_inception_model_config, INCEPTION_UNIT_RULES,
          "bn_inception.models.mini_inception:create_mini_inception",
          decay_exempt="bn_inception.models.mini_inception:weight_decay_exempt"),
))
