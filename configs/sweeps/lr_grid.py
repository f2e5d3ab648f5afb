"""Higher learning rates (Sec. 3.3): the same net with and without BN over a learning-rate grid.

  python scripts/sweep.py --sweep=configs/sweeps/lr_grid.py --workdir=runs/lr_grid
  python scripts/sweep.py --sweep=configs/sweeps/lr_grid.py:200 ...   (200 steps each)
  python scripts/report.py --workdir=runs/lr_grid --x=optim.learning_rate --group=bn.enabled

"Batch Normalization enables higher learning rates" (Sec. 3.3): without BN a learning
rate that is too high makes the gradients explode or the net get stuck; with BN it
trains. Every member is the twin's BN-x5 recipe (configs/mnist_lr_acceleration.py:
reduced BN-Inception on MNIST, no dropout, no LRN, momentum 0.9, L2 4e-5, batch 32);
the two variants differ only in `bn.enabled` (without BN every convolution gets a bias).

Scaled for a 2-core CPU: each member runs NUM_STEPS = 500 steps (a quarter of an
MNIST epoch; the argument sets another count) at a CONSTANT learning rate (no decay, so the rate on the x axis is the rate
the net trained at) and is evaluated once, at the end, on all 10,000 test digits.
A diverged step is skipped and counted (`train.nonfinite_policy=skip`,
`train/nonfinite_steps` in metrics.jsonl), so a diverging member still finishes and
reports its accuracy. The twin's rates are the paper's x10: 0.015 (Inception),
0.075 (BN-x5) and 0.45 (BN-x30) lie inside the grid.
"""

from bn_inception.sweep import members, product, variants

LEARNING_RATES = (0.015, 0.05, 0.15, 0.5, 1.5, 5.0)
NUM_STEPS = 500
BN = {"bn": {"bn.enabled": True}, "no_bn": {"bn.enabled": False}}


def get_sweep(num_steps: str = str(NUM_STEPS)):
  steps = int(num_steps)
  fixed = {"optim.schedule": "constant", "train.num_steps": steps,
           "train.eval_every": steps, "train.eval_at_start": False,
           "train.checkpoint_every": steps, "train.nonfinite_policy": "skip"}
  # Each rate's BN and no-BN pair side by side (`--only='*-lr0.5'` runs one pair).
  return members("", "configs/mnist_lr_acceleration.py:bn_x5",
                 product("optim.learning_rate", LEARNING_RATES) * variants(BN), fixed)
