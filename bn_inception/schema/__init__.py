"""Every config section with its defaults and their comments, in one place.

A run's config has the sections of `run_config`: seed, distributed, bn, model,
data, optim, train. The data section is chosen by `data.name` (its entry in
`DATASETS`), the model section by `model.name` (`MODELS`). Beside each section's
defaults are its `*_RULES`: every field's allowed values or range, which
config_checks.validate checks before anything runs. configs/*.py start from these
and set what their experiment changes; library code reads every field directly
(no defaults elsewhere). config_upgrade.py brings a config saved by an older
version (a workdir's config.json) to this schema with the behaviour that run had.

Imports only the standard library, ml_collections and the stdlib-only
field_rules.py and registry.py: loading or checking a config costs no TensorFlow
or JAX.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Dict, Mapping, Tuple

import ml_collections

from bn_inception import workdir  # the repository's root (standard library only)
from bn_inception.field_rules import (FINITE, FLAG, TEXT, Rule, above, at_least, custom, each,
                                      one_of, ordered_pair, when, within)
from bn_inception.registry import Dataset, Model, by_name

ConfigDict = ml_collections.ConfigDict

# <repo>/bn_inception/schema.py -> <repo>/../shared/data
_REPO_ROOT = pathlib.Path(workdir.REPO_ROOT)
DATA_ENV_VAR = "BN_INCEPTION_DATA"

# Fields that do not change what a run computes: where it finds its data, how its
# processes start, and how often it logs and saves (resumes are bit-equal). Two runs
# differing only in these are the same run (workdir_config.RESUMABLE_FIELDS, report.py).
NON_RESULT_FIELDS = (
    "data.data_dir", "data.download_if_missing", "data.mnist_dir",
    "data.backgrounds_dir", "data.cache_dir", "distributed", "train.log_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.eval_batch_size",
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_data_root() -> str:
  """$BN_INCEPTION_DATA if set, else the shared data folder beside the repo."""
  return os.environ.get(DATA_ENV_VAR, str(_REPO_ROOT.parent / "shared" / "data"))


def _override(section: ConfigDict, what: str, overrides: Mapping[str, Any]) -> ConfigDict:
  for key, value in overrides.items():
    if key not in section:
      raise KeyError(f"{what} has no field {key!r}; fields: {sorted(section)}.")
    section[key] = value
  return section


# --------------------------------------------------------------------------- data


def mnist_data_config(**overrides) -> ConfigDict:
  """`config.data` for MNIST (data/mnist.py): the IDX files, else the tfds download."""
  d = ConfigDict()
  d.name = "mnist"
  # The folder of the four MNIST IDX files. "" (unset): $BN_INCEPTION_DATA/mnist, or
  # ../shared/data/mnist beside the repo, else (download_if_missing) the tfds download.
  # A folder named here must exist: a typo fails at once, it never downloads.
  d.data_dir = ""
  d.download_if_missing = True       # unset data_dir and no files found: tfds download
  d.tfds_data_dir = ""               # where that download goes; '': tfds's default
  d.shuffle = True
  d.mean = (0.0,)                    # on-device normalisation (x/255 - mean)/std
  d.std = (1.0,)
  return _override(d, "mnist_data_config", overrides)


MNIST_DATA_RULES = {
    "name": TEXT, "data_dir": TEXT, "download_if_missing": FLAG, "tfds_data_dir": TEXT,
    "shuffle": FLAG, "mean": each(FINITE, length=1, meaning="one (grey) channel"),
    "std": each(above(0.0), length=1, meaning="one (grey) channel"),
}


def mnist_back_image_data_config(**overrides) -> ConfigDict:
  """`config.data` for MNIST-back-image (data/mnist_back_image.py; Larochelle et al.
  2007): MNIST digits over grey natural-image patches, composed once into a cache."""
  d = ConfigDict()
  d.name = "mnist_back_image"
  d.variant = "plain"                # 'plain' | 'rotated' (mnist-rot-back-image)
  d.mnist_dir = ""                   # the MNIST IDX files; '': <data root>/mnist
  d.backgrounds_dir = ""             # <synset>/<image> JPEGs; '': <data root>/imagenet_sample
  d.cache_dir = ""                   # '': $XDG_CACHE_HOME (~/.cache)/bn_inception/...
  d.shuffle = True
  d.mean = (0.0,)                    # on-device normalisation (x/255 - mean)/std
  d.std = (1.0,)
  return _override(d, "mnist_back_image_data_config", overrides)


MNIST_BACK_IMAGE_DATA_RULES = {
    "name": TEXT, "variant": one_of("plain", "rotated"), "mnist_dir": TEXT,
    "backgrounds_dir": TEXT, "cache_dir": TEXT, "shuffle": FLAG,
    "mean": MNIST_DATA_RULES["mean"], "std": MNIST_DATA_RULES["std"],
}


def imagenet_data_config(name: str = "imagenet_folder", **overrides) -> ConfigDict:
  """`config.data` for ImageNet (data/imagenet.py), every field with its default."""
  d = ConfigDict()
  d.name = name                      # 'imagenet_folder' | 'imagenet_tfds'
  # Image folder: <dir>/<synset>/<image>. eval_dir '' -> eval on eval_fraction of
  # train_dir (held out, by split_seed) or, when that is 0, on train_dir itself.
  d.train_dir = os.path.join(default_data_root(), "imagenet_sample")
  d.eval_dir = ""
  d.eval_fraction = 0.0
  d.split_seed = 0
  # TFDS: a prepared `tfds_name` under tfds_data_dir (never downloaded here).
  d.tfds_data_dir = os.path.join(default_data_root(), "tensorflow_datasets")
  d.tfds_name = "imagenet2012"
  d.train_split = "train"
  d.eval_split = "validation"
  # Sec. 4.2.1 "within-shard shuffling": the shuffle buffer of the streamed
  # (TFRecord) TFDS path; random-access sources shuffle globally per epoch.
  d.shuffle_buffer = 16_384
  d.shuffle = True
  # Training augmentation (Inception: 8%-100% area, aspect 3/4-4/3, flips, colour).
  d.image_size = 224
  d.crop_area_range = (0.08, 1.0)
  d.aspect_ratio_range = (3 / 4, 4 / 3)
  d.crop_min_object_covered = 0.0    # sample_distorted_bounding_box's; 0: area_range rules
  d.crop_max_attempts = 100          # then the whole image
  d.random_flip = True
  d.distortion_strength = 1.0        # photometric distortions, 0..1 (Sec. 4.2.1: reduce)
  # Apply them on the accelerator inside the train step (device_augment.py) rather
  # than on the host: same distortions, ~35% less host CPU per image at 224 px.
  d.distort_on_device = True
  d.resize_method = "bilinear"
  d.antialias = False
  # Evaluation: shorter side -> image_size / eval_crop_fraction, central crop.
  d.eval_crop_fraction = 0.875
  # On-device normalisation (x/255 - mean) / std; Inception's [-1, 1] is 0.5 / 0.5.
  d.mean = IMAGENET_MEAN
  d.std = IMAGENET_STD
  # An undecodable image: DataError naming it, or (True) replaced in training by
  # the next decodable example and masked out of evaluation, counted and logged.
  d.skip_corrupt_images = False
  d.num_parallel_calls = -1          # decode/augment threads; -1: tf.data.AUTOTUNE
  d.prefetch_batches = -1            # -1: AUTOTUNE
  return _override(d, "imagenet_data_config", overrides)


RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5",
                  "gaussian", "mitchellcubic")   # tf.image.resize's
IMAGENET_DATA_RULES = {
    **dict.fromkeys(("name", "train_dir", "eval_dir", "tfds_data_dir", "tfds_name",
                     "train_split", "eval_split"), TEXT),
    **dict.fromkeys(("shuffle", "random_flip", "distort_on_device", "antialias",
                     "skip_corrupt_images"), FLAG),
    "eval_fraction": within(0.0, 1.0, high_open=True),
    "split_seed": at_least(0),
    "shuffle_buffer": at_least(0),
    "image_size": at_least(1),
    "crop_area_range": ordered_pair(0, 1),
    "aspect_ratio_range": ordered_pair(0),
    "crop_min_object_covered": within(0.0, 1.0),
    "crop_max_attempts": at_least(1),
    "distortion_strength": within(0.0, 1.0),
    "resize_method": one_of(*RESIZE_METHODS),
    "eval_crop_fraction": within(0.0, 1.0, low_open=True),
    "mean": each(FINITE, length=3, meaning="RGB"),
    "std": each(above(0.0), length=3, meaning="RGB"),
    "num_parallel_calls": custom("must be -1 (AUTOTUNE) or >= 1",
                                 lambda v, c: v == -1 or v >= 1),
    "prefetch_batches": at_least(-1).means("-1: AUTOTUNE"),
}


# --------------------------------------------------------------------------- models


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
  return _override(m, "mlp_model_config", overrides)


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
  return _override(m, "inception_model_config", overrides)


INCEPTION_MODEL_RULES = {
    **INCEPTION_UNIT_RULES,
    "pool_projection_4cd": one_of(96, 128),
    "first_conv": one_of("separable", "plain"),
}


def mini_inception_model_config(**overrides) -> ConfigDict:
  """`config.model` for the reduced BN-Inception of models/mini_inception.py (28 x 28
  digits): the units' knobs of the full one on a fixed reduced table."""
  m = _inception_unit_fields(_model_section("mini_inception", num_classes=10, image_size=28))
  return _override(m, "mini_inception_model_config", overrides)


