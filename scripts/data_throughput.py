"""Images per second of the ImageNet input pipeline (decode + augment + batch), no model.

  python scripts/data_throughput.py --data.image_size=224 --batch_size=64 --num_batches=20
  python scripts/data_throughput.py --data.train_dir=/path/to/train --data.image_size=64

Any field of imagenet_data_config() can be set with --data.<field>=value. The
first batch (pipeline start-up) is timed separately.

  python scripts/data_throughput.py --data.image_size=224 --compare=/data/prepared

--compare=DIR (a scripts/prepare_imagenet.py --output) times, alternately, --rounds
times each in this one process: the --data folder (full_size), the prepared dataset
in DIR (prepared), and a plain tf.data pipeline doing the training pipeline's work on
the folder's files (reference, bn_inception/data/throughput.py). Its last line is one
JSON object: each rate (mean of the rounds) and per core, `ratio` (prepared /
full_size) and `full_size_vs_reference`, each also per round (`<name>_rounds`).

  python scripts/data_throughput.py --data.image_size=224 --stages [--compare=DIR]

--stages prints, as its last line, one JSON object: CPU ms per image of each stage of
the training pipeline's work (file read, crop window, entropy decoding, inverse DCT,
resize, flip) on the folder's images and, with --compare, on the prepared ones, and
the reader's per-image Python fetch.
"""

import json

from absl import flags
from ml_collections import config_flags

from bn_inception import cli, schema
from bn_inception.data import create_source, throughput

_DATA = config_flags.DEFINE_config_dict("data", schema.imagenet_data_config())
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 20, "Batches timed after the first.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "eval"], "Which pipeline to time.")
_COMPARE = flags.DEFINE_string("compare", "", "A prepared dataset's dir (prepare_imagenet.py "
                               "--output): time it, --data and a plain tf.data reference "
                               "alternately; JSON last line.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "With --compare: timed rounds of each pipeline.")
_STAGES = flags.DEFINE_bool("stages", False, "Print CPU ms per image of each stage of the "
                            "training pipeline's work (JSON last line).")


def run():
  if _STAGES.value:
    result = throughput.stages(_DATA.value, _COMPARE.value, _BATCH.value, _NUM_BATCHES.value)
  elif _COMPARE.value:
    result = throughput.compare(_DATA.value, _COMPARE.value, _ROUNDS.value, _BATCH.value,
                                _NUM_BATCHES.value, _SPLIT.value)
  else:
    source = create_source(_DATA.value)
    result = {"image_size": _DATA.value.image_size, "cores": throughput.cores(),
              **throughput.measure(source, _BATCH.value, _NUM_BATCHES.value, _SPLIT.value)}
  print(json.dumps(result))


if __name__ == "__main__":
  cli.run_app(run)
