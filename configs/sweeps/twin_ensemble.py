"""The ensemble of Sec. 4.2.3 (Figure 4) at the scale of the twin of Figures 2-3.

  python scripts/sweep.py --sweep=configs/sweeps/twin_ensemble.py --workdir=runs/twin_ens
  python scripts/evaluate.py --workdirs='runs/twin_ens/x30_*' --crops=1 --split=eval \\
      --batch_size=1000 --output_dir=runs/twin_ens/eval

The paper's claim: an ensemble of six BN-x30 variants beats its best member (4.9%
top-5 validation error against 5.82% for the best single network, 144 crops). The six
members are those of configs/sweeps/paper_ensemble.py (the same modifications, one
line each: initial weights x1.5, dropout 5% / 10%, per-activation BN in the last
Inception module, and two combinations; each member its own seed), each on the twin's BN-x30
(configs/mnist_lr_acceleration.py:bn_x30: reduced BN-Inception on MNIST, 562 steps,
evaluated during training only at the end). The argument is the time compression,
as in twin_seeds.py: `twin_ensemble.py:2500` trains each member 2,400 steps (1.3
MNIST epochs) instead of 562 (0.3 epochs), nearer the paper's fully trained members.
They are evaluated alone and as an ensemble (softmax probabilities averaged) on the
held-out split, all 10,000 MNIST test digits, which no member trained on, with one
crop. Top-1 error is the number to read (with 10 classes top-5 is nearly always
right). The MNIST data has no central crop (its crop fraction is 1), so the ten crops
are five copies of the whole digit and five of its mirror image: `--crops=10` would
average a digit with its mirror, which is no digit, so the paper's multi-crop gain
has no counterpart here (ImageNet objects stay objects mirrored).
"""

from bn_inception.sweep import Member
from configs import mnist_lr_acceleration as twin
from configs.sweeps.paper_ensemble import MEMBERS


def twin_spec(run: str, arg: str) -> str:
  """`<time scale>[,plain|rotated]` -> the config spec of `run`: the MNIST twin, or
  with a variant the same recipe on MNIST-back-image (back_image_lr_acceleration.py)."""
  time_scale, _, variant = arg.partition(",")
  if variant:
    return f"configs/back_image_lr_acceleration.py:{run},{time_scale},{variant}"
  return f"configs/mnist_lr_acceleration.py:{run},{time_scale}"


def get_sweep(arg: str = str(twin.TIME_SCALE)):
  """`<time scale>[,plain|rotated]`: `2500,rotated` is the ensemble on
  MNIST-rot-back-image at twin_back_image.py's compression."""
  config = twin_spec("bn_x30", arg)
  num_steps = twin.get_config(f"bn_x30,{arg.partition(',')[0]}").train.num_steps
  final_eval_only = {"train.eval_every": num_steps, "train.eval_at_start": False}
  return [Member(name, config, {**changes, **final_eval_only})
          for name, changes in MEMBERS.items()]
