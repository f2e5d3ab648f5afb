"""BN-x30 (Sec. 4.2.2): like BN-x5 with the initial learning rate 30x Inception's (0.045)."""

from configs import imagenet_base


def get_config(variant: str = "full"):
  c = imagenet_base.get_config(variant)
  imagenet_base.accelerated_settings(c, learning_rate=0.045)
  c.train.num_steps = 6_000_000            # Fig. 3: 72.2% at 2.7M steps, max 74.8% by 6M
  return imagenet_base.apply_variant(c, variant)
