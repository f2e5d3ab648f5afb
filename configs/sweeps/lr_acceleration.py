"""The paper's learning-rate experiment (Sec. 4.2.2, Figures 2 and 3): five ImageNet runs.

  python scripts/sweep.py --sweep=configs/sweeps/lr_acceleration.py --workdir=runs/lr \\
      --print_commands     # one scripts/train.py line per run, for a cluster
  python scripts/report.py --workdir=runs/lr --paper      # steps to 72.2%, max accuracy

Inception (no BN, LR 0.0015), BN-Baseline (+ BN), BN-x5 (+ the Sec. 4.2.1 changes, LR x5),
BN-x30 (LR x30) and BN-x5-Sigmoid, from the paper configs configs/<run>.py. The argument
picks their variant: `full` (default; the paper's run on prepared TFDS imagenet2012 --
set --config.train.batch_size to 32 x replicas) or `cpu` (imagenet_sample at 32 px for a
minute each: a smoke test of the five recipes, not a learning curve; see
configs/sweeps/lr_acceleration_cpu.py for the reduced-scale twin).
"""

from bn_inception.sweep import Member

RUNS = ("inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid")


def get_sweep(variant: str = "full"):
  return [Member(run, f"configs/{run}.py:{variant}") for run in RUNS]
