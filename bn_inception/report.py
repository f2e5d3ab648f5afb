"""A sweep's Figure 2 / Figure 3 (Sec. 4.2.2): accuracy against training steps, and
per member the steps to a target accuracy, the maximum accuracy and its step.

Reads <workdir>/<member>/metrics.jsonl (written by the training loop) for every
member, in the order of <workdir>/sweep.json when there is one, and writes
<workdir>/report.md, report.json and accuracy_vs_steps.png, and, for TensorBoard's
HParams dashboard (`tensorboard --logdir=<workdir>`), <workdir>/_hparams/<member>:
each member's overridden (and differing) config fields as hparams and its final and
maximum accuracy as metrics. From each member's config.json it also finds members
that differ only by `seed` (their mean, standard deviation and range) and, given a
config field `x`, the final accuracy against it (accuracy_vs_<field>.png, one line
per setting of the other fields that vary).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from bn_inception.metrics import read_jsonl
from bn_inception.schema import NON_RESULT_FIELDS

METRIC = "eval/accuracy"
SEED_FIELD = "seed"
_SEED_LABEL = re.compile(r"(^|-)seed\d+(?=-|$)")  # how sweep.product names the seed axis
HPARAMS_DIR = "_hparams"  # not a member name: those start with a letter or digit
FINAL_TAG, MAX_TAG = "accuracy/final", "accuracy/max"
PAPER_TARGET = 0.722
NOT_REACHED = "not reached"
# Accuracies are counts / N stored as float32: count a value within this of the
# target as reaching it (far below 1/N for any eval set under a million examples).
TOLERANCE = 1e-6

# Figure 3 of the paper (ImageNet, single-crop validation accuracy; steps are
# training steps, i.e. mini-batches of 32 per replica). "Steps to max" only where
# the text states it (Sec. 4.2.2): Inception's maximum is the target itself, and
# BN-x30 "reaches 74.8% after 6*10^6 steps".
PAPER_FIGURE3 = {
    "inception": {"label": "Inception", "steps_to_target": 31.0e6, "max_accuracy": 0.722,
                  "steps_to_max": 31.0e6},
    "bn_baseline": {"label": "BN-Baseline", "steps_to_target": 13.3e6, "max_accuracy": 0.727,
                    "steps_to_max": None},
    "bn_x5": {"label": "BN-x5", "steps_to_target": 2.1e6, "max_accuracy": 0.730,
              "steps_to_max": None},
    "bn_x30": {"label": "BN-x30", "steps_to_target": 2.7e6, "max_accuracy": 0.748,
               "steps_to_max": 6.0e6},
    "bn_x5_sigmoid": {"label": "BN-x5-Sigmoid", "steps_to_target": None, "max_accuracy": 0.698,
                      "steps_to_max": None},
}


def paper_key(name: str) -> Optional[str]:
  """The Figure 3 row a member or seed group stands for ('BN-x5', 'bn_x5',
  'bn_x5-seed2' -> 'bn_x5'), if any."""
  key = _seed_label(name).lower().replace("-", "_")
  return key if key in PAPER_FIGURE3 else None


@dataclasses.dataclass
class MemberSummary:
  name: str
  steps_to_target: Optional[int]   # first evaluated step with accuracy >= target
  max_accuracy: Optional[float]
  max_step: Optional[int]          # first evaluated step at the maximum
  final_accuracy: Optional[float]
  final_step: Optional[int]        # last evaluated step
  steps_per_sec: Optional[float]   # median of the logged training speeds
  num_evals: int

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["steps_to_target"] = NOT_REACHED if self.steps_to_target is None else self.steps_to_target
    return d


def eval_curve(rows: Dict[int, dict], metric: str = METRIC) -> List[Tuple[int, float]]:
  return [(step, float(r[metric])) for step, r in sorted(rows.items()) if metric in r]


def first_step_at(curve: List[Tuple[int, float]], target: float) -> Optional[int]:
  """The first evaluated step at or above `target` (None: not reached)."""
  return next((s for s, a in curve if a + TOLERANCE >= target), None)


def maximum(curve: List[Tuple[int, float]]) -> Tuple[int, float]:
  """(the first step at the maximum, the maximum) of a non-empty curve."""
  best = max(a for _, a in curve)
  return next(s for s, a in curve if a == best), best


def summarize(name: str, rows: Dict[int, dict], target: float,
              metric: str = METRIC) -> MemberSummary:
  """Steps to `target`, maximum and its step, final value and speed from metrics rows."""
  curve = eval_curve(rows, metric)
  speeds = [float(r["steps_per_sec"]) for r in rows.values() if "steps_per_sec" in r]
  speed = statistics.median(speeds) if speeds else None
  if not curve:
    return MemberSummary(name, None, None, None, None, None, speed, 0)
  reached = first_step_at(curve, target)
  best_step, best = maximum(curve)
  final_step, final = curve[-1]
  return MemberSummary(name, reached, best, best_step, final, final_step, speed, len(curve))


def member_dirs(workdir: str) -> List[Tuple[str, str]]:
  """(name, dir) of each member: sweep.json's order first, then other runs by name."""
  names: List[str] = []
  manifest = os.path.join(workdir, "sweep.json")
  if os.path.exists(manifest):
    with open(manifest) as f:
      names = [m["name"] for m in json.load(f).get("members", [])]
  if os.path.isdir(workdir):
    for entry in sorted(os.listdir(workdir)):
      if entry not in names and os.path.exists(os.path.join(workdir, entry, "metrics.jsonl")):
        names.append(entry)
  return [(n, os.path.join(workdir, n)) for n in names]


