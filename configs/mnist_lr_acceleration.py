"""The CPU twin of the paper's learning-rate experiment (Sec. 4.2.2, Figures 2 and 3).

  python scripts/train.py --config=configs/mnist_lr_acceleration.py:bn_x5 --workdir=...
  python scripts/sweep.py --sweep=configs/sweeps/lr_acceleration_cpu.py --workdir=...
  python scripts/train.py --config=configs/mnist_lr_acceleration.py:bn_x5,2500 ...  (time scale)

One config per paper run (inception, bn_baseline, bn_x5, bn_x30, bn_x5_sigmoid). Each
takes its recipe FROM THE PAPER CONFIG of the same name (configs/<run>.py): BN on or
off, learning rate (0.0015 x1 / x5 / x30), momentum, L2 weight decay (/5 for the
accelerated nets), exponential decay (6x faster for the accelerated nets), dropout
(40% or none), LRN (on or off), ReLU or sigmoid, batch 32, BN over each replica's
own examples. Only scale changes:

* data: MNIST digits, 28x28 (60,000 training, all 10,000 test digits evaluated).
  A learning curve needs held-out examples of the training classes; the ImageNet
  sample has one image per class, so it cannot give one. MNIST is read as images
  (N, 28, 28, 1) by the same loop and sampler; the ImageNet crops, flips and colour
  distortions have no meaning for digits, so there is no augmentation (the paper's
  "fewer distortions" and "more shuffling" knobs have no counterpart here: every
  run sees the same globally shuffled order).
* model: the reduced BN-Inception of bn_inception/models/mini_inception.py (the same
  builder and units, 83 K parameters) at the native 28 px.
* learning rates: the paper's times LR_SCALE = 10, so the ratios x1 / x5 / x30 stay.
* time: one step here stands for TIME_SCALE steps of the paper's runs. Training
  lengths and decay intervals are the paper's divided by it: Inception 31 M steps ->
  2,903, BN-Baseline 15 M -> 1,405, the accelerated nets 6 M -> 562; the LR decays by
  0.96 every 30 steps (Inception, BN-Baseline: 8 epochs of ImageNet) or every 5
  (the accelerated nets: 8/6 epochs), exactly 6x faster as in Sec. 4.2.1. Each run
  is evaluated EVALS_PER_RUN times on all 10,000 test digits.
  The argument `<run>,<time scale>` (e.g. `bn_x5,2500`) compresses time less: at 2,500
  the accelerated nets run 2,400 steps (1.3 MNIST epochs, decay every 21 steps),
  Inception 12,400; at the default they see only 0.3 epochs before their learning
  rate has decayed away, and stop below Inception's maximum (docs/sweeps.md;
  configs/sweeps/twin_seeds.py runs the milder compression over seeds).
* BN moving averages: momentum 0.9 (the paper's 0.9997 would not settle in a run
  this short).
All five take about 10 minutes on 2 CPU cores.
"""

import importlib

from bn_inception.schema import mini_inception_model_config
from configs import base

RUNS = ("inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid")
IMAGENET_TRAIN_EXAMPLES = 1_281_167
# Paper steps per step here, chosen so that the accelerated nets' decay interval
# (8/6 ImageNet epochs of batch 32 = 53,383 steps) is 5 steps (Inception's: 30).
TIME_SCALE = 10_677
# Every learning rate is the paper's times this (x1 / x5 / x30 kept): 0.015 was the
# best constant rate of {0.0015, 0.005, 0.015, 0.05} for the twin Inception (no BN)
# over 600 steps, as the paper's 0.0015 is GoogLeNet's tuned rate.
LR_SCALE = 10.0
EVALS_PER_RUN = 15
MODEL_FIELDS = ("activation", "dropout_rate", "lrn", "lrn_depth_radius", "lrn_bias",
                "lrn_alpha", "lrn_beta")
OPTIM_FIELDS = ("learning_rate", "momentum", "nesterov", "weight_decay", "grad_clip_norm",
                "schedule", "decay_rate", "staircase")


def paper_config(run: str):
  return importlib.import_module(f"configs.{run}").get_config("full")


def parse_arg(arg: str):
  """'bn_x5' -> ('bn_x5', TIME_SCALE); 'bn_x5,2500' -> ('bn_x5', 2500)."""
  run, _, scale = arg.partition(",")
  if run not in RUNS:
    raise ValueError(f"configs/mnist_lr_acceleration.py takes one of {RUNS}, optionally "
                     f"',<time scale>', not {arg!r}.")
  if not scale:
    return run, TIME_SCALE
  try:
    time_scale = int(scale)
  except ValueError:
    time_scale = 0
  if time_scale < 1:
    raise ValueError(f"configs/mnist_lr_acceleration.py:{arg}: the time scale must be a "
                     "positive whole number of paper steps per step.")
  return run, time_scale


def get_config(arg: str = "bn_x5"):
  run, time_scale = parse_arg(arg)
  paper = paper_config(run)
  c = base.get_config()                      # MNIST data section
  c.data.mean = (0.1307,)                    # MNIST pixel mean / std
  c.data.std = (0.3081,)

  c.bn.enabled = paper.bn.enabled
  c.bn.epsilon = paper.bn.epsilon
  c.bn.stats_mode = paper.bn.stats_mode
  c.bn.momentum = 0.9

  c.model = mini_inception_model_config()
  for field in MODEL_FIELDS:
    c.model[field] = paper.model[field]

  for field in OPTIM_FIELDS:
    c.optim[field] = paper.optim[field]
  c.optim.learning_rate = round(paper.optim.learning_rate * LR_SCALE, 12)
  steps_per_epoch = IMAGENET_TRAIN_EXAMPLES / paper.train.batch_size
  c.optim.decay_epochs = 0.0                 # the interval is given in steps here:
  c.optim.decay_steps = max(1, round(paper.optim.decay_epochs * steps_per_epoch / time_scale))

  c.train.batch_size = paper.train.batch_size
  c.train.num_steps = round(paper.train.num_steps / time_scale)
  c.train.eval_every = -(-c.train.num_steps // EVALS_PER_RUN)
  c.train.eval_batch_size = 1000
  c.train.log_every = 25
  c.train.checkpoint_every = 500
  c.train.eval_at_start = True
  return c
