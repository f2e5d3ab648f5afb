"""Offline evaluation (evaluators/multicrop.py, ensemble.py): crop geometry, top-k,
probability averaging, exact counting."""

import dataclasses
import fractions
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from bn_inception import (config_checks, config_upgrade, ensemble, eval_report, paired,
                          progress, schema, sharding, train)
from bn_inception.evaluators import multicrop as multicrop_eval
from bn_inception.evaluators import tally as tally_lib
from bn_inception.workdir import CheckpointError
from bn_inception.data import (DataError, augment, default_data_root, image_readers, in_memory,
                               multicrop)
from configs import mnist_fig1

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_SAMPLE = os.path.join(default_data_root(), "imagenet_sample")


# --------------------------------------------------------------------------- geometry


def test_144_crop_plan_matches_hand_computed_boxes_landscape():
  # A 500 x 375 (w x h) image: shorter side 375 -> 256, 288, 320, 352; the longer
  # side becomes round(500 * s / 375) = 341, 384, 427, 469.
  plan = multicrop.crop_plan(375, 500, 144, 224)
  assert plan.shape == (144, 7)
  widths = {256: 341, 288: 384, 320: 427, 352: 469}
  square_x = {256: (0, 42, 85), 288: (0, 48, 96), 320: (0, 53, 107), 352: (0, 58, 117)}
  expected = []
  for s in (256, 288, 320, 352):
    d = s - 224
    for sx in square_x[s]:
      for y, x, h, w in [(0, 0, 224, 224), (0, d, 224, 224), (d, 0, 224, 224),
                         (d, d, 224, 224), (d // 2, d // 2, 224, 224), (0, 0, s, s)]:
        for flip in (0, 1):
          expected.append((s, widths[s], y, sx + x, h, w, flip))
  np.testing.assert_array_equal(plan, expected)
  # A few rows spelled out: scale 320, right square (x 107), bottom-right corner, mirrored.
  assert tuple(plan[2 * 36 + 2 * 12 + 3 * 2 + 1]) == (320, 427, 96, 203, 224, 224, 1)
  # scale 256, centre square, whole square resized, not mirrored.
  assert tuple(plan[1 * 12 + 5 * 2]) == (256, 341, 0, 42, 256, 256, 0)
  assert len({tuple(r) for r in plan}) == 144
  assert (plan[:, 2] + plan[:, 4] <= plan[:, 0]).all()
  assert (plan[:, 3] + plan[:, 5] <= plan[:, 1]).all()


def test_144_crop_plan_portrait_uses_top_middle_bottom_squares():
  plan = multicrop.crop_plan(500, 375, 144, 224)
  first_scale = plan[:36]
  assert set(map(tuple, first_scale[:, :2])) == {(341, 256)}
  # The whole-square rows (h == 256) of the three squares start at y = 0, 42, 85.
  whole = first_scale[(first_scale[:, 4] == 256) & (first_scale[:, 6] == 0)]
  np.testing.assert_array_equal(whole[:, 2:4], [[0, 0], [42, 0], [85, 0]])


def test_144_crop_sizes_scale_with_the_model_resolution():
  # At 32 px: scales round(32 * (256, 288, 320, 352) / 224) = 37, 41, 46, 50; crops 32.
  plan = multicrop.crop_plan(375, 500, 144, 32)
  assert sorted({int(r[0]) for r in plan}) == [37, 41, 46, 50]
  assert set(plan[:, 4]) == {32, 37, 41, 46, 50}


def test_10_crop_plan_matches_hand_computed_boxes():
  # Shorter side 375 -> 224 / 0.875 = 256, longer 341; corners and centre of 224.
  plan = multicrop.crop_plan(375, 500, 10, 224, 0.875)
  boxes = [(0, 0), (0, 117), (32, 0), (32, 117), (16, 58)]
  expected = [(256, 341, y, x, 224, 224, flip) for flip in (0, 1) for y, x in boxes]
  np.testing.assert_array_equal(plan, expected)


def test_1_crop_is_the_pipelines_central_crop():
  # round(375 * 0.875) = 328: the square [23, 351) x [86, 414) of the original.
  np.testing.assert_array_equal(multicrop.crop_plan(375, 500, 1, 224, 0.875),
                                [(375, 500, 23, 86, 328, 328, 0)])
  with pytest.raises(ValueError, match="crop scheme"):
    multicrop.crop_plan(375, 500, 12, 224)


SIDES = (1, 2, 3, 7, 8, 15, 16, 33, 64, 99, 224, 255, 256, 333, 375, 500, 501, 1023)


def test_1_crop_box_is_the_training_loops_eval_box_for_every_shape():
  # Hand-computed: side = round(shorter * fraction) exactly (halves to even; these
  # fractions are exact in binary), at least 1; the offsets round down.
  window = tf.function(augment.central_crop_window, reduce_retracing=True)
  for fraction in (0.875, 0.5, 0.625, 1.0, 5 / 32):
    for h in SIDES:
      for w in SIDES:
        side = max(1, round(fractions.Fraction(min(h, w)) * fractions.Fraction(fraction)))
        box = ((h - side) // 2, (w - side) // 2, side, side)
        assert tuple(window(tf.constant([h, w]), fraction).numpy()) == box, (h, w, fraction)
        np.testing.assert_array_equal(multicrop.crop_plan(h, w, 1, 224, fraction),
                                      [(h, w, *box, 0)], err_msg=f"{(h, w, fraction)}")
  # One rule for a fraction not exact in binary: float32 arithmetic, whose 45 x 0.7 is
  # 31.5 (float64's is 31.499...), rounded to even.
  assert multicrop.central_box(45, 60, 0.7) == (6, 14, 32, 32)
  assert tuple(window(tf.constant([45, 60]), 0.7).numpy()) == (6, 14, 32, 32)


def test_1_crop_stream_cuts_the_plans_box():
  rng = np.random.default_rng(0)
  for h, w, fraction in ((45, 60, 0.7), (7, 3, 0.875), (375, 500, 0.875), (1, 9, 0.5)):
    image = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    images = in_memory.ArrayImageSet(image, np.array([0]), "one")
    (crop,) = multicrop.crop_dataset(images, np.array([0]), 1, 8, fraction).as_numpy_iterator()
    np.testing.assert_array_equal(crop["image"], _crops(image[0], 1, 8, fraction)[0])


def _crops(image, crops, size, fraction=0.875):
  plan = multicrop.crop_plan(image.shape[0], image.shape[1], crops, size, fraction)
  return np.stack([multicrop.crop_image(tf.constant(image), row, size).numpy() for row in plan])


def test_crops_equal_resize_then_slice():
  y, x = np.mgrid[:375, :500]
  smooth = 127 + 100 * np.sin(x / 23.0)[..., None] * np.cos(y[..., None] / 17.0 + np.arange(3))
  image = np.round(smooth).astype(np.uint8)
  out = _crops(image, 144, 224)
  assert out.shape == (144, 224, 224, 3) and out.dtype == np.uint8
  plan = multicrop.crop_plan(375, 500, 144, 224)
  resized = {}
  for k in (0, 7, 67, 100, 143):  # corner/centre crops: resize, slice, mirror
    rh, rw, y, x, h, w, flip = plan[k]
    if (rh, rw) not in resized:
      resized[(rh, rw)] = tf.image.resize(tf.cast(image, tf.float32), [rh, rw]).numpy()
    ref = resized[(rh, rw)][y:y + h, x:x + w]
    if h != 224:  # the whole square: resized to 224 (one resampling of the original)
      continue
    ref = ref[:, ::-1] if flip else ref
    assert np.abs(out[k].astype(float) - np.round(ref)).max() <= 1
  # The whole-square crop is the square resized to 224, up to the extra blur of two steps.
  rh, rw, y, x, h, w, _ = plan[10]
  two_step = tf.image.resize(resized[(rh, rw)][y:y + h, x:x + w], [224, 224]).numpy()
  assert np.abs(out[10].astype(float) - two_step).mean() < 0.5


@pytest.mark.skipif(not os.path.isdir(IMAGENET_SAMPLE), reason="imagenet_sample not present")
def test_1_crop_equals_the_imagenet_pipelines_eval_image():
  files = sorted(glob.glob(os.path.join(IMAGENET_SAMPLE, "*", "*")))[::125]
  for f in files:
    data = tf.io.read_file(f)
    reference = augment.eval_image(data, image_size=224, crop_fraction=0.875).numpy()
    ours = _crops(image_readers.decode_image(data).numpy(), 1, 224)[0]
    diff = np.abs(ours.astype(int) - reference)
    assert diff.max() <= 4 and diff.mean() < 0.01, f  # JPEG window decode vs full decode


# --------------------------------------------------------------------------- top-k


def _numpy_topk_correct(probs, labels, k):
  """Independent reference: correct iff fewer than k OTHER classes score >= the label."""
  out = []
  for p, y in zip(probs, labels):
    rivals = sum(1 for j, v in enumerate(p) if j != y and v >= p[y])
    out.append(rivals < k)
  return np.asarray(out)


def test_topk_error_against_numpy_including_ties_and_large_k():
  rng = np.random.default_rng(1)
  # Scores on a coarse grid: many exact ties, including with the label.
  probs = rng.integers(0, 4, (300, 7)).astype(np.float32)
  probs[:20] = 1.0  # constant outputs: never correct at k < 7
  labels = rng.integers(0, 7, 300)
  tally = tally_lib.ErrorTally(num_rows=1, num_classes=7, chunk=64)
  for start in range(0, 300, 50):
    tally.add(probs[None, start:start + 50], labels[start:start + 50])
  correct, nonfinite, count = tally.totals()
  assert count == 300 and nonfinite[0] == 0
  for i, k in enumerate(tally_lib.TOP_K):
    assert correct[0, i] == _numpy_topk_correct(probs, labels, k).sum()
  assert correct[0, 0] < 300 - 20  # the constant rows are wrong at top-1
  # k larger than the number of classes: everything is correct.
  small = tally_lib.ErrorTally(1, 3)
  small.add(np.ones((1, 4, 3), np.float32), np.array([0, 1, 2, 0]))
  correct, _, count = small.totals()
  assert count == 4 and correct[0, 1] == 4 and correct[0, 0] == 0


NONFINITE_ROWS = np.array([[np.nan] * 4,                    # all NaN
                           [0.1, np.nan, 0.2, 0.3],         # NaN beside the label's score
                           [np.inf, 0.0, 0.0, 0.0],         # inf on the label itself
                           [0.0, -np.inf, 0.0, 0.0],        # -inf elsewhere
                           [0.9, 0.05, 0.03, 0.02]], np.float32)  # finite, correct


@pytest.mark.parametrize("k", [1, 5])
def test_nonfinite_scores_count_as_wrong(k):
  """NaN compares false: counted by comparisons alone, a NaN row would be 'correct'."""
  from bn_inception import metrics
  labels = np.zeros(5, np.int32)
  got = np.asarray(metrics.topk_correct(jnp.asarray(NONFINITE_ROWS), jnp.asarray(labels), k))
  assert got.tolist() == [0, 0, 0, 0, 1]
  assert np.asarray(metrics.nonfinite_rows(jnp.asarray(NONFINITE_ROWS))).tolist() == \
      [True, True, True, True, False]
  # The training loop's eval metrics: 1 of 5 right, 4 of 5 non-finite.
  out = metrics.eval_outputs(jnp.asarray(NONFINITE_ROWS), jnp.asarray(labels))
  assert out["accuracy"].tolist() == out["top5_accuracy"].tolist() == [0, 0, 0, 0, 1]
  assert out["nonfinite_fraction"].tolist() == [1, 1, 1, 1, 0]


def test_evaluator_counts_nonfinite_outputs_as_errors_and_reports_them():
  tally = tally_lib.ErrorTally(num_rows=2, num_classes=4, chunk=8)
  finite = np.tile(NONFINITE_ROWS[-1:], (5, 1))
  tally.add(np.stack([NONFINITE_ROWS, finite]), np.zeros(5, np.int32))
  correct, nonfinite, count = tally.totals()
  assert count == 5 and nonfinite.tolist() == [4, 0]
  assert correct.tolist() == [[1, 1], [5, 5]]
  images = in_memory.ArrayImageSet(np.zeros((6, 4, 4, 1), np.uint8), np.zeros(6, int), "zeros")
  nan_member = _member("nan", lambda x: jnp.full((len(x), 3), jnp.nan))
  rows = _evaluate([nan_member], images, 1, multicrop_eval.Geometry(4), batch_size=4)["rows"]
  assert rows[0]["top1_error"] == rows[0]["top5_error"] == 100.0
  assert rows[0]["nonfinite"] == 6
  assert "| 6 |" in eval_report.format_table(rows).splitlines()[-1]


# --------------------------------------------------------------------------- fake members


def _member(name, logits_fn, num_classes=3, size=4, channels=1):
  """A member whose logits are logits_fn(float images [B, h, w, c])."""
  config = ml_collections.ConfigDict({"model": {"name": "fake"}, "data": {}})
  predict = jax.jit(lambda images: jax.nn.softmax(logits_fn(images.astype(jnp.float32)), -1))
  return ensemble.Member(name=name, workdir=f"/fake/{name}", step=0, config=config,
                         num_classes=num_classes, image_shape=(size, size, channels),
                         predict=predict)


def _evaluate(members, images, crops, geometry, batch_size):
  """The numeric core on the members' predict_fns (it sees nothing else of them)."""
  context = multicrop_eval.Context({m.name: m.predict for m in members}, images, geometry,
                                   members[0].num_classes, sharding.create_mesh())
  return multicrop_eval.Evaluator(context, [crops], batch_size).evaluate(crops)


def _linear_member(name, seed, num_classes=5, size=4, channels=1):
  w = jax.random.normal(jax.random.key(seed), (size * size * channels, num_classes))
  return _member(name, lambda x: (x.reshape(len(x), -1) / 255.0) @ w * 3.0, num_classes, size,
                 channels)


def _random_images(n, h=8, w=10, seed=0, num_classes=5):
  rng = np.random.default_rng(seed)
  return in_memory.ArrayImageSet(rng.integers(0, 256, (n, h, w, 1), np.uint8),
                                 rng.integers(0, num_classes, n), "random")


def _numpy_reference(members, images, crops, size, fraction):
  """Crop every example, run every member, average probabilities: top-k correct per row."""
  rows = []
  for m in members:
    means = []
    for image in images.images:
      crop = _crops(image, crops, size, fraction)
      means.append(np.asarray(m.predict(jnp.asarray(crop))).mean(0))
    rows.append(np.stack(means))
  if len(members) > 1:
    rows.append(np.mean(rows, 0))
  return [[_numpy_topk_correct(r, images.labels, k).sum() for k in tally_lib.TOP_K]
          for r in rows]


@pytest.mark.parametrize("crops", [1, 10, 144])
def test_every_example_counted_once_whatever_the_batch_size(crops):
  images = _random_images(13)
  members = [_linear_member("a", 0), _linear_member("b", 1)]
  geometry = multicrop_eval.Geometry(image_size=4, crop_fraction=0.5)
  expected = _numpy_reference(members, images, crops, 4, 0.5)
  for batch in (7, 64, 13 * crops + 5):
    result = _evaluate(members, images, crops, geometry, batch_size=batch)
    assert [r["model"] for r in result["rows"]] == ["a", "b", "ensemble"]
    for row, (c1, c5) in zip(result["rows"], expected):
      assert row["examples"] == 13
      assert row["top1_error"] == pytest.approx(100 * (1 - c1 / 13))
      assert row["top5_error"] == pytest.approx(100 * (1 - c5 / 13))


def test_per_example_correctness_is_in_example_order_whatever_the_batch_size():
  """Each row's top-1 correctness per example (correct.npz, for paired tests): equal to
  the NumPy reference example by example, its sum the row's top-1 count."""
  images = _random_images(13, seed=5)
  members = [_linear_member("a", 2), _linear_member("b", 3)]
  geometry = multicrop_eval.Geometry(image_size=4, crop_fraction=0.5)
  reference = {}
  for m in members:
    means = np.stack([np.asarray(m.predict(jnp.asarray(_crops(im, 10, 4, 0.5)))).mean(0)
                      for im in images.images])
    reference[m.name] = _numpy_topk_correct(means, images.labels, 1)
  reference["ensemble"] = _numpy_topk_correct(
      np.mean([np.stack([np.asarray(m.predict(jnp.asarray(_crops(im, 10, 4, 0.5)))).mean(0)
                         for im in images.images]) for m in members], 0), images.labels, 1)
  assert 0 < sum(map(np.sum, reference.values())) < 3 * 13  # both outcomes occur
  for batch in (7, 64):
    context = multicrop_eval.Context({m.name: m.predict for m in members}, images, geometry,
                                     5, sharding.create_mesh())
    evaluator = multicrop_eval.Evaluator(context, [10], batch)
    rows = evaluator.evaluate(10)["rows"]
    got = evaluator.per_example[10]
    assert list(got) == ["a", "b", "ensemble"]
    for row in rows:
      assert got[row["model"]].tolist() == reference[row["model"]].tolist()
      assert row["top1_error"] == pytest.approx(100 * (1 - got[row["model"]].mean()))


def test_a_tally_that_counts_an_example_twice_refuses_per_example_results():
  tally = tally_lib.ErrorTally(1, 3, num_examples=4)
  probs = np.eye(3, dtype=np.float32)[None, [0, 1, 2, 0]]
  tally.add(probs, np.array([0, 1, 0, 0]), positions=np.array([0, 1, 2, 2]))
  with pytest.raises(RuntimeError, match="2 examples were not counted exactly once"):
    tally.per_example()
  with pytest.raises(ValueError, match="positions"):
    tally.add(probs, np.zeros(4, int))


def test_ensemble_of_one_member_twice_equals_it_alone():
  images = _random_images(40, seed=3)
  member = _linear_member("a", 7)
  geometry = multicrop_eval.Geometry(image_size=4, crop_fraction=0.5)
  alone = _evaluate([member], images, 10, geometry, batch_size=32)["rows"]
  twin = dataclasses.replace(member, name="a again")
  twice = _evaluate([member, twin], images, 10, geometry, batch_size=32)["rows"]
  assert len(alone) == 1 and twice[2]["model"] == "ensemble"
  for key in ("top1_error", "top5_error", "examples"):
    assert twice[2][key] == alone[0][key] == twice[0][key]
  assert 0 < alone[0]["top1_error"] < 100


def test_members_are_averaged_as_probabilities_not_logits():
  # Label 1. Member A is overconfident in class 0; B and C prefer class 1.
  # Mean logits [33.3, 6.7, 0] pick class 0; mean probabilities [1/3, 2/3, 0] pick 1.
  logits = {"A": [100.0, 0.0, 0.0], "B": [0.0, 10.0, 0.0], "C": [0.0, 10.0, 0.0]}
  members = [_member(n, lambda x, l=l: jnp.broadcast_to(jnp.asarray(l), (len(x), 3)))
             for n, l in logits.items()]
  assert np.argmax(np.mean(list(logits.values()), 0)) == 0
  images = in_memory.ArrayImageSet(np.zeros((6, 4, 4, 1), np.uint8), np.ones(6, int), "ones")
  rows = _evaluate(members, images, 1, multicrop_eval.Geometry(4), batch_size=4)["rows"]
  errors = {r["model"]: r["top1_error"] for r in rows}
  assert errors == {"A": 100.0, "B": 0.0, "C": 0.0, "ensemble": 0.0}


def test_mcnemar_p_by_hand():
  assert paired.mcnemar_p(0, 5) == pytest.approx(2 / 32)       # 2 * P(X <= 0), X ~ B(5, 1/2)
  assert paired.mcnemar_p(7, 2) == pytest.approx(2 * (1 + 9 + 36) / 512)
  assert paired.mcnemar_p(3, 3) == paired.mcnemar_p(0, 0) == 1.0


def test_ensemble_is_compared_with_its_best_member_on_the_same_examples():
  """Against numpy: each network's top-1 right/wrong per example, the best member, the
  two disagreement counts, and the exact binomial tail summed by hand."""
  n, classes = 200, 3
  rng = np.random.default_rng(5)
  labels = rng.integers(0, classes, n)
  tables = [rng.normal(0, 1, (n, classes)) + 1.5 * q * np.eye(classes)[labels]
            for q in (0.6, 1.0, 0.3)]  # the second member is the most often right
  # Example i is a constant image of value i: a member looks its logits up by it.
  images = in_memory.ArrayImageSet(np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                                                   (n, 4, 4, 1)).copy(), labels, "indexed")
  members = [_member(f"m{j}", lambda x, t=jnp.asarray(t, jnp.float32):
                     t[jnp.round(x[:, 0, 0, 0]).astype(jnp.int32)], classes)
             for j, t in enumerate(tables)]
  rows = _evaluate(members, images, 1, multicrop_eval.Geometry(4), batch_size=16)["rows"]

  softmax = lambda t: np.exp(t) / np.exp(t).sum(1, keepdims=True)
  right = [np.argmax(softmax(t), 1) == labels for t in tables]
  ensemble = np.argmax(np.mean([softmax(t) for t in tables], 0), 1) == labels
  best = int(np.argmax([r.sum() for r in right]))
  only_ens, only_best = int((ensemble & ~right[best]).sum()), int((right[best] & ~ensemble).sum())
  k, m = min(only_ens, only_best), only_ens + only_best
  p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m)
  assert 0 < m and 0 < p < 1  # the setup is what the comparison is about

  assert [r["model"] for r in rows] == ["m0", "m1", "m2", "ensemble"]
  assert all("against_best_member" not in r for r in rows[:3])
  got = rows[-1]["against_best_member"]
  assert got == {"member": f"m{best}", "only_ensemble_right": only_ens,
                 "only_member_right": only_best, "p_value": pytest.approx(p)}
  assert rows[-1]["top1_error"] == pytest.approx(100 * (1 - ensemble.mean()))
  line = eval_report.against_best_member_line(rows[-1])
  assert f"best member, m{best}" in line and f"right on {only_ens} " in line


def test_crops_are_averaged_as_probabilities_not_logits():
  # An 8x8 image, bright top-left quadrant; 10 crops of 4 from the 8x8 "resized" image
  # (fraction 0.5): the two top-left crops are bright -> class 0 with logit 100, the other
  # eight -> class 1 with logit 10. Mean logits pick class 0, mean probabilities class 1.
  image = np.zeros((1, 8, 8, 1), np.uint8)
  image[0, :4, :4] = 255
  member = _member("m", lambda x: jnp.where(
      (x.mean((1, 2, 3)) > 200)[:, None], jnp.asarray([100.0, 0.0, 0.0]),
      jnp.asarray([0.0, 10.0, 0.0])))
  images = in_memory.ArrayImageSet(image, np.array([1]), "quadrant")
  crops = _crops(image[0], 10, 4, 0.5)
  bright = crops.reshape(10, -1).mean(1) > 200
  assert bright.sum() == 2  # the setup is what the comment says
  rows = _evaluate([member], images, 10, multicrop_eval.Geometry(4, 0.5), batch_size=3)
  assert rows["rows"][0]["top1_error"] == 0.0


def test_an_undecodable_image_is_named(tmp_path):
  from bn_inception.data.imagenet import FolderReader
  paths = []
  for k in range(3):
    path = str(tmp_path / f"img{k}.png")
    data = tf.io.encode_png(np.full((6, 9, 3), 40 * k, np.uint8)).numpy()
    open(path, "wb").write(data if k != 1 else b"not an image")
    paths.append(path)
  images = image_readers.EncodedImageSet(FolderReader(paths, [0, 1, 2], str(tmp_path)), "tmp")
  member = _linear_member("a", 0, num_classes=3, channels=3)
  with pytest.raises(DataError, match="img1.png"):
    _evaluate([member], images, 10, multicrop_eval.Geometry(4, 0.5), batch_size=4)


def test_one_undecodable_search_for_folders_and_tfrecords(tmp_path):
  from bn_inception.data.image_readers import FolderReader, undecodable
  good = [tf.io.encode_png(np.full((5, 7, 3), 9 * k, np.uint8)).numpy() for k in range(4)]
  data = [good[0], b"not an image", good[2], b"\x89PNG broken"]
  paths = [str(tmp_path / f"img{k}.png") for k in range(4)]
  for path, d in zip(paths, data):
    open(path, "wb").write(d)
  reader = FolderReader(paths + [str(tmp_path / "missing.png")], [0] * 5, str(tmp_path))
  found = dict(undecodable(reader, [4, 0, 1, 2, 3]))
  assert list(found) == [4, 1, 3]  # in the order asked; a missing file counts
  assert found[4].startswith("NotFoundError: ") and found[1].startswith("InvalidArgument")
  images = image_readers.EncodedImageSet(reader, "folder")
  assert images.find_undecodable([0, 2, 3, 1]) == f"{paths[3]} ({found[3][:200]})"
  assert images.find_undecodable([0, 2]) is None
  with tf.io.TFRecordWriter(str(tmp_path / "split.tfrecord")) as writer:
    for k, d in enumerate(data):
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[d])),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[k]))}))
          .SerializeToString())
  records = image_readers.TfRecordImageSet([str(tmp_path / "split.tfrecord")], 4, "split")
  assert records.find_undecodable([0, 2, 3]) == f"split record 3 ({found[3][:200]})"
  assert records.find_undecodable([0, 2]) is None


