"""A tiny ImageNet model for the evaluator and pipeline on a CPU: a BN MLP at 32 px.

Trains on ../shared/data/imagenet_sample (1,000 images, one per class) and is
evaluated on the same images, so it is a memorisation check, not a learning
curve; mild crops and no colour distortion let it memorise in about a minute:

  python scripts/train.py --config=configs/imagenet_tiny.py --workdir=/tmp/tiny_s0
  python scripts/evaluate.py --workdirs=/tmp/tiny_s0,/tmp/tiny_s1 --crops=1,10,144 \\
      --output_dir=/tmp/tiny_eval
"""

from bn_inception.schema import imagenet_data_config, mlp_model_config
from configs import base


def get_config():
  c = base.get_config()
  c.data = imagenet_data_config("imagenet_folder", image_size=32,
                                crop_area_range=(0.5, 1.0), distortion_strength=0.0)
  c.model = mlp_model_config(hidden_units=(512,), num_classes=1000, activation="relu",
                             init_stddev=0.02, image_size=32)
  c.bn.momentum = 0.9
  c.optim.learning_rate = 0.5
  c.optim.momentum = 0.9
  c.train.batch_size = 64
  c.train.num_steps = 400
  c.train.eval_every = 400
  c.train.eval_at_start = False
  c.train.log_every = 100
  c.train.checkpoint_every = 400
  c.train.eval_batch_size = 200   # divides 1, 2, 4 or 8 devices (and 1,000 images)
  return c
