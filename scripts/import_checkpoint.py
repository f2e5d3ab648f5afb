"""Import TF-slim's inception_v2 checkpoint as a workdir (the reference BN-Inception weights).

  python scripts/import_checkpoint.py --tfslim=inception_v2.ckpt --workdir=runs/tfslim_v2 \
      [--config=configs/bn_x30.py] [--config.<field>=<value> ...]

Writes config.json and a step-0 checkpoint, exactly what training writes: the
workdir is evaluated by scripts/evaluate.py and fine-tuned with scripts/train.py
(--config.train.init_from=<that workdir>). TF-slim's background class 0 is
dropped (its class i + 1 is our label i). Into the paper's network (the default)
conv1's bias is folded into its BN and every gamma is 1; with
--config.model.bn_scale=False --config.model.first_conv_bn=False (TF-slim's own
network) the weights are copied as they are. See docs/reference-weights.md.
"""

import os

from absl import flags
from ml_collections import config_flags

from bn_inception import cli
from bn_inception.workdir import REPO_ROOT

_DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "bn_x30.py")
_CONFIG = config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG,
                                          "The configs/*.py file of the network to import "
                                          "into.", lock_config=True)
_TFSLIM = flags.DEFINE_string("tfslim", None, "TF-slim inception_v2 checkpoint (the prefix, "
                              "e.g. inception_v2.ckpt).")
_WORKDIR = flags.DEFINE_string("workdir", None, "New workdir to write.")
flags.mark_flags_as_required(["tfslim", "workdir"])


def run():
  from bn_inception import tfslim
  summary = tfslim.import_checkpoint(_TFSLIM.value, _WORKDIR.value, _CONFIG.value)
  notes = [f"{summary['variables']} arrays from {_TFSLIM.value} -> {_WORKDIR.value} (step 0)"]
  if summary["label_offset"]:
    notes.append("TF-slim class i+1 -> label i (background class 0 dropped)")
  if summary["conv1_bias_folded"]:
    notes.append("conv1's bias folded into its BN (mean 0, variance 1 - eps, gamma 1)")
  if summary["gamma_set_to_one"]:
    notes.append("gamma = 1 in every BN (TF-slim's BN has none)")
  print("imported " + "; ".join(notes), flush=True)


if __name__ == "__main__":
  cli.run_app(run)
