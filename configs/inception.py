"""Inception (Sec. 4.2): GoogLeNet-style training of the Figure 5 network WITHOUT BN.

  python scripts/train.py --config=configs/inception.py --workdir=... \\
      --config.data.tfds_data_dir=/path/to/tensorflow_datasets
  python scripts/train.py --config=configs/inception.py:cpu --workdir=...   # ~1 min, CPU
"""

from configs import imagenet_base


def get_config(variant: str = "full"):
  c = imagenet_base.get_config(variant)
  c.bn.enabled = False                     # no BN: convolutions keep their biases
  imagenet_base.inception_settings(c)      # LR 0.0015, dropout 40%, LRN, L2 2e-4
  c.train.num_steps = 31_000_000           # Fig. 3: 31.0M steps to reach 72.2%
  return imagenet_base.apply_variant(c, variant)
