"""recipe_claims: the rules of docs/reproduction.md section 2b on hand-made sweeps whose
verdicts are known by construction (speed-ups computed by hand; one recipe right on a
superset of Inception's examples, one identical to it, one far below)."""

import numpy as np
import pytest

from bn_inception import recipe_claims

N = 2000
SEEDS = (0, 1, 2)


def curves():
  """Inception's mean curve peaks at 0.80 (step 400); BN-x5 passes 0.80 at 100 on every
  seed; BN-Baseline's seed 2 never reaches 0.80."""
  inc = {0: [(0, .1), (100, .5), (200, .7), (300, .78), (400, .81)],
         1: [(0, .1), (100, .5), (200, .7), (300, .76), (400, .79)],
         2: [(0, .1), (100, .5), (200, .7), (300, .77), (400, .80)]}
  out = {f"inception-seed{s}": c for s, c in inc.items()}
  for s in SEEDS:
    out[f"bn_x5-seed{s}"] = [(0, .1), (50, .6 + .01 * s), (100, .80 + .01 * s), (150, .85)]
    out[f"bn_baseline-seed{s}"] = [(0, .1), (100, .6), (200, .80 if s < 2 else .79),
                                   (300, .82 if s < 2 else .79)]
    out[f"bn_x5_sigmoid-seed{s}"] = [(0, .1), (50, .3), (100, .4), (150, .5)]
  return out


def correct():
  rng = np.random.default_rng(0)
  out = {}
  for s in SEEDS:
    base = rng.random(N) < 0.70
    out[f"inception-seed{s}"] = base
    out[f"bn_baseline-seed{s}"] = base.copy()               # identical: no difference
    better = base.copy()
    better[np.flatnonzero(~base)[:300]] = True              # right on a superset
    out[f"bn_x5-seed{s}"] = better
    out[f"bn_x5_sigmoid-seed{s}"] = rng.random(N) < 0.50
  return out


def test_speed_ups_by_hand():
  s = recipe_claims.speed_ups(curves())
  assert s["t_max"] == pytest.approx(0.80) and s["t_max_step"] == 400
  at_max = s["targets"][0]
  assert at_max["reference_steps"] == 400
  x5 = at_max["recipes"]["bn_x5"]
  assert x5["mean_curve_steps"] == 100 and x5["speed_up"] == pytest.approx(4.0)
  assert x5["speed_up_range"] == pytest.approx([4.0, 4.0]) and x5["holds"]
  assert x5["resolution"] == 50
  base = at_max["recipes"]["bn_baseline"]
  # Mean curve at 200: (.80 + .80 + .79) / 3 < .80; at 300: (.82 + .82 + .79) / 3 >= .80.
  assert base["mean_curve_steps"] == 300 and base["reached"] == 2
  assert base["speed_up"] == pytest.approx(4 / 3) and not base["holds"]  # a seed never
  lower = s["targets"][2]  # T_max - 3 points = 0.77: Inception's mean curve at 300
  assert lower["target"] == pytest.approx(0.77) and lower["reference_steps"] == 300
  assert lower["recipes"]["bn_baseline"]["speed_up_range"] == pytest.approx([1.5, 1.5])


def test_paired_verdicts_known_by_construction():
  nonfinite = {name: False for name in curves()}
  d = recipe_claims.decide(curves(), correct(), nonfinite, num_samples=2000)
  x5, base = d["exceeds"]["bn_x5"], d["exceeds"]["bn_baseline"]
  assert x5["delta"] == pytest.approx(300 / N) and x5["low"] > 0 and x5["holds"]
  assert all(q == {"only_a_right": 300, "only_b_right": 0, "p_value": pytest.approx(
      2 * 0.5 ** 300)} for q in x5["same_seed_pairs"].values())
  assert base["delta"] == 0 and base["p_value"] == 1.0 and not base["holds"]
  assert base["holm_p"] >= base["p_value"]
  trains = d["trains"]
  assert trains["floor"] == pytest.approx(0.1 + 0.5 * (np.mean(
      [np.mean(correct()[f"inception-seed{s}"]) for s in SEEDS]) - 0.1))
  assert trains["holds"] and trains["lower_than_reference"]["holds"]
  text = recipe_claims.markdown(d)
  assert "| BN-x5 exceeds Inception | +15.00 |" in text
  assert "BN-Baseline exceeds Inception | +0.00" in text
  assert text.count("not reproduced at this scale") >= 1
  assert "| < 5e-04 |" in text  # no bootstrap sample at or below 0: not p = 0