def test_incompatible_members_are_refused_by_name():
  a = _linear_member("a", 0, num_classes=5)
  b = _linear_member("b", 1, num_classes=4)
  with pytest.raises(ValueError, match="member b .*number of classes"):
    ensemble.check_compatible([a, b])
  c = _linear_member("c", 2)
  c.config = ml_collections.ConfigDict({"model": {"name": "mlp"}, "data": {}})
  with pytest.raises(ValueError, match="member c .*architecture"):
    ensemble.check_compatible([a, c])
  d = _linear_member("d", 3, size=8)
  with pytest.raises(ValueError, match="member d .*input shape"):
    ensemble.check_compatible([a, d])


def test_member_specs_and_ensemble_file(tmp_path):
  (tmp_path / "ens.txt").write_text("# two runs\nruns/a\n\nruns/b@300  # a step\n")
  specs = ensemble.read_ensemble_file(str(tmp_path / "ens.txt"), step=None)
  assert specs == [ensemble.MemberSpec(str(tmp_path / "runs/a"), None),
                   ensemble.MemberSpec(str(tmp_path / "runs/b"), 300)]
  assert ensemble.member_names(specs + specs[:1]) == ["a#1", "b@300", "a#2"]


# --------------------------------------------------------------------------- real checkpoints


def _mnist_config():
  c = mnist_fig1.get_config()
  c.model.hidden_units = (32, 32)
  c.bn.momentum = 0.5
  c.train.num_steps = 20
  c.train.eval_every = 0
  c.train.eval_at_start = False
  c.train.log_every = 10
  c.train.checkpoint_every = 20
  return c


