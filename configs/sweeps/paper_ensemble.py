"""The paper's best result (Sec. 4.2.3, Figure 4): six BN-x30 variants, one ensemble.

  python scripts/sweep.py --sweep=configs/sweeps/paper_ensemble.py --workdir=/shared/ens \\
      --launcher=slurm   # six jobs, each configs/bn_x30.py on 1 node x 8 GPUs (TFDS imagenet2012)
  python scripts/evaluate.py --workdirs='/shared/ens/x30_*' --crops=1,144 --paper \\
      --split=validation --output_dir=/shared/ens/eval --launcher=slurm --slurm.gpus_per_node=8

"Each was based on BN-x30, modified via some of the following: increased initial
weights in the convolutional layers; using Dropout (with the Dropout probability of
5% or 10%, vs. 40% for the original Inception); and using non-convolutional,
per-activation Batch Normalization with last hidden layers of the model." The paper
does not say which member had which modification: the assignment below is ours,
one line per member, so that each modification appears in at least two members.
"Increased initial weights" is model.init_scale=1.5 (our choice of factor);
per-activation BN is in the last Inception module (5b). Each member trains to the
paper's ~6M steps (configs/bn_x30.py).

The `cpu` argument is the CPU twin: the same six members on imagenet_sample at 32 px
for 10 steps, with 1% of the sample (10 images) held out for evaluation, so that
both commands run end to end in a few minutes (tests/test_paper_ensemble.py).
"""

from bn_inception.sweep import Member

# Each member also has a seed of its own: six separately trained networks start from
# different random weights and see the examples in different orders. With one shared
# seed, x30_init and x30_init_drop5 would start from the same weights, and all six
# would see the same sequence of batches: far more alike than six separate networks,
# so their ensemble would gain less than the paper's.
MEMBERS = {  # name: how the member differs from BN-x30
    "x30_init":         {"seed": 1, "model.init_scale": 1.5},
    "x30_drop5":        {"seed": 2, "model.dropout_rate": 0.05},
    "x30_drop10":       {"seed": 3, "model.dropout_rate": 0.10},
    "x30_pabn":         {"seed": 4, "model.per_activation_bn_last": True},
    "x30_init_drop5":   {"seed": 5, "model.init_scale": 1.5, "model.dropout_rate": 0.05},
    "x30_pabn_drop10":  {"seed": 6, "model.per_activation_bn_last": True,
                         "model.dropout_rate": 0.10},
}

# Each member: one 8-GPU node, 32 examples per replica (Sec. 4.2) -- a global batch of
# 32 x 8 with bn.stats_mode=per_device (configs/base.py): each BN statistic over one GPU's 32.
GPUS = 8
FULL = {"train.batch_size": 32 * GPUS}

CPU_TWIN = {"train.num_steps": 10, "train.checkpoint_every": 10, "train.eval_every": 10,
            "train.log_every": 5, "data.eval_fraction": 0.01, "train.eval_batch_size": 16}


def get_sweep(variant: str = "full"):
  if variant not in ("full", "cpu"):
    raise ValueError(f"configs/sweeps/paper_ensemble.py takes 'full' or 'cpu', not {variant!r}.")
  extra = CPU_TWIN if variant == "cpu" else FULL
  return [Member(name, f"configs/bn_x30.py:{variant}", {**changes, **extra})
          for name, changes in MEMBERS.items()]


def get_resources(variant: str = "full"):
  """What each member's SLURM job asks for (scripts/sweep.py --launcher=slurm; the
  command line's --slurm.<field> wins): 1 node x 8 GPUs, one JAX process per GPU, CPUs
  to decode JPEGs. The cpu twin asks for the defaults (one task, one CPU)."""
  return {"nodes": 1, "gpus_per_node": GPUS, "cpus_per_task": 8} if variant == "full" else {}
