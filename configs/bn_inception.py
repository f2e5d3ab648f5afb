"""BN-Inception / the Inception baseline of Sec. 4.2 (Figure 5): the model section.

The paper's ImageNet runs get their own configs (with the ImageNet data section);
this file holds the model variants and a smoke test on the base MNIST data:

  python scripts/model_summary.py --config=configs/bn_inception.py
  python scripts/model_summary.py --config=configs/bn_inception.py:inception
  python scripts/train.py --config=configs/bn_inception.py:mnist_smoke --workdir=/tmp/bni
"""

from bn_inception.schema import inception_model_config
from configs import base

VARIANTS = ("bn_inception", "inception", "mnist_smoke")


def get_config(variant: str = "bn_inception"):
  if variant not in VARIANTS:
    raise ValueError(f"configs/bn_inception.py takes one of {VARIANTS}, not {variant!r}.")
  c = base.get_config()
  c.model = inception_model_config()
  if variant == "inception":   # the baseline: no BN, GoogLeNet's LRN and 40% dropout
    c.bn.enabled = False
    c.model.lrn = True
    c.model.dropout_rate = 0.4
  if variant == "mnist_smoke":  # a few steps of BN-Inception on the base MNIST data
    c.model.num_classes = 10
    c.model.image_size = 28
    c.train.batch_size = 16
    c.train.num_steps = 20
    c.train.eval_every = 20
    c.train.eval_at_start = False
    c.train.log_every = 10
    c.train.checkpoint_every = 20
    c.optim.learning_rate = 0.01
  return c
