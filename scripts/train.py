"""Train any config:  python scripts/train.py --config=configs/<name>.py --workdir=<dir>

Resumes from the newest checkpoint in --workdir. Override any field with
--config.<section>.<field>=<value>.
"""

import sys

from absl import flags
from ml_collections import config_flags

from bn_inception import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_PREEMPTED_EXIT_CODE = flags.DEFINE_integer(
    "preempted_exit_code", 0,
    "Exit status after a SIGTERM/SIGINT stop (checkpoint saved, or nothing to save "
    "yet during start-up). 0 by default; set your scheduler's requeue code if it has one.")
flags.mark_flags_as_required(["config", "workdir"])


def run():
  from bn_inception import train
  result = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
  if "preempted_at_step" in result:
    sys.exit(_PREEMPTED_EXIT_CODE.value)


if __name__ == "__main__":
  cli.run_app(run, stopped_exit_code=lambda: _PREEMPTED_EXIT_CODE.value, start_up="check")
