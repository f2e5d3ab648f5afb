"""Sweeps (expansion, CLI-exact overrides, validation, skip/resume) and the sweep report."""

import io
import json
import os
import shlex

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from bn_inception import report, report_runs, sweep_jobs, sweep_runner, train
from bn_inception import workdir as workdir_lib
from bn_inception.sweep import Member, SweepError, members, product, variants
from configs import mnist_fig1

TINY = {"model.hidden_units": (8, 8), "train.num_steps": 20, "train.eval_every": 10,
        "train.log_every": 10, "train.checkpoint_every": 10, "train.eval_batch_size": 2500}


def write_sweep(tmp_path, body: str, name="s.py") -> str:
  path = tmp_path / name
  path.write_text("from bn_inception.sweep import Member, members, product, variants\n" + body)
  return str(path)


# ------------------------------------------------------------------------ expansion


def test_product_names_and_overrides():
  grid = product("optim.learning_rate", [0.1, 0.5, 1.0]) * product("bn.group_size", [8, 32])
  got = members("bn_x5", "configs/mnist_fig1.py", grid, overrides={"bn.stats_mode": "group"})
  assert [m.name for m in got] == [
      "bn_x5-lr0.1-bn_group8", "bn_x5-lr0.1-bn_group32", "bn_x5-lr0.5-bn_group8",
      "bn_x5-lr0.5-bn_group32", "bn_x5-lr1-bn_group8", "bn_x5-lr1-bn_group32"]
  assert got[3].overrides == {"bn.stats_mode": "group", "optim.learning_rate": 0.5,
                              "bn.group_size": 32}
  assert all(m.config == "configs/mnist_fig1.py" for m in got)
  # Labels: last field component by default, tuples joined by 'x'; explicit labels win.
  axis = product("model.hidden_units", [(8, 8), (16,)]) * variants(
      {"fast": {"optim.decay_steps": 10}, "slow": {"optim.decay_steps": 100}})
  assert [label for label, _ in axis] == ["hidden_units8x8-fast", "hidden_units8x8-slow",
                                          "hidden_units16-fast", "hidden_units16-slow"]
  assert [l for l, _ in product("seed", [1, 2], label="s")] == ["s1", "s2"]
  with pytest.raises(SweepError, match="both set optim.learning_rate"):
    product("optim.learning_rate", [1.0]) * product("optim.learning_rate", [2.0])
  with pytest.raises(SweepError, match="both set optim.learning_rate"):
    members("m", "configs/mnist_fig1.py", product("optim.learning_rate", [1.0]),
            overrides={"optim.learning_rate": 2.0})


def test_load_resolve_and_commands_equal_the_cli(tmp_path):
  spec = write_sweep(tmp_path, """
def get_sweep(steps):
  return [Member("base", "configs/mnist_fig1.py:no_bn"),
          members("g", "configs/mnist_fig1.py", product("optim.learning_rate", [0.25, 2]),
                  overrides={"model.hidden_units": [8, 8], "train.num_steps": int(steps),
                             "bn.enabled": False, "data.mean": (0.5,), "optim.schedule": "cosine"})]
""")
  got = sweep_runner.load_sweep(spec + ":30")
  assert [m.name for m in got] == ["base", "g-lr0.25", "g-lr2"]
  resolved = sweep_runner.resolve(got[2])
  c = resolved.config
  assert c.optim.learning_rate == 2.0 and isinstance(c.optim.learning_rate, float)
  assert c.model.hidden_units == (8, 8) and c.train.num_steps == 30
  assert c.bn.enabled is False and c.data.mean == (0.5,) and c.optim.schedule == "cosine"
  untouched = mnist_fig1.get_config("bn")
  assert c.optim.momentum == untouched.optim.momentum and c.seed == untouched.seed
  assert sweep_runner.resolve(got[0]).config.to_dict() == mnist_fig1.get_config("no_bn").to_dict()

  # The printed launch line, parsed exactly as scripts/train.py parses it, gives the same config.
  out = io.StringIO()
  sweep_runner.run_sweep(spec + ":30", str(tmp_path / "runs"), print_commands=True, out=out)
  lines = out.getvalue().strip().splitlines()
  assert len(lines) == 3 and not (tmp_path / "runs").exists()
  argv = shlex.split(lines[2])
  assert argv[:3] == ["python", "scripts/train.py", "--config=configs/mnist_fig1.py"]
  assert argv[3] == f"--workdir={tmp_path / 'runs' / 'g-lr2'}"
  assert "--config.model.hidden_units=(8, 8)" in argv
  fv = flags.FlagValues()
  config_args = [a for a in argv[2:] if not a.startswith("--workdir")]
  config_args = [a.replace("configs/", os.path.join(workdir_lib.REPO_ROOT, "configs/"), 1)
                 if a.startswith("--config=") else a for a in config_args]
  config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True,
                                  sys_argv=["train"] + config_args)
  fv(["train"] + config_args)
  assert fv.config.to_dict() == c.to_dict()

  # --only takes names and shell patterns; a pattern matching nothing is an error.
  assert [m.name for m in sweep_runner.select(got, ["g-*"])] == ["g-lr0.25", "g-lr2"]
  with pytest.raises(SweepError, match="nope matches no member"):
    sweep_runner.select(got, ["nope"])