@pytest.fixture(scope="module")
def mnist_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("mnist") / "mlp")
  train.train_and_evaluate(_mnist_config(), workdir)
  return workdir


def _numpy_mlp(params, x, stats=None, eps=1e-3):
  """Logits of the BN MLP in float64 NumPy: BN with `stats` (inference), or with each
  layer's batch moments (training mode) when stats is None; returns (logits, the
  per-layer (mean, unbiased var) of the batch)."""
  h, moments = x.reshape(len(x), -1).astype(np.float64), []
  for i in range(len([k for k in params if k.startswith("dense")])):
    h = h @ np.asarray(params[f"dense{i}"]["kernel"], np.float64)
    mean, var = (h.mean(0), h.var(0)) if stats is None else (stats[i][0], stats[i][1])
    moments.append((h.mean(0), h.var(0) * len(h) / (len(h) - 1)))
    bn = params[f"bn{i}"]
    h = (h - mean) / np.sqrt(var + eps) * np.asarray(bn["scale"]) + np.asarray(bn["bias"])
    h = 1 / (1 + np.exp(-h))
  logits = h @ np.asarray(params["logits"]["kernel"], np.float64) + np.asarray(
      params["logits"]["bias"], np.float64)
  return logits, moments


def _top_errors(logits, labels):
  """Percent top-1 / top-5 error (ties count against the label) in NumPy."""
  return [100 * (1 - _numpy_topk_correct(logits, labels, k).mean()) for k in (1, 5)]


