"""A sweep's Figure 2 / Figure 3 (Sec. 4.2.2): accuracy against training steps, and
per member the steps to a target accuracy, the maximum accuracy and its step.

`build` reads every member's numbers (report_runs.py: <workdir>/<member>/metrics.jsonl,
in the order of <workdir>/sweep.json when there is one, and each member's config.json
for seed groups and `x`); `write` puts <workdir>/report.md, report.json,
accuracy_vs_steps.png (report_plots.py; accuracy_vs_<field>.png for `x`) and
TensorBoard's HParams runs (report_hparams.py) beside them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple, Union

from bn_inception import report_hparams, report_plots
from bn_inception import workdir as workdir_lib
from bn_inception.report_runs import (METRIC, NOT_REACHED, PAPER_FIGURE3, MemberSummary,
                                      SeedGroup, Spread, XPoint, accuracy_by, eval_curve,
                                      group_stats, member_configs, member_dirs, resolve_target,
                                      seed_groups, seed_label, summarize)

PAPER_TARGET = 0.722


def paper_key(name: str) -> Optional[str]:
  """The Figure 3 row a member or seed group stands for ('BN-x5', 'bn_x5',
  'bn_x5-seed2' -> 'bn_x5'), if any."""
  key = seed_label(name).lower().replace("-", "_")
  return key if key in PAPER_FIGURE3 else None


@dataclasses.dataclass
class Report:
  workdir: str
  target: float
  target_description: str
  reference: Optional[str]          # the member or seed group whose maximum is the target
  metric: str
  summaries: List[MemberSummary]
  curves: Dict[str, List[Tuple[int, float]]]
  paper: bool
  seed_groups: List[SeedGroup] = dataclasses.field(default_factory=list)
  x: Optional[str] = None           # a config field, e.g. optim.learning_rate
  by_x: Dict[str, List[XPoint]] = dataclasses.field(default_factory=dict)  # series -> points
  note: str = ""                    # a line under the plots' titles, e.g. the time scale


def build(workdir: str, target: Union[str, float] = PAPER_TARGET, metric: str = METRIC,
          paper: bool = False, x: Optional[str] = None, note: str = "") -> Report:
  runs = member_dirs(workdir)
  if not runs:
    raise FileNotFoundError(f"No sweep members in {workdir}: no sweep.json and no "
                            "<member>/metrics.jsonl.")
  rows = {name: workdir_lib.read_metrics(d) for name, d in runs}
  curves = {name: eval_curve(rows[name], metric) for name, _ in runs}
  configs = member_configs(runs)
  groups = seed_groups(curves, configs)
  value, description = resolve_target(target, curves, groups, metric)
  reference = target if isinstance(target, str) and (target in rows or target in groups) else None
  summaries = [summarize(name, rows[name], value, metric) for name, _ in runs]
  return Report(workdir, value, description, reference, metric, summaries, curves, paper,
                group_stats(groups, summaries, curves, value), x,
                accuracy_by(x, summaries, configs) if x else {}, note)


def _fmt_steps(steps) -> str:
  if steps is None:
    return NOT_REACHED
  if steps >= 1e5:
    return f"{steps / 1e6:.1f}M"
  return f"{int(steps):,}"


def _fmt_acc(a) -> str:
  return "–" if a is None else f"{100 * a:.2f}%"


def _fmt_spread(sp: Optional[Spread], percent: bool = True) -> str:
  """'98.20% ± 0.05 (98.15–98.26)': mean ± sample standard deviation (range)."""
  if sp is None:
    return "–"
  if sp.n == 1:
    return _fmt_acc(sp.mean) if percent else _fmt_steps(sp.mean)
  if percent:
    return (f"{100 * sp.mean:.2f}% ± {100 * sp.std:.2f} "
            f"({100 * sp.low:.2f}–{100 * sp.high:.2f})")
  return f"{sp.mean:,.0f} ± {sp.std:,.0f} ({sp.low:,.0f}–{sp.high:,.0f})"


def _seed_lines(report: Report) -> List[str]:
  target = f"{100 * report.target:.2f}%"
  ref = next((g for g in report.seed_groups if g.label == report.reference), None)
  head = ["setting", "seeds", "max accuracy", "final accuracy", f"steps to {target}",
          "reached", f"mean curve reaches {target} at"]
  if ref is not None:
    head.append(f"fewer steps than {ref.label} (mean curves)")
  if report.paper:
    head += ["paper: steps to 72.2%", "paper: max accuracy"]
  lines = ["", "## Over seeds", "",
           "Members whose configs differ only by `seed`: mean ± sample standard deviation "
           "(min–max). Steps to the target are over the seeds that reached it; the mean "
           "curve is the seeds' accuracy averaged at each evaluated step.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for g in report.seed_groups:
    cells = [g.label, str(len(g.members)), _fmt_spread(g.max_accuracy),
             _fmt_spread(g.final_accuracy), _fmt_spread(g.steps_to_target, percent=False),
             f"{g.reached}/{len(g.members)}", _fmt_steps(g.mean_steps_to_target)]
    cells += _ratio_and_paper_cells(g.label, g.mean_steps_to_target,
                                    ref and ref.mean_steps_to_target, ref is not None,
                                    report.paper)
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _ratio_and_paper_cells(name: str, steps: Optional[int], ref_steps: Optional[int],
                           with_ratio: bool, paper: bool) -> List[str]:
  """'2.2x' fewer steps than the reference (when there is one), then the paper's
  Figure 3 steps and maximum for the network `name` stands for (when asked)."""
  cells = []
  if with_ratio:
    cells.append(f"{ref_steps / steps:.1f}x" if steps and ref_steps else "–")
  if paper:
    p = PAPER_FIGURE3.get(paper_key(name) or "")
    cells += [_fmt_steps(p["steps_to_target"]), _fmt_acc(p["max_accuracy"])] if p else ["", ""]
  return cells


def _x_lines(report: Report) -> List[str]:
  lines = ["", f"## Accuracy against {report.x}", "",
           "Final and maximum accuracy at each value (mean ± sample standard deviation "
           "(min–max) where several seeds ran).", "",
           f"| series | {report.x} | final accuracy | max accuracy | members |",
           "|---|---|---|---|---|"]
  for label, points in report.by_x.items():
    for p in points:
      lines.append(f"| {label} | {p.x:g} | {_fmt_spread(p.final_accuracy)} | "
                   f"{_fmt_spread(p.max_accuracy)} | {', '.join(p.members)} |")
  return lines


def markdown(report: Report) -> str:
  ref = next((s for s in report.summaries if s.name == report.reference), None)
  head = ["member", f"steps to {100 * report.target:.2f}%", "max accuracy", "at step",
          "final accuracy", "at step", "steps/s"]
  if ref is not None:
    head.append(f"fewer steps than {ref.name}")
  if report.paper:
    head += ["paper: steps to 72.2%", "paper: max accuracy"]
  lines = [f"# Sweep report: {report.workdir}", ""] + ([report.note, ""] if report.note else [])
  lines += [f"Target: {report.target_description}. Accuracy is `{report.metric}` over the whole "
           "evaluation split at each evaluated step; \"steps to\" is the first evaluated "
           "step at or above the target, \"at step\" the first evaluated step at the "
           "maximum. Steps are training steps (mini-batches). steps/s is the median "
           "logged training speed (evaluation time included).", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in report.summaries:
    if s.num_evals == 0:
      cells = [s.name, "no evaluations yet"] + [""] * (len(head) - 2)
      lines.append("| " + " | ".join(cells) + " |")
      continue
    cells = [s.name, _fmt_steps(s.steps_to_target), _fmt_acc(s.max_accuracy),
             f"{s.max_step:,}", _fmt_acc(s.final_accuracy), f"{s.final_step:,}",
             "–" if s.steps_per_sec is None else f"{s.steps_per_sec:.1f}"]
    cells += _ratio_and_paper_cells(s.name, s.steps_to_target, ref and ref.steps_to_target,
                                    ref is not None, report.paper)
    lines.append("| " + " | ".join(cells) + " |")
  if report.seed_groups:
    lines += _seed_lines(report)
  if report.x:
    lines += _x_lines(report)
  if report.paper:
    lines += ["", "## The paper (Figure 3, ImageNet)", "",
              "Steps to reach Inception's maximum single-crop validation accuracy (72.2%) "
              "and the maximum reached; steps are training steps of 32 examples per "
              "replica (Sec. 4.2). BN-x30 reaches its 74.8% after 6M steps (Sec. 4.2.2).",
              "", "| network | steps to 72.2% | max accuracy |", "|---|---|---|"]
    for p in PAPER_FIGURE3.values():
      lines.append(f"| {p['label']} | {_fmt_steps(p['steps_to_target'])} | "
                   f"{_fmt_acc(p['max_accuracy'])} |")
  return "\n".join(lines) + "\n"


def to_json(report: Report) -> dict:
  out = {"workdir": report.workdir, "metric": report.metric, "target": report.target,
         "target_description": report.target_description, "reference": report.reference,
         "members": {s.name: s.to_json() for s in report.summaries}}
  if report.seed_groups:
    out["over_seeds"] = [dataclasses.asdict(g) for g in report.seed_groups]
  if report.x:
    out["x"] = report.x
    out["by_x"] = {label: [dataclasses.asdict(p) for p in points]
                   for label, points in report.by_x.items()}
  if report.note:
    out["note"] = report.note
  out["curves"] = {name: [[step, acc] for step, acc in curve]
                   for name, curve in report.curves.items()}
  if report.paper:
    out["paper_figure3"] = {
        k: {**v, "steps_to_target": NOT_REACHED if v["steps_to_target"] is None
            else v["steps_to_target"]} for k, v in PAPER_FIGURE3.items()}
  return out


def _spread(d: Optional[dict]) -> Optional[Spread]:
  return None if d is None else Spread(**d)


def from_json(d: dict) -> Report:
  """The Report a report.json holds (written with its curves): what `--redraw` plots."""
  if "curves" not in d:
    raise ValueError("This report.json has no curves (written before they were kept): "
                     "rerun scripts/report.py on the sweep's workdir.")
  steps = lambda v: None if v == NOT_REACHED else v
  summaries = [MemberSummary(**{**m, "steps_to_target": steps(m["steps_to_target"])})
               for m in d["members"].values()]
  curves = {name: [(int(s), float(a)) for s, a in c] for name, c in d["curves"].items()}
  groups = [SeedGroup(**{**g, **{k: _spread(g[k]) for k in
                                 ("max_accuracy", "final_accuracy", "steps_to_target")},
                         "mean_curve": [tuple(p) for p in g["mean_curve"]]})
            for g in d.get("over_seeds", [])]
  by_x = {label: [XPoint(**{**p, "final_accuracy": Spread(**p["final_accuracy"]),
                            "max_accuracy": Spread(**p["max_accuracy"])}) for p in points]
          for label, points in d.get("by_x", {}).items()}
  return Report(d["workdir"], d["target"], d["target_description"], d["reference"],
                d["metric"], summaries, curves, "paper_figure3" in d, groups, d.get("x"), by_x,
                d.get("note", ""))


def plots(report: Report, directory: str, log_steps: bool = False, log_x: bool = False,
          ymin: Optional[float] = None) -> Tuple[str, ...]:
  """accuracy_vs_steps.png (and accuracy_vs_<x>.png) of `report` into `directory`."""
  png = os.path.join(directory, "accuracy_vs_steps.png")
  report_plots.plot(report, png, log_steps, ymin)
  if not report.x:
    return (png,)
  x_png = os.path.join(directory, report_plots.x_plot_name(report))
  report_plots.plot_by_x(report, x_png, log_x)
  return png, x_png


def write(report: Report, log_steps: bool = False, log_x: bool = False,
          ymin: Optional[float] = None) -> Tuple[str, ...]:
  """report.md, report.json, accuracy_vs_steps.png (and accuracy_vs_<x>.png) in the
  sweep's workdir."""
  md = os.path.join(report.workdir, "report.md")
  js = os.path.join(report.workdir, "report.json")
  with open(md, "w") as f:
    f.write(markdown(report))
  with open(js, "w") as f:
    json.dump(to_json(report), f, indent=2)
    f.write("\n")
  pngs = plots(report, report.workdir, log_steps, log_x, ymin)
  report_hparams.write_hparams(report.workdir, report.metric)
  return (md, js, *pngs)
