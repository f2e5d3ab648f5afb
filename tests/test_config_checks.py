"""The one validator (bn_inception/config_checks.py) and the rules beside each default
in bn_inception/schema/: every field has a rule, the defaults pass, each bad value
is one line naming the field, its value and what is allowed. (test_schema.py: every
configs/*.py passes, and checking it costs no TensorFlow or JAX.)"""

import pytest

from bn_inception import config_checks, registry, schema
from configs import bn_inception as bn_inception_config, mnist_fig1


def combinations():
  """A run config for every registered (dataset, model) pair."""
  return [(d, m, schema.run_config(data.section(), model.section()))
          for d, data in schema.DATASETS.items() for m, model in schema.MODELS.items()]


def test_every_field_has_a_rule_and_every_rule_a_field():
  for d, m, config in combinations():
    for section, rules in schema.section_rules(config).items():
      values = config[section] if section else config
      fields = {k for k, v in values.items() if not hasattr(v, "items")}
      assert set(rules) == fields, (d, m, section, set(rules) ^ fields)


def test_the_defaults_pass():
  """(Every configs/*.py passes too: test_schema.py.)"""
  for d, m, config in combinations():
    if m != "mlp" or d == "mnist":  # the defaults of one section assume the other's
      assert config_checks.problems(config) == [], (d, m)


def test_every_registration_names_code_that_exists():
  for entry in [*schema.DATASETS.values(), *schema.MODELS.values()]:
    refs = [entry.create] + [getattr(entry, f) for f in ("without_files", "decay_exempt")
                             if getattr(entry, f, "")]
    for ref in refs:
      assert callable(registry.resolve(ref)), ref
  for ref in [*schema.SCHEDULES.values(), *schema.STATS_MODES.values()]:
    assert callable(registry.resolve(ref)), ref


def _bad(config, **fields):
  for path, value in fields.items():
    *sections, field = path.split("__")
    target = config
    for section in sections:
      target = target[section]
    target[field] = value
  return config_checks.problems(config)


@pytest.mark.parametrize("fields, line", [
    ({"optim__learning_rate": float("nan")}, "config.optim.learning_rate=nan must be finite"),
    ({"data__mean": (float("inf"),)}, "config.data.mean=(inf,) must be finite"),
    ({"bn__stats_mode": "grop"}, "config.bn.stats_mode='grop'; known: per_device, global, group."),
    ({"optim__schedule": "cosin"}, "config.optim.schedule='cosin'; known: constant, exponential"),
    ({"bn__momentum": 1.5}, "config.bn.momentum=1.5 must be in [0.0, 1.0]."),
    ({"optim__momentum": 1.0}, "config.optim.momentum=1.0 must be in [0.0, 1.0)."),
    ({"bn__epsilon": 0.0}, "config.bn.epsilon=0.0 must be > 0.0."),
    ({"seed": -1}, "config.seed=-1 must be >= 0."),
    ({"data__std": (1.0, 1.0)}, "config.data.std=(1.0, 1.0) must be 1 values, each > 0.0"),
    ({"model__hidden_units": (0, 16)},
     "config.model.hidden_units=(0, 16) must be at least 1 value, each >= 1."),
    ({"evals__probe__percentiles": (15, 101)}, "config.evals.probe.percentiles=(15, 101)"),
    ({"evals__probe__type": "percentile"}, "config.evals.probe.type='percentile' is not an "
     "evaluator type"),
])
def test_one_line_names_the_field_the_value_and_what_is_allowed(fields, line):
  found = _bad(mnist_fig1.get_config("bn"), **fields)
  assert len(found) == 1 and found[0].startswith(line), found


@pytest.mark.parametrize("variant, fields, line", [
    ("bn_inception", {"data__crop_area_range": (0.5, 0.2)},
     "config.data.crop_area_range=(0.5, 0.2) must be (lo, hi) with 0 < lo <= hi <= 1."),
    ("bn_inception", {"data__eval_fraction": 1.0}, "config.data.eval_fraction=1.0 must be in"),
    ("bn_inception", {"data__mean": (0.5,)}, "config.data.mean=(0.5,) must be 3 values"),
    ("bn_inception", {"data__resize_method": "bilinar"}, "config.data.resize_method='bilinar'"),
    ("bn_inception", {"data__num_parallel_calls": 0},
     "config.data.num_parallel_calls=0 must be -1 (AUTOTUNE) or >= 1."),
    ("inception", {"model__first_conv_bn": False},
     "config.model.first_conv_bn=False needs BN (bn.enabled=True)"),
    ("bn_inception", {"model__pool_projection_4cd": 64},
     "config.model.pool_projection_4cd=64; known: 96, 128."),
])
def test_cross_field_and_imagenet_rules(variant, fields, line):
  config = bn_inception_config.get_config(variant)
  if "data__crop_area_range" in fields or variant == "bn_inception":
    config.data = schema.imagenet_data_config()
  found = _bad(config, **fields)
  assert len(found) == 1 and found[0].startswith(line), found


def test_an_unknown_name_is_the_only_line():
  config = mnist_fig1.get_config("bn")
  config.data.name, config.optim.learning_rate = "cifar", float("nan")
  assert config_checks.problems(config) == [
      f"config.data.name='cifar'; known: {', '.join(schema.DATASETS)}."]
  with pytest.raises(config_checks.ConfigError, match="Nothing was run"):
    config_checks.validate(config)


def test_a_section_check_joins_the_field_rules(monkeypatch):
  """The hook a section with checks of its own (e.g. config.evals) is wired into."""
  monkeypatch.setattr(config_checks, "SECTION_CHECKS", config_checks.SECTION_CHECKS + (
      lambda config: ["config.evals.x=1 must be 2."],))
  config = mnist_fig1.get_config("bn")
  config.train.num_steps = 0
  with pytest.raises(config_checks.ConfigError) as e:
    config_checks.validate(config)
  assert str(e.value) == ("config.train.num_steps=0 must be >= 1 (the number of training "
                          "steps). config.evals.x=1 must be 2. Nothing was run.")


def test_a_new_model_or_dataset_is_one_registration(monkeypatch):
  """An entry in schema.MODELS / DATASETS is all the validator, `models.create_model`
  and `data.create_source`'s factory need."""
  from bn_inception import models
  from bn_inception.data import factory
  monkeypatch.setitem(schema.MODELS, "mlp2", registry.Model(
      "mlp2", schema.mlp_model_config, schema.MLP_MODEL_RULES,
      "bn_inception.models.mlp:create_mlp", classifier="out"))
  monkeypatch.setitem(schema.DATASETS, "digits", registry.Dataset(
      "digits", schema.mnist_data_config, schema.MNIST_DATA_RULES,
      "bn_inception.data.mnist:create"))
  config = mnist_fig1.get_config("bn")
  config.model.name, config.data.name = "mlp2", "digits"
  assert config_checks.problems(config) == []
  assert type(models.create_model(config)).__name__ == "MLP"
  assert models.weight_decay_exempt(config) == () and models.classifier(config) == "out"
  assert factory.without_files(config.data, 10) is None
