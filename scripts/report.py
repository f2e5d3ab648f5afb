"""Report a sweep: steps to a target accuracy, maximum and final accuracy, steps/s, a plot.

  python scripts/report.py --workdir=runs/lr_cpu --target=inception --log_steps --paper
  python scripts/report.py --workdir=runs/lr --target=0.722 --paper
  python scripts/report.py --workdir=runs/lr_grid --x=optim.learning_rate --log_x

Writes <workdir>/report.md, report.json and accuracy_vs_steps.png from each member's
metrics.jsonl. --target is an accuracy, or a member's name meaning that member's
maximum (the paper's 72.2% is Inception's maximum, Figure 3), or a seed group's label
(`inception` for inception-seed0, -seed1, ...) meaning the maximum of its seeds' mean
curve. --paper adds the paper's Figure 3 numbers (ImageNet steps) beside members and
seed groups named like its networks. Members whose config.json differ only by `seed`
get a mean ± spread row, and one mean curve (shaded min to max) on the plot. --x=<field>
(a config field, e.g. optim.learning_rate or bn.group_size) adds final accuracy against
it, one line per setting of the other fields that vary, in accuracy_vs_<field>.png.

  python scripts/report.py --redraw=docs/reproduction/lr_grid_report.json --output_dir=out

--redraw draws the plots again from a report.json alone (it keeps every member's
curve), e.g. a committed one whose runs are gone.
"""

import json
import os

from absl import flags

from bn_inception import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's --workdir.")
_TARGET = flags.DEFINE_string("target", "0.722", "Target accuracy, a member name (its "
                              "maximum accuracy is the target) or a seed group's label (the "
                              "maximum of its seeds' mean accuracy).")
_METRIC = flags.DEFINE_string("metric", "eval/accuracy", "metrics.jsonl key to report.")
_LOG_STEPS = flags.DEFINE_bool("log_steps", False, "Log-scale steps axis on the plot.")
_PAPER = flags.DEFINE_bool("paper", False, "Show the paper's Figure 3 numbers too.")
_X = flags.DEFINE_string("x", None, "A config field (e.g. optim.learning_rate): plot final "
                         "accuracy against it.")
_LOG_X = flags.DEFINE_bool("log_x", False, "Log-scale x axis on the --x plot.")
_YMIN = flags.DEFINE_float("ymin", None, "Lower limit of the accuracy axis of "
                           "accuracy_vs_steps.png (e.g. 0.95: the top, where runs differ).")
_NOTE = flags.DEFINE_string("note", "", "A line under the plots' titles (kept in report.json), "
                           "e.g. 'MNIST twin, time scale 2,500, 3 seeds'.")
_REDRAW = flags.DEFINE_string("redraw", None, "A report.json: draw its plots again from it "
                               "alone, into --output_dir (default: beside it).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "With --redraw: where the plots go.")
flags.register_multi_flags_validator(
    ["workdir", "redraw"], lambda f: bool(f["workdir"]) != bool(f["redraw"]),
    "Give --workdir (a sweep to report) or --redraw (a report.json), one of them.")


def run():
  from bn_inception import report
  if _REDRAW.value:
    with open(_REDRAW.value) as f:
      r = report.from_json(json.load(f))
    out = _OUTPUT_DIR.value or os.path.dirname(os.path.abspath(_REDRAW.value))
    os.makedirs(out, exist_ok=True)
    paths = report.plots(r, out, log_steps=_LOG_STEPS.value, log_x=_LOG_X.value,
                         ymin=_YMIN.value)
    print("wrote " + ", ".join(paths))
    return
  r = report.build(_WORKDIR.value, _TARGET.value, _METRIC.value, _PAPER.value, x=_X.value,
                   note=_NOTE.value)
  paths = report.write(r, log_steps=_LOG_STEPS.value, log_x=_LOG_X.value, ymin=_YMIN.value)
  print(report.markdown(r))
  print("wrote " + ", ".join(paths))


if __name__ == "__main__":
  cli.run_light_app(run)
