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
