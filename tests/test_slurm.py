"""bn_inception/launch.py against a real SLURM (scripts/local_slurm.sh up), not a mock.

Jobs run `python scripts/train.py ...` on a tiny MNIST MLP. A job preempted by SLURM is
requeued, resumes from its checkpoint and ends with parameters, BN statistics and optimizer
state bit-for-bit equal to an uninterrupted job. The tests that need the scheduler skip,
saying why, where `sinfo` does not answer.
"""

import ast
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bn_inception import launch
from test_reliability import load_state, steps_on_disk

REPO = Path(__file__).resolve().parents[1]
NUM_STEPS = 300
TRAIN = [sys.executable, "scripts/train.py", "--config=configs/mnist_fig1.py",
         "--config.model.hidden_units=(16,16)", f"--config.train.num_steps={NUM_STEPS}",
         "--config.train.checkpoint_every=50", "--config.train.log_every=50",
         f"--config.train.eval_every={NUM_STEPS}", "--config.train.eval_batch_size=2000",
         "--config.train.eval_at_start=False"]
STEP_SLEEP_S = 0.03  # 250 steps after the first checkpoint: > 7 s to send the notice in
HAVE_MNIST = bool(glob.glob(str(REPO.parent / "shared" / "data" / "mnist" / "train-images*")) or
                  os.environ.get("BN_INCEPTION_DATA"))


def _slurm_unavailable() -> str:
  """Why the tests cannot use SLURM here ('' if they can)."""
  if shutil.which("sinfo") is None:
    return "SLURM not installed (`sinfo` not on PATH); start one: sudo scripts/local_slurm.sh up"
  conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
  if not os.path.exists(conf):  # sinfo would retry for 60 s
    return f"no SLURM configuration at {conf}; start one: sudo scripts/local_slurm.sh up"
  try:
    proc = subprocess.run(["sinfo", "-h", "-o", "%a %T"], capture_output=True, text=True,
                          timeout=15)
  except subprocess.TimeoutExpired:
    return "`sinfo` did not answer within 15 s (slurmctld down?): scripts/local_slurm.sh status"
  states = proc.stdout.split()
  if proc.returncode != 0 or "up" not in states:
    return (f"`sinfo` found no partition up ({(proc.stderr or proc.stdout).strip()[:200]}); "
            "start one: sudo scripts/local_slurm.sh up")
  if not any(s.startswith(("idle", "mixed", "allocated")) for s in states):
    return f"no SLURM node takes jobs (`sinfo`: {proc.stdout.strip()})"
  return ""


@pytest.fixture(scope="module")
def slurm():
  reason = _slurm_unavailable()
  if reason:
    pytest.skip(reason)


def _resources(**overrides):
  r = launch.slurm_config()
  r.time_min = 60  # >= 50: submitit counts a notice as a preemption, not a timeout
  r.signal_delay_s = 30
  r.update(overrides)
  return r


