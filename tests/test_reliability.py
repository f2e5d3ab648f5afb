"""Faults against the real CLI: kill -9, SIGTERM, damaged checkpoints, NaNs, bad input.

Every run is `python scripts/train.py ...` in a subprocess, on a tiny MNIST MLP
(1 CPU device), so kills and signals are real; a run that needs a slower step, a
slow checkpoint commit or a NaN is started through tests/fault_injection.py, which
patches those in and runs the same script in-process. A resumed run must end with
parameters, BN statistics and optimizer state bit-for-bit equal to an
uninterrupted run. docs/reliability.md maps each fault to its test.
"""

import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "scripts" / "train.py")
FAULT_INJECTION = str(REPO / "tests" / "fault_injection.py")
NUM_STEPS = 120
TINY = [
    "--config=configs/mnist_fig1.py",
    "--config.model.hidden_units=(16,16)",
    f"--config.train.num_steps={NUM_STEPS}",
    "--config.train.checkpoint_every=20",
    "--config.train.log_every=20",
    "--config.train.eval_every=60",
    "--config.train.eval_batch_size=2000",
    "--config.train.eval_at_start=False",
]
TALLY = {"faults_injected": 0, "resumes_matched": 0, "bad_inputs_tried": 0, "events": []}

pytestmark = pytest.mark.skipif(
    not glob.glob(str(REPO.parent / "shared" / "data" / "mnist" / "train-images*")) and
    not os.environ.get("BN_INCEPTION_DATA"), reason="MNIST not found beside the repo")


@pytest.fixture(scope="module", autouse=True)
def report_tally():
  yield
  print(f"\nreliability tally: {json.dumps(TALLY)}")
  if os.environ.get("RELIABILITY_TALLY"):
    Path(os.environ["RELIABILITY_TALLY"]).write_text(json.dumps(TALLY))


def _env(devices=1):
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.pop("BN_INCEPTION_DEBUG", None)
  return env


def _merge(flags):
  """TINY with `flags` replacing same-named ones (config_flags appends repeated tuples)."""
  merged = {f.split("=", 1)[0]: f for f in TINY}
  merged.update({f.split("=", 1)[0]: f for f in flags})
  return list(merged.values())


def launch(workdir, *flags, faults=(), devices=1):
  """scripts/train.py with TINY + `flags`; with `faults` (tests/fault_injection.py
  flags, e.g. ["--sleep_after_step=0.02"]) through that launcher."""
  cmd = [TRAIN] if not faults else [FAULT_INJECTION, *faults, "--"]
  return subprocess.Popen([sys.executable, *cmd, f"--workdir={workdir}", *_merge(flags)],
                          cwd=REPO, env=_env(devices), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def run(workdir, *flags, timeout=180, faults=(), devices=1):
  p = launch(workdir, *flags, faults=faults, devices=devices)
  out, err = p.communicate(timeout=timeout)
  return p.returncode, out, err


def wait_for(predicate, proc, timeout=120, what="condition"):
  t0 = time.time()
  while not predicate():
    if proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f"run ended (rc={proc.returncode}) before {what}:\n{out}\n{err[-3000:]}")
    if time.time() - t0 > timeout:
      proc.kill()
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.01)


def steps_on_disk(workdir):
  d = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def tmp_dirs(workdir):
  return glob.glob(str(Path(workdir) / "checkpoints" / "*.orbax-checkpoint-tmp*"))


def load_state(workdir, step=None):
  """The saved TrainState as {path: numpy array}, read with plain orbax."""
  import jax
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(Path(workdir) / "checkpoints") as mngr:
    step = mngr.latest_step() if step is None else step
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  flat = jax.tree_util.tree_flatten_with_path(restored["state"])[0]
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def assert_same_state(a, b):
  assert a.keys() == b.keys()
  for k in a:
    assert np.array_equal(a[k], b[k]), f"{k} differs"
  TALLY["resumes_matched"] += 1


