"""Inference statistics (Alg. 2): moving averages against exact population statistics
early in training.

  python scripts/sweep.py --sweep=configs/sweeps/inference_stats.py --workdir=runs/inf_stats
  W=runs/inf_stats/momentum0.9997   # then the same with W=runs/inf_stats/momentum0.9
  python scripts/evaluate.py --workdirs=$W@50,$W@150,$W@562 --crops=1 --batch_size=1000 \
      --output_dir=$W-eval_moving
  python scripts/evaluate.py --workdirs=$W@50,$W@150,$W@562 --crops=1 --batch_size=1000 \
      --population_stats_batches=100 --output_dir=$W-eval_population

(each step's checkpoint is one "member"; ignore the ensemble row.)

At inference BN uses the population mean and unbiased variance (Alg. 2, step 10).
Training keeps them as moving averages; the paper's ImageNet runs decay them by
0.9997 per step (configs/imagenet_base.py), so after n steps the initial values
(mean 0, variance 1) still weigh 0.9997^n: 86% at step 500. Early in training such
averages lag the network, and exact averages of the batch moments over N training
batches (`scripts/evaluate.py --population_stats_batches=N`) should do better.

Two members of the twin's BN-x5 (configs/mnist_lr_acceleration.py: reduced
BN-Inception on MNIST, 562 steps), differing only in `bn.momentum`: 0.9997 (the
paper's) and 0.9 (the twin's, which settles within ~50 steps), each checkpointed
every 50 steps and all checkpoints kept, so each step can be evaluated both ways on
all 10,000 test digits (by scripts/evaluate.py; training itself evaluates once, at
the end, with the moving averages).
"""

from bn_inception.sweep import members, product

MOMENTA = (0.9997, 0.9)


def get_sweep():
  fixed = {"train.checkpoint_every": 50, "train.keep_checkpoints": 20,
           "train.eval_every": 562, "train.eval_at_start": False}
  return members("", "configs/mnist_lr_acceleration.py:bn_x5",
                 product("bn.momentum", MOMENTA, label="momentum"), fixed)
