"""The Figures 2-3 claims (Sec. 4.2.2) decided by the rules fixed before the run
(docs/reproduction.md, section 2b): steps to three targets with their seed ranges, and
the paired tests of "exceeds Inception", "ends highest" and "trains".

Inputs: each member's accuracy curve (metrics.jsonl, as `report.py` reads it) and each
final network's top-1 correctness per test example (correct.npz from
scripts/evaluate.py). Members are grouped into recipes by their seed label
(`inception-seed0` -> `inception`). Numpy only (paired.py); no JAX.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bn_inception import paired, workdir as workdir_lib
from bn_inception.report_runs import (PAPER_FIGURE3, eval_curve, first_step_at, maximum,
                                      mean_curve, member_dirs, seed_label)

Curve = List[Tuple[int, float]]
ALPHA = 0.05
TARGET_OFFSETS = (0.0, -0.01, -0.03)  # T_max, T_max - 1 and - 3 points (rule 1)
EXCEEDS = ("bn_baseline", "bn_x5", "bn_x30")  # rule 4, one family for Holm
HIGHEST = "bn_x30"                            # rule 5
TRAINS = "bn_x5_sigmoid"                      # rule 6
CHANCE = 0.1


def load(sweep_dirs: Sequence[str], correct_path: str, metric: str = "eval/accuracy"):
  """(curves, correct, nonfinite) of the sweeps' members: their accuracy curves, their
  final networks' per-example top-1 correctness (a correct.npz, 1 crop) and whether
  any evaluation or training row was non-finite."""
  runs = [run for d in sweep_dirs for run in member_dirs(d)]
  if not runs:
    raise FileNotFoundError(f"No sweep members in {', '.join(sweep_dirs)}.")
  names = [name for name, _ in runs]
  if len(set(names)) < len(names):
    raise ValueError(f"Member names repeat across {', '.join(sweep_dirs)}: "
                     f"{sorted({n for n in names if names.count(n) > 1})}.")
  rows = {name: workdir_lib.read_metrics(d) for name, d in runs}
  curves = {name: eval_curve(r, metric) for name, r in rows.items()}
  nonfinite = {name: any(not np.isfinite(v) or (k.endswith("nonfinite_fraction") and v > 0)
                         for row in r.values() for k, v in row.items()
                         if isinstance(v, (int, float)))
               for name, r in rows.items()}
  return curves, load_correct([correct_path]), nonfinite


def load_correct(specs: Sequence[str]) -> Dict[str, np.ndarray]:
  """Per-example correctness from several correct.npz: each spec `path` or
  `path:tag`; a tag renames member `<recipe>-seed<k>` to `<recipe>_<tag>-seed<k>`, so
  the same networks evaluated two ways are two recipes (e.g. bn_x5_population and
  bn_x5_batch2). Each file's ensemble row is left out: it is no recipe's seed."""
  from bn_inception import eval_report
  out: Dict[str, np.ndarray] = {}
  for spec in specs:
    path, _, tag = spec.partition(":")
    for name, correct in eval_report.read_per_example(path, crops=1).items():
      if name == "ensemble":
        continue
      if tag:
        recipe = seed_label(name)
        name = f"{recipe}_{tag}{name[len(recipe):]}"
      if name in out:
        raise ValueError(f"{name} appears in two of {', '.join(specs)}: tag them apart "
                         "(path:tag).")
      out[name] = correct
  return out


def recipes(names: Sequence[str]) -> Dict[str, List[str]]:
  """Recipe label -> its members, in seed order (as named); the paper's recipes first,
  in its order."""
  out: Dict[str, List[str]] = {}
  for name in sorted(names):
    out.setdefault(seed_label(name), []).append(name)
  order = list(LABELS)
  return dict(sorted(out.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                  else len(order), kv[0])))


def _seed(name: str) -> str:
  return name[len(seed_label(name)):].lstrip("-_")


def speed_ups(curves: Dict[str, Curve], reference: str = "inception",
              offsets: Sequence[float] = TARGET_OFFSETS) -> dict:
  """Rules 1-3: per target, each recipe's mean-curve steps, the speed-up over the
  reference's mean curve, its range over seeds, and whether the statement holds (the
  mean curve reaches the target and every seed reaches it before the reference's mean
  curve does)."""
  groups = recipes(curves)
  if reference not in groups:
    raise ValueError(f"no members of the reference recipe {reference!r} "
                     f"(recipes: {', '.join(groups)}).")
  means = {label: mean_curve([curves[m] for m in members]) for label, members in groups.items()}
  t_step, t_max = maximum(means[reference])
  out = {"reference": reference, "t_max": t_max, "t_max_step": t_step, "targets": []}
  for offset in offsets:
    target = t_max + offset
    ref_steps = first_step_at(means[reference], target)
    rows = {}
    for label, members in groups.items():
      steps = first_step_at(means[label], target)
      seeds = {m: first_step_at(curves[m], target) for m in members}
      reached = [s for s in seeds.values() if s is not None]
      per_seed = [ref_steps / max(s, 1) for s in reached]
      rows[label] = {
          "mean_curve_steps": steps, "seed_steps": seeds, "reached": len(reached),
          "seeds": len(members), "resolution": _interval(means[label]),
          "speed_up": None if steps is None else ref_steps / max(steps, 1),
          "speed_up_range": [min(per_seed), max(per_seed)] if per_seed else None,
          "holds": (label != reference and steps is not None and len(reached) == len(members)
                    and all(s < ref_steps for s in reached))}
    out["targets"].append({"offset": offset, "target": target, "reference_steps": ref_steps,
                           "recipes": rows})
  return out


def _interval(curve: Curve) -> Optional[int]:
  steps = [s for s, _ in curve]
  return steps[-1] - steps[-2] if len(steps) > 1 else None


def _runs(correct: Dict[str, np.ndarray], members: Sequence[str]) -> np.ndarray:
  missing = [m for m in members if m not in correct]
  if missing:
    raise ValueError(f"correct.npz has no per-example results for {', '.join(missing)}.")
  return np.stack([np.asarray(correct[m], bool) for m in members])


def compare(correct: Dict[str, np.ndarray], a: Sequence[str], b: Sequence[str],
            num_samples: int = 10_000, seed: int = 0) -> dict:
  """Recipe A against recipe B on the same examples: the paired bootstrap over examples
  and seeds (Δ = A - B, its 95% interval, p) and McNemar per same-seed pair."""
  runs_a, runs_b = _runs(correct, a), _runs(correct, b)
  c = paired.paired_bootstrap(runs_a, runs_b, num_samples, seed)
  pairs = {}
  seeds_b = {_seed(m): i for i, m in enumerate(b)}
  for i, m in enumerate(a):
    j = seeds_b.get(_seed(m))
    if j is not None:
      only_a = int(np.sum(runs_a[i] & ~runs_b[j]))
      only_b = int(np.sum(~runs_a[i] & runs_b[j]))
      pairs[_seed(m)] = {"only_a_right": only_a, "only_b_right": only_b,
                         "p_value": paired.mcnemar_p(only_a, only_b)}
  return {"delta": c.delta, "low": c.low, "high": c.high, "p_value": c.p_value,
          "num_samples": c.num_samples, "same_seed_pairs": pairs}


def decide(curves: Dict[str, Curve], correct: Dict[str, np.ndarray],
           nonfinite: Dict[str, bool], reference: str = "inception",
           num_samples: int = 10_000) -> dict:
  """Rules 1-7 of docs/reproduction.md section 2b. `nonfinite`: member -> whether any of
  its evaluations or steps was non-finite."""
  groups = recipes(curves)
  final = {label: [float(np.mean(correct[m])) for m in members]
           for label, members in groups.items() if all(m in correct for m in members)}
  out = {"speed_ups": speed_ups(curves, reference), "final_accuracy": final,
         "exceeds": {}, "highest": {}, "trains": {}}
  ref = groups[reference]
  for label in [r for r in EXCEEDS if r in groups]:  # rule 4
    out["exceeds"][label] = compare(correct, groups[label], ref, num_samples)
  adjusted = paired.holm([c["p_value"] for c in out["exceeds"].values()])
  for c, p in zip(out["exceeds"].values(), adjusted):
    c["holm_p"] = p
    c["holds"] = _better(c, p)
  if HIGHEST in groups:  # rule 5
    for label in [r for r in groups if r != HIGHEST]:
      out["highest"][label] = compare(correct, groups[HIGHEST], groups[label], num_samples)
    out["highest_holds"] = bool(out["highest"]) and all(
        c["delta"] > 0 and c["p_value"] < ALPHA for c in out["highest"].values())
  if TRAINS in groups:  # rule 6
    floor = CHANCE + 0.5 * (np.mean(final[reference]) - CHANCE)
    finite = not any(nonfinite.get(m, False) for m in groups[TRAINS])
    lower = compare(correct, ref, groups[TRAINS], num_samples)
    out["trains"] = {"floor": float(floor), "finals": final[TRAINS], "finite": finite,
                     "holds": finite and all(f > floor for f in final[TRAINS]),
                     "lower_than_reference": {**lower, "holds": _better(lower)}}
  return out


def compare_pairs(correct: Dict[str, np.ndarray], names: Sequence[str],
                  pairs: Sequence[Tuple[str, str]], num_samples: int = 10_000) -> dict:
  """Recipe A against recipe B for each (A, B) of `pairs`, decided as rule 4 with Holm's
  adjustment over `pairs` (one family): e.g. the equal-budget control."""
  groups = recipes(names)
  unknown = sorted({r for pair in pairs for r in pair} - set(groups))
  if unknown:
    raise ValueError(f"unknown recipes {unknown} (recipes: {', '.join(groups)}).")
  out = {f"{a}:{b}": compare(correct, groups[a], groups[b], num_samples) for a, b in pairs}
  for c, p in zip(out.values(), paired.holm([c["p_value"] for c in out.values()])):
    c["holm_p"] = p
    c["holds"] = _better(c, p)
  return out


def pairs_markdown(compared: dict) -> str:
  lines = ["| claim | Δ (points) | 95% interval | bootstrap p | Holm p | same-seed pairs: only "
           "A right / only B right (McNemar p) | verdict |", "|---|---|---|---|---|---|---|"]
  for key, c in compared.items():
    a, b = key.split(":")
    lines.append(_test_row(f"{_name(a)} above {_name(b)}", c, c["holm_p"], c["holds"]))
  return "\n".join(lines)


def _better(c: dict, p: Optional[float] = None) -> bool:
  """Rule 4: Δ > 0, (adjusted) p < ALPHA, and every same-seed pair points that way."""
  pairs = c["same_seed_pairs"].values()
  return bool(c["delta"] > 0 and (c["p_value"] if p is None else p) < ALPHA and pairs
              and all(q["only_a_right"] > q["only_b_right"] for q in pairs))


LABELS = {**{run: paper["label"] for run, paper in PAPER_FIGURE3.items()},  # its order
          "bn_x5_equal_budget": "BN-x5, equal budget",
          "bn_x30_equal_budget": "BN-x30, equal budget"}


def _name(label: str) -> str:
  return LABELS.get(label, label)


def _verdict(holds: bool) -> str:
  return "reproduced" if holds else "not reproduced at this scale"


def _steps(s: Optional[int]) -> str:
  return "not reached" if s is None else f"{s:,}"


def _offset(offset: float) -> str:
  return "" if offset == 0 else f" {100 * offset:+.0f} pt"


def _speed_up_lines(s: dict) -> List[str]:
  targets = s["targets"]
  head = ["recipe"] + [f"T_max{_offset(t['offset'])} = {100 * t['target']:.2f}%"
                       for t in targets]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for label in targets[0]["recipes"]:
    cells = [_name(label)]
    for t in targets:
      r = t["recipes"][label]
      if label == s["reference"]:
        cells.append(f"{_steps(r['mean_curve_steps'])} steps ({r['reached']}/{r['seeds']} "
                     "seeds reach)")
        continue
      rng = ("" if r["speed_up_range"] is None else
             f", seeds {r['speed_up_range'][0]:.1f}–{r['speed_up_range'][1]:.1f}×")
      ratio = "—" if r["speed_up"] is None else f"{r['speed_up']:.1f}×"
      within = "" if r["resolution"] is None else f" ±{r['resolution']:,}"
      cells.append(f"{ratio} ({_steps(r['mean_curve_steps'])}{within} steps"
                   f"{rng}; {r['reached']}/{r['seeds']} reach): "
                   f"{'holds' if r['holds'] else 'does not hold'}")
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _pairs(c: dict) -> str:
  def p(value):  # below float64's range: zero
    return "< 1e-300" if value == 0 else f"{value:.2g}"
  return "; ".join(f"{seed or '-'}: {q['only_a_right']}/{q['only_b_right']} (p {p(q['p_value'])})"
                   for seed, q in c["same_seed_pairs"].items())


def _p(p: float, num_samples: int) -> str:
  """A bootstrap p-value; 0 of the samples is below the resolution, not zero."""
  return f"< {1 / num_samples:.0e}" if p == 0 else f"{p:.3g}"


def _test_row(claim: str, c: dict, holm: Optional[float], holds: bool, note: str = "—",
              part: bool = False) -> str:
  """One test's row; `part`: one of several that must all hold (says holds / does not)."""
  n = c["num_samples"]
  verdict = ("holds" if holds else "does not hold") if part else _verdict(holds)
  return (f"| {claim} | {100 * c['delta']:+.2f} | {100 * c['low']:+.2f} to "
          f"{100 * c['high']:+.2f} | {_p(c['p_value'], n)} | "
          f"{note if holm is None else _p(holm, n)} | {_pairs(c)} | {verdict} |")