def error_lines(err):
  return [l for l in err.splitlines() if l.startswith("error:")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One uninterrupted run: its workdir and final state."""
  workdir = tmp_path_factory.mktemp("reference")
  rc, out, err = run(workdir)
  assert rc == 0, err[-3000:]
  assert steps_on_disk(workdir)[-1] == NUM_STEPS
  return workdir, load_state(workdir)


# ---- preemption and crashes --------------------------------------------------


def test_sigterm_checkpoints_the_step_reached_and_resumes_exactly(tmp_path, reference):
  workdir = tmp_path / "run"
  p = launch(workdir, faults=["--sleep_after_step=0.02"])
  wait_for(lambda: 20 in steps_on_disk(workdir), p, what="the first checkpoint")
  time.sleep(random.uniform(0.05, 0.5))
  p.send_signal(signal.SIGTERM)
  TALLY["faults_injected"] += 1
  out, err = p.communicate(timeout=60)
  assert p.returncode == 0, err[-3000:]
  # A warning on the console (stderr); the script's result line (stdout) agrees.
  logged = re.findall(r"preempted at step (\d+); rerun the same command to resume$",
                      err, re.MULTILINE)
  assert len(logged) == 1, err[-3000:]
  step = int(logged[0])
  assert re.findall(r"'preempted_at_step': (\d+)", out) == logged, out
  assert 20 < step < NUM_STEPS and steps_on_disk(workdir)[-1] == step
  TALLY["events"].append(f"SIGTERM: checkpoint at step {step}, exit 0")
  assert load_state(workdir)["['step']"] == step

  rc, out, err = run(workdir)
  assert rc == 0, err[-3000:]
  assert f"Resumed from step {step} " in err
  assert_same_state(load_state(workdir), reference[1])


def test_second_trainer_in_a_live_workdir_is_refused_and_the_first_is_untouched(
    tmp_path, reference):
  workdir = tmp_path / "run"
  p = launch(workdir, faults=["--sleep_after_step=0.02"])
  wait_for(lambda: 20 in steps_on_disk(workdir), p, what="the first checkpoint")
  # Stopped, the first run stays live (and keeps its lock) however long the second
  # one takes to start on a loaded machine.
  p.send_signal(signal.SIGSTOP)
  try:
    rc, out, err = run(workdir)
    assert p.poll() is None, "the first run ended before the second one was tried"
  finally:
    p.send_signal(signal.SIGCONT)
  TALLY["bad_inputs_tried"] += 1
  _assert_one_clear_error(rc, err, "is in use by another training run")
  assert f"pid {p.pid} on " in err  # names the holder
  out, err = p.communicate(timeout=120)
  assert p.returncode == 0, err[-3000:]
  assert_same_state(load_state(workdir), reference[1])
  TALLY["events"].append("second trainer in a live workdir: refused, first run exact")
  # A holder killed with -9 leaves the lock file, but not the lock.
  p = launch(workdir, f"--config.train.num_steps={NUM_STEPS + 40}",
             faults=["--sleep_after_step=0.02"])
  wait_for(lambda: NUM_STEPS + 20 in steps_on_disk(workdir), p, what="a new checkpoint")
  p.kill()
  p.communicate()
  rc, out, err = run(workdir, f"--config.train.num_steps={NUM_STEPS + 40}")
  assert rc == 0, err[-3000:]


def test_kill_9_at_a_random_step_resumes_exactly(tmp_path, reference):
  workdir = tmp_path / "run"
  p = launch(workdir, faults=["--sleep_after_step=0.02"])
  wait_for(lambda: 20 in steps_on_disk(workdir), p, what="the first checkpoint")
  delay = random.uniform(0.0, 1.5)
  time.sleep(delay)
  p.kill()  # SIGKILL: no handler, no cleanup
  p.communicate()
  TALLY["faults_injected"] += 1
  assert p.returncode == -signal.SIGKILL
  saved = steps_on_disk(workdir)
  assert saved and saved[-1] < NUM_STEPS

  rc, out, err = run(workdir)
  assert rc == 0, err[-3000:]
  assert f"Resumed from step {saved[-1]} " in err
  assert_same_state(load_state(workdir), reference[1])
  TALLY["events"].append(f"kill -9 after {delay:.2f} s: resumed from step {saved[-1]}")
  from bn_inception.workdir import read_metrics
  rows = read_metrics(str(workdir))
  assert [s for s in rows if "train/loss" in rows[s]] == list(range(20, NUM_STEPS + 1, 20))
  assert [s for s in rows if "eval/accuracy" in rows[s]] == [60, 120]


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_resumes_from_the_last_complete_one(
    tmp_path, reference):
  workdir = tmp_path / "run"
  # Each checkpoint waits 1 s in its tmp dir before the rename that commits it.
  p = launch(workdir, faults=["--slow_commit_s=1"])
  wait_for(lambda: steps_on_disk(workdir) and tmp_dirs(workdir), p,
           what="a committed checkpoint and a second one mid-write")
  p.kill()
  p.communicate()
  TALLY["faults_injected"] += 1
  assert tmp_dirs(workdir), "the kill should leave an unfinished checkpoint"
  complete = steps_on_disk(workdir)[-1]

  rc, out, err = run(workdir)
  assert rc == 0, err[-3000:]
  assert f"Resumed from step {complete} " in err
  assert not tmp_dirs(workdir), "leftover tmp dirs are cleaned up"
  assert_same_state(load_state(workdir), reference[1])
  TALLY["events"].append(f"kill -9 mid-write: resumed from step {complete}")


@pytest.mark.slow
def test_sigint_with_a_requeue_exit_code(tmp_path):
  workdir = tmp_path / "run"
  p = launch(workdir, "--preempted_exit_code=75", faults=["--sleep_after_step=0.02"])
  wait_for(lambda: 20 in steps_on_disk(workdir), p, what="the first checkpoint")
  p.send_signal(signal.SIGINT)
  TALLY["faults_injected"] += 1
  out, err = p.communicate(timeout=60)
  assert p.returncode == 75 and "preempted at step" in err, err[-3000:]


# ---- damaged checkpoints -----------------------------------------------------


def test_truncated_newest_checkpoint_falls_back_and_is_moved_aside(tmp_path, reference):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  newest = workdir / "checkpoints" / str(NUM_STEPS)
  for f in newest.rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      os.truncate(f, f.stat().st_size // 2)
  TALLY["faults_injected"] += 1
  rc, out, err = run(workdir)
  assert rc == 0, err[-3000:]
  assert "Traceback" not in err and "Event loop is closed" not in err
  warning = [l for l in err.splitlines() if "unusable" in l]
  assert warning and f"checkpoint at step {NUM_STEPS} unusable" in warning[0], err[-3000:]
  assert f"resuming from step {NUM_STEPS - 20}" in warning[0]
  # The damaged one is kept, not deleted; training saved step NUM_STEPS afresh.
  assert (workdir / "checkpoints" / f"damaged-{NUM_STEPS}").is_dir()
  assert_same_state(load_state(workdir), reference[1])


def _copy_checkpoints(reference, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(reference[0], workdir)
  return workdir


@pytest.fixture(scope="module")
def abstract_state():
  """TrainState shapes of the tiny model (or another width), as restore targets."""
  from bn_inception import train
  from bn_inception.data import create_source
  from configs import mnist_fig1
  source = create_source(mnist_fig1.get_config().data)

  def make(hidden_units=(16, 16)):
    c = mnist_fig1.get_config()
    c.model.hidden_units = hidden_units
    return train.Trainer(c, source=source).abstract_state
  return make


def test_flipped_byte_is_caught_by_the_checksum(tmp_path, reference, abstract_state, caplog):
  """One flipped byte in an array file (bit rot): orbax restores it without complaint."""
  from bn_inception import checkpoint as ckpt_lib
  workdir = _copy_checkpoints(reference, tmp_path)
  data = list((workdir / "checkpoints" / str(NUM_STEPS)).rglob("ocdbt.process_0/d/*"))
  biggest = max(data, key=lambda f: f.stat().st_size)
  with open(biggest, "r+b") as f:
    f.seek(biggest.stat().st_size // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  TALLY["faults_injected"] += 1
  silently = load_state(workdir)  # plain orbax: no error, wrong numbers
  changed = [k for k in silently if not np.array_equal(silently[k], reference[1][k])]
  assert changed == ["['params']['dense0']['kernel']"]

  checkpointer = ckpt_lib.Checkpointer(str(workdir), 20, 3, owner=True)
  state, meta = checkpointer.restore(abstract_state())
  assert (f"checkpoint at step {NUM_STEPS} unusable (CheckpointError: checksum mismatch in "
          f"params/dense0/kernel)") in caplog.text
  assert int(state.step) == NUM_STEPS - 20 and meta["step"] == NUM_STEPS - 20
  assert checkpointer.latest_step() == NUM_STEPS - 20
  assert (workdir / "checkpoints" / f"damaged-{NUM_STEPS}").is_dir()
  checkpointer.close()


def test_a_reader_leaves_tmp_dirs_and_damaged_checkpoints_alone(
    tmp_path, reference, abstract_state):
  """An evaluator beside a running trainer must not delete the trainer's save in progress."""
  from bn_inception import checkpoint as ckpt_lib
  workdir = _copy_checkpoints(reference, tmp_path)
  ckpts = workdir / "checkpoints"
  shutil.copytree(ckpts / str(NUM_STEPS), ckpts / f"{NUM_STEPS + 20}.orbax-checkpoint-tmp-7")
  (ckpts / str(NUM_STEPS) / "meta" / "metadata").write_text("{")
  TALLY["faults_injected"] += 1
  before = sorted(p.name for p in ckpts.iterdir())
  reader = ckpt_lib.Checkpointer(str(workdir), 1, None)
  state, _ = reader.restore(abstract_state())
  reader.close()
  assert int(state.step) == NUM_STEPS - 20
  assert sorted(p.name for p in ckpts.iterdir()) == before


def test_no_usable_checkpoint_is_a_clear_error_and_nothing_moves(
    tmp_path, reference, abstract_state):
  from bn_inception import checkpoint as ckpt_lib
  from bn_inception import workdir as workdir_lib
  workdir = _copy_checkpoints(reference, tmp_path)
  for meta in (workdir / "checkpoints").glob("*/meta/metadata"):
    meta.write_text("{not json")
  TALLY["faults_injected"] += 1
  before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  checkpointer = ckpt_lib.Checkpointer(str(workdir), 20, 3, owner=True)
  with pytest.raises(workdir_lib.CheckpointError, match="No usable checkpoint.*Nothing was"):
    checkpointer.restore(abstract_state())
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before


def test_other_architecture_names_the_parameter_and_both_shapes(
    tmp_path, reference, abstract_state):
  from bn_inception import checkpoint as ckpt_lib
  from bn_inception import workdir as workdir_lib
  workdir = _copy_checkpoints(reference, tmp_path)
  before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  checkpointer = ckpt_lib.Checkpointer(str(workdir), 20, 3, owner=True)
  with pytest.raises(workdir_lib.CheckpointError) as e:
    checkpointer.restore(abstract_state((16, 32)))
  assert "params/dense1/kernel: checkpoint (16, 16), model (16, 32)" in str(e.value)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before


def _snapshot(workdir):
  """mtime of every file of a workdir but the lock, whose holder line every launch
  that takes the lock rewrites (it holds no run data)."""
  return {str(p): p.stat().st_mtime_ns for p in workdir.rglob("*") if p.name != ".lock"}


def test_other_architecture_via_the_cli_overwrites_nothing(tmp_path, reference):
  """With the workdir's config.json gone, only the checkpoint itself can object."""
  workdir = _copy_checkpoints(reference, tmp_path)
  (workdir / "config.json").unlink()
  before = _snapshot(workdir)
  rc, out, err = run(workdir, "--config.model.hidden_units=(16,32)")
  _assert_one_clear_error(rc, err, f"The checkpoint at step {NUM_STEPS} in")
  assert "params/dense1/kernel: checkpoint (16, 16), model (16, 32)" in err
  assert _snapshot(workdir) == before


def test_leftover_tmp_dir_is_ignored_and_cleaned(tmp_path, reference, abstract_state):
  from bn_inception import checkpoint as ckpt_lib
  workdir = _copy_checkpoints(reference, tmp_path)
  ckpts = workdir / "checkpoints"
  shutil.copytree(ckpts / str(NUM_STEPS), ckpts / f"{NUM_STEPS + 20}.orbax-checkpoint-tmp-99")
  checkpointer = ckpt_lib.Checkpointer(str(workdir), 20, 3, owner=True)
  assert checkpointer.manager.all_steps() == [NUM_STEPS - 40, NUM_STEPS - 20, NUM_STEPS]
  state, _ = checkpointer.restore(abstract_state())
  assert int(state.step) == NUM_STEPS
  checkpointer.wait()
  checkpointer.close()
  assert not tmp_dirs(workdir)


def test_save_over_a_stale_step_dir_moves_it_aside(tmp_path, reference, abstract_state):
  from bn_inception import checkpoint as ckpt_lib
  workdir = _copy_checkpoints(reference, tmp_path)
  checkpointer = ckpt_lib.Checkpointer(str(workdir), 20, 3, owner=True)
  state, meta = checkpointer.restore(abstract_state())
  stale = workdir / "checkpoints" / str(NUM_STEPS + 20)
  stale.mkdir()  # e.g. a half-copied dir appearing behind the manager's back
  (stale / "junk").write_text("x")
  assert checkpointer.save(NUM_STEPS + 20, state.replace(step=state.step + 20),
                           {**meta, "step": NUM_STEPS + 20}, force=True)
  checkpointer.close()
  assert (workdir / "checkpoints" / f"damaged-{NUM_STEPS + 20}" / "junk").exists()
  assert load_state(workdir)["['step']"] == NUM_STEPS + 20


def test_metrics_row_after_a_cut_line_survives(tmp_path):
  from bn_inception.metrics import JsonlWriter
  from bn_inception.workdir import read_metrics
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 20, "train/loss": 1.0}\n{"step": 40, "train/lo')  # kill -9 here
  JsonlWriter(str(path)).write_scalars(40, {"train/loss": 0.5})
  assert read_metrics(str(tmp_path)) == {20: {"train/loss": 1.0}, 40: {"train/loss": 0.5}}


def test_the_last_logged_step_is_the_last_complete_row(tmp_path):
  """What the sweep's progress bar polls: a row cut by a crash is not a step."""
  from bn_inception import workdir
  assert workdir.last_logged_step(str(tmp_path)) is None
  (tmp_path / "metrics.jsonl").write_text('{"step": 20, "a": 1}\n{"step": 40, "a": 2}\n'
                                          '{"step": 60, "a')
  assert workdir.last_logged_step(str(tmp_path)) == 40

def test_config_fields_added_since_the_run_started_do_not_strand_it(tmp_path, caplog):
  from bn_inception import workdir, workdir_config
  from configs import mnist_fig1
  config = mnist_fig1.get_config()
  workdir_config.check_or_save_config(str(tmp_path), config)
  (tmp_path / "checkpoints" / "20").mkdir(parents=True)  # a run exists (see the retry rule)
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["optim"]["momentum"]            # as if written before the field existed
  saved["train"]["retired_field"] = 1       # and a field the code no longer has
  (tmp_path / "config.json").write_text(json.dumps(saved))
  workdir_config.check_or_save_config(str(tmp_path), config)
  out = caplog.text
  assert "config field optim.momentum is new since this run started; using 0.0" in out
  assert "config field train.retired_field (=1 in the workdir) no longer exists" in out
  config.optim.momentum = 0.5  # but a changed value is still refused
  with pytest.raises(workdir.WorkdirConfigError, match="optim.momentum: 0.0 in the workdir"):
    workdir_config.check_or_save_config(str(tmp_path), config)
  (tmp_path / "config.json").write_text('{"optim": ')
  with pytest.raises(workdir.WorkdirConfigError, match="config.json is unreadable"):
    workdir_config.check_or_save_config(str(tmp_path), config)


# ---- NaN / inf ---------------------------------------------------------------


def test_nan_stops_the_run_before_any_save_and_keeps_the_last_good_checkpoint(
    tmp_path, abstract_state):
  from bn_inception import checkpoint as ckpt_lib
  workdir = tmp_path / "run"
  rc, out, err = run(workdir, faults=["--nonfinite_at_step=45"])
  TALLY["faults_injected"] += 1
  assert rc != 0
  lines = error_lines(err)
  assert len(lines) == 1 and "Non-finite loss or gradients at step 45" in lines[0], err[-2000:]
  assert "Traceback" not in err
  assert steps_on_disk(workdir) == [20, 40]  # the check at step 60 came before its save
  state, meta = ckpt_lib.Checkpointer(str(workdir), 20, 3, owner=True).restore(abstract_state())
  assert int(state.step) == 40 and meta["nonfinite_steps"] == 0
  import jax
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


@pytest.mark.slow
def test_nan_skip_finishes_and_reports_the_skipped_step(tmp_path):
  workdir = tmp_path / "run"
  rc, out, err = run(workdir, "--config.train.nonfinite_policy=skip",
                     faults=["--nonfinite_at_step=45"])
  TALLY["faults_injected"] += 1
  assert rc == 0, err[-3000:]
  assert "1 training step(s) had a non-finite loss or gradients and were skipped " \
         "(first: step 45)" in err
  state = load_state(workdir)
  assert state["['nonfinite_steps']"] == 1 and state["['step']"] == NUM_STEPS
  assert all(np.isfinite(v).all() for v in state.values())


# ---- bad input: one line, non-zero exit, nothing written ---------------------


BAD_FLAGS = {
    "unknown field": (["--config.train.batch_sise=3"],
                      "unknown config field --config.train.batch_sise"),
    "wrong type": (["--config.train.batch_size=abc"],
                   "--config.train.batch_size=abc: wrong type: train.batch_size holds an int"),
}
SLOW_BAD_FLAGS = {
    "wrong tuple element": (["--config.model.hidden_units=(16,abc)"],
                            "wrong type: model.hidden_units holds a tuple of int (default "
                            "(100, 100, 100)), and its element '(16,abc)' is a str"),
    "missing config file": (["--config=configs/nope.py"],
                            "config file configs/nope.py not found"),
    "positional argument": (["oops"], "unexpected arguments ['oops']"),
}


def _assert_one_clear_error(rc, err, expected):
  TALLY["bad_inputs_tried"] += 1
  assert rc == 2, err[-2000:]
  lines = error_lines(err)
  assert len(lines) == 1 and expected in lines[0], err[-2000:]
  assert "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize("case", sorted(BAD_FLAGS) + [
    pytest.param(k, marks=pytest.mark.slow) for k in sorted(SLOW_BAD_FLAGS)])
