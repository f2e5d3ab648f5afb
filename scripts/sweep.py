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

On a SLURM cluster (docs/cluster.md):

  python scripts/sweep.py --sweep=configs/sweeps/lr_acceleration.py --workdir=/shared/lr \
      --launcher=slurm [--slurm.partition=gpu ...]   # one job per member; returns at once
  python scripts/sweep.py --sweep=... --workdir=... --status    # local or SLURM alike
  python scripts/sweep.py --sweep=... --workdir=... --cancel    # the sweep's pending/running jobs
"""

import sys

from absl import app, flags

from bn_inception import cli, launch

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file, configs/sweeps/<name>.py[:arg].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory; member <name> runs in <workdir>/<name>.")
_ONLY = flags.DEFINE_list("only", [], "Comma-separated member names or shell patterns to run "
                          "(default: all).")
_PRINT = flags.DEFINE_bool("print_commands", False, "Print one scripts/train.py command per "
                           "member (run from the repo root) instead of running them.")
_INPROCESS = flags.DEFINE_bool("inprocess", False, "Run members inside this process instead of "
                               "one scripts/train.py process each (saves the start-up; no "
                               "isolation). Needed for members whose base is a ConfigDict.")
_STATUS = flags.DEFINE_bool("status", False, "Print where every member stands (state, job, "
                            "step, latest eval accuracy, last update) and exit.")
_CANCEL = flags.DEFINE_bool("cancel", False, "Cancel the sweep's pending and running SLURM "
                            "jobs and exit.")
_MAX_FAILURES = flags.DEFINE_integer("max_failures", 2, "--launcher=slurm: a member whose "
                                     "jobs failed this many times is not submitted again.")
launch.define_flags()  # --launcher=local|slurm, --slurm.<field>=<value>
flags.mark_flags_as_required(["sweep", "workdir"])


def run():
  from bn_inception import sweep_jobs, sweep_runner
  chosen = [name for name, on in (("--status", _STATUS.value), ("--cancel", _CANCEL.value),
                                  ("--print_commands", _PRINT.value)) if on]
  if len(chosen) > 1:
    raise ValueError(f"{' and '.join(chosen)}: give one of them.")
  slurm = flags.FLAGS.launcher == "slurm"
  if slurm and _INPROCESS.value:
    raise ValueError("--inprocess runs members here; it cannot be combined with "
                     "--launcher=slurm.")
  if _STATUS.value:
    print(sweep_jobs.status_table(sweep_jobs.status(_SWEEP.value, _WORKDIR.value,
                                                    _ONLY.value)))
  elif _CANCEL.value:
    sweep_jobs.cancel_sweep(_SWEEP.value, _WORKDIR.value, _ONLY.value)
  elif slurm and not _PRINT.value:
    resources = launch.flag_resources(sweep_runner.load_resources(_SWEEP.value))
    plan = sweep_jobs.submit_sweep(_SWEEP.value, _WORKDIR.value, resources, _ONLY.value,
                                   _MAX_FAILURES.value)
    print(f"[sweep] {launch.describe(resources)} per member; status: python "
          f"scripts/sweep.py --sweep={_SWEEP.value} --workdir={_WORKDIR.value} --status")
    if any(p.action == "failed" for p in plan):
      sys.exit(1)
  else:
    outcomes = sweep_runner.run_sweep(_SWEEP.value, _WORKDIR.value, only=_ONLY.value,
                                      print_commands=_PRINT.value, inprocess=_INPROCESS.value)
    if any(o.status == "failed" for o in outcomes):
      sys.exit(1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.setup_console()
  cli.quiet_library_logs()  # (no TensorFlow here: only the members' processes feed data)
  cli.run_main(run)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
