"""Sweeps as SLURM jobs (scripts/sweep.py --launcher=slurm, --status, --cancel) against a
real one-node SLURM (scripts/local_slurm.sh up), not a mock.

A two-member MNIST sweep submitted as jobs ends with the same report as the same sweep run
here; resubmitting submits nothing for finished or queued members; --cancel leaves no job
behind; a member that fails at run time is reported failed with its log and is not
resubmitted past --max_failures; a workdir a live run holds is not submitted. Skipped,
saying why, where SLURM cannot start (the same check as tests/test_slurm.py).
"""

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from bn_inception import workdir as workdir_lib
from bn_inception.workdir_lock import workdir_lock
from bn_inception import launch, report, sweep_jobs, sweep_runner
from test_slurm import (HAVE_MNIST, REPO, _in_queue, _slurm_unavailable,  # noqa: F401
                        slurm)  # (a fixture)

NUM_STEPS = 200
TINY = {"model.hidden_units": (16, 16), "train.num_steps": NUM_STEPS,
        "train.checkpoint_every": 100, "train.log_every": 100, "train.eval_every": 100,
        "train.eval_batch_size": 2000, "train.eval_at_start": False}
# time_min >= 50: submitit counts a notice as a preemption, not a timeout (launch.py).
RESOURCES = {"time_min": 60, "signal_delay_s": 30}


def write_sweep(path, members: str, resources=RESOURCES):
  path.write_text(f"""from bn_inception.sweep import Member
TINY = {TINY!r}
def get_sweep():
  return [{members}]
def get_resources():
  return {resources!r}
""")
  return str(path)


def env():
  e = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
           XLA_FLAGS="--xla_force_host_platform_device_count=1")
  if not os.environ.get("BN_INCEPTION_DATA"):
    e["BN_INCEPTION_DATA"] = str(REPO.parent / "shared" / "data")
  return e


def sweep_cli(*args):
  """scripts/sweep.py as a user runs it (its environment reaches the jobs: sbatch exports
  it)."""
  return subprocess.run([sys.executable, "scripts/sweep.py", *args], cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=300)


def job_ids(workdir, names):
  return {n: launch.submitted_jobs(sweep_jobs.job_folder(str(workdir), n)) for n in names}


def wait_ended(ids, timeout=420):
  t0 = time.time()
  while True:
    states = launch.job_states(ids)
    if not any(s.active or s.state == "unknown" for s in states.values()):
      return states
    if time.time() - t0 > timeout:
      launch.cancel(ids)
      pytest.fail(f"jobs not ended after {timeout} s: {states}")
    time.sleep(1.0)


def rows_by_name(spec, workdir):
  return {r.name: r for r in sweep_jobs.status(spec, str(workdir))}


def report_rows(workdir):
  """report.py's table rows without the steps/s column (a speed, not a result)."""
  text = report.markdown(report.build(str(workdir), 0.9))
  rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")]
  return [r[:6] for r in rows[1:]], text


# ------------------------------------------------------------------ bad input


def test_launcher_flags_and_resource_fields():
  assert launch.without_launcher_flags(
      ["--workdirs=a", "--launcher=slurm", "--slurm.gpus_per_node=8", "--crops", "1",
       "--launcher", "slurm", "--slurm.sbatch_options.exclusive", "True", "--output_dir=o"]
  ) == ["--workdirs=a", "--crops", "1", "--output_dir=o"]
  r = launch.resources({"gpus_per_node": 8, "sbatch_options": {"exclusive": True}})
  assert (r.gpus_per_node, r.nodes, dict(r.sbatch_options)) == (8, 1, {"exclusive": True})
  with pytest.raises(launch.LaunchError, match="unknown SLURM resource field 'gpus'"):
    launch.resources({"gpus": 8})
  with pytest.raises(launch.LaunchError, match="slurm.nodes='two'"):
    launch.resources({"nodes": "two"})


def test_no_sbatch_or_an_impossible_request_submits_and_writes_nothing(tmp_path, monkeypatch):
  spec = write_sweep(tmp_path / "s.py", 'Member("a", "configs/mnist_fig1.py", TINY)')
  workdir = tmp_path / "runs"
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  with pytest.raises(launch.LaunchError, match="^`sbatch` was not found on PATH"):
    sweep_jobs.submit_sweep(spec, str(workdir), launch.resources(RESOURCES))
  monkeypatch.undo()
  if not _slurm_unavailable():
    with pytest.raises(launch.LaunchError, match="Invalid partition name specified$"):
      sweep_jobs.submit_sweep(spec, str(workdir),
                              launch.resources({**RESOURCES, "partition": "no_such"}))
  assert not workdir.exists()


