"""Evaluate trained workdirs alone or as an ensemble, with 1, 10 or 144 crops (Figure 4).

  python scripts/evaluate.py --workdirs=runs/a,runs/b --crops=1,10,144 --output_dir=eval/ab
  python scripts/evaluate.py --ensemble=ensemble.txt --crops=144 --output_dir=eval/ens

--ensemble names a text file, one workdir per line (`workdir` or `workdir@STEP`,
`#` comments, paths relative to the file). Each member's config.json and
checkpoint (newest, or --step / @STEP) are loaded; top-1/top-5 error of every
member and of their probability-averaged ensemble are printed and written to
<output_dir>/report.json and report.md. --batch_size counts crops per global batch.

  python scripts/evaluate.py --workdirs='/shared/ens/x30_*' --crops=1,144 \
      --output_dir=/shared/ens/eval --launcher=slurm --slurm.gpus_per_node=8

--launcher=slurm submits this same command (without the launcher flags) as one SLURM job
(bn_inception/launch.py; resources as --slurm.<field>=<value>), run in this directory,
its files in <output_dir>/slurm; it prints the job id and returns.
"""

import os
import sys

from absl import flags

from bn_inception import cli, launch

_WORKDIRS = flags.DEFINE_list("workdirs", [], "Training workdirs (`dir` or `dir@STEP`; shell "
                               "patterns such as 'runs/ens/x30_*' are expanded).")
_ENSEMBLE = flags.DEFINE_string("ensemble", None, "File listing workdirs, one per line.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step for every member (default: newest).")
_CROPS = flags.DEFINE_list("crops", ["1"], "Crop schemes to evaluate: 1, 10, 144 (a list).")
_SPLIT = flags.DEFINE_string("split", "eval", "'eval', 'train', or a TFDS split name.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where report.json/report.md go.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Crops per global batch (any value that "
                              "the device count divides; the last batch is padded).")
_POP = flags.DEFINE_integer("population_stats_batches", 0, "Recompute exact BN population "
                            "statistics over this many training batches first (Alg. 2, step "
                            "10); 0: use the checkpoint's moving averages.")
_BN_STATISTICS = flags.DEFINE_enum(
    "bn_statistics", "", ["", "moving", "population", "population_biased", "batch"],
    "What BN normalises by: 'moving' (the checkpoint's moving averages; the default "
    "without --population_stats_batches), 'population' (exact, unbiased variance: Alg. 2; "
    "the default with it), 'population_biased' (exact, biased variance), 'batch' (each "
    "evaluation batch's own statistics, --batch_size crops: what Alg. 2 replaces).")
_OVERRIDE = flags.DEFINE_multi_string("override", [], "data.<field>=<value> or "
                                      "train.<field>=<value> for every member's saved config, "
                                      "e.g. data.train_dir=/path/to/images.")
_PAPER = flags.DEFINE_bool("paper", False, "Show the paper's Figure 4 numbers beside ours.")
launch.define_flags()  # --launcher=local|slurm, --slurm.<field>=<value>
flags.mark_flags_as_required(["output_dir"])


def submit_as_job() -> None:
  """This command, less the launcher flags, as one SLURM job run in this directory."""
  output_dir = _OUTPUT_DIR.value
  if "://" in output_dir:
    raise ValueError(f"--launcher=slurm keeps the job's files in <output_dir>/slurm: give a "
                     f"--output_dir on a filesystem the nodes share, not {output_dir}.")
  folder = os.path.join(os.path.abspath(output_dir), "slurm")
  resources = launch.flag_resources()
  argv = [sys.executable, os.path.abspath(__file__),
          *launch.without_launcher_flags(sys.argv[1:])]
  job_id = launch.submit(argv, folder, resources, "evaluate", cwd=os.getcwd())
  print(f"submitted evaluation as job {job_id} ({launch.describe(resources)})\n"
        f"log: {launch.log_paths(folder, job_id)[0]}\n"
        f"report: {os.path.join(os.path.abspath(output_dir), 'report.md')} (and report.json)")


def checked_crops():
  """--crops as crop schemes; bad flag values refused in the flags' words."""
  from bn_inception import schema
  try:
    crops = [int(c) for c in _CROPS.value]
  except ValueError:
    crops = []
  if not crops or any(c not in schema.CROP_SCHEMES for c in crops):
    raise ValueError(f"--crops={','.join(_CROPS.value)}: give 1, 10 and/or 144.")
  from bn_inception import population
  try:
    population.resolve_bn_statistics(_BN_STATISTICS.value, _POP.value)
  except ValueError as e:
    raise ValueError(f"--{e}") from None
  if _BATCH.value <= 0:
    raise ValueError(f"--batch_size={_BATCH.value} counts crops per global batch: give a "
                     f"positive multiple of the device count.")
  return crops


def show(result: dict) -> None:
  from bn_inception import eval_report
  print("\n".join(eval_report.result_lines(result)), flush=True)


def run():
  from bn_inception import ensemble, eval_report
  specs = [ensemble.parse_member(w, step=_STEP.value)
           for w in ensemble.expand_workdirs(_WORKDIRS.value)]
  if _ENSEMBLE.value:
    specs += ensemble.read_ensemble_file(_ENSEMBLE.value, _STEP.value)
  if not specs:
    raise ValueError("No ensemble members: give --workdirs and/or --ensemble.")
  crops = checked_crops()
  if flags.FLAGS.launcher == "slurm":  # crops and members' configs checked here first
    from bn_inception import workdir_config
    for spec in specs:
      workdir_config.read_config(spec.workdir)
    submit_as_job()
    return
  report = ensemble.run(specs, crops, split=_SPLIT.value, output_dir=_OUTPUT_DIR.value,
                        batch_size=_BATCH.value, population_stats_batches=_POP.value,
                        overrides=_OVERRIDE.value, command=" ".join(sys.argv),
                        paper=_PAPER.value, on_result=show,
                        bn_statistics=_BN_STATISTICS.value)
  if len(report["results"]) > 1 or _PAPER.value:
    print(eval_report.summary_table(report), flush=True)
  print(f"report: {os.path.join(_OUTPUT_DIR.value, 'report.md')}")


if __name__ == "__main__":
  cli.run_app(run)