def test_a_non_finite_seed_does_not_train_and_a_missing_member_is_named():
  nonfinite = {name: name == "bn_x5_sigmoid-seed1" for name in curves()}
  d = recipe_claims.decide(curves(), correct(), nonfinite, num_samples=200)
  assert not d["trains"]["holds"] and not d["trains"]["finite"]
  partial = {k: v for k, v in correct().items() if k != "bn_x5-seed2"}
  with pytest.raises(ValueError, match="bn_x5-seed2"):
    recipe_claims.compare(partial, ["bn_x5-seed0", "bn_x5-seed2"], ["inception-seed0"])
  with pytest.raises(ValueError, match="reference recipe 'resnet'"):
    recipe_claims.speed_ups(curves(), reference="resnet")


def test_a_control_pair_family_is_decided_with_holm():
  names = list(curves())
  got = recipe_claims.compare_pairs(correct(), names, [("bn_x5", "inception"),
                                                       ("bn_baseline", "inception")], 1000)
  assert got["bn_x5:inception"]["holds"] and not got["bn_baseline:inception"]["holds"]
  assert got["bn_baseline:inception"]["holm_p"] == 1.0
  assert "| BN-x5 above Inception | +15.00 |" in recipe_claims.pairs_markdown(got)
  with pytest.raises(ValueError, match="unknown recipes \\['bn_x7'\\]"):
    recipe_claims.compare_pairs(correct(), names, [("bn_x7", "inception")])


def test_the_figure_is_drawn_from_the_json_alone(tmp_path):
  import json
  from bn_inception import report_plots
  d = recipe_claims.decide(curves(), correct(), {n: False for n in curves()}, num_samples=100)
  path = tmp_path / "claims.json"
  path.write_text(json.dumps({**d, "curves": curves(), "note": "time scale 2,500"}))
  report_plots.plot_recipes(json.loads(path.read_text()), str(tmp_path / "claims.png"))
  assert (tmp_path / "claims.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_networks_evaluated_two_ways_are_two_recipes(tmp_path):
  from bn_inception import eval_report
  c = correct()
  nets = {k: v for k, v in c.items() if k.startswith("bn_x5-")}
  worse = {k: v & (np.arange(N) % 2 == 0) for k, v in nets.items()}
  for folder, rows in (("pop", nets), ("b2", worse)):
    (tmp_path / folder).mkdir()
    eval_report.write_per_example(str(tmp_path / folder), {1: rows})
  both = recipe_claims.load_correct([f"{tmp_path / 'pop'}:population", f"{tmp_path / 'b2'}:batch2"])
  assert sorted(both) == [f"bn_x5_{t}-seed{s}" for t in ("batch2", "population") for s in SEEDS]
  got = recipe_claims.compare_pairs(both, list(both), [("bn_x5_population", "bn_x5_batch2")], 500)
  assert got["bn_x5_population:bn_x5_batch2"]["holds"]
  with pytest.raises(ValueError, match="appears in two"):
    recipe_claims.load_correct([str(tmp_path / "pop"), str(tmp_path / "pop")])


def test_one_evaluation_per_member_has_no_interval_to_state():
  one = {f"{r}-seed{s}": [(3, 0.1 + 0.01 * s)] for r in recipe_claims.LABELS for s in SEEDS}
  d = recipe_claims.decide(one, {k: correct()["inception-seed0"] for k in one}, {},
                           num_samples=50)
  assert d["speed_ups"]["targets"][0]["recipes"]["bn_x5"]["resolution"] is None
  assert "(3 steps" in recipe_claims.markdown(d)


DOCS = __import__("pathlib").Path(__file__).resolve().parents[1] / "docs" / "reproduction"


def test_the_committed_verdicts_recompute_from_the_committed_raw_results():
  """docs/reproduction.md 2b's table: its claims.json is what the rules give on the
  committed curves and per-example correctness (correct.npz), to the last digit."""
  import json
  from bn_inception import eval_report
  committed = json.loads((DOCS / "twin_back_image_claims.json").read_text())
  correct = eval_report.read_per_example(str(DOCS / "twin_back_image_correct.npz"))
  d = recipe_claims.decide(committed["curves"], correct, committed["nonfinite"])
  d = json.loads(json.dumps(d))
  for key in ("speed_ups", "final_accuracy", "exceeds", "highest", "highest_holds", "trains"):
    assert d[key] == committed[key], key
  assert recipe_claims.markdown(d) + "\n" == (DOCS / "twin_back_image_claims.md").read_text()


def test_the_committed_figure_redraws_from_its_json(tmp_path):
  import json
  from bn_inception import report_plots
  committed = json.loads((DOCS / "twin_back_image_claims.json").read_text())
  report_plots.plot_recipes(committed, str(tmp_path / "figure.png"))
  assert (tmp_path / "figure.png").stat().st_size > 10_000
