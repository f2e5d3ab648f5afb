"""How many examples one BN statistic is taken over (Sec. 3.1, Sec. 4.2): accuracy
against the statistics-batch size at a fixed global batch.

  python scripts/sweep.py --sweep=configs/sweeps/bn_group_size.py --workdir=runs/bn_group
  python scripts/report.py --workdir=runs/bn_group --x=bn.group_size --log_x
  python scripts/sweep.py --sweep=configs/sweeps/bn_group_size.py:21354 ...  (half as long)

Alg. 1 normalises with the mean and variance of a mini-batch; the paper's ImageNet
runs take them over the 32 examples each replica sees (Sec. 4.2). Here the global
batch is fixed at GLOBAL_BATCH = 64 and `bn.stats_mode=group` takes every statistic
over groups of `bn.group_size` in {2, 4, 8, 16, 32, 64} examples (2 = 32 groups per
step, 64 = one). For convolutions a statistic covers group x height x width values
(Sec. 3.2), so even group 2 pools 2 x 16 values in the 4x4 last module. Moving
averages (Alg. 2) are the mean of the group statistics, as always.

Every member is the twin's BN-x5 recipe (configs/mnist_lr_acceleration.py: reduced
BN-Inception on MNIST, 562 steps with the LR decaying 6x faster) at batch 64 instead
of 32 (the same learning rate), evaluated EVALS = 2 times on all 10,000 test digits.
The argument is the twin's time scale (default 10,677; 21,354 halves every run).
"""

from bn_inception.sweep import members, product
from configs import mnist_lr_acceleration as twin

GROUP_SIZES = (2, 4, 8, 16, 32, 64)
GLOBAL_BATCH = 64
EVALS = 2


def get_sweep(time_scale: str = str(twin.TIME_SCALE)):
  run = f"bn_x5,{time_scale}"
  steps = twin.get_config(run).train.num_steps
  fixed = {"train.batch_size": GLOBAL_BATCH, "bn.stats_mode": "group",
           "train.eval_every": -(-steps // EVALS), "train.eval_at_start": False}
  return members("bn_x5", f"configs/mnist_lr_acceleration.py:{run}",
                 product("bn.group_size", GROUP_SIZES), fixed)