def test_bad_flag_is_one_line(tmp_path, case):
  flags, expected = {**BAD_FLAGS, **SLOW_BAD_FLAGS}[case]
  rc, out, err = run(tmp_path / "run", *flags)
  _assert_one_clear_error(rc, err, expected)
  assert not (tmp_path / "run").exists()


def _mnist_copy(tmp_path):
  from bn_inception.data import default_data_root
  src = Path(default_data_root()) / "mnist"  # $BN_INCEPTION_DATA, or ../shared/data
  dst = tmp_path / "mnist"
  shutil.copytree(src, dst)
  return dst


def test_missing_dataset_is_one_line(tmp_path):
  (tmp_path / "empty").mkdir()
  rc, out, err = run(tmp_path / "run", f"--config.data.data_dir={tmp_path / 'empty'}",
                     "--config.data.download_if_missing=False")
  _assert_one_clear_error(rc, err, f"MNIST not found in {tmp_path / 'empty'}")
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_truncated_mnist_file_is_one_line(tmp_path):
  data = _mnist_copy(tmp_path)
  os.truncate(data / "train-images-idx3-ubyte.gz", 100_000)
  rc, out, err = run(tmp_path / "run", f"--config.data.data_dir={data}")
  _assert_one_clear_error(rc, err, "train-images-idx3-ubyte.gz could not be read")
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_garbled_mnist_file_is_one_line(tmp_path):
  data = _mnist_copy(tmp_path)
  path = data / "train-labels-idx1-ubyte.gz"
  blob = bytearray(path.read_bytes())
  blob[len(blob) // 2:len(blob) // 2 + 64] = random.Random(0).randbytes(64)
  path.write_bytes(bytes(blob))
  rc, out, err = run(tmp_path / "run", f"--config.data.data_dir={data}")
  _assert_one_clear_error(rc, err, "train-labels-idx1-ubyte.gz could not be read")


def test_batch_not_divisible_by_8_devices_is_one_line(tmp_path):
  rc, out, err = run(tmp_path / "run", devices=8)  # batch 60 on 8 devices
  _assert_one_clear_error(rc, err, "config.train.batch_size=60 is the GLOBAL batch")
  assert "multiple of the 8 devices" in err
  assert not (tmp_path / "run").exists()  # so the corrected command is not refused


@pytest.mark.slow  # also tests/test_train_loop.py, in-process
def test_workdir_of_another_config_is_refused_untouched(tmp_path, reference):
  workdir = _copy_checkpoints(reference, tmp_path)
  before = _snapshot(workdir)
  rc, out, err = run(workdir, "--config.model.hidden_units=(16,32)")
  _assert_one_clear_error(rc, err, "holds a run with a different configuration")
  assert "model.hidden_units: [16, 16] in the workdir, [16, 32] now" in err
  assert _snapshot(workdir) == before
