"""Every config section with its defaults and their comments, in one place.

A run's config has the sections of `run_config`: seed, distributed, bn, model,
data, optim, train. The data section is chosen by `data.name`
(`DATA_SECTIONS`), the model section by `model.name` (`MODEL_SECTIONS`).
configs/*.py start from these and set what their experiment changes; library
code reads every field directly (no defaults elsewhere). `upgrade` brings a
config saved by an older version (a workdir's config.json) to this schema with
the behaviour that run had.

Imports only the standard library and ml_collections: loading a config file
costs no TensorFlow or JAX.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable, Dict, Mapping, Union

import ml_collections

from bn_inception import workdir  # the repository's root (standard library only)

ConfigDict = ml_collections.ConfigDict

# <repo>/bn_inception/schema.py -> <repo>/../shared/data
_REPO_ROOT = pathlib.Path(workdir.REPO_ROOT)
DATA_ENV_VAR = "BN_INCEPTION_DATA"

# Fields that do not change what a run computes: where it finds its data, how its
# processes start, and how often it logs and saves (resumes are bit-equal). Two runs
# differing only in these are the same run (checkpoint.RESUMABLE_FIELDS, report.py).
NON_RESULT_FIELDS = (
    "data.data_dir", "data.download_if_missing", "distributed", "train.log_every",
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


def mlp_model_config(**overrides) -> ConfigDict:
  """`config.model` for the fully-connected network (models/mlp.py); the defaults
  are Figure 1's (Sec. 4.1): 3 x 100 sigmoid units on 28 x 28 digits."""
  m = _model_section("mlp", num_classes=10, image_size=28)
  m.hidden_units = (100, 100, 100)
  m.activation = "sigmoid"         # 'sigmoid' | 'relu' | 'tanh'
  m.init_stddev = 0.01             # weights ~ N(0, init_stddev^2): "small random Gaussian values"
  m.probe_unit = 0                 # the unit of the last hidden layer recorded (Fig. 1(b, c))
  # What the training loop reports of the recorded values at each evaluation:
  # these percentiles over the eval set (Fig. 1(b, c): the 15th, 50th and 85th).
  m.record_percentiles = (15, 50, 85)
  return _override(m, "mlp_model_config", overrides)


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
  # TF-slim's inception_v2 is bn_scale=False, first_conv_bn=False (README, "Reference weights").
  m.bn_scale = True                # gamma in every BN (Alg. 1); False: beta only (TF-slim)
  m.first_conv_bn = True           # BN after conv1 (Sec. 3.2); False: conv1 has a bias, no BN
  #                                  and no L2 weight decay (TF-slim's Conv2d_1a_7x7)
  return m


def inception_model_config(**overrides) -> ConfigDict:
  """`config.model` for BN-Inception (Sec. 4.2, Figure 5; models/inception.py).

  The Inception baseline of Sec. 4.2 is the same network with bn.enabled=False,
  lrn=True and dropout_rate=0.4 (GoogLeNet's).
  """
  m = _inception_unit_fields(_model_section("bn_inception", num_classes=1000, image_size=224))
  m.pool_projection_4cd = 96       # 96: printed outputs 576 (as TF-slim); 128: printed proj column
  m.first_conv = "separable"       # 'separable' (depth multiplier 8, Appendix) | 'plain'
  return _override(m, "inception_model_config", overrides)


def mini_inception_model_config(**overrides) -> ConfigDict:
  """`config.model` for the reduced BN-Inception of models/mini_inception.py (28 x 28
  digits): the units' knobs of the full one on a fixed reduced table."""
  m = _inception_unit_fields(_model_section("mini_inception", num_classes=10, image_size=28))
  return _override(m, "mini_inception_model_config", overrides)


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
  return c


DATA_SECTIONS: Dict[str, Callable[[], ConfigDict]] = {
    "mnist": mnist_data_config,
    "imagenet_folder": lambda: imagenet_data_config("imagenet_folder"),
    "imagenet_tfds": lambda: imagenet_data_config("imagenet_tfds"),
}
MODEL_SECTIONS: Dict[str, Callable[[], ConfigDict]] = {
    "mlp": mlp_model_config,
    "bn_inception": inception_model_config,
    "mini_inception": mini_inception_model_config,
}


# --------------------------------------------------------------------------- upgrade

# What a config saved before a field existed did, where that differs from the
# field's default now (every other absent field takes the schema default, which
# is what the code did before the field was added): section -> field -> value or
# fn(saved config) -> value.
_OLD_BEHAVIOUR: Dict[str, Dict[str, Any]] = {
    # Before distort_on_device the photometric distortions ran on the host.
    "data": {"distort_on_device": False},
    # Before model.image_size was in every section an MLP took whatever the data
    # gave: the data's image size (ImageNet) or MNIST's 28.
    "model": {"image_size": lambda saved: saved.get("data", {}).get("image_size", 28)},
}


def _section_name(saved: Mapping[str, Any], section: str, table: Mapping[str, Any]) -> str:
  name = saved.get(section, {}).get("name")
  if name not in table:
    raise ValueError(f"The saved config's {section}.name={name!r} is not one of "
                     f"{sorted(table)}: cannot bring it to the current schema.")
  return name


def upgrade(config: Union[ConfigDict, Mapping[str, Any]]) -> ConfigDict:
  """A config saved by any earlier version (e.g. a workdir's config.json) as a
  config of the current schema that behaves as that run did.

  Each section is the current schema's (data by `data.name`, model by
  `model.name`) with the saved values over it: a field added since takes the
  value in `_OLD_BEHAVIOUR` if the old code behaved differently, else its
  default. JSON lists become the schema's tuples; fields the schema no longer
  has are kept as saved. Raises ValueError for an unknown data or model name.
  """
  saved = config.to_dict() if isinstance(config, ConfigDict) else dict(config)
  data = DATA_SECTIONS[_section_name(saved, "data", DATA_SECTIONS)]()
  model = MODEL_SECTIONS[_section_name(saved, "model", MODEL_SECTIONS)]()
  out = run_config(data, model)
  for section, fields in _OLD_BEHAVIOUR.items():
    for field, value in fields.items():
      if field in out[section] and field not in saved.get(section, {}):
        out[section][field] = value(saved) if callable(value) else value
  _merge(out, saved, "")
  return out


def _merge(target: ConfigDict, saved: Mapping[str, Any], where: str) -> None:
  for key, value in saved.items():
    if key not in target:
      target[key] = value
    elif isinstance(target[key], ConfigDict):
      if not isinstance(value, Mapping):
        raise ValueError(f"The saved config's {where}{key} is {value!r}, not a section.")
      _merge(target[key], value, f"{where}{key}.")
    else:
      try:
        target[key] = value  # ConfigDict keeps the field's type: list -> tuple, int -> float
      except TypeError as e:
        raise ValueError(f"The saved config's {where}{key}={value!r} does not fit the "
                         f"current field ({type(target[key]).__name__}).") from e