@pytest.mark.parametrize("override, message", [
    ("{'optim.learnin_rate': 0.1}",
     r"'bad-lr2'.*unknown config field optim\.learnin_rate.*did you mean optim\.learning_rate"),
    ("{'train.num_steps': 2.5}", r"'bad-lr2'.*train\.num_steps holds an int"),
    ("{'model.hidden_units': ('a',)}", r"'bad-lr2'.*model\.hidden_units holds a tuple of int"),
    ("{'optim': 1}", r"'bad-lr2'.*optim is a whole section"),
    # Field values: the training loop's validator runs on every member in the pre-flight.
    ("{'bn.stats_mode': 'grop'}",
     r"'bad-lr2'.*config\.bn\.stats_mode='grop'; known: per_device, global, group"),
    ("{'optim.schedule': 'cosin'}",
     r"'bad-lr2'.*config\.optim\.schedule='cosin'; known: constant, exponential, cosine"),
])
def test_bad_override_fails_before_anything_runs(tmp_path, override, message):
  spec = write_sweep(tmp_path, f"""
def get_sweep():
  return [Member("good", "configs/mnist_fig1.py"),
          Member("bad-lr2", "configs/mnist_fig1.py", {override})]
""")
  workdir = tmp_path / "runs"
  with pytest.raises(SweepError, match=message) as e:
    sweep_runner.run_sweep(spec, str(workdir), inprocess=True)
  assert "Nothing was run" in str(e.value)
  assert not workdir.exists()  # not even the good member (listed first) was started


def test_bad_sweep_files(tmp_path):
  with pytest.raises(SweepError, match="two members named 'a'"):
    sweep_runner.load_sweep(write_sweep(tmp_path, "def get_sweep():\n  return [Member('a', "
                                 "'configs/mnist_fig1.py'), Member('a', 'configs/mnist_fig1.py')]"))
  with pytest.raises(SweepError, match="not usable as a directory name"):
    sweep_runner.load_sweep(write_sweep(tmp_path, "def get_sweep():\n  return [Member('a/b', "
                                 "'configs/mnist_fig1.py')]"))
  with pytest.raises(SweepError, match="config file configs/nope.py not found"):
    sweep_runner.resolve(Member("m", "configs/nope.py"))
  with pytest.raises(SweepError, match="'m': base config configs/mnist_fig1.py:typo could not"):
    sweep_runner.resolve(Member("m", "configs/mnist_fig1.py:typo"))
  with pytest.raises(SweepError, match="get_resources\(\) must return a mapping of slurm "
                     "fields, got list"):
    sweep_runner.load_resources(write_sweep(tmp_path, "def get_resources():\n  return [8]"))
  # A ConfigDict base runs in-process only: it has no command line to print.
  c = mnist_fig1.get_config()
  r = sweep_runner.resolve(Member("cd", c, {"optim.learning_rate": 0.25}))
  assert r.config.optim.learning_rate == 0.25 and c.optim.learning_rate == 0.5
  with pytest.raises(SweepError, match="'cd' has a ConfigDict base config"):
    sweep_runner.command(r, "runs")


