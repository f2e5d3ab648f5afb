"""Prepare ImageNet once: re-encoded at a bounded shorter side into ArrayRecord shards.

  python scripts/prepare_imagenet.py --input=/data/imagenet/train --output=/data/prepared
  python scripts/prepare_imagenet.py --input=/data/tensorflow_datasets --output=/data/prepared \
      --side=256 --quality=90

--input is an image folder <dir>/<synset>/<image> (labels: the sorted synset order,
as the imagenet_folder source gives them; the validation split is --eval_input, else
--eval_fraction of the folder held out by --split_seed, else the training images
themselves, exactly as that source's eval_dir / eval_fraction / split_seed) or a TFDS
data dir holding a prepared imagenet2012 (its train and validation splits and labels).
The output is the TFDS dataset `imagenet_prepared` with manifest.json (counts, side,
quality, per-shard CRC-32, source, the skipped undecodable images); see
bn_inception/data/prepare.py. Rerun the same command after an interruption: finished
shards are checked and kept (a stop by SIGTERM/SIGINT says so and exits with status 1).
Train on it with
  --config.data.name=imagenet_tfds --config.data.tfds_name=imagenet_prepared
  --config.data.tfds_data_dir=<output>
"""

import os
import sys

from absl import flags

from bn_inception import cli

_INPUT = flags.DEFINE_string("input", None, "Image folder <dir>/<synset>/<image>, or a TFDS "
                             "data dir with a prepared imagenet2012.")
_OUTPUT = flags.DEFINE_string("output", None, "Output dir (a TFDS data dir).")
_SIDE = flags.DEFINE_integer("side", 256, "Shorter side bound in pixels (larger images "
                             "are shrunk to it; smaller ones are kept).")
_QUALITY = flags.DEFINE_integer("quality", 90, "JPEG quality of re-encoded images.")
_SHARDS = flags.DEFINE_integer("shards", 0, "Training shards (0: one per 1250 images, "
                               "16 to 1024); validation gets shards in proportion.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Worker processes (0: every core).")
_EVAL_INPUT = flags.DEFINE_string("eval_input", "", "Image folder of the validation split "
                                  "(image-folder input only).")
_EVAL_FRACTION = flags.DEFINE_float("eval_fraction", 0.0, "Without --eval_input: the share "
                                    "of --input held out as the validation split.")
_SPLIT_SEED = flags.DEFINE_integer("split_seed", 0, "Seed of that held-out split.")
flags.mark_flags_as_required(["input", "output"])


def run():
  from bn_inception import signals
  from bn_inception.data import prepare
  directory = prepare.dataset_dir(_OUTPUT.value)
  try:
    m = prepare.prepare(_INPUT.value, _OUTPUT.value, side=_SIDE.value,
                        quality=_QUALITY.value, shards=_SHARDS.value, workers=_WORKERS.value,
                        eval_input=_EVAL_INPUT.value, eval_fraction=_EVAL_FRACTION.value,
                        split_seed=_SPLIT_SEED.value)
  except signals.Stopped as e:
    print(f"stopped by {e}: the finished shards in {directory} are kept; rerun the same "
          f"command to write the rest.", flush=True)
    sys.exit(1)
  for split, counts in m["splits"].items():
    print(f"{split}: {counts['images']} images in {counts['shards']} shards, "
          f"{counts['skipped']} skipped")
  print(f"manifest: {os.path.join(directory, 'manifest.json')}")
  print(f"train on it with --config.data.name=imagenet_tfds --config.data.tfds_name="
        f"{prepare.NAME} --config.data.tfds_data_dir={os.path.abspath(_OUTPUT.value)}")


if __name__ == "__main__":
  cli.run_app(run)
