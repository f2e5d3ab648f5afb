"""Run a sweep: every member of a sweep file through the one training loop, one by one.

  python scripts/sweep.py --sweep=configs/sweeps/lr_acceleration_cpu.py --workdir=runs/lr_cpu
  python scripts/sweep.py --sweep=configs/sweeps/lr_acceleration.py --workdir=gs://b/lr \\
      --print_commands          # one scripts/train.py line per member, for a cluster

Member <name> trains in <workdir>/<name>. Every member is checked (config loads,
overrides name real fields of the right type) before anything runs. Finished members
(a checkpoint at train.num_steps) are skipped, interrupted ones resume; rerun the same
command after a crash or preemption. Each member runs as its own `scripts/train.py`
process -- exactly the line --print_commands shows -- so a crash, an out-of-memory
kill or a diverged run ends that member only, and every run starts with fresh memory
and compile caches. Exit status: 0 when no member failed, 1 otherwise.
Then: python scripts/report.py --workdir=<workdir>
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bn_inception import cli, progress  # noqa: E402

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file, configs/sweeps/<name>.py[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory; member <name> runs in <workdir>/<name>.")
_ONLY = flags.DEFINE_list("only", [], "Comma-separated member names or shell patterns to run "
                          "(default: all).")
_PRINT = flags.DEFINE_bool("print_commands", False, "Print one scripts/train.py command per "
                           "member (run from the repo root) instead of running them.")
_INPROCESS = flags.DEFINE_bool("inprocess", False, "Run members inside this process instead of "
                               "one scripts/train.py process each (saves the start-up; no "
                               "isolation). Needed for members whose base is a ConfigDict.")
flags.mark_flags_as_required(["sweep", "workdir"])


def run():
  from bn_inception import sweep_runner
  outcomes = sweep_runner.run_sweep(_SWEEP.value, _WORKDIR.value, only=_ONLY.value,
                                    print_commands=_PRINT.value, inprocess=_INPROCESS.value)
  if any(o.status == "failed" for o in outcomes):
    sys.exit(1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  progress.setup_console()
  cli.quiet_library_logs()  # (no TensorFlow here: only the members' processes feed data)
  cli.run_main(run)


if __name__ == "__main__":
  app.run(main)
