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
member finishes and reports. About 4,000 steps in all.
"""

from bn_inception.sweep import Member

TWIN = "configs/mnist_lr_acceleration.py"
SKIP = {"train.nonfinite_policy": "skip"}


def get_sweep():
  return [
      Member("bn_x5_sigmoid", f"{TWIN}:bn_x5_sigmoid", SKIP),
      Member("bn_x5_sigmoid_no_bn", f"{TWIN}:bn_x5_sigmoid", {**SKIP, "bn.enabled": False}),
      Member("inception_sigmoid", f"{TWIN}:inception", {**SKIP, "model.activation": "sigmoid"}),
  ]