def read_rows(run_dir: str) -> Dict[int, dict]:
  """{step: {metric: value}} of a run's metrics.jsonl (empty when it has none)."""
  return read_jsonl(os.path.join(run_dir, "metrics.jsonl"))


def mean_curve(curves: Sequence[List[Tuple[int, float]]]) -> List[Tuple[int, float]]:
  """The curves averaged at each step that all of them evaluated (seeds of one setting
  share their evaluation steps)."""
  if not curves:
    return []
  by_step = [dict(c) for c in curves]
  common = set.intersection(*(set(d) for d in by_step))
  return [(s, statistics.fmean(d[s] for d in by_step)) for s in sorted(common)]


def resolve_target(target: Union[str, float], curves: Dict[str, List[Tuple[int, float]]],
                   groups: Dict[str, List[str]], metric: str = METRIC) -> Tuple[float, str]:
  """A number; a member's name: that member's maximum (the paper's 72.2% is
  Inception's maximum); or a seed group's label ('inception' for inception-seed0..2):
  the maximum of its seeds' MEAN curve, so that the group itself reaches the target
  exactly once, at one step, however its seeds scatter. Returns (value, description)."""
  try:
    value = float(target)
  except (TypeError, ValueError):
    if target in curves:
      curve, what = curves[target], f"{metric} of {target}"
    elif target in groups:
      curve = mean_curve([curves[n] for n in groups[target]])
      what = f"{metric} of {target} averaged over its {len(groups[target])} seeds"
    else:
      raise ValueError(f"--target={target!r} is neither a number, a member nor a seed group "
                       f"(members: {', '.join(curves) or 'none'}"
                       + (f"; seed groups: {', '.join(groups)}" if groups else "") + ").") from None
    if not curve:
      raise ValueError(f"--target={target}: no {metric} values yet.")
    best_step, best = maximum(curve)
    return best, f"the maximum {what} ({best:.4f}, at step {best_step:,})"
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"--target={value} must be an accuracy in [0, 1], a member name or a "
                     "seed group.")
  return value, f"{metric} >= {value:.4f}"


@dataclasses.dataclass
class Spread:
  """A value over the seeds of one setting: mean, sample standard deviation, range."""
  mean: float
  std: float                        # 0 for a single value
  low: float
  high: float
  n: int

  @classmethod
  def of(cls, values: Sequence[float]) -> "Spread":
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return cls(statistics.fmean(values), std, min(values), max(values), len(values))


@dataclasses.dataclass
class SeedGroup:
  """Members whose configs differ only by `seed`."""
  label: str                        # the first member's name without its seed label
  members: List[str]
  max_accuracy: Optional[Spread]
  final_accuracy: Optional[Spread]
  steps_to_target: Optional[Spread]  # over the members that reached the target
  reached: int                      # how many did
  mean_curve: List[Tuple[int, float]]  # the seeds' accuracy averaged at each step
  mean_steps_to_target: Optional[int]  # first step at which the mean curve reaches it


