"""Figure 1 as a sweep: the MNIST network with and without BN (Sec. 4.1).

  python scripts/sweep.py --sweep=configs/sweeps/mnist_fig1.py --workdir=runs/fig1
  python scripts/sweep.py --sweep=configs/sweeps/mnist_fig1.py:5000 ...   # 5,000 steps each
"""

from bn_inception.sweep import members


def get_sweep(num_steps: str = ""):
  overrides = {"train.num_steps": int(num_steps)} if num_steps else {}
  return [members("bn", "configs/mnist_fig1.py:bn", overrides=overrides),
          members("no_bn", "configs/mnist_fig1.py:no_bn", overrides=overrides)]