def test_shipped_sweep_files_load():
  """The shipped sweeps expand as documented (resolving the paper configs is not needed)."""
  fig1 = sweep_runner.load_sweep("configs/sweeps/mnist_fig1.py:100")
  assert [(m.name, m.config, dict(m.overrides)) for m in fig1] == [
      ("bn", "configs/mnist_fig1.py:bn", {"train.num_steps": 100}),
      ("no_bn", "configs/mnist_fig1.py:no_bn", {"train.num_steps": 100})]
  runs = ["inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid"]
  paper = sweep_runner.load_sweep("configs/sweeps/lr_acceleration.py:cpu")
  assert [(m.name, m.config) for m in paper] == [(r, f"configs/{r}.py:cpu") for r in runs]
  # The paper's full runs ask SLURM for one 8-GPU node each, 32 examples per GPU.
  node = {"nodes": 1, "gpus_per_node": 8, "cpus_per_task": 8}
  for sweep in ("lr_acceleration", "paper_ensemble"):
    assert sweep_runner.load_resources(f"configs/sweeps/{sweep}.py") == node
    assert sweep_runner.load_resources(f"configs/sweeps/{sweep}.py:cpu") == {}
    full = [sweep_runner.resolve(m).config for m in
            sweep_runner.load_sweep(f"configs/sweeps/{sweep}.py")[:1]]
    assert full[0].train.batch_size == 32 * node["gpus_per_node"]
    assert full[0].bn.stats_mode == "per_device"
  assert sweep_runner.load_resources("configs/sweeps/mnist_fig1.py") == {}
  twin = sweep_runner.load_sweep("configs/sweeps/lr_acceleration_cpu.py")
  assert [(m.name, m.config) for m in twin] == [
      (r, f"configs/mnist_lr_acceleration.py:{r}") for r in runs]


# ------------------------------------------------------------------ skip and resume


def tiny_sweep(tmp_path):
  return write_sweep(tmp_path, f"""
TINY = {TINY!r}
def get_sweep():
  return [Member("a", "configs/mnist_fig1.py:bn", TINY),
          Member("b", "configs/mnist_fig1.py:no_bn", TINY)]
""")


