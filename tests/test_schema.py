"""The config schema (bn_inception/schema/): configs load without TF/JAX, every
config is the schema with values set, and `upgrade` brings old config.json files to
the current schema with the behaviour those runs had."""

import glob
import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bn_inception import config_checks, config_upgrade, models, schema
from bn_inception.data import imagenet_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_RUNS = ("inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid")
# Every configs/*.py with the arguments its get_config takes (None: no argument).
CONFIG_VARIANTS = {
    "base": (None,), "imagenet_tiny": (None,), "mnist_fig1": ("bn", "no_bn"),
    "bn_inception": ("bn_inception", "inception", "mnist_smoke"),
    "imagenet_base": ("full", "cpu"), "mnist_lr_acceleration": PAPER_RUNS,
    "back_image_lr_acceleration": PAPER_RUNS + ("bn_x5,2500,rotated",),
    **{run: ("full", "cpu") for run in PAPER_RUNS},
}


def load(name, arg):
  module = importlib.import_module(f"configs.{name}")
  return module.get_config() if arg is None else module.get_config(arg)


def all_configs():
  return [(f"{name}:{arg}", load(name, arg))
          for name, args in CONFIG_VARIANTS.items() for arg in args]


def flat(d):
  return traverse_util.flatten_dict(d, sep=".")


def test_config_variants_cover_every_config_file():
  files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))}
  assert files - {"__init__"} == set(CONFIG_VARIANTS)


def test_configs_load_and_validate_without_tensorflow_or_jax():
  """Loading a config and checking it (config_checks.validate) import neither."""
  code = (f"import importlib, sys\nCONFIG_VARIANTS = {CONFIG_VARIANTS!r}\n"
          "from bn_inception import config_checks\n"
          "for name, args in CONFIG_VARIANTS.items():\n"
          "  m = importlib.import_module('configs.' + name)\n"
          "  for arg in args:\n"
          "    config_checks.validate(m.get_config() if arg is None else m.get_config(arg))\n"
          "print(sorted({k.split('.')[0] for k in sys.modules} & "
          "{'tensorflow', 'jax', 'flax', 'optax', 'tensorflow_datasets'}))\n")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "[]"


def test_every_config_is_its_schema_with_values_set():
  """No config adds, drops or retypes a field: each has exactly the fields of the
  schema its data.name and model.name select, of the same types."""
  for label, config in all_configs():
    want = schema.run_config(schema.DATASETS[config.data.name].section(),
                             schema.MODELS[config.model.name].section())
    got, ref = flat(config.to_dict()), flat(want.to_dict())
    assert set(got) == set(ref), label
    for key, value in got.items():
      kinds = {type(value), type(ref[key])}
      assert len(kinds) == 1 or kinds == {int, float}, (label, key, value, ref[key])


def test_every_config_passes_the_validator():
  for label, config in all_configs():
    assert config_checks.problems(config) == [], label


def test_upgrade_of_a_current_config_is_the_same_config():
  for label, config in all_configs():
    saved = json.loads(config.to_json_best_effort())  # what config.json holds
    assert config_upgrade.upgrade(saved).to_dict() == config.to_dict(), label
    assert config_upgrade.upgrade(config).to_dict() == config.to_dict(), label


# configs/mnist_fig1.py:bn as the first version (d4ae76f) wrote it: before
# `distributed`, optim.decay_epochs, train.nonfinite_policy / inject_nonfinite_at_step,
# data.tfds_data_dir, and model.image_size / dtype of the MLP.
FIG1_D4AE76F = json.loads("""{"bn": {"enabled": true, "epsilon": 0.001, "group_size": 0,
 "momentum": 0.99, "stats_mode": "per_device", "unbiased_variance": true}, "data":
 {"data_dir": "/data/mnist", "download_if_missing": true, "mean": [0.0], "name": "mnist",
 "shuffle": true, "std": [1.0]}, "model": {"activation": "sigmoid", "hidden_units":
 [100, 100, 100], "init_stddev": 0.01, "name": "mlp", "num_classes": 10, "probe_unit": 0},
 "optim": {"decay_rate": 0.96, "decay_steps": 1000, "grad_clip_norm": 0.0, "learning_rate":
 0.5, "momentum": 0.0, "nesterov": false, "schedule": "constant", "staircase": true,
 "warmup_steps": 0, "weight_decay": 0.0}, "seed": 0, "train": {"batch_size": 60,
 "checkpoint_every": 5000, "eval_at_start": true, "eval_batch_size": 1000, "eval_every": 500,
 "keep_checkpoints": 3, "log_every": 1000, "num_steps": 50000}}""")
