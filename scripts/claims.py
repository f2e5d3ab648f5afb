"""Decide the Figures 2-3 claims of a seed sweep by the rules fixed before the run
(docs/reproduction.md, section 2b):

  python scripts/sweep.py --sweep=configs/sweeps/twin_back_image.py --workdir=runs/twin_bi
  python scripts/evaluate.py --workdirs='runs/twin_bi/*-seed*' --output_dir=runs/twin_bi/eval
  python scripts/claims.py --workdir=runs/twin_bi --correct=runs/twin_bi/eval

  # a control: recipes of two sweeps, each pair (A above B) decided as rule 4, Holm
  # over the pairs given
  python scripts/claims.py --workdir=runs/twin_bi,runs/twin_bi_budget \
      --correct=runs/twin_bi_budget/eval --output_dir=runs/twin_bi_budget \
      --pairs=bn_x5_equal_budget:bn_x5,bn_x30_equal_budget:bn_x30

Reads each member's metrics.jsonl (accuracy curves) and the evaluation's correct.npz
(each final network's top-1 correctness per test example). Prints the speed-ups at
three targets with their seed ranges and the paired tests (bootstrap over examples and
seeds, Holm, McNemar per same-seed pair) with their verdicts; writes
<output_dir>/claims.md, claims.json (the curves included) and claims.png, the figure
drawn from claims.json alone (`--redraw=<claims.json>` draws it again).
"""

import json
import os

from absl import flags

from bn_inception import cli

_WORKDIR = flags.DEFINE_list("workdir", None, "The sweep's --workdir (or several).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where claims.md/json go (default: "
                                  "the first --workdir).")
_PAIRS = flags.DEFINE_list("pairs", [], "A:B recipe pairs to decide instead of the "
                           "section 2b claims (A above B; Holm over these pairs).")
_CORRECT = flags.DEFINE_list("correct", None, "correct.npz of scripts/evaluate.py over the "
                             "sweep's members (the file or its folder). With --pairs, "
                             "several, each `path:tag` (members renamed <recipe>_<tag>-seed<k>).")
_REFERENCE = flags.DEFINE_string("reference", "inception", "The recipe whose mean-curve "
                                 "maximum is T_max and that the others are tested against.")
_SAMPLES = flags.DEFINE_integer("num_samples", 10_000, "Bootstrap samples.")
_NOTE = flags.DEFINE_string("note", "", "A line under the figure's title (e.g. the time "
                            "compression); kept in claims.json.")
_REDRAW = flags.DEFINE_string("redraw", None, "Only redraw the figure of this claims.json "
                              "(beside it, the same name with .png): no workdir or "
                              "correct.npz needed.")


def redraw(path: str) -> str:
  from bn_inception import report_plots
  with open(path) as f:
    claims = json.load(f)
  png = os.path.splitext(path)[0] + ".png"  # claims.json -> claims.png
  report_plots.plot_recipes(claims, png)
  return png


def run():
  from bn_inception import recipe_claims
  if _REDRAW.value:
    print(f"wrote {redraw(_REDRAW.value)}")
    return
  if not _CORRECT.value or not (_WORKDIR.value or _PAIRS.value):
    raise ValueError("give --workdir and --correct, --pairs and --correct, or "
                     "--redraw=<claims.json>.")
  if _PAIRS.value:
    pairs = [tuple(p.split(":")) for p in _PAIRS.value]
    if any(len(p) != 2 for p in pairs):
      raise ValueError(f"--pairs={','.join(_PAIRS.value)}: give A:B recipe pairs.")
    correct = recipe_claims.load_correct(_CORRECT.value)
    decision = {"pairs": recipe_claims.compare_pairs(correct, list(correct), pairs,
                                                     _SAMPLES.value)}
    text = recipe_claims.pairs_markdown(decision["pairs"])
    curves, nonfinite = {}, {}
    if _WORKDIR.value:
      curves, _, nonfinite = recipe_claims.load(_WORKDIR.value, _CORRECT.value[0])
  else:
    if len(_CORRECT.value) > 1:
      raise ValueError("one --correct for the section 2b claims (several only with --pairs).")
    curves, correct, nonfinite = recipe_claims.load(_WORKDIR.value, _CORRECT.value[0])
    decision = recipe_claims.decide(curves, correct, nonfinite, _REFERENCE.value,
                                    _SAMPLES.value)
    text = recipe_claims.markdown(decision)
  print(text)
  out = _OUTPUT_DIR.value or (_WORKDIR.value or [None])[0]
  if out is None:
    raise ValueError("give --output_dir (where claims.md/json go).")
  os.makedirs(out, exist_ok=True)
  md, js = (os.path.join(out, f"claims.{ext}") for ext in ("md", "json"))
  with open(md, "w") as f:
    f.write(text + "\n")
  with open(js, "w") as f:
    json.dump({**decision, "note": _NOTE.value, "curves": curves, "nonfinite": nonfinite},
              f, indent=1)
    f.write("\n")
  print(f"wrote {md}, {js}" + (f", {redraw(js)}" if curves else ""))


if __name__ == "__main__":
  cli.run_light_app(run)