MODELS = by_name((   # config.model.name -> its section, its builder, what it exempts from L2
    Model("mlp", mlp_model_config, MLP_MODEL_RULES, "bn_inception.models.mlp:create_mlp"),
    Model("bn_inception", inception_model_config, INCEPTION_MODEL_RULES,
          "bn_inception.models.inception:create_inception",
          decay_exempt="bn_inception.models.inception:weight_decay_exempt"),
    Model("mini_inception", mini_inception_model_config, INCEPTION_UNIT_RULES,
          "bn_inception.models.mini_inception:create_mini_inception",
          decay_exempt="bn_inception.models.mini_inception:weight_decay_exempt"),
))
DATASETS = by_name((  # config.data.name -> its section, its source
    Dataset("mnist", mnist_data_config, MNIST_DATA_RULES, "bn_inception.data.mnist:create"),
    Dataset("mnist_back_image", mnist_back_image_data_config, MNIST_BACK_IMAGE_DATA_RULES,
            "bn_inception.data.mnist_back_image:create"),
    Dataset("imagenet_folder", lambda: imagenet_data_config("imagenet_folder"),
            IMAGENET_DATA_RULES, "bn_inception.data.imagenet:create_folder",
            without_files="bn_inception.data.imagenet_pipeline:without_files"),
    Dataset("imagenet_tfds", lambda: imagenet_data_config("imagenet_tfds"),
            IMAGENET_DATA_RULES, "bn_inception.data.imagenet_tfds:create_tfds",
            without_files="bn_inception.data.imagenet_pipeline:without_files",
            named_splits=True),
))