def _env(**extra):
  env = {"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  if os.environ.get("BN_INCEPTION_DATA"):
    env["BN_INCEPTION_DATA"] = os.environ["BN_INCEPTION_DATA"]
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _wait(job_id, until, timeout=240, what="state"):
  """Poll job_states until `until(state)`; return that JobState."""
  t0 = time.time()
  while True:
    state = launch.job_states([job_id])[job_id]
    if until(state):
      return state
    if time.time() - t0 > timeout:
      launch.cancel([job_id])
      pytest.fail(f"job {job_id}: timed out waiting for {what}; last {state}")
    time.sleep(0.5)


def _logs(folder, job_id):
  return tuple(Path(p).read_text() for p in launch.log_paths(folder, job_id))


def _wait_done(job_id, folder, timeout=240):
  state = _wait(job_id, lambda s: s.state not in launch.ACTIVE_STATES + ("unknown",), timeout,
                "the end of the job")
  return state, *_logs(folder, job_id)


def _in_queue(job_id) -> bool:
  out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
  return str(job_id) in out.split()


# ------------------------------------------------------------------- without a scheduler


def test_no_sbatch_is_one_clear_error_and_creates_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  for call in (lambda: launch.submit(TRAIN, str(tmp_path / "jobs"), _resources(), "m"),
               lambda: launch.validate(_resources())):
    with pytest.raises(launch.LaunchError) as e:
      call()
    msg = str(e.value)
    assert "\n" not in msg and "`sbatch` was not found" in msg
    assert "--launcher=local" in msg and "--print_commands" in msg
  assert not (tmp_path / "jobs").exists()


def test_resources_section_maps_to_sbatch_options():
  r = _resources(gpus_per_node=8, mem_gb=1.5, partition="gpu", account="lab",
                 sbatch_options={"exclusive": True})
  params = launch._sbatch_parameters(r, "m")
  assert params["ntasks_per_node"] == 8  # one task per GPU
  assert params["gpus_per_node"] == 8 and params["mem"] == "1536M"
  assert (params["partition"], params["account"], params["time"]) == ("gpu", "lab", 60)
  assert "qos" not in params and "constraint" not in params  # "" asks for nothing
  extra = params["additional_parameters"]
  assert extra["requeue"] is True and extra["exclusive"] is True
  assert extra["chdir"] == str(REPO)
  assert launch._sbatch_parameters(_resources(tasks_per_node=1, gpus_per_node=8),
                                   "m")["ntasks_per_node"] == 1
  with pytest.raises(launch.LaunchError, match=r"slurm.nodes=0 must be at least 1"):
    launch._sbatch_parameters(_resources(nodes=0), "m")


# ------------------------------------------------------------------- against SLURM


@pytest.mark.parametrize("overrides, reason", [
    ({"gpus_per_node": 64}, "Requested node configuration is not available"),
    ({"partition": "no_such_partition"}, "Invalid partition name specified"),
])
def test_impossible_request_gives_slurms_reason_and_queues_nothing(
    slurm, tmp_path, overrides, reason):
  r = _resources(**overrides)
  name = f"bad-{tmp_path.name}"
  for call in (lambda: launch.validate(r), lambda: launch.submit(TRAIN, str(tmp_path / "jobs"),
                                                                  r, name)):
    with pytest.raises(launch.LaunchError) as e:
      call()
    assert "\n" not in str(e.value) and str(e.value).endswith(reason), e.value
  assert not (tmp_path / "jobs").exists()  # submitit's pickle and script removed
  out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True,
                       text=True).stdout
  assert out.strip() == ""


@pytest.fixture(scope="module")
def reference(slurm, tmp_path_factory):
  """An uninterrupted training job, submitted now and awaited by whoever needs it."""
  if not HAVE_MNIST:
    pytest.skip("MNIST not found beside the repo (set BN_INCEPTION_DATA)")
  root = tmp_path_factory.mktemp("reference")
  workdir, folder = root / "run", root / "slurm"
  job_id = launch.submit([*TRAIN, f"--workdir={workdir}"], str(folder), _resources(),
                         "reference", env=_env())
  return job_id, workdir, folder


def _interrupted_job_resumes_exactly(reference, tmp_path, interrupt):
  """Submit the reference's command, run `interrupt + [job id]` once its first checkpoint
  is written, then check the job was requeued once, resumed from the step it saved and
  ended equal to the uninterrupted job. Returns its (stdout, stderr) logs."""
  workdir, folder = tmp_path / "run", tmp_path / "slurm"
  slow = [sys.executable, "tests/fault_injection.py", f"--sleep_after_step={STEP_SLEEP_S}",
          "--", *TRAIN[2:]]  # the same train.py run, each step slowed from outside
  job_id = launch.submit([*slow, f"--workdir={workdir}"], str(folder), _resources(),
                         tmp_path.name, env=_env())
  _wait(job_id, lambda s: s.state == "running" and 50 in steps_on_disk(workdir),
        what="the first checkpoint")
  subprocess.run([*interrupt, job_id], check=True)
  state, out, err = _wait_done(job_id, folder)
  assert state.state == "completed" and state.restarts == 1, (state, out[-2000:], err[-3000:])
  stops = re.findall(r"preempted at step (\d+);", err)  # the trainer's warning (stderr)
  assert len(stops) == 1, err[-3000:]
  step = int(stops[0])
  assert 50 <= step < NUM_STEPS
  assert f"Resumed from step {step} " in err

  ref_state, ref_out, ref_err = _wait_done(reference[0], reference[2])
  assert ref_state.state == "completed" and ref_state.restarts == 0, ref_err[-3000:]
  a, b = load_state(workdir), load_state(reference[1])
  assert a.keys() == b.keys() and int(a["['step']"]) == NUM_STEPS
  for k in a:
    assert np.array_equal(a[k], b[k]), f"{k} differs from the uninterrupted job"
  return out, err


