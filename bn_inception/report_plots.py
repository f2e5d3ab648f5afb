"""The sweep report's plots: accuracy against steps (the paper's Figure 2), and final
accuracy against a config field. Each takes a report.Report."""

from __future__ import annotations

from typing import Optional


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _scale(metric: str):
  """(factor, axis label) for `metric`: accuracies are drawn in %."""
  if "accuracy" in metric:
    return 100.0, f"{metric} (%)"
  return 1.0, metric


def plot(report, path: str, log_steps: bool = False,
         ymin: Optional[float] = None) -> None:
  """All members' accuracy (in %) against steps on one plot, with the target as a line;
  the legend beside the axes, not over the curves."""
  plt = _pyplot()
  k, ylabel = _scale(report.metric)
  fig, ax = plt.subplots(figsize=(10, 5))
  visible = lambda curve: [(s, a) for s, a in curve if s > 0 or not log_steps]  # log: no 0
  grouped = set()
  for g in report.seed_groups:  # seeds of one setting: their mean, shaded min to max
    grouped.update(g.members)
    points = visible(g.mean_curve)
    if points:
      steps = [s for s, _ in points]
      by_step = [dict(report.curves[n]) for n in g.members]
      line, = ax.plot(steps, [k * a for _, a in points], marker=".",
                      label=f"{g.label} (mean of {len(g.members)} seeds)")
      ax.fill_between(steps, [k * min(d[s] for d in by_step) for s in steps],
                      [k * max(d[s] for d in by_step) for s in steps],
                      color=line.get_color(), alpha=0.2, lw=0)
  for name, curve in report.curves.items():
    points = visible(curve)
    if points and name not in grouped:
      steps, accs = zip(*points)
      ax.plot(steps, [k * a for a in accs], marker=".", label=name)
  ax.axhline(k * report.target, color="gray", ls="--", lw=1,
             label=f"target {100 * report.target:.2f}%")
  if log_steps:
    ax.set_xscale("log")
  title = "Accuracy vs. training steps (cf. the paper's Figure 2)"
  if report.note:
    title += "\n" + report.note
  if ymin is not None:  # e.g. 0.95: the top of the curves, where the runs differ
    top = max([ymin] + [a for c in report.curves.values() for _, a in c])
    ax.set_ylim(k * ymin, k * (top + 0.05 * (top - ymin) + 1e-3))
    title += f"\naxis from {k * ymin:g}{'%' if k == 100 else ''}: lower values are cut off"
  ax.set(xlabel="training steps" + (" (log scale)" if log_steps else ""), ylabel=ylabel,
         title=title)
  ax.grid(True, alpha=0.3)
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def x_plot_name(report) -> str:
  return f"accuracy_vs_{report.x.split('.')[-1]}.png"


def plot_by_x(report, path: str, log_x: bool = False) -> None:
  """Final accuracy against the x field, one line per series; bars span the seeds."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 4.5))
  k, ylabel = _scale(report.metric)
  for label, points in report.by_x.items():
    xs = [p.x for p in points]
    ys = [k * p.final_accuracy.mean for p in points]
    err = [[k * (p.final_accuracy.mean - p.final_accuracy.low) for p in points],
           [k * (p.final_accuracy.high - p.final_accuracy.mean) for p in points]]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
  if log_x:
    ax.set_xscale("log", base=2 if all(float(p.x).is_integer() for ps in report.by_x.values()
                                       for p in ps) else 10)
  low = ax.get_ylim()[0]
  ax.set(xlabel=report.x + (" (log scale)" if log_x else ""),
         ylabel=f"final {ylabel}" + (f"\naxis from {low:.3g}, not 0" if low > 0 else ""))
  ax.set_title(f"Accuracy vs. {report.x}" + (f"\n{report.note}" if report.note else ""),
               fontsize="medium")
  ax.grid(True, alpha=0.3)
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_recipes(claims: dict, path: str) -> None:
  """Figure 2 from a claims.json (scripts/claims.py): each recipe's mean test accuracy
  over its seeds, shaded min to max, against steps; T_max and the lower targets as
  lines. Left: the whole accuracy axis; right: its top, said so on the panel."""
  from bn_inception import recipe_claims
  from bn_inception.report_runs import mean_curve
  plt = _pyplot()
  curves = claims["curves"]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
  targets = [t["target"] for t in claims.get("speed_ups", {}).get("targets", [])]
  tops = []
  for label, members in recipe_claims.recipes(curves).items():
    by_step = [dict(map(tuple, curves[m])) for m in members]
    steps, mean = zip(*((s, 100 * a) for s, a in mean_curve([curves[m] for m in members])))
    low = [100 * min(d[s] for d in by_step) for s in steps]
    high = [100 * max(d[s] for d in by_step) for s in steps]
    tops.append(max(high))
    for ax in axes:
      line, = ax.plot(steps, mean, marker=".", ms=3,
                      label=f"{recipe_claims.LABELS.get(label, label)} ({len(members)} seeds)")
      ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, lw=0)
  for ax in axes:
    for i, t in enumerate(targets):
      ax.axhline(100 * t, color="gray", ls=("--", ":", "-.")[min(i, 2)], lw=1,
                 label=("T_max" if i == 0 else f"T_max {100 * (t - targets[0]):+.0f} pt")
                 + f" = {100 * t:.2f}%")
    ax.set(xlabel="training steps", ylabel="test accuracy (%)")
    ax.grid(True, alpha=0.3)
  bottom = (100 * targets[0] - 8) if targets else max(tops) - 10
  axes[1].set_ylim(bottom, max(tops) + 1)
  axes[0].set_title("whole axis")
  axes[1].set_title(f"zoom: the top of the axis ({bottom:.0f}% and up)")
  note = claims.get("note", "")
  fig.suptitle("Test accuracy vs. training steps (cf. the paper's Figure 2)"
               + (f"\n{note}" if note else ""), fontsize="medium")
  axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
