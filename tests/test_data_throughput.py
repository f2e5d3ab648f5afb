"""scripts/data_throughput.py's measurements (bn_inception/data/throughput.py): what
--compare reports and how its numbers relate, the plain reference pipeline's images,
and the stage table. Rates themselves are benchmarks (docs/data.md), not tested."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bn_inception import schema
from bn_inception.data import prepare, throughput

LEVELS = (40, 90, 140, 190, 230)


@pytest.fixture(scope="module")
def folder_and_prepared(tmp_path_factory):
  """5 classes, one flat-grey JPEG each (sizes vary), and the same prepared at side 24."""
  base = tmp_path_factory.mktemp("throughput")
  for k, level in enumerate(LEVELS):
    os.makedirs(base / "src" / f"n{k:08d}")
    Image.new("RGB", (30 + 9 * k, 60 - 5 * k), (level,) * 3).save(
        base / "src" / f"n{k:08d}" / "a.JPEG", quality=95)
  prepare.prepare(str(base / "src"), str(base / "out"), side=24, shards=2, workers=1)
  return str(base / "src"), str(base / "out")


def config(src):
  return schema.imagenet_data_config(train_dir=src, image_size=16)


def test_compare_reports_three_rates_per_core_and_their_ratios(folder_and_prepared, capsys):
  src, out = folder_and_prepared
  result = throughput.compare(config(src), out, rounds=2, batch_size=4, num_batches=2,
                              split="train")
  cores = len(os.sched_getaffinity(0))
  assert result["cores"] == cores and result["rounds"] == 2
  for name in ("full_size", "prepared", "reference"):
    rates = result[name]["rounds"]
    assert len(rates) == 2 and all(r > 0 for r in rates)
    assert result[name]["images_per_s"] == pytest.approx(np.mean(rates), abs=0.06)
    assert result[name]["per_core"] == pytest.approx(np.mean(rates) / cores, abs=0.06)
  assert result["ratio"] == round(result["prepared"]["images_per_s"]
                                  / result["full_size"]["images_per_s"], 2)
  assert result["full_size_vs_reference"] == round(
      result["full_size"]["images_per_s"] / result["reference"]["images_per_s"], 2)
  for key, (a, b) in (("ratio", ("prepared", "full_size")),
                      ("full_size_vs_reference", ("full_size", "reference"))):
    assert result[key + "_rounds"] == [round(x / y, 2) for x, y in
                                       zip(result[a]["rounds"], result[b]["rounds"])]
  printed = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
  names = ["full_size", "prepared", "reference"]
  assert printed[:3] == [[n, "warm-up"] for n in names]
  assert [p[0] for p in printed[3:]] == names * 2  # then alternately
  evaluation = throughput.compare(config(src), out, 1, 4, 1, "eval")
  assert "reference" not in evaluation and evaluation["split"] == "eval"


def test_reference_reads_every_file_of_an_epoch_at_the_training_size(folder_and_prepared):
  src, _ = folder_and_prepared
  paths = sorted(os.path.join(src, d, "a.JPEG") for d in os.listdir(src))
  batches = throughput.reference_batches(paths, config(src), batch_size=5)
  batch = next(batches)
  assert batch["image"].shape == (5, 16, 16, 3) and batch["image"].dtype == np.uint8
  # A flat image stays flat through crop, resize and flip: each file's level, once.
  levels = batch["image"].reshape(5, -1).mean(axis=1)
  np.testing.assert_allclose(sorted(levels), LEVELS, atol=3)


def test_stage_table_has_every_stage_and_the_last_line_is_json(folder_and_prepared):
  src, out = folder_and_prepared
  proc = subprocess.run(
      [sys.executable, "scripts/data_throughput.py", f"--data.train_dir={src}",
       "--data.image_size=16", "--batch_size=4", "--num_batches=2", "--stages",
       f"--compare={out}"], capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  table = json.loads(proc.stdout.strip().splitlines()[-1])
  stages = ["crop window", "entropy decoding", "+ inverse DCT of the window", "+ resize",
            "+ flip, uint8", "whole-image decode (for comparison)"]
  assert list(table["full_size"]) == ["file read", *stages, "bytes per image"]
  assert list(table["prepared"]) == ["fetch (Python, one thread)", *stages, "bytes per image"]
  assert all(v > 0 for part in ("full_size", "prepared") for v in table[part].values())
  assert table["prepared"]["bytes per image"] < table["full_size"]["bytes per image"]