def test_notice_before_the_limit_checkpoints_requeues_and_resumes_exactly(reference, tmp_path):
  """USR2 is the notice SLURM sends `signal_delay_s` before the time limit
  (`--signal=USR2@delay`): the trainer checkpoints, submitit requeues the job."""
  out, err = _interrupted_job_resumes_exactly(reference, tmp_path,
                                              ["scancel", "--signal=USR2"])
  assert "requeueing" in out and "Requeued job" in out + err  # ours, then submitit's


def test_a_training_job_runs_to_the_end(reference):
  job_id, workdir, folder = reference
  state, out, err = _wait_done(job_id, folder)
  assert state.state == "completed" and state.slurm_state == "COMPLETED", err[-3000:]
  assert steps_on_disk(workdir)[-1] == NUM_STEPS
  last_eval = [ast.literal_eval(line) for line in out.splitlines() if line.startswith("{'eval/")]
  assert len(last_eval) == 1 and last_eval[0]["eval/accuracy"] > 0.5  # chance: 0.1
  script = (Path(folder) / f"{job_id}_submission.sh").read_text()
  assert "#SBATCH --signal=USR2@30" in script and "#SBATCH --requeue" in script
  assert launch.submitted_jobs(str(folder)) == [job_id]


def test_failed_command_is_reported_failed_with_its_log(slurm, tmp_path):
  folder = tmp_path / "slurm"
  job_id = launch.submit([*TRAIN, f"--workdir={tmp_path / 'run'}",
                          "--config.train.batch_sise=3"], str(folder), _resources(), "bad",
                         env=_env())
  state, out, err = _wait_done(job_id, folder, timeout=120)
  assert (state.state, state.slurm_state) == ("failed", "FAILED")
  error = launch.last_error(str(folder), job_id)
  assert error.startswith("error: unknown config field --config.train.batch_sise"), err
  assert "exited with status 2" in err  # CommandFailed, in the job's stderr log
  assert launch.log_paths(str(folder), job_id)[1] == str(folder / f"{job_id}_0_log.err")
  assert not (tmp_path / "run").exists()


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def test_cancel_leaves_no_job_behind(slurm, tmp_path):
  folder, pid_file = tmp_path / "slurm", tmp_path / "pid"
  running = launch.submit(
      [sys.executable, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write("
       "str(os.getpid())); time.sleep(600)"], str(folder), _resources(), "cancel-running")
  _wait(running, lambda s: s.state == "running" and pid_file.exists() and
        pid_file.read_text(), what="the command to start")
  queued = launch.submit([sys.executable, "-c", "pass"], str(folder),
                         _resources(sbatch_options={"begin": "now+1hour"}), "cancel-queued")
  assert launch.job_states([queued])[queued].state == "pending"
  launch.cancel([running, queued])
  t0 = time.time()
  while _in_queue(running) or _in_queue(queued) or _alive(int(pid_file.read_text())):
    assert time.time() - t0 < 60, "a cancelled job or its command still there after 60 s"
    time.sleep(0.5)
  states = launch.job_states([running, queued])
  assert {s.state for s in states.values()} == {"cancelled"}, states
  assert launch.submitted_jobs(str(folder)) == sorted([running, queued], key=int)


@pytest.mark.slow
def test_scheduler_requeue_resumes_exactly(reference, tmp_path):
  """`scontrol requeue` (as SLURM's own preemption, PreemptMode=REQUEUE): SIGTERM reaches
  the trainer, which checkpoints before SLURM kills the job, then the job starts again."""
  out, err = _interrupted_job_resumes_exactly(reference, tmp_path, ["scontrol", "requeue"])
  assert "DUE TO JOB REQUEUE" in err