@dataclasses.dataclass
class XPoint:
  """Final accuracy at one value of the x field (over the seeds run at it)."""
  x: float
  final_accuracy: Spread
  max_accuracy: Spread
  members: List[str]


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


def member_configs(runs: Sequence[Tuple[str, str]]) -> Dict[str, Dict[str, Any]]:
  """{member: its flat config.json} ({} for a member that has none yet)."""
  from bn_inception import checkpoint
  return {name: checkpoint.flat(checkpoint.read_config(d)) if checkpoint.is_workdir(d) else {}
          for name, d in runs}


def varying_fields(configs: Dict[str, Dict[str, Any]]) -> List[str]:
  """The fields whose values differ between the (flat) configs, sorted. A field that
  some configs lack (added to or dropped from the code between runs) does not count,
  as it does not make a resumed run another run (checkpoint.config_difference), nor
  does one that does not change what a run computes (schema.NON_RESULT_FIELDS: e.g.
  data.data_dir spelled out by one member and left to the default by another)."""
  keys = set.intersection(*(set(c) for c in configs.values())) if configs else set()
  return sorted(k for k in keys - set(NON_RESULT_FIELDS)
                if len({json.dumps(c[k], sort_keys=True) for c in configs.values()}) > 1)


def _without(config: Dict[str, Any], fields: Sequence[str]) -> str:
  return json.dumps({k: v for k, v in config.items() if k not in fields}, sort_keys=True)


def _seed_label(name: str) -> str:
  return _SEED_LABEL.sub("", name).strip("-") or name


def seed_groups(curves: Dict[str, List[Tuple[int, float]]],
                configs: Dict[str, Dict[str, Any]]) -> Dict[str, List[str]]:
  """{label: members}: groups of two or more evaluated members whose configs differ
  only by `seed`, labelled by the first member's name without its seed label."""
  groups: Dict[str, List[str]] = {}
  for name, curve in curves.items():
    if curve and configs.get(name):
      groups.setdefault(_without(configs[name], (SEED_FIELD, *NON_RESULT_FIELDS)),
                        []).append(name)
  return {_seed_label(names[0]): names for names in groups.values() if len(names) > 1}


def group_stats(groups: Dict[str, List[str]], summaries: Sequence[MemberSummary],
                curves: Dict[str, List[Tuple[int, float]]], target: float) -> List[SeedGroup]:
  by_name = {s.name: s for s in summaries}
  out = []
  for label, names in groups.items():
    members = [by_name[n] for n in names]
    reached = [m.steps_to_target for m in members if m.steps_to_target is not None]
    mean = mean_curve([curves[n] for n in names])
    out.append(SeedGroup(
        label, names, Spread.of([m.max_accuracy for m in members]),
        Spread.of([m.final_accuracy for m in members]),
        Spread.of(reached) if reached else None, len(reached), mean,
        first_step_at(mean, target)))
  return out


def accuracy_by(field: str, summaries: Sequence[MemberSummary],
                configs: Dict[str, Dict[str, Any]]) -> Dict[str, List[XPoint]]:
  """Final accuracy against config field `field`: one series per setting of the other
  fields that vary between the members (`seed` aside: seeds are averaged), named by
  those settings ('bn.enabled=False'; 'all' when nothing else varies)."""
  done = [s for s in summaries if s.num_evals and configs.get(s.name)]
  missing = [s.name for s in done if field not in configs[s.name]]
  if missing:
    raise ValueError(f"--x={field}: no such field in the config.json of "
                     f"{', '.join(missing)}.")
  varying = [k for k in varying_fields({s.name: configs[s.name] for s in done})
             if k not in (field, SEED_FIELD)]
  series: Dict[str, Dict[float, List[MemberSummary]]] = {}
  for s in done:
    c = configs[s.name]
    label = ", ".join(f"{k}={c.get(k)}" for k in varying) or "all"
    try:
      x = float(c[field])
    except (TypeError, ValueError):
      raise ValueError(f"--x={field}: member {s.name} has {c[field]!r}, not a number.") from None
    series.setdefault(label, {}).setdefault(x, []).append(s)
  return {label: [XPoint(x, Spread.of([m.final_accuracy for m in ms]),
                         Spread.of([m.max_accuracy for m in ms]), [m.name for m in ms])
                  for x, ms in sorted(points.items())]
          for label, points in series.items()}