# --------------------------------------------------------------------------- training


def bn_config() -> ConfigDict:
  """`config.bn`: the BN transform (Sec. 3, Alg. 1/2)."""
  b = ConfigDict()
  b.enabled = True
  b.momentum = 0.99            # moving-average decay: ra <- m*ra + (1-m)*batch
  b.epsilon = 1e-3             # the eps of Alg. 1
  b.unbiased_variance = True   # Alg. 2: Var[x] = m/(m-1) E_B[sigma_B^2]
  # Whose examples a training statistic is taken over: 'per_device' (the paper:
  # each replica's own examples), 'global' (the whole global batch), or 'group'
  # (fixed groups of `group_size` examples, independent of the device count).
  # With train.batch_size = 32 x devices, 'per_device' is the paper's 32 per
  # replica; 'group' with group_size=32 is the same statistics on any device count.
  b.stats_mode = "per_device"
  b.group_size = 0             # examples per statistic; used by stats_mode='group' only
  return b


# bn.stats_mode -> 'module:function' (config.bn, global batch, device count, per-device
# batch) -> examples per BN statistic in training (None: the whole global batch).
STATS_MODES = {
    "per_device": "bn_inception.sharding:per_device_groups",
    "global": "bn_inception.sharding:global_groups",
    "group": "bn_inception.sharding:fixed_groups",
}