# ------------------------------------------------------------------ the two-member sweep


@pytest.fixture(scope="module")
def two_members(slurm, tmp_path_factory):
  if not HAVE_MNIST:
    pytest.skip("MNIST not found beside the repo (set BN_INCEPTION_DATA)")
  root = tmp_path_factory.mktemp("sweep")
  spec = write_sweep(root / "two.py", 'Member("bn", "configs/mnist_fig1.py:bn", TINY), '
                                      'Member("no_bn", "configs/mnist_fig1.py:no_bn", TINY)')
  workdir = root / "jobs"
  t0 = time.time()
  proc = sweep_cli(f"--sweep={spec}", f"--workdir={workdir}", "--launcher=slurm",
                   "--slurm.signal_delay_s=20")  # over get_resources()' 30
  submit_s = time.time() - t0
  assert proc.returncode == 0, proc.stderr[-3000:]
  return spec, workdir, proc.stdout, submit_s


def test_two_member_sweep_as_jobs_matches_the_local_sweep(two_members, tmp_path):
  spec, workdir, out, submit_s = two_members
  submitted = dict(re.findall(r"\[sweep\] (\S+): submitted as job (\d+) \(starting of 200",
                              out))
  assert submitted.keys() == {"bn", "no_bn"}, out
  assert job_ids(workdir, submitted) == {n: [j] for n, j in submitted.items()}
  assert "1 node, 1 task(s)/node, 1 CPU(s)/task, 60 min per member" in out
  # The sweep file's resources, with the command line's over them.
  asked = json.loads((workdir / "sweep.json").read_text())["slurm"]
  assert (asked["time_min"], asked["signal_delay_s"]) == (60, 20)
  script = os.path.join(sweep_jobs.job_folder(str(workdir), "bn"),
                        f"{submitted['bn']}_submission.sh")
  assert "#SBATCH --signal=USR2@20" in open(script).read()

  # While they are queued or running, a second submission submits nothing.
  again = io.StringIO()
  plan = sweep_jobs.submit_sweep(spec, str(workdir), launch.resources(RESOURCES), out=again)
  assert {p.name: (p.action, p.job_id) for p in plan} == {
      n: ("active", j) for n, j in submitted.items()}, again.getvalue()
  assert job_ids(workdir, submitted) == {n: [j] for n, j in submitted.items()}

  # The same sweep here, one member after another, while the jobs run.
  local = tmp_path / "local"
  outcomes = sweep_runner.run_sweep(spec, str(local), inprocess=True, out=io.StringIO())
  assert [o.status for o in outcomes] == ["finished", "finished"]

  states = wait_ended(list(submitted.values()))
  assert {s.state for s in states.values()} == {"completed"}, states
  proc = sweep_cli(f"--sweep={spec}", f"--workdir={workdir}", "--status")
  assert proc.returncode == 0, proc.stderr[-3000:]
  table = proc.stdout.splitlines()
  assert table[0].split() == ["member", "state", "job", "step", "eval", "accuracy", "updated"]
  local_rows = rows_by_name(spec, local)
  for line, name in zip(table[1:3], ["bn", "no_bn"]):
    acc = local_rows[name].accuracy
    assert 0 < acc < 1
    cells = line.split()
    assert cells[:4] == [name, "finished", submitted[name], "200/200"], line
    assert cells[4:6] == [f"{100 * acc:.2f}%", "@"] and cells[6] == "200", line
  assert table[-1] == "2 finished"
  assert local_rows["bn"].accuracy > 0.5  # chance: 0.1 (no_bn's sigmoids barely move yet: Fig. 1)
  assert [(r.state, r.job) for r in local_rows.values()] == [("finished", "")] * 2

  # report.py: the same table from the jobs' workdirs as from the local run's.
  got, text = report_rows(workdir)
  want, _ = report_rows(local)
  assert [r[0] for r in got] == ["| bn", "| no_bn"] and got == want, text

  # Finished members are not submitted again.
  plan = sweep_jobs.submit_sweep(spec, str(workdir), launch.resources(RESOURCES),
                                 out=io.StringIO())
  assert [p.action for p in plan] == ["finished", "finished"]
  assert job_ids(workdir, submitted) == {n: [j] for n, j in submitted.items()}
  print(f"submit {submit_s:.1f} s")