def test_mnist_checkpoint_every_digit_once_and_same_member_twice(mnist_workdir, tmp_path):
  out = str(tmp_path / "report")
  spec = ensemble.MemberSpec(mnist_workdir)
  report = ensemble.run([spec, spec], [1], batch_size=768, output_dir=out)  # 768 !| 10,000
  rows = report["results"][0]["rows"]
  assert [r["examples"] for r in rows] == [10_000] * 3
  assert rows[0]["top1_error"] == rows[1]["top1_error"] == rows[2]["top1_error"]
  assert rows[0]["top5_error"] == rows[2]["top5_error"]
  # Independent: the checkpoint's network in float64 NumPy over all 10,000 digits at once.
  member = ensemble.load_member(spec, "m", sharding.create_mesh())
  variables = jax.device_get(member.predict.args[0])
  source = member.source
  params, bn = variables["params"], variables["batch_stats"]
  stats = [(np.asarray(bn[f"bn{i}"]["mean"]), np.asarray(bn[f"bn{i}"]["var"])) for i in (0, 1)]
  x = np.asarray(source.normalize(source.eval_images))
  logits, _ = _numpy_mlp(params, x, stats)
  def near(expected):  # percent, to within one example in 10,000 (float32 vs float64)
    return pytest.approx(expected, abs=0.01 + 1e-9)
  top1, top5 = _top_errors(logits, source.eval_labels)
  assert rows[0]["top1_error"] == near(top1) and rows[0]["top5_error"] == near(top5)
  saved = json.load(open(os.path.join(out, "report.json")))
  assert saved["results"][0]["rows"] == rows and saved["members"][0]["step"] == 20
  table = open(os.path.join(out, "report.md")).read()
  assert "| ensemble | 28 | 1 | 2 |" in table and "10,000" in table
  per_example = eval_report.read_per_example(out, crops=1)
  assert sorted(per_example) == sorted(r["model"] for r in rows)
  expected = np.argmax(logits, -1) == np.asarray(source.eval_labels)
  for row in rows:
    got = per_example[row["model"]]
    assert got.shape == (10_000,) and got.dtype == bool
    assert 100 * (1 - got.mean()) == pytest.approx(row["top1_error"])
    assert np.sum(got != expected) <= 1  # float32 vs float64, example by example

  # Exact population statistics (Alg. 2, step 10) before evaluating: the averages of
  # the batch moments of the first 3 training batches, computed here in NumPy.
  report = ensemble.run([spec], [1], batch_size=1000, population_stats_batches=3)
  config = member.config
  batches = source.train_batches(0, config.train.batch_size, config.seed)
  moments = [_numpy_mlp(params, np.asarray(source.normalize(next(batches)["image"])))[1]
             for _ in range(3)]
  population = [tuple(np.mean([m[i][j] for m in moments], 0) for j in (0, 1)) for i in (0, 1)]
  logits, _ = _numpy_mlp(params, x, population)
  row = report["results"][0]["rows"][0]
  assert report["members"][0]["population_stats_batches"] == 3
  top1, top5 = _top_errors(logits, source.eval_labels)
  assert row["top1_error"] == near(top1) and row["top5_error"] == near(top5)
  assert row["top1_error"] != rows[0]["top1_error"]  # the moving averages gave another net


