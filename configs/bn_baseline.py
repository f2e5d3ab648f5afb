"""BN-Baseline (Sec. 4.2.2): "Same as Inception with Batch Normalization before each nonlinearity."

Same recipe as configs/inception.py (LR 0.0015, dropout 40%, LRN, L2 2e-4, slow decay).
"""

from configs import imagenet_base


def get_config(variant: str = "full"):
  c = imagenet_base.get_config(variant)
  c.bn.enabled = True
  imagenet_base.inception_settings(c)
  c.train.num_steps = 15_000_000           # Fig. 3: 72.2% at 13.3M steps
  return imagenet_base.apply_variant(c, variant)