def _divides_batch(v, c) -> bool:
  return v >= 1 and c.train.batch_size % v == 0


def _batch_divisors(c) -> str:
  b = c.train.batch_size
  return (f"must divide train.batch_size={b}; valid: "
          f"{', '.join(str(d) for d in range(1, b + 1) if b % d == 0)}")


BN_RULES = {
    "enabled": FLAG, "unbiased_variance": FLAG,
    "momentum": within(0.0, 1.0), "epsilon": above(0.0),
    "stats_mode": one_of(*STATS_MODES),
    "group_size": when(lambda c: c.bn.stats_mode == "group", custom(
        _batch_divisors, _divides_batch,
        "stats_mode='group': examples per BN statistic; 32 is the paper's 32 examples per "
        "replica on any device count"), at_least(0)),
}


def optim_config() -> ConfigDict:
  """`config.optim`: SGD with momentum and L2 weight decay (Sec. 4.2.1)."""
  o = ConfigDict()
  o.learning_rate = 0.1
  o.momentum = 0.9           # 0 gives plain SGD
  o.nesterov = False
  o.weight_decay = 0.0       # L2 on weights (kernels) only, added to the gradient
  o.grad_clip_norm = 0.0     # 0: no clipping
  # 'constant' | 'exponential' (lr * decay_rate^(step/decay_steps)) | 'cosine'
  o.schedule = "constant"
  o.decay_rate = 0.96
  o.decay_steps = 1000
  o.decay_epochs = 0.0       # > 0: decay interval in epochs of the training set (wins)
  o.staircase = True
  o.warmup_steps = 0
  return o


# optim.schedule -> 'module:function' (config.optim, num_steps, steps per epoch) -> the
# schedule after warm-up.
SCHEDULES = {
    "constant": "bn_inception.optim:constant",
    "exponential": "bn_inception.optim:exponential",
    "cosine": "bn_inception.optim:cosine",
}
OPTIM_RULES = {
    "learning_rate": at_least(0.0), "momentum": within(0.0, 1.0, high_open=True),
    "nesterov": FLAG, "weight_decay": at_least(0.0), "grad_clip_norm": at_least(0.0).means(
        "0: no clipping"), "schedule": one_of(*SCHEDULES), "decay_rate": above(0.0),
    "decay_steps": at_least(1), "decay_epochs": at_least(0.0), "staircase": FLAG,
    "warmup_steps": at_least(0),
}


def train_config() -> ConfigDict:
  """`config.train`: the loop's schedule of steps, evaluations and checkpoints."""
  t = ConfigDict()
  # Every numeric field is checked before anything runs (bn_inception/config_checks.py).
  t.batch_size = 32          # GLOBAL batch (sum over all devices), >= 1
  t.num_steps = 1000         # >= 1; never below a workdir's newest checkpoint
  t.eval_batch_size = 1000   # any size >= 1: the last batch is padded and masked
  t.eval_every = 500         # evaluate every k steps and at num_steps; 0: never
  t.log_every = 100          # >= 1 steps between train/* rows
  t.checkpoint_every = 1000  # >= 1; also saved at num_steps and on SIGTERM/SIGINT
  # Newest checkpoints kept, >= 1. 0 is refused (it would keep none: the run could
  # not resume); there is no "keep all": give a number as large as you need.
  t.keep_checkpoints = 3
  t.eval_at_start = True     # evaluate the initial network (step 0)
  # A step whose loss or gradients are NaN/inf is never applied. 'stop': fail at
  # the next log/checkpoint point, before any save; 'skip': count it and go on.
  t.nonfinite_policy = "stop"
  # Fine-tuning: '<workdir>' or '<workdir>@<step>' (a training or imported workdir)
  # whose parameters and BN statistics start this run, with a fresh optimizer at
  # step 0 and, when model.num_classes differs, a fresh classifier. Used only when
  # this workdir has no checkpoint of its own (resuming takes precedence).
  t.init_from = ""
  return t