def test_what_bn_normalises_by_at_inference_against_numpy(mnist_workdir):
  """Alg. 2's choices measured against each other: each evaluation batch's own
  statistics (batch 768, which leaves a last batch of 16 digits: its padding repeats
  them, so its statistics are theirs) and population statistics with the biased
  variance E_B[var_B] instead of Alg. 2's m/(m-1) E_B[var_B]; each equals float64 NumPy."""
  spec = ensemble.MemberSpec(mnist_workdir)
  member = ensemble.load_member(spec, "m", sharding.create_mesh())
  variables = jax.device_get(member.predict.args[0])
  source, config = member.source, member.config
  params = variables["params"]
  x, labels = np.asarray(source.normalize(source.eval_images)), source.eval_labels
  def near(expected):
    return pytest.approx(expected, abs=0.01 + 1e-9)

  report = ensemble.run([spec], [1], batch_size=768, bn_statistics="batch")
  logits = np.concatenate([_numpy_mlp(params, x[i:i + 768])[0] for i in range(0, 10_000, 768)])
  top1, _ = _top_errors(logits, labels)
  row = report["results"][0]["rows"][0]
  assert report["members"][0]["bn_statistics"] == "batch"
  assert row["top1_error"] == near(top1)
  two = ensemble.run([spec], [1], batch_size=2, bn_statistics="batch")["results"][0]["rows"][0]
  logits = np.concatenate([_numpy_mlp(params, x[i:i + 2])[0] for i in range(0, 10_000, 2)])
  assert two["top1_error"] == near(_top_errors(logits, labels)[0])
  assert two["top1_error"] > row["top1_error"]  # statistics of 2 digits are worse

  report = ensemble.run([spec], [1], batch_size=1000, population_stats_batches=3,
                        bn_statistics="population_biased")
  batches = source.train_batches(0, config.train.batch_size, config.seed)
  moments = [_numpy_mlp(params, np.asarray(source.normalize(next(batches)["image"])))[1]
             for _ in range(3)]
  m = config.train.batch_size
  biased = [(np.mean([mo[i][0] for mo in moments], 0),
             np.mean([mo[i][1] for mo in moments], 0) * (m - 1) / m) for i in (0, 1)]
  top1, top5 = _top_errors(_numpy_mlp(params, x, biased)[0], labels)
  row = report["results"][0]["rows"][0]
  assert report["members"][0]["bn_statistics"] == "population_biased"
  assert row["top1_error"] == near(top1) and row["top5_error"] == near(top5)
  # The statistics themselves: the biased variance is (m-1)/m of the unbiased one.
  stats = {}
  for choice in ("population", "population_biased"):
    net = ensemble.load_member(spec, choice, sharding.create_mesh(), population_stats_batches=3,
                               bn_statistics=choice)
    stats[choice] = jax.device_get(net.predict.args[0])["batch_stats"]
  for i in (0, 1):
    got = np.asarray(stats["population_biased"][f"bn{i}"]["var"])
    np.testing.assert_allclose(got, biased[i][1], rtol=2e-4)
    np.testing.assert_allclose(got, np.asarray(stats["population"][f"bn{i}"]["var"])
                               * (m - 1) / m, rtol=1e-6)