def build(workdir: str, target: Union[str, float] = PAPER_TARGET, metric: str = METRIC,
          paper: bool = False, x: Optional[str] = None) -> Report:
  runs = member_dirs(workdir)
  if not runs:
    raise FileNotFoundError(f"No sweep members in {workdir}: no sweep.json and no "
                            "<member>/metrics.jsonl.")
  rows = {name: read_rows(d) for name, d in runs}
  curves = {name: eval_curve(rows[name], metric) for name, _ in runs}
  configs = member_configs(runs)
  groups = seed_groups(curves, configs)
  value, description = resolve_target(target, curves, groups, metric)
  reference = target if isinstance(target, str) and (target in rows or target in groups) else None
  summaries = [summarize(name, rows[name], value, metric) for name, _ in runs]
  return Report(workdir, value, description, reference, metric, summaries, curves, paper,
                group_stats(groups, summaries, curves, value), x,
                accuracy_by(x, summaries, configs) if x else {})


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
  lines = [f"# Sweep report: {report.workdir}", "",
           f"Target: {report.target_description}. Accuracy is `{report.metric}` over the whole "
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
  if report.paper:
    out["paper_figure3"] = {
        k: {**v, "steps_to_target": NOT_REACHED if v["steps_to_target"] is None
            else v["steps_to_target"]} for k, v in PAPER_FIGURE3.items()}
  return out


def plot(report: Report, path: str, log_steps: bool = False,
         ymin: Optional[float] = None) -> None:
  """All members' accuracy against steps on one plot, with the target as a line."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(8, 5))
  visible = lambda curve: [(s, a) for s, a in curve if s > 0 or not log_steps]  # log: no 0
  grouped = set()
  for g in report.seed_groups:  # seeds of one setting: their mean, shaded min to max
    grouped.update(g.members)
    points = visible(g.mean_curve)
    if points:
      steps = [s for s, _ in points]
      by_step = [dict(report.curves[n]) for n in g.members]
      line, = ax.plot(steps, [a for _, a in points], marker=".",
                      label=f"{g.label} (mean of {len(g.members)} seeds)")
      ax.fill_between(steps, [min(d[s] for d in by_step) for s in steps],
                      [max(d[s] for d in by_step) for s in steps],
                      color=line.get_color(), alpha=0.2, lw=0)
  for name, curve in report.curves.items():
    points = visible(curve)
    if points and name not in grouped:
      steps, accs = zip(*points)
      ax.plot(steps, accs, marker=".", label=name)
  ax.axhline(report.target, color="gray", ls="--", lw=1,
             label=f"target {100 * report.target:.2f}%")
  if log_steps:
    ax.set_xscale("log")
  if ymin is not None:  # e.g. 0.95: the top of the curves, where the runs differ
    top = max([ymin] + [a for c in report.curves.values() for _, a in c])
    ax.set_ylim(ymin, top + 0.05 * (top - ymin) + 1e-3)
  ax.set(xlabel="training steps" + (" (log scale)" if log_steps else ""),
         ylabel=report.metric, title="Accuracy vs. training steps (cf. the paper's Figure 2)")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right" if ymin is None else "best", fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def x_plot_path(report: Report) -> str:
  return os.path.join(report.workdir, f"accuracy_vs_{report.x.split('.')[-1]}.png")


def plot_by_x(report: Report, path: str, log_x: bool = False) -> None:
  """Final accuracy against the x field, one line per series; bars span the seeds."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for label, points in report.by_x.items():
    xs = [p.x for p in points]
    ys = [p.final_accuracy.mean for p in points]
    err = [[p.final_accuracy.mean - p.final_accuracy.low for p in points],
           [p.final_accuracy.high - p.final_accuracy.mean for p in points]]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
  if log_x:
    ax.set_xscale("log", base=2 if all(float(p.x).is_integer() for ps in report.by_x.values()
                                       for p in ps) else 10)
  ax.set(xlabel=report.x + (" (log scale)" if log_x else ""),
         ylabel=f"final {report.metric}", title=f"Accuracy vs. {report.x}")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="best", fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def write(report: Report, log_steps: bool = False, log_x: bool = False,
          ymin: Optional[float] = None) -> Tuple[str, ...]:
  """report.md, report.json, accuracy_vs_steps.png (and accuracy_vs_<x>.png) in the
  sweep's workdir."""
  md = os.path.join(report.workdir, "report.md")
  js = os.path.join(report.workdir, "report.json")
  png = os.path.join(report.workdir, "accuracy_vs_steps.png")
  with open(md, "w") as f:
    f.write(markdown(report))
  with open(js, "w") as f:
    json.dump(to_json(report), f, indent=2)
    f.write("\n")
  plot(report, png, log_steps, ymin)
  write_hparams(report.workdir, report.metric)
  if not report.x:
    return md, js, png
  x_png = x_plot_path(report)
  plot_by_x(report, x_png, log_x)
  return md, js, png, x_png


# ---------------------------------------------------------------- TensorBoard HParams


def _hparam_value(value: Any):
  """A config value as TensorBoard's hparams take it: bool, number or string."""
  if isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value)
  return str(value)


