"""The paper's learning-rate experiment (Sec. 4.2.2, Figures 2 and 3): five ImageNet runs.

  python scripts/sweep.py --sweep=configs/sweeps/lr_acceleration.py --workdir=/shared/lr \\
      --launcher=slurm     # one SLURM job per run: 1 node x 8 GPUs (get_resources)
  python scripts/sweep.py --sweep=configs/sweeps/lr_acceleration.py --workdir=runs/lr \\
      --print_commands     # one scripts/train.py line per run, for another scheduler
  python scripts/report.py --workdir=runs/lr --paper      # steps to 72.2%, max accuracy

Inception (no BN, LR 0.0015), BN-Baseline (+ BN), BN-x5 (+ the Sec. 4.2.1 changes, LR x5),
BN-x30 (LR x30) and BN-x5-Sigmoid, from the paper configs configs/<run>.py. The argument
picks their variant: `full` (default; the paper's run on prepared TFDS imagenet2012, each
on 8 GPUs with 32 examples per replica) or `cpu` (imagenet_sample at 32 px for a
minute each: a smoke test of the five recipes, not a learning curve; see
configs/sweeps/lr_acceleration_cpu.py for the reduced-scale twin).
"""

from bn_inception.sweep import Member

RUNS = ("inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid")

# The paper trains each network with "32 examples per replica" (Sec. 4.2) on many
# replicas; here one member is one 8-GPU node: a global batch of 32 x 8, and
# bn.stats_mode=per_device (configs/base.py) keeps each BN statistic over one GPU's 32.
GPUS = 8
FULL = {"train.batch_size": 32 * GPUS}


def get_sweep(variant: str = "full"):
  extra = FULL if variant == "full" else {}
  return [Member(run, f"configs/{run}.py:{variant}", extra) for run in RUNS]


def get_resources(variant: str = "full"):
  """What each member's SLURM job asks for (scripts/sweep.py --launcher=slurm; the
  command line's --slurm.<field> wins): 1 node x 8 GPUs, one JAX process per GPU, CPUs
  to decode JPEGs. The cpu variant asks for the defaults (one task, one CPU)."""
  if variant != "full":
    return {}
  return {"nodes": 1, "gpus_per_node": GPUS, "cpus_per_task": 8}
