"""The committed figures of docs/reproduction.md redraw from their committed raw results."""

import json
from pathlib import Path

import pytest

from bn_inception import figures

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reproduction"


def test_figure_1_redraws_from_its_committed_series_and_matches_the_table(tmp_path):
  series = json.loads((DOCS / "fig1.json").read_text())
  # docs/reproduction.md section 1's table: 98.18% with BN, 97.04% without, at 50k steps.
  assert series["bn"]["steps"][-1] == series["no_bn"]["steps"][-1] == 50_000
  assert 100 * series["bn"]["test_accuracy"][-1] == pytest.approx(98.18, abs=0.005)
  assert 100 * series["no_bn"]["test_accuracy"][-1] == pytest.approx(97.04, abs=0.005)
  png = figures.draw_fig1(series, str(tmp_path / "fig1.png"))
  assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Sweep reports committed with their curves, and the figure of reproduction.md each draws.
SWEEP_FIGURES = {
    "bn_group_size_report.json": ("bn_group_size.png", "accuracy_vs_group_size.png", ["--log_x"]),
    "lr_grid_report.json": ("lr_grid.png", "accuracy_vs_learning_rate.png", ["--log_x"]),
    "sigmoid_no_bn_report.json": ("sigmoid_no_bn.png", "accuracy_vs_steps.png", []),
    "twin_seeds_report.json": ("twin_seeds.png", "accuracy_vs_steps.png", ["--ymin=0.95"]),
}


@pytest.mark.parametrize("name", sorted(SWEEP_FIGURES))
def test_sweep_figures_redraw_from_their_committed_reports(name, tmp_path):
  import subprocess
  import sys
  from bn_inception import report
  data = json.loads((DOCS / name).read_text())
  r = report.from_json(data)
  for m in r.summaries:  # each row of the table is what its committed curve says
    curve = r.curves[m.name]
    assert m.final_accuracy == curve[-1][1] and m.max_accuracy == max(a for _, a in curve)
  figure, drawn, flags = SWEEP_FIGURES[name]
  proc = subprocess.run([sys.executable, "scripts/report.py", f"--redraw={DOCS / name}",
                         f"--output_dir={tmp_path}", *flags], capture_output=True, text=True,
                        cwd=DOCS.parents[1])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / drawn).read_bytes() == (DOCS / figure).read_bytes()


def test_ensemble_figure_redraws_from_its_committed_evaluation_reports(tmp_path):
  reports = {f"time scale {label}": json.loads(
      (DOCS / f"twin_ensemble_{scale}_eval_report.json").read_text())
      for label, scale in (("2,500", "2500"), ("10,677", "10677"))}
  # Section 5's own-seed rows: best member, ensemble, from the 1-crop results.
  for label, best, ensemble in (("time scale 2,500", 0.82, 0.66),
                                ("time scale 10,677", 1.68, 1.34)):
    (result,) = [r for r in reports[label]["results"] if r["crops"] == 1]
    errors = {r["model"]: r["top1_error"] for r in result["rows"]}
    assert errors.pop("ensemble") == pytest.approx(ensemble, abs=0.005)
    assert min(errors.values()) == pytest.approx(best, abs=0.005) and len(errors) == 6
  png = figures.draw_member_errors(reports, str(tmp_path / "twin_ensemble.png"),
                                   note="MNIST twin's BN-x30, each member its own seed")
  assert Path(png).read_bytes() == (DOCS / "twin_ensemble.png").read_bytes()