def sweep_hparams(workdir: str) -> Dict[str, Dict[str, Any]]:
  """{member: {hparam: value}}: the base config (sweep.json) and every field a member
  overrides (sweep.json) or that differs between members, valued as each member's
  config.json stores it. Members not started yet (no config.json) are left out."""
  manifest = os.path.join(workdir, "sweep.json")
  declared: Dict[str, dict] = {}
  if os.path.exists(manifest):
    with open(manifest) as f:
      declared = {m["name"]: m for m in json.load(f).get("members", [])}
  configs = {name: c for name, c in member_configs(member_dirs(workdir)).items() if c}
  fields = set(varying_fields(configs))
  for name, m in declared.items():
    fields |= {arg.split("=", 1)[0][len("--config."):] for arg in m.get("overrides", [])}
  out = {}
  for name, config in configs.items():
    hparams = {f: _hparam_value(config[f]) for f in sorted(fields) if f in config}
    if declared.get(name, {}).get("config"):
      hparams["config"] = declared[name]["config"]
    out[name] = hparams
  return out


def write_hparams(workdir: str, metric: str = METRIC) -> List[str]:
  """TensorBoard's HParams dashboard for the sweep in `workdir`: one run per started
  member, <workdir>/_hparams/<member>, holding its hparams (`sweep_hparams`) and its
  final and maximum `metric` as the scalars accuracy/final and accuracy/max, and the
  experiment (which hparams and metrics to show) in <workdir>/_hparams. Rewritten
  from scratch each time; returns the member runs written."""
  from tensorboard.compat.proto import event_pb2
  from tensorboard.plugins.hparams import summary_v2 as hp
  from tensorboard.plugins.scalar import summary_v2 as scalar
  from tensorboard.summary.writer.event_file_writer import EventFileWriter
  members = sweep_hparams(workdir)
  root = os.path.join(workdir, HPARAMS_DIR)
  shutil.rmtree(root, ignore_errors=True)  # TensorBoard keeps the FIRST hparams of a run
  if not members:
    return []

  def write(logdir: str, summaries: List[Tuple[int, Any]]):
    writer = EventFileWriter(logdir)
    for step, summary in summaries:
      writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()

  names = sorted({k for h in members.values() for k in h})
  write(root, [(0, hp.hparams_config_pb(
      hparams=[hp.HParam(n) for n in names],
      metrics=[hp.Metric(FINAL_TAG, display_name=f"final {metric}"),
               hp.Metric(MAX_TAG, display_name=f"max {metric}")]))])
  written = []
  for name, hparams in members.items():
    s = summarize(name, read_rows(os.path.join(workdir, name)), 1.0, metric)
    summaries = [(0, hp.hparams_pb(hparams, trial_id=name))]
    if s.final_accuracy is not None:
      summaries += [(s.final_step, scalar.scalar_pb(FINAL_TAG, s.final_accuracy)),
                    (s.max_step, scalar.scalar_pb(MAX_TAG, s.max_accuracy))]
    write(os.path.join(root, name), summaries)
    written.append(os.path.join(root, name))
  return written
