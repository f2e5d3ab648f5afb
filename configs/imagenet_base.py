"""What the paper's ImageNet runs (Sec. 4.2) share; each run's file sets its own knobs.

Variants (the `:arg` of every paper config):
  full  the paper's run on a prepared TFDS imagenet2012 (config.data.tfds_data_dir)
  cpu   the same settings on ../shared/data/imagenet_sample at 32 px for ~a minute on a CPU
Where the paper is silent we take TF-slim's inception_v2 values and say so.
"""

from bn_inception.schema import imagenet_data_config, inception_model_config
from configs import base

VARIANTS = ("full", "cpu")


def get_config(variant: str = "full"):
  if variant not in VARIANTS:
    raise ValueError(f"Paper configs take one of {VARIANTS} (e.g. configs/bn_x30.py:cpu), "
                     f"not {variant!r}.")
  c = base.get_config()
  c.model = inception_model_config()       # Figure 5, 224 x 224, 1000 classes
  c.data = imagenet_data_config("imagenet_tfds")
  c.data.mean = (0.5, 0.5, 0.5)            # TF-slim's Inception input range [-1, 1]
  c.data.std = (0.5, 0.5, 0.5)
  # BN: TF-slim inception_v2 (decay 0.9997, eps 1e-3); statistics over each
  # replica's own 32 examples (Sec. 4.2: "mini-batch size 32 per replica").
  c.bn.momentum = 0.9997
  c.bn.epsilon = 1e-3
  c.bn.stats_mode = "per_device"
  # Sec. 4.2: SGD with momentum 0.9 (GoogLeNet's), 32 examples per replica. The
  # global batch is 32 x replicas: on N devices set --config.train.batch_size=32*N.
  c.optim.momentum = 0.9
  c.optim.schedule = "exponential"
  c.optim.staircase = True
  c.optim.decay_rate = 0.96                # GoogLeNet: 4% every 8 epochs
  c.train.batch_size = 32
  c.train.eval_batch_size = 1000
  c.train.eval_every = 50_000
  c.train.log_every = 1_000
  c.train.checkpoint_every = 10_000
  c.train.keep_checkpoints = 5
  return c


def inception_settings(c):
  """The Inception baseline's training recipe (Sec. 4.2, GoogLeNet)."""
  c.optim.learning_rate = 0.0015
  c.optim.decay_epochs = 8.0               # GoogLeNet: 4% every 8 epochs
  c.optim.weight_decay = 4e-5 * 5          # 5x TF-slim's inception_v2 (= GoogLeNet's 2e-4)
  c.model.dropout_rate = 0.4               # GoogLeNet's dropout
  c.model.lrn = True                       # GoogLeNet's local response normalisation
  c.data.shuffle_buffer = 1                # no within-shard shuffling (Sec. 4.2.1 adds it)
  c.data.distortion_strength = 1.0         # full photometric distortions


def accelerated_settings(c, learning_rate: float):
  """Sec. 4.2.1, 'Accelerating BN networks': every change of the BN-x5/x30 nets."""
  c.optim.learning_rate = learning_rate    # "increase learning rate"
  c.model.dropout_rate = 0.0               # "remove dropout"
  c.optim.weight_decay = 4e-5              # "reduce the L2 weight regularization" by 5
  c.optim.decay_epochs = 8.0 / 6           # "accelerate the learning rate decay" 6x
  c.model.lrn = False                      # "remove local response normalization"
  c.data.shuffle_buffer = 16_384           # "shuffle training examples more thoroughly"
  c.data.distortion_strength = 0.5         # "reduce the photometric distortions" (amount:
  #                                           not given in the paper; our choice)


def apply_variant(c, variant: str):
  """`cpu`: the same recipe on imagenet_sample at 32 px, a few dozen steps, on a CPU."""
  if variant == "cpu":
    c.data = imagenet_data_config("imagenet_folder", mean=c.data.mean, std=c.data.std,
                                  shuffle_buffer=c.data.shuffle_buffer,
                                  distortion_strength=c.data.distortion_strength)
    c.data.image_size = 32
    c.model.image_size = 32
    c.bn.momentum = 0.9                    # moving averages that settle within the run
    c.train.num_steps = 60
    c.train.eval_every = 60
    c.train.eval_at_start = False
    c.train.log_every = 10
    c.train.checkpoint_every = 30
    c.train.eval_batch_size = 200         # divides 1, 2, 4 or 8 devices (and 1,000 images)
  return c
