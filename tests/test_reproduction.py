"""The reproduction sweeps (docs/reproduction.md): what each member is, the report's
seed and x-axis summaries, and (slow) each sweep file run end to end, shortened."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bn_inception import report, workdir_config
from bn_inception.sweep_runner import load_sweep, resolve, run_sweep
from configs import mnist_lr_acceleration as twin
from configs.sweeps import paper_ensemble


def resolved(spec):
  return {m.name: workdir_config.flat(resolve(m).config) for m in load_sweep(spec)}


def differing(a, b):
  return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


# ------------------------------------------------------------------- what the files say


def test_lr_grid_pairs_differ_only_in_bn():
  assert {c["train.num_steps"] for c in resolved("configs/sweeps/lr_grid.py:200").values()} == {200}
  members = resolved("configs/sweeps/lr_grid.py")
  bn_x5 = workdir_config.flat(twin.get_config("bn_x5"))
  lrs = {c["optim.learning_rate"] for c in members.values()}
  assert len(members) == 12 and len(lrs) == 6
  assert {0.015, 0.5} <= lrs  # the twin's Inception and near BN-x30 (0.45) rates
  for name, c in members.items():
    assert c["bn.enabled"] == name.endswith("-bn") and c["optim.schedule"] == "constant"
    assert c["train.nonfinite_policy"] == "skip"
    other = members[name[:-3] + "-no_bn" if name.endswith("-bn") else name[:-6] + "-bn"]
    assert differing(c, other) == {"bn.enabled"}
    assert differing(c, bn_x5) <= {"bn.enabled", "optim.learning_rate", "optim.schedule",
                                   "train.num_steps", "train.eval_every",
                                   "train.eval_at_start", "train.checkpoint_every",
                                   "train.nonfinite_policy"}


def test_sigmoid_members():
  m = resolved("configs/sweeps/sigmoid_no_bn.py")
  assert all(c["model.activation"] == "sigmoid" for c in m.values())
  assert [n for n, c in m.items() if c["bn.enabled"]] == ["bn_x5_sigmoid"]
  assert differing(m["bn_x5_sigmoid"], m["bn_x5_sigmoid_no_bn"]) == {"bn.enabled"}
  inception = workdir_config.flat(twin.get_config("inception"))
  assert differing(m["inception_sigmoid"], inception) == {
      "model.activation", "train.nonfinite_policy", "train.eval_every"}
  assert [-(-c["train.num_steps"] // c["train.eval_every"]) for c in m.values()] == [5] * 3
  assert resolved("configs/sweeps/sigmoid_no_bn.py:2500")["bn_x5_sigmoid"][
      "train.num_steps"] == 2400


def test_group_size_members_share_the_global_batch():
  m = resolved("configs/sweeps/bn_group_size.py")
  assert sorted(c["bn.group_size"] for c in m.values()) == [2, 4, 8, 16, 32, 64]
  half = resolved("configs/sweeps/bn_group_size.py:21354")
  for c, h in zip(m.values(), half.values()):
    assert (c["train.batch_size"], c["bn.stats_mode"]) == (64, "group")
    assert (c["train.num_steps"], h["train.num_steps"]) == (562, 281)
    assert c["train.batch_size"] % c["bn.group_size"] == 0


def test_inference_stats_members_keep_every_checkpoint():
  m = resolved("configs/sweeps/inference_stats.py")
  assert sorted(c["bn.momentum"] for c in m.values()) == [0.9, 0.9997]
  for c in m.values():
    # every 50 steps up to the end must survive for the evaluations
    assert c["train.keep_checkpoints"] >= c["train.num_steps"] // c["train.checkpoint_every"] + 1


def test_twin_ensemble_is_the_paper_ensemble_on_the_twin():
  m = resolved("configs/sweeps/twin_ensemble.py")
  bn_x30 = workdir_config.flat(twin.get_config("bn_x30"))
  assert list(m) == list(paper_ensemble.MEMBERS)
  for name, c in m.items():
    assert differing(c, bn_x30) == set(paper_ensemble.MEMBERS[name]) | {
        "train.eval_every", "train.eval_at_start"}
    assert c["train.eval_every"] == c["train.num_steps"]
  milder = resolved("configs/sweeps/twin_ensemble.py:2500")
  assert {c["train.num_steps"] for c in milder.values()} == {2400}
  assert all(c["train.eval_every"] == 2400 for c in milder.values())


def test_twin_seeds_members():
  m = resolved("configs/sweeps/twin_seeds.py")
  assert len(m) == 15 and {c["seed"] for c in m.values()} == {0, 1, 2}
  assert m["bn_x5-seed0"]["train.num_steps"] == 2400
  assert m["inception-seed2"]["train.num_steps"] == 12_400
  assert differing(m["bn_x30-seed0"], m["bn_x30-seed1"]) == {"seed"}
  short = resolved("configs/sweeps/twin_seeds.py:10677")
  assert short["bn_x5-seed1"]["train.num_steps"] == twin.get_config("bn_x5").train.num_steps


def test_twin_back_image_is_twin_seeds_on_the_new_data():
  m, mnist = resolved("configs/sweeps/twin_back_image.py"), resolved(
      "configs/sweeps/twin_seeds.py")
  assert list(m) == list(mnist)
  for name, c in m.items():
    assert (c["data.name"], c["data.variant"]) == ("mnist_back_image", "rotated")
    assert {k for k in differing(c, mnist[name]) if not k.startswith("data.")} == set()
  plain = resolved("configs/sweeps/twin_back_image.py:10677,plain")
  assert plain["bn_x30-seed2"]["data.variant"] == "plain"
  assert plain["bn_x30-seed2"]["train.num_steps"] == twin.get_config("bn_x30").train.num_steps


def test_equal_budget_control_is_bn_x5_and_bn_x30_at_bn_baselines_steps():
  control = resolved("configs/sweeps/twin_back_image_equal_budget.py")
  main = resolved("configs/sweeps/twin_back_image.py")
  assert list(control) == [f"{r}_equal_budget-seed{s}" for r in ("bn_x5", "bn_x30")
                           for s in (0, 1, 2)]
  for name, c in control.items():
    recipe, seed = name.split("_equal_budget-")
    own = main[f"{recipe}-{seed}"]
    assert c["train.num_steps"] == main[f"bn_baseline-{seed}"]["train.num_steps"] == 6000
    assert own["train.num_steps"] == 2400
    # The schedule stretched with the steps (rounding of the decay interval aside).
    assert c["optim.decay_steps"] / own["optim.decay_steps"] == pytest.approx(2.5, rel=0.03)
    assert differing(c, own) == {"train.num_steps", "optim.decay_steps", "train.eval_every"}


# ----------------------------------------------------------------------------- report


def member(workdir, name, changes, accuracies):
  """A finished-looking member: a real config (mnist_fig1's) with `changes`, saved by the
  one config writer, and hand-made evaluations."""
  from configs import mnist_fig1
  d = workdir / name
  d.mkdir(parents=True)
  config = mnist_fig1.get_config("bn")
  for field, value in changes.items():
    section, _, key = field.rpartition(".")
    (config[section] if section else config)[key] = value
  workdir_config.check_or_save_config(str(d), config)
  with open(d / "metrics.jsonl", "w") as f:
    for step, a in accuracies:
      f.write(json.dumps({"step": step, "eval/accuracy": a}) + "\n")


def test_report_over_seeds_and_against_a_field(tmp_path):
  w = tmp_path / "sweep"
  cfg = lambda seed, lr, bn: {"seed": seed, "optim.learning_rate": lr, "bn.enabled": bn}
  # bn at lr 0.1, three seeds: finals 0.90, 0.92, 0.97; maxima 0.95, 0.92, 0.97
  member(w, "bn-lr0.1-seed0", cfg(0, 0.1, True), [(100, 0.95), (200, 0.90)])
  member(w, "bn-lr0.1-seed1", cfg(1, 0.1, True), [(100, 0.80), (200, 0.92)])
  member(w, "bn-lr0.1-seed2", cfg(2, 0.1, True), [(100, 0.97), (200, 0.97)])
  member(w, "bn-lr1-seed0", cfg(0, 1.0, True), [(200, 0.5)])
  member(w, "no_bn-lr0.1-seed0", cfg(0, 0.1, False), [(200, 0.6)])
  member(w, "no_bn-lr1-seed0", cfg(0, 1.0, False), [(200, 0.1)])
  # A field the code has dropped since one member ran (its config.json still holds it)
  # does not split a series.
  saved = json.loads((w / "no_bn-lr1-seed0" / "config.json").read_text())
  saved["train"]["inject_nonfinite_at_step"] = -1
  (w / "no_bn-lr1-seed0" / "config.json").write_text(json.dumps(saved))
  # Nor does a field that does not change what a run computes: one seed spelled out
  # where its data is and saved less often (an older code path did; the default is '').
  saved = json.loads((w / "bn-lr0.1-seed1" / "config.json").read_text())
  saved["data"]["data_dir"] = "/elsewhere/mnist"
  saved["train"]["checkpoint_every"] = 7
  (w / "bn-lr0.1-seed1" / "config.json").write_text(json.dumps(saved))
  r = report.build(str(w), 0.93, x="optim.learning_rate", note="hand-made, 200 steps")

  (group,) = r.seed_groups  # the only setting run with more than one seed
  assert group.label == "bn-lr0.1" and len(group.members) == 3
  assert group.final_accuracy.mean == pytest.approx(0.93)
  assert group.final_accuracy.std == pytest.approx(np.std([0.90, 0.92, 0.97], ddof=1))
  assert (group.max_accuracy.low, group.max_accuracy.high) == (0.92, 0.97)
  assert group.reached == 2 and group.steps_to_target.mean == 100  # seeds 0 and 2, at 100

  assert set(r.by_x) == {"bn.enabled=True", "bn.enabled=False"}
  bn = r.by_x["bn.enabled=True"]
  assert [p.x for p in bn] == [0.1, 1.0] and bn[0].final_accuracy.n == 3
  assert bn[0].final_accuracy.mean == pytest.approx(0.93) and bn[1].final_accuracy.mean == 0.5
  assert [p.final_accuracy.mean for p in r.by_x["bn.enabled=False"]] == [0.6, 0.1]

  text = report.markdown(r)
  assert "| bn-lr0.1 | 3 | 94.67% ± 2.52 (92.00–97.00) | 93.00% ± 3.61 (90.00–97.00) |" in text
  assert "| bn.enabled=False | 1 | 10.00% | 10.00% | no_bn-lr1-seed0 |" in text
  paths = report.write(r, log_x=True)
  assert paths[-1].endswith("accuracy_vs_learning_rate.png") and os.path.getsize(paths[-1]) > 5000
  data = json.loads(open(paths[1]).read())
  assert data["x"] == "optim.learning_rate" and len(data["over_seeds"]) == 1
  # report.json alone gives the same report back, and `report.py --redraw` its plots.
  assert data["curves"]["bn-lr0.1-seed1"] == [[100, 0.80], [200, 0.92]]
  assert data["note"] == "hand-made, 200 steps" and "\nhand-made, 200 steps\n" in text
  assert report.from_json(json.loads(json.dumps(data))) == r
  redrawn = tmp_path / "redrawn"
  proc = subprocess.run([sys.executable, "scripts/report.py", f"--redraw={paths[1]}",
                         f"--output_dir={redrawn}", "--log_x"], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(redrawn)) == ["accuracy_vs_learning_rate.png",
                                         "accuracy_vs_steps.png"]
  del data["curves"]
  with pytest.raises(ValueError, match="has no curves"):
    report.from_json(data)

  with pytest.raises(ValueError, match="no such field"):
    report.build(str(w), 0.9, x="optim.nonexistent")


def test_report_target_of_a_seed_group_is_the_maximum_of_its_mean_curve(tmp_path):
  w = tmp_path / "sweep"
  lr = lambda seed, rate: {"seed": seed, "optim.learning_rate": rate}
  member(w, "slow-seed0", lr(0, 0.1), [(100, 0.80), (200, 0.90)])
  member(w, "slow-seed1", lr(1, 0.1), [(100, 0.60), (200, 0.96)])  # mean: 0.70, 0.93
  member(w, "fast-seed0", lr(0, 1.0), [(100, 0.95), (200, 0.97)])
  member(w, "fast-seed1", lr(1, 1.0), [(100, 0.93), (200, 0.99)])  # mean: 0.94, 0.98
  r = report.build(str(w), "slow")
  assert r.target == pytest.approx(0.93) and r.reference == "slow"
  assert "averaged over its 2 seeds (0.9300, at step 200)" in r.target_description
  groups = {g.label: g for g in r.seed_groups}
  slow, fast = groups["slow"], groups["fast"]
  assert [a for _, a in slow.mean_curve] == pytest.approx([0.70, 0.93])
  assert slow.mean_steps_to_target == 200 and fast.mean_steps_to_target == 100
  assert slow.reached == 1 and slow.steps_to_target.mean == 200  # seed 0 never gets there
  assert fast.reached == 2 and fast.steps_to_target.mean == 100
  text = report.markdown(r)
  assert "| fewer steps than slow (mean curves) |" in text
  assert "| 1/2 | 200 | 1.0x |" in text and "| 2/2 | 100 | 2.0x |" in text
  assert os.path.getsize(report.write(r, ymin=0.5)[2]) > 5000  # two mean curves, shaded
  with pytest.raises(ValueError, match="seed groups: fast, slow"):
    report.build(str(w), "medium")
  # --paper rows: a seed's member stands for the paper's network of its setting
  assert [report.paper_key(n) for n in ("bn_x5-seed2", "BN-x30", "slow-seed0")] == \
      ["bn_x5", "bn_x30", None]


def test_report_x_must_be_a_number(tmp_path):
  w = tmp_path / "sweep"
  member(w, "a", {"model.activation": "relu"}, [(1, 0.5)])
  with pytest.raises(ValueError, match="'relu', not a number"):
    report.build(str(w), 0.9, x="model.activation")


# ------------------------------------------------------------------- each file runs


SHORT = {"train.num_steps": 3, "train.eval_every": 3, "train.checkpoint_every": 3,
         "train.log_every": 1, "train.eval_at_start": False}


def run_short(tmp_path, name, arg=""):
  """Every member of configs/sweeps/<name>.py[:arg], 3 steps each, in this process."""
  spec = tmp_path / f"short_{name}.py"
  spec.write_text(f"""
from bn_inception.sweep import Member
from configs.sweeps.{name} import get_sweep as full

def get_sweep():
  members = full({arg!r}) if {arg!r} else full()
  return [Member(m.name, m.config, {{**m.overrides, **{SHORT!r}}}) for m in members]
""")
  workdir = tmp_path / name
  outcomes = run_sweep(str(spec), str(workdir), inprocess=True)
  assert [o.status for o in outcomes] == ["finished"] * len(outcomes), outcomes
  assert len(outcomes) == len(load_sweep(f"configs/sweeps/{name}.py"))
  return workdir


@pytest.mark.slow
def test_lr_grid_runs(tmp_path):
  w = run_short(tmp_path, "lr_grid")
  r = report.build(str(w), 0.5, x="optim.learning_rate")
  assert set(r.by_x) == {"bn.enabled=True", "bn.enabled=False"}
  assert all(len(points) == 6 for points in r.by_x.values())


@pytest.mark.slow
def test_sigmoid_no_bn_runs(tmp_path):
  run_short(tmp_path, "sigmoid_no_bn")


@pytest.mark.slow
def test_bn_group_size_runs(tmp_path):
  w = run_short(tmp_path, "bn_group_size")
  r = report.build(str(w), 0.5, x="bn.group_size")
  assert [p.x for p in r.by_x["all"]] == [2, 4, 8, 16, 32, 64]


@pytest.mark.slow
def test_inference_stats_runs_and_evaluates_both_ways(tmp_path):
  from bn_inception import ensemble
  w = run_short(tmp_path, "inference_stats")
  specs = [ensemble.parse_member(str(w / "momentum0.9997"), step=3)]
  for pop in (0, 2):
    ensemble.run(specs, [1], output_dir=str(tmp_path / f"eval{pop}"), batch_size=1000,
                 population_stats_batches=pop)
  rows = [json.loads((tmp_path / f"eval{p}" / "report.json").read_text()) for p in (0, 2)]
  assert [r["members"][0]["population_stats_batches"] for r in rows] == [0, 2]


@pytest.mark.slow
def test_twin_ensemble_runs_and_evaluates(tmp_path):
  from bn_inception import ensemble
  w = run_short(tmp_path, "twin_ensemble")
  # Two members, one crop: ten crops of all six would be 600,000 crops here (the
  # 10-crop path itself is tested in tests/test_evaluate.py).
  specs = [ensemble.parse_member(str(w / n)) for n in ("x30_init", "x30_pabn")]
  ensemble.run(specs, [1], output_dir=str(tmp_path / "eval"), batch_size=1000)
  result = json.loads((tmp_path / "eval" / "report.json").read_text())
  assert [len(r["rows"]) for r in result["results"]] == [3]  # two members, the ensemble


@pytest.mark.slow
def test_twin_back_image_runs_and_its_claims_are_decided(tmp_path):
  """The documented pipeline, shortened: both sweeps, one evaluation of every final
  network (correct.npz), then the section 2b rules and the control's pairs."""
  from bn_inception import ensemble, recipe_claims
  w = run_short(tmp_path, "twin_back_image", "10677")
  r = report.build(str(w), "inception")
  assert len(r.seed_groups) == 5 and all(len(g.members) == 3 for g in r.seed_groups)
  budget = run_short(tmp_path, "twin_back_image_equal_budget")
  specs = [ensemble.parse_member(d) for d in ensemble.expand_workdirs(
      [f"{w}/*-seed*", f"{budget}/*-seed*"])]
  ensemble.run(specs, [1], output_dir=str(tmp_path / "eval"), batch_size=1000)
  curves, correct, nonfinite = recipe_claims.load([str(w)], str(tmp_path / "eval"))
  # Every network's correctness, the main run's 15 and the control's 6; the file's
  # ensemble row is no recipe's seed and is left out (recipe_claims.load_correct).
  assert len(curves) == 15 and len(correct) == 21 and "ensemble" not in correct
  d = recipe_claims.decide(curves, correct, nonfinite, num_samples=100)
  assert set(d["exceeds"]) == {"bn_baseline", "bn_x5", "bn_x30"} and len(d["highest"]) == 4
  assert "trains" in recipe_claims.markdown(d)
  pairs = recipe_claims.compare_pairs(correct, list(correct), [
      ("bn_x5_equal_budget", "bn_x5"), ("bn_x30_equal_budget", "bn_x30")], 100)
  assert all(len(c["same_seed_pairs"]) == 3 for c in pairs.values())


@pytest.mark.slow
def test_twin_seeds_runs(tmp_path):
  w = run_short(tmp_path, "twin_seeds", "10677")
  r = report.build(str(w), 0.5)
  assert len(r.seed_groups) == 5 and all(len(g.members) == 3 for g in r.seed_groups)
  r = report.build(str(w), "inception")  # the documented command's target
  (inception,) = [g for g in r.seed_groups if g.label == "inception"]
  assert r.target == max(a for _, a in inception.mean_curve)
  assert inception.mean_steps_to_target == 3
