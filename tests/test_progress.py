"""Progress lines and the readable console (bn_inception/progress.py), and the sweep's
TensorBoard HParams summary read back with TensorBoard's own reader."""

import json
import logging
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from bn_inception import progress, report_hparams, sharding, workdir_config
from bn_inception.evaluators import multicrop as multicrop_eval
from bn_inception.data import image_readers, in_memory, multicrop
from configs import mnist_fig1

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A Python logger's prefix: "I1201 12:05:31.545186 140254919179136 logging_writer.py:48] "
PY_LOG_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\] ", re.M)


@pytest.fixture
def progress_settings():
  yield progress.configure
  progress.configure()  # back to the defaults


def _linear_predict(seed, num_classes=5, size=4):
  w = jax.random.normal(jax.random.key(seed), (size * size, num_classes))
  return jax.jit(lambda x: jax.nn.softmax((x.reshape(len(x), -1) / 255.0) @ w, -1))


def _evaluate(n, crops, batch_size):
  rng = np.random.default_rng(0)
  images = in_memory.ArrayImageSet(rng.integers(0, 256, (n, 8, 8, 1), np.uint8),
                                   rng.integers(0, 5, n), "random")
  fns = {"a": _linear_predict(0), "b": _linear_predict(1)}
  context = multicrop_eval.Context(fns, images, multicrop_eval.Geometry(4, 0.5), 5,
                                   sharding.create_mesh())
  return multicrop_eval.Evaluator(context, [crops], batch_size).evaluate(crops)


def test_evaluation_reports_crops_done_of_the_right_total(capsys, progress_settings):
  progress_settings(enabled=True, live=False, every_secs=0)  # a line at every batch
  result = _evaluate(n=40, crops=10, batch_size=16)  # 400 crops in 25 batches of 16
  out, err = capsys.readouterr()
  assert out == ""
  lines = [l for l in err.splitlines() if l.startswith("10 crop(s), a, b: ")]
  done = [int(re.search(r": (\d+)/(\d+) crops", l).group(1)) for l in lines]
  totals = {int(re.search(r": (\d+)/(\d+) crops", l).group(2)) for l in lines}
  assert totals == {400}
  assert sorted(set(done)) == list(range(0, 401, 16))  # 0, 16, ..., 384, 400
  assert done == sorted(done) and done[-1] == 400
  assert "crops/s" in lines[-1]
  # The numbers do not depend on progress being shown.
  progress_settings(enabled=False)
  quiet = _evaluate(n=40, crops=10, batch_size=16)
  assert capsys.readouterr() == ("", "")
  assert quiet["rows"] == result["rows"]


def test_progress_lines_are_rate_limited_in_a_log(capsys, progress_settings):
  progress_settings(enabled=True, live=False, every_secs=3600)
  assert list(progress.track(range(1000), "work", 1000, "items")) == list(range(1000))
  lines = capsys.readouterr().err.splitlines()
  # One line when it starts and one when it ends, none in between.
  assert [l.split(" [")[0] for l in lines] == ["work: 0/1000 items (0%)",
                                              "work: 1000/1000 items (100%)"]


def test_train_console_line_from_the_loops_scalars(capsys, progress_settings):
  progress_settings(enabled=True, live=False)

  class Sink:  # stands for the workdir's writers
    def __init__(self):
      self.rows = []

    def write_scalars(self, step, scalars):
      self.rows.append((step, dict(scalars)))

    def flush(self):
      pass

  sink = Sink()
  report_ = progress.TrainProgress(sink, name="run", num_steps=300, batch_size=60,
                                   log_every=100, eval_every=200, start_step=0)
  writer = report_.writer
  # Feed what the loop and ReportProgress write at log steps 100 (no eval) and 200 (eval).
  writer.write_scalars(100, {"steps_per_sec": 10.0})
  writer.write_scalars(100, {"train/loss": 0.5, "train/accuracy": 0.75})
  line_100 = capsys.readouterr().err.strip()
  writer.write_scalars(200, {"steps_per_sec": 20.0})
  writer.write_scalars(200, {"train/loss": 0.25, "train/accuracy": 0.875, "input_wait": 0.25})
  assert capsys.readouterr().err == ""  # waits for step 200's evaluation
  writer.write_scalars(200, {"eval/accuracy": 0.9, "eval/loss": 0.3})
  line_200 = capsys.readouterr().err.strip()
  # 200 steps left at 10 steps/s: 20 s; 100 left at 20 steps/s: 5 s; 60 images a step.
  assert line_100 == "run  step 100/300  loss 0.5000  acc 0.7500  600 img/s  ETA 00:20"
  assert line_200 == ("run  step 200/300  loss 0.2500  acc 0.8750  1,200 img/s  wait 25%  "
                      "ETA 00:05  eval 0.9000 @200")
  # The workdir's writers got everything, unchanged.
  assert sink.rows[1] == (100, {"train/loss": 0.5, "train/accuracy": 0.75})
  assert len(sink.rows) == 5


