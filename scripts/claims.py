"""Decide the Figures 2-3 claims of a seed sweep by the rules fixed before the run
(docs/reproduction.md, section 2b):

  python scripts/sweep.py --sweep=configs/sweeps/twin_back_image.py --workdir=runs/twin_bi
  python scripts/evaluate.py --workdirs='runs/twin_bi/*-seed*' --output_dir=runs/twin_bi/eval
  python scripts/claims.py --workdir=runs/twin_bi --correct=runs/twin_bi/eval

Reads each member's metrics.jsonl (accuracy curves) and the evaluation's correct.npz
(each final network's top-1 correctness per test example). Prints the speed-ups at
three targets with their seed ranges and the paired tests (bootstrap over examples and
seeds, Holm, McNemar per same-seed pair) with their verdicts; writes
<workdir>/claims.md and claims.json (the curves included, so a figure can be redrawn).
"""

import json
import os

from absl import app, flags

from bn_inception import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's --workdir.")
_CORRECT = flags.DEFINE_string("correct", None, "correct.npz of scripts/evaluate.py over "
                               "the sweep's members (the file or its folder).")
_REFERENCE = flags.DEFINE_string("reference", "inception", "The recipe whose mean-curve "
                                 "maximum is T_max and that the others are tested against.")
_SAMPLES = flags.DEFINE_integer("num_samples", 10_000, "Bootstrap samples.")
flags.mark_flags_as_required(["workdir", "correct"])


def run():
  from bn_inception import recipe_claims
  curves, correct, nonfinite = recipe_claims.load(_WORKDIR.value, _CORRECT.value)
  decision = recipe_claims.decide(curves, correct, nonfinite, _REFERENCE.value,
                                  _SAMPLES.value)
  text = recipe_claims.markdown(decision)
  print(text)
  md, js = (os.path.join(_WORKDIR.value, f"claims.{ext}") for ext in ("md", "json"))
  with open(md, "w") as f:
    f.write(text + "\n")
  with open(js, "w") as f:
    json.dump({**decision, "curves": curves, "nonfinite": nonfinite}, f, indent=1)
    f.write("\n")
  print(f"wrote {md}, {js}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.setup_console()
  cli.quiet_library_logs()
  cli.run_main(run)


if __name__ == "__main__":
  app.run(main)
