"""The `config.bn`, `config.optim` and `config.train` sections, their fields' rules,
and the registries `STATS_MODES` (bn.stats_mode) and `SCHEDULES` (optim.schedule).

Imports only the standard library, ml_collections and the stdlib-only field_rules.py.
"""

from __future__ import annotations

from typing import Optional, Tuple

from bn_inception.field_rules import FLAG, TEXT, above, at_least, custom, one_of, when, within
from bn_inception.schema.common import ConfigDict


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
  # 'a:b' (1 <= a <= b): a jax.profiler trace of training steps a..b into
  # <workdir>/profile, for TensorBoard's profile tab; '' = no trace. Results unchanged.
  t.profile_steps = ""
  return t


def profile_window(text: str) -> Optional[Tuple[int, int]]:
  """train.profile_steps 'a:b' -> (a, b); '' -> None; ValueError otherwise."""
  if text == "":
    return None
  first, sep, last = text.partition(":")
  if not (sep and first.strip().isdigit() and last.strip().isdigit()):
    raise ValueError(text)
  a, b = int(first), int(last)
  if not 1 <= a <= b:
    raise ValueError(text)
  return a, b


def _is_profile_window(v, c) -> bool:
  if not isinstance(v, str):
    return False
  try:
    profile_window(v)
  except ValueError:
    return False
  return True


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
    "profile_steps": custom("must be 'a:b' with 1 <= a <= b (training steps a..b), or ''",
                            _is_profile_window, "a jax.profiler trace into <workdir>/profile"),
}

