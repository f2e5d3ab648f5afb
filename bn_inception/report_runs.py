"""A sweep's runs as numbers: each member's accuracy curve (its metrics.jsonl), the
steps to a target, its maximum and final accuracy, members that differ only by
`seed` (mean, standard deviation, range) and final accuracy against a config field.

report.py turns these into the sweep's report; the sweep runner and its status read
single members with `summarize` and `eval_curve`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from bn_inception import workdir as workdir_lib
from bn_inception.schema import NON_RESULT_FIELDS

METRIC = "eval/accuracy"
SEED_FIELD = "seed"
_SEED_LABEL = re.compile(r"(^|-)seed\d+(?=-|$)")  # how sweep.product names the seed axis
NOT_REACHED = "not reached"

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

# Accuracies are counts / N stored as float32: count a value within this of the
# target as reaching it (far below 1/N for any eval set under a million examples).
TOLERANCE = 1e-6


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
  names = [m["name"] for m in workdir_lib.sweep_members(workdir)]
  if os.path.isdir(workdir):
    for entry in sorted(os.listdir(workdir)):
      if entry not in names and os.path.exists(
          workdir_lib.metrics_path(os.path.join(workdir, entry))):
        names.append(entry)
  return [(n, os.path.join(workdir, n)) for n in names]


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


def member_configs(runs: Sequence[Tuple[str, str]]) -> Dict[str, Dict[str, Any]]:
  """{member: its flat config.json} ({} for a member that has none yet)."""
  from bn_inception import workdir_config
  return {name: workdir_config.flat(workdir_config.read_config(d))
          if workdir_lib.is_workdir(d) else {} for name, d in runs}


def varying_fields(configs: Dict[str, Dict[str, Any]]) -> List[str]:
  """The fields whose values differ between the (flat) configs, sorted. A field that
  some configs lack (added to or dropped from the code between runs) does not count,
  as it does not make a resumed run another run (workdir_config.config_difference), nor
  does one that does not change what a run computes (schema.NON_RESULT_FIELDS: e.g.
  data.data_dir spelled out by one member and left to the default by another)."""
  keys = set.intersection(*(set(c) for c in configs.values())) if configs else set()
  return sorted(k for k in keys - set(NON_RESULT_FIELDS)
                if len({json.dumps(c[k], sort_keys=True) for c in configs.values()}) > 1)


def _without(config: Dict[str, Any], fields: Sequence[str]) -> str:
  return json.dumps({k: v for k, v in config.items() if k not in fields}, sort_keys=True)


def seed_label(name: str) -> str:
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
  return {seed_label(names[0]): names for names in groups.values() if len(names) > 1}


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
