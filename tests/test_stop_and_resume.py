"""Stops and resumes beyond the loop's own SIGTERM: signals during start-up, a second
signal, a preemption at a due evaluation, the metrics after a resume, a multi-process
stop where only one process is signalled, and a full disk.

No test hook slows the runs down: an evaluation of the whole MNIST test set at every
step (`eval_every=1`) makes a tiny run last seconds, and makes every stop land on a
step whose evaluation is due (so a stop must save first and leave that evaluation to
the resumed run). A resumed run must end with every array, and every train/* and
eval/* row of metrics.jsonl, equal bit for bit to an uninterrupted run's.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_reliability import load_state  # plain orbax, as the reliability tests read it

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BN_INCEPTION_DATA", REPO.parent / "shared" / "data"))
NUM_STEPS = 60
TINY = {"model.hidden_units": (16, 16), "train.num_steps": NUM_STEPS,
        "train.checkpoint_every": 20, "train.log_every": 7, "train.eval_every": 1,
        "train.eval_batch_size": 10000, "train.eval_at_start": False}
TALLY = {"faults_injected": 0, "resumes_matched": 0, "events": []}

pytestmark = pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason="MNIST not found")


@pytest.fixture(scope="module", autouse=True)
def report_tally():
  yield
  print(f"\nstop-and-resume tally: {json.dumps(TALLY)}")
  if os.environ.get("STOP_TALLY"):
    Path(os.environ["STOP_TALLY"]).write_text(json.dumps(TALLY))


def tiny_config(**changes):
  from configs import mnist_fig1
  c = mnist_fig1.get_config()
  for field, value in {**TINY, **changes}.items():
    section, name = field.split(".")
    c[section][name] = value
  return c


def cli_flags(**changes):
  def text(v):
    return f"({','.join(map(str, v))})" if isinstance(v, tuple) else str(v)
  return ["--config=configs/mnist_fig1.py"] + [
      f"--config.{k}={text(v)}" for k, v in {**TINY, **changes}.items()]


def env(devices=1):
  e = {k: v for k, v in os.environ.items() if k != "BN_INCEPTION_DEBUG"}
  e.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
           XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return e


def launch(workdir, **changes):
  return subprocess.Popen([sys.executable, "scripts/train.py", f"--workdir={workdir}",
                           *cli_flags(**changes)], cwd=REPO, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def steps_on_disk(workdir):
  d = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def wait_for(predicate, proc=None, timeout=180, what="condition"):
  t0 = time.time()
  while not predicate():
    if proc is not None and proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f"ended (rc={proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-3000:]}")
    if time.time() - t0 > timeout:
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.005)


def assert_same_state(a, b):
  assert a.keys() == b.keys()
  for k in a:
    assert np.array_equal(a[k], b[k]), f"{k} differs"


def run_metrics(workdir):
  """{step: {metric: value}} of the train/* and eval/* rows (timing rows left out)."""
  from bn_inception.workdir import read_metrics
  rows = read_metrics(str(workdir))
  return {s: {k: v for k, v in r.items() if k.startswith(("train/", "eval/"))}
          for s, r in rows.items() if any(k.startswith(("train/", "eval/")) for k in r)}


def matched(event):
  TALLY["resumes_matched"] += 1
  TALLY["events"].append(event)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run, in this process."""
  from bn_inception import train
  workdir = tmp_path_factory.mktemp("reference") / "run"
  train.train_and_evaluate(tiny_config(), str(workdir))
  return workdir, load_state(workdir), run_metrics(workdir)


def signal_after_checkpoint(workdir, step, signum=signal.SIGTERM, pid=None, delay=0.0):
  """A thread that sends `signum` to `pid` (this process) once checkpoint `step` is on disk."""
  def go():
    while step not in steps_on_disk(workdir):
      time.sleep(0.005)
    time.sleep(delay)
    os.kill(pid or os.getpid(), signum)
  thread = threading.Thread(target=go, daemon=True)
  thread.start()
  return thread


def test_preempted_between_log_steps_resumes_with_equal_metrics(tmp_path, reference, capsys):
  """Item 8 and the save-first rule: the stop lands on a step with a due evaluation
  (eval_every=1) and, with log_every=7, almost surely between log steps; the resumed
  run's metrics.jsonl equals the uninterrupted run's row for row, bit for bit."""
  from bn_inception import train
  workdir = tmp_path / "run"
  signal_after_checkpoint(workdir, 20, delay=np.random.default_rng().uniform(0, 0.3))
  result = train.train_and_evaluate(tiny_config(), str(workdir))
  TALLY["faults_injected"] += 1
  step = result["preempted_at_step"]
  assert 20 <= step < NUM_STEPS and steps_on_disk(workdir)[-1] == step
  # The due evaluation of that step was left for the resumed run; the one before it ran.
  assert "eval/accuracy" not in run_metrics(workdir).get(step, {})
  assert "eval/accuracy" in run_metrics(workdir)[step - 1]
  result = train.train_and_evaluate(tiny_config(), str(workdir))
  assert "preempted_at_step" not in result
  assert_same_state(load_state(workdir), reference[1])
  assert run_metrics(workdir) == reference[2]
  matched(f"in-process SIGTERM at step {step} (log_every=7): state and metrics.jsonl equal")
  capsys.readouterr()


def test_stop_at_the_last_step_leaves_its_evaluation_to_the_rerun(tmp_path, reference):
  """A checkpoint saved with its evaluation pending (as a stop at the last step leaves
  it): rerunning the finished run does that evaluation, and nothing else."""
  import shutil
  from bn_inception import checkpoint as ckpt_lib, train
  workdir = tmp_path / "run"
  train.train_and_evaluate(tiny_config(**{"train.num_steps": 40}), str(workdir))
  # Rewrite the record of step 40 as a stop would have: eval pending, no eval row.
  trainer = train.Trainer(tiny_config())
  ckpt = ckpt_lib.Checkpointer(str(workdir), 20, 3, owner=True)
  state, meta = ckpt.restore(trainer.abstract_state)
  shutil.rmtree(workdir / "checkpoints" / "40")
  ckpt.manager.reload()
  ckpt.save(40, state, {**meta, "eval_pending": True}, force=True)
  ckpt.close()
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  (workdir / "metrics.jsonl").write_text("".join(
      json.dumps(r) + "\n" for r in rows if not (r["step"] == 40 and "eval/accuracy" in r)))
  result = train.train_and_evaluate(tiny_config(**{"train.num_steps": 40}), str(workdir))
  assert result["eval/accuracy"] == reference[2][40]["eval/accuracy"]
  assert run_metrics(workdir)[40]["eval/accuracy"] == reference[2][40]["eval/accuracy"]


def test_signals_during_start_up_exit_cleanly_and_write_nothing(tmp_path):
  procs = {}
  for name, signum in (("term", signal.SIGTERM), ("int", signal.SIGINT)):
    procs[name] = (launch(tmp_path / name), signum)
  time.sleep(2.0)  # imports, flags, data loading, compiling: no step yet
  for p, signum in procs.values():
    p.send_signal(signum)
    TALLY["faults_injected"] += 1
  for name, (p, signum) in procs.items():
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    lines = [l for l in out.splitlines() if l.startswith("stopped by")]
    assert lines == [f"stopped by {signal.Signals(signum).name} before any training step or "
                     "result; nothing was saved or changed. Rerun the same command."], out
    assert not (tmp_path / name).exists()


def test_a_second_signal_aborts_at_once_and_the_last_complete_checkpoint_resumes(
    tmp_path, reference):
  workdir = tmp_path / "run"
  p = launch(workdir)
  wait_for(lambda: 20 in steps_on_disk(workdir), p, what="the first checkpoint")
  p.send_signal(signal.SIGTERM)
  time.sleep(0.02)  # the stop's save is under way (or about to be)
  t0 = time.time()
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=60)
  TALLY["faults_injected"] += 2
  assert time.time() - t0 < 5
  assert p.returncode == -signal.SIGTERM, err[-3000:]  # killed by it: 143 in a shell
  assert "SIGTERM again aborts at once" in err
  assert "Traceback" not in err
  complete = steps_on_disk(workdir)[-1]
  p = launch(workdir)
  out, err = p.communicate(timeout=240)
  assert p.returncode == 0, err[-3000:]
  assert f"Resumed from step {complete} " in err
  assert not list((workdir / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
  assert_same_state(load_state(workdir), reference[1])
  matched(f"second SIGTERM: killed at once (143), resumed from step {complete}")


def test_sweep_member_stopped_during_start_up_is_stopped_not_failed(tmp_path):
  sweep = tmp_path / "sweep.py"
  overrides = ", ".join(f"'{k}': {v!r}" for k, v in TINY.items())
  sweep.write_text("from bn_inception.sweep import Member\n\ndef get_sweep():\n"
                   f"  return [Member('a', 'configs/mnist_fig1.py', {{{overrides}}}),\n"
                   f"          Member('b', 'configs/mnist_fig1.py', {{{overrides}}})]\n")
  p = subprocess.Popen([sys.executable, "scripts/sweep.py", f"--sweep={sweep}",
                        f"--workdir={tmp_path / 'w'}"], cwd=REPO, env=env(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in p.stdout:
    lines.append(line)
    if line.startswith("[sweep]") and " a: starting" in line:  # ('[sweep] 1/2 a: ...')
      time.sleep(2.0)
      p.send_signal(signal.SIGTERM)
      TALLY["faults_injected"] += 1
  p.wait(timeout=120)
  text = "".join(lines)
  assert p.returncode == 0, text[-3000:]
  summary = text[text.index("[sweep] summary:"):].splitlines()
  assert summary[1].split()[:2] == ["a", "stopped"] and summary[2].split()[:3] == [
      "b", "not", "started"], text[-2000:]
  assert "Traceback" not in text
  # Only the runner's own log: the member wrote nothing (no config.json, lock, checkpoints).
  assert [p.name for p in (tmp_path / "w" / "a").iterdir()] == ["sweep.log"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(workdir, steps, out):
  address = f"127.0.0.1:{_free_port()}"
  worker = str(REPO / "tests" / "stop_worker.py")
  return [subprocess.Popen(
      [sys.executable, worker, str(workdir), str(steps), str(out)],
      env={**env(4), "JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]


def _finish(procs, timeout=300):
  try:
    results = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, results):
    assert p.returncode == 0, err[-4000:]
  return [out for out, _ in results]


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_when_only_one_is_signalled(tmp_path):
  """2 processes x 4 CPU devices; SIGTERM reaches process 1 only. Both agree on the
  stop step (train.stop_agreed), save it and exit 0; the resumed 2-process run ends
  bit for bit equal to an uninterrupted one."""
  steps = 100  # about 0.3 s a step: 2 processes share 2 cores here
  ref = _two_processes(tmp_path / "ref", steps, tmp_path / "ref.npz")
  _finish(ref)
  procs = _two_processes(tmp_path / "run", steps, tmp_path / "first.npz")
  wait_for(lambda: 25 in steps_on_disk(tmp_path / "run"), procs[0], what="checkpoint 25",
           timeout=300)
  procs[1].send_signal(signal.SIGTERM)
  TALLY["faults_injected"] += 1
  outs = _finish(procs)
  stopped = [int(o.split("'preempted_at_step': ")[1].split("}")[0].split(",")[0])
             for o in outs]
  assert stopped[0] == stopped[1] < steps, outs
  assert steps_on_disk(tmp_path / "run")[-1] == stopped[0]
  _finish(_two_processes(tmp_path / "run", steps, tmp_path / "resumed.npz"))
  with np.load(tmp_path / "ref.npz") as a, np.load(tmp_path / "resumed.npz") as b:
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
      if k != "saved_on_devices":
        assert np.array_equal(a[k], b[k]), k
  matched(f"2 processes, SIGTERM to process 1 only: both saved step {stopped[0]}; resumed "
          "run equal")


def _mount_tmpfs(path, size):
  path.mkdir(exist_ok=True)
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_is_its_own_error_and_recovery_is_exact(tmp_path):
  """Train into a 2 MiB tmpfs until ENOSPC: exit status 3, one line, no traceback; after
  the filesystem grows, the same command resumes and ends equal to an uninterrupted run."""
  from bn_inception import train
  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "2M"):
    pytest.skip("mount -t tmpfs is not permitted here")
  try:
    big = {"model.hidden_units": (100, 100, 100), "train.checkpoint_every": 10,
           "train.keep_checkpoints": 10, "train.eval_every": 60, "train.log_every": 10}
    p = launch(disk / "run", **big)
    out, err = p.communicate(timeout=300)
    TALLY["faults_injected"] += 1
    assert p.returncode == 3, err[-3000:]
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: no space left on the device"), err
    assert "Traceback" not in err
    saved = steps_on_disk(disk / "run")
    assert saved and saved[-1] < NUM_STEPS
    subprocess.run(["mount", "-o", "remount,size=64M", str(disk)], check=True)
    p = launch(disk / "run", **big)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert f"Resumed from step {saved[-1]} " in err
    reference = tmp_path / "reference"
    train.train_and_evaluate(tiny_config(**big), str(reference))
    assert_same_state(load_state(disk / "run"), load_state(reference))
    assert run_metrics(disk / "run") == run_metrics(reference)
    matched(f"disk full after step {saved[-1]}: exit 3; resumed after freeing space, equal")
  finally:
    subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_during_a_checkpoint_write_is_one_line_both_times(tmp_path):
  """About 1 MiB free on a 3 MiB tmpfs, MNIST checkpointing every 50 steps: the disk
  fills while a checkpoint is written. Exit status 3 with its one error line -- no
  'Event loop is closed' traceback from the failed write's callbacks -- and the same
  again when the same command is rerun on the still-full disk."""
  disk = tmp_path / "disk"
  if not _mount_tmpfs(disk, "3M"):
    pytest.skip("mount -t tmpfs is not permitted here")
  try:
    (disk / "filler").write_bytes(bytes(2000 * 1024))
    changes = {"model.hidden_units": (100, 100, 100), "train.num_steps": 300,
               "train.checkpoint_every": 50, "train.log_every": 50, "train.eval_every": 0}
    for attempt in ("first", "relaunch"):
      p = launch(disk / "run", **changes)
      out, err = p.communicate(timeout=300)
      TALLY["faults_injected"] += 1
      assert p.returncode == 3, f"{attempt}: {err[-3000:]}"
      errors = [l for l in err.splitlines() if l.startswith("error:")]
      assert len(errors) == 1 and errors[0].startswith("error: no space left on the device")
      assert "Traceback" not in err + out and "Event loop is closed" not in err, err
      assert steps_on_disk(disk / "run"), "the checkpoints written before the disk filled"
  finally:
    subprocess.run(["umount", "-l", str(disk)])

