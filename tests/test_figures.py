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