@pytest.mark.slow  # one more job, ~50 s on 2 shared cores
def test_evaluation_as_a_job(two_members, tmp_path):
  """scripts/evaluate.py --launcher=slurm, run from another directory with a relative
  --output_dir: the job runs the same command there and its report gives the member's
  error as 1 - the accuracy its training evaluated on the same split."""
  spec, workdir, _, _ = two_members
  wait_ended([j for ids in job_ids(workdir, ["bn"]).values() for j in ids])
  [row] = [r for r in sweep_jobs.status(spec, str(workdir)) if r.name == "bn"]
  assert row.state == "finished"
  proc = subprocess.run(
      [sys.executable, str(REPO / "scripts" / "evaluate.py"), f"--workdirs={workdir}/bn",
       "--crops=1", "--output_dir=eval", "--batch_size=2000", "--launcher=slurm",
       "--slurm.time_min=60"], cwd=tmp_path, env=env(), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  [job] = re.findall(r"^submitted evaluation as job (\d+) \(1 node, ", proc.stdout, re.M)
  assert f"report: {tmp_path / 'eval' / 'report.md'}" in proc.stdout
  folder = tmp_path / "eval" / "slurm"
  assert launch.submitted_jobs(str(folder)) == [job]
  states = wait_ended([job], timeout=300)
  out, err = (open(p).read() for p in launch.log_paths(str(folder), job))
  assert states[job].state == "completed", err[-3000:]
  [command] = [line for line in out.splitlines() if line.startswith("# ")]  # CommandJob's
  assert "--launcher" not in command and "--slurm." not in command
  assert "--output_dir=eval" in command
  data = json.loads((tmp_path / "eval" / "report.json").read_text())
  [bn] = [r for res in data["results"] for r in res["rows"] if r["model"] == "bn"]
  assert bn["examples"] == 10_000
  assert bn["top1_error"] == pytest.approx(100 * (1 - row.accuracy), abs=1e-3)


# ------------------------------------------------------------------ failures, queue, cancel


def test_member_failing_at_run_time_is_reported_with_its_log(slurm, tmp_path):
  """A data_dir that passes every check but is not there: the job fails, --status says
  so with the error and the log, and past --max_failures it is not submitted again."""
  spec = write_sweep(tmp_path / "bad.py", 'Member("bad", "configs/mnist_fig1.py", {**TINY, '
                     '"data.data_dir": "/nonexistent/mnist", "data.download_if_missing": False})')
  workdir = tmp_path / "runs"
  [p] = sweep_jobs.submit_sweep(spec, str(workdir), launch.resources(RESOURCES),
                                out=io.StringIO())
  assert p.action == "submitted"
  states = wait_ended([p.job_id], timeout=240)
  assert states[p.job_id].state == "failed"
  [row] = sweep_jobs.status(spec, str(workdir))
  folder = sweep_jobs.job_folder(str(workdir), "bad")
  log = launch.log_paths(folder, p.job_id)[1]
  assert (row.state, row.job, row.step) == ("failed", p.job_id, 0)
  assert row.detail.startswith("FAILED: error: ") and "/nonexistent/mnist" in row.detail
  assert row.detail.endswith(f"(log {log})") and os.path.exists(log)
  table = sweep_jobs.status_table([row])
  assert f"bad: failed: FAILED: error: " in table and table.endswith("1 failed")

  out = io.StringIO()
  [again] = sweep_jobs.submit_sweep(spec, str(workdir), launch.resources(RESOURCES),
                                    max_failures=1, out=out)
  assert again.action == "failed" and f"(log {log})" in out.getvalue()
  assert "1 failed job(s) (--max_failures=1)" in out.getvalue()
  assert launch.submitted_jobs(folder) == [p.job_id]


def test_queued_members_are_not_resubmitted_and_cancel_leaves_no_job(slurm, tmp_path):
  """Jobs held in the queue (--begin in an hour); member 'busy' has a live local run
  holding its workdir lock, so it is not submitted."""
  spec = write_sweep(tmp_path / "held.py",
                     'Member("a", "configs/mnist_fig1.py", TINY), '
                     'Member("busy", "configs/mnist_fig1.py", TINY)',
                     {**RESOURCES, "sbatch_options": {"begin": "now+1hour"}})
  workdir = tmp_path / "runs"
  resources = launch.resources({**RESOURCES, "sbatch_options": {"begin": "now+1hour"}})
  with workdir_lock(str(workdir / "busy")):
    out = io.StringIO()
    plan = sweep_jobs.submit_sweep(spec, str(workdir), resources, out=out)
    assert [p.action for p in plan] == ["submitted", "busy"], out.getvalue()
    assert f"busy: {workdir / 'busy'} is in use by pid {os.getpid()}" in out.getvalue()
    job = plan[0].job_id
    rows = rows_by_name(spec, workdir)
    assert (rows["a"].state, rows["a"].job) == ("pending", job)
    assert (rows["busy"].state, rows["busy"].job) == ("running", f"pid {os.getpid()}")
    plan = sweep_jobs.submit_sweep(spec, str(workdir), resources, out=io.StringIO())
    assert [(p.action, p.job_id) for p in plan] == [("active", job), ("busy", "")]
  assert job_ids(workdir, ["a", "busy"]) == {"a": [job], "busy": []}

  proc = sweep_cli(f"--sweep={spec}", f"--workdir={workdir}", "--cancel")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == f"[sweep] a: cancelled job {job} (pending)"
  t0 = time.time()
  while _in_queue(job):
    assert time.time() - t0 < 60, "a cancelled job still queued after 60 s"
    time.sleep(0.5)
  rows = rows_by_name(spec, workdir)
  assert [(r.state, r.job) for r in rows.values()] == [("cancelled", job), ("not started", "")]
  out = io.StringIO()
  assert sweep_jobs.cancel_sweep(spec, str(workdir), out=out) == {}
  assert out.getvalue() == f"[sweep] no pending or running jobs in {workdir}\n"


@pytest.mark.slow  # ~90 s: a 2,000-step member, preempted once
def test_preempted_member_is_requeued_and_resumes(slurm, tmp_path):
  """The notice SLURM sends before a time limit (USR2): --status shows the member
  requeued, a resubmission adds nothing, and the requeued job resumes to the end."""
  if not HAVE_MNIST:
    pytest.skip("MNIST not found beside the repo (set BN_INCEPTION_DATA)")
  spec = write_sweep(tmp_path / "long.py", 'Member("m", "configs/mnist_fig1.py", {**TINY, '
                     '"train.num_steps": 2000, "train.eval_every": 2000})')
  workdir = tmp_path / "runs"
  [p] = sweep_jobs.submit_sweep(spec, str(workdir), launch.resources(RESOURCES),
                                out=io.StringIO())
  t0 = time.time()
  while not (launch.job_states([p.job_id])[p.job_id].state == "running" and
             workdir_lib.finished_steps(str(workdir / "m"))):
    assert time.time() - t0 < 240, "no checkpoint after 240 s"
    time.sleep(0.5)
  subprocess.run(["scancel", "--signal=USR2", p.job_id], check=True)
  seen = set()
  while True:
    [row] = sweep_jobs.status(spec, str(workdir))
    seen.add((row.state, row.detail))
    if row.state == "preempted+requeued" or row.detail == "requeued 1x":
      break
    assert time.time() - t0 < 300, f"not requeued: {seen}"
    time.sleep(0.3)
  plan = sweep_jobs.submit_sweep(spec, str(workdir), launch.resources(RESOURCES),
                                 out=io.StringIO())
  assert [(q.action, q.job_id) for q in plan] == [("active", p.job_id)]
  states = wait_ended([p.job_id])
  assert (states[p.job_id].state, states[p.job_id].restarts) == ("completed", 1)
  [row] = sweep_jobs.status(spec, str(workdir))
  assert (row.state, row.job, row.step) == ("finished", p.job_id, 2000)
  err = open(launch.log_paths(sweep_jobs.job_folder(str(workdir), "m"), p.job_id)[1]).read()
  assert err.count("preempted at step") == 1  # the trainer's warning (stderr)
