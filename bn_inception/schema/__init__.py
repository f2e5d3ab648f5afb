"""Every config section with its defaults and their comments, in one place.

A run's config has the sections of `run_config`: seed, distributed, bn, model,
data, optim, train, evals. The data section is chosen by `data.name` (its entry in
`DATASETS`), the model section by `model.name` (`MODELS`). Beside each section's
defaults are its `*_RULES`: every field's allowed values or range, which
config_checks.validate checks before anything runs. configs/*.py start from these
and set what their experiment changes; library code reads every field directly
(no defaults elsewhere). config_upgrade.py brings a config saved by an older
version (a workdir's config.json) to this schema with the behaviour that run had.

The sections live in one module each: common.py (what they share), data.py
(`DATASETS`), models.py (`MODELS`), training.py (bn, optim, train; `STATS_MODES`,
`SCHEDULES`), evals.py (`EVAL_TYPES`); this module assembles a run's config and
re-exports their names (`schema.X`).

Imports only the standard library, ml_collections and the stdlib-only
field_rules.py and registry.py: loading or checking a config costs no TensorFlow
or JAX.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from bn_inception.field_rules import at_least, one_of
from bn_inception.schema.common import (DATA_ENV_VAR, IMAGENET_MEAN, IMAGENET_STD,
                                        ConfigDict, default_data_root)
from bn_inception.schema.data import (DATASETS, IMAGENET_DATA_RULES,
                                      MNIST_BACK_IMAGE_DATA_RULES, MNIST_DATA_RULES,
                                      RESIZE_METHODS, imagenet_data_config,
                                      mnist_back_image_data_config, mnist_data_config)
from bn_inception.schema.evals import (CROP_SCHEMES, EVAL_TYPES, OFFLINE_EVAL_TYPES,
                                       eval_config, evals_config)
from bn_inception.schema.models import (INCEPTION_MODEL_RULES, INCEPTION_UNIT_RULES,
                                        MLP_MODEL_RULES, MODEL_RULES, MODELS,
                                        inception_model_config, mini_inception_model_config,
                                        mlp_model_config)
from bn_inception.schema.training import (BN_RULES, NONFINITE_POLICIES, OPTIM_RULES,
                                          SCHEDULES, STATS_MODES, TRAIN_RULES, bn_config,
                                          optim_config, train_config)

__all__ = [
    "BN_RULES", "CROP_SCHEMES", "ConfigDict", "DATASETS", "DATA_ENV_VAR", "EVAL_TYPES",
    "IMAGENET_DATA_RULES", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MODEL_RULES",
    "INCEPTION_UNIT_RULES", "MLP_MODEL_RULES", "MNIST_BACK_IMAGE_DATA_RULES",
    "MNIST_DATA_RULES", "MODELS", "MODEL_RULES", "NONFINITE_POLICIES", "NON_RESULT_FIELDS",
    "OFFLINE_EVAL_TYPES", "OPTIM_RULES", "RESIZE_METHODS", "RUN_RULES", "SCHEDULES",
    "STATS_MODES", "TRAIN_RULES", "bn_config", "default_data_root", "eval_config",
    "evals_config", "imagenet_data_config", "inception_model_config",
    "mini_inception_model_config", "mlp_model_config", "mnist_back_image_data_config",
    "mnist_data_config", "optim_config", "run_config", "section_rules", "train_config",
]

# Fields that do not change what a run computes: where it finds its data (each
# dataset's `location_fields` in DATASETS), how its processes start, and how often it
# logs, saves and profiles (resumes are bit-equal). Two runs differing only in these are the
# same run (workdir_config.RESUMABLE_FIELDS, report.py).
NON_RESULT_FIELDS = tuple(dict.fromkeys(
    f"data.{field}" for dataset in DATASETS.values() for field in dataset.location_fields)) + (
    "distributed", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.eval_batch_size", "train.profile_steps",
)


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