def markdown(d: dict) -> str:
  """The decision as tables: speed-ups (rules 1-3), then the tests (rules 4-6)."""
  s = d["speed_ups"]
  ref = _name(s["reference"])
  lines = [f"T_max = {100 * s['t_max']:.2f}% ({ref}'s mean curve, at step "
           f"{s['t_max_step']:,}). Speed-up = {ref}'s mean-curve steps ÷ the recipe's; "
           "range: ÷ each seed's steps; ± one evaluation interval.", ""]
  lines += _speed_up_lines(s)
  lines += ["", "Final networks (all test examples): " + "; ".join(
      f"{_name(k)} {100 * np.mean(v):.2f}% ({100 * min(v):.2f}–{100 * max(v):.2f})"
      for k, v in d["final_accuracy"].items()), "",
      "| claim | Δ (points) | 95% interval | bootstrap p | Holm p | same-seed pairs: only A "
      "right / only B right (McNemar p) | verdict |", "|---|---|---|---|---|---|---|"]
  for label, c in d["exceeds"].items():
    lines.append(_test_row(f"{_name(label)} exceeds {ref}", c, c["holm_p"], c["holds"]))
  for label, c in d["highest"].items():
    lines.append(_test_row(f"{_name(HIGHEST)} above {_name(label)}", c, None,
                           c["delta"] > 0 and c["p_value"] < ALPHA, "(all four must hold)",
                           part=True))
  t = d["trains"]
  if t:
    low = t["lower_than_reference"]
    lines.append(_test_row(f"{ref} above {_name(TRAINS)}", low, None, low["holds"]))
  lines.append("")
  if d["highest"]:
    lines.append(f"\"{_name(HIGHEST)} ends highest\": {_verdict(d['highest_holds'])}.")
  if t:
    lines.append(f"\"{_name(TRAINS)} trains\" (every seed above {100 * t['floor']:.2f}%, "
                 f"no non-finite value): {_verdict(t['holds'])} (seeds: "
                 + ", ".join(f"{100 * f:.2f}%" for f in t["finals"]) + ").")
  return "\n".join(lines)
