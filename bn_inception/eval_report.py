"""Figure 4's table and the offline evaluation's report (scripts/evaluate.py): the
console lines of each crop scheme, and <output_dir>/report.json, report.md and
correct.npz (per-example top-1 correctness, for paired tests). The
numbers come from the multicrop evaluator (bn_inception/evaluators/multicrop.py)."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

import numpy as np

# Figure 4 of the paper (ImageNet validation, 50,000 images); None: not given.
PAPER_FIGURE4 = (
    ("GoogLeNet ensemble", 224, 144, 7, None, 6.67),
    ("Deep Image low-res", 256, None, 1, None, 7.96),
    ("Deep Image high-res", 512, None, 1, 24.88, 7.42),
    ("Deep Image ensemble", None, None, None, None, 5.98),
    ("BN-Inception single crop", 224, 1, 1, 25.2, 7.82),
    ("BN-Inception multicrop", 224, 144, 1, 21.99, 5.82),
    ("BN-Inception ensemble", 224, 144, 6, 20.1, 4.9),
)


def paper_rows() -> List[dict]:
  return [{"model": f"paper: {m}", "resolution": r, "crops": c, "models": n,
           "top1_error": t1, "top5_error": t5, "examples": 50_000}
          for m, r, c, n, t1, t5 in PAPER_FIGURE4]


def format_table(rows: Sequence[dict]) -> str:
  """A Figure-4-style markdown table."""
  head = ("| Model | Resolution | Crops | Models | Top-1 error | Top-5 error | Examples "
          "| Non-finite outputs |")
  lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
  def cell(v, fmt="{}"):
    return "–" if v is None else fmt.format(v)
  for r in rows:
    lines.append(f"| {r['model']} | {cell(r['resolution'])} | {cell(r['crops'])} | "
                 f"{cell(r['models'])} | {cell(r['top1_error'], '{:.2f}%')} | "
                 f"{cell(r['top5_error'], '{:.2f}%')} | {r['examples']:,} | "
                 f"{cell(r.get('nonfinite'), '{:,}')} |")
  return "\n".join(lines)


def against_best_member_line(row: dict) -> str:
  """One sentence on an ensemble row's paired comparison with its best member."""
  b = row["against_best_member"]
  return (f"{row['crops']} crop(s): the ensemble of {row['models']} against its best member, "
          f"{b['member']} (top-1, the same {row['examples']:,} examples): right on "
          f"{b['only_ensemble_right']:,} that it gets wrong, wrong on {b['only_member_right']:,} "
          f"that it gets right; McNemar's exact test p = {b['p_value']:.3g}.")


PER_EXAMPLE_FILE = "correct.npz"


def write_per_example(output_dir: str, per_example: Dict[int, Dict[str, np.ndarray]]) -> str:
  """<output_dir>/correct.npz: one bool array per row and crop scheme, keyed
  "<row name>/<crops>crop" (e.g. "bn_x5-seed0/1crop", "ensemble/144crop"), each
  example's top-1 correctness in the split's example order."""
  path = os.path.join(output_dir, PER_EXAMPLE_FILE)
  np.savez_compressed(path, **{f"{name}/{crops}crop": correct
                               for crops, rows in per_example.items()
                               for name, correct in rows.items()})
  return path


def read_per_example(path: str, crops: int = 1) -> Dict[str, np.ndarray]:
  """Row name -> bool[examples] for one crop scheme of a correct.npz (a file or the
  folder holding it)."""
  if os.path.isdir(path):
    path = os.path.join(path, PER_EXAMPLE_FILE)
  suffix = f"/{crops}crop"
  with np.load(path) as f:
    out = {k[:-len(suffix)]: f[k] for k in f.files if k.endswith(suffix)}
  if not out:
    raise ValueError(f"{path} has no {crops}-crop results.")
  return out


def write_report(output_dir: str, report: dict) -> None:
  """report.json and report.md in `output_dir` (call from the first process only)."""
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=2)
  lines = ["# Evaluation", "", f"`{report['command']}`", "",
           f"Split: {report['split']} ({report['data']}), {report['num_examples']:,} examples; "
           f"{report['devices']} device(s), batch {report['batch_size']} crops.", "",
           "Members:", ""]
  for m in report["members"]:
    pop = {"population": f", population statistics over {m['population_stats_batches']} "
                         "training batches",
           "population_biased": f", population statistics over "
                                f"{m['population_stats_batches']} training batches, biased "
                                "variance",
           "batch": f", BN statistics of each evaluation batch of {report['batch_size']} "
                    "crops"}.get(m.get("bn_statistics", "moving"), "")
    unfinished = (f", unfinished: its run has {m['run_num_steps']:,} steps"
                  if m.get("run_num_steps", m["step"]) > m["step"] else "")
    lines.append(f"* {m['name']}: {m['workdir']} step {m['step']} ({m['model']}{pop}"
                 f"{unfinished})")
  lines += ["", summary_table(report), ""]
  for res in report["results"]:
    lines.append(f"{res['crops']} crop(s): {res['seconds']:.1f} s "
                 f"({res['crops_per_second']:.0f} crops/s).")
  lines += [""] + [against_best_member_line(r) for res in report["results"]
                   for r in res["rows"] if "against_best_member" in r]
  with open(os.path.join(output_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def result_lines(result: dict) -> List[str]:
  """What the command prints when a crop scheme finishes: its table, a warning per
  network with non-finite outputs, the ensemble's comparison, the time taken."""
  k = result["crops"]
  lines = [format_table(result["rows"])]
  lines += [f"WARNING: {r['model']}: {r['nonfinite']:,} of {r['examples']:,} examples had "
            f"non-finite (NaN/inf) outputs with {k} crop(s); they count as errors."
            for r in result["rows"] if r["nonfinite"]]
  lines += [against_best_member_line(r) for r in result["rows"] if "against_best_member" in r]
  lines.append(f"{k} crop(s): {result['seconds']:.1f} s "
               f"({result['crops_per_second']:.0f} crops/s)")
  return lines


def summary_table(report: dict) -> str:
  """Every crop scheme's rows (and the paper's, when asked for) in one table."""
  return format_table([r for res in report["results"] for r in res["rows"]]
                      + report.get("paper", []))
