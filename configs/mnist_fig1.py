"""MNIST, Figure 1 (Sec. 4.1): 3 x 100 sigmoid units, with BN (default) or without.

  python scripts/train.py --config=configs/mnist_fig1.py --workdir=/tmp/bn
  python scripts/train.py --config=configs/mnist_fig1.py:no_bn --workdir=/tmp/nobn
"""

from configs import base


def get_config(variant: str = "bn"):
  if variant not in ("bn", "no_bn"):
    raise ValueError(f"configs/mnist_fig1.py takes 'bn' or 'no_bn', not {variant!r}.")
  c = base.get_config()
  c.bn.enabled = variant == "bn"   # BN after each hidden layer, before the sigmoid

  # The model section's defaults are Figure 1's network (schema.mlp_model_config):
  # 3 x 100 sigmoid units, weights from N(0, 0.01^2), 10-way softmax, and the
  # sigmoid of the last hidden layer recorded for Fig. 1(b, c). The evaluations are
  # config.evals' defaults (schema.evals_config): test accuracy for Fig. 1(a), and the
  # probe's 15th, 50th and 85th percentiles of that recorded input for Fig. 1(b, c).

  c.optim.learning_rate = 0.5
  c.optim.momentum = 0.0

  c.train.batch_size = 60          # Sec. 4.1: 60 examples per mini-batch
  c.train.num_steps = 50_000       # Sec. 4.1: 50,000 steps
  c.train.eval_batch_size = 1000
  c.train.eval_every = 500
  c.train.log_every = 1000
  c.train.checkpoint_every = 5000
  return c