def test_skips_finished_and_resumes_interrupted(tmp_path):
  spec, workdir = tiny_sweep(tmp_path), tmp_path / "runs"
  # Member a is interrupted at step 10 (as a preempted run leaves it).
  a = sweep_runner.resolve(sweep_runner.load_sweep(spec)[0]).config
  a.unlock()
  a.train.num_steps = 10  # a field a resumed run may change
  train.train_and_evaluate(a, str(workdir / "a"))
  assert sweep_runner.member_status(str(workdir / "a"), 20) == ("interrupted", 10)
  assert sweep_runner.member_status(str(workdir / "b"), 20) == ("new", 0)
  # --status, before: a interrupted at its checkpoint; b's last local run (sweep.log,
  # as scripts/sweep.py writes it) ended with an error; nothing is running.
  (workdir / "b").mkdir()
  (workdir / "b" / "sweep.log").write_text("\n# 2026-01-01 00:00:00 python scripts/train.py\n"
                                           "error: an earlier failure\nerror: boom\n")
  rows = {r.name: r for r in sweep_jobs.status(spec, str(workdir))}
  a_evals = report_runs.eval_curve(workdir_lib.read_metrics(str(workdir / "a")))
  assert (rows["a"].state, rows["a"].step, rows["a"].num_steps) == ("interrupted", 10, 20)
  assert (rows["a"].accuracy_step, rows["a"].accuracy) == a_evals[-1]
  assert rows["a"].updated is not None and rows["a"].job == ""
  assert (rows["b"].state, rows["b"].step, rows["b"].accuracy, rows["b"].updated) == (
      "failed", 0, None, None)
  assert rows["b"].detail == f"error: boom (log {workdir / 'b' / 'sweep.log'})"
  table = sweep_jobs.status_table(list(rows.values())).splitlines()
  assert table[1].split()[:4] == ["a", "interrupted", "–", "10/20"]
  assert table[-2:] == [f"b: failed: {rows['b'].detail}", "1 interrupted, 1 failed"]

  out = io.StringIO()
  outcomes = sweep_runner.run_sweep(spec, str(workdir), inprocess=True, out=out)
  assert [(o.name, o.status, o.step) for o in outcomes] == [("a", "finished", 20),
                                                            ("b", "finished", 20)]
  assert "a: resuming from step 10 of 20" in out.getvalue()
  assert "b: starting of 20" in out.getvalue()
  rows = report_runs.eval_curve(workdir_lib.read_metrics(str(workdir / "a")))
  assert [s for s, _ in rows] == [0, 10, 20]  # resumed: step 0 was not trained again
  lines = (workdir / "a" / "metrics.jsonl").read_text().splitlines()
  assert sum(json.loads(l)["step"] == 0 for l in lines) == 1
  assert workdir_lib.finished_steps(str(workdir / "a")) == [10, 20]
  manifest = json.loads((workdir / "sweep.json").read_text())
  assert [m["name"] for m in manifest["members"]] == ["a", "b"]
  rows = sweep_jobs.status(spec, str(workdir))
  assert [(r.name, r.state, r.step) for r in rows] == [("a", "finished", 20), ("b", "finished", 20)]

  # Everything finished: a rerun trains nothing and writes nothing to the runs.
  before = {p: (workdir / p / "metrics.jsonl").read_text() for p in "ab"}
  out = io.StringIO()
  outcomes = sweep_runner.run_sweep(spec, str(workdir), inprocess=True, out=out)
  assert [(o.name, o.status) for o in outcomes] == [("a", "skipped"), ("b", "skipped")]
  assert "a: finished (checkpoint at step 20); skipped." in out.getvalue()
  assert before == {p: (workdir / p / "metrics.jsonl").read_text() for p in "ab"}

  # A sweep file edited so that a member no longer matches its directory is refused
  # before anything runs (train.num_steps may change: a finished run is then extended).
  edited = write_sweep(tmp_path, f"""
def get_sweep():
  return [Member("a", "configs/mnist_fig1.py:bn", {{**{TINY!r}, "optim.learning_rate": 0.1}})]
""", name="edited.py")
  with pytest.raises(SweepError, match=r"a: optim.learning_rate: 0.5 in the workdir, 0.1 now"):
    sweep_runner.run_sweep(edited, str(workdir), inprocess=True, out=io.StringIO())


def test_subprocess_member_runs_the_printed_command(tmp_path):
  spec = write_sweep(tmp_path, f"""
def get_sweep():
  return [Member("a", "configs/mnist_fig1.py:no_bn", {{**{TINY!r}, "train.num_steps": 10}})]
""")
  workdir = tmp_path / "runs"
  out = io.StringIO()
  outcomes = sweep_runner.run_sweep(spec, str(workdir), out=out)
  assert [(o.name, o.status, o.step) for o in outcomes] == [("a", "finished", 10)]
  log = (workdir / "a" / "sweep.log").read_text()
  assert "scripts/train.py --config=configs/mnist_fig1.py:no_bn" in log
  assert "'--config.model.hidden_units=(8, 8)'" in log
  saved = json.loads((workdir / "a" / "config.json").read_text())
  assert saved["model"]["hidden_units"] == [8, 8] and saved["train"]["num_steps"] == 10


# ---------------------------------------------------------------------------- report


def write_metrics(run_dir, rows):
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def evals(pairs):
  return [{"step": s, "eval/accuracy": a, "eval/loss": 1.0} for s, a in pairs]


