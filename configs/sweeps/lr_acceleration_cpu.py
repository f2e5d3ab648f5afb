"""The CPU twin of the paper's learning-rate experiment (Sec. 4.2.2, Figures 2 and 3).

  python scripts/sweep.py --sweep=configs/sweeps/lr_acceleration_cpu.py --workdir=runs/lr_cpu
  python scripts/report.py --workdir=runs/lr_cpu --target=inception --paper

The five runs of configs/sweeps/lr_acceleration.py, each through
configs/mnist_lr_acceleration.py:<run>: the paper configs' recipes on MNIST digits with
a reduced BN-Inception and a compressed schedule (that file says what is scaled and why).
"""

from bn_inception.sweep import Member

RUNS = ("inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid")


def get_sweep():
  return [Member(run, f"configs/mnist_lr_acceleration.py:{run}") for run in RUNS]
