"""Fields shared by every run. Experiment configs start from `get_config()` here.

Every paper knob is a field; change any with --config.<section>.<field>=value.
"""

import os

import ml_collections

from bn_inception.data import default_data_root


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Multi-host start (bn_inception.sharding.maybe_initialize_distributed):
  # 'auto' = jax.distributed.initialize() when the environment names a
  # multi-process launch (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI, TPU
  # worker list); 'on' = always (e.g. a GCE Cloud TPU VM slice); 'off' = never.
  c.distributed = "auto"

  # The BN transform (Sec. 3, Alg. 1/2).
  c.bn = ml_collections.ConfigDict()
  c.bn.enabled = True
  c.bn.momentum = 0.99            # moving-average decay: ra <- m*ra + (1-m)*batch
  c.bn.epsilon = 1e-3             # the eps of Alg. 1
  c.bn.unbiased_variance = True   # Alg. 2: Var[x] = m/(m-1) E_B[sigma_B^2]
  # Whose examples a training statistic is taken over: 'per_device' (the paper:
  # each replica's own examples), 'global' (the whole global batch), or 'group'
  # (fixed groups of `group_size` examples, independent of the device count).
  # With train.batch_size = 32 x devices, 'per_device' is the paper's 32 per
  # replica; 'group' with group_size=32 is the same statistics on any device count.
  c.bn.stats_mode = "per_device"
  c.bn.group_size = 0             # examples per statistic; used by stats_mode='group' only

  c.model = ml_collections.ConfigDict()  # filled in by each experiment config

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist"
  c.data.data_dir = os.path.join(default_data_root(), "mnist")
  c.data.download_if_missing = True  # fall back to tfds when data_dir is absent
  c.data.shuffle = True
  c.data.mean = (0.0,)               # on-device normalisation (x/255 - mean)/std
  c.data.std = (1.0,)

  # SGD with momentum and L2 weight decay (Sec. 4.2.1).
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9           # 0 gives plain SGD
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0       # L2 on weights (kernels) only, added to the gradient
  c.optim.grad_clip_norm = 0.0     # 0: no clipping
  # 'constant' | 'exponential' (lr * decay_rate^(step/decay_steps)) | 'cosine'
  c.optim.schedule = "constant"
  c.optim.decay_rate = 0.96
  c.optim.decay_steps = 1000
  c.optim.decay_epochs = 0.0       # > 0: decay interval in epochs of the training set (wins)
  c.optim.staircase = True
  c.optim.warmup_steps = 0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32          # GLOBAL batch (sum over all devices)
  c.train.num_steps = 1000
  c.train.eval_batch_size = 1000   # any size: the last batch is padded and masked
  c.train.eval_every = 500
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.eval_at_start = True     # evaluate the initial network (step 0)
  # A step whose loss or gradients are NaN/inf is never applied. 'stop': fail at
  # the next log/checkpoint point, before any save; 'skip': count it and go on.
  c.train.nonfinite_policy = "stop"
  c.train.inject_nonfinite_at_step = -1  # test fault: make step k's loss inf (-1: off)
  # Fine-tuning: '<workdir>' or '<workdir>@<step>' (a run, or a TF-slim import from
  # scripts/import_checkpoint.py) whose parameters and BN statistics start this run
  # at step 0 with a fresh optimizer; the classifier is re-initialised when
  # model.num_classes differs. Ignored once this workdir has its own checkpoints.
  c.train.init_from = ""
  return c