def _train_tiny_mnist(workdir, *args):
  """scripts/train.py on MNIST with a tiny network, as a user runs it."""
  env = dict(os.environ, BN_INCEPTION_DATA=os.environ.get(
      "BN_INCEPTION_DATA", os.path.join(os.path.dirname(REPO), "shared", "data")))
  proc = subprocess.run(
      [sys.executable, "scripts/train.py", "--config=configs/mnist_fig1.py",
       f"--workdir={workdir}", "--config.model.hidden_units=(8, 8)",
       "--config.train.checkpoint_every=300", "--config.train.eval_batch_size=2500", *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc


def test_training_console_is_readable_and_the_log_file_keeps_everything(tmp_path):
  workdir = tmp_path / "tiny"
  proc = _train_tiny_mnist(workdir, "--config.train.num_steps=300",
                           "--config.train.log_every=100", "--config.train.eval_every=150")
  console = proc.stdout + proc.stderr
  assert not PY_LOG_PREFIX.findall(console), console
  steps = re.findall(r"^tiny  step ([\d,]+)/300  loss \d\.\d{4}  acc \d\.\d{4}  [\d,]+ img/s  "
                     r"wait \d+%  ETA \d\d:\d\d(?:  eval (\d\.\d{4}) @([\d,]+))?$",
                     proc.stderr, re.M)
  assert [s[0] for s in steps] == ["100", "200", "300"], proc.stderr
  assert steps[-1][2] == "300"  # the last line waits for the final evaluation
  assert "eval/accuracy" in proc.stdout  # the result
  log = (workdir / "log.txt").read_text()
  assert len(PY_LOG_PREFIX.findall(log)) >= 8
  assert re.search(r"logging_writer\.py:\d+\] \[300\] .*train/loss=", log)
  assert "tiny  step 300/300" in log
  rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  assert {r["step"] for r in rows if "train/loss" in r} == {100, 200, 300}


@pytest.mark.slow
def test_verbosity_brings_back_the_full_console(tmp_path):
  proc = _train_tiny_mnist(tmp_path / "w", "--config.train.num_steps=100",
                           "--config.train.log_every=50", "--config.train.eval_every=100",
                           "--verbosity=0")
  assert "logging_writer.py" in proc.stderr
  assert re.search(r"progress\.py:\d+\] w  step 100/100", proc.stderr)


# ----------------------------------------------------------------------- HParams


def _member(workdir, name, lr, evals):
  config = mnist_fig1.get_config()
  config.optim.learning_rate = lr
  workdir_config.check_or_save_config(str(workdir / name), config)
  with open(workdir / name / "metrics.jsonl", "w") as f:
    for step, acc in evals:
      f.write(json.dumps({"step": step, "eval/accuracy": acc}) + "\n")


def test_hparams_summary_read_back_with_tensorboards_reader(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.plugins.hparams import metadata
  from tensorboard.util import tensor_util
  sweep = tmp_path / "sweep"
  _member(sweep, "lr0.1", 0.1, [(0, 0.1), (100, 0.8), (200, 0.7)])
  _member(sweep, "lr0.5", 0.5, [(0, 0.1), (100, 0.6), (200, 0.9)])
  (sweep / "sweep.json").write_text(json.dumps({"members": [
      {"name": n, "config": "configs/mnist_fig1.py",
       "overrides": [f"--config.optim.learning_rate={lr}"]}
      for n, lr in (("lr0.1", 0.1), ("lr0.5", 0.5), ("later", 1.0))]}))
  written = report_hparams.write_hparams(str(sweep))
  assert [os.path.basename(w) for w in written] == ["lr0.1", "lr0.5"]  # 'later' not started

  def load(path):
    acc = event_accumulator.EventAccumulator(str(path), size_guidance={"tensors": 0})
    acc.Reload()
    return acc

  experiment = metadata.parse_experiment_plugin_data(
      load(sweep / report_hparams.HPARAMS_DIR).PluginTagToContent(metadata.PLUGIN_NAME)[
          metadata.EXPERIMENT_TAG])
  assert sorted(h.name for h in experiment.hparam_infos) == ["config", "optim.learning_rate"]
  assert [m.name.tag for m in experiment.metric_infos] == [report_hparams.FINAL_TAG, report_hparams.MAX_TAG]
  expected = {"lr0.1": (0.1, 0.7, 200, 0.8, 100), "lr0.5": (0.5, 0.9, 200, 0.9, 200)}
  for name, (lr, final, final_step, best, best_step) in expected.items():
    run = load(sweep / report_hparams.HPARAMS_DIR / name)
    start = metadata.parse_session_start_info_plugin_data(
        run.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["optim.learning_rate"].number_value == pytest.approx(lr)
    assert start.hparams["config"].string_value == "configs/mnist_fig1.py"
    assert start.group_name == name
    for tag, value, step in ((report_hparams.FINAL_TAG, final, final_step),
                             (report_hparams.MAX_TAG, best, best_step)):
      [event] = run.Tensors(tag)
      assert event.step == step
      assert float(tensor_util.make_ndarray(event.tensor_proto)) == pytest.approx(value)
  # Rewritten from scratch: a second call leaves one events file per run.
  report_hparams.write_hparams(str(sweep))
  assert len(os.listdir(sweep / report_hparams.HPARAMS_DIR / "lr0.1")) == 1


def test_a_log_file_that_cannot_be_written_warns_once_and_prints_no_traceback(
    tmp_path, capsys, caplog):
  """A full disk under <workdir>/log.txt: the run goes on, the console gets one warning
  and every line, and Python's '--- Logging error ---' traceback never appears."""
  import errno

  class FullDisk:
    def write(self, *args):
      raise OSError(errno.ENOSPC, "No space left on device")

    flush = close = write

  with progress.log_file(str(tmp_path)) as path:
    handler = next(h for h in logging.getLogger().handlers
                   if getattr(h, "baseFilename", None) == path)
    handler.stream = FullDisk()
    with caplog.at_level(logging.INFO):
      logging.getLogger().warning("first line")
      logging.getLogger().warning("second line")
  warnings = [r.getMessage() for r in caplog.records if "can no longer be written" in r.getMessage()]
  assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings
  assert [r.getMessage() for r in caplog.records
          if r.getMessage() in ("first line", "second line")] == ["first line", "second line"]
  assert "Logging error" not in capsys.readouterr().err