@pytest.fixture
def hand_made(tmp_path):
  w = tmp_path / "sweep"
  # inception: reaches 0.722 at 300 as a float32 mean may store it (one ulp below);
  # its maximum, 0.722, first at 400.
  below = float(np.nextafter(np.float32(0.722), np.float32(0)))
  assert below < 0.722
  write_metrics(w / "inception", evals([(0, 0.1), (100, 0.5), (200, 0.7),
                                        (300, below), (400, 0.722), (500, 0.722)]) +
                [{"step": 100, "steps_per_sec": 10.0}, {"step": 200, "steps_per_sec": 30.0},
                 {"step": 300, "steps_per_sec": 20.0}])
  # bn_x5: passes the target at 200, peaks at 300 (0.76), ends lower; a resume rewrote
  # step 200 (the later row wins) and a crash cut the last line.
  write_metrics(w / "bn_x5", evals([(0, 0.1), (100, 0.6), (200, 0.70), (200, 0.73),
                                    (300, 0.76), (400, 0.74)]))
  with open(w / "bn_x5" / "metrics.jsonl", "a") as f:
    f.write('{"step": 500, "eval/accur')
  # bn_x5_sigmoid: never reaches it.
  write_metrics(w / "bn_x5_sigmoid", evals([(0, 0.1), (100, 0.65), (200, 0.698),
                                            (300, 0.69)]))
  (w / "sweep.json").write_text(json.dumps(
      {"members": [{"name": n} for n in ("inception", "bn_x5", "bn_x5_sigmoid", "later")]}))
  return w


def test_report_on_hand_made_metrics(hand_made):
  r = report.build(str(hand_made), 0.722, paper=True)
  s = {m.name: m for m in r.summaries}
  # In sweep.json's order; a member not run yet is listed without numbers.
  assert [m.name for m in r.summaries] == ["inception", "bn_x5", "bn_x5_sigmoid", "later"]
  assert s["later"].num_evals == 0 and s["later"].max_accuracy is None
  assert (s["inception"].steps_to_target, s["inception"].max_step) == (300, 400)
  assert s["inception"].steps_per_sec == 20.0  # median of 10, 30, 20
  assert s["bn_x5"].steps_to_target == 200 and s["bn_x5"].max_accuracy == 0.76
  assert (s["bn_x5"].max_step, s["bn_x5"].final_accuracy, s["bn_x5"].final_step) == (300, 0.74, 400)
  assert s["bn_x5_sigmoid"].steps_to_target is None
  assert (s["bn_x5_sigmoid"].max_accuracy, s["bn_x5_sigmoid"].max_step) == (0.698, 200)

  md, js, png = report.write(r, log_steps=True)
  data = json.loads(open(js).read())
  assert data["members"]["bn_x5_sigmoid"]["steps_to_target"] == "not reached"
  assert data["members"]["bn_x5"]["steps_to_target"] == 200
  assert data["paper_figure3"]["bn_x5"] == {"label": "BN-x5", "steps_to_target": 2.1e6,
                                            "max_accuracy": 0.73, "steps_to_max": None}
  assert data["paper_figure3"]["bn_x5_sigmoid"]["steps_to_target"] == "not reached"
  text = open(md).read()
  assert "| bn_x5 | 200 | 76.00% | 300 | 74.00% | 400 | – | 2.1M | 73.00% |" in text
  assert "| bn_x5_sigmoid | not reached | 69.80% | 200 |" in text
  assert "| later | no evaluations yet |" in text
  assert "| BN-x30 | 2.7M | 74.80% |" in text and "| Inception | 31.0M | 72.20% |" in text
  assert os.path.getsize(png) > 10_000


def test_report_target_is_a_members_maximum(hand_made):
  r = report.build(str(hand_made), "bn_x5")  # the paper's 72.2% is Inception's maximum
  assert r.target == 0.76
  s = {m.name: m for m in r.summaries}
  assert s["bn_x5"].steps_to_target == 300
  assert s["inception"].steps_to_target is None
  assert "fewer steps than bn_x5" in report.markdown(r)
  with pytest.raises(ValueError, match="neither a number, a member nor a seed group"):
    report.build(str(hand_made), "bn_x99")
  with pytest.raises(ValueError, match="in \\[0, 1\\]"):
    report.build(str(hand_made), 72.2)
