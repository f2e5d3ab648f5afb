"""Images per second of the ImageNet input pipeline (decode + augment + batch), no model.

  python scripts/data_throughput.py --data.image_size=224 --batch_size=64 --num_batches=20
  python scripts/data_throughput.py --data.train_dir=/path/to/train --data.image_size=64

Any field of imagenet_data_config() can be set with --data.<field>=value. The
first batch (pipeline start-up) is timed separately.

  python scripts/data_throughput.py --data.image_size=224 --compare=/data/prepared

--compare=DIR (a scripts/prepare_imagenet.py --output) times the --data folder and the
prepared dataset in DIR alternately, --rounds times each, in this one process, and
prints as its last line one JSON object: both rates (mean of the rounds), per core, and
their ratio (prepared / full size).
"""

import json
import os
import statistics
import time

from absl import flags
from ml_collections import config_flags

from bn_inception import cli, progress, schema
from bn_inception.data import create_source

_DATA = config_flags.DEFINE_config_dict("data", schema.imagenet_data_config())
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 20, "Batches timed after the first.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "eval"], "Which pipeline to time.")
_COMPARE = flags.DEFINE_string("compare", "", "A prepared dataset's dir (prepare_imagenet.py "
                               "--output): time it and --data alternately; JSON last line.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "With --compare: timed rounds of each dataset.")


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


def prepared_config(data_config, directory: str):
  """`data_config` reading the prepared dataset in `directory` instead."""
  from bn_inception.data import prepare
  config = data_config.copy_and_resolve_references()
  config.name, config.tfds_name, config.tfds_data_dir = "imagenet_tfds", prepare.NAME, directory
  return config


def compare(data_config, directory: str, rounds: int, batch_size: int, num_batches: int,
            split: str) -> dict:
  """The full-size data and the prepared data timed alternately, `rounds` times each."""
  configs = {"full_size": data_config, "prepared": prepared_config(data_config, directory)}
  rates = {name: [] for name in configs}
  for _ in range(rounds):
    for name, config in configs.items():
      result = measure(config, batch_size, num_batches, split)
      print(name, result)
      rates[name].append(result["images_per_s"])
  cores = len(os.sched_getaffinity(0))
  out = {"split": split, "image_size": data_config.image_size, "batch_size": batch_size,
         "batches": num_batches, "rounds": rounds, "cores": cores}
  for name, values in rates.items():
    mean = statistics.mean(values)
    out[name] = {"images_per_s": round(mean, 1), "per_core": round(mean / cores, 1),
                 "rounds": values}
  out["ratio"] = round(out["prepared"]["images_per_s"] / out["full_size"]["images_per_s"], 2)
  return out


def run():
  if _COMPARE.value:
    result = compare(_DATA.value, _COMPARE.value, _ROUNDS.value, _BATCH.value,
                     _NUM_BATCHES.value, _SPLIT.value)
    print(json.dumps(result))
    return
  print(measure(_DATA.value, _BATCH.value, _NUM_BATCHES.value, _SPLIT.value))


if __name__ == "__main__":
  cli.run_app(run)
