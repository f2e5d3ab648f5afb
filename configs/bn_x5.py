"""BN-x5 (Sec. 4.2.2): BN-Inception with the Sec. 4.2.1 modifications, LR 5x Inception's (0.0075)."""

from configs import imagenet_base


def get_config(variant: str = "full"):
  c = imagenet_base.get_config(variant)
  imagenet_base.accelerated_settings(c, learning_rate=0.0075)
  c.train.num_steps = 6_000_000            # Fig. 3: 72.2% at 2.1M steps, max 73.0%
  return imagenet_base.apply_variant(c, variant)