FIG1_ADDED_SINCE = {
    "distributed": "auto",               # single process unless a launcher says otherwise
    "optim.decay_epochs": 0.0,           # the decay interval was decay_steps
    "train.nonfinite_policy": "stop",
    "train.init_from": "",               # started from scratch
    "train.profile_steps": "",           # no profile trace
    "evals.eval.type": "classification",  # the loop's evaluation and
    "evals.probe.type": "percentiles",    # Figure 1's probe, then fixed in the loop
    "evals.probe.percentiles": (15, 50, 85),
    "data.tfds_data_dir": "",            # tfds's own default folder
    "model.image_size": 28,              # the MNIST digits it trained on
    "model.dtype": "float32",
}

# configs/bn_x30.py:cpu just before distort_on_device (2d98d72^): distortions on the host.
BN_X30_CPU_BEFORE_2D98D72 = json.loads("""{"bn": {"enabled": true, "epsilon": 0.001,
 "group_size": 0, "momentum": 0.9, "stats_mode": "per_device", "unbiased_variance": true},
 "data": {"antialias": false, "aspect_ratio_range": [0.75, 1.3333333333333333],
 "crop_area_range": [0.08, 1.0], "crop_max_attempts": 100, "crop_min_object_covered": 0.0,
 "distortion_strength": 0.5, "eval_crop_fraction": 0.875, "eval_dir": "", "eval_fraction":
 0.0, "eval_split": "validation", "image_size": 32, "mean": [0.5, 0.5, 0.5], "name":
 "imagenet_folder", "num_parallel_calls": -1, "prefetch_batches": -1, "random_flip": true,
 "resize_method": "bilinear", "shuffle": true, "shuffle_buffer": 16384,
 "skip_corrupt_images": false, "split_seed": 0, "std": [0.5, 0.5, 0.5], "tfds_data_dir":
 "/data/tensorflow_datasets", "tfds_name": "imagenet2012", "train_dir":
 "/data/imagenet_sample", "train_split": "train"}, "distributed": "auto", "model":
 {"activation": "relu", "dropout_rate": 0.0, "dtype": "float32", "first_conv": "separable",
 "image_size": 32, "init_scale": 1.0, "lrn": false, "lrn_alpha": 2e-05, "lrn_beta": 0.75,
 "lrn_bias": 1.0, "lrn_depth_radius": 2, "name": "bn_inception", "num_classes": 1000,
 "per_activation_bn_last": false, "pool_projection_4cd": 96}, "optim": {"decay_epochs":
 1.3333333333333333, "decay_rate": 0.96, "decay_steps": 1000, "grad_clip_norm": 0.0,
 "learning_rate": 0.045, "momentum": 0.9, "nesterov": false, "schedule": "exponential",
 "staircase": true, "warmup_steps": 0, "weight_decay": 4e-05}, "seed": 0, "train":
 {"batch_size": 32, "checkpoint_every": 30, "eval_at_start": false, "eval_batch_size": 250,
 "eval_every": 60, "inject_nonfinite_at_step": -1, "keep_checkpoints": 5, "log_every": 10,
 "nonfinite_policy": "stop", "num_steps": 60}}""")


def assert_upgraded(old, added, label):
  new = config_upgrade.upgrade(old)
  got = flat(new.to_dict())
  want = flat(schema.run_config(schema.DATASETS[old["data"]["name"]].section(),
                                schema.MODELS[old["model"]["name"]].section()).to_dict())
  assert set(want) <= set(got), label                  # the current schema's fields,
  assert set(got) - set(want) <= set(flat(old)), label  # and retired ones only as saved
  for key, value in flat(old).items():                 # every saved value kept
    assert got[key] == (tuple(value) if isinstance(value, list) else value), (label, key)
  assert {k: got[k] for k in added} == added, label    # the old behaviour
  assert set(flat(old)) | set(added) == set(got), label
  return new


def test_upgrade_of_the_first_mnist_config():
  new = assert_upgraded(FIG1_D4AE76F, FIG1_ADDED_SINCE, "fig1@d4ae76f")
  assert isinstance(new.model.hidden_units, tuple) and isinstance(new.data.mean, tuple)
  # It still builds the network that run trained: same parameter shapes as now.
  model = models.create_model(new)
  shapes = jax.tree.map(jnp.shape, jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)))
  assert shapes["params"]["dense0"]["kernel"] == (784, 100)
  assert shapes["params"]["logits"]["kernel"] == (100, 10)