@pytest.mark.parametrize("choice, batches, message", [
    ("population", 0, "needs population_stats_batches > 0"),
    ("batch", 3, "applies to bn_statistics=population or population_biased, not batch"),
    ("median", 0, "bn_statistics='median': one of moving, population")])
def test_contradictory_bn_statistics_are_refused(choice, batches, message):
  from bn_inception import population
  with pytest.raises(ValueError, match=message):
    population.resolve_bn_statistics(choice, batches)
  assert population.resolve_bn_statistics("", 3) == "population"
  assert population.resolve_bn_statistics("", 0) == "moving"


def test_evaluation_progress_and_with_progress_off_only_results(mnist_workdir, capsys):
  spec = ensemble.MemberSpec(mnist_workdir)
  try:
    progress.configure(enabled=True, live=False)  # as in a log: start and end lines
    ensemble.run([spec], [1], batch_size=1000, population_stats_batches=3)
    err = capsys.readouterr().err
    assert re.search(r"^population statistics mlp: 3/3 batches \(100%\) \[", err, re.M)
    assert re.search(r"^1 crop\(s\), mlp: 0/10000 crops \(0%\)", err, re.M)
    assert re.search(r"^1 crop\(s\), mlp: 10000/10000 crops \(100%\) \[.*crops/s\]$", err,
                     re.M)
    assert f"loaded mlp: {mnist_workdir} step 20" in err
    progress.configure(enabled=False)
    shown = []
    report = ensemble.run([spec], [1], batch_size=1000, on_result=shown.append)
  finally:
    progress.configure()
  out, err = capsys.readouterr()
  assert out == err == ""  # the library prints nothing; scripts/evaluate.py prints the lines
  [res] = report["results"]
  assert shown == [res]
  assert eval_report.result_lines(res) == [eval_report.format_table(res["rows"]),
                                           f"1 crop(s): {res['seconds']:.1f} s "
                                           f"({res['crops_per_second']:.0f} crops/s)"]