NONFINITE_POLICIES = ("stop", "skip")
TRAIN_RULES = {
    "num_steps": at_least(1, "the number of training steps"),
    "batch_size": at_least(1, "the GLOBAL training batch"),
    "eval_batch_size": at_least(1, "the GLOBAL evaluation batch"),
    "log_every": at_least(1, "steps between train/* rows"),
    "checkpoint_every": at_least(1, "steps between checkpoints (a checkpoint is also "
                                 "written at num_steps and on SIGTERM)"),
    "keep_checkpoints": at_least(1, "how many newest checkpoints are kept; 0 would keep none "
                                 "(the run could not resume), so it is refused: give a "
                                 "large number to keep more"),
    "eval_every": at_least(0, "steps between full evaluations of the eval split (and one "
                           "at num_steps); 0: never"),
    "eval_at_start": FLAG,
    "nonfinite_policy": one_of(*NONFINITE_POLICIES),
    "init_from": TEXT,
}


# --------------------------------------------------------------------------- evaluations

# `config.evals[name] = {type, fields}`: what the training loop evaluates every
# train.eval_every steps, one entry per evaluator (bn_inception/evaluators/<type>.py);
# its metrics are written as eval/<metric>. Each type: its fields' defaults, their rules.
CROP_SCHEMES = (1, 10, 144)   # crops per example of the offline evaluation (Sec. 4.2.3)
EVAL_TYPES: Dict[str, Tuple[Dict[str, Any], Dict[str, Rule]]] = {
    # accuracy, loss, top5_accuracy, nonfinite_fraction, num_examples over every eval
    # example once (central crop, the last batch padded and masked).
    "classification": ({}, {}),
    # Percentiles over the eval set of every value the model records (models.RECORDED),
    # as probe/<name>/p<q>; Fig. 1(b, c): the 15th, 50th and 85th.
    "percentiles": ({"percentiles": (15, 50, 85)},
                    {"percentiles": each(within(0, 100), min_length=1)}),
    # Offline only (scripts/evaluate.py): `crops` crops per example, probabilities
    # averaged over crops and networks; batch_size counts crops.
    "multicrop": ({"crops": (1,), "batch_size": 256},
                  {"crops": each(one_of(*CROP_SCHEMES), min_length=1),
                   "batch_size": at_least(1, "crops per global batch")}),
}
OFFLINE_EVAL_TYPES = ("multicrop",)


def eval_config(type_name: str, **overrides) -> ConfigDict:
  """One `config.evals` entry of evaluator type `type_name`, with its defaults."""
  if type_name not in EVAL_TYPES:
    raise KeyError(f"Unknown evaluator type {type_name!r}; known: {sorted(EVAL_TYPES)}.")
  e = ConfigDict({"type": type_name, **EVAL_TYPES[type_name][0]})
  return _override(e, f"eval_config({type_name!r})", overrides)


def evals_config() -> ConfigDict:
  """`config.evals`: the whole-eval-split classification metrics and Figure 1's probe
  (which reports nothing for a model that records nothing)."""
  e = ConfigDict()
  e.eval = eval_config("classification")
  e.probe = eval_config("percentiles")
  return e


def run_config(data: ConfigDict, model: ConfigDict) -> ConfigDict:
  """A whole run's config: `data` and `model` sections and the shared ones."""
  c = ConfigDict()
  c.seed = 0
  # Multi-host start (bn_inception.sharding.maybe_initialize_distributed):
  # 'auto' = jax.distributed.initialize() when the environment names a
  # multi-process launch (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI, TPU
  # worker list); 'on' = always (e.g. a GCE Cloud TPU VM slice); 'off' = never.
  c.distributed = "auto"
  c.bn = bn_config()
  c.model = model
  c.data = data
  c.optim = optim_config()
  c.train = train_config()
  c.evals = evals_config()
  return c


RUN_RULES = {"seed": at_least(0), "distributed": one_of("auto", "on", "off")}


def section_rules(config) -> Dict[str, Mapping[str, Any]]:
  """Section ('' for the top level) -> the rules of its fields, for `config`'s data
  and model; KeyError for an unregistered data.name or model.name."""
  return {"": RUN_RULES, "bn": BN_RULES, "model": MODELS[config.model.name].rules,
          "data": DATASETS[config.data.name].rules, "optim": OPTIM_RULES,
          "train": TRAIN_RULES}