def test_upgrade_keeps_host_distortion_of_configs_before_distort_on_device():
  new = assert_upgraded(BN_X30_CPU_BEFORE_2D98D72,
                        {"data.distort_on_device": False, "train.init_from": "",
                         "train.profile_steps": "",
                         "evals.eval.type": "classification", "evals.probe.type": "percentiles",
                         "evals.probe.percentiles": (15, 50, 85),
                         "model.bn_scale": True, "model.first_conv_bn": True},  # the paper's net
                        "bn_x30:cpu@2d98d72^")
  assert not imagenet_pipeline.distorts_on_device(new.data)
  # The same config written now distorts on the device.
  assert imagenet_pipeline.distorts_on_device(load("bn_x30", "cpu").data)


def test_upgrade_gives_an_old_imagenet_mlp_the_data_image_size():
  old = json.loads(load("imagenet_tiny", None).to_json_best_effort())
  del old["model"]["image_size"], old["model"]["dtype"]
  old["data"]["image_size"] = 40
  new = config_upgrade.upgrade(old)
  assert new.model.image_size == 40 and new.model.dtype == "float32"


def test_upgrade_refuses_what_it_cannot_place_and_keeps_dropped_fields():
  old = json.loads(json.dumps(FIG1_D4AE76F))
  old["data"]["name"] = "cifar10"
  with pytest.raises(ValueError, match="data.name='cifar10'"):
    config_upgrade.upgrade(old)
  old = json.loads(json.dumps(FIG1_D4AE76F))
  del old["model"]["name"]
  with pytest.raises(ValueError, match="model.name=None"):
    config_upgrade.upgrade(old)
  old = json.loads(json.dumps(FIG1_D4AE76F))
  old["train"]["num_steps"] = "many"
  with pytest.raises(ValueError, match="train.num_steps='many'"):
    config_upgrade.upgrade(old)
  old = json.loads(json.dumps(FIG1_D4AE76F))
  old["train"]["retired_knob"] = 3
  assert config_upgrade.upgrade(old).train.retired_knob == 3


def test_section_overrides_name_unknown_fields():
  assert schema.mlp_model_config(num_classes=7).num_classes == 7
  with pytest.raises(KeyError, match="mlp_model_config has no field 'hidden'"):
    schema.mlp_model_config(hidden=(3,))


def test_non_result_fields_come_from_each_datasets_location_fields():
  # The set before each dataset's entry carried its own (issue 28), and
  # train.profile_steps (issue 26: a trace changes no result).
  assert set(schema.NON_RESULT_FIELDS) == {
      "data.data_dir", "data.download_if_missing", "data.mnist_dir", "data.backgrounds_dir",
      "data.cache_dir", "distributed", "train.log_every", "train.checkpoint_every",
      "train.keep_checkpoints", "train.eval_batch_size", "train.profile_steps"}
  assert len(set(schema.NON_RESULT_FIELDS)) == len(schema.NON_RESULT_FIELDS)
  for dataset in schema.DATASETS.values():
    section = dataset.section()
    for field in dataset.location_fields:
      assert field in section and f"data.{field}" in schema.NON_RESULT_FIELDS, field


def test_mlp_computes_in_its_dtype():
  """model.dtype=bfloat16: hidden layers in bf16, parameters and logits float32, the
  logits within bf16 rounding of the float32 network's (same parameters)."""
  x = jax.random.normal(jax.random.key(1), (8, 28, 28, 1))
  out = {}
  for dtype in ("float32", "bfloat16"):
    config = load("mnist_fig1", "bn")
    config.model.dtype = dtype
    model = models.create_model(config)
    variables = model.init(jax.random.key(0), x, train=False)
    assert {l.dtype for l in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
    out[dtype] = model.apply(variables, x, train=False)
    assert out[dtype].dtype == jnp.float32
  diff = np.abs(np.asarray(out["bfloat16"]) - np.asarray(out["float32"]))
  assert 0 < diff.max() < 0.05 * np.abs(np.asarray(out["float32"])).max() + 1e-3
  config.model.dtype = "float16"
  with pytest.raises(config_checks.ConfigError,
                     match="config.model.dtype='float16'; known: float32, bfloat16"):
    config_checks.validate(config)
