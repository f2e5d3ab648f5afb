"""The equal-budget control of Figures 2-3 on MNIST-back-image (docs/reproduction.md,
section 2b): BN-x5 and BN-x30 trained as many steps as BN-Baseline.

  python scripts/sweep.py --sweep=configs/sweeps/twin_back_image_equal_budget.py \
      --workdir=runs/twin_bi_budget

At time scale 2,500 (twin_back_image.py) BN-Baseline runs 6,000 steps and the
accelerated nets 2,400. Here the accelerated nets run at time scale 1,000: 6,000 steps,
their decay interval stretched by the same factor 2.5, so they see BN-Baseline's
examples with the same schedule shape. Members `<run>_equal_budget-seed<k>`, seeds as
twin_back_image.py's, so each pairs with its 2,400-step self. ~30 minutes of CPU.
"""

from bn_inception.sweep import members, product
from configs.sweeps.twin_back_image import SEEDS, VARIANT

RUNS = ("bn_x5", "bn_x30")
TIME_SCALE = 1000  # 6M paper steps / 1,000 = 6,000 = BN-Baseline's 15M / 2,500


def get_sweep(arg: str = f"{TIME_SCALE},{VARIANT}"):
  time_scale, _, variant = arg.partition(",")
  out = []
  for run in RUNS:
    out += members(f"{run}_equal_budget", f"configs/back_image_lr_acceleration.py:{run},"
                   f"{time_scale},{variant or VARIANT}", product("seed", SEEDS))
  return out
