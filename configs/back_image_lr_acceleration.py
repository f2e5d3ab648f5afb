"""The CPU twin of Figures 2-3 (Sec. 4.2.2) on MNIST-back-image, a benchmark with headroom.

  python scripts/train.py --config=configs/back_image_lr_acceleration.py:bn_x5 --workdir=...
  python scripts/train.py --config=configs/back_image_lr_acceleration.py:bn_x5,2500,rotated ...

`<run>[,<time scale>][,plain|rotated]`: configs/mnist_lr_acceleration.py's recipe and
time compression for `<run>` (that file says what is scaled and why), with the digits
over natural-image patches (bn_inception/data/mnist_back_image.py; Larochelle et al.
2007; docs/mnist_back_image.md) instead of plain MNIST, where every recipe ends within
0.7 points of 99%. The variant defaults to 'plain'; 'rotated' is mnist-rot-back-image.
The first run composes the dataset into its cache (~15 s); later runs read it.
"""

from bn_inception.schema import mnist_back_image_data_config
from configs import mnist_lr_acceleration

VARIANTS = ("plain", "rotated")
# Pixel mean / std of each variant's 60,000 composed training images (x / 255).
MEAN_STD = {"plain": (0.5316, 0.2782), "rotated": (0.5313, 0.2711)}


def parse_arg(arg: str):
  """'bn_x5,2500,rotated' -> ('bn_x5,2500', 'rotated'); no variant -> 'plain'."""
  parts = arg.split(",")
  variant = parts.pop() if parts[-1] in VARIANTS else "plain"
  return ",".join(parts), variant


def get_config(arg: str = "bn_x5"):
  twin_arg, variant = parse_arg(arg)
  c = mnist_lr_acceleration.get_config(twin_arg)
  mean, std = MEAN_STD[variant]
  c.data = mnist_back_image_data_config(variant=variant, mean=(mean,), std=(std,))
  return c