def test_missing_checkpoint_and_step_are_clear_errors(mnist_workdir, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(CheckpointError, match="no config.json"):
    ensemble.run([ensemble.MemberSpec(str(empty))], [1])
  (empty / "config.json").write_text(open(os.path.join(mnist_workdir, "config.json")).read())
  with pytest.raises(CheckpointError, match="Member empty: .* has no checkpoint"):
    ensemble.run([ensemble.MemberSpec(mnist_workdir), ensemble.MemberSpec(str(empty))], [1])
  with pytest.raises(CheckpointError, match=r"No checkpoint at step 7 .*steps \[20\]"):
    ensemble.run([ensemble.MemberSpec(mnist_workdir, 7)], [1])


def _flip_a_byte(workdir, step):
  """Bit rot: one flipped byte in the biggest array file of checkpoint `step`."""
  files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "**", "d", "*"),
                    recursive=True)
  biggest = max(files, key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.seek(os.path.getsize(biggest) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_byte_at_an_explicit_step_is_an_error_not_numbers(mnist_workdir, tmp_path):
  """The evaluator restores a member at a given step through the same verified path
  as training: a checkpoint with flipped bytes is refused, never evaluated."""
  import orbax.checkpoint as ocp
  workdir = str(tmp_path / "rotten")
  shutil.copytree(mnist_workdir, workdir)
  _flip_a_byte(workdir, 20)
  # Plain orbax reads the damaged file without complaint: wrong numbers, no error.
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as plain:
    damaged = plain.restore(20, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  with ocp.CheckpointManager(os.path.join(mnist_workdir, "checkpoints")) as plain:
    intact = plain.restore(20, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(damaged["state"]),
                                                      jax.tree.leaves(intact["state"])))
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(CheckpointError, match=r"Member rotten@20: The checkpoint at step 20 .* "
                     r"unusable \(CheckpointError: checksum mismatch in params/"):
    ensemble.run([ensemble.MemberSpec(workdir, 20)], [1])
  with pytest.raises(CheckpointError, match=r"Member rotten: No usable checkpoint .*checksum"):
    ensemble.run([ensemble.MemberSpec(workdir)], [1])  # newest: no older step to fall back on
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before  # a reader moves nothing


def _run_script(args, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py")] + args,
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_script_on_8_devices_matches_one_device(mnist_workdir, tmp_path):
  results = {}
  for devices in (1, 8):
    out = str(tmp_path / f"d{devices}")
    proc = _run_script([f"--workdirs={mnist_workdir},{mnist_workdir}@20", "--crops=1",
                        "--batch_size=776", f"--output_dir={out}"],  # 776 !| 10,000
                       {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.load(open(os.path.join(out, "report.json")))
    assert report["devices"] == devices
    results[devices] = report["results"][0]["rows"]
  assert results[1] == results[8]
  assert [r["examples"] for r in results[8]] == [10_000] * 3


def test_script_refuses_a_workdir_without_checkpoint(tmp_path):
  proc = _run_script([f"--workdirs={tmp_path}", f"--output_dir={tmp_path / 'out'}"])
  assert proc.returncode == 2 and "no config.json" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(IMAGENET_SAMPLE), reason="imagenet_sample not present")
def test_imagenet_sample_every_image_once(tmp_path):
  """A tiny MLP at 16 px on the 1,000 sample images: 1 and 10 crops, batches that do not
  divide the counts, equal to batches that do."""
  from configs import imagenet_base
  c = imagenet_base.apply_variant(imagenet_base.get_config("cpu"), "cpu")
  c.model = schema.mlp_model_config(hidden_units=(16,), num_classes=1000, activation="relu",
                                    init_stddev=0.05, image_size=16)
  c.data.image_size = 16
  c.train.batch_size = 8
  c.train.num_steps = 2
  c.train.eval_every = 0
  c.train.checkpoint_every = 2
  c.optim.schedule = "constant"
  workdir = str(tmp_path / "mlp16")
  train.train_and_evaluate(c, workdir)
  spec = ensemble.MemberSpec(workdir)
  odd = ensemble.run([spec], [1, 10], batch_size=96)["results"]   # 1000 and 10000 % 96 != 0
  even = ensemble.run([spec], [1, 10], batch_size=1000)["results"]
  for a, b in zip(odd, even):
    assert a["rows"] == b["rows"] and a["rows"][0]["examples"] == 1000


# --------------------------------------------------------------------------- config.evals


def test_an_old_config_keeps_its_probe_percentiles_as_the_probe_evaluator():
  old = json.loads(mnist_fig1.get_config().to_json_best_effort())
  del old["evals"]
  old["model"]["record_percentiles"] = [10, 50, 97]  # as config.json held them before evals
  new = config_upgrade.upgrade(old)
  assert "record_percentiles" not in new.model
  assert new.evals.to_dict() == {"eval": {"type": "classification"},
                                 "probe": {"type": "percentiles", "percentiles": (10, 50, 97)}}


def test_every_evaluator_type_is_one_module_and_bad_entries_are_one_line_each():
  from bn_inception import evaluators
  for type_name in schema.EVAL_TYPES:
    assert callable(evaluators.module(type_name).create)
  evals = ml_collections.ConfigDict({
      "a": {"type": "clasification"}, "b": {"type": "percentiles", "percentiles": (5, 101)},
      "c": {"type": "classification", "top_k": 3}, "d": schema.eval_config("multicrop")})
  assert config_checks.eval_problems(evals) == [
      "config.evals.a.type='clasification' is not an evaluator type; known: classification, "
      "multicrop, percentiles.",
      "config.evals.b.percentiles=(5, 101) must be at least 1 value, each in [0, 100].",
      "config.evals.c.top_k is not a field of a 'classification' evaluator; fields: none.",
      "config.evals.d.type='multicrop' runs offline (scripts/evaluate.py), not in the "
      "training loop."]
  offline = ml_collections.ConfigDict({"d": schema.eval_config("multicrop", crops=(1, 12))})
  assert config_checks.eval_problems(offline, offline=True) == [
      "config.evals.d.crops=(1, 12) must be at least 1 value, each; known: 1, 10, 144."]


def test_batch_statistics_refuse_a_model_with_dropout_and_biased_drops_the_correction():
  from configs import mnist_lr_acceleration
  config = mnist_lr_acceleration.get_config("inception")  # GoogLeNet's dropout 0.4
  assert config.model.dropout_rate > 0
  with pytest.raises(ValueError, match="m: bn_statistics=batch .*dropout_rate=0.4"):
    ensemble._for_bn_statistics(config, "batch", "m")
  biased = ensemble._for_bn_statistics(mnist_lr_acceleration.get_config("bn_x5"),
                                       "population_biased", "m")
  assert biased.bn.unbiased_variance is False


def test_a_member_whose_run_is_unfinished_is_named_as_such(mnist_workdir, tmp_path, caplog):
  """A checkpoint below the run's train.num_steps (a run still training, or stopped):
  evaluated, and said so in a warning and in report.md."""
  import shutil
  workdir = str(tmp_path / "running")
  shutil.copytree(mnist_workdir, workdir)
  path = os.path.join(workdir, "config.json")
  config = json.load(open(path))
  config["train"]["num_steps"] = 40  # its checkpoint is at step 20
  json.dump(config, open(path, "w"))
  out = str(tmp_path / "report")
  with caplog.at_level("WARNING"):
    ensemble.run([ensemble.MemberSpec(workdir)], [1], batch_size=1000, output_dir=out)
  assert "member running is at step 20 of its run's 40: the run is unfinished" in caplog.text
  assert "step 20 (mlp, unfinished: its run has 40 steps)" in open(
      os.path.join(out, "report.md")).read()
