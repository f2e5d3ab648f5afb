"""Figure 1 of the paper from the metrics the training loop wrote (metrics.jsonl), and
section 5's member-and-ensemble errors from evaluation reports (docs/reproduction.md)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

from bn_inception.workdir import read_metrics

PROBE = "eval/probe/last_hidden_input"
FIG1_KEYS = {"test_accuracy": "eval/accuracy", "p15": f"{PROBE}/p15",
             "p50": f"{PROBE}/p50", "p85": f"{PROBE}/p85"}


def fig1_series(workdir: str) -> Dict[str, list]:
  """{"steps": [...], "test_accuracy": [...], "p15": ..., "p50": ..., "p85": ...}."""
  rows = read_metrics(workdir)
  steps = [s for s, r in rows.items() if all(k in r for k in FIG1_KEYS.values())]
  out = {"steps": steps}
  for key, metric in FIG1_KEYS.items():
    out[key] = [rows[s][metric] for s in steps]
  return out


def write_fig1(series: Dict[str, Dict[str, list]], out_dir: str) -> tuple[str, str]:
  """fig1.json (the raw series) and fig1.png drawn from it (`draw_fig1`)."""
  json_path = os.path.join(out_dir, "fig1.json")
  with open(json_path, "w") as f:
    json.dump(series, f)
  png_path = os.path.join(out_dir, "fig1.png")
  draw_fig1(series, png_path)
  return json_path, png_path


def draw_fig1(series: Dict[str, Dict[str, list]], png_path: str) -> str:
  """Figure 1 from its series (a fig1.json): (a) test accuracy in %; (b, c) the
  15/50/85th percentiles of a last-hidden-layer sigmoid's input."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  styles = {"bn": ("tab:blue", "With BN"), "no_bn": ("tab:red", "Without BN")}
  for name, s in series.items():
    color, label = styles.get(name, ("k", name))
    axes[0].plot(s["steps"], [100 * a for a in s["test_accuracy"]], color=color, label=label)
  axes[0].set(title="(a) Test accuracy (axis from 70%)", xlabel="training steps",
              ylabel="test accuracy (%)")
  axes[0].set_ylim(70, 100)
  axes[0].legend(loc="lower right")
  for ax, name, title in ((axes[1], "no_bn", "(b) Without BN"), (axes[2], "bn", "(c) With BN")):
    if name not in series:
      continue
    s = series[name]
    color = styles[name][0]
    ax.fill_between(s["steps"], s["p15"], s["p85"], color=color, alpha=0.2,
                    label="15th-85th percentile")
    ax.plot(s["steps"], s["p50"], color=color, label="median")
    ax.plot(s["steps"], s["p15"], color=color, lw=0.7)
    ax.plot(s["steps"], s["p85"], color=color, lw=0.7)
    ax.set(title=f"{title}: input to a last-hidden-layer sigmoid", xlabel="training steps",
           ylabel="sigmoid input")
    ax.legend(loc="upper right")
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  plt.close(fig)
  return png_path


def write_example_grid(rows: Dict[str, Any], path: str, scale: float = 0.9) -> str:
  """A PNG grid of grey images: one labelled row per entry of `rows` (uint8 [n, h, w])."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  n = max(len(images) for images in rows.values())
  fig, axes = plt.subplots(len(rows), n, figsize=(n * scale, len(rows) * scale + 0.2),
                           squeeze=False)
  for r, (label, images) in enumerate(rows.items()):
    for c, ax in enumerate(axes[r]):
      ax.set_xticks([]), ax.set_yticks([])
      if c < len(images):
        ax.imshow(images[c], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
      if c == 0:
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
  fig.tight_layout(pad=0.3)
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def draw_member_errors(reports: Dict[str, Dict[str, Any]], png_path: str,
                       crops: int = 1, note: str = "") -> str:
  """Section 5's figure: each member's and the ensemble's top-1 error, one bar group
  per network and one bar per evaluation report (label -> an evaluate.py report.json),
  from each report's `crops`-crop result."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(9, 3.8))
  width = 0.8 / len(reports)
  names = None
  for i, (label, report) in enumerate(reports.items()):
    (result,) = [r for r in report["results"] if r["crops"] == crops]
    rows = result["rows"]
    names = names or [r["model"] for r in rows]
    if [r["model"] for r in rows] != names:
      raise ValueError(f"{label}: its networks differ from the first report's.")
    ax.bar([j + width * i for j in range(len(rows))], [r["top1_error"] for r in rows],
           width, label=label)
  ax.set_xticks([j + width * (len(reports) - 1) / 2 for j in range(len(names))], names,
                rotation=20, fontsize=8)
  examples = rows[0]["examples"]
  ax.set(ylabel=f"top-1 error (%), {examples:,} test examples",
         title=f"Six members and their ensemble ({crops} crop{'s' if crops > 1 else ''})"
         + (f"\n{note}" if note else ""))
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
  fig.tight_layout()
  fig.savefig(png_path, dpi=80)
  plt.close(fig)
  return png_path
