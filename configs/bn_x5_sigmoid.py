"""BN-x5-Sigmoid (Sec. 4.2.2): BN-x5 with the sigmoid nonlinearity instead of ReLU."""

from configs import imagenet_base


def get_config(variant: str = "full"):
  c = imagenet_base.get_config(variant)
  imagenet_base.accelerated_settings(c, learning_rate=0.0075)
  c.model.activation = "sigmoid"           # g(t) = 1 / (1 + exp(-t))
  c.train.num_steps = 6_000_000            # Fig. 3: max 69.8%, 72.2% not reached
  return imagenet_base.apply_variant(c, variant)
