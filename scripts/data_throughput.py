"""Images per second of the ImageNet input pipeline (decode + augment + batch), no model.

  python scripts/data_throughput.py --data.image_size=224 --batch_size=64 --num_batches=20
  python scripts/data_throughput.py --data.train_dir=/path/to/train --data.image_size=64

Any field of imagenet_data_config() can be set with --data.<field>=value. The
first batch (pipeline start-up) is timed separately.
"""

import os
import time

from absl import flags
from ml_collections import config_flags

from bn_inception import cli, progress, schema
from bn_inception.data import create_source

_DATA = config_flags.DEFINE_config_dict("data", schema.imagenet_data_config())
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 20, "Batches timed after the first.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "eval"], "Which pipeline to time.")


def measure(data_config, batch_size: int, num_batches: int, split: str) -> dict:
  source = create_source(data_config)
  if split == "train":
    batches = source.train_batches(0, batch_size, seed=0)
  else:
    batches = source.eval_batches(batch_size)
  start = time.perf_counter()
  next(batches)
  first = time.perf_counter() - start
  start, n = time.perf_counter(), 0
  timed = progress.track(zip(range(num_batches), batches), f"{split} batches", num_batches,
                         "batches")
  for _, batch in timed:
    n += len(batch["label"])
  seconds = time.perf_counter() - start
  return {"split": split, "image_size": data_config.image_size, "batch_size": batch_size,
          "images": n, "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1),
          "first_batch_s": round(first, 2), "cpus": os.cpu_count()}


def run():
  print(measure(_DATA.value, _BATCH.value, _NUM_BATCHES.value, _SPLIT.value))


if __name__ == "__main__":
  cli.run_app(run)
