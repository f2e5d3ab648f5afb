"""Sigmoid units with and without BN (Sec. 4.2.2), on the twin of Figures 2-3.

  python scripts/sweep.py --sweep=configs/sweeps/sigmoid_no_bn.py --workdir=runs/sigmoid
  python scripts/report.py --workdir=runs/sigmoid --target=0.2

"We were also able to train BN-x5-Sigmoid ... without Batch Normalization, Inception
with sigmoid never achieves better than 1/1000 accuracy" (Sec. 4.2.2): chance on
ImageNet's 1000 classes. Here the classes are MNIST's 10, so chance is ~10%.
Three members of the twin (configs/mnist_lr_acceleration.py, its scaling and why):

* `bn_x5_sigmoid`: the twin's BN-x5-Sigmoid (562 steps, as in lr_acceleration_cpu.py);
* `inception_sigmoid`: the paper's claim as written: the twin's Inception recipe
  (no BN, learning rate x1, dropout, LRN, 2,903 steps) with sigmoid units;
* `bn_x5_sigmoid_no_bn`: BN-x5-Sigmoid with only BN taken out (same learning rate,
  schedule and length), the controlled comparison.

A diverged step is skipped and counted (`train.nonfinite_policy=skip`) so every
member finishes and reports. Each is evaluated EVALS = 5 times on all 10,000 test
digits (an evaluation costs about as much as 100 training steps here). About 4,000
training steps in all; the argument is the twin's time scale (`:2500` runs the
accelerated nets 2,400 steps, Inception 12,400).
"""

from bn_inception.sweep import Member
from configs import mnist_lr_acceleration as twin
from configs.sweeps.twin_ensemble import twin_spec

EVALS = 5


def _member(name: str, run: str, arg: str, **changes) -> Member:
  steps = twin.get_config(f"{run},{arg.partition(',')[0]}").train.num_steps
  return Member(name, twin_spec(run, arg),
                {"train.nonfinite_policy": "skip", "train.eval_every": -(-steps // EVALS),
                 **changes})


def get_sweep(arg: str = str(twin.TIME_SCALE)):
  """`<time scale>[,plain|rotated]` (twin_ensemble.twin_spec): `2500,rotated` is the
  same three on MNIST-rot-back-image at twin_back_image.py's compression."""
  return [
      _member("bn_x5_sigmoid", "bn_x5_sigmoid", arg),
      _member("bn_x5_sigmoid_no_bn", "bn_x5_sigmoid", arg, **{"bn.enabled": False}),
      _member("inception_sigmoid", "inception", arg, **{"model.activation": "sigmoid"}),
  ]
